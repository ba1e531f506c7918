"""The suite runner: the one sequence every backend shares.

`run_suite(suite, out_dir, backend)` expands the suite, skips finished runs, groups the pending ones by seed, shows
progress, hands the groups to a backend, records each run it reports back, and rebuilds the suite's CSVs. A backend
only trains groups: `bench.local_backend.LocalBackend` (this machine, one process or a pool) and
`bench.ray_backend.RayBackend` (Ray tasks) are peers behind the `Backend` interface below.

Every run writes only inside its own folder, so backends never share a file; the suite-level CSVs are rebuilt from
the folders afterwards (`bench.results.collect`), which makes a crash mid-suite harmless.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import torch
from tqdm import tqdm

from bench import bundles, registry
from bench.config import ConfigError, Suite
from bench.folders import make_folder, refuse_links_within, remove_tree
from bench.gpu import deterministic_environment, worker_settings
from bench.grid import RunSpec, expand, memory_overflows, task_key, task_train
from bench.options import DEFAULT_OPTIONS, WorkerOptions
from bench.preflight import check_memory, estimate_seconds
from bench.protocol import protocol
from bench.provenance import device_name, resolve_device
from bench.results import atomic_write_json, collect, read_json, run_is_finished, writing_output_folder
from bench.text import format_duration
from bench.train import train_population

log = logging.getLogger("bench")

#: seeds trained together on a CPU under `parallel_seeds: auto`. On a CPU a group of seeds is little faster per
#: sequence than one run, and a group pads every seed's batch to the longest length drawn, which costs more than that
#: under per-batch length sampling; so a CPU trains seeds alone (measurements: docs/PERFORMANCE.md, "Against the
#: targets of issue 7").
CPU_PARALLEL_SEEDS = 1

Group = list[RunSpec]
Results = dict[str, dict[str, Any]]


class Backend(Protocol):
    """Where groups of runs train. The runner owns everything else (skipping, grouping, bars, logging, CSVs)."""

    #: how every worker trains: torch threads, plugins, TensorBoard (`bench.options.WorkerOptions`)
    options: WorkerOptions

    def device_type(self, suite: Suite) -> str:
        """Where this backend's runs of `suite` train: "cpu" or "cuda" (decides `parallel_seeds: auto`)."""

    def adapt(self, suite: Suite, spec: RunSpec) -> RunSpec:
        """A pending run as this backend will train it (e.g. the device a Ray task can see)."""

    def memory(self, suite: Suite) -> tuple[int, int] | None:
        """(bytes of memory that the runs training at once share, how many groups train at once), for the up-front
        memory check; None where there is no one machine to check (Ray: each task on a node of its own)."""

    def session(self, suite: Suite, groups: list[Group]) -> AbstractContextManager[int]:
        """Open the backend for these groups; yields how many groups train at once (for the time estimate)."""

    def train(self, groups: list[Group], runs_dir: Path) -> Iterator[tuple[Group, Results]]:
        """Train every group, each run in ``runs_dir/<run_id>``; yield each group with its runs' results (by run_id)
        as it finishes, in any order. A group that fails yields `failed_result`s; it never raises for one."""


@dataclass
class SuiteOutcome:
    out_dir: Path
    total: int
    skipped: int
    results: Results = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [rid for rid, r in self.results.items() if r.get("status") == "failed"]


