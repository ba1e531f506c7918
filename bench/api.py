"""The Python API, for notebooks and scripts: the same suites, runs and results as the command line.

    from bench.api import run_suite, load_results, load_model

    results = run_suite({"name": "mine", "include": "smoke", "seeds": 3}, out="out/mine", workers=2)
    results.summary                                  # one row per task x model, as summary.csv
    model = load_model(results.folder / "runs" / results.runs.run_id[0])

`run_suite` takes a suite name (``quick``), a path to a YAML file, or a dict of the same keys (which needs a `name`;
its `include:` is looked up from the current folder, then among the suites that ship with ntm-bench). It trains
every pending run, rebuilds the CSVs, writes the report and returns `load_results` of the output folder. Errors in
what it is given raise `bench.config.ConfigError` or `UsageError`, each with a one-line message, before anything is
written.

This module imports only the standard library, `bench.config` and `bench.options` at import time; torch, pandas
and the report load when a function needs them, so ``import bench.api`` is quick.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import ConfigError, Suite
from bench.options import MAX_THREADS, MAX_WORKERS, WorkerOptions

if TYPE_CHECKING:
    import pandas as pd
    import torch

#: where a suite's output goes unless told otherwise: reports/<suite name>, relative to the current folder
REPORTS_DIR = Path("reports")
EXECUTORS = ("local", "ray")

__all__ = ["REPORTS_DIR", "Results", "UsageError", "load_model", "load_results", "run_suite"]


class UsageError(ValueError):
    """A problem with how ntm-bench was asked to run (an option, an output folder, a device); one-line message."""


@dataclass
class Results:
    """A suite's results, as tidy DataFrames: the CSVs next to its report, plus the summary table's raw values."""

    folder: Path
    #: one row per run (runs.csv): status, convergence step, final error, solved lengths, params, wall time, ...
    runs: pd.DataFrame
    #: one row per run x evaluation (curves.csv): step, sequences seen, loss and error on the evaluation set
    curves: pd.DataFrame
    #: one row per run x test size (generalization.csv)
    generalization: pd.DataFrame
    #: one row per task x model (summary.csv): seeds, converged count with its Clopper–Pearson interval, the
    #: Kaplan–Meier median steps and sequences with their interval (from 10 seeds), the error at each test size, the
    #: solved-length figures, params and wall time
    summary: pd.DataFrame
    #: the suite's manifest (suite.json): name, run ids, task facts, the resolved YAML
    suite: dict[str, Any]


def run_overrides(overrides: Mapping[str, Any] | Iterable[str] = (), seeds: int | None = None,
                  device: str | None = None) -> list[str]:
    """``KEY.PATH=VALUE`` strings (as ``--set`` takes) from a mapping or strings, plus the seeds and device options."""
    if isinstance(overrides, Mapping):
        texts = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    elif isinstance(overrides, str):
        texts = [overrides]
    else:
        texts = list(overrides)
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise UsageError(f"seeds: must be an integer >= 1, got {seeds!r}")
        texts.append(f"seeds={seeds}")
    if device:
        texts.append(f"device={device}")
    return texts


def check_options(executor: str, workers: int, threads: int, gpu_memory_fraction: float | None = None) -> None:
    """The executor, worker, thread and GPU memory options, each checked before anything loads."""
    if executor not in EXECUTORS:
        raise UsageError(f"--executor: {executor!r} is not allowed; allowed: {', '.join(EXECUTORS)}")
    for name, value, most in (("workers", workers, MAX_WORKERS), ("threads", threads, MAX_THREADS)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"--{name}: must be >= 1, got {value}")
        if value > most:
            raise UsageError(f"--{name}: must be <= {most}, got {value}")
    if gpu_memory_fraction is not None:
        from bench.gpu import check_memory_fraction

        problem = check_memory_fraction(gpu_memory_fraction)
        if problem:
            raise UsageError(f"--gpu-memory-fraction: {problem}")
    if executor == "ray":
        from bench.ray_backend import INSTALL_HINT, ray_available

        if not ray_available():
            raise UsageError(INSTALL_HINT)
        if workers > 1:
            raise UsageError("--workers: the ray executor runs as many runs at once as the cluster fits (the suite's "
                             "resources); leave --workers out")


def check_out_dir(out_dir: Path) -> None:
    """Fail, before anything is written, when `out_dir` cannot be the output folder: it is a file, a part of its
    path is a file, or the nearest existing folder on its path cannot be written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a folder")
    existing = out_dir
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"--out {out_dir}: {existing} is a file, not a folder")
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out_dir}: cannot write in {existing}")


def check_device(suite: Suite, executor: str) -> None:
    """Fail, before anything is written, when the suite's device cannot be used here (cuda without CUDA, a name
    torch does not know). The ray executor checks it against the suite's resources instead."""
    if executor == "ray":
        from bench import ray_backend

        ray_backend.check_device(suite)
        return
    from bench.provenance import resolve_device

    try:
        resolve_device(suite.device)
    except RuntimeError as error:
        raise UsageError(" ".join(str(error).split())) from None


def check_tensorboard(folder: str | Path | None) -> str | None:
    """The absolute TensorBoard log folder (workers may start elsewhere, on Ray), or None; fails in one line when the
    tensorboard package is missing."""
    if not folder:
        return None
    from bench.hooks import TENSORBOARD_HINT, tensorboard_available

    if not tensorboard_available():
        raise UsageError(TENSORBOARD_HINT)
    return str(Path(folder).expanduser().resolve())


