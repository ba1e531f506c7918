"""Checks before a suite trains: whether its largest run fits in memory as often as it trains at once
(`check_memory`, from `peak_bytes`: parameters and autograd's saved tensors, measured), and an upper bound on its
training time (`estimate_seconds`, from a few timed steps). `bench.runner.run_suite` calls both before training.
"""

from __future__ import annotations

import functools
import json
import logging
import time

import torch

from bench.config import ConfigError, Suite
from bench.forward import batch_loss, optimizer_step
from bench.gpu import release_memory
from bench.grid import RunSpec
from bench.provenance import resolve_device
from bench.train import build_model, build_task, make_optimizer

log = logging.getLogger("bench")

#: the batch sizes at which `peak_bytes` measures
MEASURE_BATCHES = (2, 4)


def _saved_bytes(model: torch.nn.Module, task, batch_size: int, size: tuple[int, ...]) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward at this batch size and size, counted
    by a saved-tensors hook (each storage once; the parameters themselves are counted by the caller)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    batch = task.sample(batch_size, torch.Generator().manual_seed(0), size=size)
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = model(batch.inputs)
    return sum(saved.values()) + 2 * logits.numel() * logits.element_size()


def peak_bytes(spec: RunSpec) -> int:
    """Memory one run's tensors need at their peak: its parameters four times over (weights, gradients and Adam's
    two moments) plus what autograd keeps for the backward pass of one training batch at the longest training size.
    The latter is measured on real forward passes at two small batch sizes on the CPU and extrapolated linearly to the
    run's batch size, so that measuring never needs the memory it measures. It is exact for the NTM and the DNC; the
    LSTM's fused kernel keeps workspaces that grow in steps, and the line through batch 2 and 4 overestimates them
    (by 15 % at batch 8)."""
    task = build_task(spec)
    model = build_model(spec, task, torch.device("cpu"))
    largest = tuple(high for _, high in (task.train_sizes[p] for p in task.size_parts))
    small, large = (_saved_bytes(model, task, b, largest) for b in MEASURE_BATCHES)
    per_sequence = (large - small) / (MEASURE_BATCHES[1] - MEASURE_BATCHES[0])
    activations = large + per_sequence * (spec.train.batch_size - MEASURE_BATCHES[1])
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return int(4 * params + max(activations, small))  # never below what the smaller batch measured


def check_memory(suite: Suite, specs: list[RunSpec], memory: tuple[int, int] | None, group_size: int) -> None:
    """Refuse, in one line, a suite (expanded to `specs`) whose largest run cannot fit in memory as many times as it
    trains at once (`memory`: the bytes the runs share, the GPU's on a GPU (`bench.local_backend.LocalBackend.memory`),
    and how many groups train at once; None: not checked)."""
    if memory is None:
        return
    available, at_once = memory
    seen: dict[str, tuple[int, RunSpec]] = {}
    for spec in specs:
        key = json.dumps([spec.task_type, spec.task_params, spec.model_type, spec.model_params,
                          spec.train.batch_size], sort_keys=True, default=str)
        if key not in seen:
            try:
                seen[key] = (peak_bytes(spec), spec)
            except Exception as error:  # a model that cannot run fails as its own run, recorded, not here
                log.debug("memory of %s/%s not measured: %s", spec.task, spec.model, error)
    if not seen:
        return
    most, spec = max(seen.values(), key=lambda item: item[0])
    together = group_size * at_once
    if most * together > available:
        gib = 2.0**30
        gpu = spec.device != "cpu" and torch.cuda.is_available()  # then `memory` is the GPU's, not the host's
        raise ConfigError(
            f"{suite.path}: the runs would need about {most * together / gib:.1f} GiB of memory at once "
            f"({together} at a time x {most / gib:.2f} GiB for {spec.task}/{spec.model} at batch "
            f"{spec.train.batch_size}), more than the {available / gib:.1f} GiB {'of GPU memory ' if gpu else ''}"
            "here; lower train.batch_size, the sizes, --workers or train.parallel_seeds")


def estimate_seconds(pending: list[RunSpec], threads: int, probe_steps: int = 2) -> float:
    """Upper bound on the pending runs' training time: a short timing of each distinct configuration x steps. On a
    GPU, the memory its probes used is handed back afterwards (`bench.gpu.release_memory`), for the workers."""
    per_step: dict[str, float] = {}
    total = 0.0
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for spec in pending:
            key = spec.task + "|" + spec.model
            if key not in per_step:
                device = resolve_device(spec.device)
                per_step[key] = _seconds_per_step(spec, device, probe_steps)
                release_memory(device)  # the probe's model, optimizer state and batches are gone by now
            total += per_step[key] * spec.train.steps
    finally:
        torch.set_num_threads(previous_threads)
    return total


def _seconds_per_step(spec: RunSpec, device: torch.device, probe_steps: int) -> float:
    """The fastest of `probe_steps` timed training steps of `spec`'s model on `device`, after one untimed one."""
    task = build_task(spec)
    model = build_model(spec, task, device)
    optimizer = make_optimizer(spec, model.parameters())
    generator = torch.Generator().manual_seed(0)
    middle = tuple((lo + hi) // 2 for lo, hi in (task.train_sizes[p] for p in task.size_parts))
    timings = []
    for _ in range(probe_steps + 1):
        batch = task.sample(spec.train.batch_size, generator, size=middle).to(device)
        started = time.perf_counter()
        optimizer_step([optimizer], functools.partial(batch_loss, model, batch))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - started)
    return min(timings[1:])  # the first step pays one-off costs
