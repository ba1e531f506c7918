"""Convergence is decided in one place (`tasks.base.convergence`): training stops by it, runs.csv is scored by it
under the rule suite.json records, and a run scored under another rule is never mixed in unnoticed."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.cli import main
from bench.grid import expand, load_suite
from bench.results import collect, read_json
from bench.runner import prepare
from tasks.base import Rule, convergence
from tests.test_end_to_end import TINY

# an easy task and a budget in which the LSTM converges and then stops (stop_patience 2) before its 1,000 steps
EASY = ["--set", "tasks={copy: {bits: 2, train_sizes: [1, 2], test_sizes: [2, 4]}}",
        "--set", "models={lstm: {layers: 1, units: 16}}", "--set", "train.steps=1000", "--set", "train.eval_every=10",
        "--set", "train.checkpoint_every=50", "--set", "train.stop_at_convergence=true",
        "--set", "train.stop_patience=2", "--set", "train.lr=0.01"]


def _run(out, *overrides):
    assert main(["run", "--suite", "smoke", "--out", str(out), "--no-report", "--no-estimate", "--seeds", "1",
                 *overrides]) == 0


def _suite(overrides):
    """The suite `_run` trains, loaded as the CLI loads it."""
    return load_suite("smoke", [arg for arg in overrides if arg != "--set"] + ["seeds=1"])


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    out = tmp_path_factory.mktemp("converged")
    _run(out, *EASY)
    return out


def test_training_stops_where_the_one_function_says(stopped):
    run = pd.read_csv(stopped / "runs.csv").iloc[0]
    curve = pd.read_csv(stopped / "runs" / run["run_id"] / "curve.csv")
    rule = Rule.from_json(read_json(stopped / "suite.json")["tasks"]["copy"]["convergence"])
    reached = convergence(curve.to_dict("records"), rule)
    assert run["converged"] and run["converge_step"] == reached.step
    assert run["steps"] < 1000 and reached.streak == 2        # stopped after 2 evaluations in a row met the rule
    spec = read_json(stopped / "runs" / run["run_id"] / "spec.json")
    assert spec["rules"]["convergence"] == rule.to_json()    # the rule is part of the run's recorded protocol


def test_collect_scores_every_run_by_the_rule_suite_json_records(tmp_path):
    _run(tmp_path, *TINY)                                      # 30 steps, evaluated at 0, 10, 20, 30
    before = pd.read_csv(tmp_path / "runs.csv")
    assert not before["converged"].any()
    manifest = read_json(tmp_path / "suite.json")
    manifest["tasks"]["copy"]["convergence"]["threshold"] = 1e9  # a rule every trained evaluation meets
    (tmp_path / "suite.json").write_text(json.dumps(manifest))
    runs = collect(tmp_path)["runs"]
    assert runs["converged"].all() and set(runs["converge_step"]) == {10}  # step 0 never counts
    assert set(runs["converge_sequences"]) == {10 * 8}
    result = read_json(tmp_path / "runs" / runs["run_id"].iloc[0] / "result.json")
    assert result["converged"] is False                        # the run's own record is left as it was


def test_a_run_stopped_under_another_rule_is_trained_again_and_one_at_its_budget_is_kept(stopped, tmp_path):
    suite = _suite(EASY)
    (spec,) = expand(suite)
    run_dir = stopped / "runs" / spec.run_id
    assert prepare(suite, [spec], stopped) == []               # same rule: finished, nothing to do
    recorded = read_json(run_dir / "spec.json")
    recorded["rules"]["convergence"]["threshold"] = 0.5        # as if it had stopped under a looser rule
    (run_dir / "spec.json").write_text(json.dumps(recorded))
    budget = tmp_path / "budget"
    _run(budget, *TINY)                                        # trained to its budget: rescored, not retrained
    (kept,) = expand(_suite(TINY))
    kept_dir = budget / "runs" / kept.run_id
    kept_spec = read_json(kept_dir / "spec.json")
    kept_spec["rules"]["convergence"]["threshold"] = 0.5
    (kept_dir / "spec.json").write_text(json.dumps(kept_spec))
    assert prepare(_suite(TINY), [kept], budget) == []
    assert (kept_dir / "result.json").is_file()
    assert [s.run_id for s in prepare(suite, [spec], stopped)] == [spec.run_id]
    assert not run_dir.exists()                                # its stale files are gone before it retrains
