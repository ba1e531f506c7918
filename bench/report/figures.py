"""The report's suite-level figures: the scorecard, learning curves, steps to converge, the fraction of seeds
converged (Kaplan–Meier), and generalisation by test size.

A figure is a function `figure_x(data, task, sink)` that draws on a `matplotlib.figure.Figure` with the Agg canvas,
never through pyplot (so rendering leaves no global figure state behind, and does not switch the backend of a
notebook that calls it), hands it to `FigureSink.save`, and returns None when the suite has nothing to show.
"""

from __future__ import annotations

import base64
import io
import math
import re
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.ticker import EngFormatter, FuncFormatter, LogFormatter, MaxNLocator

from bench import stats, survival
from bench.folders import remove_file
from bench.report.data import (
    SuiteData,
    TaskInfo,
    convergence_sample,
    convergence_tasks,
    error_values,
    fmt,
    generalization_frame,
    grid_shape,
    ordered_sizes,
)
from bench.report.scorecard import Scorecard
from bench.results import (
    RUNNING,
    atomic_write_bytes,
    read_figure_manifest,
    write_figure_manifest,
)
from tasks.base import RULE_SIGNS

DPI = 100
FIG_WIDTH = 11.0            # inches: 1100 px at DPI 100, inside the page's 1200 px column
LOG_FLOOR = 1e-3            # learning curves: values below this (exact zeros included) are drawn at it
LABEL_WIDTH = 14            # characters per line of a model label on a categorical axis
# seaborn's style for every figure, applied in a context so the caller's matplotlib settings are left alone
STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85),
         "figure.dpi": DPI, "savefig.dpi": DPI, "axes.titlesize": 10, "legend.fontsize": 9}


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


def png_bytes(fig: Figure) -> bytes:
    """`fig` as a PNG, every text in it drawn as written: a `$` in a label never starts matplotlib's mathtext, where
    an unknown command such as ``$\\x$`` would fail the whole report. The figure is cleared: no pyplot registry holds
    it, so this frees it."""
    FigureCanvasAgg(fig)
    for text in fig.findobj(Text):
        text.set_parse_math(False)
    buffer = io.BytesIO()
    with matplotlib.rc_context({"text.parse_math": False}):  # tick labels are made as the figure is drawn
        fig.savefig(buffer, format="png", dpi=DPI)
    fig.clear()
    return buffer.getvalue()


class FigureSink:
    """Saves each figure as figures/<name>.png and keeps its bytes for embedding in the page."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir / "figures"
        self.written: dict[str, str] = {}   # file name -> data URI
        #: every figure file the harness has written here and not yet deleted (figures/.written)
        self.owned: set[str] = set(read_figure_manifest(self.dir))

    def save(self, fig: Figure, name: str) -> dict[str, str]:
        data = png_bytes(fig)
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
                remove_file(path)  # a symbolic link is refused, never followed (bench.folders)
        self.owned = set(self.written)
        write_figure_manifest(self.dir, sorted(self.owned))


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _model_legend(fig: Figure, data: SuiteData, models: list[str], extra: list | None = None) -> None:
    handles = [matplotlib.lines.Line2D([], [], color=data.palette[m], lw=2.5, label=m) for m in models]
    handles += extra or []
    longest = max((len(h.get_label()) for h in handles), default=10)
    ncols = max(1, min(len(handles), int(120 // (longest + 6))))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False)


def _seed_matrix(data: SuiteData, task: TaskInfo, model: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """sequences_seen x seed of the task's metric. A run that stopped early at convergence keeps its last value."""
    frame = data.curves[(data.curves["task"] == task.label) & (data.curves["model"] == model)].copy()
    if frame.empty:
        return pd.DataFrame(), {}
    frame["metric"] = error_values(frame, task)
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
    fig = new_figure(FIG_WIDTH, 4.0)
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
    return sink.save(fig, f"curves_{task.slug}")


