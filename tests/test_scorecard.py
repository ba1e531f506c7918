"""The scorecard (docs/TASKS.md, "Scores"): each task's trivial error against an empirical count with the project's
metric code, the score on hand-made numbers, the median and fraction per model over hand-made runs, scorecard.csv
as the report writes it, and an older folder (no trivial errors in its facts) that renders without the panel."""

from __future__ import annotations

import html
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.metrics import LN2, MetricTotals, per_example
from bench.registry import build_task
from bench.report.data import load_suite_data, task_info
from bench.report.scorecard import (
    FROM_FINAL_EVALUATION,
    FROM_TEST_SIZES,
    SCORECARD_COLUMNS,
    THRESHOLD,
    point_score,
    score,
    scorecard,
)
from bench.results import atomic_write_csv, atomic_write_json, claim_output_folder, read_json
from tasks import TASKS
from tasks.base import Task
from tasks.copy import Copy

# ---- the trivial predictor, counted -----------------------------------------------------------------------------

#: (task, params): every task at its defaults, plus ranges that exercise Priority Sort's capped draw and a Repeat
#: Copy and N-Grams whose training sizes vary
TRIVIAL_CASES = [(name, {}) for name in TASKS] + [
    ("priority_sort", {"bits": 5, "train_sizes": {"inputs": [3, 6], "outputs": [2, 5]},
                       "test_sizes": [[6, 5], [9, 7]]}),
    ("repeat_copy", {"bits": 3, "train_sizes": {"L": [1, 4], "n": [2, 3]}, "test_sizes": [[4, 3], [8, 6]]}),
    ("ngrams", {"context_bits": 3, "train_sizes": [10, 30], "test_sizes": [40]}),
]


def _trivial_counts(task, batch) -> tuple[float, np.ndarray]:
    """The constant predictor's error on `batch`, scored by bench/metrics.py: all-zero logits, i.e. every bit
    predicted 0 (wrong bits) and probability 1/2 (loss). Returns the per-sequence mean (MetricTotals) and the
    per-example values (`per_example`), both of the task's error metric."""
    logits = torch.zeros_like(batch.targets)
    totals = MetricTotals()
    totals.add(logits, batch.targets, batch.mask)
    sums = per_example(logits, batch.targets, batch.mask)
    metric = task.error.metric
    values = sums["loss_nats"] / LN2 if metric == "loss_bits_per_seq" else sums["wrong_bits"]
    return totals.means()[metric], values.double().numpy()


def _close(mean: float, values: np.ndarray, expected: float) -> None:
    """`mean` of `values` within five standard errors of `expected` (up to float32 sums when every value is the
    same, as N-Grams' loss of 1 bit per scored bit)."""
    tolerance = 5 * values.std(ddof=1) / math.sqrt(len(values)) + 1e-6 * expected
    assert abs(mean - expected) <= tolerance, (mean, expected, tolerance)


@pytest.mark.parametrize("name,params", TRIVIAL_CASES, ids=[f"{n}{'-' + str(i) if p else ''}"
                                                            for i, (n, p) in enumerate(TRIVIAL_CASES)])
def test_trivial_error_matches_an_empirical_count(name, params):
    task = build_task(name, **params)
    generator = torch.Generator().manual_seed(5)
    for size in task.test_sizes:
        batch = task.sample(300, generator, size=size)
        assert (batch.mask.sum(1) == task.scored_steps(size)).all()
        _close(*_trivial_counts(task, batch), task.trivial_error(size))
    batch = task.sample(1500, generator)  # sizes from the training distribution
    _close(*_trivial_counts(task, batch), task.trivial_train_error())


def test_the_training_size_distribution_is_what_sample_size_draws():
    task = build_task("priority_sort", bits=3, train_sizes={"inputs": [3, 6], "outputs": [2, 5]},
                      test_sizes=[[6, 5]])
    distribution = task.train_size_distribution()
    assert math.isclose(sum(distribution.values()), 1.0)
    generator = torch.Generator().manual_seed(0)
    draws = 20_000
    counts = Counter(task.sample_size(generator) for _ in range(draws))
    assert set(counts) == set(distribution)
    for size, p in distribution.items():
        assert abs(counts[size] / draws - p) <= 5 * math.sqrt(p * (1 - p) / draws)


