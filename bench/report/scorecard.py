"""The scorecard (docs/TASKS.md, "Scores"): two scores in [0, 1] per run, learning (the test sizes within the
training range) and generalisation (the test sizes beyond it), where 0 is the trivial predictor and 1 is solved; and
per task × model, the median score over seeds with the fraction of seeds at or above `THRESHOLD` (scorecard.csv).

Everything comes from `SuiteData`: the generalisation rows, runs.csv's final errors, and each task's facts
(`TaskInfo.trivial_errors`, `TaskInfo.trivial_error_train`, from `Task.facts()` through suite.json). So whatever a
`SuiteData` holds, more models merged in included, is scored, and nothing here builds a task. A task whose facts
lack the trivial errors (a suite.json written before the scorecard) is not scored; `Scorecard.unscored` names it.
No plotting library is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.report.data import SuiteData, TaskInfo, last_evaluations, size_of, usable_runs
from bench.results import FINISHED

#: a seed counts towards a scorecard cell's fraction when its score is at or above this (the one place it is set)
THRESHOLD = 0.9
SCORECARD_FILE = "scorecard.csv"   # written with every report, next to summary.csv
#: scorecard.csv's columns, in order (README, "What a run produces")
SCORECARD_COLUMNS = ["task", "model", "seeds", "left_out", "learning_from", "learning_median", "learning_at_or_above",
                     "generalization_median", "generalization_at_or_above", "threshold"]
#: where a task's learning score comes from: its test sizes within the training range, or, when it has none, each
#: run's final error on the evaluation set (drawn from the training distribution)
FROM_TEST_SIZES, FROM_FINAL_EVALUATION = "test_sizes", "final_evaluation"
RUN_COLUMNS = ["task", "model", "seed", "run_id", "status", "learning", "generalization"]


def score(error: float, trivial: float, solved: bool = False) -> float:
    """One score: 1 when `solved`, else ``clip(1 - error / trivial, 0, 1)``. `error` is the task's error and
    `trivial` the trivial predictor's, both on the error's own scale (less its reference, when it has one). A NaN
    error (a broken model) scores 0; a trivial error that is not above 0 leaves nothing to scale by (NaN)."""
    if solved:
        return 1.0
    if not (math.isfinite(trivial) and trivial > 0):
        return math.nan
    if not math.isfinite(error):
        return 0.0
    return min(1.0, max(0.0, 1.0 - error / trivial))


def point_score(task: TaskInfo, metrics: Mapping[str, float], trivial: float | None) -> float:
    """The score of one evaluation (a generalisation row, or a run's final evaluation): `metrics` holds its metric
    columns and `trivial` is the trivial predictor's expected value of ``task.error.metric`` there. With a reference
    column (N-Grams: the Bayes-optimal loss on the same sequences), the error and the trivial error are both taken
    less it, so the reference scores 1 and the trivial predictor 0."""
    measure = task.error
    if trivial is None or measure.metric not in metrics:
        return math.nan
    reference = 0.0
    if measure.reference is not None:
        if measure.reference not in metrics:
            return math.nan
        reference = float(metrics[measure.reference])
    rule = task.solved
    needed = () if rule is None else (rule.metric, rule.reference)
    solved = rule is not None and all(c is None or c in metrics for c in needed) and rule.holds(metrics)
    return score(float(metrics[measure.metric]) - reference, float(trivial) - reference, solved)


def _mean_at(scores: Mapping[tuple[float, ...], float], sizes: list[list[int]]) -> float:
    """The mean of a run's `scores` (by size) at `sizes`; a size it was not scored at is left out (NaN: none)."""
    values = [scores.get(tuple(float(v) for v in size), math.nan) for size in sizes]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def learning_source(task: TaskInfo) -> str:
    """`FROM_TEST_SIZES` when the task has a test size within its training range, else `FROM_FINAL_EVALUATION`."""
    return FROM_TEST_SIZES if any(task.within_training(s) for s in task.test_sizes) else FROM_FINAL_EVALUATION


def task_run_scores(data: SuiteData, task: TaskInfo) -> pd.DataFrame:
    """One row per run of `task` with a result (done or diverged), in model and seed order: its learning and
    generalisation scores (`RUN_COLUMNS`; NaN where there is nothing to score).

    A done run's learning score is the mean of its scores at the test sizes within the training range; when the
    task has none, the score of its final evaluation (runs.csv's ``final_<metric>``, less the reference from its
    last curves.csv row) against the trivial error over the training distribution. Its generalisation score is the
    mean at the test sizes beyond the training range. A diverged run has no final model to score: it scores 0.
    """
    runs = usable_runs(data.runs_of(task.label))
    within = [s for s in task.test_sizes if task.within_training(s)]
    beyond = [s for s in task.test_sizes if not task.within_training(s)]
    from_sizes = bool(within)   # else `learning_source` is FROM_FINAL_EVALUATION
    gen = data.gen[data.gen["task"] == task.label]
    last = pd.DataFrame() if from_sizes else last_evaluations(data, runs["run_id"])
    rows = []
    for model in data.models_of(task.label):
        for _, run in runs[runs["model"] == model].sort_values("seed", kind="stable").iterrows():
            run_id = str(run["run_id"])
            if run["status"] != "done":  # diverged
                learning, generalization = 0.0, 0.0 if beyond else math.nan
            else:
                at_size = {}
                for _, row in gen[gen["run_id"].astype(str) == run_id].iterrows():
                    size = size_of(row, task)
                    at_size[size] = point_score(task, row.to_dict(), task.trivial_error(size))
                generalization = _mean_at(at_size, beyond)
                if from_sizes:
                    learning = _mean_at(at_size, within)
                else:
                    metrics = {c[len("final_"):]: run[c] for c in run.index if c.startswith("final_")}
                    if run["run_id"] in last.index:
                        metrics = {**last.loc[run["run_id"]].to_dict(), **metrics}
                    learning = point_score(task, metrics, task.trivial_error_train)
            rows.append({"task": task.label, "model": model, "seed": run["seed"], "run_id": run_id,
                         "status": run["status"], "learning": learning, "generalization": generalization})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


@dataclass
class Scorecard:
    """The scorecard of a suite: `runs` (one row per scored run, `RUN_COLUMNS`), `table` (one row per task × model,
    `SCORECARD_COLUMNS`: scorecard.csv) and `unscored` (the labels of tasks whose facts lack the trivial errors)."""

    runs: pd.DataFrame
    table: pd.DataFrame
    unscored: list[str] = field(default_factory=list)
    threshold: float = THRESHOLD

    def scores(self, task: str, model: str, kind: str) -> list[float]:
        """The seeds' `kind` ("learning" or "generalization") scores of one model on one task, NaN left out."""
        part = self.runs[(self.runs["task"] == task) & (self.runs["model"] == model)]
        return [float(v) for v in part[kind] if not math.isnan(v)]


def _at_or_above(scores: pd.Series, threshold: float) -> tuple[float, float]:
    """(median, fraction at or above `threshold`) of the scores that are not NaN; NaN for both when none is."""
    scores = scores.dropna()
    if not len(scores):
        return math.nan, math.nan
    return float(scores.median()), float((scores >= threshold).mean())


def scorecard(data: SuiteData, threshold: float = THRESHOLD) -> Scorecard:
    """THE scorecard of `data`: per task (with the trivial errors in its facts) × model, the number of seeds scored
    (runs with a result), the runs left out (failed, or still running), where the learning score comes from, and per
    score the median over seeds and the fraction of seeds at or above `threshold`. Never the best seed alone."""
    frames, records, unscored = [], [], []
    for task in data.tasks.values():
        if task.trivial_errors is None:
            unscored.append(task.label)
            continue
        runs = task_run_scores(data, task)
        frames.append(runs)
        source = learning_source(task)
        for model in data.models_of(task.label):
            own = runs[runs["model"] == model]
            every = data.runs_of(task.label, model)
            learning = _at_or_above(own["learning"], threshold)
            generalization = _at_or_above(own["generalization"], threshold)
            records.append({"task": task.label, "model": model, "seeds": len(own),
                            "left_out": int((~every["status"].isin(FINISHED)).sum()), "learning_from": source,
                            "learning_median": learning[0], "learning_at_or_above": learning[1],
                            "generalization_median": generalization[0],
                            "generalization_at_or_above": generalization[1], "threshold": threshold})
    runs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RUN_COLUMNS)
    return Scorecard(runs, pd.DataFrame(records, columns=SCORECARD_COLUMNS), unscored, threshold)
