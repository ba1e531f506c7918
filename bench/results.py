"""Run folders and suite-level tidy CSVs.

Each run writes only inside ``runs/<run_id>/``: spec.json, curve.csv, generalization.csv, result.json,
checkpoint.pt and samples.npz. `collect` rebuilds the suite-level runs.csv, curves.csv and generalization.csv from
those folders, keeping only the run_ids of the current suite (suite.json), so stale runs are never mixed in.
Every write is atomic: a temp file in the same folder, then `os.replace`, and a written file gets the permissions the
umask gives a new file (0644 under the usual umask 022).

An output folder belongs to the harness: `claim_output_folder` marks a new or empty folder with a `.ntm-bench` file
and refuses a non-empty folder that is not one of its own, so the harness never overwrites or deletes a user's files;
no write goes through a symbolic link inside it (`bench.folders.refuse_links`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from bench.bounded import (  # noqa: F401 - read_json: the readers of run folders import it from here
    UnreadableFile,
    read_json,
    read_json_object,
)
from bench.errors import ConfigError
from bench.folders import LOCK_FILE, MARKER, output_lock, refuse_links, refuse_links_within
from bench.labels import FORMULA_START as LABEL_FORMULA_START
from tasks.base import Rule, convergence

RUNS_COLUMNS = ["suite", "task", "task_type", "protocol", "model", "model_type", "seed", "run_id", "status",
                "converged", "converge_step", "converge_sequences", "final_loss_bits_per_seq",
                "final_wrong_bits_per_seq", "solved_up_to", "test_size_2x", "solved_2x", "nonfinite_steps", "params",
                "steps", "device", "wall_s", "seq_per_s", "source"]
CURVES_COLUMNS = ["suite", "task", "model", "seed", "run_id", "step", "sequences_seen", "loss_bits_per_seq",
                  "wrong_bits_per_seq", "seq_accuracy", "wall_s"]
GENERALIZATION_COLUMNS = ["suite", "task", "model", "seed", "run_id", "size", "loss_bits_per_seq",
                          "wrong_bits_per_seq", "seq_accuracy"]
#: the only columns allowed to differ between two runs of the same suite
TIMING_COLUMNS = ("wall_s", "seq_per_s")
FINISHED = ("done", "diverged")
#: the status `collect(..., unfinished=True)` gives a run that has evaluations (curve.csv) but no result yet
RUNNING = "running"
#: the figure files the report wrote into figures/, one name a line (only these are ever deleted as stale)
FIGURES_MANIFEST = ".written"

log = logging.getLogger(__name__)


# ---- atomic writes ----------------------------------------------------------------------------------------------

def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    refuse_links(path)  # inside an output folder: never through a link (its parents are what a write would follow)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            # mkstemp makes the file 0600 whatever the umask; give it the mode an ordinary new file would get
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask_at_import() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _umask_at_import()


def current_umask() -> int:
    """The process's umask now. Linux shows it in /proc/self/status, which reading changes nothing; setting and
    restoring it with os.umask would, for a moment, let another thread create a file with no umask at all, so
    elsewhere the value seen at import is used."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Every CSV the harness writes: a text cell a spreadsheet would run as a formula is written with a leading
    ``'`` (`neutralised`); numbers are written as they are. `read_csv` reads it back exactly."""
    atomic_write_text(path, _cells(frame, neutralised).to_csv(index=False, lineterminator="\n"))


def read_csv(path: Path, **options: Any) -> pd.DataFrame:
    """A CSV the harness wrote (`atomic_write_csv`), with each neutralised text cell as it was before writing."""
    return _cells(pd.read_csv(path, **options), restored)


#: the first characters that make a spreadsheet run a cell as a formula: the four a label may not start with, and tab
#: and carriage return
FORMULA_START = (*LABEL_FORMULA_START, "\t", "\r")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _formula_like(text: str) -> bool:
    """Whether `neutralised` prefixes `text`: after any leading quotes it starts like a formula and is not a number.
    (The quotes count so that writing is one-to-one: ``'=x`` is written ``''=x`` and reads back as ``'=x``.)"""
    return text.lstrip("'").startswith(FORMULA_START) and not _NUMBER.fullmatch(text)


