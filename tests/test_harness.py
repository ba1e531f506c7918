"""The harness's promises: non-finite updates are skipped and counted, plugins add models, workers don't change
results, and provenance is recorded."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.cli import main
from tests.conftest import REPO
from tests.test_end_to_end import TINY, assert_same_rows, frames

NAN_SUITE = """
name: nan
include: {defaults}
seeds: 1
device: cpu
train: {{steps: 30, eval_every: 10, batch_size: 4, max_nonfinite: 5, checkpoint_every: 10}}
tasks:
  copy: {{bits: 3, train_sizes: [1, 3], test_sizes: [3]}}
models:
  a_blips: {{model: nan_lstm, nan_at: [3, 4, 17]}}
  b_diverges: {{model: nan_lstm, nan_from: 12}}
  c_healthy: {{model: nan_lstm}}
"""


def test_nonfinite_updates_are_skipped_counted_and_persistent_nan_diverges(tmp_path, capsys):
    from tests.conftest import REPO

    path = tmp_path / "nan.yaml"
    path.write_text(NAN_SUITE.format(defaults=REPO / "suites" / "_defaults.yaml"))
    out = tmp_path / "out"
    code = main(["run", "--suite", str(path), "--out", str(out), "--plugin", "tests.plugins.nan_model"])
    assert code == 0
    runs = pd.read_csv(out / "runs.csv").set_index("model")
    assert runs.loc["a_blips", "status"] == "done" and runs.loc["a_blips", "nonfinite_steps"] == 3
    assert runs.loc["a_blips", "steps"] == 30
    assert runs.loc["b_diverges", "status"] == "diverged"
    assert runs.loc["b_diverges", "nonfinite_steps"] == 5 and runs.loc["b_diverges", "steps"] == 16
    assert runs.loc["c_healthy", "status"] == "done" and runs.loc["c_healthy", "nonfinite_steps"] == 0
    err = capsys.readouterr().err
    assert "non-finite loss or gradient at step 3" in err and "run ends as diverged" in err
    assert err.count("non-finite loss or gradient") == 2  # logged once per run, not once per step
    curves = pd.read_csv(out / "curves.csv")
    assert curves[curves["model"] == "a_blips"]["loss_bits_per_seq"].notna().all()  # skipped updates left no NaN
    assert (out / "index.html").exists()


def test_plugin_model_runs_without_touching_the_harness(tmp_path):
    out = tmp_path / "out"
    args = ["run", "--suite", "smoke", "--out", str(out), "--no-report", "--plugin", "tests.plugins.gru",
            *TINY, "--set", "models={mygru: {units: 8}}", "--set", "seeds=1"]
    assert main(args) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["model_type"]) == ["mygru"] and (runs["status"] == "done").all()


def test_unknown_plugin_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--suite", "smoke", "--out", str(tmp_path), "--plugin", "no.such.module"]) == 2
    assert "no.such.module" in capsys.readouterr().err


def test_two_workers_give_the_same_rows_as_one(tmp_path):
    assert main(["run", "--suite", "smoke", "--out", str(tmp_path / "one"), "--no-report", *TINY]) == 0
    assert main(["run", "--suite", "smoke", "--out", str(tmp_path / "two"), "--no-report", "--workers", "2",
                 *TINY]) == 0
    assert_same_rows(frames(tmp_path / "one"), frames(tmp_path / "two"))


def test_spec_json_records_provenance(tmp_path):
    assert main(["run", "--suite", "smoke", "--out", str(tmp_path), "--no-report", *TINY, "--set", "seeds=1"]) == 0
    spec = json.loads(next((tmp_path / "runs").glob("*/spec.json")).read_text())
    prov = spec["provenance"]
    for key in ("git_commit", "git_dirty", "python", "torch", "numpy", "device_name", "command"):
        assert key in prov
    folder = next((tmp_path / "runs").glob("*/spec.json")).parent
    assert spec["train"]["steps"] == 30 and spec["seed"] == 1 and spec["run_id"] == folder.name


@pytest.mark.parametrize("bad", [["--workers", "0"], ["--threads", "0"], ["--seeds", "0"]])
def test_bad_cli_numbers(tmp_path, capsys, bad):
    assert main(["run", "--suite", "smoke", "--out", str(tmp_path / "o"), *bad]) == 2
    assert not (tmp_path / "o").exists()


def _compare_runs_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_runs", REPO / "scripts" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_runs_ignores_timing_and_finds_every_other_difference(tmp_path, capsys):
    """scripts/compare_runs.py, the behaviour-preservation check: timing columns may differ, nothing else may."""
    compare = _compare_runs_module()
    frames = {
        "runs.csv": pd.DataFrame({"run_id": ["a", "b"], "final_wrong_bits_per_seq": [0.5, float("nan")],
                                  "wall_s": [1.0, 2.0], "seq_per_s": [10.0, 20.0]}),
        "curves.csv": pd.DataFrame({"run_id": ["a", "a"], "step": [0, 100], "wrong_bits_per_seq": [4.0, 0.1],
                                    "wall_s": [0.1, 0.2]}),
        "generalization.csv": pd.DataFrame({"run_id": ["a"], "size": ["L=4"], "wrong_bits_per_seq": [0.0]}),
    }
    for folder, slower in (("left", 1.0), ("right", 3.0)):
        (tmp_path / folder).mkdir()
        for name, frame in frames.items():
            frame = frame.copy()
            for column in ("wall_s", "seq_per_s"):
                if column in frame:
                    frame[column] *= slower
            frame.to_csv(tmp_path / folder / name, index=False)
    assert compare.main([str(tmp_path / "left"), str(tmp_path / "right")]) == 0  # NaN equals NaN; timing ignored
    assert "identical" in capsys.readouterr().out

    changed = frames["curves.csv"].copy()
    changed.loc[1, "wrong_bits_per_seq"] = 0.10000001
    changed.to_csv(tmp_path / "right" / "curves.csv", index=False)
    assert compare.main([str(tmp_path / "left"), str(tmp_path / "right")]) == 1
    assert "curves.csv: row 1 (a), wrong_bits_per_seq: 0.1 vs 0.10000001" in capsys.readouterr().out

    frames["runs.csv"].drop(columns="seq_per_s").assign(extra=1).to_csv(tmp_path / "right" / "runs.csv", index=False)
    assert any("runs.csv: columns differ" in line for line in compare.differences(tmp_path / "left",
                                                                                    tmp_path / "right"))
