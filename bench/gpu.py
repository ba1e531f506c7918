"""What the harness does differently on a GPU, in one place (docs/PERFORMANCE.md, "On a GPU"):

- `worker_settings`: a worker's share of the GPU's memory (``--gpu-memory-fraction``, for several workers on one GPU)
  and torch's deterministic mode (``--deterministic``), around the training of a group;
- `deterministic_environment`: the cuBLAS setting that deterministic mode needs, set before CUDA starts;
- `release_memory`: hand what torch's caching allocator keeps back to the driver (after the time estimate);
- `cudagraph_skips` and `cuda_graphs_recorded`: whether a step compiled with mode reduce-overhead really runs as CUDA
  graphs (inductor falls back to plain compiled code, and says so only in a log that is off by default).

On a CPU none of it changes anything.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: cuBLAS's workspace setting under which its results repeat (torch's notes on reproducibility)
CUBLAS_WORKSPACE = ":4096:8"


def check_memory_fraction(fraction: float | None) -> str | None:
    """Why `fraction` cannot be a worker's share of the GPU's memory, or None when it can (None: no cap)."""
    if fraction is None:
        return None
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction) \
            or not 0 < fraction <= 1:
        return f"must be a number in (0, 1], got {fraction!r}"
    return None


def deterministic_environment() -> None:
    """The cuBLAS workspace setting that deterministic mode needs, unless one is set already. cuBLAS reads it when
    CUDA first uses it, so this runs before any CUDA work (`bench.runner.run_suite`); spawned workers inherit it."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


@contextmanager
def worker_settings(memory_fraction: float | None, deterministic: bool, device: torch.device) -> Iterator[None]:
    """A worker's GPU settings while it trains on `device`: at most `memory_fraction` of the GPU's memory for this
    process (None: no cap; it stays for the life of the process, a worker's), and, if `deterministic`, torch's
    deterministic algorithms (an op without a deterministic version raises, and the run fails saying which), put
    back as they were at the end. Neither does anything to the numbers a CPU computes, except that deterministic mode
    refuses such an op there too."""
    if memory_fraction is not None and device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(memory_fraction, device)
    if not deterministic:
        yield
        return
    deterministic_environment()
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def release_memory(device: torch.device) -> None:
    """Hand the memory that torch's caching allocator keeps on `device` back to the driver, once the tensors that used
    it are gone, so that the workers that train next can have it. Nothing on a CPU."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def cudagraph_skips() -> int:
    """How many times, so far in this process, inductor has compiled a graph meant for CUDA graphs without them
    (torch's own counter: compare it before and after)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


def cuda_graphs_recorded(device: torch.device) -> int | None:
    """How many CUDA graphs inductor's CUDA-graph trees hold on `device` now (until torch._dynamo.reset), or None
    where this torch does not say (the trees are torch's internals)."""
    if device.type != "cuda":
        return 0
    try:
        from torch._inductor import cudagraph_trees

        index = device.index if device.index is not None else torch.cuda.current_device()
        manager = cudagraph_trees.get_manager(index, create_if_none_exists=False)
        if manager is None:
            return 0
        count, nodes = 0, [node for roots in manager.roots.values() for node in roots]
        while nodes:
            node = nodes.pop()
            count += 1
            nodes += [child for children in node.children.values() for child in children]
        return count
    except Exception:  # noqa: BLE001 - another torch's internals: not knowing is the answer
        return None
