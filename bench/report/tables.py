"""The report's tables as data: a table is a list of `Column`s (header, value getter, cell format, which direction is
better), and `table()` turns sources into rows of `Cell`s. The page renders the cells; summary.csv and summary.md are
built from the same cells (`summary_frame`), so the three never disagree. Nothing here draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from bench import stats, survival
from bench.report.data import (
    SuiteData,
    TaskInfo,
    convergence_sample,
    fmt,
    generalization_frame,
    last_evaluations,
    ordered_sizes,
    truthy,
    usable_runs,
)
from bench.results import (
    RUNNING,
)
from bench.text import format_duration


@dataclass
class Cell:
    text: str
    sub: str = ""               # a second, smaller line (a CI)
    cls: str = ""
    title: str = ""
    href: str = ""
    badges: list[tuple[str, str]] = field(default_factory=list)
    swatch: str = ""            # a model's colour
    sort: float | None = None   # the number compared when the column's best value is shaded
    value: Any = None           # the raw value behind `text`, for summary.csv
    extra: dict[str, Any] = field(default_factory=dict)  # further raw values for summary.csv (a CI's bounds, ...)


def _plain(value: Any, source: Any) -> Cell:
    return Cell(fmt(value), value=value)


@dataclass(frozen=True)
class Column:
    """One column of a report table: its header, how a row gets its value and shows it, and which way is better.

    `get(source)` gives the raw value for one row's source (for the summary table, a `ModelRuns`); `show(value,
    source)` turns it into the `Cell` the page shows: its text and second line (the format), the number compared
    for shading (`Cell.sort`) and the raw values summary.csv takes. `better` is "lower" or "higher" when the
    column's best value is shaded, None when it is not. `header` and `sub` may hold ``{placeholders}`` that
    `table` fills per task; `cls` is the header's class ("name": left-aligned text).
    """

    key: str
    header: str
    sub: str = ""
    get: Callable[[Any], Any] = lambda source: source
    show: Callable[[Any, Any], Cell] = _plain
    better: str | None = None
    cls: str = ""


BETTER = {"lower": min, "higher": max}


def table(columns: list[Column], sources: Iterable[tuple[str, Any]], **words: Any) -> dict[str, Any]:
    """A table for the page: ``{"headers": [{"text", "sub", "cls"}], "rows": [{"key", "cells", "by_key"}]}``.

    `sources` gives each row's key (a model's label, a run id, ...) and source; `words` fill the headers'
    placeholders. The best value of each column with a `better` direction is shaded.
    """
    headers = [{"text": c.header.format(**words), "sub": c.sub.format(**words), "cls": c.cls} for c in columns]
    rows = []
    for key, source in sources:
        by_key = {c.key: c.show(c.get(source), source) for c in columns}
        rows.append({"key": key, "by_key": by_key, "cells": [by_key[c.key] for c in columns]})
    shade_best(rows, columns)
    return {"headers": headers, "rows": rows}


def shade_best(rows: list[dict[str, Any]], columns: list[Column]) -> None:
    """Mark the best value of each scored column (ties included), when models differ."""
    if len(rows) < 2:
        return
    for column in columns:
        if column.better is None:
            continue
        cells = [row["by_key"][column.key] for row in rows]
        # compare what the table shows (3 significant digits), so two cells that read the same are both marked
        values = [None if cell.sort is None else float(f"{cell.sort:.3g}") for cell in cells]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if len(finite) < 2 or len(set(finite)) < 2 and len(finite) == len(values):
            continue
        target = BETTER[column.better](finite)
        for cell, value in zip(cells, values):
            if value is not None and math.isclose(value, target, rel_tol=1e-9, abs_tol=1e-12):
                cell.cls = (cell.cls + " best").strip()


def _median_cell(summary: survival.KMMedian, unit: str) -> Cell:
    """A KM median time to converge (in `unit`) with its interval, or the reason it has none, on a second line."""
    if summary.n == 0:
        return Cell("—", title="no finished runs")
    title = (f"{summary.n_events} of {summary.n} runs converged. {survival.KM_MEDIAN_METHOD}. Runs that did not "
             "converge are censored where they stopped: at their own budget, or at the step they diverged.")
    extra = {"exceeds": None, "ci_low": None, "ci_high": None, "ci_high_open": None}
    if summary.median is None:
        extra["exceeds"] = summary.followed
        text, sort, value = f"> {fmt(summary.followed)}", None, None
        title = f"the KM curve never falls to half by {fmt(summary.followed)} {unit}. " + title
    else:
        text, sort, value = fmt(summary.median), summary.median, summary.median
    if summary.ci is None:
        sub = summary.reason
    else:
        low, high = summary.ci
        extra.update(ci_low=low, ci_high=None if high is None else high, ci_high_open=high is None)
        sub = f"[{fmt(low)}, {'> ' + fmt(summary.followed) if high is None else fmt(high)}]"
    return Cell(text, sub=sub, cls="muted" if value is None else "", title=title, sort=sort, value=value,
                extra=extra)


def final_metric(data: SuiteData, task: TaskInfo, runs: pd.DataFrame) -> pd.Series:
    """Each run's final error (`TaskInfo.error`) on the evaluation set: from runs.csv's ``final_<metric>`` column,
    or for a gap to a reference (N-Grams) from the run's last evaluation row; wrong bits/seq when neither is
    there."""
    error = task.error
    if error.reference is None:
        column = f"final_{error.metric}"
        return runs[column if column in runs.columns else "final_wrong_bits_per_seq"]
    last = last_evaluations(data, runs["run_id"])
    if error.metric not in last.columns or error.reference not in last.columns:
        return runs["final_wrong_bits_per_seq"]
    gap = last[error.metric] - last[error.reference]
    return runs["run_id"].map(gap)


def _generalization_medians(data: SuiteData, task: TaskInfo) -> tuple[list[tuple[str, tuple]], pd.Series]:
    frame = generalization_frame(data, task)
    if frame.empty:
        return [], pd.Series(dtype=float)
    return ordered_sizes(frame, task), frame.groupby(["model", "size"])["metric"].median()


class ModelRuns:
    """The source of one summary row: one model's runs on one task, and what several columns share."""

    def __init__(self, data: SuiteData, task: TaskInfo, model: str, sizes: list[tuple[str, tuple]],
                 gen_medians: pd.Series):
        self.data, self.task, self.model = data, task, model
        self.sizes, self.gen_medians = sizes, gen_medians
        every = data.runs_of(task.label, model)
        #: the runs with a result (done, diverged, failed); runs still training count nowhere but in a badge
        self.runs = every[every["status"] != RUNNING]
        self.running = every[every["status"] == RUNNING]
        self.usable = usable_runs(self.runs)

    @cached_property
    def budget_steps(self) -> int:
        return max([self.data.budget(r)[0] for r in self.runs["run_id"]] or [0])

    @cached_property
    def batch(self) -> int:
        return max([self.data.budget(r)[1] for r in self.runs["run_id"]] or [1])

    @cached_property
    def sample(self):
        """The censored sample of time to converge (`convergence_sample`); None when the task has no threshold."""
        return convergence_sample(self.data, self.task.label, self.model) if self.task.has_threshold else None

    def km_median(self, unit: str) -> survival.KMMedian | None:
        """The KM median time to converge in `unit` ("steps" or "sequences"); None when the task has no threshold."""
        return None if self.sample is None else survival.km_median(*self.sample.survival(unit))

    @property
    def badges(self) -> list[tuple[str, str]]:
        counts = self.runs["status"].value_counts()
        badges = [(f"{counts[s]} {s}", "bad") for s in ("diverged", "failed") if counts.get(s)]
        if len(self.running):
            badges.append((f"{len(self.running)} unfinished", "running"))
        return badges


def _proportion_cell(k: int, n: int, what: str, **fields: Any) -> Cell:
    """k of n seeds, with the Clopper–Pearson interval of the proportion on the second line (and in summary.csv as
    ``_n``, ``_ci_low``, ``_ci_high``)."""
    ci = stats.clopper_pearson(k, n)
    sub = "" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"
    extra = {**fields.pop("extra", {}), "n": n, "ci_low": None if ci is None else ci[0],
             "ci_high": None if ci is None else ci[1]}
    lines = [fields.pop("sub", ""), sub]
    return Cell(f"{k}/{n}", sub="\n".join(line for line in lines if line), sort=k / max(1, n), value=k, extra=extra,
                title=f"{what}, of the {n} runs with a result (failed runs carry none); second line: the "
                      f"{stats.CLOPPER_PEARSON_METHOD} of the proportion", **fields)


def _converged_cell(n_converged: int | None, source: ModelRuns) -> Cell:
    if n_converged is None:
        return Cell("no threshold", cls="muted", badges=source.badges,
                    title="this task has no convergence threshold, so no run is 'converged'")
    return _proportion_cell(n_converged, len(source.usable), f"seeds converged ({source.task.rule})",
                            badges=source.badges)


def _steps_cell(summary: survival.KMMedian | None, source: ModelRuns) -> Cell:
    return Cell("no threshold", cls="muted") if summary is None else _median_cell(summary, "steps")


def _sequences_cell(summary: survival.KMMedian | None, source: ModelRuns) -> Cell:
    return Cell("no threshold", cls="muted") if summary is None else _median_cell(summary, "sequences")


def _final_cell(final: pd.Series, source: ModelRuns) -> Cell:
    return Cell(fmt(final.median()) if len(final) else "—",
                sub=f"[{fmt(final.min())}–{fmt(final.max())}]" if len(final) > 1 else "",
                title="median over seeds [min–max]", sort=float(final.median()) if len(final) else None,
                value=float(final.median()) if len(final) else None,
                extra={"min": float(final.min()) if len(final) else None,
                       "max": float(final.max()) if len(final) else None})


def _solved_2x_cell(solved: pd.Series | None, source: ModelRuns) -> Cell:
    """Seeds whose final model solves the smallest test size at twice the training range."""
    task = source.task
    where = "" if task.test_size_2x is None else ",".join(
        f"{p}={v}" for p, v in zip(task.size_parts, task.test_size_2x))
    if task.solved is None:
        return Cell("no rule", cls="muted", title="this task has no notion of a solved size")
    if not where or solved is None:
        return Cell("—", cls="muted", title="no test size is at least twice the training range")
    return _proportion_cell(int(solved.sum()), len(solved), f"seeds whose final model meets the solved rule "
                            f"({task.solved.text()}) at {where}", sub=f"at {where}", extra={"size": where})


def _solved_up_to_cell(labels: list[str] | None, source: ModelRuns) -> Cell:
    """Each seed's longest test size solved contiguously from the shortest one (seed order; "none" when none)."""
    task = source.task
    if task.solved is None:
        return Cell("no rule", cls="muted", title="this task has no notion of a solved size")
    if labels is None:
        return Cell("—", cls="muted")
    text = " · ".join(labels)
    return Cell(text, value=text, title="per seed, in seed order: the longest test size reached from the shortest "
                                        f"through sizes solved ({task.solved.text()})")


def _solved_up_to(source: ModelRuns) -> list[str] | None:
    if "solved_up_to" not in source.runs.columns:
        return None
    ordered = source.runs.sort_values("seed")
    labels = []
    for status, label in zip(ordered["status"], ordered["solved_up_to"]):
        if status != "done":
            labels.append(status)
        else:
            labels.append("none" if pd.isna(label) or str(label) == "" else str(label))
    return labels


def _generalization_values(source: ModelRuns) -> list[tuple[str, tuple, float]]:
    """(size label, size, median over seeds) at each test size the model was scored on, shortest first."""
    values = [(label, size, source.gen_medians.get((source.model, label), math.nan)) for label, size in source.sizes]
    return [v for v in values if pd.notna(v[2])]


def _generalization_cell(values: list[tuple[str, tuple, float]], source: ModelRuns) -> Cell:
    task = source.task
    if not values:
        return Cell("—", href=f"#gen-{task.slug}")
    every_size = {label: float(v) for label, _, v in values}  # summary.csv has them all, the cell the ends
    if len(values) > 4:
        inside = [v for v in values if task.in_training_range(v[1])]
        double = [v for v in values if task.test_size_2x is not None
                  and tuple(float(x) for x in v[1]) == tuple(float(x) for x in task.test_size_2x)]
        keep = [values[0], *(inside[-1:] if inside else []), *double, values[-1]]
        values = list(dict.fromkeys(keep))
    largest = values[-1]
    parts = [f"{label}: {fmt(v)}" for label, _, v in values]
    others = parts[:-1]
    sub = "\n".join(" · ".join(others[i:i + 2]) for i in range(0, len(others), 2))  # two sizes per line
    return Cell(parts[-1], sub=sub, href=f"#gen-{task.slug}",
                title="median over seeds; click for every test size", sort=float(largest[2]),
                value=float(largest[2]), extra=every_size)


def _nonfinite_cell(nonfinite: pd.Series, source: ModelRuns) -> Cell:
    return Cell(fmt(nonfinite.sum()), cls="bad" if nonfinite.sum() > 0 else "",
                title=f"non-finite (skipped) updates, summed over seeds; max per seed {fmt(nonfinite.max())}",
                value=int(nonfinite.sum()))


def _params_cell(params: pd.Series, source: ModelRuns) -> Cell:
    return Cell(fmt(params.iloc[0]) if len(params) else "—", value=int(params.iloc[0]) if len(params) else None)


def _wall_cell(wall: pd.Series, source: ModelRuns) -> Cell:
    return Cell(format_duration(float(wall.median())) if len(wall) else "—",
                title="median over seeds of a run's wall time (training, evaluation, generalisation)",
                value=round(float(wall.median()), 1) if len(wall) else None)


def _throughput_cell(seq_s: pd.Series, source: ModelRuns) -> Cell:
    return Cell(fmt(seq_s.median()) if len(seq_s) else "—", title="median over seeds of training throughput",
                sort=float(seq_s.median()) if len(seq_s) else None,
                value=float(seq_s.median()) if len(seq_s) else None)


#: the summary table's columns. The HTML page, summary.csv and summary.md are all built from the same cells, so the
#: three can never disagree. Header placeholders: {metric} (the task's error), {min_n} (the fewest runs a KM median's
#: interval needs), {solved} (the task's solved rule). Every interval names its method in its header and its cells'
#: titles: Clopper–Pearson for counts of seeds, the KM band for medians (`bench.survival`).
SUMMARY_COLUMNS = [
    Column("model", "model", get=lambda s: s.model,
           show=lambda model, s: Cell(model, swatch=s.data.palette[model], value=model)),
    Column("converged", "seeds converged", "95 % Clopper–Pearson", better="higher", show=_converged_cell,
           get=lambda s: int(s.usable["converged"].sum()) if s.task.has_threshold else None),
    Column("median_steps", "KM median steps", "95 % CI: log(−log) band; n ≥ {min_n}", show=_steps_cell,
           get=lambda s: s.km_median("steps"), better="lower"),
    Column("median_sequences", "KM median sequences", "95 % CI: log(−log) band; n ≥ {min_n}",
           get=lambda s: s.km_median("sequences"), show=_sequences_cell, better="lower"),
    Column("final_error", "final {metric}", "median [min–max]", show=_final_cell, better="lower",
           get=lambda s: final_metric(s.data, s.task, s.usable).dropna()),
    Column("generalization", "generalisation {metric}", "median at the largest test size; other sizes below",
           get=_generalization_values, show=_generalization_cell, better="lower"),
    Column("solved_2x", "seeds solving 2× training size", "{solved}; 95 % Clopper–Pearson", show=_solved_2x_cell,
           better="higher",
           get=lambda s: s.usable["solved_2x"].map(truthy) if "solved_2x" in s.usable.columns else None),
    Column("solved_up_to", "longest size solved", "per seed, in seed order", get=_solved_up_to,
           show=_solved_up_to_cell),
    Column("nonfinite_steps", "non-finite steps", get=lambda s: s.runs["nonfinite_steps"].fillna(0),
           show=_nonfinite_cell),
    Column("params", "params", get=lambda s: s.runs["params"].dropna(), show=_params_cell),
    Column("wall_s", "run time", "median per seed", get=lambda s: s.runs["wall_s"].dropna(), show=_wall_cell),
    Column("seq_per_s", "seq/s", "median", get=lambda s: s.runs["seq_per_s"].dropna(), show=_throughput_cell,
           better="higher"),
]


def summary_table(data: SuiteData, task: TaskInfo) -> dict[str, Any]:
    """The task's summary table (see `table`): one row per model, keyed by the model's label, one cell per
    `SUMMARY_COLUMNS` entry. Each cell's `value` is the raw number (or text) behind what it shows and `extra` holds
    further raw columns (a CI's bounds, the error at each test size) for summary.csv."""
    sizes, gen_medians = _generalization_medians(data, task)
    sources = [(model, ModelRuns(data, task, model, sizes, gen_medians)) for model in data.models_of(task.label)]
    summary = table(SUMMARY_COLUMNS, sources, metric=task.metric_label, min_n=survival.MIN_SEEDS_FOR_INTERVAL,
                    solved="no solved rule" if task.solved is None else task.solved.text())
    for row, (model, source) in zip(summary["rows"], sources):
        row["seeds"] = len(source.runs)
        if data.origins:  # a combined report: where each model's runs come from
            row["source"] = data.origins.get(model) or "this folder"
            row["cells"][0].sub = data.origins.get(model, "")
    return summary


def _quartiles_cell(values: pd.Series, source: Any) -> Cell:
    if not len(values):
        return Cell("—")
    q1, median, q3 = stats.quartiles(values)
    return Cell(fmt(median), sub=f"IQR {fmt(q1)}–{fmt(q3)}" if len(values) > 1 else "",
                title="seeds: " + ", ".join(fmt(v) for v in values), sort=median)


def generalization_table(data: SuiteData, task: TaskInfo) -> dict[str, Any] | None:
    """The task's error at each test size, one row per model: the median over seeds and its IQR; the lowest
    median of each size is shaded."""
    frame = generalization_frame(data, task)
    if frame.empty:
        return None
    columns = [Column("model", "model", get=lambda source: source[0],
                      show=lambda model, source: Cell(model, swatch=data.palette[model]))]
    reference = task.error.reference
    for label, size in ordered_sizes(frame, task):
        header = label + (" (train)" if task.in_training_range(size) else "")
        if reference is not None and reference in frame.columns:
            value = frame.loc[frame["size"] == label, reference].median()
            header += f" · {task.error.reference_label or reference} {fmt(value)}"
        columns.append(Column(label, header, show=_quartiles_cell, better="lower",
                              get=lambda source, label=label: _at_size(source[1], label)))
    models = [m for m in data.models_of(task.label) if (frame["model"] == m).any()]
    return table(columns, [(model, (model, frame[frame["model"] == model])) for model in models])


def _at_size(part: pd.DataFrame, label: str) -> pd.Series:
    """One model's error at one test size, a value per seed."""
    return part.loc[part["size"] == label, "metric"].dropna()


def unfinished_runs(data: SuiteData) -> list[dict[str, Any]]:
    """The runs still training (or interrupted), with the step of their last evaluation so far and their budget,
    in suite order: the page's "unfinished" note."""
    rows = []
    for _, run in data.runs[data.runs["status"] == RUNNING].iterrows():
        steps, _ = data.budget(str(run["run_id"]))
        rows.append({"task": run["task"], "model": run["model"], "seed": run["seed"], "run_id": str(run["run_id"]),
                     "step": None if pd.isna(run["steps"]) else int(run["steps"]), "budget": steps})
    return rows


def not_started(data: SuiteData) -> int:
    """How many of the suite's runs have neither a result nor an evaluation yet."""
    return len(set(data.manifest.get("run_ids", [])) - set(data.runs["run_id"].astype(str)))


def problems(data: SuiteData, limit: int = 12) -> list[str]:
    """One line per run that diverged or failed, and a count of runs without a result, for the page's header
    (runs still training are not problems: the header's unfinished note lists them)."""
    lines = []
    for _, run in data.runs[~data.runs["status"].isin(["done", RUNNING])].iterrows():
        where = f"{run['task']} / {run['model']} / seed {run['seed']} (run {run['run_id']})"
        if run["status"] == "diverged":
            lines.append(f"{where} diverged at step {fmt(run['steps'])} after {fmt(run['nonfinite_steps'])} "
                         "non-finite steps; it counts as not converged and has no generalisation results")
        else:
            lines.append(f"{where} failed: {data.errors.get(str(run['run_id']), 'no error recorded')}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"… and {len(lines) - limit} more (see Runs in the appendix)"]
    missing = not_started(data)
    # neither a result nor an evaluation yet: while other runs are training that is the queue (the unfinished note
    # counts it), otherwise the suite was stopped before them
    if missing and not (data.runs["status"] == RUNNING).any():
        lines.append(f"{missing} run(s) of this suite have no result yet (not run, or interrupted)")
    return lines


def _text(value: Any, source: Any) -> Cell:
    return Cell(str(value))


def _number(value: Any, source: Any) -> Cell:
    return Cell(fmt(value))


#: the appendix's table of runs; a row's source is (run_id, its runs.csv row, the suite's data)
RUN_COLUMNS = [
    Column("run", "run", get=lambda r: r[0], show=lambda run_id, r: Cell(run_id, href=f"runs/{run_id}/")),
    Column("task", "task", get=lambda r: r[1]["task"], show=_text),
    Column("model", "model", get=lambda r: str(r[1]["model"]),
           show=lambda model, r: Cell(model, swatch=r[2].palette.get(model, ""))),
    Column("seed", "seed", get=lambda r: r[1]["seed"], show=_text),
    Column("status", "status", get=lambda r: str(r[1]["status"]),
           show=lambda status, r: Cell(status, cls="" if status == "done" else "muted" if status == RUNNING
                                       else "bad")),
    Column("converge_step", "converged at", get=lambda r: r[1]["converge_step"] if bool(r[1]["converged"]) else None,
           show=_number),
    Column("final_wrong_bits_per_seq", "final wrong bits/seq", get=lambda r: r[1]["final_wrong_bits_per_seq"],
           show=_number),
    Column("steps", "steps", get=lambda r: r[1]["steps"], show=_number),
    Column("wall_s", "wall s", get=lambda r: r[1]["wall_s"], show=_number),
    Column("error", "error", get=lambda r: r[2].errors.get(r[0], ""), show=lambda error, r: Cell(error, cls="bad")),
]


def runs_table(data: SuiteData) -> dict[str, Any]:
    sources = [(str(run["run_id"]), (str(run["run_id"]), run, data)) for _, run in data.runs.iterrows()]
    return table(RUN_COLUMNS, sources)


def summary_frame(sections: list[dict[str, Any]]) -> pd.DataFrame:
    """summary.csv: one row per task x model, the raw values behind the HTML summary table's cells.

    A cell's value goes in the column named after its key and each of its extras in ``key_extra`` (for the
    generalisation error, one ``generalization_<size>`` column per test size).
    """
    records = []
    for section in sections:
        for row in section["summary"]["rows"]:
            record: dict[str, Any] = {"task": section["task"].label, "model": row["key"], "seeds": row["seeds"]}
            if "source" in row:
                record["source"] = row["source"]
            for column in SUMMARY_COLUMNS[1:]:
                cell = row["by_key"][column.key]
                record[column.key] = cell.value
                record.update({f"{column.key}_{name}": value for name, value in cell.extra.items()})
            records.append(record)
    return pd.DataFrame(records)
