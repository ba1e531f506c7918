"""A suite's results as the report and the Python API read them: `load_suite_data(out_dir)` gives a `SuiteData`
(the tidy CSVs, suite.json, each run's spec, a `TaskInfo` per task, a colour per model), and the few questions several
parts ask of it (which runs count, each task's error values, the censored sample of steps to converge).

This module imports no plotting or templating library, so `bench.api.load_results` stays light.
"""

from __future__ import annotations

import colorsys
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.bounded import read_npz
from bench.labels import slug, unique_slugs
from bench.report.legacy import legacy_task_fields
from bench.results import (
    read_csv,
    read_json,
    read_json_object,
)
from tasks.base import WRONG_BITS, Measure, Rule

CSV_FILES = ("runs.csv", "curves.csv", "generalization.csv")
SUMMARY_FILES = ("summary.csv", "summary.md")   # written with every report, next to index.html


def with_unique_slugs(tasks: dict[str, TaskInfo]) -> dict[str, TaskInfo]:
    """`tasks` with each one's `slug` from `unique_slugs` over them all: the one mapping figures and anchors use."""
    names = unique_slugs(tasks)
    return {label: replace(task, slug=names[str(label)]) for label, task in tasks.items()}


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table: '—' when missing, thousands separators for large values, else `digits` significant."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or pd.isna(x):
        return "—"
    x = float(x)
    if abs(x) >= 1000 or (x == int(x) and abs(x) >= 100):
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0")


#: text columns whose values may read as numbers (a hex fingerprint of digits only, or with one "e")
TEXT_COLUMNS = {"protocol": str}


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return read_csv(path, dtype=TEXT_COLUMNS)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def read_json_or_none(path: Path) -> Any:
    """A run's JSON object, or None when it is missing, damaged or not an object."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class TaskInfo:
    """What the report knows of one task, from suite.json's task facts (`Task.facts()`; older forms are mapped by
    `legacy_task_info`)."""

    label: str
    type: str
    size_parts: list[str]
    train_sizes: dict[str, list[int]]
    test_sizes: list[list[int]]
    error: Measure = WRONG_BITS             # the error the figures and tables show
    convergence: Rule | None = None         # None: the task has no convergence threshold
    solved: Rule | None = None              # when a test size counts as solved; None: the task has no such notion
    test_size_2x: list[int] | None = None   # the smallest test size at twice the training range
    rule_text: str | None = None            # an older suite.json's words for the convergence rule, shown as recorded
    #: the trivial predictor's expected `error.metric` at each test size, in the order of `test_sizes`, and over the
    #: training distribution (`Task.trivial_error`); None in a suite.json written before they were recorded
    trivial_errors: list[float] | None = None
    trivial_error_train: float | None = None
    #: the task's name in figure files and anchors: its `slug`, unless two tasks of one report share that
    #: (`with_unique_slugs`)
    slug: str = ""
    #: the suite's line about this task (`tasks.LABEL.note`), shown with its results; "" when none
    note: str = ""

    def __post_init__(self) -> None:
        self.slug = self.slug or slug(self.label)

    @property
    def has_threshold(self) -> bool:
        return self.convergence is not None or self.rule_text is not None

    @property
    def rule(self) -> str | None:
        """The convergence rule in words; None when the task has no threshold."""
        if self.rule_text is not None:
            return self.rule_text
        return None if self.convergence is None else self.convergence.text()

    @property
    def metric_label(self) -> str:
        return self.error.label

    def threshold(self) -> float | None:
        """The convergence threshold, when the rule bounds the error the curves plot (a dashed line on them)."""
        rule = self.convergence
        return rule.threshold if rule is not None and rule.bounds(self.error) else None

    def solved_line(self) -> float | None:
        """The solved rule's threshold, when it bounds the error the generalisation panel plots."""
        rule = self.solved
        return rule.threshold if rule is not None and rule.bounds(self.error) else None

    def trivial_error(self, size: Iterable[float]) -> float | None:
        """The trivial predictor's expected error at the test size `size` (None: not recorded for it)."""
        if self.trivial_errors is None or len(self.trivial_errors) != len(self.test_sizes):
            return None
        size = tuple(float(v) for v in size)
        for test_size, value in zip(self.test_sizes, self.trivial_errors):
            if tuple(float(v) for v in test_size) == size:
                return float(value)
        return None

    def within_training(self, size: Iterable[float]) -> bool:
        """Whether no part of `size` exceeds the largest training value of that part (the scorecard's learning
        sizes; the other test sizes are its generalisation sizes)."""
        size = list(size)
        highs = [self.train_sizes.get(p, [math.inf, -math.inf])[1] for p in self.size_parts]
        return len(size) == len(highs) and all(v <= high for v, high in zip(size, highs))

    def in_training_range(self, size: Iterable[float]) -> bool:
        size = list(size)
        if len(size) != len(self.size_parts):
            return False
        return all(lo <= v <= hi for v, (lo, hi) in
                   zip(size, (self.train_sizes.get(p, [math.inf, -math.inf]) for p in self.size_parts)))


