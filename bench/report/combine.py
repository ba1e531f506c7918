"""Several results folders or bundles as one `SuiteData`, so one report shows them side by side.

Two uses, one function (`combine`), and a filter (`only_seeds`) that keeps the seeds several sources share:
- **reference overlay** (`ntm-bench run/report --reference NAME|PATH`): a folder's own runs plus the runs of a
  reference bundle on the folder's tasks, marked as reference, so a user who adds one model trains only that model;
- **compare** (`ntm-bench compare A B ... --out DIR`): every task of every source (e.g. a GPU run beside a CPU run
  of the same suite).

A task that two sources share must be the same test: its protocol fingerprints must agree
(`bench.protocol.describe_difference`), else a one-line ConfigError names the task and what differs. A model label
that two sources share is refused unless a prefix tells them apart. The first source keeps its run ids; every other
source's run ids are namespaced ``<source name>/<run_id>`` (two folders of one suite share run ids).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from bench.bundles import read_manifest
from bench.config import MAX_SEED_VALUE, MAX_SEEDS
from bench.errors import ConfigError
from bench.protocol import describe_difference
from bench.report.data import SuiteData, model_palette, read_json_or_none, with_unique_slugs

#: the roles a source plays in a combined report
HERE, REFERENCE, COMPARED = "this folder", "reference", "compared"


@dataclass(frozen=True)
class Source:
    """One folder or bundle in a combined report: where, how the page names it, its role and the prefix given to
    its model labels."""

    path: Path
    name: str
    role: str
    prefix: str = ""

    def describe(self) -> dict[str, Any]:
        manifest = read_manifest(self.path)
        return {"name": self.name, "role": self.role, "path": str(self.path), "prefix": self.prefix,
                "suite": manifest.get("suite"), "package_version": manifest.get("package_version"),
                "devices": manifest.get("devices") or [], "cpus": manifest.get("cpus") or [],
                "commits": [c[:12] for c in manifest.get("commits") or []]}


def combine(parts: list[tuple[SuiteData, Source]], only_first_tasks: bool) -> SuiteData:
    """One SuiteData from `parts` (the first is the folder the report is written into). `only_first_tasks` keeps
    only the tasks of the first part (a reference overlay); otherwise every task of every part (compare)."""
    first, first_source = parts[0]
    tasks = dict(first.tasks)
    facts = dict(first.manifest.get("tasks") or {})
    owner: dict[str, str] = {}
    frames: dict[str, list[pd.DataFrame]] = {"runs": [], "curves": [], "gen": []}
    specs, errors, run_dirs, origins, sources = {}, {}, {}, {}, []
    for index, (data, source) in enumerate(parts):
        sources.append(source.describe())
        theirs = data.manifest.get("tasks") or {}
        keep = [label for label in data.tasks if not only_first_tasks or label in first.tasks]
        for label in keep:
            if label in facts:
                problem = describe_difference(label, facts[label] or {}, theirs.get(label) or {})
                if problem:
                    raise ConfigError(f"{source.path}: {problem}; its results are another test than "
                                      f"{first_source.path}'s")
            else:
                facts[label], tasks[label] = theirs.get(label), data.tasks[label]
        runs = data.runs[data.runs["task"].astype(str).isin(keep)]
        labels = {m: source.prefix + m for m in dict.fromkeys(runs["model"].astype(str))}
        for label in labels.values():
            if label in owner:
                raise ConfigError(f"model {label!r} is in both {owner[label]} and {source.path}; give "
                                  f"--prefix to tell them apart")
            owner[label] = str(source.path)
            origins[label] = "" if source.role == HERE else \
                f"reference: {source.name}" if source.role == REFERENCE else source.name

        namespace = f"{source.name}/" if index else ""
        for key, frame in (("runs", data.runs), ("curves", data.curves), ("gen", data.gen)):
            frames[key].append(_renamed(frame, keep, source.prefix, namespace))
        for rid in runs["run_id"].astype(str):
            new = f"{source.name}/{rid}" if index else rid
            specs[new] = data.specs.get(rid, {})
            run_dirs[new] = data.run_dir(rid)
            if rid in data.errors:
                errors[new] = data.errors[rid]
    runs = pd.concat(frames["runs"], ignore_index=True)
    models = list(dict.fromkeys(runs["model"].astype(str)))
    expected = [str(r) for r in first.manifest.get("run_ids") or []]
    expected += [rid for rid in specs if rid not in set(expected)]
    manifest = {**first.manifest, "tasks": facts, "run_ids": expected, "sources": sources}
    return replace(first, manifest=manifest, runs=runs, curves=_concat(frames["curves"]),
                   gen=_concat(frames["gen"]), specs=specs, tasks=with_unique_slugs(tasks), models=models,
                   palette=model_palette(models), errors=errors, run_dirs=run_dirs,
                   origins={m: o for m, o in origins.items() if o})


def _renamed(frame: pd.DataFrame, tasks: list[str], prefix: str, namespace: str) -> pd.DataFrame:
    """`frame`'s rows of `tasks`, its model labels prefixed and its run ids namespaced."""
    frame = frame[frame["task"].astype(str).isin(tasks)].copy()
    frame["model"] = prefix + frame["model"].astype(str)
    if namespace:
        frame["run_id"] = namespace + frame["run_id"].astype(str)
    return frame


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f.columns)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def parse_seeds(text: str, where: str) -> tuple[int, ...]:
    """Seeds written as ``101-105``, ``1,4,9`` or both (``1,3,10-12``), in order, each once; a ConfigError names
    `where` (the option or file) when the text is not that."""
    seeds: list[int] = []
    for part in str(text).split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high) if dash else int(low)
        except ValueError:
            first = last = -1
        if first < 0 or last < first or last > MAX_SEED_VALUE or len(seeds) + last - first >= MAX_SEEDS:
            raise ConfigError(f"{where}: '{text}' is not a seed list; write seeds as 101-105, 1,4,9 or 1,3,10-12 "
                              f"(whole numbers 0 to {MAX_SEED_VALUE}, each range low-high, {MAX_SEEDS} seeds at most)")
        seeds += [seed for seed in range(first, last + 1) if seed not in seeds]
    return tuple(seeds)


def only_seeds(data: SuiteData, seeds: tuple[int, ...]) -> SuiteData:
    """`data` restricted to `seeds`: its runs, curves and generalisation rows, and the runs the page expects (a run
    not finished yet counts when its spec names one of the seeds), e.g. to compare models on the seeds they share."""
    wanted = set(seeds)

    def rows(frame: pd.DataFrame) -> pd.DataFrame:
        if "seed" not in frame.columns:
            return frame
        return frame[pd.to_numeric(frame["seed"], errors="coerce").isin(wanted)].copy()

    runs = rows(data.runs)
    listed, kept = set(data.runs["run_id"].astype(str)), set(runs["run_id"].astype(str))

    def expected(run_id: str) -> bool:
        if run_id in listed:
            return run_id in kept
        spec = data.specs.get(run_id) or read_json_or_none(data.run_dir(run_id) / "spec.json") or {}
        return spec.get("seed") in wanted

    run_ids = [str(r) for r in data.manifest.get("run_ids") or []]
    manifest = {**data.manifest, "run_ids": [r for r in run_ids if expected(r)], "seeds": sorted(wanted)}
    return replace(data, manifest=manifest, runs=runs, curves=rows(data.curves), gen=rows(data.gen),
                   specs={r: s for r, s in data.specs.items() if r in kept},
                   errors={r: e for r, e in data.errors.items() if r in kept},
                   run_dirs={r: d for r, d in data.run_dirs.items() if r in kept})
