"""The suite report, split by who uses each part:

- `bench.report.data`: `load_suite_data` → `SuiteData`, `TaskInfo`, the censored convergence sample (no plotting);
- `bench.report.legacy`: task facts written by earlier versions of suite.json;
- `bench.report.tables`: `Cell`, `Column`, the summary, generalisation and runs tables, `summary_frame`;
- `bench.report.pairwise`: the pairwise table (log-rank, hazard ratio, Fisher, Mann–Whitney, Holm);
- `bench.report.scorecard`: learning and generalisation scores in [0, 1] per run, their median and fraction at or
  above the threshold per task × model (scorecard.csv; no plotting);
- `bench.report.figures`: the scorecard, learning curves, steps to converge, the Kaplan–Meier panel, generalisation
  (matplotlib and seaborn);
- `bench.report.panels`: sample outputs and memory heat maps of single sequences (also used by `bench.trained`);
- `bench.report.page`: the HTML page, summary.csv, summary.md, scorecard.csv and `write_report`.

`from bench.report import write_report` works as before; it imports the page (and with it the plotting libraries)
only when asked for, so importing `bench.report.data` or `bench.report.tables` stays light.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "write_report":
        from bench.report.page import write_report

        return write_report
    raise AttributeError(f"module 'bench.report' has no attribute {name!r}")