def test_the_default_counts_the_mask_of_one_example():
    class Plain(Copy):  # a task that gives no formula, as a plugin may not
        scored_steps = Task.scored_steps

    plain = Plain(bits=3, train_sizes=[1, 5], test_sizes=[7])
    assert plain.scored_steps((7,)) == 7 and plain.trivial_error((7,)) == 10.5
    assert plain.trivial_train_error() == Copy(bits=3, train_sizes=[1, 5]).trivial_train_error() == 4.5


def test_trivial_errors_by_formula_and_in_the_facts():
    assert build_task("copy", bits=8).trivial_error((10,)) == 40.0
    assert build_task("repeat_copy", bits=8).trivial_error((10, 20)) == 10 * 20 * 8 / 2 + 1  # the end marker
    assert build_task("associative_recall", bits=6).trivial_error((20,)) == 9.0              # 3 vectors, any k
    assert build_task("priority_sort", bits=8).trivial_error((40, 32)) == 128.0
    assert build_task("ngrams").trivial_error((400,)) == 395.0                               # 1 bit per scored bit
    assert build_task("copy", bits=8, train_sizes=[1, 20]).trivial_train_error() == pytest.approx(42.0)
    for name in TASKS:
        task = build_task(name)
        facts = task.facts()
        assert facts["trivial_errors"] == [task.trivial_error(s) for s in task.test_sizes]
        assert facts["trivial_error_train"] == task.trivial_train_error()
        info = task_info(name, {"type": name, **facts})
        assert [info.trivial_error(s) for s in info.test_sizes] == facts["trivial_errors"]


# ---- one score --------------------------------------------------------------------------------------------------

COPY = build_task("copy", bits=4, train_sizes=[1, 4], test_sizes=[2, 4, 8])   # trivial: 4, 8, 16 wrong bits
NGRAMS = build_task("ngrams", train_sizes=[20, 20], test_sizes=[40])           # trivial: 15 and 35 bits of loss


def _info(task):
    return task_info(task.name, {"type": task.name, **task.facts()})


def test_the_score_on_hand_made_errors():
    assert score(0.0, 16.0) == 1.0 and score(16.0, 16.0) == 0.0 and score(8.0, 16.0) == 0.5
    assert score(40.0, 16.0) == 0.0                       # worse than trivial: clipped at 0
    assert score(12.0, 16.0, solved=True) == 1.0          # the solved rule wins
    assert score(math.nan, 16.0) == 0.0                   # a broken model
    assert math.isnan(score(1.0, 0.0))                    # nothing to scale by
    copy = _info(COPY)
    assert point_score(copy, {"wrong_bits_per_seq": 1.0}, 16.0) == 1.0   # solved: at most 1 wrong bit
    assert point_score(copy, {"wrong_bits_per_seq": 8.0}, 16.0) == 0.5
    assert point_score(copy, {"wrong_bits_per_seq": 16.0}, 16.0) == 0.0
    assert point_score(copy, {"wrong_bits_per_seq": 30.0}, 16.0) == 0.0


def test_the_reference_form_scores_the_optimum_1_and_the_trivial_predictor_0():
    ngrams = _info(NGRAMS)
    trivial = ngrams.trivial_error([40])
    assert trivial == 35.0 and ngrams.solved is None
    optimum = {"optimal_loss_bits_per_seq": 24.0}
    assert point_score(ngrams, {"loss_bits_per_seq": 24.0, **optimum}, trivial) == 1.0
    assert point_score(ngrams, {"loss_bits_per_seq": 35.0, **optimum}, trivial) == 0.0
    assert point_score(ngrams, {"loss_bits_per_seq": 29.5, **optimum}, trivial) == 0.5   # halfway: 5.5 of 11
    assert point_score(ngrams, {"loss_bits_per_seq": 50.0, **optimum}, trivial) == 0.0
    assert math.isnan(point_score(ngrams, {"loss_bits_per_seq": 29.5}, trivial))        # no optimum: no score


