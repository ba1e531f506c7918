"""How a training step runs: the forward of a group of runs (`make_forward`: `SingleForward` for a run alone,
`BatchedForward` for several sharing one vmapped computation), the group's inputs (`stack_batches`, one copy per
tensor to the device; `keeps_slots`, whether runs that leave keep their place), the compile policy
(`compile_options`, `CUDA_GRAPHS`, `begin_iteration`, `repair_compile_cache`), and
`optimizer_step`, the plain optimizer step of the code that times training outside the loop (`bench.preflight`,
`bench.perf`).

The training loop (`bench.train`) keeps its own update: clipping per the run's protocol and non-finite skipping.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.grid import RunSpec
from bench.metrics import loss_nats_per_seq
from models.base import RecurrentModel, run_unrolled
from tasks.base import Batch

log = logging.getLogger("bench")



#: torch.compile's options for `compile: cudagraphs` on CUDA
CUDA_GRAPHS = {"mode": "reduce-overhead"}


def begin_iteration(options: dict[str, Any] | None) -> None:
    """Before each training iteration's forward: with CUDA graphs, tell torch that the previous iteration is over."""
    if options and options.get("mode") == CUDA_GRAPHS["mode"]:
        torch.compiler.cudagraph_mark_step_begin()


def compile_options(spec: RunSpec, model: torch.nn.Module, device: torch.device) -> dict[str, Any] | None:
    """`torch.compile`'s options for this run's step, or None to run it eagerly.

    `on` and `cudagraphs` compile; `auto` compiles runs whose step budget is at least the model's
    `compile_break_even_steps` (compiling costs tens of seconds once per run, which long runs repay and a short CPU
    run, often stopped at convergence, does not; the measurements are in docs/PERFORMANCE.md). `cudagraphs` on a
    GPU also captures the step as CUDA graphs (mode reduce-overhead; shapes are static there, as every batch is
    padded to the task's longest training T); elsewhere it is `on`.
    """
    setting = spec.train.compile
    if not isinstance(model, RecurrentModel) or setting == "off":
        return None
    if setting == "auto" and spec.train.steps < model.compile_break_even_steps:
        return None
    return dict(CUDA_GRAPHS) if setting == "cudagraphs" and device.type == "cuda" else {}


def keeps_slots(device: torch.device, forward: Any) -> bool:
    """Whether a run that leaves a group (budget, convergence, divergence) keeps its slot in the group's `forward`,
    computed on zeros and masked out of the loss and the updates, rather than being removed.

    In a vmapped group on a GPU it does: the group's shapes then never change, so a compiled step is neither
    recompiled nor its CUDA graphs recorded again for the smaller group (shapes are static there anyway: every batch
    is padded to the task's longest T), and a slot costs little next to the others. On a CPU it is removed, which
    saves its compute (a compiled CPU step is then recompiled once, as before), and so is a run of a group that runs
    model by model, which has no shapes to keep. The runs' numbers are the same either way: a slot computes only its
    own run (tests/test_step.py compares every file of a group trained both ways, eager on a CPU).
    """
    return device.type == "cuda" and getattr(forward, "vmapped", False)


@dataclass(frozen=True)
class GroupBatch:
    """One training step's batches of a group's slots, stacked on the device: inputs [P, B, T, in],
    targets [P, B, T, out], mask [P, B, T]."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor


def stack_batches(batches: Sequence[Batch | None], device: torch.device) -> GroupBatch:
    """The batches of a group's slots (None: a slot whose run has left, `keeps_slots`: zeros), padded at the end to
    the longest (which changes no scored output), stacked and moved to `device`. A run alone gets views, not copies.
    On CUDA each tensor goes over in one copy for the whole group, from pinned memory and without waiting
    (`non_blocking`): the host goes on while it travels."""
    steps = max(batch.steps for batch in batches if batch is not None)
    padded = [None if batch is None else batch.pad_to(steps) for batch in batches]
    template = next(batch for batch in padded if batch is not None)
    tensors = []
    for name in ("inputs", "targets", "mask"):
        parts = [torch.zeros_like(getattr(template, name)) if batch is None else getattr(batch, name)
                 for batch in padded]
        stacked = parts[0].unsqueeze(0) if len(parts) == 1 else torch.stack(parts)
        if device.type == "cuda":
            stacked = stacked.pin_memory().to(device, non_blocking=True)
        tensors.append(stacked.to(device))
    return GroupBatch(*tensors)


def repair_compile_cache() -> int:
    """Delete empty shared objects from inductor's on-disk cache; returns how many.

    A process killed while the C++ compiler writes a compiled step leaves a zero-byte ``.so`` behind, and every later
    compile of the same graph then fails with "file too short" (seen here after a kill during the cost estimate).
    An empty file is never a valid library, so removing it only makes inductor build it again.
    """
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    removed = 0
    root = Path(cache_dir())
    if not root.is_dir():
        return 0
    for path in root.rglob("*.so"):
        try:
            if path.is_file() and path.stat().st_size == 0:
                path.unlink()
                removed += 1
        except OSError:
            continue
    if removed:
        log.warning("removed %d empty compiled file(s) left in %s by an interrupted compile", removed, root)
    return removed


def batch_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The training loss of `model` on `batch`: nats per sequence, as the training loop computes it."""
    return loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask)


