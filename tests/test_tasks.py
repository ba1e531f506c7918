"""Registry-wide task tests: every task in `tasks.TASKS` gets them the day it is added; and the convergence and
solved rules as data (`tasks.base.Rule`), the facts a task records for the report, and the package's independence
from `bench`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from bench.registry import build_task
from tasks import TASKS
from tasks.base import WRONG_BITS, Convergence, Measure, Rule, convergence
from tests.conftest import REPO, converged

TASK_NAMES = sorted(TASKS)


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_shapes_and_length_formula(name):
    task = build_task(name)
    for size in [task.sample_size(_generator(s)) for s in range(5)] + list(task.test_sizes):
        batch = task.sample(3, _generator(), size=size)
        steps = task.steps_for(size)
        assert batch.inputs.shape == (3, steps, task.input_size)
        assert batch.targets.shape == (3, steps, task.output_size)
        assert batch.mask.shape == (3, steps)
        assert batch.sizes.shape == (3, len(task.size_parts))
        assert batch.inputs.dtype == torch.float32 and batch.targets.dtype == torch.float32
        assert set(batch.targets.unique().tolist()) <= {0.0, 1.0}
        assert set(batch.mask.unique().tolist()) <= {0.0, 1.0}
        assert (batch.sizes == torch.tensor(size)).all()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_same_generator_state_same_batch(name):
    task = build_task(name)
    a = task.sample(4, _generator(7))
    b = task.sample(4, _generator(7))
    c = task.sample(4, _generator(8))
    for x, y in [(a.inputs, b.inputs), (a.targets, b.targets), (a.mask, b.mask), (a.sizes, b.sizes)]:
        assert torch.equal(x, y)
    assert not (a.inputs.shape == c.inputs.shape and torch.equal(a.inputs, c.inputs))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_sampling_uses_only_the_given_generator(name):
    task = build_task(name)
    torch.manual_seed(0)
    a = task.sample(2, _generator(3))
    torch.manual_seed(99)
    b = task.sample(2, _generator(3))
    assert torch.equal(a.inputs, b.inputs)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_per_example_sizes_pad_only_at_the_end(name):
    task = build_task(name)
    batch = task.sample(16, _generator(11))  # size=None: each example draws its own size
    for b in range(16):
        size = tuple(batch.sizes[b].tolist())
        steps = task.steps_for(size)
        assert batch.mask[b, steps:].sum() == 0
        assert batch.inputs[b, steps:].abs().sum() == 0
        assert batch.targets[b, steps:].abs().sum() == 0
        alone = task.sample(1, _generator(0), size=size)
        assert batch.mask[b, :steps].sum() == alone.mask[0].sum()  # same mask count as an unpadded example
    low = tuple(lo for lo, _ in task.train_sizes.values())
    high = tuple(hi for _, hi in task.train_sizes.values())
    for b in range(16):
        size = batch.sizes[b].tolist()
        assert all(lo <= s <= hi for s, lo, hi in zip(size, low, high))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_generalization_sizes_beyond_training(name):
    task = build_task(name)
    largest = max(task.test_sizes)
    batch = task.sample(2, _generator(), size=largest)
    assert batch.steps == task.steps_for(largest)
    assert task.size_label(largest).count("=") == len(task.size_parts)


def test_copy_targets_are_the_data_in_order():
    task = build_task("copy", bits=5)
    batch = task.sample(3, _generator(), size=7)
    data = batch.inputs[:, :7, :5]
    assert torch.equal(batch.targets[:, 8:], data)
    assert (batch.mask.sum(1) == 7).all() and (batch.mask[:, 8:] == 1).all()
    assert (batch.inputs[:, 7, 5] == 1).all() and (batch.inputs[:, 7, :5] == 0).all()  # flag-only delimiter
    assert (batch.inputs[:, 8:] == 0).all() and (batch.inputs[:, :7, 5] == 0).all()
    ones = build_task("copy", bits=5, delimiter="all_ones").sample(1, _generator(), size=3)
    assert (ones.inputs[0, 3] == 1).all()


def test_repeat_copy_targets_tile_the_data_then_mark_the_end():
    task = build_task("repeat_copy", bits=4)
    length, repeats = 3, 4
    batch = task.sample(2, _generator(), size=(length, repeats))
    data = batch.inputs[:, :length, :4]
    start = length + 1
    assert torch.equal(batch.targets[:, start : start + repeats * length, :4], data.repeat(1, repeats, 1))
    assert (batch.targets[:, -1, 4] == 1).all() and (batch.targets[:, -1, :4] == 0).all()
    assert (batch.targets[:, :-1, 4] == 0).all()
    assert (batch.mask.sum(1) == repeats * length + 1).all()
    assert (batch.inputs[:, length, 4] == 1).all()
    # zscore: (n - mean) / std with n ~ U{1..10}: mean 5.5, std sqrt(99/12)
    expected = (repeats - 5.5) / (99 / 12) ** 0.5
    assert batch.inputs[0, length, 5].item() == pytest.approx(expected)
    ratio = build_task("repeat_copy", bits=4, count_encoding="ratio").sample(1, _generator(), size=(2, 5))
    assert ratio.inputs[0, 2, 5].item() == pytest.approx(0.5)


def test_associative_recall_target_is_the_item_after_the_query():
    task = build_task("associative_recall", bits=6)
    for seed in range(10):
        items = 5
        batch = task.sample(1, _generator(seed), size=items)
        x = batch.inputs[0]
        stored = [x[k * 4 + 1 : k * 4 + 4, :6] for k in range(items)]
        query = x[items * 4 + 1 : items * 4 + 4, :6]
        index = [k for k in range(items) if torch.equal(stored[k], query)][0]
        assert index <= items - 2
        assert torch.equal(batch.targets[0, -3:], stored[index + 1])
        assert batch.mask[0].sum() == 3 and (batch.mask[0, -3:] == 1).all()
        assert x[items * 4, 7] == 1 and x[items * 4 + 4, 7] == 1  # query delimiters around the query
        assert all(x[k * 4, 6] == 1 for k in range(items))


def test_bad_task_parameters_are_rejected():
    with pytest.raises(ValueError, match="train_sizes"):
        build_task("copy", train_sizes=[0, 5])
    with pytest.raises(ValueError, match="delimiter"):
        build_task("copy", delimiter="bogus")
    with pytest.raises(ValueError, match="allowed"):
        build_task("copy", lenghts=[1, 2])
    with pytest.raises(ValueError, match="known tasks"):
        build_task("kopy")


# ---- rules as data ----------------------------------------------------------------------------------------------

def test_convergence_rule_boundary_is_strict():
    task = build_task("copy")
    assert task.convergence == Rule("wrong_bits_per_seq", 0.1, "<")
    assert converged(task, {"wrong_bits_per_seq": 0.0999999})
    assert not converged(task, {"wrong_bits_per_seq": 0.1})         # at the threshold is not below it
    assert not converged(task, {"wrong_bits_per_seq": math.nan})    # a broken model never converges
    assert task.convergence.text() == "wrong bits/seq < 0.1"
    assert build_task("copy", converge_below=0.5).convergence.threshold == 0.5
    none = build_task("copy", converge_below=None)
    assert none.convergence is None and not converged(none, {"wrong_bits_per_seq": 0.0})


def test_solved_rule_boundary_is_inclusive():
    rule = build_task("copy").solved_when
    assert rule == Rule("wrong_bits_per_seq", 1.0, "<=")
    assert rule.passes(1.0) and not rule.passes(1.0000001) and not rule.passes(math.nan)
    assert rule.text() == "wrong bits/seq ≤ 1"
    assert build_task("ngrams").solved_when is None


def test_a_rule_with_a_reference_bounds_the_gap():
    rule = Rule("loss_bits_per_seq", 1.0, "<", reference="optimal_loss_bits_per_seq")
    assert rule.value({"loss_bits_per_seq": 131.5, "optimal_loss_bits_per_seq": 130.0}) == 1.5
    assert rule.holds({"loss_bits_per_seq": 130.9, "optimal_loss_bits_per_seq": 130.0})
    assert not rule.holds({"loss_bits_per_seq": 131.0, "optimal_loss_bits_per_seq": 130.0})
    assert rule.holds({"loss_bits_per_seq": 129.0, "optimal_loss_bits_per_seq": 130.0})  # one-sided: below is fine
    assert rule.text() == "loss within 1 bits/seq of the Bayes optimum"
    with pytest.raises(KeyError, match="optimal_loss_bits_per_seq"):
        rule.holds({"loss_bits_per_seq": 130.0})
    assert rule.bounds(Measure("loss_bits_per_seq", "optimal_loss_bits_per_seq")) and not rule.bounds(WRONG_BITS)


def test_rules_and_measures_round_trip_through_json():
    for rule in (Rule("wrong_bits_per_seq", 0.1), Rule("wrong_bits_per_seq", 2, "<="),
                 Rule("loss_bits_per_seq", 0.25, "<", "optimal_loss_bits_per_seq")):
        assert Rule.from_json(json.loads(json.dumps(rule.to_json()))) == rule
    assert Measure.from_json(json.loads(json.dumps(WRONG_BITS.to_json()))) == WRONG_BITS
    assert Rule.from_json({"metric": "wrong_bits_per_seq", "threshold": 0.1, "op": "<", "text": "ignored"}) == \
        Rule("wrong_bits_per_seq", 0.1)
    with pytest.raises(ValueError, match="op"):
        Rule("wrong_bits_per_seq", 0.1, ">")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_facts_are_plain_json_and_match_the_task(name):
    task = build_task(name)
    facts = task.facts()
    assert json.loads(json.dumps(facts)) == facts
    assert facts["size_parts"] == list(task.size_parts)
    assert [tuple(s) for s in facts["test_sizes"]] == list(task.test_sizes)
    assert Measure.from_json(facts["error"]) == task.error
    convergence = None if facts["convergence"] is None else Rule.from_json(facts["convergence"])
    solved = None if facts["solved"] is None else Rule.from_json(facts["solved"])
    assert convergence == task.convergence and solved == task.solved_when
    double = task.double_size()
    assert facts["test_size_2x"] == (None if double is None else list(double))


def test_the_facts_of_each_task_family():
    facts = {name: build_task(name).facts() for name in TASK_NAMES}
    for name in ("copy", "repeat_copy", "associative_recall"):
        assert facts[name]["convergence"] == {"metric": "wrong_bits_per_seq", "threshold": 0.1, "op": "<",
                                              "reference": None}
        assert facts[name]["solved"] == {"metric": "wrong_bits_per_seq", "threshold": 1.0, "op": "<=",
                                         "reference": None}
    assert facts["priority_sort"]["convergence"] is None
    assert facts["ngrams"]["convergence"] == {"metric": "loss_bits_per_seq", "threshold": 1.0, "op": "<",
                                              "reference": "optimal_loss_bits_per_seq"}
    assert facts["ngrams"]["error"]["reference"] == "optimal_loss_bits_per_seq" and facts["ngrams"]["solved"] is None


def test_tasks_import_nothing_from_bench():
    code = "import sys, tasks; print([m for m in sys.modules if m == 'bench' or m.startswith('bench.')])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_convergence_is_the_first_step_after_zero_and_the_trailing_streak():
    rule = build_task("copy").convergence
    curve = [{"step": s, "wrong_bits_per_seq": e} for s, e in
             [(0, 0.0), (100, 0.5), (200, 0.05), (300, math.nan), (400, 0.01), (500, 0.0)]]
    assert convergence(curve, rule) == Convergence(200, 2)          # step 0 never counts; NaN breaks the streak
    assert convergence(curve[:3], rule) == Convergence(200, 1)
    assert convergence(curve[:4], rule) == Convergence(200, 0)
    assert convergence(curve[:2], rule) == Convergence(None, 0)
    assert convergence(curve, None) == Convergence(None, 0)         # a task without a rule never converges
    assert convergence([], rule) == Convergence(None, 0)