# ---- hand-made suites -------------------------------------------------------------------------------------------

#: copy's wrong bits/seq at L = 2, 4, 8 per (model, seed); trivial 4, 8, 16. None: a run without generalisation rows
COPY_RUNS = {
    ("a", 1): ("done", (0.0, 0.5, 8.0)),     # learning 1 (both solved), generalisation 0.5
    ("a", 2): ("done", (2.0, 8.0, 20.0)),    # learning (0.5 + 0) / 2 = 0.25, generalisation 0 (clipped)
    ("a", 3): ("done", (0.0, 0.0, 0.9)),     # 1 and 1 (0.9 wrong bits is solved)
    ("a", 4): ("diverged", None),            # 0 and 0
    ("a", 5): ("failed", None),              # left out
    ("a", 6): ("running", None),             # left out
    ("b", 1): ("done", (1.0, 4.0, 12.0)),    # learning (1 + 0.5) / 2 = 0.75, generalisation 0.25
    ("b", 2): ("done", (3.0, 6.0, 16.0)),    # learning (0.25 + 0.25) / 2 = 0.25, generalisation 0
}
#: N-Grams (no test size inside its training range): final loss on the evaluation set (optimum 12, trivial 15) and
#: the loss at length 40 (optimum 24, trivial 35)
NGRAMS_RUNS = {("a", 1): (12.0, 24.0), ("a", 2): (13.5, 29.5), ("a", 3): (16.0, 40.0)}
EXPECTED = {  # (task, model): seeds, left_out, learning median and fraction >= 0.9, generalisation median, fraction
    ("copy", "a"): (4, 2, FROM_TEST_SIZES, 0.625, 0.5, 0.25, 0.25),
    ("copy", "b"): (2, 0, FROM_TEST_SIZES, 0.5, 0.0, 0.125, 0.0),
    ("ngrams", "a"): (3, 0, FROM_FINAL_EVALUATION, 0.5, 1 / 3, 0.5, 1 / 3),
}


def _run_row(task: str, model: str, seed: int, status: str, **finals) -> dict:
    return {"suite": "hand", "task": task, "task_type": task, "model": model, "model_type": "lstm", "seed": seed,
            "run_id": f"{task}-{model}-{seed}", "status": status, "converged": False, "steps": 10, **finals}


def make_folder(out_dir: Path, facts: bool = True) -> Path:
    """A suite folder written by hand (suite.json and the three CSVs, no run folders) holding COPY_RUNS and
    NGRAMS_RUNS. Without `facts`, its task facts are those of a suite.json written before the trivial errors."""
    claim_output_folder(out_dir)
    runs, curves, gen = [], [], []
    for (model, seed), (status, errors) in COPY_RUNS.items():
        final = 0.5 if errors is None else errors[0]
        runs.append(_run_row("copy", model, seed, status, final_wrong_bits_per_seq=final,
                             final_loss_bits_per_seq=2 * final))
        for step in (0, 10):
            curves.append({**runs[-1], "step": step, "sequences_seen": step * 4, "loss_bits_per_seq": 2 * final,
                           "wrong_bits_per_seq": final + (10 - step)})
        for length, wrong in zip((2, 4, 8), errors or ()):
            gen.append({**runs[-1], "size": f"L={length}", "size_L": length, "wrong_bits_per_seq": wrong,
                        "loss_bits_per_seq": 2 * wrong})
    for (model, seed), (final_loss, loss_40) in NGRAMS_RUNS.items():
        runs.append(_run_row("ngrams", model, seed, "done", final_wrong_bits_per_seq=5.0,
                             final_loss_bits_per_seq=final_loss))
        for step in (0, 10):
            curves.append({**runs[-1], "step": step, "sequences_seen": step * 4, "wrong_bits_per_seq": 5.0,
                           "loss_bits_per_seq": final_loss + 10 - step, "optimal_loss_bits_per_seq": 12.0})
        gen.append({**runs[-1], "size": "length=40", "size_length": 40, "wrong_bits_per_seq": 5.0,
                    "loss_bits_per_seq": loss_40, "optimal_loss_bits_per_seq": 24.0})
    task_facts = {"copy": {"type": "copy", **COPY.facts()}, "ngrams": {"type": "ngrams", **NGRAMS.facts()}}
    if not facts:
        for fact in task_facts.values():
            del fact["trivial_errors"], fact["trivial_error_train"]
    atomic_write_json(out_dir / "suite.json", {"name": "hand", "description": "hand-made", "seeds": [1, 2, 3],
                                               "steps": 10, "batch_size": 4, "resolved": {}, "tasks": task_facts,
                                               "run_ids": [r["run_id"] for r in runs]})
    for name, rows in (("runs.csv", runs), ("curves.csv", curves), ("generalization.csv", gen)):
        frame = pd.DataFrame(rows)
        if name != "runs.csv":
            frame = frame.drop(columns=["task_type", "model_type", "status", "converged", "steps",
                                        "final_wrong_bits_per_seq", "final_loss_bits_per_seq"])
        atomic_write_csv(out_dir / name, frame)
    return out_dir