def task_info(label: str, fact: dict[str, Any], has_optimum: bool = False) -> TaskInfo:
    """A task's `TaskInfo` from its facts in suite.json. `has_optimum` (whether the curves carry a Bayes-optimal
    loss for it) matters only to facts written before the rules were recorded as data."""
    if "convergence" not in fact:
        return TaskInfo(label=label, **_sizes(fact), **legacy_task_fields(label, fact, has_optimum))
    rule = fact["convergence"]
    solved = fact.get("solved")
    return TaskInfo(label=label, type=str(fact.get("type", label)), **_sizes(fact),
                    error=Measure.from_json(fact["error"]) if fact.get("error") else WRONG_BITS,
                    convergence=None if rule is None else Rule.from_json(rule),
                    solved=None if solved is None else Rule.from_json(solved),
                    test_size_2x=fact.get("test_size_2x"),
                    trivial_errors=_numbers(fact.get("trivial_errors")),
                    trivial_error_train=_number(fact.get("trivial_error_train")),
                    note=fact["note"] if isinstance(fact.get("note"), str) else "")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _numbers(values: Any) -> list[float] | None:
    if not isinstance(values, list) or any(_number(v) is None for v in values):
        return None
    return [float(v) for v in values]


def _sizes(fact: dict[str, Any]) -> dict[str, Any]:
    return {"size_parts": list(fact.get("size_parts", [])),
            "train_sizes": {k: list(v) for k, v in (fact.get("train_sizes") or {}).items()},
            "test_sizes": [list(s) for s in fact.get("test_sizes", [])]}


@dataclass
class SuiteData:
    out_dir: Path
    manifest: dict[str, Any]
    runs: pd.DataFrame
    curves: pd.DataFrame
    gen: pd.DataFrame
    specs: dict[str, dict[str, Any]]
    tasks: dict[str, TaskInfo]
    models: list[str]
    palette: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)   # run_id -> error of a failed run
    #: run_id -> its folder, where it is not ``out_dir/runs/<run_id>`` (a combined report: bench.report.combine)
    run_dirs: dict[str, Path] = field(default_factory=dict)
    #: model -> the source it comes from, for models that are not this folder's own (a reference, a compared folder)
    origins: dict[str, str] = field(default_factory=dict)

    def run_dir(self, run_id: str) -> Path:
        return self.run_dirs.get(str(run_id), self.out_dir / "runs" / str(run_id))

    def budget(self, run_id: str) -> tuple[int, int]:
        """(steps budget, batch size) of a run, from its spec.json, else the suite's."""
        train = self.specs.get(run_id, {}).get("train", {})
        return (int(train.get("steps", self.manifest.get("steps", 0)) or 0),
                int(train.get("batch_size", self.manifest.get("batch_size", 1)) or 1))

    def runs_of(self, task: str, model: str | None = None) -> pd.DataFrame:
        frame = self.runs[self.runs["task"] == task]
        return frame if model is None else frame[frame["model"] == model]

    def models_of(self, task: str) -> list[str]:
        present = set(self.runs_of(task)["model"])
        return [m for m in self.models if m in present]


