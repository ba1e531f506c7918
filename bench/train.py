"""The one training loop, shared by every task and model.

`train_run(spec, run_dir)` trains one (task, model, seed) run and writes its folder:

    spec.json            the resolved spec + provenance (git commit, versions, device, command line)
    curve.csv            one row per evaluation on the fixed evaluation set (rewritten at each one: live progress)
    generalization.csv   one row per test size, scored on the final model
    samples.npz          one example at the largest training size and at 2x it: inputs, targets, outputs, traces
    checkpoint.pt        model, optimizer, step, data-generator state, curve and bookkeeping (for resume)
    result.json          written last: status, convergence, final error, params, wall time, seq/s

A run that finds a checkpoint of the same run_id resumes from it and produces the same rows as one that never
stopped. A checkpoint that does not fit the run's model or optimizer, or was written by other code (its
`code_fingerprint`), is moved aside with curve.csv (`checkpoint.pt.stale-<UTC time>`), never deleted, and the run
starts over. A non-finite loss or gradient skips that update and is counted; `max_nonfinite` consecutive skips end
the run as `diverged`.

A step waits on the device once for the whole group: losses, finiteness checks and clipping stay on the device, and
the one thing the host must know, which runs' updates are finite, comes back in one transfer (`train_population`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench import registry
from bench.evaluate import evaluation_set, example_arrays, generalization_rows, generalization_set, score
from bench.folders import make_folder
from bench.forward import (
    begin_iteration,
    compile_options,
    keeps_slots,
    make_forward,
    repair_compile_cache,
    stack_batches,
)
from bench.grid import RunSpec, derive_seed
from bench.grid import task_key as grid_task_key
from bench.hooks import HookList, TensorBoardLog, TrainingHooks
from bench.metrics import loss_nats_per_seq
from bench.options import WorkerOptions
from bench.provenance import device_name, provenance, resolve_device
from bench.results import atomic_torch_save, atomic_write_bytes, atomic_write_csv, atomic_write_json
from tasks.base import Batch, Task, convergence

log = logging.getLogger("bench")
CHECKPOINT = "checkpoint.pt"


class FaultInjected(RuntimeError):
    """Raised by the test-only fault hooks (BENCH_FAULT)."""


def task_key(spec: RunSpec) -> str:
    """The run's task key (`bench.grid.task_key`): with its evaluation seed, it decides its evaluation sets."""
    return grid_task_key(spec.task_type, spec.task_params)


def build_task(spec: RunSpec) -> Task:
    return registry.build_task(spec.task_type, **spec.task_params)


def task_rules(task: Task) -> dict[str, Any]:
    """The rules a run is scored by (`Rule.to_json`, or None), recorded in its spec.json: part of its protocol, so a
    run scored under another rule is recognised (`bench.runner.prepare`)."""
    return {name: None if rule is None else rule.to_json()
            for name, rule in (("convergence", task.convergence), ("solved", task.solved_when))}


def build_model(spec: RunSpec, task: Task, device: torch.device) -> torch.nn.Module:
    """The model, initialised from the run's init seed without touching torch's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        model = registry.build_model(spec.model_type, task.input_size, task.output_size, **spec.model_params)
    return model.to(device)


#: the optimizers' multi-tensor implementation (torch's default on CUDA; on a CPU it gives bit-identical parameters and
#: state to the one-tensor-at-a-time loop, faster, docs/PERFORMANCE.md). The fused Adam does not: it is not used.
OPTIMIZER_IMPLEMENTATION = {"foreach": True}


def make_optimizer(spec: RunSpec, params) -> torch.optim.Optimizer:
    train = spec.train
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, **OPTIMIZER_IMPLEMENTATION)
    return torch.optim.RMSprop(params, lr=train.lr, alpha=train.alpha, momentum=train.momentum, eps=train.eps,
                               centered=train.centered, **OPTIMIZER_IMPLEMENTATION)


def clip_gradients(spec: RunSpec, params: list[torch.nn.Parameter]) -> torch.Tensor:
    """Clip in place per the protocol; returns the pre-clip global gradient norm, a 0-dim tensor on the gradients'
    device, non-finite if any grad is. Nothing is read back: the loop reads every run's verdict at once. The values
    are `torch.nn.utils.clip_grad_norm_`'s (it is called); a non-finite update is skipped whatever clipping did."""
    clip = spec.train.clip
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else None)
    if clip.kind == "norm":
        return torch.nn.utils.clip_grad_norm_(grads, clip.value)
    total = torch.nn.utils.get_total_norm([p.grad for p in grads])
    if clip.kind == "value":
        torch.nn.utils.clip_grad_value_(grads, clip.value)
    return total


