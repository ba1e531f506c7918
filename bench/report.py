"""The suite report: reports/<suite>/index.html, rendered from the suite's CSVs only (never live objects)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from bench.results import atomic_write_text, read_json


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task x model: seeds converged / total, median converge step, final error, non-finite steps, params."""
    rows = []
    for (task, model), group in runs.groupby(["task", "model"], sort=False):
        converged = group[group["converged"] == True]  # noqa: E712 - a pandas column
        rows.append({
            "task": task, "model": model,
            "converged": f"{len(converged)}/{len(group)}",
            "median converge step": converged["converge_step"].median() if len(converged) * 2 >= len(group)
            else "> budget",
            "median final wrong bits/seq": group["final_wrong_bits_per_seq"].median(),
            "non-finite steps": int(group["nonfinite_steps"].fillna(0).sum()),
            "params": group["params"].iloc[0],
            "seq/s": round(group["seq_per_s"].median(), 1),
        })
    return pd.DataFrame(rows)


def write_report(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    manifest = read_json(out_dir / "suite.json")
    runs = pd.read_csv(out_dir / "runs.csv")
    table = summary_table(runs) if len(runs) else pd.DataFrame()
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(manifest['name'])}</title></head>
<body><h1>Suite {html.escape(manifest['name'])}</h1><p>{html.escape(manifest.get('description', ''))}</p>
{table.to_html(index=False)}</body></html>"""
    path = out_dir / "index.html"
    atomic_write_text(path, page)
    return path
