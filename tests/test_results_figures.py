"""docs/RESULTS.md's figures: each is drawn from committed bundles by scripts/results_figures.py (or is the one
named exception), and each one the page shows exists."""

from __future__ import annotations

import importlib.util
import re
import sys

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("results_figures", REPO / "scripts" / "results_figures.py")
figures = sys.modules["results_figures"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(figures)


def test_every_figure_of_the_results_page_exists_and_has_a_recipe():
    page = (REPO / "docs" / "RESULTS.md").read_text()
    shown = set(re.findall(r"!\[[^\]]*\]\(results/([^)]+\.png)\)", page))
    on_disk = {path.name for path in figures.FIGURES.glob("*.png")}
    recipes = {figure.name for figure in figures.ALL}
    assert shown <= on_disk, f"docs/RESULTS.md shows missing figures: {sorted(shown - on_disk)}"
    assert on_disk <= shown, f"figures no page shows (remove them): {sorted(on_disk - shown)}"
    assert on_disk <= recipes | set(figures.FROM_A_RUN_FOLDER), \
        f"figures scripts/results_figures.py cannot redraw: {sorted(on_disk - recipes)}"
    for figure in figures.ALL:
        for bundle in figure.bundles:
            assert (figures.RESULTS / bundle / "runs.csv").is_file(), f"{figure.name}: results/{bundle} is missing"


def test_a_figure_is_redrawn_from_its_bundles(tmp_path):
    figure = next(f for f in figures.ALL if f.name == "baselines_recall_km.png")
    drawn = figures.draw(figure, tmp_path / "scratch", into=tmp_path)
    assert drawn == tmp_path / figure.name and drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures.main(["no_such.png"]) == 2