def _fault(point: str, step: int) -> None:
    """Test hook: BENCH_FAULT="point:step[:kill]" raises (or SIGKILLs the process) at that point and step."""
    spec = os.environ.get("BENCH_FAULT")
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] == point and int(parts[1]) == step:
        if len(parts) > 2 and parts[2] == "kill":
            os.kill(os.getpid(), 9)
        raise FaultInjected(f"injected fault at {point} step {step}")


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    _fault("checkpoint", state["step"])
    atomic_torch_save(run_dir / CHECKPOINT, state)


def load_checkpoint(run_dir: Path, run_id: str) -> dict[str, Any] | None:
    """The checkpoint in `run_dir` if it is one of `run_id`'s, else None (the run then starts over).

    It is loaded with weights_only=True: tensors, numbers, strings, None and dicts/lists/tuples of them load, and
    anything else (a pickled object that would run code when loaded) is refused with a warning, never run.
    """
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or unsafe file: warn on one line and start the run over
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log.warning("ignoring checkpoint %s (it cannot be loaded safely: %s); the run starts over", path, reason)
        return None
    if not isinstance(state, dict) or state.get("run_id") != run_id:
        return None
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        log.warning("ignoring checkpoint %s (missing %s); the run starts over", path, ", ".join(missing))
        return None
    return state


#: what a checkpoint holds (README, "What a run produces"): the run's bookkeeping, then the tensors to resume from
CHECKPOINT_KEYS = ("run_id", "step", "curve", "converge_step", "nonfinite_steps", "consecutive_nonfinite",
                   "converged_streak", "status", "train_s", "wall_s", "model", "optimizer", "data_generator")
#: the checkpoint key of the code that wrote it (`code_fingerprint`); checkpoints written before it have none
CODE_FINGERPRINT = "code_fingerprint"


def code_fingerprint(*objects: Any) -> str:
    """16 hex digits of the SHA-256 of the source files of the modules that define `objects`' classes (a run's model
    and task): a checkpoint written under other code for either is not resumed. A module without a readable file
    (defined interactively) counts by its name."""
    digest = hashlib.sha256()
    for obj in objects:
        cls = type(obj)
        path = getattr(sys.modules.get(cls.__module__), "__file__", None)
        try:
            source = Path(path).read_bytes()
        except (TypeError, OSError):
            source = f"{cls.__module__}.{cls.__qualname__}".encode()
        digest.update(hashlib.sha256(source).digest())
    return digest.hexdigest()[:16]


def state_dict_mismatch(expected: Mapping[str, Any], found: Mapping[str, Any], where: str = "the checkpoint",
                        model: str = "the model") -> str | None:
    """The first tensor in which the state_dict `found` (read from `where`) does not fit `model`, whose state_dict is
    `expected` (real or on the meta device: only names and shapes are compared), in words; None when it fits, so that
    `load_state_dict` loads it whole (a misfit would have it load the tensors that fit before raising)."""
    for name, tensor in expected.items():
        if name not in found:
            return f"tensor {name} of {model} is missing from {where}"
        theirs = found[name]
        if not isinstance(theirs, torch.Tensor):
            return f"{name} in {where} is not a tensor"
        if tuple(theirs.shape) != tuple(tensor.shape):
            return f"tensor {name} is {list(theirs.shape)} in {where} but {list(tensor.shape)} in {model}"
    unexpected = [name for name in found if name not in expected]
    return f"{where} has a tensor {unexpected[0]} that {model} does not have" if unexpected else None