def optimizer_step(optimizers: Sequence[torch.optim.Optimizer], loss: Callable[[], torch.Tensor],
                   clip_norm: float | None = None, compile_options: dict[str, Any] | None = None) -> None:
    """One plain training step of one or more runs: zero their gradients, ``loss().backward()`` (the forward runs
    inside `loss`, e.g. ``functools.partial(batch_loss, model, batch)``), clip each optimizer's parameters to global
    norm `clip_norm` (None: no clipping), and step.

    For timing training outside the loop; the loop itself (`bench.train.Member.update`) clips per the run's protocol
    and skips non-finite updates. `compile_options` are the step's (for `begin_iteration`).
    """
    begin_iteration(compile_options)
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss().backward()
    for optimizer in optimizers:
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                                           clip_norm)
        optimizer.step()


class _Method(torch.nn.Module):
    """Calls one method of a module as its `forward`, so `functional_call` can run it with a seed's parameters."""

    def __init__(self, module: torch.nn.Module, method: str):
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args):
        return getattr(self.module, self.method)(*args)


class SingleForward:
    """A run trained alone: inputs [1, B, T, in] -> logits [1, B, T, out] from its own model, whose step is compiled
    (`compile_step`) when `compile_options` is not None."""

    def __init__(self, model: torch.nn.Module, compile_options: dict[str, Any] | None = None):
        if compile_options is not None:
            model.compile_step(**compile_options)
        self.model = model

    def keep(self, models: list[torch.nn.Module]) -> None:
        """Nothing to drop: a run alone leaves by ending the loop."""

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs[0]).unsqueeze(0)


def make_forward(models: list[torch.nn.Module], population: int, compile_options: dict[str, Any] | None):
    """The one decision on how the forward of a group of `population` runs (`models`: those still training) runs,
    batched or not, compiled or not: a run alone calls its own model (`SingleForward`); a group of several goes
    through `BatchedForward` to the end of training, even once only one of its runs is left."""
    if population == 1:
        return SingleForward(models[0], compile_options)
    return BatchedForward(models, compile_options)


class BatchedForward:
    """A forward over P runs of the same architecture at once: inputs [P, B, T, in] -> logits [P, B, T, out].

    Models with a pure step (models.base.RecurrentModel) run as ONE computation: their `initial_state`,
    `steps` and `step` are `torch.func.vmap`-ed over the runs' stacked parameters. Eager, the vmapped `steps` runs
    the whole sequence; compiled (`torch.compile(**compile_options)` unless that is None), it runs chunks of the
    model's `compile_unroll` steps, as a single compiled model does (`run_unrolled`). Each run's own leaf tensors
    are stacked at every call, so gradients and optimizer state stay per run. Other models, and an eager group of
    one, run one by one. `keep(models)` drops runs that left the group without rebuilding (or recompiling) the
    step: a group that shrinks to one run keeps the vmapped step.
    """

    def __init__(self, models: list[torch.nn.Module], compile_options: dict[str, Any] | None = None):
        # a group of one runs its model directly, unless compiled (its members did not compile their own step)
        self.vmapped = isinstance(models[0], RecurrentModel) and (len(models) > 1 or compile_options is not None)
        self.keep(models)
        if not self.vmapped:
            return
        from torch.func import functional_call, vmap

        template = copy.deepcopy(models[0]).to("meta")  # the architecture; every call swaps in the runs' tensors
        methods = {name: _Method(template, name) for name in ("initial_state", "steps", "step")}

        def call(method, params, buffers, *args):
            return functional_call(methods[method], (params, buffers), args)

        self.initial_state = lambda params, buffers, *args: vmap(lambda p, b: call("initial_state", p, b, *args))(
            params, buffers)
        self.steps = vmap(lambda p, b, x, s: call("steps", p, b, x, s))
        self.step = vmap(lambda p, b, x, s: call("step", p, b, x, s))
        self.unroll = None  # eager: one call of the vmapped `steps` over the whole sequence
        if compile_options is not None:
            self.steps = torch.compile(self.steps, **compile_options)
            self.step = torch.compile(self.step, **compile_options)
            self.unroll = models[0].compile_unroll

    def keep(self, models: list[torch.nn.Module]) -> None:
        """The runs to compute from now on (a subset of the ones given before, in order)."""
        self.models = models
        # gathered once; stacked at every call because each optimizer updates its own leaf tensors in place
        self.params = [dict(m.named_parameters()) for m in models]
        self.buffers = [dict(m.named_buffers()) for m in models]

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.vmapped:
            return torch.stack([model(x) for model, x in zip(self.models, inputs)])
        params = {f"module.{n}": torch.stack([p[n] for p in self.params]) for n in self.params[0]}
        buffers = {f"module.{n}": torch.stack([b[n] for b in self.buffers]) for n in self.buffers[0]}
        state = self.initial_state(params, buffers, inputs.shape[1], inputs.device, inputs.dtype)
        if self.unroll is None:
            return self.steps(params, buffers, inputs, state)[0]  # [P, B, T, out]
        steps = functools.partial(self.steps, params, buffers)
        step = functools.partial(self.step, params, buffers)
        return run_unrolled(steps, step, self.unroll, inputs, state, time_dim=2)[0]  # [P, B, T, out]
