"""End to end: `python -m bench run --suite smoke` writes run folders and tidy CSVs; reruns, resumes and workers
produce the same rows (every column but the timing columns)."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from bench.cli import main
from bench.results import CURVES_COLUMNS, GENERALIZATION_COLUMNS, RUNS_COLUMNS, TIMING_COLUMNS
from tests.conftest import REPO

TINY = ["--set", "tasks={copy: {bits: 3, train_sizes: [1, 3], test_sizes: [3, 6]}}",
        "--set", "models={lstm: {layers: 1, units: 16}}",
        "--set", "train.steps=30", "--set", "train.eval_every=10", "--set", "train.checkpoint_every=5"]


def run_cli(out, *extra):
    assert main(["run", "--suite", "smoke", "--out", str(out), "--no-report", *extra]) == 0


def frames(out):
    return {name: pd.read_csv(out / f"{name}.csv") for name in ("runs", "curves", "generalization")}


def assert_same_rows(a, b, tolerance=None):
    """Every column but the timing ones equal: exactly, or floats within `tolerance` (relative and absolute), as
    seed-parallel results are compared."""
    close = {"check_exact": True} if tolerance is None else {"check_exact": False, "rtol": tolerance,
                                                              "atol": tolerance}
    for name in a:
        left = a[name].drop(columns=[c for c in TIMING_COLUMNS if c in a[name]])
        right = b[name].drop(columns=[c for c in TIMING_COLUMNS if c in b[name]])
        pd.testing.assert_frame_equal(left, right, obj=name, **close)


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    run_cli(out)
    return out


def test_smoke_writes_run_folders_and_tidy_csvs(smoke_out):
    data = frames(smoke_out)
    assert list(data["runs"].columns) == RUNS_COLUMNS
    assert list(data["curves"].columns)[: len(CURVES_COLUMNS)] == CURVES_COLUMNS
    gen_columns = list(data["generalization"].columns)
    assert gen_columns[:6] == GENERALIZATION_COLUMNS[:6] and "size_L" in gen_columns
    runs = data["runs"]
    assert (runs["status"] == "done").all()
    assert len(runs) == runs["task"].nunique() * runs["model"].nunique() * runs["seed"].nunique()
    for run_id in runs["run_id"]:
        folder = smoke_out / "runs" / run_id
        for name in ("spec.json", "curve.csv", "generalization.csv", "result.json", "samples.npz"):
            assert (folder / name).exists(), name
    curves = data["curves"]
    assert (curves.groupby("run_id")["step"].max() == 20).all()
    assert (curves["sequences_seen"] == curves["step"] * 8).all()
    assert data["generalization"]["seq_accuracy"].between(0, 1).all()
    assert (smoke_out / "index.html").exists() is False  # --no-report


def test_rerun_skips_finished_runs_and_is_identical(smoke_out, tmp_path):
    before = frames(smoke_out)
    mtimes = {p: p.stat().st_mtime for p in (smoke_out / "runs").glob("*/result.json")}
    run_cli(smoke_out)
    assert mtimes == {p: p.stat().st_mtime for p in (smoke_out / "runs").glob("*/result.json")}
    after = frames(smoke_out)
    for name in before:
        pd.testing.assert_frame_equal(before[name], after[name])


def test_same_suite_twice_gives_identical_csvs(tmp_path):
    run_cli(tmp_path / "a", *TINY)
    run_cli(tmp_path / "b", *TINY)
    assert_same_rows(frames(tmp_path / "a"), frames(tmp_path / "b"))


@pytest.mark.parametrize("fault", ["step:7:kill", "checkpoint:10:kill", "step:23:kill"])
def test_kill_and_resume_gives_the_same_rows(tmp_path, fault):
    reference = tmp_path / "reference"
    run_cli(reference, *TINY)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "bench", "run", "--suite", "smoke", "--out", str(out), "--no-report", *TINY]
    env = {**os.environ, "BENCH_FAULT": fault}
    # generous deadlines: these only catch a hang, and a loaded 2-core machine can be many times slower
    killed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert killed.returncode == -9, killed.stderr
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_rows(frames(reference), frames(out))


def test_fresh_starts_over(tmp_path):
    run_cli(tmp_path, *TINY)
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/result.json")}
    run_cli(tmp_path, *TINY, "--fresh")
    second = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/result.json")}
    assert first.keys() == second.keys() and all(first[k] != second[k] for k in first)


def test_changed_spec_gets_new_run_ids_and_stale_runs_stay_out(tmp_path):
    run_cli(tmp_path, *TINY)
    old = set(frames(tmp_path)["runs"]["run_id"])
    run_cli(tmp_path, *TINY, "--set", "train.lr=0.01")
    new = set(frames(tmp_path)["runs"]["run_id"])
    assert old.isdisjoint(new) and len(new) == len(old)