def neutralised(value: Any) -> Any:
    """A CSV cell as written: text that a spreadsheet would run as a formula (``=HYPERLINK(...)``, ``@SUM(...)``,
    ``-cmd``) gets a leading ``'``, so it is shown as text; a number, or text that is one (``-0.5``), is kept."""
    return "'" + value if isinstance(value, str) and _formula_like(value) else value


def restored(value: Any) -> Any:
    """The inverse of `neutralised`, for a cell read back."""
    return value[1:] if isinstance(value, str) and value.startswith("'") and _formula_like(value[1:]) else value


def _cells(frame: pd.DataFrame, change) -> pd.DataFrame:
    """`frame` with `change` applied to its column names and text cells (a copy only where something changes)."""
    columns = [change(c) for c in frame.columns]
    if columns != list(frame.columns):
        frame = frame.set_axis(columns, axis=1)
    changed = {}
    for index in range(frame.shape[1]):
        column = frame.iloc[:, index]
        if pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column):  # numbers are never changed
            new = column.map(change, na_action="ignore")
            if not new.equals(column):
                changed[index] = new
    if changed:
        frame = frame.copy()
        for index, column in changed.items():
            frame.isetitem(index, column)
    return frame


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# ---- the output folder ------------------------------------------------------------------------------------------

#: figure names the report writes (older versions kept no list of them; see `claim_output_folder`)
_OUR_FIGURE = re.compile(r"(convergence|(curves|generalization|samples|memory)_.+)\.png")


#: what the harness writes at the top of an output folder or a bundle (the runner, the report, `export`); a link at
#: any of these names is refused before anything is written (`claim_output_folder`)
OUTPUT_ENTRIES = (MARKER, LOCK_FILE, "suite.json", "runs.csv", "curves.csv", "generalization.csv", "summary.csv",
                  "summary.md", "scorecard.csv", "index.html", "references.json", "manifest.json", "figures", "runs")


def claim_output_folder(out_dir: Path) -> None:
    """Make sure `out_dir` is an ntm-bench output folder before anything is written into it.

    A folder that does not exist yet, or is empty, is created and marked with a `.ntm-bench` file. A folder that
    already has the mark is ours. A folder written by a version from before the mark (it has suite.json and runs/)
    is marked now. Anything else, such as a folder of the user's own files or `--out .` in a project, is refused
    with a one-line ConfigError, and nothing in it is touched. So is an output folder in which one of the harness's
    own files or folders (`OUTPUT_ENTRIES`, the report's figures) is a symbolic link.
    """
    out_dir = Path(out_dir)
    marker = out_dir / MARKER
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: not a folder; choose an empty or new folder")
    entries = list(out_dir.iterdir()) if out_dir.exists() else []
    older = (out_dir / "suite.json").is_file() and (out_dir / "runs").is_dir()
    if entries and not (marker.is_file() or marker.is_symlink()) and not older:
        raise ConfigError(f"{out_dir}: not an ntm-bench output folder (it has files the harness did not write); "
                          "choose an empty or new folder")
    refuse_output_links(out_dir)
    if marker.is_file():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    if older:
        # an older version deleted every PNG in figures/ on each report; from now on only the figures with the
        # report's own names count as written by the harness, so a user's other images there are never deleted
        figures = out_dir / "figures"
        manifest = figures / FIGURES_MANIFEST
        if figures.is_dir() and not manifest.exists():
            ours = sorted(p.name for p in figures.iterdir() if p.is_file() and _OUR_FIGURE.fullmatch(p.name))
            atomic_write_text(manifest, "".join(f"{name}\n" for name in ours))
    atomic_write_text(marker, "This folder is written by ntm-bench (python -m bench). The harness only overwrites "
                              "or deletes files it wrote here.\n")


@contextmanager
def writing_output_folder(out_dir: Path) -> Iterator[None]:
    """While inside, `out_dir` is claimed (`claim_output_folder`) and this process is its one writer
    (`bench.folders.output_lock`); what `run` and `export` write happens inside."""
    claim_output_folder(out_dir)
    with output_lock(out_dir):
        yield