def move_aside(run_dir: Path, run_id: str, problem: str) -> Path:
    """Rename a checkpoint that cannot be resumed to ``checkpoint.pt.stale-<UTC time>``, and curve.csv beside it, so
    that the run starts over from step 0 without mixing its rows with the old ones; nothing is deleted. Warns once."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix, n = f".stale-{stamp}", 1
    while any((run_dir / f"{name}{suffix}").exists() for name in (CHECKPOINT, "curve.csv")):
        n += 1
        suffix = f".stale-{stamp}-{n}"
    for name in (CHECKPOINT, "curve.csv"):
        if (run_dir / name).exists():
            os.replace(run_dir / name, run_dir / f"{name}{suffix}")
    log.warning("%s: checkpoint %s cannot be resumed (%s); moved it and curve.csv aside as *%s, and the run starts "
                "over from step 0", run_id, run_dir / CHECKPOINT, problem, suffix)
    return run_dir / f"{CHECKPOINT}{suffix}"


class Member:
    """One run inside the loop: its model, optimizer, data stream, evaluation set and bookkeeping."""

    def __init__(self, spec: RunSpec, run_dir: Path, device: torch.device, population: int = 1):
        self.spec = spec
        self.train = spec.train
        self.run_dir = Path(run_dir)
        make_folder(self.run_dir)  # never inside a symbolic link (bench.folders)
        self.device = device
        self.task = build_task(spec)
        self.model = build_model(spec, self.task, device)
        #: the model's and task's code, recorded in every checkpoint (`code_fingerprint`)
        self.code = code_fingerprint(self.model, self.task)
        #: torch.compile's options for this run's step (None: eager), applied by `make_forward`
        self.compile_options = compile_options(spec, self.model, device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(spec, self.params)
        self.data_generator = torch.Generator().manual_seed(spec.data_seed)
        self.eval_batches = evaluation_set(self.task, self.train.eval_sequences, spec.eval_seed, task_key(spec))
        meta = {**spec.to_json(), "provenance": provenance(device), "params": self.model.parameter_count(),
                "torch_threads": torch.get_num_threads(), "compiled": self.compile_options is not None,
                "compile_options": self.compile_options, "population": population, "rules": task_rules(self.task)}
        atomic_write_json(self.run_dir / "spec.json", meta)
        state = load_checkpoint(self.run_dir, spec.run_id)
        problem = None if state is None else self.resume(state)
        if problem is not None:
            move_aside(self.run_dir, spec.run_id, problem)
            state = None
        elif state is not None:
            log.info("%s: resuming from step %d", spec.run_id, state["step"])
        if state is None:
            state = {"run_id": spec.run_id, "step": 0, "curve": [], "converge_step": None, "nonfinite_steps": 0,
                     "consecutive_nonfinite": 0, "converged_streak": 0, "status": "running", "train_s": 0.0,
                     "wall_s": 0.0}
        state[CODE_FINGERPRINT] = self.code  # this code writes every checkpoint from now on
        self.state = state
        self.started = time.perf_counter()
        #: told of each evaluation (`TrainingHooks.on_eval`: TensorBoard, tests); set by train_population
        self.hooks: TrainingHooks = TrainingHooks()
        #: the last training batch's loss in nats/seq (a tensor, read only by `on_eval` hooks), None before a step
        self.last_loss: torch.Tensor | None = None
        #: the batch of the next step, drawn ahead (`prefetch`), and the data stream's state before it was drawn
        self.batch: Batch | None = None
        self.rewind: torch.Tensor | None = None
        if state["curve"]:
            # a resumed run: curve.csv may hold evaluations made after this checkpoint; show the checkpoint's rows
            self.write_curve()

    def resume(self, state: dict[str, Any]) -> str | None:
        """Restore the model, optimizer and data stream from a checkpoint's `state`. Returns why it cannot be resumed
        (other code wrote it; its weights, optimizer state or generator state do not fit), having changed nothing;
        None once restored."""
        recorded = state.get(CODE_FINGERPRINT)
        if recorded is not None and recorded != self.code:
            return (f"it was written by other code for the model or task (code fingerprint {recorded}, now "
                    f"{self.code})")
        problem = state_dict_mismatch(self.model.state_dict(), state["model"])
        if problem is not None:
            return f"it does not fit the model: {problem}"
        optimizer, generator = make_optimizer(self.spec, self.params), torch.Generator()
        try:
            optimizer.load_state_dict(state["optimizer"])
            for param, values in optimizer.state.items():
                for name, value in values.items():
                    if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                        raise ValueError(f"its {name} is {list(value.shape)} for a parameter of {list(param.shape)}")
            generator.set_state(state["data_generator"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            text = str(error).strip()
            return f"its optimizer or data state does not fit: {text.splitlines()[0] if text else type(error).__name__}"
        self.model.load_state_dict(state["model"])  # every name and shape checked above: it loads whole
        for group in optimizer.param_groups:  # how to compute is this code's choice, not the checkpoint's
            group.update(OPTIMIZER_IMPLEMENTATION)
        self.optimizer, self.data_generator = optimizer, generator
        return None

    @property
    def step(self) -> int:
        return self.state["step"]

    def training(self) -> bool:
        """Whether this run still takes optimizer steps."""
        state = self.state
        if state["status"] != "running" or state["step"] >= self.train.steps:
            return False
        # stop_at_convergence ends a run once its last `stop_patience` evaluations all met the convergence rule
        return not (self.train.stop_at_convergence and state.get("converged_streak", 0) >= self.train.stop_patience)

    def next_batch(self) -> Batch:
        """The batch of step `step` + 1, drawn from the run's data stream."""
        size = self.task.sample_size(self.data_generator) if self.train.length_sampling == "per_batch" else None
        batch = self.task.sample(self.train.batch_size, self.data_generator, size=size)
        if self.device.type == "cuda":
            # static shapes on a GPU: every batch padded to the task's longest training T (changes no scored output)
            batch = batch.pad_to(max(batch.steps, self.task.max_train_steps()))
        return batch

    def prefetch(self) -> None:
        """Draw the next step's batch now, while the device still computes this one, remembering the data stream's
        state before it: a run that stops after this step gives the batch back (`unprefetch`), so that its
        checkpoints and data stream are those of a run that never drew it. Nothing is drawn past the budget."""
        if self.state["step"] < self.train.steps:
            self.rewind = self.data_generator.get_state()
            self.batch = self.next_batch()

    def unprefetch(self) -> None:
        """Give back a batch drawn ahead: the data stream goes back to its state before it."""
        if self.rewind is not None:
            self.data_generator.set_state(self.rewind)
        self.batch = self.rewind = None

    def take_batch(self) -> Batch:
        """This step's batch: the one drawn ahead, else one drawn now."""
        batch = self.batch if self.batch is not None else self.next_batch()
        self.batch = self.rewind = None
        return batch

    def evaluate(self) -> dict[str, float]:
        metrics = score(self.model, self.task, self.eval_batches, self.device)
        state = self.state
        row = {"step": state["step"], "sequences_seen": state["step"] * self.train.batch_size, **metrics,
               "wall_s": state["wall_s"] + (time.perf_counter() - self.started)}
        state["curve"].append(row)
        reached = convergence(state["curve"], self.task.convergence)
        state["converge_step"], state["converged_streak"] = reached.step, reached.streak
        self.write_curve()  # live progress: curve.csv holds every evaluation so far, not only a finished run's
        self.hooks.on_eval(self, row)
        return metrics

    def write_curve(self) -> None:
        """(Re)write curve.csv atomically from the evaluations so far (a few hundred rows at most: cheap)."""
        atomic_write_csv(self.run_dir / "curve.csv", pd.DataFrame(self.state["curve"]))

    def clip(self) -> torch.Tensor:
        """After backward: clip per the protocol (`clip_gradients`); the pre-clip norm stays on the device."""
        return clip_gradients(self.spec, self.params)

    def update(self, finite: bool) -> None:
        """After backward and `clip`, once the step is counted in `state["step"]`: step the optimizer, or skip a
        non-finite update (loss or gradient norm; the parameters and optimizer state stay as they were), counted;
        too many in a row = diverged."""
        state, spec = self.state, self.spec
        if finite:
            self.optimizer.step()
            state["consecutive_nonfinite"] = 0
        else:
            state["nonfinite_steps"] += 1
            state["consecutive_nonfinite"] += 1
            if state["nonfinite_steps"] == 1:
                log.warning("%s (%s/%s seed %d): non-finite loss or gradient at step %d; update skipped",
                            spec.run_id, spec.task, spec.model, spec.seed, state["step"])
            if state["consecutive_nonfinite"] >= self.train.max_nonfinite:
                state["status"] = "diverged"
                log.warning("%s: %d consecutive non-finite steps; run ends as diverged", spec.run_id,
                            state["consecutive_nonfinite"])
        self.optimizer.zero_grad(set_to_none=True)

    def after_step(self) -> dict[str, float] | None:
        """Evaluate and checkpoint when due; returns the metrics of an evaluation made now."""
        _fault("step", self.step)
        metrics = None
        if self.step % self.train.eval_every == 0 or self.step == self.train.steps or not self.training():
            metrics = self.evaluate()
        if self.step % self.train.checkpoint_every == 0 and self.step < self.train.steps:
            save_checkpoint(self.run_dir, self.checkpoint_state())
        return metrics

    def checkpoint_state(self) -> dict[str, Any]:
        # the data stream as it was before a batch drawn ahead (`prefetch`): a resume draws that batch again
        generator = self.rewind if self.rewind is not None else self.data_generator.get_state()
        return {**self.state, "wall_s": self.state["wall_s"] + (time.perf_counter() - self.started),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "data_generator": generator}

    def finish(self) -> dict[str, Any]:
        """Generalisation, samples and result.json (written last, marking the run finished)."""
        state, train, task = self.state, self.train, self.task
        if state["curve"][-1]["step"] != state["step"]:
            self.evaluate()  # a run that stopped at convergence or diverged off an evaluation step
        if state["status"] == "running":
            state["status"] = "done"
        generalization, errors = [], {}
        if state["status"] == "done":
            sets = generalization_set(task, train.generalization_sequences, self.spec.eval_seed, task_key(self.spec))
            generalization = generalization_rows(self.model, task, sets, self.device)
            errors = {size: row["wrong_bits_per_seq"] for size, row in zip(sets, generalization)}
            save_samples(self.model, task, self.spec, self.run_dir, self.device)
        final = state["curve"][-1]
        converge_step = state["converge_step"]
        result = {
            "status": state["status"], "converged": converge_step is not None, "converge_step": converge_step,
            "converge_sequences": None if converge_step is None else converge_step * train.batch_size,
            "final_loss_bits_per_seq": final["loss_bits_per_seq"],
            "final_wrong_bits_per_seq": final["wrong_bits_per_seq"],
            **task.solved_extent(errors),  # solved_up_to, test_size_2x, solved_2x
            "nonfinite_steps": state["nonfinite_steps"], "params": self.model.parameter_count(),
            "steps": state["step"], "device": device_name(self.device),
            "wall_s": round(state["wall_s"] + (time.perf_counter() - self.started), 3),
            "seq_per_s": round(state["step"] * train.batch_size / max(state["train_s"], 1e-9), 2),
        }
        atomic_write_csv(self.run_dir / "curve.csv", pd.DataFrame(state["curve"]))
        atomic_write_csv(self.run_dir / "generalization.csv", pd.DataFrame(generalization))
        atomic_torch_save(self.run_dir / CHECKPOINT, self.checkpoint_state())
        atomic_write_json(self.run_dir / "result.json", result)
        return result


