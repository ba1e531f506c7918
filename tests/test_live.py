"""Watching a running suite: curve.csv is rewritten at every evaluation (and a resumed run ends with the same curve),
the report renders a suite whose runs are still training (marked unfinished, counted in no statistic), and
`--tensorboard DIR` logs each run's curves for TensorBoard.

Without the tensorboard package the TensorBoard tests skip, except in CI (env CI set), where they fail and say what
to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import time

import pandas as pd
import pytest
import torch

from bench.cli import main as cli_main
from bench.grid import expand, load_suite
from bench.hooks import TENSORBOARD_HINT, TrainingHooks
from bench.options import WorkerOptions
from bench.report import write_report
from bench.results import RUNNING, collect, load_unfinished
from bench.train import FaultInjected, Member, train_population, train_run

OVERRIDES = ["tasks={copy: {bits: 2, train_sizes: [1, 3], test_sizes: [3, 4]}}", "models={lstm: {layers: 1, units: 4}}",
             "seeds=2", "train.steps=10", "train.eval_every=2", "train.checkpoint_every=4", "train.batch_size=2",
             "train.eval_sequences=4", "train.generalization_sequences=2", "device=cpu"]
ONE_THREAD = WorkerOptions(threads=1)
#: the CLI form of OVERRIDES, for runs through `ntm-bench run`
CLI_SETS = [arg for item in OVERRIDES for arg in ("--set", item)]


def _specs(extra=()):
    return expand(load_suite("smoke", [*OVERRIDES, *extra]))


def _rows(path):
    return len(pd.read_csv(path)) if path.exists() else 0


def _curve(folder):
    return pd.read_csv(folder / "curve.csv").drop(columns=["wall_s"])


# ---- curve.csv, live -----------------------------------------------------------------------------------------------

def test_curve_is_rewritten_at_every_evaluation(tmp_path):
    spec = _specs()[0]
    folder = tmp_path / spec.run_id
    seen = []

    class Watch(TrainingHooks):
        def on_eval(self, member, row):  # called after the curve is written: the file holds every evaluation so far
            assert not (folder / "result.json").exists()
            seen.append((row["step"], _rows(folder / "curve.csv")))

    result = train_run(spec, folder, ONE_THREAD, [Watch()])
    assert result["status"] == "done"
    assert seen == [(0, 1), (2, 2), (4, 3), (6, 4), (8, 5), (10, 6)]
    assert list(pd.read_csv(folder / "curve.csv")["step"]) == [0, 2, 4, 6, 8, 10]


def test_an_interrupted_run_keeps_its_partial_curve_and_resumes_to_the_same_one(tmp_path, monkeypatch):
    spec = _specs()[0]
    reference = train_run(spec, tmp_path / "reference", ONE_THREAD)
    folder = tmp_path / spec.run_id
    monkeypatch.setenv("BENCH_FAULT", "step:7")  # raises at step 7: after the checkpoint at 4 and the eval at 6
    with pytest.raises(FaultInjected):
        train_run(spec, folder, ONE_THREAD)
    assert not (folder / "result.json").exists()
    assert list(pd.read_csv(folder / "curve.csv")["step"]) == [0, 2, 4, 6]  # the evaluations done so far
    monkeypatch.delenv("BENCH_FAULT")
    Member(spec, folder, torch.device("cpu"))  # loading the checkpoint (step 4) shows its curve, not step 6's row
    assert list(pd.read_csv(folder / "curve.csv")["step"]) == [0, 2, 4]
    resumed = train_run(spec, folder, ONE_THREAD)
    assert resumed["final_wrong_bits_per_seq"] == reference["final_wrong_bits_per_seq"]
    pd.testing.assert_frame_equal(_curve(folder), _curve(tmp_path / "reference"))


def test_each_seed_of_a_population_writes_its_own_curve(tmp_path, monkeypatch):
    specs = _specs()
    assert len(specs) == 2
    monkeypatch.setenv("BENCH_FAULT", "step:5")
    with pytest.raises(FaultInjected):
        train_population(specs, [tmp_path / s.run_id for s in specs], ONE_THREAD)
    for spec in specs:
        assert list(pd.read_csv(tmp_path / spec.run_id / "curve.csv")["step"]) == [0, 2, 4]


# ---- the report of a suite that is still running -------------------------------------------------------------------

def _make_unfinished(folder, evaluations: int) -> None:
    """Turn a finished run folder back into one still training: no result yet, its first `evaluations` rows."""
    for name in ("result.json", "generalization.csv", "samples.npz", "checkpoint.pt"):
        (folder / name).unlink(missing_ok=True)
    curve = pd.read_csv(folder / "curve.csv").head(evaluations)
    curve.to_csv(folder / "curve.csv", index=False)


@pytest.fixture(scope="module")
def partial_suite(tmp_path_factory):
    """A finished suite of 2 models x 2 seeds, three of whose runs are turned back into unfinished ones: lstm seed 2
    and both ntm seeds (so ntm has no finished run at all)."""
    out = tmp_path_factory.mktemp("partial")
    models = "models={lstm: {layers: 1, units: 4}, ntm: {controller_units: 4, memory_locations: 4, memory_width: 3}}"
    sets = [*CLI_SETS, "--set", models]
    assert cli_main(["run", "--suite", "smoke", "--out", str(out), "--no-report", "--no-estimate", *sets]) == 0
    runs = pd.read_csv(out / "runs.csv")
    unfinished = runs[(runs["model"] == "ntm") | (runs["seed"] == 2)]
    for run_id in unfinished["run_id"]:
        _make_unfinished(out / "runs" / run_id, evaluations=3)  # last step 4 of 10
    return out, set(unfinished["run_id"])


def test_collect_takes_in_unfinished_runs_only_when_asked(partial_suite):
    out, unfinished = partial_suite
    runs = collect(out)["runs"]  # the runner's collect: runs with a result only, as before
    assert len(runs) == 1 and set(runs["status"]) == {"done"}
    frames = collect(out, unfinished=True)
    runs = frames["runs"].set_index("run_id")
    assert set(runs.index[runs["status"] == RUNNING]) == unfinished
    assert (runs.loc[list(unfinished), "steps"] == 4).all()
    assert runs.loc[list(unfinished), "final_wrong_bits_per_seq"].isna().all()
    curves = frames["curves"]
    assert (curves[curves["run_id"].isin(unfinished)].groupby("run_id").size() == 3).all()


def test_report_of_a_running_suite(partial_suite):
    out, unfinished = partial_suite
    page = write_report(out).read_text()  # ntm has no finished run: the report still renders
    assert 'id="unfinished"' in page and "3 run(s) still running" in page
    assert "copy / ntm / seed 1 at step 4 of 10" in page
    assert 'class="badge running">1 unfinished' in page and 'class="badge running">2 unfinished' in page
    assert "curves_copy.png" in page
    header = re.search(r"<dt>runs</dt>\s*<dd>(.*?)</dd>", page, re.S).group(1)
    assert re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", header)).startswith("1 of 4 (3 without a result yet): 1 done ·")
    summary = pd.read_csv(out / "summary.csv").set_index("model")
    assert summary.loc["lstm", "seeds"] == 1 and summary.loc["ntm", "seeds"] == 0  # only finished runs count
    assert summary.loc["ntm", "converged"] == 0
    runs = pd.read_csv(out / "runs.csv")
    assert (runs["status"] == RUNNING).sum() == 3
    assert "unfinished (still running, not counted)" in (out / "summary.md").read_text()
    header = re.sub(r"<style>.*?</style>", "", page, flags=re.S).split('id="scorecard"')[0].split('id="summary"')[0]
    assert "diverged" not in header  # the header flags no diverged run (the scorecard's caption may say the word)


def test_runs_not_started_while_others_train_are_the_queue_not_a_problem(partial_suite, tmp_path):
    out = tmp_path / "suite"
    shutil.copytree(partial_suite[0], out)  # the fixture is shared: change a copy
    manifest = json.loads((out / "suite.json").read_text())
    manifest["run_ids"].append("0123456789ab")  # a run with no folder yet
    (out / "suite.json").write_text(json.dumps(manifest))
    page = write_report(out).read_text()
    assert "1 more run(s) have not started yet." in page
    assert "have no result yet" not in page


def test_a_failed_run_being_retried_counts_as_unfinished(tmp_path):
    spec = _specs()[0]
    folder = tmp_path / spec.run_id
    train_run(spec, folder, ONE_THREAD)
    (folder / "result.json").write_text('{"status": "failed", "error": "boom"}')
    assert load_unfinished(folder) is None  # failed after its last evaluation: a failed run
    later = time.time() + 5
    os.utime(folder / "curve.csv", (later, later))  # a retry has evaluated since
    spec_json, curve = load_unfinished(folder)
    assert spec_json["run_id"] == spec.run_id and len(curve) == 6


# ---- TensorBoard ---------------------------------------------------------------------------------------------------

def require_tensorboard() -> None:
    """Skip without the tensorboard package, or fail under CI (env CI set), saying what to install."""
    if importlib.util.find_spec("tensorboard") is None:
        if os.environ.get("CI"):
            pytest.fail("tensorboard is not installed, so --tensorboard goes untested: pip install tensorboard "
                        "(the dev extra includes it)")
        pytest.skip("tensorboard is not installed: pip install tensorboard")


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_logs_each_run_at_every_evaluation(tmp_path):
    require_tensorboard()
    spec = _specs()[0]
    train_run(spec, tmp_path / "run", WorkerOptions(threads=1, tensorboard=str(tmp_path / "tb")))
    log_dir = tmp_path / "tb" / "smoke" / "copy" / "lstm" / f"seed{spec.seed}"
    scalars = _scalars(log_dir)
    assert {"train/loss_bits_per_seq", "eval/loss_bits_per_seq", "eval/wrong_bits_per_seq",
            "eval/seq_accuracy"} <= set(scalars)
    curve = pd.read_csv(tmp_path / "run" / "curve.csv")
    assert [s for s, _ in scalars["eval/wrong_bits_per_seq"]] == list(curve["step"])
    assert [v for _, v in scalars["eval/wrong_bits_per_seq"]] == pytest.approx(list(curve["wrong_bits_per_seq"]))
    assert [s for s, _ in scalars["train/loss_bits_per_seq"]] == [2, 4, 6, 8, 10]


def test_tensorboard_option_reaches_the_workers(tmp_path):
    require_tensorboard()
    out, board = tmp_path / "out", tmp_path / "tb"
    assert cli_main(["run", "--suite", "smoke", "--out", str(out), "--no-report", "--no-estimate", "--workers", "2",
                     "--tensorboard", str(board), *CLI_SETS]) == 0
    for seed in (1, 2):  # trained in spawned worker processes
        scalars = _scalars(board / "smoke" / "copy" / "lstm" / f"seed{seed}")
        assert len(scalars["eval/wrong_bits_per_seq"]) == 6
    for spec_file in (out / "runs").glob("*/spec.json"):
        assert "tensorboard" not in spec_file.read_text()  # not in the run's spec, so not in its run_id


def test_tensorboard_missing_fails_up_front_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("bench.hooks.tensorboard_available", lambda: False)
    out = tmp_path / "out"
    assert cli_main(["run", "--suite", "smoke", "--out", str(out), "--tensorboard", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {TENSORBOARD_HINT}"]
    assert not out.exists()