def run_suite(suite: Suite, out_dir: Path, backend: Backend, fresh: bool = False,
              estimate: bool = True, reuse: Sequence[Path] = (),
              then: Callable[[SuiteOutcome], Any] | None = None) -> SuiteOutcome:
    """Train every pending run of `suite` under ``out_dir/runs`` on `backend`, then rebuild the suite CSVs.
    `fresh` deletes this suite's run folders first; `estimate` logs a training-time estimate before starting;
    `reuse` (bundle folders, `bench.bundles`) supplies finished runs that are copied in instead of trained; `then`
    (the report) is called with the outcome at the end, while this process is still the folder's one writer.

    The folder is claimed and locked (`bench.results.writing_output_folder`) before anything is written: a second
    writer of it, a folder of someone else's files, and a symbolic link among the harness's own entries or the
    suite's run folders are each refused in one line."""
    out_dir = Path(out_dir)
    if backend.options.deterministic:
        deterministic_environment()  # before the memory check or the estimate first touches CUDA
    specs = expand(suite)
    group_size = resolve_parallel_seeds(suite, backend.device_type(suite))
    check_memory(suite, specs, backend.memory(suite), group_size)  # before anything is written
    with writing_output_folder(out_dir):
        refuse_links_within(out_dir, [f"runs/{spec.run_id}" for spec in specs], entries=True)
        outcome = _run_claimed(suite, specs, group_size, out_dir, backend, fresh, estimate, reuse)
        if then is not None:
            then(outcome)
    return outcome


def _run_claimed(suite: Suite, specs: list[RunSpec], group_size: int, out_dir: Path, backend: Backend, fresh: bool,
                 estimate: bool, reuse: Sequence[Path]) -> SuiteOutcome:
    """`run_suite` in its claimed and locked folder."""
    pending = prepare(suite, specs, out_dir, fresh, reuse)
    pending = [backend.adapt(suite, spec) for spec in pending]
    groups = group_seeds(pending, group_size)
    outcome = SuiteOutcome(out_dir, len(specs), len(specs) - len(pending))
    suite_bar = tqdm(total=outcome.total, initial=outcome.skipped, desc=f"suite {suite.name}", unit="run",
                     disable=not show_bars(), position=0, dynamic_ncols=True)
    started = time.perf_counter()
    try:
        with backend.session(suite, groups) as at_once:
            announce(suite, pending, outcome, suite_bar, backend.options.threads, at_once, estimate)
            trained = backend.train(groups, out_dir / "runs")
            try:
                for group, results in trained:
                    for spec in group:
                        outcome.results[spec.run_id] = results[spec.run_id]
                        _log_result(spec, results[spec.run_id], None if suite_bar.disable else suite_bar)
                        suite_bar.update(1)
            finally:
                # an interruption while recording a result leaves the backend paused at its yield: close it now, so
                # that it stops its workers (or cancels its tasks) before the CSVs are collected, not whenever the
                # traceback is freed
                close = getattr(trained, "close", None)
                if close is not None:
                    close()
    finally:
        suite_bar.close()
        collect(out_dir, [s.run_id for s in specs])
    log.info("suite %s: %d runs (%d skipped as finished) in %.0fs", suite.name, outcome.total, outcome.skipped,
             time.perf_counter() - started)
    return outcome


# ---- before training ----------------------------------------------------------------------------------------------

def prepare(suite: Suite, specs: list[RunSpec], out_dir: Path, fresh: bool = False,
            reuse: Sequence[Path] = ()) -> list[RunSpec]:
    """Write the manifest of `suite` (expanded to `specs`); returns the pending runs. `fresh` deletes this suite's
    run folders first; the finished runs of the `reuse` bundles are then copied in (`bench.bundles.reuse`)."""
    for problem in memory_overflows(suite):
        log.warning("%s", problem)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_ids = [s.run_id for s in specs]
    if len(set(run_ids)) != len(run_ids):
        raise ConfigError(f"{suite.path}: two runs of this suite resolve to the same configuration; give each "
                          "model and task a distinct configuration")
    if fresh:
        for rid in run_ids:
            remove_tree(out_dir / "runs" / rid, ignore_errors=True)
    facts = task_facts(suite)
    atomic_write_json(out_dir / "suite.json", {"name": suite.name, "description": suite.description,
                                               "path": suite.path, "resolved": suite.resolved, "run_ids": run_ids,
                                               "seeds": list(suite.seeds), "steps": suite.train.steps,
                                               "batch_size": suite.train.batch_size, "tasks": facts})
    # a finished run counts only when its files agree with each other and its spec.json is this spec's (identity
    # and run_id); any other is redone, with a one-line warning (`bench.results.run_is_finished`)
    finished = {spec.run_id for spec in specs if run_is_finished(out_dir / "runs" / spec.run_id, spec)}
    for spec in specs:
        run_dir = out_dir / "runs" / spec.run_id
        if spec.run_id in finished and stopped_under_another_rule(run_dir, facts[spec.task].get("convergence")):
            log.warning("run %s (%s/%s seed %d) stopped at convergence under another convergence rule than the "
                        "task's current one, so its curve cannot be rescored; it is trained again", spec.run_id,
                        spec.task, spec.model, spec.seed)
            remove_tree(run_dir)
            finished.discard(spec.run_id)
    for bundle in reuse:
        reused = bundles.reuse(bundle, specs, facts, out_dir)
        log.info("reused %d finished run(s) from %s; they are not trained again", len(reused), bundle)
        finished.update(reused)
    return [s for s in specs if s.run_id not in finished]


