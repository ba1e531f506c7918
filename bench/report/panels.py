"""The report's pictures of single sequences: sample outputs (input, target, thresholded output) and memory heat maps
(read, write and usage weightings against time).

They take a palette, a task's `TaskInfo` and a list of (model, seed, arrays) in samples.npz's layout, nothing of a
suite, so `ntm-bench evaluate --figures` draws a trained run's panels with the same code (`bench.trained`).
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib
import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.ticker import MaxNLocator

from bench.report.data import TaskInfo
from bench.report.figures import FIG_WIDTH, FigureSink, new_figure, wrap_label

# sample outputs: 0/1 bits, a wrong bit, and a step that is not scored
SAMPLE_COLOURS = np.array([[1.0, 1.0, 1.0], [0.13, 0.13, 0.13], [0.84, 0.15, 0.16], [0.85, 0.85, 0.85]])
WRONG, UNSCORED = 2, 3
INPUT_GREYS = matplotlib.colormaps["Greys"]
INPUT_DIVERGING = matplotlib.colormaps["PuOr_r"]
MEMORY_CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="white")
MEMORY_TRACES = {"read_weights": "read", "write_weights": "write", "usage": "usage"}


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


def column_title(task: TaskInfo, arrays, name: str) -> str:
    """The report's title of a column of samples: which of its two sizes it shows, and the size."""
    size = _size_text(task, arrays.get(f"{name}/size"))
    return ("largest training size" if name == "train_max" else "2× the largest") + f" ({size})"


def _label_panel(ax, title: str, length: int, row: int, rows: int) -> None:
    """A sample panel's time axis, and its column's title on the top row."""
    _time_axis(ax, length, row == rows - 1)
    if row == 0:
        ax.set_title(title, fontsize=9)


def _label_row(ax, palette: dict[str, str], model: str, seed) -> None:
    ax.set_ylabel(f"{wrap_label(model)}\nseed {seed}", fontsize=9, color=palette[model], fontweight="bold")


def figure_samples(palette: dict[str, str], task: TaskInfo, samples, sink: FigureSink,
                   title: Callable[[TaskInfo, dict, str], str] = column_title) -> dict[str, str] | None:
    """Per model (rows) and per size (largest training size, 2x it): input / target / thresholded output, stacked.

    `samples` is a list of (model, seed, arrays) with arrays keyed as in a run's samples.npz; `title` names a
    column from the task, a row's arrays and the size's key (``train_max`` or ``double``)."""
    names = [n for n in ("train_max", "double") if any(f"{n}/inputs" in arrays for _, _, arrays in samples)]
    if not samples or not names:
        return None
    lengths = [max(a[f"{n}/inputs"].shape[0] for _, _, a in samples if f"{n}/inputs" in a) for n in names]
    channels = max(a[f"{n}/inputs"].shape[1] + 2 * a[f"{n}/targets"].shape[1]
                   for _, _, a in samples for n in names if f"{n}/inputs" in a)
    row_height = min(2.6, max(1.1, 0.09 * channels + 0.5))
    fig = new_figure(FIG_WIDTH, 0.5 + row_height * len(samples))
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
            _label_panel(ax, title(task, arrays, name), lengths[col], row, len(samples))
        _label_row(axes[row, 0], palette, model, seed)
    return sink.save(fig, f"samples_{task.slug}")


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


def figure_memory(palette: dict[str, str], task: TaskInfo, samples, sink: FigureSink,
                  title: Callable[[TaskInfo, dict, str], str] = column_title) -> dict[str, str] | None:
    """Per memory model (rows) and size (columns): read, write and (DNC) usage weightings, location against time.
    The arguments are those of `figure_samples`."""
    models = [(model, seed, arrays) for model, seed, arrays in samples
              if any(f"{n}/trace/read_weights" in arrays for n in ("train_max", "double"))]
    if not models:
        return None
    names = [n for n in ("train_max", "double") if any(f"{n}/trace/read_weights" in a for _, _, a in models)]
    lengths = [max(a[f"{n}/trace/read_weights"].shape[0] for _, _, a in models if f"{n}/trace/read_weights" in a)
               for n in names]
    heights = [_memory_row_height(arrays) for _, _, arrays in models]
    fig = new_figure(FIG_WIDTH, 0.5 + sum(heights))
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
            _label_panel(ax, title(task, arrays, name), lengths[col], row, len(models))
        _label_row(axes[row, 0], palette, model, seed)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="weight / usage", shrink=0.8, aspect=30)
    return sink.save(fig, f"memory_{task.slug}")