def load_suite_data(out_dir: Path) -> SuiteData:
    manifest = read_json_object(out_dir / "suite.json")
    runs = _read_csv(out_dir / "runs.csv")
    curves = _read_csv(out_dir / "curves.csv")
    gen = _read_csv(out_dir / "generalization.csv")
    for frame, columns in ((runs, ["task", "model", "seed", "run_id", "status"]),
                           (curves, ["task", "model", "seed", "run_id", "step", "sequences_seen"]),
                           (gen, ["task", "model", "seed", "run_id", "size"])):
        for column in columns:
            if column not in frame.columns:
                frame[column] = pd.Series(dtype="object")
    if len(runs):
        runs["converged"] = runs["converged"].map(truthy) if "converged" in runs else False
        runs["status"] = runs["status"].fillna("failed").astype(str)
    # the task's short protocol fingerprint (bench.protocol); empty for a folder written before protocols
    runs["protocol"] = runs["protocol"].fillna("").astype(str) if "protocol" in runs.columns else ""
    for column in ("converge_step", "converge_sequences", "final_wrong_bits_per_seq", "final_loss_bits_per_seq",
                   "nonfinite_steps", "params", "wall_s", "seq_per_s", "steps"):
        if column in runs.columns:
            runs[column] = pd.to_numeric(runs[column], errors="coerce")
        elif len(runs) or column not in runs.columns:
            runs[column] = np.nan
    specs, errors = {}, {}
    for run_id, status in zip(runs["run_id"], runs["status"]):
        folder = out_dir / "runs" / str(run_id)
        specs[str(run_id)] = read_json_or_none(folder / "spec.json") or {}
        if status == "failed":
            result = read_json_or_none(folder / "result.json") or {}
            errors[str(run_id)] = str(result.get("error", "no error recorded"))

    tasks: dict[str, TaskInfo] = {}
    facts = manifest.get("tasks") or {}
    task_order = list(dict.fromkeys([*runs["task"].astype(str), *facts]))
    for label in task_order:
        has_optimum = ("optimal_loss_bits_per_seq" in curves.columns
                       and curves.loc[curves["task"] == label, "optimal_loss_bits_per_seq"].notna().any())
        fact = facts.get(label)
        if fact is None:  # a suite.json older than task facts: what the CSVs tell; a rule existed but is unknown
            parts = sorted(c[len("size_"):] for c in gen.columns if c.startswith("size_")
                           and gen.loc[gen["task"] == label, c].notna().any())
            fact = {"type": label, "size_parts": parts, "convergence_rule": "(rule not recorded)"}
        tasks[label] = task_info(label, fact, bool(has_optimum))
    models = list(dict.fromkeys(runs["model"].astype(str)))
    return SuiteData(out_dir, manifest, runs, curves, gen, specs, with_unique_slugs(tasks), models,
                     model_palette(models), errors)


#: seaborn's "colorblind" palette (as hex, so that loading results needs no plotting library), reordered so that the
#: first models get the most distinct colours: its 2nd (orange) and 4th (vermillion) were hard to tell apart side by
#: side, so vermillion moves behind pink, grey, brown and sky blue (tests/test_report.py checks it against seaborn)
COLORBLIND = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
              "#56b4e9")
COLORBLIND_ORDER = (0, 1, 2, 4, 7, 5, 9, 3, 6, 8)


def model_palette(models: list[str]) -> dict[str, str]:
    """One colour per model, the same in every figure and table swatch: the reordered colorblind palette, or for
    more models than it has, hues evenly around the circle."""
    if len(models) <= len(COLORBLIND_ORDER):
        colours = [COLORBLIND[i] for i in COLORBLIND_ORDER]
    else:
        colours = ["#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in colorsys.hls_to_rgb(
            (0.01 + i / len(models)) % 1, 0.6, 0.65))) for i in range(len(models))]
    return dict(zip(models, colours))


