"""Run a suite's runs: in this process, or in a pool of worker processes. Finished runs are skipped.

Runs that differ only in their seed train together in groups of `train.parallel_seeds` (`group_seeds`,
`execute_group`); the ray executor (bench.ray_executor) groups and trains them through the same functions.

Every run writes only inside its own folder, so workers never share a file; the suite-level CSVs are rebuilt from
the folders afterwards (`bench.results.collect`), which makes a crash mid-suite harmless.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.config import Suite
from bench.grid import RunSpec, expand, memory_overflows
from bench.results import atomic_write_json, collect, run_is_finished

log = logging.getLogger("bench")


def show_bars() -> bool:
    """Progress bars only on an interactive terminal and outside CI; otherwise one log line per finished run."""
    return sys.stderr.isatty() and not os.environ.get("CI")


#: torch threads per run unless --threads says otherwise. Fixed, not derived from --workers, because CPU results
#: are bit-identical only at the same thread count (reductions split differently); 1 suits these small models.
DEFAULT_THREADS = 1
#: seeds trained together on a CPU under `parallel_seeds: auto`. On 2 CPU cores a 10-seed NTM group was only 1.4x
#: faster per sequence than one run at 1 thread, and a group pads every seed's batch to the longest length drawn,
#: which costs more than that under per-batch length sampling (docs/PERFORMANCE.md). So a CPU trains seeds alone.
CPU_PARALLEL_SEEDS = 1


@dataclass
class SuiteOutcome:
    out_dir: Path
    total: int
    skipped: int
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [rid for rid, r in self.results.items() if r.get("status") == "failed"]


def execute_run(spec: RunSpec, run_dir: Path, threads: int, plugins: tuple[str, ...] = (),
                on_progress=None) -> dict[str, Any]:
    """Train one run; an exception becomes a `failed` result.json (retried on the next invocation)."""
    from bench import registry
    from bench.train import train_run

    for plugin in plugins:
        registry.load_plugin(plugin)
    try:
        return train_run(spec, run_dir, threads=threads, on_progress=on_progress)
    except Exception as error:  # the suite carries on; the failure is recorded and shown
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc()}
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "result.json", result)
        return result


def execute_group(specs: list[RunSpec], runs_dir: Path, threads: int, plugins: tuple[str, ...] = (),
                  on_progress=None) -> dict[str, dict[str, Any]]:
    """Train a group of runs that differ only in their seed together (`train_population`), each in
    ``runs_dir/<run_id>``; one run alone when the group has one. Returns each run's result by run_id. An exception
    fails every run of the group that had not finished (each retried next time). Both executors train through here."""
    from bench import registry
    from bench.train import train_population

    if len(specs) == 1:
        return {specs[0].run_id: execute_run(specs[0], runs_dir / specs[0].run_id, threads, plugins, on_progress)}
    for plugin in plugins:
        registry.load_plugin(plugin)
    results: dict[str, dict[str, Any]] = {}
    try:
        train_population(specs, [runs_dir / s.run_id for s in specs], threads=threads,
                         on_progress=on_progress, on_finish=lambda spec, result: results.__setitem__(spec.run_id,
                                                                                                     result))
    except Exception as error:  # the suite carries on; unfinished runs of the group are recorded as failed
        for spec in specs:
            if spec.run_id in results:
                continue
            results[spec.run_id] = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                                    "traceback": traceback.format_exc()}
            atomic_write_json(runs_dir / spec.run_id / "result.json", results[spec.run_id])
    return results


def group_seeds(pending: list[RunSpec], parallel: int | str) -> list[list[RunSpec]]:
    """Groups of pending runs that differ only in their seed, at most `parallel` per group (auto: all of them)."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in pending:
        identity = spec.identity()
        identity.pop("seed")
        groups.setdefault(json.dumps(identity, sort_keys=True, default=str), []).append(spec)
    jobs = []
    for members in groups.values():
        size = len(members) if parallel == "auto" else max(1, int(parallel))
        jobs += [members[i : i + size] for i in range(0, len(members), size)]
    return jobs


def resolve_parallel_seeds(suite: Suite, device_type: str | None = None) -> int | str:
    """`parallel_seeds: auto` is every seed of a configuration on a GPU; on a CPU, what bench.perf measured fastest
    for these small models (CPU_PARALLEL_SEEDS). `device_type` ("cuda" or "cpu") is where the runs train; by
    default, what the suite's device resolves to on this machine (the ray executor says where its tasks train)."""
    setting = suite.train.parallel_seeds
    if setting != "auto":
        return setting
    if device_type is None:
        from bench.train import resolve_device

        device_type = resolve_device(suite.device).type
    return "auto" if device_type == "cuda" else CPU_PARALLEL_SEEDS