def stopped_under_another_rule(run_dir: Path, rule: dict[str, Any] | None) -> bool:
    """Whether a finished run was scored under a convergence rule other than `rule` (as recorded in its spec.json)
    AND stopped before its step budget. Such a run cannot be rescored: under a stricter rule it might not have
    stopped. A run that trained to its budget is rescored from its curve by `bench.results.collect` instead; a run
    whose spec.json records no rule (written before rules were recorded) is taken as scored by the current one."""
    spec = read_json(run_dir / "spec.json")
    rules = spec.get("rules")
    if not isinstance(rules, dict) or rules.get("convergence") == rule:
        return False
    result = read_json(run_dir / "result.json")
    return result.get("status") == "done" and int(result.get("steps", 0)) < int(spec["train"]["steps"])


def task_facts(suite: Suite) -> dict[str, dict[str, Any]]:
    """What the report needs to know of each task without building it: its registry name, `Task.facts()` and its
    `protocol` (`bench.protocol`), under the task's own training settings (`bench.grid.task_train`: its evaluation
    and generalisation sizes) and the suite's evaluation seed. Drawing the sets to fingerprint them takes well under
    a second per task at the default sizes."""
    facts = {}
    for label, component in suite.tasks.items():
        task = registry.build_task(component.type, **component.params)
        train = task_train(suite, label)
        fingerprint = protocol(task, component.type, component.params, train.eval_sequences,
                               train.generalization_sequences, suite.eval_seed,
                               task_key(component.type, component.params))
        facts[label] = {"type": component.type, **task.facts(), "protocol": fingerprint,
                        **({"note": component.note} if component.note else {})}
    return facts


def resolve_parallel_seeds(suite: Suite, device_type: str) -> int:
    """How many seeds of one configuration train together, decided once, where the device is known: the suite's
    `parallel_seeds`, or under `auto` every seed on a GPU and CPU_PARALLEL_SEEDS on a CPU."""
    setting = suite.train.parallel_seeds
    if setting != "auto":
        return max(1, int(setting))
    return len(suite.seeds) if device_type == "cuda" else CPU_PARALLEL_SEEDS


def group_seeds(pending: list[RunSpec], size: int) -> list[Group]:
    """Groups of pending runs that differ only in their seed, at most `size` per group."""
    by_config: dict[str, Group] = {}
    for spec in pending:
        identity = spec.identity()
        identity.pop("seed")
        by_config.setdefault(json.dumps(identity, sort_keys=True, default=str), []).append(spec)
    return [members[i : i + size] for members in by_config.values() for i in range(0, len(members), size)]


