"""The local backend: trains groups of runs on this machine, in this process or in a pool of worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm import tqdm

from bench.config import Suite
from bench.grid import RunSpec
from bench.hooks import TrainingHooks
from bench.options import DEFAULT_OPTIONS, WorkerOptions
from bench.provenance import resolve_device
from bench.runner import Group, Results, describe, load_plugins, show_bars, train_group


def machine_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


class ProgressBar(TrainingHooks):
    """A hook that shows a group's steps, and the error of its last evaluation, on a progress bar."""

    def __init__(self, bar: tqdm):
        self.bar = bar

    def on_progress(self, step: int, metrics: dict[str, float] | None) -> None:
        self.bar.n = step
        if metrics is not None:
            self.bar.set_postfix(wrong_bits=f"{metrics['wrong_bits_per_seq']:.3g}", refresh=False)
        if step % 10 == 0 or metrics is not None:
            self.bar.refresh()


class LocalBackend:
    """`workers` groups at a time: one in this process (with a per-run progress bar), or several in a pool of
    spawned processes, each training one group at a time as `options` say (torch threads, plugins, TensorBoard)."""

    def __init__(self, workers: int = 1, options: WorkerOptions = DEFAULT_OPTIONS):
        self.workers = workers
        self.options = options

    def device_type(self, suite: Suite) -> str:
        return resolve_device(suite.device).type

    def adapt(self, suite: Suite, spec: RunSpec) -> RunSpec:
        return spec

    def memory(self, suite: Suite) -> tuple[int, int] | None:
        """This machine's memory and `workers` groups at once. For a suite that trains on a GPU, the GPU's memory,
        not the host's, and no more than each worker's share of it times the workers (``--gpu-memory-fraction``)."""
        device = resolve_device(suite.device)
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            fraction = self.options.gpu_memory_fraction
            shared = total if fraction is None else min(total, int(fraction * total * self.workers))
            return shared, self.workers
        total = machine_memory()
        return None if total is None else (total, self.workers)

    @contextmanager
    def session(self, suite: Suite, groups: list[Group]) -> Iterator[int]:
        yield self.workers

    def train(self, groups: list[Group], runs_dir: Path) -> Iterator[tuple[Group, Results]]:
        if self.workers <= 1:
            yield from self._in_process(groups, runs_dir)
        else:
            yield from self._in_pool(groups, runs_dir)

    def _in_process(self, groups: list[Group], runs_dir: Path) -> Iterator[tuple[Group, Results]]:
        for group in groups:
            run_bar = tqdm(total=group[0].train.steps, desc=describe(group), unit="step", leave=False,
                           disable=not show_bars(), position=1, dynamic_ncols=True)
            try:
                results = train_group(group, runs_dir, self.options, [ProgressBar(run_bar)])
            finally:
                run_bar.close()
            yield group, results

    def _in_pool(self, groups: list[Group], runs_dir: Path) -> Iterator[tuple[Group, Results]]:
        context = get_context("spawn")  # fork is unsafe with torch's thread pools
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=load_plugins,
                                   initargs=(self.options.plugins,))
        try:
            futures = {pool.submit(train_group, group, runs_dir, self.options): group for group in groups}
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    yield futures[future], future.result()
        except BaseException:
            # interrupted (Ctrl-C, SIGTERM, SIGHUP), or the caller stopped early: waiting for the pool would let
            # its workers train on after the driver is gone, so end them now; their runs resume from checkpoints
            stop_pool(pool)
            raise
        pool.shutdown(wait=True)


def stop_pool(pool: ProcessPoolExecutor, grace_s: float = 10.0) -> None:
    """Cancel what is queued and end the pool's worker processes: terminate, then kill any still alive after
    `grace_s` seconds. Returns once they have all exited."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(grace_s)
        if process.is_alive():
            process.kill()
            process.join(grace_s)
