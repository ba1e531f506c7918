"""Task protocols (bench/protocol.py): a fingerprint of what a task is evaluated on and scored by, recorded in
tests/data/protocols.json for every built-in task, in suite.json per task and in runs.csv's `protocol` column."""

from __future__ import annotations

import importlib.util
import json
import sys

import pandas as pd
import pytest
import torch

from bench import evaluate
from bench.cli import main
from bench.grid import expand, load_suite, task_key
from bench.protocol import describe_difference, protocol
from bench.registry import build_task
from bench.report.data import load_suite_data
from bench.results import RUNS_COLUMNS, collect, read_json
from tasks.base import Task
from tasks.copy import Copy
from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("protocols_script", REPO / "scripts" / "protocols.py")
script = sys.modules["protocols_script"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

SMALL = (64, 16, 20141020)  # eval_sequences, generalization_sequences, eval_seed


def entry(task, task_type: str = "copy", params: dict | None = None, settings=SMALL) -> dict:
    """The suite.json entry of `task`, as bench.runner.task_facts writes it."""
    params = {} if params is None else params
    return {"type": task_type, **task.facts(),
            "protocol": protocol(task, task_type, params, *settings, task_key(task_type, params))}


# ---- the record: a change to a task's evaluation data or rules needs a version bump ----------------------------------

def test_every_built_in_task_matches_its_recorded_protocol():
    lines = script.problems(script.current(), script.recorded())
    assert not lines, "\n".join(lines)


def test_the_record_names_what_to_do():
    recorded = {"copy": {"version": 1, "fingerprint": "a" * 64}}
    changed = script.problems({"copy": {"version": 1, "fingerprint": "b" * 64}}, recorded)
    assert len(changed) == 1
    assert "bump `version` in tasks/copy.py to 2" in changed[0] and "CHANGELOG.md" in changed[0]
    assert "scripts/protocols.py --write" in changed[0]
    bumped = script.problems({"copy": {"version": 2, "fingerprint": "b" * 64}}, recorded)
    assert len(bumped) == 1 and "version 2 is not recorded" in bumped[0]  # every bump is recorded
    assert script.problems({"copy": {"version": 1, "fingerprint": "a" * 64}}, recorded) == []
    assert "no recorded protocol" in script.problems({**recorded, "reverse": {"version": 1, "fingerprint": "c"}},
                                                     recorded)[0]
    assert "lower than the recorded" in script.problems({"copy": {"version": 0, "fingerprint": "a" * 64}},
                                                        recorded)[0]


def test_a_changed_example_without_a_bump_fails_the_record(monkeypatch):
    original = Copy.example

    def flipped(self, size, generator):
        inputs, targets, mask = original(self, size, generator)
        return inputs, 1 - targets, mask

    monkeypatch.setattr(Copy, "example", flipped)
    monkeypatch.setattr(Copy, "examples", Task.examples)  # batches from `example`, as the default does
    lines = script.problems(script.current(), script.recorded())
    assert len(lines) == 1 and lines[0].startswith("task copy: its evaluation data or rules changed")


# ---- the fingerprint ------------------------------------------------------------------------------------------------

def test_a_protocol_is_json_data_with_a_sha256_fingerprint():
    task = build_task("copy", bits=4)
    found = protocol(task, "copy", {"bits": 4}, *SMALL, task_key("copy", {"bits": 4}))
    assert set(found) == {"version", "fingerprint", "short", "params", "evaluation"}
    assert found["version"] == 1 and len(found["fingerprint"]) == 64 and found["short"] == found["fingerprint"][:12]
    int(found["fingerprint"], 16)
    assert found["params"]["bits"] == 4 and found["params"]["train_sizes"] == [1, 20]  # defaults resolved
    assert found["evaluation"] == {"eval_sequences": 64, "generalization_sequences": 16, "eval_seed": 20141020}
    assert json.loads(json.dumps(found)) == found
    assert protocol(build_task("copy", bits=4), "copy", {"bits": 4}, *SMALL, task_key("copy", {"bits": 4})) == found


def test_it_hashes_the_sets_training_draws_and_keeps_none():
    task = build_task("copy")
    key = task_key("copy", {})
    evaluate._CACHE.clear()
    fresh = evaluate.evaluation_set(task, 64, 20141020, key, cache=False)
    assert not evaluate._CACHE  # the fingerprint keeps no copy of the sets
    cached = evaluate.evaluation_set(task, 64, 20141020, key)
    for a, b in zip(fresh, cached, strict=True):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets) and torch.equal(a.mask, b.mask)
    evaluate._CACHE.clear()


def test_equal_protocols_give_no_difference():
    assert describe_difference("copy", entry(build_task("copy")), entry(build_task("copy"))) is None


def test_a_changed_rule_threshold_changes_the_fingerprint_and_is_named():
    mine, stricter, solved = build_task("copy"), build_task("copy"), build_task("copy")
    stricter.converge_below = 0.05  # the rule changed in the code, the suite's parameters did not
    solved.solved_at_most = 0.5
    line = describe_difference("copy", entry(mine), entry(stricter))
    assert line == "task copy: convergence rule wrong bits/seq < 0.1 vs wrong bits/seq < 0.05"
    line = describe_difference("copy", entry(mine), entry(solved))
    assert line == "task copy: solved rule wrong bits/seq ≤ 1 vs wrong bits/seq ≤ 0.5"