def train_population(specs: list[RunSpec], run_dirs: list[Path], options: WorkerOptions | None = None,
                     hooks: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """THE training loop: trains P >= 1 runs that differ only in their seed, step by step together.

    Each run keeps its own init, data stream, gradient clipping, optimizer state, non-finite handling, evaluations,
    checkpoints and run folder, exactly as if it ran alone; only the forward/backward pass is shared (one batched
    computation for models that support it). A run that finishes (budget, convergence, divergence) leaves the group
    and the others carry on: in a vmapped group on a GPU it keeps its slot, masked (`bench.forward.keeps_slots`), so
    that the group's shapes never change. Returns each run's result.json contents, in the order of `specs`.

    A step waits on the device once, for the whole group (`_group_step`): the host reads back which runs' updates
    are finite in one transfer, after drawing the next batches while the device computes.

    `options` set the torch threads (None: torch's own setting) and TensorBoard logging (`TensorBoardLog`, one more
    hook). `hooks` (`bench.hooks.TrainingHooks`) are told of every evaluation, once the run's curve.csv holds it,
    of the group's progress and of each finished run. Neither changes what a run computes or its run_id.
    """
    if options is not None and options.threads:
        torch.set_num_threads(options.threads)
    tensorboard = options.tensorboard if options is not None else None
    listeners = HookList([*hooks, TensorBoardLog(tensorboard) if tensorboard else None])
    try:
        return _train_population(specs, run_dirs, listeners)
    finally:
        listeners.close()


def _train_population(specs: list[RunSpec], run_dirs: list[Path], hooks: TrainingHooks) -> list[dict[str, Any]]:
    # A process trains many groups one after another (--workers reuses its processes): dynamo keys its caches on code
    # objects, so every new model would add entries until torch._dynamo's recompile limit silently turns compiling
    # off. Each group starts from an empty cache; inductor's on-disk cache keeps recompiling the same graphs cheap.
    torch._dynamo.reset()
    device = resolve_device(specs[0].device)
    members = [Member(spec, run_dir, device, len(specs)) for spec, run_dir in zip(specs, run_dirs)]
    for member in members:
        member.hooks = hooks
    if members[0].compile_options is not None:
        repair_compile_cache()
    results: dict[str, dict[str, Any]] = {}
    for member in members:
        member.model.train()
        if not member.state["curve"]:
            member.evaluate()
    active = [m for m in members if m.training()]
    forward = make_forward([m.model for m in active], len(members), members[0].compile_options) if active else None
    slots = list(active)  # the forward's runs, in order; `active` is always a subsequence of it
    while active:
        step_started = time.perf_counter()
        begin_iteration(members[0].compile_options)
        finite = _group_step(forward, slots, active, device)
        for member, ok in zip(active, finite):
            member.update(ok)
        for member in slots:
            if member not in active:  # the slot of a run that left (`keeps_slots`): its gradient is dropped
                member.optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - step_started
        for member in active:
            member.state["train_s"] += elapsed
            metrics = member.after_step()
            if member is active[0]:
                hooks.on_progress(member.step, metrics)
        still = [m for m in active if m.training()]
        for member in active:
            if member not in still:
                member.unprefetch()
                results[member.spec.run_id] = member.finish()
                hooks.on_finish(member.spec, results[member.spec.run_id])
        if len(still) != len(active):
            active = still
            if active and not keeps_slots(device, forward):
                slots = list(active)
                forward.keep([m.model for m in active])
    for member in members:
        if member.spec.run_id not in results:  # already past its budget when loaded from a checkpoint
            results[member.spec.run_id] = member.finish()
            # e.g. a finished run redone because one of its files was damaged
            hooks.on_finish(member.spec, results[member.spec.run_id])
    torch._dynamo.reset()  # free this group's compiled graphs (and CUDA-graph memory pools) now
    return [results[spec.run_id] for spec in specs]


def _group_step(forward, slots: list[Member], active: list[Member], device: torch.device) -> list[bool]:
    """One step's forward, backward and clipping for the `active` runs among the forward's `slots` (the others have
    left the group: their slot computes zeros, out of the loss), with the step counted and the next batches drawn
    (`Member.prefetch`) while the device computes. Returns, in the order of `active`, whether each run's update is
    finite (loss and gradient norm): the step's one read-back from the device. No optimizer has stepped yet."""
    batch = stack_batches([m.take_batch() if m in active else None for m in slots], device)
    logits = forward(batch.inputs).unbind(0)
    losses = [loss_nats_per_seq(logits[i], batch.targets[i], batch.mask[i])
              for i, member in enumerate(slots) if member in active]
    stacked = torch.stack(losses)
    finite = torch.isfinite(stacked)
    # Runs share no parameters, so each gets only its own gradient; a non-finite loss gets none (0 in its place:
    # the others' gradients are those of the sum of the finite losses alone), and its update is skipped anyway.
    torch.where(finite, stacked, 0.0).sum().backward()
    finite = finite & torch.isfinite(torch.stack([member.clip() for member in active]))
    for member, loss in zip(active, losses):
        member.last_loss = loss.detach()
        member.state["step"] += 1
        member.prefetch()
    return finite.tolist()


def train_run(spec: RunSpec, run_dir: Path, options: WorkerOptions | None = None,
              hooks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train one run to its budget (or to convergence), writing its folder. Returns result.json's contents."""
    return train_population([spec], [Path(run_dir)], options, hooks)[0]


@torch.no_grad()
def save_samples(model: torch.nn.Module, task: Task, spec: RunSpec, run_dir: Path, device: torch.device) -> None:
    """One example at the largest training size and at 2x it, with the model's outputs and memory traces."""
    largest = tuple(high for _, high in (task.train_sizes[p] for p in task.size_parts))
    arrays: dict[str, np.ndarray] = {}
    model.eval()
    for name, size in (("train_max", largest), ("double", tuple(2 * s for s in largest))):
        generator = torch.Generator().manual_seed(derive_seed("sample", spec.eval_seed, task_key(spec), name))
        try:
            batch = task.sample(1, generator, size=size)
        except ValueError:
            continue
        arrays.update(example_arrays(model, batch, size, device, name))
    model.train()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(run_dir / "samples.npz", buffer.getvalue())