def _worker_init(plugins: tuple[str, ...]) -> None:
    from bench import registry

    registry.load_all()
    for plugin in plugins:
        registry.load_plugin(plugin)


def prepare(suite: Suite, out_dir: Path, fresh: bool = False) -> tuple[list[RunSpec], list[RunSpec]]:
    """Write the suite manifest; returns (all specs, the pending ones). `fresh` deletes this suite's run folders."""
    specs = expand(suite)
    for problem in memory_overflows(suite):
        log.warning("%s", problem)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_ids = [s.run_id for s in specs]
    if len(set(run_ids)) != len(run_ids):
        raise ValueError(f"{suite.path}: two runs of this suite resolve to the same configuration; give each "
                         "model and task a distinct configuration")
    if fresh:
        for rid in run_ids:
            shutil.rmtree(out_dir / "runs" / rid, ignore_errors=True)
    atomic_write_json(out_dir / "suite.json", {"name": suite.name, "description": suite.description,
                                               "path": suite.path, "resolved": suite.resolved, "run_ids": run_ids,
                                               "seeds": list(suite.seeds), "steps": suite.train.steps,
                                               "batch_size": suite.train.batch_size, "tasks": task_facts(suite)})
    pending = [s for s in specs if not run_is_finished(out_dir / "runs" / s.run_id)]
    return specs, pending


def task_facts(suite: Suite) -> dict[str, dict[str, Any]]:
    """What the report needs to know of each task without building it: sizes and the convergence rule."""
    from bench import registry

    facts = {}
    for label, component in suite.tasks.items():
        task = registry.build_task(component.type, **component.params)
        facts[label] = {"type": component.type, "size_parts": list(task.size_parts),
                        "train_sizes": {p: list(r) for p, r in task.train_sizes.items()},
                        "test_sizes": [list(s) for s in task.test_sizes],
                        "convergence_rule": task.convergence_rule(),
                        "convergence_threshold": task.convergence_threshold(), "solved_at_most": task.solved_at_most,
                        "solved_rule": task.solved_rule(),
                        "test_size_2x": None if task.double_size() is None else list(task.double_size())}
    return facts


def _describe(spec: RunSpec) -> str:
    return f"{spec.task}/{spec.model}/seed {spec.seed}"


def _log_result(spec: RunSpec, result: dict[str, Any], bar: tqdm | None) -> None:
    if result.get("status") == "failed":
        message = f"FAILED {_describe(spec)} ({spec.run_id}): {result.get('error')}"
    else:
        conv = f"converged at step {result['converge_step']}" if result.get("converged") else "not converged"
        message = (f"{result['status']} {_describe(spec)}: {conv}, final {result['final_wrong_bits_per_seq']:.3g} "
                   f"wrong bits/seq, {result['seq_per_s']:.0f} seq/s, {result['wall_s']:.0f}s")
    if bar is not None:
        bar.write(message)
    else:
        log.info(message)


def estimate_seconds(pending: list[RunSpec], threads: int, probe_steps: int = 2) -> float:
    """Upper bound on the pending runs' training time: a short timing of each distinct configuration x steps."""
    import torch

    from bench.train import build_model, build_task, loss_nats_per_seq, make_optimizer, resolve_device

    per_step: dict[str, float] = {}
    total = 0.0
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for spec in pending:
            key = spec.task + "|" + spec.model
            if key not in per_step:
                device = resolve_device(spec.device)
                task = build_task(spec)
                model = build_model(spec, task, device)
                optimizer = make_optimizer(spec, model.parameters())
                generator = torch.Generator().manual_seed(0)
                middle = tuple((lo + hi) // 2 for lo, hi in (task.train_sizes[p] for p in task.size_parts))
                timings = []
                for _ in range(probe_steps + 1):
                    batch = task.sample(spec.train.batch_size, generator, size=middle).to(device)
                    started = time.perf_counter()
                    optimizer.zero_grad()
                    loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask).backward()
                    optimizer.step()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    timings.append(time.perf_counter() - started)
                per_step[key] = min(timings[1:])  # the first step pays one-off costs
            total += per_step[key] * spec.train.steps
    finally:
        torch.set_num_threads(previous_threads)
    return total


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def open_suite_bar(suite: Suite, outcome: SuiteOutcome) -> tqdm:
    """The suite-level progress bar (runs done out of all runs); disabled off a terminal and in CI."""
    return tqdm(total=outcome.total, initial=outcome.skipped, desc=f"suite {suite.name}", unit="run",
                disable=not show_bars(), position=0, dynamic_ncols=True)