def refuse_output_links(out_dir: Path) -> None:
    """A one-line ConfigError naming the link when one of the harness's own entries of the output folder `out_dir`
    is a symbolic link: `OUTPUT_ENTRIES`, and in figures/ its list and the figures the report wrote or names like
    its own (a user's other files there are not the harness's, and are never written or deleted)."""
    refuse_links_within(out_dir, OUTPUT_ENTRIES)
    figures = Path(out_dir) / "figures"
    if figures.is_dir():
        names = {FIGURES_MANIFEST, *read_figure_manifest(figures),
                 *(p.name for p in figures.iterdir() if _OUR_FIGURE.fullmatch(p.name))}
        refuse_links_within(out_dir, [f"figures/{name}" for name in sorted(names)])


def read_figure_manifest(figures_dir: Path) -> list[str]:
    """The figure file names the report wrote into `figures_dir` (empty when it has no list)."""
    try:
        text = (Path(figures_dir) / FIGURES_MANIFEST).read_text()
    except (OSError, UnicodeDecodeError):
        return []
    # only plain names: a hand-edited list can never point outside the figures folder
    return [line for line in text.splitlines() if line and "/" not in line and "\\" not in line
            and line not in (".", "..", FIGURES_MANIFEST)]


def write_figure_manifest(figures_dir: Path, names: list[str]) -> None:
    atomic_write_text(Path(figures_dir) / FIGURES_MANIFEST, "".join(f"{name}\n" for name in sorted(set(names))))


# ---- run folders ------------------------------------------------------------------------------------------------

#: what a finished run's files must hold; a run whose files do not is redone (`run_is_finished`)
#: (only the keys every version wrote: a run from before a newer column was added is not redone for lacking it)
RESULT_KEYS = ("status", "converged", "converge_step", "final_loss_bits_per_seq", "final_wrong_bits_per_seq",
               "steps")
SPEC_KEYS = ("run_id", "task", "task_type", "model", "model_type", "seed")
CURVE_KEYS = ("step", "sequences_seen", "loss_bits_per_seq", "wrong_bits_per_seq", "seq_accuracy", "wall_s")
GENERALIZATION_KEYS = ("size", "loss_bits_per_seq", "wrong_bits_per_seq", "seq_accuracy")


class DamagedRun(Exception):
    """A run folder whose files cannot be used: the message names the file and what is wrong with it."""


class ExpectedRun(Protocol):
    """The run a caller expects a folder to hold (a `bench.grid.RunSpec`), when it knows it."""

    def disagreement(self, recorded: dict) -> str | None:
        """Why spec.json's contents `recorded` are not this run's (its identity, its run_id), or None."""


def load_run(run_dir: Path, expected: ExpectedRun | None = None
             ) -> tuple[dict, dict, pd.DataFrame | None, pd.DataFrame | None]:
    """(result, spec, curve, generalization) of a run that has a result.json, each checked; raises DamagedRun.

    A finished run (done or diverged) must have all four files intact, and its result.json must agree with its curve
    and spec.json (`_check_agreement`); a failed run needs only result.json and spec.json, since it may have stopped
    before writing the rest. With `expected`, spec.json must also be that run's (`ExpectedRun.disagreement`). The
    CSVs are None when a failed or diverged run has none (a diverged run has no generalisation rows).
    """
    run_dir = Path(run_dir)
    result = _json_object(run_dir / "result.json")
    status = result.get("status")
    finished = status in FINISHED
    if finished:
        missing = [k for k in RESULT_KEYS if k not in result]
        if missing:
            raise DamagedRun(f"result.json: missing {', '.join(missing)}")
    elif status != "failed":
        raise DamagedRun(f"result.json: unknown status {status!r}")
    spec = _checked_spec(run_dir)
    if expected is not None:
        problem = expected.disagreement(spec)
        if problem:
            raise DamagedRun(f"spec.json: {problem}")
    curve = _checked_csv(run_dir / "curve.csv", CURVE_KEYS, required=finished, numeric=CURVE_KEYS)
    gen = _checked_csv(run_dir / "generalization.csv", GENERALIZATION_KEYS, required=status == "done",
                       numeric=GENERALIZATION_KEYS[1:])
    if finished:
        _check_agreement(result, spec, curve)
    return result, spec, curve, gen