def test_a_changed_evaluation_tensor_changes_the_fingerprint_and_is_named(monkeypatch):
    before = entry(build_task("copy"))
    original = Copy.example

    def one_bit_off(self, size, generator):
        inputs, targets, mask = original(self, size, generator)
        targets = targets.clone()
        targets[-1, 0] = 1 - targets[-1, 0]
        return inputs, targets, mask

    monkeypatch.setattr(Copy, "example", one_bit_off)
    monkeypatch.setattr(Copy, "examples", Task.examples)  # batches from `example`, as the default does
    after = entry(build_task("copy"))
    assert after["protocol"]["fingerprint"] != before["protocol"]["fingerprint"]
    assert describe_difference("copy", before, after) == (
        f"task copy: the evaluation or generalisation sets differ (fingerprint {before['protocol']['short']} vs "
        f"{after['protocol']['short']})")


def test_changed_evaluation_settings_are_named():
    task = build_task("copy")
    line = describe_difference("copy", entry(task), entry(task, settings=(65, 16, 20141020)))
    assert line == "task copy: evaluation settings differ: eval_sequences 64 vs 65"
    line = describe_difference("copy", entry(task), entry(task, settings=(64, 8, 7)))
    assert line == "task copy: evaluation settings differ: generalization_sequences 16 vs 8, eval_seed 20141020 vs 7"


def test_params_differences_are_named():
    line = describe_difference("copy", entry(build_task("copy")),
                               entry(build_task("copy", bits=4, delimiter="all_ones"), params={
                                   "bits": 4, "delimiter": "all_ones"}))
    assert line == 'task copy: params differ: bits 8 vs 4, delimiter "flag" vs "all_ones"'
    # a default written out is the same parameter, but it draws the sets under another key (as training does)
    line = describe_difference("copy", entry(build_task("copy")), entry(build_task("copy"), params={"bits": 8}))
    assert line.startswith("task copy: the evaluation or generalisation sets differ")


def test_type_version_and_missing_protocols_are_named():
    copy = entry(build_task("copy"))
    bumped_task = build_task("copy")
    bumped_task.version = 2
    assert describe_difference("copy", copy, entry(bumped_task)) == "task copy: protocol version 1 vs 2"
    other = entry(build_task("repeat_copy"), "repeat_copy")
    assert describe_difference("copy", copy, other) == "task copy: task type copy vs repeat_copy"
    old = {k: v for k, v in copy.items() if k != "protocol"}
    assert describe_difference("copy", copy, old) == ("task copy: theirs has no protocol fingerprint (written "
                                                      "before protocols were versioned)")
    assert describe_difference("copy", old, copy).startswith("task copy: mine has no protocol fingerprint")
    assert describe_difference("copy", old, old) == ("task copy: neither side has a protocol "
                                                      "fingerprint (written before protocols were versioned)")


# ---- suite.json and runs.csv ----------------------------------------------------------------------------------------

TINY = ["--set", "tasks={copy: {bits: 3, train_sizes: [1, 3], test_sizes: [3, 6], train: {eval_sequences: 12}},"
        " ngrams: {context_bits: 2, train_sizes: [12, 12], test_sizes: [24]}}",
        "--set", "models={lstm: {layers: 1, units: 16}}", "--set", "seeds=[1]",
        "--set", "train.steps=10", "--set", "train.eval_every=10"]


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("protocol")
    assert main(["run", "--suite", "smoke", "--out", str(out), "--no-report", "--no-estimate", *TINY]) == 0
    return out


def test_suite_json_records_each_tasks_protocol_under_its_own_settings(tiny_out):
    tasks = read_json(tiny_out / "suite.json")["tasks"]
    assert tasks["copy"]["protocol"]["evaluation"] == {"eval_sequences": 12, "generalization_sequences": 8,
                                                       "eval_seed": 20141020}  # copy's own train: eval_sequences
    assert tasks["ngrams"]["protocol"]["evaluation"]["eval_sequences"] == 16
    # exactly what each run trains and is scored on: its spec's task, settings and task key
    from bench.train import task_key as run_task_key

    suite = load_suite("smoke", [item for item in TINY if item != "--set"])
    for run in expand(suite):
        found = protocol(build_task(run.task_type, **run.task_params), run.task_type, run.task_params,
                         run.train.eval_sequences, run.train.generalization_sequences, run.eval_seed,
                         run_task_key(run))
        assert tasks[run.task]["protocol"] == found


def test_runs_csv_carries_the_short_fingerprint(tiny_out):
    runs = pd.read_csv(tiny_out / "runs.csv", dtype={"protocol": str})
    assert list(runs.columns) == RUNS_COLUMNS
    tasks = read_json(tiny_out / "suite.json")["tasks"]
    assert len(runs) == 2
    for _, row in runs.iterrows():
        assert row["protocol"] == tasks[row["task"]]["protocol"]["short"]
    assert dict(zip(load_suite_data(tiny_out).runs["task"], load_suite_data(tiny_out).runs["protocol"])) == {
        label: fact["protocol"]["short"] for label, fact in tasks.items()}


def test_a_folder_written_before_protocols_has_an_empty_column(tiny_out, tmp_path):
    manifest = read_json(tiny_out / "suite.json")
    for fact in manifest["tasks"].values():
        del fact["protocol"]
    old = tmp_path / "old"
    old.mkdir()
    (old / "suite.json").write_text(json.dumps(manifest))
    (old / "runs").symlink_to(tiny_out / "runs")
    runs = collect(old)["runs"]
    assert runs["protocol"].isna().all() or (runs["protocol"] == "").all()
    assert pd.read_csv(old / "runs.csv")["protocol"].isna().all()
    assert (load_suite_data(old).runs["protocol"] == "").all()
