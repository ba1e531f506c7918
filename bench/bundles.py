"""Reference bundles: a suite's results as a compact, self-describing folder that anyone can compare against without
retraining, take finished runs from, and recompute every number of.

A bundle is an output folder cut down to what the numbers need:

    manifest.json                 what it holds and what produced it (`build_manifest`)
    suite.json                    the resolved suite, its run ids, each task's facts and protocol fingerprint
    runs.csv, curves.csv, generalization.csv      rebuilt from the run folders below (`bench.results.collect`)
    summary.csv, summary.md, scorecard.csv        the report's tables (written by `ntm-bench export`)
    runs/<run_id>/spec.json, result.json, curve.csv, generalization.csv

No checkpoints and no samples, so a bundle of a 12-run paper-size suite is a few hundred kilobytes. Any command
that reads an output folder reads a bundle too (`ntm-bench report`, `compare`, `bench.load_results`).

- `export` writes (or refreshes) a bundle from an output folder, finished runs only;
- `resolve` finds a bundle by path or by the name of one shipped inside the package (`bench/references/`), and
  `shipped` lists those;
- `reuse` copies a bundle's finished runs into an output folder as finished runs (`ntm-bench run --reuse`), each
  marked by a `source.json`, after checking that every task involved is the same test (its protocol fingerprint).
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.folders import make_folder, refuse_links_within, remove_file, remove_tree
from bench.protocol import describe_difference
from bench.provenance import cpu_model, git_commit
from bench.results import (
    REUSED_FROM,
    atomic_write_bytes,
    atomic_write_json,
    collect,
    read_json,
    read_json_object,
    run_is_finished,
    writing_output_folder,
)

FORMAT = "ntm-bench-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: the files of a run folder a bundle keeps; result.json is copied last, so a copy cut short is not a finished run
RUN_FILES = ("spec.json", "curve.csv", "generalization.csv", "result.json")
#: in a run folder: where a reused run came from (`reuse`); runs.csv's `source` column reads it
SOURCE = REUSED_FROM
def _shipped_dir() -> Path:
    """The shipped bundles: the repository's results/ folder, installed as the package data bench/references."""
    here = Path(__file__).resolve().parent
    packaged = here / "references"
    return packaged if packaged.is_dir() else here.parent / "results"