def _checked_spec(run_dir: Path) -> dict:
    """The run's spec.json, with every key the CSVs need and the folder's own run_id, else `DamagedRun`."""
    spec = _json_object(run_dir / "spec.json")
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise DamagedRun(f"spec.json: missing {', '.join(missing)}")
    if str(spec["run_id"]) != run_dir.name:
        raise DamagedRun(f"spec.json: run_id {spec['run_id']!r} is not the folder's")
    return spec


def _check_agreement(result: dict, spec: dict, curve: pd.DataFrame) -> None:
    """A finished run's result.json as the training loop writes it (`bench.train.Member.finish`): its `steps` is the
    step of curve.csv's last row (a run that diverged or stopped at convergence is evaluated where it stopped), never
    beyond spec.json's budget, and a run `done` before its budget is one that stops at convergence. Else DamagedRun."""
    steps, last = result["steps"], curve["step"].iloc[-1]
    if type(steps) is not int or steps < 0:
        raise DamagedRun(f"result.json: steps {steps!r} is not a step count")
    if steps != last:
        raise DamagedRun(f"result.json: steps {steps}, but curve.csv ends at step {last}")
    train = spec.get("train") if isinstance(spec.get("train"), dict) else {}
    budget = train.get("steps")
    if type(budget) is not int:
        return  # an old or hand-written spec.json without its budget: nothing more to compare
    if steps > budget:
        raise DamagedRun(f"result.json: steps {steps}, beyond the budget of {budget} steps in spec.json")
    if result["status"] == "done" and steps < budget and train.get("stop_at_convergence") is not True:
        raise DamagedRun(f"result.json: status done at step {steps}, before the budget of {budget} steps, though "
                         "spec.json does not stop at convergence")


def _json_object(path: Path) -> dict:
    try:
        return read_json_object(path)
    except FileNotFoundError:
        raise DamagedRun(f"{path.name}: missing") from None
    except UnreadableFile as error:  # not text, not JSON, not an object, over the limits
        raise DamagedRun(f"{path.name}: {error.reason}") from None
    except OSError as error:
        raise DamagedRun(f"{path.name}: unreadable ({error.strerror or error})") from None


def _checked_csv(path: Path, columns: tuple[str, ...], required: bool,
                 numeric: tuple[str, ...]) -> pd.DataFrame | None:
    """The CSV with its expected columns (numbers where numbers belong), None when missing or empty and allowed to
    be; raises DamagedRun otherwise."""
    if not path.exists():
        if required:
            raise DamagedRun(f"{path.name}: missing")
        return None
    try:
        frame = read_csv(path)
    except pd.errors.EmptyDataError:
        frame = None
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DamagedRun(f"{path.name}: unreadable ({str(error).splitlines()[0] if str(error) else error})") \
            from None
    if frame is None or not len(frame):
        if required:
            raise DamagedRun(f"{path.name}: no rows")
        return None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DamagedRun(f"{path.name}: missing column(s) {', '.join(missing)}")
    wrong = [c for c in numeric if not pd.api.types.is_numeric_dtype(frame[c])]
    if wrong:
        raise DamagedRun(f"{path.name}: column(s) {', '.join(wrong)} hold values that are not numbers")
    return frame


def run_is_finished(run_dir: Path, expected: ExpectedRun | None = None) -> bool:
    """A run is finished when its result.json says done or diverged and its files are intact and agree (`load_run`;
    with `expected`, the run the caller knows, spec.json is that run's); failed runs are retried, and a finished run
    with a damaged file is redone (with a one-line warning naming the file and what is wrong)."""
    run_dir = Path(run_dir)
    result = run_dir / "result.json"
    if not result.exists():
        return False
    try:
        status = read_json(result).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "failed":
        return False
    try:
        load_run(run_dir, expected)
    except DamagedRun as problem:
        log.warning("run %s: %s; the run is redone", run_dir.name, problem)
        return False
    return True