def usable_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that carry a result (done or diverged); failed runs say nothing about convergence."""
    return runs[runs["status"].isin(["done", "diverged"])]


@dataclass(frozen=True)
class ConvergenceSample:
    """One model's time to converge on one task over its seeds, as right-censored survival data: the only place the
    report turns runs into that sample (the summary's KM medians, the pairwise tests, the Kaplan–Meier panel and the
    convergence figure all use it).

    One entry per run with a result (done or diverged), seeds in order. A converged run's duration is when it
    converged (runs.csv's `converge_sequences` / `converge_step`, scored by `tasks.base.convergence`); a run that
    did not converge is censored at what it actually trained (runs.csv's `steps` × its batch size): its own budget,
    so runs with unequal budgets each count at theirs, or the step it diverged at."""

    seeds: list[int]
    converged: list[bool]       # the event: the run converged
    steps: list[float]          # steps to converge, or steps trained (censored)
    sequences: list[float]      # the same in sequences seen: the report's unit of time
    statuses: list[str]         # done or diverged
    budgets: list[int]          # each seed's own step budget (spec.json)

    @property
    def budget(self) -> int:
        """The largest step budget among the seeds (0 when there are none)."""
        return max(self.budgets, default=0)

    def survival(self, unit: str = "sequences") -> tuple[list[float], list[bool]]:
        """(durations, converged) in `unit` ("sequences" or "steps"), as `bench.survival` takes them."""
        return (self.sequences if unit == "sequences" else self.steps), self.converged


def convergence_sample(data: SuiteData, task: str, model: str) -> ConvergenceSample:
    """The `ConvergenceSample` of `model` on the task labelled `task`. Failed and unfinished runs say nothing about
    convergence and are left out."""
    runs = usable_runs(data.runs_of(task, model)).sort_values("seed", kind="stable")
    seeds, converged, steps, sequences, budgets = [], [], [], [], []
    for _, run in runs.iterrows():
        budget, batch = data.budget(str(run["run_id"]))
        event = bool(run["converged"]) and pd.notna(run["converge_step"])
        if event:
            step = float(run["converge_step"])
            seen = run.get("converge_sequences")
            seen = float(seen) if pd.notna(seen) else step * batch
        else:  # censored at the steps it trained: its budget, or where it diverged (or stopped)
            step = float(run["steps"]) if pd.notna(run["steps"]) else float(budget)
            seen = step * batch
        seeds.append(int(run["seed"]))
        converged.append(event)
        steps.append(step)
        sequences.append(seen)
        budgets.append(budget)
    return ConvergenceSample(seeds, converged, steps, sequences, [str(s) for s in runs["status"]], budgets)


def convergence_tasks(data: SuiteData) -> tuple[list[TaskInfo], list[str]]:
    """(tasks with at least one converged seed, labels of thresholded tasks where no seed converged)."""
    shown, none = [], []
    for task in data.tasks.values():
        usable = usable_runs(data.runs_of(task.label))
        if not task.has_threshold or not len(usable):
            continue
        (shown if usable["converged"].any() else none).append(task)
    return shown, [t.label for t in none]


def last_evaluations(data: SuiteData, run_ids: Iterable[str]) -> pd.DataFrame:
    """Each run's last evaluation row on the fixed evaluation set (curves.csv), indexed by run_id."""
    curves = data.curves[data.curves["run_id"].isin(list(run_ids))]
    return curves.sort_values("step").groupby("run_id").last()


def error_values(frame: pd.DataFrame, task: TaskInfo) -> pd.Series:
    """The task's error (`TaskInfo.error`) on each row of curves or generalisation results; wrong bits/seq when
    the rows lack a column it needs."""
    error = task.error
    if all(c is None or c in frame.columns for c in (error.metric, error.reference)):
        return frame[error.metric] if error.reference is None else frame[error.metric] - frame[error.reference]
    return frame["wrong_bits_per_seq"]


def generalization_frame(data: SuiteData, task: TaskInfo) -> pd.DataFrame:
    frame = data.gen[data.gen["task"] == task.label].copy()
    if frame.empty:
        return frame
    frame["metric"] = error_values(frame, task)
    return frame


def size_of(row: pd.Series, task: TaskInfo) -> tuple[float, ...]:
    return tuple(float(row.get(f"size_{p}", math.nan)) for p in task.size_parts)


def ordered_sizes(frame: pd.DataFrame, task: TaskInfo) -> list[tuple[str, tuple[float, ...]]]:
    sizes = {}
    for _, row in frame.drop_duplicates("size").iterrows():
        sizes[row["size"]] = size_of(row, task)
    return sorted(sizes.items(), key=lambda kv: kv[1])


def grid_shape(sizes: list[tuple[float, ...]]) -> tuple[list[float], list[float]] | None:
    """(xs, ys) for 2-part sizes that vary independently (Repeat Copy's (L, n) grid), else None.

    Sizes along a diagonal, such as Priority Sort's (20, 16), (30, 24), (40, 32), are a line, not a grid: there,
    no value of one part comes with two values of the other.
    """
    if not sizes or len(sizes[0]) != 2:
        return None
    xs = sorted({s[0] for s in sizes})
    ys = sorted({s[1] for s in sizes})
    if len(set(sizes)) <= max(len(xs), len(ys)):
        return None
    return xs, ys


#: the arrays a run's samples.npz holds (`bench.evaluate.example_arrays`); a file with any other is not drawn
SAMPLE_ARRAYS = re.compile(r"(train_max|double)/(inputs|targets|mask|outputs|size|trace/[A-Za-z0-9_]{1,64})")


def sample_runs(data: SuiteData, task: TaskInfo) -> list[tuple[str, int, dict[str, np.ndarray]]]:
    """(model, seed, arrays) for each model: the lowest seed whose run saved samples. A samples.npz is read by
    `bench.bounded.read_npz`: one over `MAX_SAMPLES_BYTES` (on disk, or its arrays uncompressed) or with arrays
    of other names is skipped like a damaged one."""
    chosen = []
    for model in data.models_of(task.label):
        runs = data.runs_of(task.label, model).sort_values("seed")
        for _, run in runs.iterrows():
            path = data.run_dir(run["run_id"]) / "samples.npz"
            if path.exists():
                try:
                    arrays = read_npz(path, SAMPLE_ARRAYS)
                except Exception:  # noqa: BLE001 - a damaged samples file only loses its panel
                    continue
                chosen.append((model, int(run["seed"]), arrays))
                break
    return chosen