def _check(table: pd.DataFrame) -> None:
    assert list(table.columns) == SCORECARD_COLUMNS
    assert len(table) == len(EXPECTED)
    for _, row in table.iterrows():
        seeds, left_out, source, learning, learning_above, generalization, generalization_above = \
            EXPECTED[(row["task"], row["model"])]
        assert (row["seeds"], row["left_out"], row["learning_from"]) == (seeds, left_out, source)
        assert row["learning_median"] == pytest.approx(learning)
        assert row["learning_at_or_above"] == pytest.approx(learning_above)
        assert row["generalization_median"] == pytest.approx(generalization)
        assert row["generalization_at_or_above"] == pytest.approx(generalization_above)
        assert row["threshold"] == THRESHOLD


def test_median_and_fraction_per_model_over_seeds(tmp_path):
    card = scorecard(load_suite_data(make_folder(tmp_path / "hand")))
    _check(card.table)
    assert card.unscored == []
    assert sorted(card.scores("copy", "a", "learning")) == [0.0, 0.25, 1.0, 1.0]   # seed 4 diverged: 0
    assert card.scores("ngrams", "a", "learning") == pytest.approx([1.0, 0.5, 0.0])  # the final evaluation
    assert card.scores("ngrams", "a", "generalization") == pytest.approx([1.0, 0.5, 0.0])
    assert set(card.runs["seed"][card.runs["model"] == "a"]) == {1, 2, 3, 4}        # failed and running left out
    assert scorecard(load_suite_data(tmp_path / "hand"), threshold=0.2).table["learning_at_or_above"].iloc[1] == 1.0


def test_the_report_writes_scorecard_csv_and_the_panel(tmp_path):
    from bench.report.page import write_report

    page = write_report(make_folder(tmp_path / "hand"), collect_runs=False).read_text()
    _check(pd.read_csv(tmp_path / "hand" / "scorecard.csv"))
    assert (tmp_path / "hand" / "figures" / "scorecard.png").is_file()
    assert 'id="scorecard"' in page and "figures/scorecard.png" in page and 'href="scorecard.csv"' in page
    assert "docs/TASKS.md" in page


def test_a_folder_without_the_facts_renders_without_the_panel(tmp_path):
    from bench.report.page import write_report

    out_dir = make_folder(tmp_path / "old", facts=False)
    assert "trivial_errors" not in read_json(out_dir / "suite.json")["tasks"]["copy"]
    card = scorecard(load_suite_data(out_dir))
    assert card.table.empty and card.unscored == ["copy", "ngrams"]
    page = html.unescape(write_report(out_dir, collect_runs=False).read_text())
    assert "No scorecard: this folder's suite.json records no trivial-predictor errors for copy, ngrams" in page
    assert not (out_dir / "scorecard.csv").exists() and not (out_dir / "figures" / "scorecard.png").exists()
    assert "figures/scorecard.png" not in page and 'href="scorecard.csv"' not in page
