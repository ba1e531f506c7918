"""The suite report: reports/<suite>/index.html plus reports/<suite>/figures/*.png.

`write_report(out_dir)` reads only files: suite.json, the suite CSVs (runs.csv, curves.csv, generalization.csv) and,
from each run folder, spec.json (provenance, budget), result.json (the error of a failed run) and samples.npz (sample
outputs and memory traces). It never builds a model. It first rebuilds the suite CSVs from the run folders
(`bench.results.collect`), taking in the runs still training (status `running`, their curve.csv so far): a suite can be
reported while it runs, its unfinished runs drawn in the learning curves and left out of every statistic. The page is
one self-contained file: every figure is embedded as a base64 PNG data URI, the CSS is inline, and there is no script,
font or other request to the network.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through pyplot, so rendering a
report leaves no global figure state behind (and does not switch the backend of, say, a notebook that calls it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import numpy as np
import pandas as pd
import scipy
import seaborn as sns
import yaml
from markupsafe import Markup
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import EngFormatter, FuncFormatter, LogFormatter, MaxNLocator

from bench import stats
from bench.results import (
    RUNNING,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_text,
    claim_output_folder,
    collect,
    read_figure_manifest,
    read_json,
    write_figure_manifest,
)
from tasks import TASKS
from tasks.base import RULE_SIGNS, WRONG_BITS, Measure, Rule
from tasks.ngrams import GAP_TO_OPTIMUM

DPI = 100
FIG_WIDTH = 11.0            # inches: 1100 px at DPI 100, inside the page's 1200 px column
LOG_FLOOR = 1e-3            # learning curves: values below this (exact zeros included) are drawn at it
LABEL_WIDTH = 14            # characters per line of a model label on a categorical axis
TEMPLATES = Path(__file__).parent / "templates"
CSV_FILES = ("runs.csv", "curves.csv", "generalization.csv")
SUMMARY_FILES = ("summary.csv", "summary.md")   # written with every report, next to index.html
# seaborn's style for every figure, applied in a context so the caller's matplotlib settings are left alone
STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85),
         "figure.dpi": DPI, "savefig.dpi": DPI, "axes.titlesize": 10, "legend.fontsize": 9}
# sample outputs: 0/1 bits, a wrong bit, and a step that is not scored
SAMPLE_COLOURS = np.array([[1.0, 1.0, 1.0], [0.13, 0.13, 0.13], [0.84, 0.15, 0.16], [0.85, 0.85, 0.85]])
WRONG, UNSCORED = 2, 3
INPUT_GREYS = matplotlib.colormaps["Greys"]
INPUT_DIVERGING = matplotlib.colormaps["PuOr_r"]
MEMORY_CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="white")
MEMORY_TRACES = {"read_weights": "read", "write_weights": "write", "usage": "usage"}


# ---- small helpers ----------------------------------------------------------------------------------------------

def slug(text: str) -> str:
    """A file- and anchor-safe form of a label. Labels that need changing get a short hash of the exact label
    appended, so two labels such as ``copy/a`` and ``copy a`` never share a figure file or an anchor."""
    text = str(text)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"
    if safe == text:
        return safe
    return f"{safe}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def wrap_label(label: str, width: int = LABEL_WIDTH) -> str:
    """Break a long model label such as ``ntm[memory_init=constant]`` over lines, at '[', ',' and '='."""
    if len(label) <= width:
        return label
    lines, line = [], ""
    for part in re.split(r"(?=\[)|(?<=,)|(?<==)", label):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = part
        else:
            line += part
    lines.append(line)
    return "\n".join(piece[i:i + width] for piece in lines for i in range(0, len(piece), width))


def fmt(x: Any, digits: int = 3) -> str:
    """A number for a table: '—' when missing, thousands separators for large values, else `digits` significant."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or pd.isna(x):
        return "—"
    x = float(x)
    if abs(x) >= 1000 or (x == int(x) and abs(x) >= 100):
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _read_json_or_none(path: Path) -> Any:
    """A run's JSON object, or None when it is missing, damaged or not an object."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---- the suite's data -------------------------------------------------------------------------------------------

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
        return legacy_task_info(label, fact, has_optimum)
    rule = fact["convergence"]
    solved = fact.get("solved")
    return TaskInfo(label=label, type=str(fact.get("type", label)), **_sizes(fact),
                    error=Measure.from_json(fact["error"]) if fact.get("error") else WRONG_BITS,
                    convergence=None if rule is None else Rule.from_json(rule),
                    solved=None if solved is None else Rule.from_json(solved),
                    test_size_2x=fact.get("test_size_2x"))


def _sizes(fact: dict[str, Any]) -> dict[str, Any]:
    return {"size_parts": list(fact.get("size_parts", [])),
            "train_sizes": {k: list(v) for k, v in (fact.get("train_sizes") or {}).items()},
            "test_sizes": [list(s) for s in fact.get("test_sizes", [])]}


def _first_number(words: str) -> float | None:
    """The first word of `words` that reads as a number ("wrong bits/seq < 0.1" -> 0.1), or None."""
    for word in words.split():
        try:
            return float(word)
        except ValueError:
            continue
    return None


def legacy_task_info(label: str, fact: dict[str, Any], has_optimum: bool) -> TaskInfo:
    """A `TaskInfo` from task facts written by an earlier version.

    Those facts gave the registry name (``type``) and the convergence rule as words (``convergence_rule``; None: no
    threshold); later ones also its number (``convergence_threshold``) and the solved level (``solved_at_most``,
    wrong bits/seq). The rule always bounded the task's error, strictly, so the error measure (the task class's
    own, or the gap to the optimum when the curves carry one) gives its metric. Without the number, the first
    number in the words is the threshold.
    """
    task_class = TASKS.get(str(fact.get("type", label)))
    error = GAP_TO_OPTIMUM if has_optimum else getattr(task_class, "error", WRONG_BITS)
    words = fact.get("convergence_rule")
    threshold = fact.get("convergence_threshold")
    if threshold is None and words is not None:
        threshold = _first_number(words)
    convergence = None if words is None or threshold is None else Rule(error.metric, threshold, "<",
                                                                        error.reference)
    solved_at_most = fact.get("solved_at_most")
    return TaskInfo(label=label, type=str(fact.get("type", label)), **_sizes(fact), error=error,
                    convergence=convergence,
                    solved=None if solved_at_most is None else Rule("wrong_bits_per_seq", solved_at_most, "<="),
                    test_size_2x=fact.get("test_size_2x"), rule_text=words)


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
    manifest = read_json(out_dir / "suite.json")
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
        runs["converged"] = runs["converged"].map(_truthy) if "converged" in runs else False
        runs["status"] = runs["status"].fillna("failed").astype(str)
    for column in ("converge_step", "converge_sequences", "final_wrong_bits_per_seq", "final_loss_bits_per_seq",
                   "nonfinite_steps", "params", "wall_s", "seq_per_s", "steps"):
        if column in runs.columns:
            runs[column] = pd.to_numeric(runs[column], errors="coerce")
        elif len(runs) or column not in runs.columns:
            runs[column] = np.nan
    specs, errors = {}, {}
    for run_id, status in zip(runs["run_id"], runs["status"]):
        folder = out_dir / "runs" / str(run_id)
        specs[str(run_id)] = _read_json_or_none(folder / "spec.json") or {}
        if status == "failed":
            result = _read_json_or_none(folder / "result.json") or {}
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
    return SuiteData(out_dir, manifest, runs, curves, gen, specs, tasks, models, model_palette(models), errors)


#: seaborn's colorblind palette reordered so that the first models get the most distinct colours: its 2nd (orange)
#: and 4th (vermillion) were hard to tell apart side by side, so vermillion moves behind pink, grey, brown and sky blue
COLORBLIND_ORDER = (0, 1, 2, 4, 7, 5, 9, 3, 6, 8)


def model_palette(models: list[str]) -> dict[str, str]:
    """One colour per model, the same in every figure and table swatch."""
    if len(models) <= len(COLORBLIND_ORDER):
        base = sns.color_palette("colorblind", len(COLORBLIND_ORDER))
        colours = [base[i] for i in COLORBLIND_ORDER]
    else:
        colours = sns.color_palette("husl", len(models))
    return {m: matplotlib.colors.to_hex(c) for m, c in zip(models, colours)}


# ---- figures ----------------------------------------------------------------------------------------------------

class FigureSink:
    """Saves each figure as figures/<name>.png and keeps its bytes for embedding in the page."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir / "figures"
        self.written: dict[str, str] = {}   # file name -> data URI
        #: every figure file the harness has written here and not yet deleted (figures/.written)
        self.owned: set[str] = set(read_figure_manifest(self.dir))

    def save(self, fig: Figure, name: str) -> dict[str, str]:
        FigureCanvasAgg(fig)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
        fig.clear()  # the figure is done with; no pyplot registry holds it, so this frees it
        data = buffer.getvalue()
        file_name = f"{name}.png"
        if file_name not in self.owned:  # listed before it is written: a render killed now leaves nothing unlisted
            self.owned.add(file_name)
            write_figure_manifest(self.dir, sorted(self.owned))
        atomic_write_bytes(self.dir / file_name, data)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        self.written[file_name] = uri
        return {"src": uri, "file": f"figures/{file_name}"}

    def remove_stale(self) -> None:
        """Delete the figures an earlier render wrote that this one did not (a task or model that is gone). Only
        files named in figures/.written are deleted; any other file in figures/ is never touched."""
        if not self.dir.exists():
            return
        for name in sorted(self.owned - set(self.written)):
            path = self.dir / name
            if path.is_file() or path.is_symlink():
                path.unlink()
        self.owned = set(self.written)
        write_figure_manifest(self.dir, sorted(self.owned))


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _model_legend(fig: Figure, data: SuiteData, models: list[str], extra: list | None = None) -> None:
    handles = [matplotlib.lines.Line2D([], [], color=data.palette[m], lw=2.5, label=m) for m in models]
    handles += extra or []
    longest = max((len(h.get_label()) for h in handles), default=10)
    ncols = max(1, min(len(handles), int(120 // (longest + 6))))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False)


def _curve_metric(frame: pd.DataFrame, task: TaskInfo) -> pd.Series:
    """The task's error (`TaskInfo.error`) on each row of curves or generalisation results; wrong bits/seq when
    the rows lack a column it needs."""
    error = task.error
    if all(c is None or c in frame.columns for c in (error.metric, error.reference)):
        return frame[error.metric] if error.reference is None else frame[error.metric] - frame[error.reference]
    return frame["wrong_bits_per_seq"]


def _seed_matrix(data: SuiteData, task: TaskInfo, model: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """sequences_seen x seed of the task's metric. A run that stopped early at convergence keeps its last value."""
    frame = data.curves[(data.curves["task"] == task.label) & (data.curves["model"] == model)].copy()
    if frame.empty:
        return pd.DataFrame(), {}
    frame["metric"] = _curve_metric(frame, task)
    matrix = frame.pivot_table(index="sequences_seen", columns="seed", values="metric", aggfunc="last").sort_index()
    statuses = {}
    for seed in matrix.columns:
        row = data.runs_of(task.label, model)
        row = row[row["seed"] == seed]
        status = row["status"].iloc[0] if len(row) else "done"
        statuses[seed] = status
        if len(row) and status == "done" and bool(row["converged"].iloc[0]):
            last = matrix[seed].last_valid_index()
            matrix.loc[matrix.index > last, seed] = matrix.loc[last, seed]
    return matrix, statuses


def figure_curves(data: SuiteData, task: TaskInfo, sink: FigureSink) -> dict[str, str] | None:
    models = [m for m in data.models_of(task.label)
              if not data.curves[(data.curves["task"] == task.label) & (data.curves["model"] == m)].empty]
    if not models:
        return None
    fig = _new_figure(FIG_WIDTH, 4.0)
    ax_median, ax_seeds = fig.subplots(1, 2, sharey=True)
    threshold = task.threshold()
    unfinished = False
    for model in models:
        matrix, statuses = _seed_matrix(data, task, model)
        colour = data.palette[model]
        values = matrix.to_numpy(dtype=float)
        x = matrix.index.to_numpy(dtype=float)
        with np.errstate(all="ignore"), _quiet():
            q1, median, q3 = np.nanpercentile(values, [25, 50, 75], axis=1)
        clip = lambda v: np.maximum(v, LOG_FLOOR)  # noqa: E731
        ax_median.plot(x, clip(median), color=colour, lw=2)
        ax_median.fill_between(x, clip(q1), clip(q3), color=colour, alpha=0.2, lw=0)
        for seed in matrix.columns:
            series = matrix[seed].dropna()
            ax_seeds.plot(series.index, clip(series.to_numpy(dtype=float)), color=colour, lw=0.8, alpha=0.7)
            if statuses.get(seed) == "diverged" and len(series):
                ax_seeds.plot(series.index[-1], clip(series.iloc[-1]), marker="X", ms=9, color=colour,
                              markeredgecolor="black", ls="none")
            if statuses.get(seed) == RUNNING and len(series):
                unfinished = True
                ax_seeds.plot(series.index[-1], clip(series.iloc[-1]), marker="o", ms=7, color="white",
                              markeredgecolor=colour, markeredgewidth=1.8, ls="none")
    for ax in (ax_median, ax_seeds):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
        ax.set_xlabel("sequences seen")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        if threshold is not None:
            ax.axhline(max(threshold, LOG_FLOOR), color="black", ls="--", lw=1)
    ax_median.set_ylabel(f"{task.metric_label} (log)")
    ax_median.set_title("median across seeds, interquartile band")
    ax_seeds.set_title("each seed (X: diverged run ends; o: unfinished run, so far)" if unfinished
                       else "each seed (X: diverged run ends)")
    extra = []
    if threshold is not None:
        extra.append(matplotlib.lines.Line2D([], [], color="black", ls="--", lw=1, label="convergence threshold"))
    if unfinished:
        extra.append(matplotlib.lines.Line2D([], [], marker="o", ms=7, color="white", markeredgecolor="grey",
                                             markeredgewidth=1.8, ls="none", label="unfinished run (last evaluation)"))
    _model_legend(fig, data, models, extra)
    return sink.save(fig, f"curves_{slug(task.label)}")


class _quiet(warnings.catch_warnings):
    """Silence numpy's all-NaN-slice warnings where a step has no seed yet."""

    def __enter__(self):
        super().__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)


def convergence_tasks(data: SuiteData) -> tuple[list[TaskInfo], list[str]]:
    """(tasks with at least one converged seed, labels of thresholded tasks where no seed converged)."""
    shown, none = [], []
    for task in data.tasks.values():
        usable = _usable(data.runs_of(task.label))
        if not task.has_threshold or not len(usable):
            continue
        (shown if usable["converged"].any() else none).append(task)
    return shown, [t.label for t in none]


def figure_convergence(data: SuiteData, sink: FigureSink) -> dict[str, str] | None:
    """Steps to converge per model, one panel per task that has a converged seed (an all-censored panel is empty)."""
    tasks, _ = convergence_tasks(data)
    if not tasks:
        return None
    ncols = min(4, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig = _new_figure(FIG_WIDTH, 3.0 * nrows + 0.6)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    rng = np.random.default_rng(0)
    for ax, task in zip(axes, tasks):
        models = data.models_of(task.label)
        rows, budget_line = [], 0
        for model in models:
            runs = _usable(data.runs_of(task.label, model))
            for _, run in runs.iterrows():
                steps, _ = data.budget(run["run_id"])
                budget_line = max(budget_line, steps)
                converged = bool(run["converged"]) and pd.notna(run["converge_step"])
                rows.append({"model": model, "steps": run["converge_step"] if converged else steps,
                             "converged": converged})
        frame = pd.DataFrame(rows)
        positions = {m: i for i, m in enumerate(models)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)  # raised inside seaborn
            sns.boxplot(data=frame, x="model", y="steps", hue="model", order=models, hue_order=models,
                        palette=data.palette, legend=False, ax=ax, width=0.5, fliersize=0, boxprops={"alpha": 0.45})
        for converged, marker, size in ((True, "o", 30), (False, "^", 55)):
            part = frame[frame["converged"] == converged]
            if part.empty:
                continue
            xs = np.array([positions[m] for m in part["model"]]) + rng.uniform(-0.15, 0.15, len(part))
            ax.scatter(xs, part["steps"], marker=marker, s=size, zorder=3,
                       c=[data.palette[m] for m in part["model"]] if converged else "white",
                       edgecolors="black" if converged else [data.palette[m] for m in part["model"]],
                       linewidths=0.6 if converged else 1.8)
        ax.axhline(budget_line, color="grey", ls="--", lw=1)
        ax.set_title(task.label)
        ax.set_xlabel("")
        ax.set_ylabel("steps to converge")
        ax.set_ylim(0, budget_line * 1.08 if budget_line else None)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xticks(range(len(models)), [wrap_label(m) for m in models])
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    fig.legend(handles=[
        matplotlib.lines.Line2D([], [], marker="o", ls="none", color="grey", markeredgecolor="black",
                                label="converged seed"),
        matplotlib.lines.Line2D([], [], marker="^", ls="none", markerfacecolor="white", markeredgecolor="grey",
                                markeredgewidth=1.8, ms=8, label="not converged (censored at the budget)"),
        matplotlib.lines.Line2D([], [], color="grey", ls="--", label="step budget")],
        loc="outside lower center", ncols=3, frameon=False)
    return sink.save(fig, "convergence")


def _usable(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that carry a result (done or diverged); failed runs say nothing about convergence."""
    return runs[runs["status"].isin(["done", "diverged"])]


def _generalization_frame(data: SuiteData, task: TaskInfo) -> pd.DataFrame:
    frame = data.gen[data.gen["task"] == task.label].copy()
    if frame.empty:
        return frame
    frame["metric"] = _curve_metric(frame, task)
    return frame


def _size_of(row: pd.Series, task: TaskInfo) -> tuple[float, ...]:
    return tuple(float(row.get(f"size_{p}", math.nan)) for p in task.size_parts)


def _ordered_sizes(frame: pd.DataFrame, task: TaskInfo) -> list[tuple[str, tuple[float, ...]]]:
    sizes = {}
    for _, row in frame.drop_duplicates("size").iterrows():
        sizes[row["size"]] = _size_of(row, task)
    return sorted(sizes.items(), key=lambda kv: kv[1])


def _grid_shape(sizes: list[tuple[float, ...]]) -> tuple[list[float], list[float]] | None:
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


def figure_generalization(data: SuiteData, task: TaskInfo, sink: FigureSink) -> dict[str, str] | None:
    frame = _generalization_frame(data, task)
    if frame.empty or not task.size_parts:
        return None
    models = [m for m in data.models_of(task.label) if (frame["model"] == m).any()]
    sizes = _ordered_sizes(frame, task)
    grid = _grid_shape([s for _, s in sizes])
    medians = frame.groupby(["model", "size"])["metric"].median()
    if grid is not None:
        return _generalization_heatmaps(data, task, models, medians, sizes, grid, sink)
    fig = _new_figure(FIG_WIDTH * 0.75, 3.6)
    ax = fig.subplots()
    one_part = len(task.size_parts) == 1
    positions = {label: (size[0] if one_part else i) for i, (label, size) in enumerate(sizes)}
    for model in models:
        part = frame[frame["model"] == model]
        grouped = part.groupby("size")["metric"]
        labels = [label for label, _ in sizes if label in grouped.groups]
        q = np.array([stats.quartiles(grouped.get_group(label)) for label in labels])
        x = np.array([positions[label] for label in labels], dtype=float)
        ax.plot(x, q[:, 1], color=data.palette[model], marker="o", lw=2, zorder=3)
        ax.fill_between(x, q[:, 0], q[:, 2], color=data.palette[model], alpha=0.2, lw=0)
        # every seed too: a memory model either finds the algorithm or does not, and a median over a success and
        # a failure hides both
        for _, seed_rows in part.groupby("seed"):
            by_size = seed_rows.set_index("size")["metric"]
            seed_labels = [label for label in labels if label in by_size.index]
            ax.plot([positions[label] for label in seed_labels], by_size[seed_labels].to_numpy(dtype=float),
                    color=data.palette[model], lw=0.8, alpha=0.45, marker=".", ms=4, zorder=2)
    inside = [positions[label] for label, size in sizes if task.in_training_range(size)]
    ticks = sorted({positions[label] for label, _ in sizes})
    if one_part and task.train_sizes.get(task.size_parts[0]):
        lo, hi = task.train_sizes[task.size_parts[0]]
        ax.axvspan(lo - 0.5, hi + 0.5, color="grey", alpha=0.15, lw=0)  # sizes are integers: a lone size shows
        ticks = sorted({*ticks, lo, hi})
    elif inside:
        ax.axvspan(min(inside) - 0.4, max(inside) + 0.4, color="grey", alpha=0.15, lw=0)
    if one_part:
        if len(ticks) <= 12:
            ax.set_xticks(ticks, [fmt(t) for t in ticks])
        ax.set_xlabel(f"test size ({task.size_parts[0]})")
    else:
        ax.set_xticks([positions[label] for label, _ in sizes], [label for label, _ in sizes])
        ax.set_xlabel("test size (" + ", ".join(task.size_parts) + ")")
    extra = [Rectangle((0, 0), 1, 1, color="grey", alpha=0.25, label="training range"),
             Line2D([], [], color="grey", lw=0.8, alpha=0.6, marker=".", label="one seed")]
    if task.error.reference is not None:
        ax.axhline(0, color="black", lw=1, ls=":")  # the error is a gap to a reference: 0 is the reference
    elif task.solved_line() is not None:
        ax.axhline(task.solved_line(), color="black", lw=1, ls="--")
        extra.append(Line2D([], [], color="black", lw=1, ls="--",
                            label=f"solved ({RULE_SIGNS[task.solved.op]} {task.solved.threshold:g})"))
    ax.set_ylabel(f"{task.metric_label} (line: median; band: IQR)")
    ax.set_ylim(bottom=min(0, ax.get_ylim()[0]))
    _model_legend(fig, data, models, extra)
    return sink.save(fig, f"generalization_{slug(task.label)}")


def _generalization_heatmaps(data, task, models, medians, sizes, grid, sink):
    xs, ys = grid
    ncols = min(4, len(models))
    nrows = math.ceil(len(models) / ncols)
    fig = _new_figure(FIG_WIDTH if ncols > 2 else FIG_WIDTH * 0.7, 2.9 * nrows + 0.3)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    vmax = max(float(np.nanmax(medians.to_numpy())) if len(medians) else 1.0, 1e-9)
    image = None
    label_of = {size: label for label, size in sizes}
    for ax, model in zip(axes, models):
        values = np.full((len(ys), len(xs)), np.nan)
        for (x_i, x), (y_i, y) in ((a, b) for a in enumerate(xs) for b in enumerate(ys)):
            label = label_of.get((x, y))
            if label is not None and (model, label) in medians.index:
                values[y_i, x_i] = medians[(model, label)]
        image = ax.imshow(values, origin="lower", cmap="rocket_r", vmin=0, vmax=vmax, aspect="auto")
        for y_i, x_i in np.ndindex(values.shape):
            if np.isfinite(values[y_i, x_i]):
                dark = values[y_i, x_i] > 0.55 * vmax
                ax.text(x_i, y_i, fmt(values[y_i, x_i]), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
            if task.in_training_range((xs[x_i], ys[y_i])):
                ax.add_patch(Rectangle((x_i - 0.5, y_i - 0.5), 1, 1, fill=False, ec="#1f77b4", lw=2.5))
        ax.set_xticks(range(len(xs)), [fmt(v) for v in xs])
        ax.set_yticks(range(len(ys)), [fmt(v) for v in ys])
        ax.set_xlabel(task.size_parts[0])
        ax.set_ylabel(task.size_parts[1])
        ax.grid(False)
        ax.set_title(model, color=data.palette[model], fontweight="bold")
    for ax in axes[len(models):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes[:len(models)].tolist(), label=f"median {task.metric_label}", shrink=0.9)
    return sink.save(fig, f"generalization_{slug(task.label)}")


def _sample_runs(data: SuiteData, task: TaskInfo) -> list[tuple[str, int, dict[str, np.ndarray]]]:
    """(model, seed, arrays) for each model: the lowest seed whose run saved samples."""
    chosen = []
    for model in data.models_of(task.label):
        runs = data.runs_of(task.label, model).sort_values("seed")
        for _, run in runs.iterrows():
            path = data.out_dir / "runs" / str(run["run_id"]) / "samples.npz"
            if path.exists():
                try:
                    with np.load(path) as npz:
                        arrays = {key: npz[key] for key in npz.files}
                except Exception:  # noqa: BLE001 - a damaged samples file only loses its panel
                    continue
                chosen.append((model, int(run["seed"]), arrays))
                break
    return chosen


def _size_text(task: TaskInfo, size: np.ndarray | None) -> str:
    if size is None:
        return ""
    return ", ".join(f"{p}={int(v)}" for p, v in zip(task.size_parts, np.atleast_1d(size)))


def _input_rgb(inputs: np.ndarray) -> np.ndarray:
    """[channels, T] inputs -> RGB: grey scale for channels in [0, 1]; a diverging map for a channel that goes
    negative (Priority Sort's priorities), with 0 white in both."""
    rgb = np.empty((*inputs.shape, 3))
    for c, channel in enumerate(inputs):
        if channel.size and channel.min() < 0:
            bound = max(1.0, float(np.abs(channel).max()))
            rgb[c] = INPUT_DIVERGING((channel + bound) / (2 * bound))[..., :3]
        else:
            rgb[c] = INPUT_GREYS(np.clip(channel / max(1.0, float(channel.max(initial=0))), 0, 1) * 0.9)[..., :3]
    return rgb


def _bit_codes(bits: np.ndarray, target: np.ndarray, mask: np.ndarray, compare: bool) -> np.ndarray:
    """[channels, T] bits -> RGB: 0/1, WRONG where `bits` differs from the target, UNSCORED off the mask."""
    codes = bits.astype(int).copy()
    if compare:
        codes[bits != target] = WRONG
    codes[:, mask <= 0] = UNSCORED
    return SAMPLE_COLOURS[codes]


def _stack_blocks(blocks: list[np.ndarray], gap: int = 1) -> tuple[np.ndarray, list[float], list[float]]:
    """Blocks [rows_i, T, ...] one above the other, `gap` blank (white or NaN) rows apart.

    Returns the image, each block's centre row (for a tick label) and the edges of the gaps (for separator lines).
    """
    pieces, centres, edges, row = [], [], [], 0
    for i, block in enumerate(blocks):
        if i:
            blank = np.ones((gap, *block.shape[1:])) if block.ndim == 3 else np.full((gap, block.shape[1]), np.nan)
            pieces.append(blank)
            edges += [row - 0.5, row + gap - 0.5]
            row += gap
        pieces.append(block)
        centres.append(row + (block.shape[0] - 1) / 2)
        row += block.shape[0]
    return np.concatenate(pieces, axis=0), centres, edges


def _time_axis(ax, length: int, bottom: bool) -> None:
    """Integer time steps; the rows of a column share one length, so only the bottom row is labelled."""
    ax.set_xlim(-0.5, length - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8, length=2, labelbottom=bottom)
    if bottom:
        ax.set_xlabel("time step", fontsize=8)


def _label_panel(ax, task: TaskInfo, arrays, name: str, length: int, row: int, rows: int) -> None:
    """A sample panel's time axis, and its column title (the size shown) on the top row."""
    _time_axis(ax, length, row == rows - 1)
    if row == 0:
        size = _size_text(task, arrays.get(f"{name}/size"))
        ax.set_title(("largest training size" if name == "train_max" else "2× the largest") + f" ({size})",
                     fontsize=9)


def _label_row(ax, data: SuiteData, model: str, seed) -> None:
    ax.set_ylabel(f"{wrap_label(model)}\nseed {seed}", fontsize=9, color=data.palette[model], fontweight="bold")


def figure_samples(data: SuiteData, task: TaskInfo, samples, sink: FigureSink) -> dict[str, str] | None:
    """Per model (rows) and per size (largest training size, 2x it): input / target / thresholded output, stacked."""
    names = [n for n in ("train_max", "double") if any(f"{n}/inputs" in arrays for _, _, arrays in samples)]
    if not samples or not names:
        return None
    lengths = [max(a[f"{n}/inputs"].shape[0] for _, _, a in samples if f"{n}/inputs" in a) for n in names]
    channels = max(a[f"{n}/inputs"].shape[1] + 2 * a[f"{n}/targets"].shape[1]
                   for _, _, a in samples for n in names if f"{n}/inputs" in a)
    row_height = min(2.6, max(1.1, 0.09 * channels + 0.5))
    fig = _new_figure(FIG_WIDTH, 0.5 + row_height * len(samples))
    axes = fig.subplots(len(samples), len(names), squeeze=False, gridspec_kw={"width_ratios": lengths})
    for row, (model, seed, arrays) in enumerate(samples):
        for col, name in enumerate(names):
            ax = axes[row, col]
            ax.grid(False)
            if f"{name}/inputs" not in arrays:
                ax.set_visible(False)
                continue
            targets = arrays[f"{name}/targets"].T                 # [channels, T]
            mask = arrays[f"{name}/mask"]
            predicted = (arrays[f"{name}/outputs"].T > 0.5).astype(float)
            image, centres, edges = _stack_blocks([_input_rgb(arrays[f"{name}/inputs"].T),
                                                   _bit_codes(targets, targets, mask, False),
                                                   _bit_codes(predicted, targets, mask, True)])
            ax.imshow(image, aspect="auto", interpolation="nearest")
            for edge in edges:
                ax.axhline(edge, color="#888888", lw=0.8)
            ax.set_yticks(centres, ["input", "target", "output"] if col == 0 else [])
            _label_panel(ax, task, arrays, name, lengths[col], row, len(samples))
        _label_row(axes[row, 0], data, model, seed)
    return sink.save(fig, f"samples_{slug(task.label)}")


def _stack_heads(weights: np.ndarray) -> np.ndarray:
    """[T, heads, N] (or [T, N]) -> [heads*N, T], head 1 at the bottom, the others above it."""
    if weights.ndim == 2:
        weights = weights[:, None, :]
    return np.concatenate([weights[:, h, :].T for h in range(weights.shape[1])], axis=0)


def _memory_row_height(arrays: dict[str, np.ndarray]) -> float:
    """Inches for one model's row: its blocks (2 for the NTM: read, write; 3 for the DNC: and usage), taller for a
    large memory so that a 128-location block keeps about one pixel per location."""
    blocks = sum(any(key.endswith(f"/trace/{k}") for key in arrays) for k in MEMORY_TRACES)
    rows = max((_stack_heads(v).shape[0] for key, v in arrays.items() if key.endswith("/trace/read_weights")),
               default=1)
    return max(1.2, 0.55 * blocks * min(2.0, max(1.0, rows / 64)))


def figure_memory(data: SuiteData, task: TaskInfo, samples, sink: FigureSink) -> dict[str, str] | None:
    """Per memory model (rows) and size (columns): read, write and (DNC) usage weightings, location against time."""
    models = [(model, seed, arrays) for model, seed, arrays in samples
              if any(f"{n}/trace/read_weights" in arrays for n in ("train_max", "double"))]
    if not models:
        return None
    names = [n for n in ("train_max", "double") if any(f"{n}/trace/read_weights" in a for _, _, a in models)]
    lengths = [max(a[f"{n}/trace/read_weights"].shape[0] for _, _, a in models if f"{n}/trace/read_weights" in a)
               for n in names]
    heights = [_memory_row_height(arrays) for _, _, arrays in models]
    fig = _new_figure(FIG_WIDTH, 0.5 + sum(heights))
    axes = fig.subplots(len(models), len(names), squeeze=False,
                        gridspec_kw={"width_ratios": lengths, "height_ratios": heights})
    image = None
    for row, (model, seed, arrays) in enumerate(models):
        for col, name in enumerate(names):
            ax = axes[row, col]
            ax.grid(False)
            keys = [k for k in MEMORY_TRACES if f"{name}/trace/{k}" in arrays]
            if not keys:
                ax.set_visible(False)
                continue
            stacked = [_stack_heads(arrays[f"{name}/trace/{k}"]) for k in keys]
            gap = max(1, max(s.shape[0] for s in stacked) // 16)
            # blocks read, write, usage from top to bottom; rows inside a block are locations 0..N-1 downwards
            matrix, centres, _ = _stack_blocks(stacked, gap=gap)
            # a square-root scale on a fixed 0..1 range: a sharp focus stays bright and a diffuse spread stays visible
            image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap=MEMORY_CMAP,
                              norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
            ax.set_yticks(centres, [MEMORY_TRACES[k] for k in keys])
            _label_panel(ax, task, arrays, name, lengths[col], row, len(models))
        _label_row(axes[row, 0], data, model, seed)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="weight / usage", shrink=0.8, aspect=30)
    return sink.save(fig, f"memory_{slug(task.label)}")


# ---- tables -----------------------------------------------------------------------------------------------------

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


def _median_cell(summary: stats.CensoredMedian, scale: float, budget_text: str) -> Cell:
    """A censored median (in steps or sequences: `scale`) with its CI on a second line."""
    if summary.n == 0:
        return Cell("—", title="no finished runs")
    if summary.median is None:
        return Cell("> budget", sub=budget_text, cls="muted", value=f"> {fmt(summary.budget * scale)}",
                    title=f"{summary.n_converged} of {summary.n} seeds converged; the median needs at least half")
    prefix = "≥ " if summary.median_is_bound else ""
    text = prefix + fmt(summary.median * scale)
    title = ("exactly half the seeds converged, so the median rests on a censored seed and is a lower bound"
             if summary.median_is_bound else "")
    if summary.ci is None:
        sub = summary.reason
    else:
        high = ("≥ " if summary.ci_high_censored else "") + fmt(summary.ci[1] * scale)
        sub = f"[{fmt(summary.ci[0] * scale)}, {high}]"
    extra = {"is_lower_bound": summary.median_is_bound,
             "ci_low": None if summary.ci is None else summary.ci[0] * scale,
             "ci_high": None if summary.ci is None else summary.ci[1] * scale,
             "ci_high_is_budget": summary.ci_high_censored}
    return Cell(text, sub=sub, title=title, sort=summary.median * scale, value=summary.median * scale, extra=extra)


def _final_metric(data: SuiteData, task: TaskInfo, runs: pd.DataFrame) -> pd.Series:
    """Each run's final error (`TaskInfo.error`) on the evaluation set: from runs.csv's ``final_<metric>`` column,
    or for a gap to a reference (N-Grams) from the run's last evaluation row; wrong bits/seq when neither is
    there."""
    error = task.error
    if error.reference is None:
        column = f"final_{error.metric}"
        return runs[column if column in runs.columns else "final_wrong_bits_per_seq"]
    last = data.curves[data.curves["run_id"].isin(runs["run_id"])].sort_values("step").groupby("run_id").last()
    if error.metric not in last.columns or error.reference not in last.columns:
        return runs["final_wrong_bits_per_seq"]
    gap = last[error.metric] - last[error.reference]
    return runs["run_id"].map(gap)


def _generalization_medians(data: SuiteData, task: TaskInfo) -> tuple[list[tuple[str, tuple]], pd.Series]:
    frame = _generalization_frame(data, task)
    if frame.empty:
        return [], pd.Series(dtype=float)
    return _ordered_sizes(frame, task), frame.groupby(["model", "size"])["metric"].median()


# ---- the summary table ----

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
        self.usable = _usable(self.runs)

    @cached_property
    def budget_steps(self) -> int:
        return max([self.data.budget(r)[0] for r in self.runs["run_id"]] or [0])

    @cached_property
    def batch(self) -> int:
        return max([self.data.budget(r)[1] for r in self.runs["run_id"]] or [1])

    @cached_property
    def steps_to_converge(self) -> stats.CensoredMedian | None:
        """The censored median of steps to converge; None when the task has no threshold."""
        if not self.task.has_threshold:
            return None
        usable = self.usable
        return stats.censored_median(
            [s if c else None for s, c in zip(usable["converge_step"], usable["converged"])], self.budget_steps)

    @property
    def badges(self) -> list[tuple[str, str]]:
        counts = self.runs["status"].value_counts()
        badges = [(f"{counts[s]} {s}", "bad") for s in ("diverged", "failed") if counts.get(s)]
        if len(self.running):
            badges.append((f"{len(self.running)} unfinished", "running"))
        return badges


def _converged_cell(n_converged: int | None, source: ModelRuns) -> Cell:
    if n_converged is None:
        return Cell("no threshold", cls="muted", badges=source.badges,
                    title="this task has no convergence threshold, so no run is 'converged'")
    n_runs = len(source.runs)
    return Cell(f"{n_converged}/{n_runs}", badges=source.badges, sort=n_converged / max(1, n_runs),
                title=f"seeds converged ({source.task.rule}) / seeds run", value=n_converged)


def _steps_cell(summary: stats.CensoredMedian | None, source: ModelRuns) -> Cell:
    if summary is None:
        return Cell("no threshold", cls="muted")
    return _median_cell(summary, 1.0, f"budget {fmt(source.budget_steps)} steps")


def _sequences_cell(summary: stats.CensoredMedian | None, source: ModelRuns) -> Cell:
    if summary is None:
        return Cell("no threshold", cls="muted")
    return _median_cell(summary, float(source.batch), f"budget {fmt(source.budget_steps * source.batch)} seq")


def _final_cell(final: pd.Series, source: ModelRuns) -> Cell:
    return Cell(fmt(final.median()) if len(final) else "—",
                sub=f"[{fmt(final.min())}–{fmt(final.max())}]" if len(final) > 1 else "",
                title="median over seeds [min–max]", sort=float(final.median()) if len(final) else None,
                value=float(final.median()) if len(final) else None,
                extra={"min": float(final.min()) if len(final) else None,
                       "max": float(final.max()) if len(final) else None})


def _solved_2x_cell(solved: pd.Series | None, source: ModelRuns) -> Cell:
    """Seeds whose final model solves the smallest test size at twice the training range."""
    task, n_runs = source.task, len(source.runs)
    where = "" if task.test_size_2x is None else ",".join(
        f"{p}={v}" for p, v in zip(task.size_parts, task.test_size_2x))
    if task.solved is None:
        return Cell("no rule", cls="muted", title="this task has no notion of a solved size")
    if not where or solved is None:
        return Cell("—", cls="muted", title="no test size is at least twice the training range")
    k = int(solved.sum())
    return Cell(f"{k}/{n_runs}", sub=f"at {where}", sort=k / max(1, n_runs), value=k,
                extra={"size": where},
                title=f"seeds whose final model meets the solved rule ({task.solved.text()}) at {where}")


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
        return Cell("—", href=f"#gen-{slug(task.label)}")
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
    return Cell(parts[-1], sub=sub, href=f"#gen-{slug(task.label)}",
                title="median over seeds; click for every test size", sort=float(largest[2]),
                value=float(largest[2]), extra=every_size)


def _nonfinite_cell(nonfinite: pd.Series, source: ModelRuns) -> Cell:
    return Cell(fmt(nonfinite.sum()), cls="bad" if nonfinite.sum() > 0 else "",
                title=f"non-finite (skipped) updates, summed over seeds; max per seed {fmt(nonfinite.max())}",
                value=int(nonfinite.sum()))


def _params_cell(params: pd.Series, source: ModelRuns) -> Cell:
    return Cell(fmt(params.iloc[0]) if len(params) else "—", value=int(params.iloc[0]) if len(params) else None)


def _wall_cell(wall: pd.Series, source: ModelRuns) -> Cell:
    return Cell(fmt_duration(float(wall.median())) if len(wall) else "—",
                title="median over seeds of a run's wall time (training, evaluation, generalisation)",
                value=round(float(wall.median()), 1) if len(wall) else None)


def _throughput_cell(seq_s: pd.Series, source: ModelRuns) -> Cell:
    return Cell(fmt(seq_s.median()) if len(seq_s) else "—", title="median over seeds of training throughput",
                sort=float(seq_s.median()) if len(seq_s) else None,
                value=float(seq_s.median()) if len(seq_s) else None)


#: the summary table's columns. The HTML page, summary.csv and summary.md are all built from the same cells, so the
#: three can never disagree. Header placeholders: {metric} (the task's error), {ci} (the CI level), {solved} (the
#: task's solved rule).
SUMMARY_COLUMNS = [
    Column("model", "model", get=lambda s: s.model,
           show=lambda model, s: Cell(model, swatch=s.data.palette[model], value=model)),
    Column("converged", "seeds converged", better="higher", show=_converged_cell,
           get=lambda s: int(s.usable["converged"].sum()) if s.task.has_threshold else None),
    Column("median_steps", "median steps", "[{ci}% CI]", get=lambda s: s.steps_to_converge, show=_steps_cell,
           better="lower"),
    Column("median_sequences", "median sequences", "[{ci}% CI]", get=lambda s: s.steps_to_converge,
           show=_sequences_cell, better="lower"),
    Column("final_error", "final {metric}", "median [min–max]", show=_final_cell, better="lower",
           get=lambda s: _final_metric(s.data, s.task, s.usable).dropna()),
    Column("generalization", "generalisation {metric}", "median at the largest test size; other sizes below",
           get=_generalization_values, show=_generalization_cell, better="lower"),
    Column("solved_2x", "seeds solving 2× training size", "{solved}", show=_solved_2x_cell, better="higher",
           get=lambda s: s.usable["solved_2x"].map(_truthy) if "solved_2x" in s.usable.columns else None),
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
    summary = table(SUMMARY_COLUMNS, sources, metric=task.metric_label, ci=int(stats.CONFIDENCE * 100),
                    solved="no solved rule" if task.solved is None else task.solved.text())
    for row, (_, source) in zip(summary["rows"], sources):
        row["seeds"] = len(source.runs)
    return summary


# ---- the pairwise table ----

@dataclass
class Comparison:
    """The source of one pairwise row: models `a` and `b` on one task, compared by `stats.compare`."""

    a: str
    b: str
    result: stats.MedianRatio
    palette: dict[str, str]


def _model_cell(model: str, source: Comparison) -> Cell:
    return Cell(model, swatch=source.palette.get(model, ""), cls="name")


def _ratio_cell(result: stats.MedianRatio, source: Comparison) -> Cell:
    if result.ratio is None:
        return Cell("n/a", cls="muted", title=result.note)
    sub = (f"[{fmt(result.ci[0])}, {fmt(result.ci[1])}]" if result.ci else
           f"n/a (CI needs ≥ {stats.MIN_SEEDS_FOR_CI} seeds)")
    return Cell(fmt(result.ratio), sub=sub)


def _lower_median(source: Comparison) -> str:
    ratio = source.result.ratio
    if ratio is None or not math.isfinite(ratio) or ratio == 1:
        return "—"
    return source.a if ratio < 1 else source.b


def _p_value_cell(p_value: float | None, source: Comparison) -> Cell:
    """The Mann–Whitney p-value, shaded when below 0.05 (a test per row, not a best value of the column)."""
    if p_value is None:
        return Cell("n/a", cls="muted")
    return Cell(fmt(p_value), cls="best" if p_value < 0.05 else "")


PAIRWISE_COLUMNS = [
    Column("a", "A", get=lambda c: c.a, show=_model_cell),
    Column("b", "B", get=lambda c: c.b, show=_model_cell, cls="name"),
    Column("ratio", Markup("ratio&nbsp;A&nbsp;/&nbsp;B"), "[{ci}% CI]", get=lambda c: c.result, show=_ratio_cell),
    Column("lower", "lower median", get=_lower_median, show=_model_cell, cls="name"),
    Column("p_value", Markup("Mann–Whitney&nbsp;p"), get=lambda c: c.result.p_value, show=_p_value_cell),
    Column("notes", "notes", cls="name", get=lambda c: c.result,
           show=lambda result, c: Cell(("paired by seed" if result.paired else "unpaired")
                                       + (f"; {result.note}" if result.note else ""), cls="muted notes")),
]


def pairwise_table(data: SuiteData, task: TaskInfo) -> dict[str, Any]:
    """Each pair of the task's models: ratio of median steps to converge (or of final error) with CI and p."""
    models = data.models_of(task.label)
    samples = {}
    for model in models:
        usable = _usable(data.runs_of(task.label, model)).sort_values("seed")
        budget = max([data.budget(r)[0] for r in usable["run_id"]] or [0])
        if task.has_threshold:
            values = [s if c else None for s, c in zip(usable["converge_step"], usable["converged"])]
        else:
            values = list(_final_metric(data, task, usable).to_numpy(dtype=float))
            budget = math.inf
        samples[model] = (list(usable["seed"]), values, budget)
    sources = []
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            seeds_a, values_a, budget_a = samples[a]
            seeds_b, values_b, budget_b = samples[b]
            if not task.has_threshold:
                values_a = [v for v in values_a if math.isfinite(v)]
                values_b = [v for v in values_b if math.isfinite(v)]
            result = stats.compare(values_a, values_b, budget_a, budget_b, paired=seeds_a == seeds_b)
            sources.append((f"{a} / {b}", Comparison(a, b, result, data.palette)))
    return table(PAIRWISE_COLUMNS, sources, ci=int(stats.CONFIDENCE * 100))


# ---- the generalisation table ----

def _quartiles_cell(values: pd.Series, source: Any) -> Cell:
    if not len(values):
        return Cell("—")
    q1, median, q3 = stats.quartiles(values)
    return Cell(fmt(median), sub=f"IQR {fmt(q1)}–{fmt(q3)}" if len(values) > 1 else "",
                title="seeds: " + ", ".join(fmt(v) for v in values), sort=median)


def generalization_table(data: SuiteData, task: TaskInfo) -> dict[str, Any] | None:
    """The task's error at each test size, one row per model: the median over seeds and its IQR; the lowest
    median of each size is shaded."""
    frame = _generalization_frame(data, task)
    if frame.empty:
        return None
    columns = [Column("model", "model", get=lambda source: source[0],
                      show=lambda model, source: Cell(model, swatch=data.palette[model]))]
    reference = task.error.reference
    for label, size in _ordered_sizes(frame, task):
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


# ---- header, appendix, page -------------------------------------------------------------------------------------

def header_facts(data: SuiteData) -> dict[str, Any]:
    provenance = [s.get("provenance") or {} for s in data.specs.values()]

    def distinct(key: str) -> list[str]:
        return sorted({str(p[key]) for p in provenance if p.get(key) is not None})

    commits = []
    for commit in distinct("git_commit"):
        dirty = any(p.get("git_dirty") for p in provenance if p.get("git_commit") == commit)
        commits.append(commit[:12] + (" (uncommitted changes)" if dirty else ""))
    devices = sorted(set(distinct("device_name")) | {str(d) for d in data.runs.get("device", pd.Series()).dropna()})
    versions = {key: ", ".join(distinct(key)) for key in ("python", "torch", "numpy", "pandas") if distinct(key)}
    rendering = {"matplotlib": matplotlib.__version__, "seaborn": sns.__version__, "scipy": scipy.__version__,
                 "jinja2": jinja2.__version__}
    finished = data.runs[data.runs["status"] != RUNNING]
    counts = finished["status"].value_counts().to_dict()
    expected = len(data.manifest.get("run_ids", []))
    runs_csv = data.out_dir / "runs.csv"
    return {
        "name": data.manifest.get("name", data.out_dir.name),
        "description": data.manifest.get("description", ""),
        "rendered": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "collected": (datetime.fromtimestamp(runs_csv.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
                      if runs_csv.exists() else "—"),
        "commits": commits or ["unknown"],
        "devices": devices or ["unknown"],
        "versions": versions,
        "rendering": rendering,
        "n_runs": len(finished),
        "expected": expected,
        "unfinished": unfinished_runs(data),
        "not_started": not_started(data),
        "status_counts": [(s, counts[s]) for s in ("done", "diverged", "failed") if counts.get(s)],
        "wall": fmt_duration(float(data.runs["wall_s"].sum())) if len(data.runs) else "—",
        "seeds": data.manifest.get("seeds", []),
        "steps": data.manifest.get("steps"),
        "batch_size": data.manifest.get("batch_size"),
    }


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


def build_context(data: SuiteData, sink: FigureSink) -> dict[str, Any]:
    with matplotlib.rc_context(STYLE):
        sections = []
        for task in data.tasks.values():
            samples = _sample_runs(data, task)
            sections.append({
                "task": task,
                "anchor": slug(task.label),
                "summary": summary_table(data, task),
                "pairwise": pairwise_table(data, task),
                "curves": figure_curves(data, task, sink),
                "generalization": figure_generalization(data, task, sink),
                "generalization_table": generalization_table(data, task),
                "grid": _grid_shape([s for _, s in _ordered_sizes(_generalization_frame(data, task), task)])
                if not _generalization_frame(data, task).empty else None,
                "samples": figure_samples(data, task, samples, sink),
                "sample_seeds": [(m, s) for m, s, _ in samples],
                "memory": figure_memory(data, task, samples, sink),
                "train_range": ", ".join(f"{p} {lo}–{hi}" for p, (lo, hi) in task.train_sizes.items()),
                "threshold_line": task.threshold(),
            })
        convergence = figure_convergence(data, sink)
    no_threshold = [t.label for t in data.tasks.values() if not t.has_threshold]
    _, never_converged = convergence_tasks(data)
    return {
        "header": header_facts(data),
        "problems": problems(data),
        "sections": sections,
        "convergence": convergence,
        "no_threshold": no_threshold,
        "never_converged": never_converged,
        "models": [(m, data.palette[m]) for m in data.models],
        "runs_table": runs_table(data),
        "yaml": yaml.safe_dump(data.manifest.get("resolved", {}), sort_keys=False, allow_unicode=True,
                               default_flow_style=None, width=110),
        "csvs": [name for name in CSV_FILES if (data.out_dir / name).exists()] + list(SUMMARY_FILES),
        "log_floor": LOG_FLOOR,
        "min_seeds": stats.MIN_SEEDS_FOR_CI,
        "confidence": int(stats.CONFIDENCE * 100),
    }


# ---- exported summaries -----------------------------------------------------------------------------------------

def summary_frame(sections: list[dict[str, Any]]) -> pd.DataFrame:
    """summary.csv: one row per task x model, the raw values behind the HTML summary table's cells.

    A cell's value goes in the column named after its key and each of its extras in ``key_extra`` (for the
    generalisation error, one ``generalization_<size>`` column per test size).
    """
    records = []
    for section in sections:
        for row in section["summary"]["rows"]:
            record: dict[str, Any] = {"task": section["task"].label, "model": row["key"], "seeds": row["seeds"]}
            for column in SUMMARY_COLUMNS[1:]:
                cell = row["by_key"][column.key]
                record[column.key] = cell.value
                record.update({f"{column.key}_{name}": value for name, value in cell.extra.items()})
            records.append(record)
    return pd.DataFrame(records)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", "; ")


def summary_markdown(sections: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """summary.md: the HTML summary tables as GitHub Markdown, one per task (each cell: text, then its second line
    in parentheses)."""
    lines = [f"# {header['name']}: summary", ""]
    if header.get("description"):
        lines += [header["description"], ""]
    unfinished = (f"; {len(header['unfinished'])} unfinished (still running, not counted)"
                  if header.get("unfinished") else "")
    lines += [f"Commit(s) {', '.join(header['commits'])}; device(s) {', '.join(header['devices'])}; "
              f"{header['n_runs']} runs{unfinished}.", ""]
    for section in sections:
        task = section["task"]
        rule = f"converged when {task.rule}" if task.has_threshold else "no convergence threshold"
        train = f"; trained on {section['train_range']}" if section["train_range"] else ""
        lines += [f"## {task.label}", "", f"{rule}{train}.", ""]
        heads = [h["text"] + (f" ({h['sub']})" if h["sub"] else "") for h in section["summary"]["headers"]]
        lines.append("| " + " | ".join(_md_escape(h) for h in heads) + " |")
        lines.append("|" + "|".join("---" for _ in heads) + "|")
        for row in section["summary"]["rows"]:
            texts = []
            for cell in row["cells"]:
                text = cell.text + "".join(f" [{badge}]" for badge, _ in cell.badges)
                texts.append(_md_escape(text + (f" ({cell.sub})" if cell.sub else "")))
            lines.append("| " + " | ".join(texts) + " |")
        lines.append("")
    return "\n".join(lines)


def write_report(out_dir: Path, collect_runs: bool = True) -> Path:
    """Render out_dir/index.html (self-contained) and out_dir/figures/*.png from the suite's files; returns the path.

    `collect_runs` first rebuilds the suite CSVs from its run folders, unfinished runs included (a suite that is still
    running, or was interrupted); off, the CSVs are read as they are."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    claim_output_folder(out_dir)  # refuses a folder of the user's own files before anything is written
    if collect_runs and (out_dir / "runs").is_dir() and (out_dir / "suite.json").is_file():
        collect(out_dir, unfinished=True)
    data = load_suite_data(out_dir)
    sink = FigureSink(out_dir)
    context = build_context(data, sink)
    sink.remove_stale()
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["fmt"] = fmt
    context["render_s"] = f"{time.perf_counter() - started:.1f}"
    page = environment.get_template("report.html").render(**context)
    csv_name, md_name = SUMMARY_FILES
    atomic_write_csv(out_dir / csv_name, summary_frame(context["sections"]))
    atomic_write_text(out_dir / md_name, summary_markdown(context["sections"], context["header"]))
    path = out_dir / "index.html"
    atomic_write_text(path, page)
    return path