def load_unfinished(run_dir: Path) -> tuple[dict, pd.DataFrame] | None:
    """(spec, curve so far) of a run that is training (or was interrupted): it has a spec.json and a curve.csv with
    rows but no result, or a `failed` result.json older than its curve.csv (a failed run being retried). None when
    the folder is not such a run; raises DamagedRun when its files are unreadable."""
    run_dir = Path(run_dir)
    curve_path, result_path = run_dir / "curve.csv", run_dir / "result.json"
    if not curve_path.exists():
        return None
    if result_path.exists():
        try:
            status = read_json(result_path).get("status")
            retried = status == "failed" and curve_path.stat().st_mtime_ns > result_path.stat().st_mtime_ns
        except (OSError, ValueError, AttributeError):
            retried = False
        if not retried:
            return None
    spec = _checked_spec(run_dir)
    curve = _checked_csv(curve_path, CURVE_KEYS, required=False, numeric=CURVE_KEYS)
    return None if curve is None else (spec, curve)


def _unfinished_result(curve: pd.DataFrame) -> dict[str, Any]:
    """runs.csv's row of an unfinished run: status `running`, the step and wall time of its last evaluation so far,
    and no final values (it has none yet)."""
    last = curve.sort_values("step").iloc[-1]
    return {"status": RUNNING, "converged": False, "steps": int(last["step"]), "wall_s": float(last["wall_s"])}


def collect(suite_dir: Path, run_ids: list[str] | None = None, unfinished: bool = False) -> dict[str, pd.DataFrame]:
    """Rebuild and write runs.csv, curves.csv and generalization.csv under `suite_dir` from its run folders.

    `run_ids` defaults to those listed in suite_dir/suite.json (the current suite); folders of other ids are left out.
    A run whose files are damaged (`load_run`) is left out with a one-line warning. The `suite` column is the name in
    suite.json, and a failed run's traceback stays in its result.json, out of runs.csv.

    `unfinished` (the report of a suite that is still running) also takes in the runs that have evaluations but no
    result yet (`load_unfinished`): status `running` in runs.csv, their curve so far in curves.csv. Without it (the
    runner's own collect), only runs with a result.json are collected.
    """
    suite_dir = Path(suite_dir)
    manifest = suite_dir / "suite.json"
    suite_json = read_json_object(manifest) if manifest.exists() else {}
    if run_ids is None:
        run_ids = suite_json.get("run_ids")
    # the suite's current name, so a renamed suite's rows follow the rename (a run's spec.json keeps the old one)
    suite_name = suite_json.get("name")
    convergence_rules = {label: _rule_or_none(fact.get("convergence"))
                         for label, fact in (suite_json.get("tasks") or {}).items()
                         if isinstance(fact, dict) and "convergence" in fact}
    protocols = task_protocols(suite_json)
    runs_dir = suite_dir / "runs"
    folders = sorted(p for p in runs_dir.glob("*") if p.is_dir()) if runs_dir.exists() else []
    if run_ids is not None:
        order = {rid: i for i, rid in enumerate(run_ids)}
        folders = sorted((p for p in folders if p.name in order), key=lambda p: order[p.name])
    runs, curves, generalization = [], [], []
    for folder in folders:
        if unfinished:
            try:
                partial = load_unfinished(folder)
            except DamagedRun as problem:
                log.warning("run %s (unfinished): %s; left out of the suite's CSVs for now", folder.name, problem)
                continue
            if partial is not None:
                spec, curve = partial
                keys = {"suite": suite_name if suite_name is not None else spec.get("suite"), "task": spec["task"],
                        "model": spec["model"], "seed": spec["seed"], "run_id": spec["run_id"]}
                runs.append({**keys, "task_type": spec["task_type"], "protocol": protocols.get(spec["task"], ""),
                             "model_type": spec["model_type"], **_unfinished_result(curve)})
                curves.append(curve.assign(**keys))
                continue
        if not (folder / "result.json").exists():
            continue
        try:
            result, spec, curve, gen = load_run(folder)
        except DamagedRun as problem:
            log.warning("run %s: %s; left out of the suite's CSVs until it is rerun", folder.name, problem)
            continue
        result = {k: v for k, v in result.items() if k != "traceback"}  # a failed run's traceback stays in its json
        if curve is not None and result.get("status") in FINISHED:
            result.update(scored_convergence(curve, convergence_rules.get(spec["task"], _UNKNOWN), spec))
        keys = {"suite": suite_name if suite_name is not None else spec.get("suite"), "task": spec["task"],
                "model": spec["model"], "seed": spec["seed"], "run_id": spec["run_id"]}
        runs.append({**keys, "task_type": spec["task_type"], "protocol": protocols.get(spec["task"], ""),
                     "model_type": spec["model_type"], **result, "source": run_source(folder)})
        if curve is not None:
            curves.append(curve.assign(**keys))
        if gen is not None:
            generalization.append(gen.assign(**keys))
    frames = {
        "runs": _ordered(pd.DataFrame(runs), RUNS_COLUMNS),
        "curves": _ordered(pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(), CURVES_COLUMNS),
        "generalization": _ordered(pd.concat(generalization, ignore_index=True) if generalization
                                   else pd.DataFrame(), GENERALIZATION_COLUMNS),
    }
    gen = frames["generalization"]
    for column in (c for c in gen.columns if c.startswith("size_")):
        gen[column] = gen[column].astype("Int64")  # a part missing for some tasks stays an integer column
    for name, frame in frames.items():
        atomic_write_csv(suite_dir / f"{name}.csv", frame)
    return frames


