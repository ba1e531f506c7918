"""Wrong bits at each output position of one test size, for every finished run of a suite: where along a long
sequence a model's copy starts to fail (Collier & Beel: an NTM trained on Copy with L 1-20 degrades after about
the 36th item at L = 40).

    python scripts/position_errors.py reports/paper_copy --task copy --size 40 [--sequences 192] [--out DIR]

Scores each run's final model (run folder checkpoint) on the suite's own generalisation sequences at that size
(the same evaluation seed), writes DIR/position_errors.csv (run, model, seed, whether it converged, position, wrong
bits) and DIR/position_errors.png (runs that never converged faint), and prints, per run, the first position whose
mean error exceeds 0.5 wrong bits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.evaluate import wrong_bits_by_position  # noqa: E402
from bench.results import atomic_write_csv, read_json  # noqa: E402
from bench.trained import load_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite_dir", type=Path)
    parser.add_argument("--task", default="copy")
    parser.add_argument("--size", default="40", help="the test size, e.g. 40 or 10,20 for a two-part size")
    parser.add_argument("--sequences", type=int, default=192)
    parser.add_argument("--threshold", type=float, default=0.5, help="report the first position above this")
    parser.add_argument("--out", type=Path, help="output folder (default: the suite folder)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    size = tuple(int(v) for v in args.size.split(","))
    rows = []
    for run_id in read_json(args.suite_dir / "suite.json")["run_ids"]:
        run_dir = args.suite_dir / "runs" / run_id
        if not (run_dir / "result.json").exists() or read_json(run_dir / "result.json").get("status") != "done":
            continue
        spec = read_json(run_dir / "spec.json")
        if spec["task"] != args.task:
            continue
        run = load_run(run_dir, require_finished=False)
        model, task = run.model, run.task
        key = json.dumps([spec["task_type"], spec["task_params"]], sort_keys=True, default=str)
        errors = wrong_bits_by_position(model, task, size, args.sequences, spec["eval_seed"], key)
        over = [i + 1 for i, e in enumerate(errors.tolist()) if e > args.threshold]
        print(f"{spec['model']:>16} seed {spec['seed']}: mean {float(errors.sum()):.2f} wrong bits/seq; "
              f"first position above {args.threshold:g}: {over[0] if over else 'none'}")
        converged = bool(read_json(run_dir / "result.json").get("converged"))
        rows += [{"run_id": run_id, "model": spec["model"], "seed": spec["seed"], "converged": converged,
                  "position": i + 1, "wrong_bits": float(e)} for i, e in enumerate(errors.tolist())]
    if not rows:
        print(f"no finished runs of task {args.task!r} in {args.suite_dir}", file=sys.stderr)
        return 1
    out = args.out or args.suite_dir
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    atomic_write_csv(out / "position_errors.csv", frame)
    plot(frame, size, out / "position_errors.png")
    print(f"wrote {out / 'position_errors.csv'} and {out / 'position_errors.png'}")
    return 0


def plot(frame: pd.DataFrame, size: tuple[int, ...], path: Path) -> None:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(frame["model"]))
    colours = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(7, 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, model in enumerate(models):
        for _, part in frame[frame["model"] == model].groupby("seed"):
            converged = bool(part["converged"].iloc[0]) if "converged" in part else True
            ax.plot(part["position"], part["wrong_bits"], color=colours(i % 10), lw=1.2 if converged else 0.8,
                    alpha=0.85 if converged else 0.25, ls="-" if converged else ":")
    if "converged" in frame and not frame["converged"].all():
        ax.set_title("dotted, faint: runs that never converged", fontsize=8, loc="left")
    ax.set_xlabel(f"output position (test size {','.join(map(str, size))})")
    ax.set_ylabel("mean wrong bits at the position")
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours(i % 10), lw=1.2) for i in range(len(models))]
    ax.legend(handles, models, frameon=False, fontsize=8)
    fig.savefig(path)


if __name__ == "__main__":
    raise SystemExit(main())
