"""The page: `write_report(out_dir)` renders reports/<suite>/index.html, figures/*.png, summary.csv, summary.md and
scorecard.csv.

It reads only files: suite.json, the suite CSVs (runs.csv, curves.csv, generalization.csv) and, from each run folder,
spec.json (provenance, budget), result.json (the error of a failed run) and samples.npz (sample outputs and memory
traces). It never builds a model. It first rebuilds the suite CSVs from the run folders (`bench.results.collect`),
taking in the runs still training (status `running`, their curve.csv so far): a suite can be reported while it runs,
its unfinished runs drawn in the learning curves and left out of every statistic. The page is one self-contained file:
every figure is embedded as a base64 PNG data URI, the CSS is inline, and there is no script, font or other request
to the network. summary.csv and summary.md are built from the same table cells as the page's summary tables.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import lifelines
import matplotlib
import pandas as pd
import scipy
import seaborn as sns
import yaml

from bench import stats, survival
from bench.bundles import read_manifest, resolve
from bench.errors import ConfigError
from bench.report.combine import COMPARED, HERE, REFERENCE, Source, combine, only_seeds
from bench.report.data import (
    CSV_FILES,
    SUMMARY_FILES,
    SuiteData,
    TaskInfo,
    convergence_tasks,
    fmt,
    generalization_frame,
    grid_shape,
    load_suite_data,
    ordered_sizes,
    read_json_or_none,
    sample_runs,
)
from bench.report.figures import (
    LOG_FLOOR,
    STYLE,
    FigureSink,
    figure_convergence,
    figure_curves,
    figure_generalization,
    figure_km,
    figure_scorecard,
)
from bench.report.pairwise import pairwise_table
from bench.report.panels import figure_memory, figure_samples
from bench.report.scorecard import SCORECARD_FILE, Scorecard, scorecard
from bench.report.tables import (
    generalization_table,
    not_started,
    problems,
    runs_table,
    summary_frame,
    summary_table,
    unfinished_runs,
)
from bench.results import (
    RUNNING,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    claim_output_folder,
    collect,
)
from bench.text import format_duration, markdown_text

TEMPLATES = Path(__file__).parents[1] / "templates"


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
                 "lifelines": lifelines.__version__, "jinja2": jinja2.__version__}
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
        "wall": format_duration(float(data.runs["wall_s"].sum())) if len(data.runs) else "—",
        "seeds": data.manifest.get("seeds", []),
        "steps": data.manifest.get("steps"),
        "batch_size": data.manifest.get("batch_size"),
        "sources": data.manifest.get("sources") or [],
        "reused": reused_runs(data),
    }


def reused_runs(data: SuiteData) -> list[str]:
    """One line per bundle that runs of this folder were reused from (`run --reuse`), saying when they were trained
    on another CPU model than the runs trained here (float results differ between CPU models)."""
    if "source" not in data.runs.columns:
        return []

    def cpu(run_id: str) -> str:
        found = (data.specs.get(run_id, {}).get("provenance") or {}).get("cpu") or {}
        return f"{found.get('model', '?')} ({found.get('isa', '?')})" if found else "CPU not recorded"

    sources = data.runs["source"].fillna("").astype(str)
    here = {cpu(str(rid)) for rid in data.runs.loc[sources == "trained", "run_id"]}
    lines = []
    for source in sorted({s for s in sources if s.startswith("reused")}):
        ids = [str(rid) for rid in data.runs.loc[sources == source, "run_id"]]
        theirs = sorted({cpu(rid) for rid in ids})
        other = [c for c in theirs if here and c not in here]
        lines.append(f"{len(ids)} run(s) {source}, trained on {', '.join(theirs)}"
                     + (f"; the runs trained here used {', '.join(sorted(here))}: float results differ between "
                        "CPU models, so these runs are not bit-identical to what this machine would give"
                        if other else ""))
    return lines


def train_range(task: TaskInfo) -> str:
    return ", ".join(f"{p} {lo}–{hi}" for p, (lo, hi) in task.train_sizes.items())


def scorecard_context(data: SuiteData, card: Scorecard, sink: FigureSink) -> dict[str, Any]:
    """The scorecard panel: its figure (None when no task is scored), the threshold, and a one-line note naming
    the tasks whose suite.json facts lack the trivial errors (an older folder)."""
    note = ""
    if card.unscored:
        note = (f"{'No scorecard' if card.table.empty else 'Not scored'}: this folder's suite.json records no "
                f"trivial-predictor errors for {', '.join(card.unscored)} (written before the scorecard existed); "
                "running the suite again into this folder records them without retraining finished runs.")
    return {"figure": figure_scorecard(data, card, sink) if not card.table.empty else None, "note": note,
            "threshold": card.threshold, "table": card.table}


def build_context(data: SuiteData, sink: FigureSink) -> dict[str, Any]:
    card = scorecard(data)
    with matplotlib.rc_context(STYLE):
        score_panel = scorecard_context(data, card, sink)
        sections = []
        for task in data.tasks.values():
            samples = sample_runs(data, task)
            sections.append({
                "task": task,
                "anchor": task.slug,
                "summary": summary_table(data, task),
                "pairwise": pairwise_table(data, task),
                "curves": figure_curves(data, task, sink),
                "km": figure_km(data, task, sink),
                "generalization": figure_generalization(data, task, sink),
                "generalization_table": generalization_table(data, task),
                "grid": grid_shape([s for _, s in ordered_sizes(generalization_frame(data, task), task)])
                if not generalization_frame(data, task).empty else None,
                "samples": figure_samples(data.palette, task, samples, sink),
                "sample_seeds": [(m, s) for m, s, _ in samples],
                "memory": figure_memory(data.palette, task, samples, sink),
                "train_range": train_range(task),
                "threshold_line": task.threshold(),
            })
        convergence = figure_convergence(data, sink)
    no_threshold = [t.label for t in data.tasks.values() if not t.has_threshold]
    _, never_converged = convergence_tasks(data)
    return {
        "header": header_facts(data),
        "problems": problems(data),
        "scorecard": score_panel,
        "sections": sections,
        "convergence": convergence,
        "no_threshold": no_threshold,
        "never_converged": never_converged,
        "models": [(m, data.palette[m]) for m in data.models],
        "runs_table": runs_table(data),
        "yaml": yaml.safe_dump(data.manifest.get("resolved", {}), sort_keys=False, allow_unicode=True,
                               default_flow_style=None, width=110),
        "csvs": [name for name in CSV_FILES if (data.out_dir / name).exists()] + list(SUMMARY_FILES)
        + ([] if card.table.empty else [SCORECARD_FILE]),
        "log_floor": LOG_FLOOR,
        "methods": {"min_seeds": survival.MIN_SEEDS_FOR_INTERVAL, "km": survival.KM_MEDIAN_METHOD,
                    "cox": survival.COX_METHOD, "clopper_pearson": stats.CLOPPER_PEARSON_METHOD,
                    "fisher": stats.FISHER_METHOD, "mann_whitney": stats.MANN_WHITNEY_METHOD,
                    "holm": stats.HOLM_METHOD, "max_exact": stats.MAX_EXACT_RELABELLINGS,
                    "draws": stats.MONTE_CARLO_DRAWS, "seed": stats.PERMUTATION_SEED},
    }


def summary_markdown(sections: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """summary.md: the HTML summary tables as GitHub Markdown, one per task (each cell: text, then its second line
    in parentheses). Every text from the folder (labels, the description, devices, cells) goes through
    `markdown_text`, so a label such as ``<img src=...>`` or ``[x](javascript:...)`` shows as the text it is."""
    md = markdown_text
    lines = [f"# {md(header['name'])}: summary", ""]
    if header.get("description"):
        lines += [md(header["description"], newline=" "), ""]
    unfinished = (f"; {len(header['unfinished'])} unfinished (still running, not counted)"
                  if header.get("unfinished") else "")
    lines += [f"Commit(s) {', '.join(map(md, header['commits']))}; device(s) {', '.join(map(md, header['devices']))}; "
              f"{header['n_runs']} runs{unfinished}.", ""]
    for section in sections:
        task = section["task"]
        rule = f"converged when {md(task.rule)}" if task.has_threshold else "no convergence threshold"
        train = f"; trained on {md(section['train_range'])}" if section["train_range"] else ""
        lines += [f"## {md(task.label)}", "", f"{rule}{train}.", ""]
        if task.note:
            lines += [md(task.note, newline=" "), ""]
        lines += summary_markdown_table(section["summary"])
        lines.append("")
    return "\n".join(lines)


def summary_markdown_table(summary: dict[str, Any]) -> list[str]:
    """One task's summary table (`summary_table`) as the lines of a GitHub Markdown table."""
    md = markdown_text
    heads = [h["text"] + (f" ({h['sub']})" if h["sub"] else "") for h in summary["headers"]]
    lines = ["| " + " | ".join(md(h) for h in heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    for row in summary["rows"]:
        texts = []
        for cell in row["cells"]:
            text = cell.text + "".join(f" [{badge}]" for badge, _ in cell.badges)
            texts.append(md(text + (f" ({cell.sub})" if cell.sub else "")))
        lines.append("| " + " | ".join(texts) + " |")
    return lines


#: in an output folder: the reference bundles its report shows beside its own runs (`--reference`)
REFERENCES = "references.json"


def write_report(out_dir: Path, collect_runs: bool = True,
                 references: list[tuple[str, str]] | None = None) -> Path:
    """Render out_dir/index.html (self-contained) and out_dir/figures/*.png from the suite's files; returns the path.

    `collect_runs` first rebuilds the suite CSVs from its run folders, unfinished runs included (a suite that is still
    running, or was interrupted); off, the CSVs are read as they are. `references` ((bundle name or path, model-label
    prefix) pairs) replaces the folder's recorded references (references.json; [] removes them): their runs on this
    folder's tasks join every table and figure, marked as reference. A folder written by `write_comparison` is
    compared again from its sources."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    claim_output_folder(out_dir)  # refuses a folder of the user's own files before anything is written
    manifest = read_json_or_none(out_dir / "suite.json") or {}
    if isinstance(manifest, dict) and manifest.get("compare"):
        return write_comparison([(s["path"], s.get("prefix", "")) for s in manifest["compare"]], out_dir,
                                manifest.get("compare_seeds"))
    if collect_runs and (out_dir / "runs").is_dir() and (out_dir / "suite.json").is_file():
        collect(out_dir, unfinished=True)
    data = load_suite_data(out_dir)
    if references is not None:
        data = with_references(data, out_dir, references)  # checked before it is recorded
        atomic_write_json(out_dir / REFERENCES,
                          {"references": [{"reference": r, "prefix": p} for r, p in references]})
    else:
        data = with_references(data, out_dir, recorded_references(out_dir))
    return _render(data, out_dir, started)


def recorded_references(out_dir: Path) -> list[tuple[str, str]]:
    """The (bundle, prefix) pairs recorded in out_dir/references.json; a damaged file is a one-line error."""
    path = Path(out_dir) / REFERENCES
    if not path.is_file():
        return []
    recorded = read_json_or_none(path)
    entries = recorded.get("references") if recorded is not None else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("reference"), str)
                                                for e in entries):
        raise ConfigError(f"{path}: expected {{\"references\": [{{\"reference\": NAME_OR_PATH, \"prefix\": TEXT}}]}}; "
                          "delete it, or pass --reference again")
    return [(e["reference"], str(e.get("prefix") or "")) for e in entries]


def with_references(data: SuiteData, out_dir: Path, references: list[tuple[str, str]]) -> SuiteData:
    """`data` with the runs of each reference bundle on its tasks (`bench.report.combine`)."""
    if not references:
        return data
    parts = [(data, Source(Path(out_dir), Path(out_dir).name, HERE))]
    for reference, prefix in references:
        path = resolve(reference, "--reference")
        parts.append((load_suite_data(path), Source(path, read_manifest(path)["name"], REFERENCE, prefix)))
    return combine(parts, only_first_tasks=True)


def write_comparison(sources: list[tuple[str | Path, str]], out_dir: Path,
                     seeds: tuple[int, ...] | list[int] | None = None) -> Path:
    """One report in `out_dir` from one or more output folders or bundles ((path or bundle name, prefix) pairs):
    every task of every source, a task two sources share only when it is the same test; with `seeds`, only those
    seeds' runs (e.g. the seeds every source ran). One source gives that folder's or bundle's own report, written
    elsewhere (a shipped bundle's report without touching the package). `out_dir` also gets the combined runs.csv,
    curves.csv and generalization.csv, and a suite.json that records the sources and seeds (so `ntm-bench report`
    redoes the comparison)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if not sources:
        raise ConfigError("compare: give at least one folder or bundle")
    paths = [resolve(path, "compare") for path, _ in sources]
    for path in paths:
        if path.resolve() == out_dir.resolve():
            raise ConfigError(f"--out {out_dir}: is one of the compared folders; choose another folder")
    names: list[str] = []
    for path in paths:
        name = read_manifest(path)["name"]
        names.append(name if name not in names else f"{name}-{len(names) + 1}")
    parts = [(load_suite_data(path), Source(path, name, COMPARED, prefix))
             for path, name, (_, prefix) in zip(paths, names, sources)]
    data = combine(parts, only_first_tasks=False)
    if seeds:
        data = only_seeds(data, tuple(seeds))
    claim_output_folder(out_dir)
    title = " vs ".join(names)
    manifest = {**data.manifest, "name": f"comparison: {title}" if len(names) > 1 else title,
                "description": "One report from " + ", ".join(
                    f"{s['name']} ({s['suite'] or 'suite ?'}, {', '.join(s['devices']) or 'device ?'})"
                    for s in data.manifest["sources"]) + ".",
                "compare": [{"path": str(path.resolve()), "prefix": prefix}
                            for path, (_, prefix) in zip(paths, sources)],
                "compare_seeds": list(seeds) if seeds else None,
                "seeds": sorted({int(s) for s in data.runs["seed"].dropna()})}
    data = replace(data, out_dir=out_dir, manifest=manifest)
    atomic_write_json(out_dir / "suite.json", manifest)
    for name, frame in (("runs", data.runs), ("curves", data.curves), ("generalization", data.gen)):
        atomic_write_csv(out_dir / f"{name}.csv", frame)
    return _render(data, out_dir, started)


def write_summaries(out_dir: Path) -> None:
    """summary.csv and summary.md of a folder (a bundle) from its CSVs as they are, without figures or a page."""
    data = load_suite_data(Path(out_dir))
    sections = [{"task": task, "summary": summary_table(data, task), "train_range": train_range(task)}
                for task in data.tasks.values()]
    csv_name, md_name = SUMMARY_FILES
    atomic_write_csv(Path(out_dir) / csv_name, summary_frame(sections))
    atomic_write_text(Path(out_dir) / md_name, summary_markdown(sections, header_facts(data)))
    card = scorecard(data)
    if not card.table.empty:
        atomic_write_csv(Path(out_dir) / SCORECARD_FILE, card.table)


def _render(data: SuiteData, out_dir: Path, started: float) -> Path:
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
    if not context["scorecard"]["table"].empty:
        atomic_write_csv(out_dir / SCORECARD_FILE, context["scorecard"]["table"])
    path = out_dir / "index.html"
    atomic_write_text(path, page)
    return path
