"""A trained model after its run: load it, score it at any size, draw its sample and memory figures.

A finished run folder (``<out>/runs/<run_id>/``) holds everything needed to rebuild its model: spec.json (task and
model types and parameters, evaluation seed), result.json (written last: the run is finished) and checkpoint.pt,
whose ``model`` entry is the final state_dict (`bench.train.Member.finish` saves it at the end of every run, with
the run's last step). It is loaded with ``weights_only=True``, so a planted pickle cannot run code, and memory-mapped.
spec.json is not trusted to describe a model that can be built: its model parameters are checked against the suite
limits and, with the model built on the meta device (no memory), its parameter count and every tensor's shape
against the checkpoint's, before the real model is built.

    from bench.trained import evaluate_run, load_model, load_run, render_figures

    model = load_model("reports/quick/runs/0123abcd4567")           # torch module, eval mode
    run = load_run("reports/quick/runs/0123abcd4567")               # TrainedRun: model, task, spec, result
    frame = evaluate_run(run.run_dir, sizes="30,40,60")             # one row per size, as generalization.csv
    render_figures(run.run_dir, (60,), "figures/")                  # samples_*.png, memory_*.png (memory models)

`evaluate_run` scores with the suite's own generalisation code (`bench.evaluate.generalization_set` and
`generalization_rows`): the same metrics on the same sequences (the run's evaluation seed, task and size decide
them), so at the suite's test sizes it reproduces the run's generalization.csv. Sizes are written as on the command
line: ``"30,40,60"`` for a task with one-part sizes (Copy's L), ``"3x6,6x6"`` for two-part sizes (Repeat Copy's
L x n, Priority Sort's inputs x outputs), parts in the task's `size_parts` order.

Every problem with the folder raises `TrainedRunError` (a ValueError) with a one-line message, which the command
line (``ntm-bench evaluate``) prints as ``error: ...`` with exit status 2.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench import registry
from bench.bounded import UnreadableFile
from bench.config import MAX_MODEL_PARAMETERS, TRAIN_MAXIMA, ConfigError, check_sequence_steps
from bench.evaluate import example_arrays, generalization_rows, generalization_set
from bench.folders import make_folder
from bench.grid import meta_model, model_size_problem, parameter_count, task_key
from bench.results import FINISHED, atomic_write_bytes, read_json_object
from bench.train import state_dict_mismatch
from tasks.base import Size, Task

log = logging.getLogger("bench")

#: the file whose ``model`` entry holds a run's weights (its final ones once result.json exists)
WEIGHTS = "checkpoint.pt"


class TrainedRunError(ValueError):
    """A folder that is not a usable run: not a run folder, unfinished, failed, or without its weights; also a size
    the task cannot take. The message is one line."""


@dataclass
class TrainedRun:
    """A run rebuilt from its folder: its model (eval mode, on `device`), its task, and its spec.json and
    result.json contents (`result` is None for an unfinished run loaded with ``require_finished=False``)."""

    run_dir: Path
    model: torch.nn.Module
    task: Task
    spec: dict[str, Any]
    result: dict[str, Any] | None
    device: torch.device

    @property
    def task_key(self) -> str:
        """The key that, with the evaluation seed, decides the run's evaluation and generalisation sequences."""
        return task_key(self.spec["task_type"], self.spec["task_params"])

    @property
    def eval_seed(self) -> int:
        return int(self.spec["eval_seed"])

    @property
    def generalization_sequences(self) -> int:
        """How many sequences the suite scored at each test size."""
        return int(self.spec["train"]["generalization_sequences"])

    def memory_slots(self) -> int | None:
        """The model's memory locations (None for a model without memory)."""
        params = {**registry.model_parameters(self.spec["model_type"]), **self.spec["model_params"]}
        slots = params.get("memory_locations")
        return slots if isinstance(slots, int) else None


def _spec(run_dir: Path) -> dict[str, Any]:
    if not run_dir.is_dir():
        raise TrainedRunError(f"{run_dir}: not a run folder (no such folder); give a suite's runs/<run_id> folder")
    path = run_dir / "spec.json"
    if not path.is_file() and (run_dir / "suite.json").is_file() and (run_dir / "runs").is_dir():
        raise TrainedRunError(f"{run_dir}: a suite's output folder, not a run folder; give one of its "
                              "runs/<run_id> folders (runs.csv lists them)")
    if not path.is_file():
        raise TrainedRunError(f"{run_dir}: not a run folder (no spec.json); give a suite's runs/<run_id> folder")
    try:
        spec = read_json_object(path)
    except (OSError, ValueError) as error:
        raise TrainedRunError(f"{path}: unreadable ({_first_line(error)})") from None
    missing = [k for k in ("task_type", "task_params", "model_type", "model_params", "eval_seed", "train")
               if k not in spec]
    if missing:
        raise TrainedRunError(f"{path}: not a run's spec (missing {', '.join(missing)})")
    return spec


