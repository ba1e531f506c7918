"""Run folders and suite-level tidy CSVs.

Each run writes only inside ``runs/<run_id>/``: spec.json, curve.csv, generalization.csv, result.json,
checkpoint.pt and samples.npz. `collect` rebuilds the suite-level runs.csv, curves.csv and generalization.csv from
those folders, keeping only the run_ids of the current suite (suite.json), so stale runs are never mixed in.
Every write is atomic: a temp file in the same folder, then `os.replace`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

RUNS_COLUMNS = ["suite", "task", "task_type", "model", "model_type", "seed", "run_id", "status", "converged",
                "converge_step", "converge_sequences", "final_loss_bits_per_seq", "final_wrong_bits_per_seq",
                "solved_up_to", "test_size_2x", "solved_2x", "nonfinite_steps", "params", "steps", "device", "wall_s",
                "seq_per_s"]
CURVES_COLUMNS = ["suite", "task", "model", "seed", "run_id", "step", "sequences_seen", "loss_bits_per_seq",
                  "wrong_bits_per_seq", "seq_accuracy", "wall_s"]
GENERALIZATION_COLUMNS = ["suite", "task", "model", "seed", "run_id", "size", "loss_bits_per_seq",
                          "wrong_bits_per_seq", "seq_accuracy"]
#: the only columns allowed to differ between two runs of the same suite
TIMING_COLUMNS = ("wall_s", "seq_per_s")
FINISHED = ("done", "diverged")


# ---- atomic writes ----------------------------------------------------------------------------------------------

def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


# ---- run folders ------------------------------------------------------------------------------------------------

def run_is_finished(run_dir: Path) -> bool:
    """A run is finished when its result.json says done or diverged; failed runs are retried."""
    result = Path(run_dir) / "result.json"
    if not result.exists():
        return False
    try:
        return read_json(result).get("status") in FINISHED
    except (json.JSONDecodeError, OSError):
        return False


def collect(suite_dir: Path, run_ids: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Rebuild and write runs.csv, curves.csv and generalization.csv under `suite_dir` from its run folders.

    `run_ids` defaults to those listed in suite_dir/suite.json (the current suite); folders of other ids are left out.
    """
    suite_dir = Path(suite_dir)
    if run_ids is None:
        manifest = suite_dir / "suite.json"
        run_ids = read_json(manifest)["run_ids"] if manifest.exists() else None
    runs_dir = suite_dir / "runs"
    folders = sorted(p for p in runs_dir.glob("*") if p.is_dir()) if runs_dir.exists() else []
    if run_ids is not None:
        order = {rid: i for i, rid in enumerate(run_ids)}
        folders = sorted((p for p in folders if p.name in order), key=lambda p: order[p.name])
    runs, curves, generalization = [], [], []
    for folder in folders:
        if not (folder / "result.json").exists():
            continue
        result = read_json(folder / "result.json")
        spec = read_json(folder / "spec.json")
        keys = {"suite": spec["suite"], "task": spec["task"], "model": spec["model"], "seed": spec["seed"],
                "run_id": spec["run_id"]}
        runs.append({**keys, "task_type": spec["task_type"], "model_type": spec["model_type"], **result})
        curve = _read_csv(folder / "curve.csv")
        if curve is not None:
            curves.append(curve.assign(**keys))
        gen = _read_csv(folder / "generalization.csv")
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


def _read_csv(path: Path) -> pd.DataFrame | None:
    """A run's CSV, or None when it is missing or empty (a diverged run has no generalisation rows)."""
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None


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