#: the bundles shipped with the package (results/ in the repository)
SHIPPED = _shipped_dir()
_RUN_ID = re.compile(r"[0-9a-f]{12}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# ---- finding bundles ----------------------------------------------------------------------------------------------

def shipped() -> list[dict[str, Any]]:
    """The manifests of the bundles shipped with the package, by name."""
    if not SHIPPED.is_dir():
        return []
    return [read_manifest(path) for path in sorted(SHIPPED.iterdir()) if (path / MANIFEST).is_file()]


def resolve(reference: str | Path, what: str = "--reference") -> Path:
    """The folder of a bundle or results folder given as a path, or of a shipped bundle given by name; a one-line
    ConfigError naming `what` (the option) otherwise."""
    path = Path(reference)
    if path.is_dir():
        if not (path / "suite.json").is_file():
            raise ConfigError(f"{what} {reference}: not a results folder or bundle (no suite.json in it)")
        read_json_object(path / "suite.json")  # a damaged one fails here, in one line, before anything is written
        return path
    text = str(reference)
    if _NAME.fullmatch(text) and (SHIPPED / text / MANIFEST).is_file():
        return SHIPPED / text
    names = ", ".join(m["name"] for m in shipped()) or "none"
    raise ConfigError(f"{what} {reference}: no such folder, and not the name of a shipped bundle "
                      f"(shipped: {names}; `ntm-bench list` shows them)")


def read_manifest(folder: Path) -> dict[str, Any]:
    """A bundle's manifest, or for a plain output folder a stand-in with its name; `name` is always set."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():  # an output folder: its suite's name, the rest is in its run folders
        suite = read_json_object(folder / "suite.json") if (folder / "suite.json").is_file() else {}
        return {"name": folder.resolve().name, "suite": suite.get("name")}
    return {"name": folder.resolve().name, **read_json_object(folder / MANIFEST)}


def describe(manifest: dict[str, Any]) -> str:
    """One line for a bundle: suite, how many runs, seeds, device and CPU, package version."""
    cpus = ", ".join(manifest.get("cpus") or []) or "CPU not recorded"
    devices = ", ".join(manifest.get("devices") or []) or "device not recorded"
    seeds = manifest.get("seeds") or []
    seed_text = f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 2 and seeds == list(
        range(seeds[0], seeds[-1] + 1)) else "seeds " + ", ".join(str(s) for s in seeds)
    return (f"suite {manifest.get('suite', '?')} · {manifest.get('runs', '?')}/{manifest.get('runs_in_suite', '?')} "
            f"runs · {seed_text} · {devices} ({cpus}) · ntm-bench {manifest.get('package_version', '?')}")


# ---- export -------------------------------------------------------------------------------------------------------

def export(out_dir: Path, to_dir: Path, package_version: str,
           then: Callable[[Path], Any] | None = None) -> dict[str, Any]:
    """Write the bundle of the output folder `out_dir` into `to_dir` (created, or refreshed when it is a bundle
    already): the finished runs' files, suite.json, the CSVs rebuilt from them and the manifest. Returns the
    manifest. A partly finished suite exports what has finished; run it again later to add the rest. `to_dir` is
    claimed and locked while it is written (`bench.results.writing_output_folder`); `then` (the summaries) is called
    with it at the end, still locked."""
    out_dir, to_dir = Path(out_dir), Path(to_dir)
    if not (out_dir / "suite.json").is_file():
        raise ConfigError(f"{out_dir}: no suite.json, so no results to export")
    if to_dir.resolve() == out_dir.resolve() or out_dir.resolve() in to_dir.resolve().parents:
        raise ConfigError(f"--to {to_dir}: must be outside the folder it exports ({out_dir})")
    suite = read_json_object(out_dir / "suite.json")
    run_ids = [str(rid) for rid in suite.get("run_ids") or []]
    with writing_output_folder(to_dir):
        manifest = _write_bundle(out_dir, to_dir, suite, run_ids, package_version)
        if then is not None:
            then(to_dir)
    return manifest


def _write_bundle(out_dir: Path, to_dir: Path, suite: dict[str, Any], run_ids: list[str],
                  package_version: str) -> dict[str, Any]:
    """`export` into its claimed and locked bundle folder."""
    runs_dir = to_dir / "runs"
    finished = [rid for rid in run_ids if _RUN_ID.fullmatch(rid) and run_is_finished(out_dir / "runs" / rid)]
    refuse_links_within(to_dir, [f"runs/{rid}" for rid in finished], entries=True)
    for rid in finished:
        _copy_run(out_dir / "runs" / rid, runs_dir / rid, extra=(SOURCE,))
    if runs_dir.is_dir():  # runs of an earlier export that this suite no longer has
        for stale in runs_dir.iterdir():
            if stale.name not in finished and _RUN_ID.fullmatch(stale.name) and stale.is_dir() \
                    and not stale.is_symlink():
                remove_tree(stale)
    atomic_write_json(to_dir / "suite.json", suite)
    frames = collect(to_dir, run_ids)
    manifest = build_manifest(to_dir, suite, frames["runs"].to_dict("records"), package_version)
    atomic_write_json(to_dir / MANIFEST, manifest)
    return manifest


def _copy_run(source: Path, target: Path, extra: tuple[str, ...] = (), origin: dict[str, Any] | None = None) -> None:
    """Copy a run's bundle files (and `extra` ones where present) into `target`, with `origin` as its source.json,
    result.json last; a checkpoint or samples left in `target` by a run that trained there before are removed
    (they belong to other weights)."""
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target}: not a plain folder; refusing to write a run into it")
    make_folder(target)  # refuses a link (`bench.folders.refuse_links`), as every write and delete below does
    for name in ("result.json", "checkpoint.pt", "samples.npz", SOURCE):
        if (target / name).is_file():
            remove_file(target / name)
    for name in (*extra, *RUN_FILES):
        path = source / name
        if name == "result.json" and origin is not None:
            atomic_write_json(target / SOURCE, origin)
        if path.is_file() and not path.is_symlink():
            atomic_write_bytes(target / name, path.read_bytes())


def build_manifest(bundle: Path, suite: dict[str, Any], rows: list[dict[str, Any]],
                   package_version: str) -> dict[str, Any]:
    """What a bundle holds and what produced each run: package, commit, torch, device, CPU, threads, wall time."""
    here = platform.node()
    runs = {}
    for row in rows:
        rid = str(row["run_id"])
        spec = read_json(bundle / "runs" / rid / "spec.json")
        prov = spec.get("provenance") or {}
        cpu = prov.get("cpu")
        cpu_note = "recorded by the run"
        if not cpu and prov.get("hostname") == here:
            cpu, cpu_note = cpu_model(), "filled in at export: the run was trained on this host"
        elif not cpu:
            cpu_note = "not recorded (the run predates CPU records)"
        runs[rid] = {"task": row["task"], "model": row["model"], "seed": int(row["seed"]),
                     "status": row["status"], "steps": _int(row.get("steps")), "wall_s": _float(row.get("wall_s")),
                     "device": prov.get("device_name"), "cpu": cpu, "cpu_note": cpu_note,
                     "threads": spec.get("torch_threads"), "commit": prov.get("git_commit"),
                     "git_dirty": prov.get("git_dirty"), "torch": prov.get("torch"), "python": prov.get("python"),
                     "source": row.get("source")}

    def distinct(key: str) -> list:
        return sorted({str(r[key]) for r in runs.values() if r.get(key) is not None})

    tasks = {label: {"type": fact.get("type"), "protocol_version": (fact.get("protocol") or {}).get("version"),
                     "fingerprint": (fact.get("protocol") or {}).get("fingerprint")}
             for label, fact in (suite.get("tasks") or {}).items() if isinstance(fact, dict)}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "name": bundle.name, "suite": suite.get("name"),
            "description": suite.get("description", ""), "package_version": package_version,
            "exported_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "exported_by_commit": git_commit(),
            "runs": len(runs), "runs_in_suite": len(suite.get("run_ids") or []),
            "seeds": sorted({r["seed"] for r in runs.values()}), "tasks": tasks,
            "models": sorted({r["model"] for r in runs.values()}),
            "devices": distinct("device"), "cpus": sorted({_cpu_text(r["cpu"]) for r in runs.values() if r["cpu"]}),
            "torch": distinct("torch"), "commits": distinct("commit"), "threads": distinct("threads"),
            "wall_s": round(sum(r["wall_s"] or 0.0 for r in runs.values()), 1), "by_run": runs}


def _cpu_text(cpu: dict[str, Any]) -> str:
    return f"{cpu.get('model', '?')} ({cpu.get('isa', '?')})"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else round(number, 3)


# ---- reuse --------------------------------------------------------------------------------------------------------

def reuse(bundle: Path, specs: list, facts: dict[str, dict[str, Any]], out_dir: Path) -> list[str]:
    """Copy into ``out_dir/runs`` every finished run of `bundle` whose run_id is one of `specs` and that is not
    finished there already; returns their run_ids. Each task involved must be the same test in both (protocol
    fingerprints, `bench.protocol.describe_difference`), else a one-line ConfigError and nothing is copied."""
    bundle = Path(bundle)
    theirs = read_json_object(bundle / "suite.json")
    ids = {str(rid) for rid in theirs.get("run_ids") or []}
    # a bundle's run counts only if its files agree and its spec.json is the suite's run (`run_is_finished`)
    todo = [s for s in specs if s.run_id in ids and not (bundle / "runs" / s.run_id).is_symlink()
            and run_is_finished(bundle / "runs" / s.run_id, s)
            and not run_is_finished(out_dir / "runs" / s.run_id, s)]
    for label in dict.fromkeys(s.task for s in todo):
        problem = describe_difference(label, facts.get(label) or {}, (theirs.get("tasks") or {}).get(label) or {})
        if problem:
            raise ConfigError(f"--reuse {bundle}: {problem}")
    manifest = read_manifest(bundle)
    for spec in todo:
        by_run = (manifest.get("by_run") or {}).get(spec.run_id) or {}
        _copy_run(bundle / "runs" / spec.run_id, out_dir / "runs" / spec.run_id,
                  origin={"bundle": manifest["name"], "path": str(bundle), "cpu": by_run.get("cpu"),
                          "device": by_run.get("device"),
                          "reused_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")})
    return [s.run_id for s in todo]


# ---- references ---------------------------------------------------------------------------------------------------

def check_reference(bundle: Path, facts: dict[str, dict[str, Any]], models: list[str], prefix: str = "") -> None:
    """Refuse, before anything trains, a reference bundle that cannot be shown beside a suite with task `facts` and
    model labels `models`: one that shares none of its tasks, one whose shared task is another test (protocol
    fingerprints), or one whose model label (after `prefix`) is one of the suite's."""
    bundle = Path(bundle)
    theirs = read_json_object(bundle / "suite.json")
    their_tasks = theirs.get("tasks") or {}
    shared = [label for label in facts if label in their_tasks]
    if not shared:
        raise ConfigError(f"--reference {bundle}: has none of this suite's tasks ({', '.join(facts)}); it has "
                          f"{', '.join(their_tasks) or 'none'}")
    for label in shared:
        problem = describe_difference(label, facts[label], their_tasks[label] or {})
        if problem:
            raise ConfigError(f"--reference {bundle}: {problem}")
    resolved = theirs.get("resolved") or {}
    their_models = [prefix + str(m) for m in (resolved.get("models") or {})] or \
        [prefix + str(m) for m in read_manifest(bundle).get("models") or []]
    clash = sorted(set(their_models) & set(models))
    if clash:
        raise ConfigError(f"--reference {bundle}: model label(s) {', '.join(clash)} are in this suite too; "
                          "rename yours, or give --prefix (e.g. --prefix ref-) to tell them apart")