def _result(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "result.json"
    if not path.is_file():
        raise TrainedRunError(f"{run_dir}: unfinished run (no result.json yet); finish it with `python -m bench run` "
                              "on its suite first")
    try:
        result = read_json_object(path)
    except (OSError, ValueError) as error:
        raise TrainedRunError(f"{path}: unreadable ({_first_line(error)})") from None
    status = result.get("status")
    if status not in FINISHED:
        raise TrainedRunError(f"{run_dir}: the run did not finish (status {status!r}); rerun its suite to retry it")
    return result


def _first_line(error: BaseException) -> str:
    if isinstance(error, UnreadableFile):  # its message starts with the path, which the caller names already
        return error.reason
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", require_finished: bool = True) -> TrainedRun:
    """A run's model (eval mode, on `device`: cpu, cuda, cuda:N or auto) and task, rebuilt from its folder.

    The task and model are built from spec.json exactly as the suite built them, and the weights come from
    checkpoint.pt (``weights_only=True``). With `require_finished` (the default) the run must have finished (done or
    diverged), and the checkpoint must be of its last step: then these are the final weights. Raises
    `TrainedRunError` (one line) otherwise, and a RegistryError for a model or task type not registered here (load
    its plugin first).
    """
    from bench.provenance import resolve_device

    run_dir = Path(run_dir)
    spec = _spec(run_dir)
    result = _result(run_dir) if require_finished else None
    try:
        device = resolve_device(str(device))
    except RuntimeError as error:
        raise TrainedRunError(_first_line(error)) from None
    path = run_dir / WEIGHTS
    if not path.is_file():
        raise TrainedRunError(f"{run_dir}: no weights ({WEIGHTS} is missing)")
    try:
        # memory-mapped: tensors are read when used, so a checkpoint's size costs nothing before it is checked
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - a damaged or unsafe file: one line, never run
        raise TrainedRunError(f"{path}: cannot be loaded safely ({_first_line(error)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise TrainedRunError(f"{path}: holds no model weights")
    if state.get("run_id") not in (None, spec.get("run_id")):
        raise TrainedRunError(f"{path}: is run {state.get('run_id')!r}'s, not this run's ({spec.get('run_id')!r})")
    if result is not None and "steps" in result and state.get("step") != result["steps"]:
        raise TrainedRunError(f"{path}: holds step {state.get('step')}, not the run's final step {result['steps']}")
    registry.load_all()
    task = registry.build_task(spec["task_type"], **spec["task_params"])
    model = _checked_model(run_dir, spec, task, state["model"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise TrainedRunError(f"{path}: does not fit the model in spec.json ({_first_line(error)})") from None
    return TrainedRun(run_dir, model.to(device).eval(), task, spec, result, device)


def _checked_model(run_dir: Path, spec: dict[str, Any], task: Task, weights: dict[str, Any]) -> torch.nn.Module:
    """The model spec.json describes, built (on the CPU) only once it is known to be within the suite limits and to
    fit the checkpoint's `weights`: its parameters are checked as a suite's are (`bench.grid.model_size_problem`),
    then the model is built on the meta device, where nothing is allocated, for its parameter count and its tensors'
    shapes. A model that cannot be built there is checked after its real build, which the limits keep bounded."""
    model_type, params = spec["model_type"], spec["model_params"]
    if not isinstance(params, dict):
        raise TrainedRunError(f"{run_dir / 'spec.json'}: model_params is not a mapping")
    problem = model_size_problem(params)
    if problem:
        raise TrainedRunError(f"{run_dir}: spec.json's model is beyond the suite limits ({problem}); refusing to "
                              "build it")
    widths = (task.input_size, task.output_size)
    try:
        meta = meta_model(model_type, *widths, params)
    except registry.RegistryError:
        raise  # an unknown model or parameter, as a real build would say: its message lists what is allowed
    except (ValueError, TypeError) as error:
        raise TrainedRunError(f"{run_dir / 'spec.json'}: model_params: {_first_line(error)}") from None
    if meta is not None:
        _check_fit(run_dir, meta, weights)
    model = registry.build_model(model_type, *widths, **params)
    if meta is None:
        _check_fit(run_dir, model, weights)
    return model


def _check_fit(run_dir: Path, model: torch.nn.Module, weights: dict[str, Any]) -> None:
    """Refuse, in one line, a model over the suite's parameter limit or whose tensors the checkpoint's do not fit."""
    count = parameter_count(model)
    if count > MAX_MODEL_PARAMETERS:
        raise TrainedRunError(f"{run_dir}: spec.json's model has {count} parameters, more than the limit "
                              f"{MAX_MODEL_PARAMETERS}; refusing to build it")
    mismatch = state_dict_mismatch(model.state_dict(), weights, WEIGHTS, "the model spec.json describes")
    if mismatch:
        raise TrainedRunError(f"{run_dir}: spec.json does not fit {WEIGHTS}: {mismatch}; refusing to load it")


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A finished run's final model, in eval mode, on `device` (`load_run(run_dir, device).model`)."""
    return load_run(run_dir, device).model


def parse_sizes(text: str, task: Task) -> list[Size]:
    """Sizes written as on the command line: ``"30,40,60"`` for one-part sizes, ``"3x6,6x6"`` for two-part ones
    (parts joined by ``x``, in the task's `size_parts` order). Raises `TrainedRunError` for anything else."""
    sizes = []
    for item in (part.strip() for part in str(text).split(",")):
        values = item.lower().split("x")
        # ASCII digits, and few enough for int() (a longer number is far beyond any size limit anyway)
        if not item or not all(v.strip().isascii() and v.strip().isdigit() and len(v.strip()) <= 18 and int(v) >= 1
                               for v in values):
            raise TrainedRunError(f"sizes {text!r}: {item!r} is not a size; write {_size_example(task)}")
        if len(values) != len(task.size_parts):
            raise TrainedRunError(f"sizes {text!r}: {task.name} sizes have {len(task.size_parts)} part(s) "
                                  f"({' x '.join(task.size_parts)}), got {item!r}; write {_size_example(task)}")
        sizes.append(tuple(int(v) for v in values))
    return sizes


def _size_example(task: Task) -> str:
    if len(task.size_parts) == 1:
        return "e.g. 30,40,60"
    return f"{' x '.join(task.size_parts)} joined by x, e.g. " + ",".join(
        "x".join(str(v) for v in size) for size in task.test_sizes[:2])


def _sizes(run: TrainedRun, sizes: str | Iterable[Size | int] | None) -> list[Size]:
    if sizes is None:
        return list(run.task.test_sizes)
    if isinstance(sizes, str):
        return parse_sizes(sizes, run.task)
    try:
        checked = [run.task.check_size(size) for size in sizes]
    except (TypeError, ValueError) as error:
        raise TrainedRunError(f"sizes: {_first_line(error)}") from None
    bad = [size for size in checked if min(size) < 1]
    if bad or not checked:
        raise TrainedRunError(f"sizes: need at least one size of positive integers, got {list(sizes)!r}")
    return checked


def memory_warnings(run: TrainedRun, sizes: Sequence[Size]) -> list[str]:
    """One line per size that needs more memory slots than the model has (as `bench.grid.memory_overflows` warns
    for a suite): such a size measures the memory's size, not generalisation."""
    slots = run.memory_slots()
    if slots is None:
        return []
    lines = []
    for size in sizes:
        needs = run.task.vectors_to_store(size)
        if needs is not None and needs > slots:
            lines.append(f"{run.run_dir.name}: size {run.task.size_label(size)} needs {needs} memory slots but the "
                         f"model has memory_locations {slots}; it is scored all the same")
    return lines


def _as_run(run_dir: str | Path | TrainedRun, device: str | torch.device) -> TrainedRun:
    return run_dir if isinstance(run_dir, TrainedRun) else load_run(run_dir, device)


def evaluate_run(run_dir: str | Path | TrainedRun, sizes: str | Iterable[Size | int] | None = None,
                 sequences: int | None = None, device: str | torch.device = "auto") -> pd.DataFrame:
    """Score a finished run's final model at `sizes` on `sequences` sequences each; one row per size.

    `run_dir` is a run folder, loaded on `device` (auto: the GPU when there is one, as ``ntm-bench evaluate``), or a
    `TrainedRun` already loaded (then `device` is its own). Every batch goes to the model's device.

    `sizes`: None (the suite's test sizes), a string as on the command line (`parse_sizes`), or a list of sizes
    (ints for one-part sizes, tuples otherwise). `sequences` defaults to the suite's `generalization_sequences`.
    Metrics, sequences and columns are the suite's generalisation test's (``size``, ``size_<part>``,
    ``loss_bits_per_seq``, ``wrong_bits_per_seq``, ``seq_accuracy``, and any task extras), so at the suite's own
    test sizes the frame equals the run's generalization.csv. A size beyond the model's memory is logged as a
    warning and scored.
    """
    run = _as_run(run_dir, device)
    chosen = _sizes(run, sizes)
    sequences = run.generalization_sequences if sequences is None else int(sequences)
    _check_limits(run, chosen, sequences)
    for line in memory_warnings(run, chosen):
        log.warning("warning: %s", line)
    try:
        sets = generalization_set(run.task, sequences, run.eval_seed, run.task_key, chosen)
    except ValueError as error:  # a size the task cannot build
        raise TrainedRunError(f"sizes: {_first_line(error)}") from None
    return pd.DataFrame(generalization_rows(run.model, run.task, sets, run.device))


def check_sequences(sequences: int, name: str = "sequences") -> None:
    """`sequences` per size within the bounds of a suite's `train.generalization_sequences` (`bench.config`)."""
    most = TRAIN_MAXIMA["generalization_sequences"]
    if not 1 <= sequences <= most:
        raise TrainedRunError(f"{name}: must be within 1..{most} (as a suite's train.generalization_sequences), "
                              f"got {sequences}")


def _check_limits(run: TrainedRun, sizes: Sequence[Size], sequences: int) -> None:
    """The limits a suite's `train.generalization_sequences` and test sizes obey (`bench.config`), for `sequences`
    sequences at each of `sizes`."""
    check_sequences(sequences)
    for size in sizes:
        label = run.task.size_label(size)
        try:
            check_sequence_steps(f"sizes: {label}: sequences", sequences, run.task.steps_for(size),
                                 "a sequence of this size")
        except ValueError as error:  # a size the task cannot take, or one over the limit (ConfigError)
            raise TrainedRunError(_first_line(error) if isinstance(error, ConfigError) else
                                  f"sizes: {label}: {_first_line(error)}") from None


def sample_arrays(run: TrainedRun, size: Size, name: str = "train_max") -> dict[str, np.ndarray]:
    """The first generalisation sequence of `size` (the one the suite scores first) with the model's outputs and
    memory traces, keyed as in a run's samples.npz (``<name>/inputs``, ``<name>/trace/read_weights``, ...)."""
    size = run.task.check_size(size)
    batch = generalization_set(run.task, 1, run.eval_seed, run.task_key, [size])[size][0]
    return example_arrays(run.model, batch, size, run.device, name)


class _FileSink:
    """The report's figure sink, for files only: writes ``<out_dir>/<name>_<size>.png``."""

    def __init__(self, out_dir: Path, suffix: str):
        self.out_dir, self.suffix = out_dir, suffix
        self.written: list[Path] = []

    def save(self, fig, name: str) -> dict[str, str]:
        from bench.report.figures import png_bytes

        path = self.out_dir / f"{name}_{self.suffix}.png"
        atomic_write_bytes(path, png_bytes(fig))
        self.written.append(path)
        return {"file": str(path)}


def render_figures(run_dir: str | Path | TrainedRun, size: Size | int | str, out_dir: str | Path,
                   device: str | torch.device = "auto", warn: bool = True) -> list[Path]:
    """Draw the report's sample figure (input / target / thresholded output) and, for a memory model, its memory
    heat map (read, write, usage weightings) for one sequence of `size`, with the report's own panel functions.

    Writes ``samples_<task>_<size>.png`` (and ``memory_<task>_<size>.png``) into `out_dir` and returns their paths.
    `size` is an int, a tuple, or a string such as ``"60"`` or ``"3x6"``; `run_dir` may be a loaded `TrainedRun`.
    A size beyond the model's memory is drawn all the same, with a logged warning unless `warn` is False.
    """
    from bench.report.data import model_palette, slug, task_info
    from bench.report.panels import figure_memory, figure_samples

    run = _as_run(run_dir, device)
    if isinstance(size, str):
        chosen = parse_sizes(size, run.task)
        if len(chosen) != 1:
            raise TrainedRunError(f"size {size!r}: give one size")
        size = chosen[0]
    size = _sizes(run, [size])[0]
    _check_limits(run, [size], 1)
    for line in memory_warnings(run, [size]) if warn else []:
        log.warning("warning: %s", line)
    arrays = sample_arrays(run, size)
    label = str(run.spec.get("model", run.spec["model_type"]))
    info = task_info(str(run.spec.get("task", run.task.name)), run.task.facts())
    palette = model_palette([label])
    samples = [(label, run.spec.get("seed", ""), arrays)]
    sink = _FileSink(Path(out_dir), slug("x".join(str(v) for v in size)))
    make_folder(out_dir)  # a folder inside an output folder is never made through a link (bench.folders)
    title = f"size {run.task.size_label(size)}"  # the one size drawn, not the report's two
    figure_samples(palette, info, samples, sink, title=lambda *_: title)
    figure_memory(palette, info, samples, sink, title=lambda *_: title)
    return sink.written