def announce(suite: Suite, pending: list[RunSpec], outcome: SuiteOutcome, suite_bar: tqdm, threads: int,
             at_once: int, estimate: bool) -> None:
    """Log what is already finished and, unless `estimate` is off, the estimated training time at `at_once` runs
    at a time."""
    if outcome.skipped:
        log.info("%d of %d runs already finished; %d to go", outcome.skipped, outcome.total, len(pending))
    if not (estimate and pending):
        return
    seconds = estimate_seconds(pending, threads) / max(1, min(at_once, len(pending)))
    stop = " (less where runs stop at convergence)" if suite.train.stop_at_convergence else ""
    log.info("estimated training time for %d runs x %d steps on %s: %s%s", len(pending), suite.train.steps,
             device_name(resolve_device(pending[0].device)), format_duration(seconds), stop)
    if seconds > 3 * 3600 and not any(s.device.startswith("cuda") for s in pending) and not torch.cuda.is_available():
        log.warning("this suite is sized for a GPU: on this CPU it would take about %s. Try a *_small suite, fewer "
                    "seeds (--seeds 2) or --set train.steps=N.", format_duration(seconds))
    suite_bar.set_postfix_str(f"est. {format_duration(seconds)} in all")


# ---- training a group (what every backend calls) -----------------------------------------------------------------

def show_bars() -> bool:
    """Progress bars only on an interactive terminal and outside CI; otherwise one log line per finished run."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def failed_result(error: BaseException) -> dict[str, Any]:
    """The result.json of a run that raised: status failed, the error on one line, and the traceback."""
    return {"status": "failed", "error": f"{type(error).__name__}: {error}".splitlines()[0],
            "traceback": "".join(traceback.format_exception(error))}


def load_plugins(plugins: tuple[str, ...]) -> None:
    """Register the built-in tasks and models and import each plugin module (in a fresh worker process)."""
    registry.load_all()
    for plugin in plugins:
        registry.load_plugin(plugin)


def train_group(group: Group, runs_dir: Path, options: WorkerOptions = DEFAULT_OPTIONS,
                hooks: Sequence[Any] = ()) -> Results:
    """Train a group of runs that differ only in their seed (`bench.train.train_population`; a group may be one
    run), each in ``runs_dir/<run_id>``, as `options` say (after loading their plugins; on a GPU, its memory share
    and deterministic mode: `bench.gpu.worker_settings`), telling `hooks` (`bench.hooks.TrainingHooks`) as it goes.
    Returns each run's result by run_id. An exception fails every run of the group that had not finished: each gets
    a `failed` result.json and is retried on the next invocation."""
    load_plugins(options.plugins)
    results: Results = {}
    record = SimpleNamespace(on_finish=lambda spec, result: results.__setitem__(spec.run_id, result))
    try:
        with worker_settings(options.gpu_memory_fraction, options.deterministic, resolve_device(group[0].device)):
            train_population(group, [runs_dir / s.run_id for s in group], options, [*hooks, record])
    except Exception as error:  # the suite carries on; the failure is recorded and shown
        for spec in group:
            if spec.run_id not in results:
                results[spec.run_id] = failed_result(error)
                make_folder(runs_dir / spec.run_id)
                atomic_write_json(runs_dir / spec.run_id / "result.json", results[spec.run_id])
    return results


def describe(group: Group) -> str:
    """task/model/seed of a run, or task/model/N seeds of a group."""
    first = group[0]
    return f"{first.task}/{first.model}/" + (f"seed {first.seed}" if len(group) == 1 else f"{len(group)} seeds")


def _log_result(spec: RunSpec, result: dict[str, Any], bar: tqdm | None) -> None:
    if result.get("status") == "failed":
        message = f"FAILED {describe([spec])} ({spec.run_id}): {result.get('error')}"
    else:
        conv = f"converged at step {result['converge_step']}" if result.get("converged") else "not converged"
        message = (f"{result['status']} {describe([spec])}: {conv}, final {result['final_wrong_bits_per_seq']:.3g} "
                   f"wrong bits/seq, {result['seq_per_s']:.0f} seq/s, {result['wall_s']:.0f}s")
    if bar is not None:
        bar.write(message)
    else:
        log.info(message)
