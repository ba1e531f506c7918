"""The pairwise table: each pair of a task's models, compared with tests that stay honest at the handful of seeds a
benchmark runs.

- A task with a convergence threshold compares time to converge (the censored sample of `convergence_sample`, in
  sequences seen): the ratio of the two KM medians (a point estimate, no interval), the log-rank test as an exact
  permutation test (stratified by seed when both models ran the same seeds), and the Cox hazard ratio with its 95 %
  Wald interval where `bench.survival.MIN_SEEDS_FOR_INTERVAL` runs a model allow one.
- A task without one compares final error: the ratio of median final errors (a point estimate) and Mann–Whitney U as
  an exact permutation test.
- Both: Fisher's exact test on the seeds solving twice the training size, when the task has a solved rule.

Each test's p-values are Holm-adjusted across the pairs of the table (one family per test column), and printed
beside the raw ones; a Holm-adjusted p below 0.05 is shaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from markupsafe import Markup

from bench import stats, survival
from bench.report.data import SuiteData, TaskInfo, convergence_sample, fmt, truthy, usable_runs
from bench.report.tables import Cell, Column, final_metric, table

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Arm:
    """One model's side of a comparison: its runs with a result, in seed order."""

    seeds: list[int]
    values: list[float]            # time to converge in sequences (censored or not), or the final error
    converged: list[bool] | None   # None: the task has no threshold (values are final errors)
    solved: tuple[int, int] | None  # (seeds solving 2×, runs), None: the task has no such count
    median: float | None           # KM median (threshold) or median final error; None: not reached / no runs


def _arm(data: SuiteData, task: TaskInfo, model: str) -> Arm:
    usable = usable_runs(data.runs_of(task.label, model)).sort_values("seed", kind="stable")
    solved = None
    if task.solved is not None and task.test_size_2x is not None and "solved_2x" in usable.columns:
        solved = (int(usable["solved_2x"].map(truthy).sum()), len(usable))
    if task.has_threshold:
        sample = convergence_sample(data, task.label, model)
        durations, converged = sample.survival("sequences")
        return Arm(sample.seeds, durations, converged, solved, survival.km_median(durations, converged).median)
    final = final_metric(data, task, usable).to_numpy(dtype=float)
    keep = np.isfinite(final)
    values = final[keep].tolist()
    return Arm([int(s) for s, k in zip(usable["seed"], keep) if k], values, None, solved,
               float(np.median(values)) if values else None)


@dataclass
class Comparison:
    """The source of one pairwise row: models `a` and `b` on one task."""

    a: str
    b: str
    palette: dict[str, str]
    paired: bool
    ratio: float | None
    test: stats.PermutationTest | None
    hazard: survival.HazardRatio | None
    solved: tuple[int, int, int, int] | None   # (k_a, n_a, k_b, n_b)
    fisher: float | None
    lower: str = "—"            # the model with the lower median ("—": equal, or neither has one)
    notes: list[str] = field(default_factory=list)
    test_holm: float | None = None
    fisher_holm: float | None = None


def compare(task: TaskInfo, a: str, b: str, arm_a: Arm, arm_b: Arm, palette: dict[str, str]) -> Comparison:
    """Models `a` and `b` on `task`: paired by seed when both ran the same seeds (seed k gives every model the same
    data stream)."""
    paired = bool(arm_a.seeds) and arm_a.seeds == arm_b.seeds
    notes = ["paired by seed" if paired else "unpaired (the models ran different seeds)"]
    ratio = None
    if arm_a.median is None or arm_b.median is None:
        notes.append("a KM median is past its longest run: no ratio" if task.has_threshold else "no ratio")
    elif arm_b.median == 0:
        notes.append("the median of B is 0: no ratio")
    else:
        ratio = arm_a.median / arm_b.median
    medians = {m: arm.median for m, arm in ((a, arm_a), (b, arm_b)) if arm.median is not None and arm.seeds}
    lower = "—"
    if len(medians) == 1 and task.has_threshold:  # the other's KM median is past its longest run
        lower = next(iter(medians))
    elif len(medians) == 2 and medians[a] != medians[b]:
        lower = min(medians, key=medians.get)
    hazard = None
    if task.has_threshold:
        test = survival.logrank((arm_a.values, arm_a.converged), (arm_b.values, arm_b.converged), paired)
        if test is None and arm_a.seeds and arm_b.seeds:
            notes.append("no run of either model converged: no test")
        hazard = survival.hazard_ratio((arm_a.values, arm_a.converged), (arm_b.values, arm_b.converged),
                                       arm_a.seeds if paired else None)
        if not all(arm_a.converged) or not all(arm_b.converged):
            notes.append("unconverged runs censored where they stopped")
    else:
        test = stats.mann_whitney(arm_a.values, arm_b.values, paired)
    solved = fisher = None
    if arm_a.solved is not None and arm_b.solved is not None:
        solved = (*arm_a.solved, *arm_b.solved)
        fisher = stats.fisher_exact(*solved)
    return Comparison(a, b, palette, paired, ratio, test, hazard, solved, fisher, lower, notes)


def _model_cell(model: str, source: Comparison) -> Cell:
    return Cell(model, swatch=source.palette.get(model, ""), cls="name")


def _ratio_cell(ratio: float | None, source: Comparison) -> Cell:
    if ratio is None:
        return Cell("n/a", cls="muted", title="; ".join(source.notes[1:]))
    return Cell(fmt(ratio), value=ratio, title="a point estimate: no interval is given for a ratio of medians")


