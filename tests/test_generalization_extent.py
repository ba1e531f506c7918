"""How far a final model generalises: the solved rule, the longest contiguous solved size and the 2x size, on
hand-made generalisation tables; and the stop rule that waits for the error to stay below the threshold."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.registry import build_task


def test_copy_solved_up_to_and_2x():
    task = build_task("copy", bits=4, train_sizes=[1, 8], test_sizes=[24, 8, 16, 20])  # order given is irrelevant
    assert task.double_size() == (16,)
    extent = task.solved_extent({(8,): 0.0, (16,): 1.0, (20,): 0.4, (24,): 7.5})
    # 16 at exactly 1 wrong bit is solved (at most 1); 20 is solved too, 24 is not
    assert extent == {"solved_up_to": "L=20", "test_size_2x": "L=16", "solved_2x": True}


def test_a_failure_breaks_the_contiguous_run():
    task = build_task("copy", bits=4, train_sizes=[1, 8], test_sizes=[8, 16, 20, 24])
    extent = task.solved_extent({(8,): 0.2, (16,): 1.01, (20,): 0.0, (24,): 0.0})
    assert extent == {"solved_up_to": "L=8", "test_size_2x": "L=16", "solved_2x": False}  # 20 and 24 do not count


def test_nothing_solved_and_nan():
    task = build_task("copy", bits=4, train_sizes=[1, 8], test_sizes=[8, 16])
    assert task.solved_extent({(8,): math.nan, (16,): 0.0})["solved_up_to"] is None  # NaN is never solved
    assert task.solved_extent({(8,): 3.0, (16,): 0.0}) == {"solved_up_to": None, "test_size_2x": "L=16",
                                                          "solved_2x": True}


def test_no_size_at_twice_the_training_range():
    task = build_task("copy", bits=4, train_sizes=[1, 8], test_sizes=[8, 12])
    assert task.double_size() is None
    assert task.solved_extent({(8,): 0.0, (12,): 0.0}) == {"solved_up_to": "L=12", "test_size_2x": None,
                                                          "solved_2x": None}


def test_two_part_sizes_order_by_sequence_length_and_2x_needs_every_part():
    task = build_task("repeat_copy", bits=4, train_sizes={"L": [1, 3], "n": [1, 3]},
                      test_sizes=[[3, 3], [6, 3], [3, 6], [6, 6]])
    # T = L + 1 + n L + 1: (3,3) 14, (3,6) 23, (6,3) 26, (6,6) 44; only (6, 6) doubles both parts
    assert [task.size_label(s) for s in task.ordered_test_sizes()] == ["L=3,n=3", "L=3,n=6", "L=6,n=3", "L=6,n=6"]
    assert task.double_size() == (6, 6)
    extent = task.solved_extent({(3, 3): 0.0, (3, 6): 0.5, (6, 3): 2.0, (6, 6): 0.0})
    assert extent == {"solved_up_to": "L=3,n=6", "test_size_2x": "L=6,n=6", "solved_2x": True}


def test_a_task_without_a_solved_rule():
    task = build_task("ngrams")
    assert task.solved_when is None
    assert task.solved_extent({(400,): 0.0}) == {"solved_up_to": None, "test_size_2x": "length=400",
                                                 "solved_2x": None}


# ---- the stop rule ----------------------------------------------------------------------------------------------

SCRIPT = [9.0, 0.05, 3.0, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]  # wrong bits/seq at evaluations 0, 1, ...


@pytest.fixture
def scripted_scores(monkeypatch):
    """Evaluations on the training distribution follow SCRIPT (one entry per evaluation; generalisation scores 0)."""
    import bench.train as train

    calls = {"n": 0}
    real_score = train.score

    def score(model, task, batches, device):
        metrics = real_score(model, task, batches, device)
        if batches is train.evaluation_set(task, *score.eval_args):
            metrics["wrong_bits_per_seq"] = SCRIPT[min(calls["n"], len(SCRIPT) - 1)]
            calls["n"] += 1
        return metrics

    monkeypatch.setattr(train, "score", score)
    return score


@pytest.mark.parametrize("patience, stops_at", [(1, 1), (3, 5)])
def test_stop_patience(tmp_path, scripted_scores, patience, stops_at):
    from bench.grid import expand, load_suite
    from bench.train import task_key, train_run

    overrides = ["seeds=1", "train.steps=10", "train.eval_every=1", "train.eval_sequences=4",
                 "train.generalization_sequences=2", "train.batch_size=2", "train.stop_at_convergence=true",
                 f"train.stop_patience={patience}", "tasks={copy: {bits: 2, train_sizes: [1, 2], test_sizes: [2]}}",
                 "models={lstm: {layers: 1, units: 4}}"]
    spec = expand(load_suite("smoke", overrides))[0]
    scripted_scores.eval_args = (spec.train.eval_sequences, spec.eval_seed, task_key(spec))
    result = train_run(spec, tmp_path / "run")
    assert result["converge_step"] == 1           # the first evaluation below the threshold, whatever the patience
    assert result["steps"] == stops_at            # patience 3: steps 3, 4, 5 (step 2 broke the first streak)


def test_stop_patience_keeps_old_run_ids():
    """stop_patience enters the run_id only when set away from 1, so earlier suites find their finished runs."""
    from bench.grid import expand, load_suite

    plain = expand(load_suite("smoke", ["seeds=1"]))[0]
    same = expand(load_suite("smoke", ["seeds=1", "train.stop_patience=1"]))[0]
    other = expand(load_suite("smoke", ["seeds=1", "train.stop_patience=3"]))[0]
    assert plain.run_id == same.run_id != other.run_id
    assert "stop_patience" not in plain.identity()["train"]


def test_empty_compiled_files_are_removed(tmp_path, monkeypatch):
    """A compile killed mid-write leaves a zero-byte .so that would fail every later compile: it is removed."""
    from bench.forward import repair_compile_cache

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    torn = tmp_path / "ab" / "torn.main.so"
    good = tmp_path / "cd" / "good.main.so"
    for path, data in ((torn, b""), (good, b"\x7fELF")):
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    assert repair_compile_cache() == 1
    assert not torn.exists() and Path(good).read_bytes() == b"\x7fELF"


def test_position_errors_script_matches_the_generalisation_set(tmp_path):
    """scripts/position_errors.py scores a finished run's saved model per output position; the positions sum to the
    suite's own generalisation error at that size (same model, same sequences)."""
    import importlib.util

    import pandas as pd

    from bench.cli import main as cli_main
    from tests.conftest import REPO

    out = tmp_path / "suite"
    assert cli_main(["run", "--suite", "smoke", "--out", str(out), "--no-report", "--no-estimate", "--set", "seeds=1",
                     "--set", "train.steps=4", "--set", "train.eval_every=2",
                     "--set", "tasks={copy: {bits: 3, train_sizes: [1, 3], test_sizes: [3, 6]}}",
                     "--set", "models={lstm: {layers: 1, units: 8}}"]) == 0
    spec = importlib.util.spec_from_file_location("position_errors", REPO / "scripts" / "position_errors.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    # the smoke suite scores 8 generalisation sequences per size: the same 8 here
    assert script.main([str(out), "--task", "copy", "--size", "6", "--sequences", "8",
                        "--out", str(tmp_path / "pos")]) == 0
    positions = pd.read_csv(tmp_path / "pos" / "position_errors.csv")
    assert list(positions["position"]) == [1, 2, 3, 4, 5, 6]
    gen = pd.read_csv(out / "generalization.csv").set_index("size")
    assert positions["wrong_bits"].sum() == pytest.approx(gen.loc["L=6", "wrong_bits_per_seq"])
    assert (tmp_path / "pos" / "position_errors.png").stat().st_size > 0
