"""bench.api: a suite from a dict, run from Python; its results and models loaded back."""

from __future__ import annotations

import io
import subprocess
import sys

import pandas as pd
import pytest
import torch

from bench.api import UsageError, load_model, load_results, run_suite
from bench.config import ConfigError
from tests.conftest import REPO

TASKS = {"copy": {"bits": 3, "train_sizes": [1, 3], "test_sizes": [3, 6]}}
MODELS = {"lstm": {"layers": 1, "units": 8}, "ntm": {"controller_units": 8, "memory_locations": 8,
                                                     "memory_width": 4}}
TINY = {"tasks": TASKS, "models": MODELS, "train.steps": 12, "train.eval_every": 6, "train.checkpoint_every": 6}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "out"
    return run_suite({"name": "api_try", "include": "smoke.yaml", "seeds": 2}, out=out, overrides=TINY)


def test_run_suite_from_a_dict_returns_its_tidy_results(results):
    assert results.suite["name"] == "api_try"
    assert sorted(zip(results.runs["model"], results.runs["seed"])) == [("lstm", 1), ("lstm", 2), ("ntm", 1),
                                                                          ("ntm", 2)]
    assert set(results.runs["status"]) == {"done"}
    assert set(results.curves["step"]) == {0, 6, 12}  # evaluated before training, then every 6 steps
    assert sorted(set(results.generalization["size"])) == ["L=3", "L=6"]
    assert (results.folder / "index.html").is_file()


def test_the_summary_equals_the_reports_summary_csv(results):
    written = pd.read_csv(results.folder / "summary.csv")
    ours = pd.read_csv(io.StringIO(results.summary.to_csv(index=False)))
    pd.testing.assert_frame_equal(ours, written)
    assert list(ours["model"]) == ["lstm", "ntm"] and list(ours["seeds"]) == [2, 2]


def test_load_results_reads_the_same_frames_back(results):
    again = load_results(results.folder)
    pd.testing.assert_frame_equal(again.runs, results.runs)
    pd.testing.assert_frame_equal(again.summary, results.summary)


def test_a_second_run_keeps_finished_runs(results):
    before = results.runs.set_index("run_id")["wall_s"]
    again = run_suite({"name": "api_try", "include": "smoke.yaml", "seeds": 2}, out=results.folder, overrides=TINY,
                      report=False)
    pd.testing.assert_series_equal(again.runs.set_index("run_id")["wall_s"], before)


def test_load_model_gives_the_trained_model_in_eval_mode(results):
    run_id = results.runs.loc[results.runs["model"] == "ntm", "run_id"].iloc[0]
    model = load_model(results.folder / "runs" / run_id)
    assert isinstance(model, torch.nn.Module) and not model.training
    saved = torch.load(results.folder / "runs" / run_id / "checkpoint.pt", weights_only=True)["model"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_bad_input_raises_one_line_errors_before_writing(tmp_path):
    with pytest.raises(ConfigError, match=r"<dict>: name: a suite given as a dict needs a name"):
        run_suite({"include": "smoke.yaml"}, out=tmp_path / "a")
    with pytest.raises(ConfigError, match=r"train\.lr"):
        run_suite({"name": "x", "include": "smoke.yaml"}, out=tmp_path / "b", overrides={"train.lr": -1})
    with pytest.raises(UsageError, match=r"--workers: must be >= 1"):
        run_suite("smoke", out=tmp_path / "c", workers=0)
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    with pytest.raises(UsageError, match=r"exists and is not a folder"):
        run_suite("smoke", out=blocker)
    with pytest.raises(UsageError, match=r"not a suite's output folder"):
        load_results(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_loading_results_imports_no_plotting_or_templating_library(results):
    """`load_results` reads the CSVs and the summary's numbers without matplotlib, seaborn or jinja2 (a fresh
    interpreter, so nothing imported by other tests counts)."""
    code = ("import sys\nfrom bench.api import load_results\n"
            f"summary = load_results({str(results.folder)!r}).summary\n"
            "assert list(summary['model']) == ['lstm', 'ntm'], summary\n"
            "heavy = sorted(m for m in ('matplotlib', 'seaborn', 'jinja2') if m in sys.modules)\n"
            "assert not heavy, heavy\nprint('light')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "light" in done.stdout, done.stderr
