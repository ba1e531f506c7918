"""Telling the outside how training goes: `TrainingHooks`, the one interface the training loop reports through
(progress bars, result collection, tests, TensorBoard), and `TensorBoardLog`, the hook behind ``--tensorboard``.

A hook is any object with some of the methods of `TrainingHooks`; those it lacks are not called. Hooks watch: none
changes what a run computes or its run_id.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.grid import RunSpec


class TrainingHooks:
    """What the training loop (`bench.train.train_population`) calls as a group trains. Subclass it and override
    what you need, or pass any object with some of these methods; each does nothing here."""

    def on_eval(self, member: Any, row: dict[str, Any]) -> None:
        """After each evaluation of a run, once its curve.csv holds `row`. `member` is the run's
        `bench.train.Member` (its spec, model and `last_loss`)."""

    def on_progress(self, step: int, metrics: dict[str, float] | None) -> None:
        """After each optimizer step of the group's first active run: its step, and the metrics of an evaluation
        made at this step (None if none)."""

    def on_finish(self, spec: RunSpec, result: dict[str, Any]) -> None:
        """When a run's result.json is written: its spec and result."""

    def close(self) -> None:
        """When the group's training ends, normally or not."""


class HookList(TrainingHooks):
    """Several hooks as one: each call goes to every hook that has the method, in order."""

    def __init__(self, hooks: Iterable[Any] = ()):
        self.hooks = [hook for hook in hooks if hook is not None]

    def _call(self, name: str, *args: Any) -> None:
        for hook in self.hooks:
            method = getattr(hook, name, None)
            if method is not None:
                method(*args)

    def on_eval(self, member: Any, row: dict[str, Any]) -> None:
        self._call("on_eval", member, row)

    def on_progress(self, step: int, metrics: dict[str, float] | None) -> None:
        self._call("on_progress", step, metrics)

    def on_finish(self, spec: RunSpec, result: dict[str, Any]) -> None:
        self._call("on_finish", spec, result)

    def close(self) -> None:
        self._call("close")


# ---- TensorBoard (optional: `ntm-bench run --tensorboard DIR`) -----------------------------------------------------

TENSORBOARD_HINT = "--tensorboard needs the tensorboard package: pip install 'ntm-bench[tensorboard]'"


def tensorboard_available() -> bool:
    """Whether torch.utils.tensorboard can write here (it needs the `tensorboard` package)."""
    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_dir(root: str | Path, spec: RunSpec) -> Path:
    """A run's TensorBoard folder: ``root/<suite>/<task>/<model>/seed<k>`` (a "/" in a label becomes "_", and a
    label ``.`` or ``..`` is ``_``, so the folder is always inside root; labels are short, `bench.labels`)."""
    parts = [str(part).replace("/", "_").replace("\\", "_") for part in (spec.suite, spec.task, spec.model)]
    parts = ["_" if part in ("", ".", "..") else part for part in parts]
    return Path(root).joinpath(*parts, f"seed{spec.seed}")


class TensorBoardLog(TrainingHooks):
    """A hook that writes each run's curves as TensorBoard scalars at every evaluation, x = step:
    ``train/loss_bits_per_seq`` (the last training batch's loss) and ``eval/<metric>`` for each number of the
    curve row (loss_bits_per_seq, wrong_bits_per_seq, seq_accuracy, ...), plus ``eval/sequences_seen``.

    SummaryWriter is imported here, only when the option is used. A resumed run purges the events an earlier
    attempt logged past its checkpoint, so its logged curves match curve.csv.
    """

    def __init__(self, root: str | Path):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (TENSORBOARD_HINT)

        self.root = Path(root)
        self.writer_class = SummaryWriter
        self.writers: dict[str, Any] = {}

    def writer(self, member: Any, step: int):
        """The run's writer, opened at its first evaluation here: events an earlier attempt logged at this step or
        later (an interrupted run that resumes, a --fresh rerun) are purged, so each step is logged once."""
        run_id = member.spec.run_id
        if run_id not in self.writers:
            self.writers[run_id] = self.writer_class(log_dir=str(tensorboard_dir(self.root, member.spec)),
                                                     purge_step=step)
        return self.writers[run_id]

    def on_eval(self, member: Any, row: dict[str, Any]) -> None:
        step = int(row["step"])
        writer = self.writer(member, step)
        if member.last_loss is not None and step > 0:
            writer.add_scalar("train/loss_bits_per_seq", float(member.last_loss) / math.log(2.0), step)
        for key, value in row.items():
            if key in ("step", "wall_s") or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            writer.add_scalar(f"eval/{key}", float(value), step)
        writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