class _quiet(warnings.catch_warnings):
    """Silence numpy's all-NaN-slice warnings where a step has no seed yet."""

    def __enter__(self):
        super().__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)


def figure_convergence(data: SuiteData, sink: FigureSink) -> dict[str, str] | None:
    """Steps to converge per model, one panel per task that has a converged seed (an all-censored panel is empty)."""
    tasks, _ = convergence_tasks(data)
    if not tasks:
        return None
    ncols = min(4, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    fig = new_figure(FIG_WIDTH, 3.0 * nrows + 0.6)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    rng = np.random.default_rng(0)
    for ax, task in zip(axes, tasks):
        models = data.models_of(task.label)
        rows, budget_line = [], 0
        for model in models:
            sample = convergence_sample(data, task.label, model)
            budget_line = max(budget_line, sample.budget)
            rows += [{"model": model, "steps": step, "converged": converged}
                     for step, converged in zip(sample.steps, sample.converged)]
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
                                markeredgewidth=1.8, ms=8, label="not converged (censored where it stopped)"),
        matplotlib.lines.Line2D([], [], color="grey", ls="--", label="step budget")],
        loc="outside lower center", ncols=3, frameon=False)
    return sink.save(fig, "convergence")


def figure_km(data: SuiteData, task: TaskInfo, sink: FigureSink) -> dict[str, str] | None:
    """The fraction of seeds converged against sequences seen: the Kaplan–Meier estimate 1 − S(t), a step curve per
    model, with a tick where a seed was censored (stopped unconverged: at its own budget, or where it diverged)."""
    if not task.has_threshold:
        return None
    samples = {m: convergence_sample(data, task.label, m) for m in data.models_of(task.label)}
    samples = {m: s for m, s in samples.items() if s.seeds}
    if not samples:
        return None
    fig = new_figure(FIG_WIDTH * 0.75, 3.6)
    ax = fig.subplots()
    right = max(max(s.sequences) for s in samples.values())
    for model, sample in samples.items():
        durations, converged = sample.survival("sequences")
        times, fraction = survival.fraction_converged(durations, converged)
        colour = data.palette[model]
        xs, ys = np.append(times, right), np.append(fraction, fraction[-1])  # the last level runs to the right edge
        ax.step(xs, ys, where="post", color=colour, lw=2)
        censored = [t for t, c in zip(durations, converged) if not c]
        if censored:
            at = np.searchsorted(times, censored, side="right") - 1
            ax.plot(censored, fraction[at], ls="none", marker="|", ms=14, mew=2, color=colour)
    ax.set_xlim(0, right * 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("sequences seen")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_ylabel("fraction of seeds converged")
    ax.set_title(f"Kaplan–Meier: {task.label}")
    _model_legend(fig, data, list(samples), [Line2D([], [], ls="none", marker="|", ms=12, mew=2, color="grey",
                                                    label="censored seed (stopped unconverged)")])
    return sink.save(fig, f"km_{task.slug}")


def figure_generalization(data: SuiteData, task: TaskInfo, sink: FigureSink) -> dict[str, str] | None:
    frame = generalization_frame(data, task)
    if frame.empty or not task.size_parts:
        return None
    models = [m for m in data.models_of(task.label) if (frame["model"] == m).any()]
    sizes = ordered_sizes(frame, task)
    grid = grid_shape([s for _, s in sizes])
    medians = frame.groupby(["model", "size"])["metric"].median()
    if grid is not None:
        return _generalization_heatmaps(data, task, models, medians, sizes, grid, sink)
    fig = new_figure(FIG_WIDTH * 0.75, 3.6)
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
    return sink.save(fig, f"generalization_{task.slug}")


def _generalization_heatmaps(data, task, models, medians, sizes, grid, sink):
    xs, ys = grid
    ncols = min(4, len(models))
    nrows = math.ceil(len(models) / ncols)
    fig = new_figure(FIG_WIDTH if ncols > 2 else FIG_WIDTH * 0.7, 2.9 * nrows + 0.3)
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
    return sink.save(fig, f"generalization_{task.slug}")


SCORE_KINDS = (("learning", "learning"), ("generalization", "generalisation"))
SCORE_TASKS_PER_ROW = 3     # tasks side by side in the scorecard (two columns each); more tasks wrap to a new row


def figure_scorecard(data: SuiteData, card: Scorecard, sink: FigureSink) -> dict[str, str] | None:
    """The scorecard as a dot plot: a row per model, a column per task × {learning, generalisation}; each seed a
    small dot (spread vertically so that equal scores stay visible), the median over seeds a large diamond, and
    beside it k/n, the seeds at or above the threshold (dashed)."""
    tasks = [label for label in card.table["task"].drop_duplicates()]
    if not tasks:
        return None
    models = [m for m in data.models if (card.table["model"] == m).any()]
    rows = math.ceil(len(tasks) / SCORE_TASKS_PER_ROW)
    per_row = math.ceil(len(tasks) / rows)   # balanced: four tasks are two rows of two
    width = min(FIG_WIDTH, 2 * per_row * 1.75 + 1.6)   # one task's two panels need not fill the page
    fig = new_figure(width, rows * (0.42 * len(models) + 1.1) + 0.4)
    axes = np.atleast_2d(fig.subplots(rows, 2 * per_row, squeeze=False))
    for index, task in enumerate(tasks):
        for offset, (kind, word) in enumerate(SCORE_KINDS):
            ax = axes[index // per_row, 2 * (index % per_row) + offset]
            _score_axes(ax, data, card, task, models, kind)
            ax.set_title(f"{task}\n{word}", fontsize=9)
            if index % per_row or offset:
                ax.tick_params(axis="y", labelleft=False)
    for ax in axes.ravel()[2 * len(tasks):]:
        ax.set_visible(False)
    fig.legend(handles=[
        Line2D([], [], marker="o", ls="none", ms=4, color="grey", label="one seed"),
        Line2D([], [], marker="D", ls="none", ms=9, color="grey", markeredgecolor="black",
               label="median over seeds"),
        Line2D([], [], color="black", ls="--", lw=0.8, label=f"threshold {card.threshold:g}"),
        Line2D([], [], ls="none", label=f"k/n: seeds scoring ≥ {card.threshold:g}")],
        loc="outside lower center", ncols=4 if width >= 8 else 2, frameon=False, handlelength=1.5)
    return sink.save(fig, "scorecard")


def _score_axes(ax, data: SuiteData, card: Scorecard, task: str, models: list[str], kind: str) -> None:
    ax.set_xlim(-0.06, 1.06)
    ax.set_ylim(len(models) - 0.5, -0.5)   # the first model on top
    ax.set_yticks(range(len(models)), [wrap_label(m) for m in models])
    ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
    ax.axvline(card.threshold, color="black", ls="--", lw=0.8, zorder=1)
    ax.grid(axis="y", visible=False)
    shown = False
    for row, model in enumerate(models):
        scores = card.scores(task, model, kind)
        if not scores:
            continue
        shown = True
        colour = data.palette[model]
        spread = np.linspace(-0.22, 0.22, len(scores)) if len(scores) > 1 else np.zeros(1)
        ax.plot(float(np.median(scores)), row, marker="D", ms=11, color=colour, alpha=0.55,
                markeredgecolor="black", markeredgewidth=0.9, ls="none", zorder=2)
        ax.scatter(scores, row + spread, s=16, color=colour, edgecolors="white", linewidths=0.4, zorder=3)
        above = sum(s >= card.threshold for s in scores)
        ax.annotate(f"{above}/{len(scores)}", (1.0, row), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", ha="left", va="center", fontsize=8, annotation_clip=False)
    if not shown:
        what = "no test size beyond training" if kind == "generalization" else "nothing scored"
        ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="grey")