def announce(suite: Suite, pending: list[RunSpec], outcome: SuiteOutcome, suite_bar: tqdm, threads: int,
             parallel: int, estimate: bool) -> None:
    """Log what is already finished and, unless `estimate` is off, the estimated training time at `parallel` runs
    at a time."""
    if outcome.skipped:
        log.info("%d of %d runs already finished; %d to go", outcome.skipped, outcome.total, len(pending))
    if estimate and pending:
        seconds = estimate_seconds(pending, threads) / max(1, min(parallel, len(pending)))
        stop = " (less where runs stop at convergence)" if suite.train.stop_at_convergence else ""
        from bench.train import device_name, resolve_device

        device = device_name(resolve_device(pending[0].device))
        log.info("estimated training time for %d runs x %d steps on %s: %s%s", len(pending),
                 suite.train.steps, device, format_duration(seconds), stop)
        if seconds > 3 * 3600 and not any(s.device.startswith("cuda") for s in pending):
            import torch

            if not torch.cuda.is_available():
                log.warning("this suite is sized for a GPU: on this CPU it would take about %s. Try a *_small "
                            "suite, fewer seeds (--seeds 2) or --set train.steps=N.", format_duration(seconds))
        suite_bar.set_postfix_str(f"est. {format_duration(seconds)} in all")


def finish_run(spec: RunSpec, result: dict[str, Any], outcome: SuiteOutcome, suite_bar: tqdm) -> None:
    """Record a finished run: its result, its log line and one step of the suite bar."""
    outcome.results[spec.run_id] = result
    _log_result(spec, result, suite_bar if not suite_bar.disable else None)
    suite_bar.update(1)


def log_summary(suite: Suite, outcome: SuiteOutcome, started: float) -> None:
    log.info("suite %s: %d runs (%d skipped as finished) in %.0fs", suite.name, outcome.total, outcome.skipped,
             time.perf_counter() - started)


def run_local(suite: Suite, out_dir: Path, workers: int = 1, fresh: bool = False,
              plugins: tuple[str, ...] = (), threads: int = DEFAULT_THREADS, estimate: bool = True) -> SuiteOutcome:
    """Run every pending run of `suite` under `out_dir`, `workers` at a time, then rebuild the suite CSVs."""
    specs, pending = prepare(suite, out_dir, fresh)
    jobs = group_seeds(pending, resolve_parallel_seeds(suite))
    outcome = SuiteOutcome(out_dir, len(specs), len(specs) - len(pending))
    bars = show_bars()
    suite_bar = open_suite_bar(suite, outcome)
    started = time.perf_counter()
    announce(suite, pending, outcome, suite_bar, threads, workers, estimate)
    try:
        if workers <= 1:
            for job in jobs:
                label = _describe(job[0]) if len(job) == 1 else f"{job[0].task}/{job[0].model}/{len(job)} seeds"
                run_bar = tqdm(total=job[0].train.steps, desc=label, unit="step", leave=False,
                               disable=not bars, position=1, dynamic_ncols=True)

                def progress(step: int, metrics, bar=run_bar) -> None:
                    bar.n = step
                    if metrics is not None:
                        bar.set_postfix(wrong_bits=f"{metrics['wrong_bits_per_seq']:.3g}", refresh=False)
                    bar.refresh() if step % 10 == 0 or metrics is not None else None

                results = execute_group(job, out_dir / "runs", threads, plugins, progress)
                run_bar.close()
                for spec in job:
                    finish_run(spec, results[spec.run_id], outcome, suite_bar)
        else:
            context = get_context("spawn")  # fork is unsafe with torch's thread pools
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                     initargs=(plugins,)) as pool:
                futures = {pool.submit(execute_group, job, out_dir / "runs", threads, plugins): job
                           for job in jobs}
                remaining = set(futures)
                while remaining:
                    done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                    for future in done:
                        results = future.result()
                        for spec in futures[future]:
                            finish_run(spec, results[spec.run_id], outcome, suite_bar)
    finally:
        suite_bar.close()
        collect(out_dir, [s.run_id for s in specs])
    log_summary(suite, outcome, started)
    return outcome