def make_backend(executor: str, workers: int, options: WorkerOptions, fresh: bool):
    """The backend that trains the runs: this machine (`workers` processes) or Ray, each worker as `options` say."""
    if executor == "ray":
        from bench.ray_backend import RayBackend

        return RayBackend(options, fresh=fresh)
    from bench.local_backend import LocalBackend

    return LocalBackend(workers=workers, options=options)


def load(suite: str | Path | dict, overrides: Iterable[str] = (), plugins: Iterable[str] = ()) -> Suite:
    """Register the built-ins and `plugins`, then read, override, validate and expand `suite` once."""
    from bench import registry
    from bench.grid import load_suite

    registry.load_all()
    for plugin in plugins:
        registry.load_plugin(plugin)
    return load_suite(suite, list(overrides))  # a folder, a device or a file that is not UTF-8: a ConfigError


def run_suite(suite: str | Path | dict, out: str | Path | None = None, *, seeds: int | None = None,
              device: str | None = None, overrides: Mapping[str, Any] | Iterable[str] = (),
              executor: str = "local", workers: int = 1, threads: int = 1, plugins: Iterable[str] = (),
              fresh: bool = False, report: bool = True, estimate: bool = False,
              tensorboard: str | Path | None = None, reuse: Iterable[str | Path] = (),
              reference: Iterable[str | Path] = (), prefix: str = "", gpu_memory_fraction: float | None = None,
              deterministic: bool = False) -> Results:
    """Train every pending run of `suite` into `out` (default ``reports/<suite name>``) and return its results.

    `overrides` are suite keys to change, as a mapping (``{"train.lr": 3e-4}``) or ``--set`` strings; `seeds` uses
    seeds 1..N; `device` is auto, cpu, cuda or cuda:N. `executor`, `workers`, `threads`, `plugins` and `fresh` mean
    what the command line's options of the same names mean; `report` writes index.html, summary.csv and summary.md;
    `estimate` logs the up-front training-time estimate; `tensorboard` is a folder where each run also logs its
    curves (needs the tensorboard package). `reuse` takes every run of these bundles (names of shipped bundles or
    folders) that this suite has as finished instead of training it; `reference` shows the runs of these bundles
    beside the suite's in the report, their model labels prefixed by `prefix`. `gpu_memory_fraction` caps each
    worker's share of a GPU's memory and `deterministic` turns on torch's deterministic algorithms, as
    ``--gpu-memory-fraction`` and ``--deterministic`` do. Finished runs in `out` are kept, and interrupted ones resume
    from their checkpoints, exactly as with ``ntm-bench run``. Runs that fail are recorded in the results (status
    "failed"); it does not raise for them.
    """
    from bench import runner

    plugins = tuple(plugins)
    check_options(executor, workers, threads, gpu_memory_fraction)
    logdir = check_tensorboard(tensorboard)
    loaded = load(suite, run_overrides(overrides, seeds, device), plugins)
    out_dir = Path(out) if out is not None else REPORTS_DIR / loaded.name
    check_out_dir(out_dir)
    check_device(loaded, executor)
    reuse_dirs, references = check_bundles(loaded, reuse, reference, prefix)
    options = WorkerOptions(threads=threads, plugins=plugins, tensorboard=logdir,
                            gpu_memory_fraction=gpu_memory_fraction, deterministic=bool(deterministic))

    def write(outcome) -> None:  # while this process is still the folder's one writer (bench.folders.output_lock)
        from bench.report import write_report

        write_report(out_dir, references=references or None)

    runner.run_suite(loaded, out_dir, make_backend(executor, workers, options, fresh), fresh=fresh, estimate=estimate,
                     reuse=reuse_dirs, then=write if report else None)
    return load_results(out_dir)


def check_bundles(suite: Suite, reuse: Iterable[str | Path], reference: Iterable[str | Path],
                  prefix: str = "") -> tuple[list[Path], list[tuple[str, str]]]:
    """The folders of the `reuse` bundles, and the (reference, prefix) pairs for the report, each checked against
    `suite` before anything trains (a reference must share a task that is the same test, and no model label)."""
    from bench import bundles
    from bench.runner import task_facts

    reuse_dirs = [bundles.resolve(r, "--reuse") for r in reuse]
    references = [str(r) for r in reference]
    if prefix and not references:
        raise UsageError("--prefix: only with --reference (it prefixes the reference's model labels)")
    if references:
        facts = task_facts(suite)
        for name in references:
            bundles.check_reference(bundles.resolve(name, "--reference"), facts, list(suite.models), prefix)
    return reuse_dirs, [(name, prefix) for name in references]


def load_results(folder: str | Path) -> Results:
    """The results of the suite whose output folder is `folder` (it holds suite.json and runs.csv): its tidy
    DataFrames and the summary (the numbers of the report's summary table, from the same code)."""
    from bench.report.data import load_suite_data
    from bench.report.tables import summary_frame, summary_table

    folder = Path(folder)
    if not (folder / "suite.json").is_file() or not (folder / "runs.csv").is_file():
        raise UsageError(f"{folder}: not a suite's output folder (no suite.json and runs.csv; run the suite first)")
    data = load_suite_data(folder)
    sections = [{"task": task, "summary": summary_table(data, task)} for task in data.tasks.values()]
    return Results(folder=folder, runs=data.runs, curves=data.curves, generalization=data.gen,
                   summary=summary_frame(sections), suite=data.manifest)


def load_model(run_folder: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The trained model of a finished run (``<out>/runs/<run_id>``), in eval mode (see `bench.trained`)."""
    from bench.trained import load_model as load_trained

    return load_trained(run_folder, device=device)


# `ConfigError` is what a bad suite raises; exported here so that a notebook can catch both kinds of error
__all__ += ["ConfigError"]