def _p_cell(p: float | None, test: stats.PermutationTest | None) -> Cell:
    if p is None or test is None:
        return Cell("n/a", cls="muted", title="no test (see notes)")
    kind = "exact" if test.exact else "Monte Carlo"
    size = test.design.count if test.exact else len(test.design.labels)
    sub = f"{kind}, {size:,}; min p {fmt(test.min_p)}"
    return Cell(fmt(p), sub=sub, value=p,
                title=f"{test.method}. The smallest p this design can give is {fmt(test.min_p)}.")


def _test_cell(test: stats.PermutationTest | None, source: Comparison) -> Cell:
    return _p_cell(None if test is None else test.p_value, test)


def _holm_cell(p: float | None, source: Comparison, family: str) -> Cell:
    if p is None:
        return Cell("n/a", cls="muted")
    return Cell(fmt(p), value=p, cls="best" if p < SIGNIFICANCE else "",
                title=f"{stats.HOLM_METHOD} ({family}); shaded below {SIGNIFICANCE}")


def _hazard_cell(hazard: survival.HazardRatio | None, source: Comparison) -> Cell:
    if hazard is None or hazard.ratio is None or hazard.ci is None:
        reason = "no interval" if hazard is None else hazard.reason
        text = reason if reason.startswith("n = ") else "no interval"  # the rest goes in the title
        return Cell(text, cls="muted", title=f"{reason}. {survival.COX_METHOD}")
    low, high = hazard.ci
    return Cell(fmt(hazard.ratio), sub=f"[{fmt(low)}, {fmt(high)}]", value=hazard.ratio,
                title=f"{survival.COX_METHOD}. Above 1: A converges sooner.")


def _fisher_cell(p: float | None, source: Comparison) -> Cell:
    if p is None or source.solved is None:
        return Cell("n/a", cls="muted", title="this task has no solved rule or no test size at 2×")
    k_a, n_a, k_b, n_b = source.solved
    return Cell(fmt(p), sub=f"{k_a}/{n_a} vs {k_b}/{n_b}", value=p,
                title=f"{stats.FISHER_METHOD}, on the seeds solving 2× the training size (unpaired)")


#: header placeholders: {min_n} (the fewest runs a model needs for the hazard ratio), {metric} (the task's error)
SURVIVAL_COLUMNS = [
    Column("a", "A", get=lambda c: c.a, show=_model_cell),
    Column("b", "B", get=lambda c: c.b, show=_model_cell, cls="name"),
    Column("ratio", Markup("ratio of KM medians A&nbsp;/&nbsp;B"), "sequences; point estimate, no interval",
           get=lambda c: c.ratio, show=_ratio_cell),
    Column("lower", "lower KM median", get=lambda c: c.lower, show=_model_cell, cls="name"),
    Column("p_value", Markup("log-rank&nbsp;p"), "permutation; paired: within seeds",
           get=lambda c: c.test, show=_test_cell),
    Column("p_holm", Markup("log-rank&nbsp;p, Holm"), "across this table",
           get=lambda c: c.test_holm, show=lambda p, c: _holm_cell(p, c, "log-rank")),
    Column("hazard_ratio", Markup("hazard ratio A&nbsp;:&nbsp;B"), "[95 % Wald CI, Cox PH; n ≥ {min_n} each]",
           get=lambda c: c.hazard, show=_hazard_cell),
    Column("fisher", Markup("solved 2×: Fisher&nbsp;p"), "exact, two-sided", get=lambda c: c.fisher,
           show=_fisher_cell),
    Column("fisher_holm", Markup("Fisher&nbsp;p, Holm"), "across this table",
           get=lambda c: c.fisher_holm, show=lambda p, c: _holm_cell(p, c, "Fisher")),
    Column("notes", "notes", cls="name", get=lambda c: c.notes,
           show=lambda notes, c: Cell("; ".join(notes), cls="muted notes")),
]
_FINAL_ERROR = {
    "ratio": Column("ratio", Markup("ratio of median final {metric} A&nbsp;/&nbsp;B"), "point estimate, no interval",
                    get=lambda c: c.ratio, show=_ratio_cell),
    "lower": Column("lower", "lower median", get=lambda c: c.lower, show=_model_cell, cls="name"),
    "p_value": Column("p_value", Markup("Mann–Whitney&nbsp;p"), "permutation on final {metric}",
                      get=lambda c: c.test, show=_test_cell),
    "p_holm": Column("p_holm", Markup("Mann–Whitney&nbsp;p, Holm"), "across this table",
                     get=lambda c: c.test_holm, show=lambda p, c: _holm_cell(p, c, "Mann–Whitney")),
}
FINAL_ERROR_COLUMNS = [_FINAL_ERROR.get(c.key, c) for c in SURVIVAL_COLUMNS if c.key != "hazard_ratio"]


def pairwise_table(data: SuiteData, task: TaskInfo) -> dict[str, Any]:
    """Each pair of the task's models (`compare`), with Holm-adjusted p-values per test across the pairs."""
    models = data.models_of(task.label)
    arms = {model: _arm(data, task, model) for model in models}
    comparisons = []
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            comparisons.append(compare(task, a, b, arms[a], arms[b], data.palette))
    for adjusted, c in zip(stats.holm([None if c.test is None else c.test.p_value for c in comparisons]),
                           comparisons):
        c.test_holm = adjusted
    for adjusted, c in zip(stats.holm([c.fisher for c in comparisons]), comparisons):
        c.fisher_holm = adjusted
    columns = SURVIVAL_COLUMNS if task.has_threshold else FINAL_ERROR_COLUMNS
    return table(columns, [(f"{c.a} / {c.b}", c) for c in comparisons], min_n=survival.MIN_SEEDS_FOR_INTERVAL,
                 metric=task.metric_label)