def task_protocols(suite_json: dict) -> dict[str, str]:
    """Each task label's short protocol fingerprint (`bench.protocol`) as suite.json records it: runs.csv's
    `protocol` column. A task whose entry records none (written before protocols were versioned) is left out."""
    protocols = {}
    for label, fact in (suite_json.get("tasks") or {}).items():
        entry = fact.get("protocol") if isinstance(fact, dict) else None
        if isinstance(entry, dict) and entry.get("short"):
            protocols[label] = str(entry["short"])
    return protocols


#: in a run folder: the bundle a reused run was copied from (`bench.bundles.reuse` writes it)
REUSED_FROM = "source.json"


def run_source(run_dir: Path) -> str:
    """runs.csv's `source` of a finished run: ``trained`` here, or ``reused from <bundle>``."""
    path = Path(run_dir) / REUSED_FROM
    if not path.is_file():
        return "trained"
    try:
        bundle = read_json(path).get("bundle")
    except (OSError, ValueError, AttributeError):
        bundle = None
    return f"reused from {bundle}" if isinstance(bundle, str) and bundle else "reused"


#: a task whose convergence rule suite.json does not record (written before the rules were data)
_UNKNOWN = object()


def _rule_or_none(data: Any) -> Rule | None:
    return None if data is None else Rule.from_json(data)


def scored_convergence(curve: pd.DataFrame, rule: Rule | None | object, spec: dict) -> dict[str, Any]:
    """runs.csv's convergence columns of a finished run, scored from its curve by `tasks.base.convergence` under the
    suite's current `rule`, so the whole folder is scored by one rule; nothing (result.json's own values stand)
    when suite.json does not record the rule."""
    if rule is _UNKNOWN:
        return {}
    step = convergence(curve.sort_values("step").to_dict("records"), rule).step
    batch = int((spec.get("train") or {}).get("batch_size", 1))
    return {"converged": step is not None, "converge_step": step,
            "converge_sequences": None if step is None else step * batch}


def _ordered(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The fixed columns first (added empty if missing), then any task-specific extras in a stable order."""
    for column in columns:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype="object")
    extras = [c for c in frame.columns if c not in columns and c not in ("error",)]
    if "size" in columns:  # size_* columns go right after the size label
        size_parts = sorted(c for c in extras if c.startswith("size_"))
        rest = sorted(c for c in extras if not c.startswith("size_"))
        at = columns.index("size") + 1
        return frame[columns[:at] + size_parts + columns[at:] + rest]
    return frame[columns + sorted(extras)]
