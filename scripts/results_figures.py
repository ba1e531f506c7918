"""Redraw the figures of docs/RESULTS.md (docs/results/*.png) from the bundles committed under results/, so that a
figure never shows older runs than the tables beside it (which `scripts/verdicts.py` computes from the same bundles).

    python scripts/results_figures.py [NAME ...]     redraw these figures (default: all), e.g. init_study_km.png

Each figure is one panel of the report that `ntm-bench` draws for a bundle (a copy of it, rendered in a temporary
folder: `write_report`) or for several bundles on the seeds they share (`write_comparison`, as `ntm-bench compare
--seeds`). `quick_memory_copy.png` is not here: bundles keep no samples, so it comes from the report of a `make
bench` folder (`reports/quick/figures/memory_copy.png`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report.combine import parse_seeds  # noqa: E402
from bench.report.page import write_comparison, write_report  # noqa: E402

RESULTS = REPO / "results"
FIGURES = REPO / "docs" / "results"


@dataclass(frozen=True)
class Figure:
    name: str              # the file under docs/results/
    bundles: tuple[str, ...]  # under results/; several are one comparison
    panel: str             # the report's figure (under its figures/)
    seeds: str | None = None  # only these seeds (a comparison's shared seeds)


#: the figure of docs/results/ that no bundle can draw (see above)
FROM_A_RUN_FOLDER = ("quick_memory_copy.png",)
ALL = (
    Figure("quick_generalization_copy.png", ("quick",), "generalization_copy.png"),
    Figure("modern_small_generalization_copy.png", ("modern_baselines_small",), "generalization_copy.png"),
    Figure("paper_copy_generalization.png", ("paper_copy_fresh", "paper_copy_fresh_lstm"), "generalization_copy.png"),
    Figure("paper_copy_km.png", ("paper_copy_fresh", "paper_copy_fresh_lstm"), "km_copy.png"),
    Figure("init_study_km.png", ("init_study",), "km_copy.png"),
    Figure("baselines_copy_km.png", ("paper_copy_fresh", "paper_baselines_copy"), "km_copy.png", "101-105"),
    Figure("baselines_recall_km.png", ("paper_recall_fresh", "paper_baselines_recall"),
           "km_associative_recall.png", "101-105"),
)


def draw(figure: Figure, scratch: Path, into: Path = FIGURES) -> Path:
    """Render the figure's report in `scratch` and copy its panel into `into` (docs/results/); returns the file
    written."""
    out = scratch / figure.name.removesuffix(".png")
    if len(figure.bundles) == 1 and figure.seeds is None:
        shutil.copytree(RESULTS / figure.bundles[0], out)
        write_report(out, collect_runs=False)
    else:
        seeds = parse_seeds(figure.seeds, figure.name) if figure.seeds else None
        write_comparison([(RESULTS / name, "") for name in figure.bundles], out, seeds)
    panel = out / "figures" / figure.panel
    if not panel.is_file():
        raise SystemExit(f"{figure.name}: the report of {' + '.join(figure.bundles)} drew no {figure.panel}")
    target = into / figure.name
    shutil.copyfile(panel, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="figures to redraw (default: all)")
    args = parser.parse_args(argv)
    known = {figure.name: figure for figure in ALL}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        print(f"error: no figure {unknown[0]!r}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.names or list(known):
            print(f"{draw(known[name], Path(scratch)).relative_to(REPO)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
