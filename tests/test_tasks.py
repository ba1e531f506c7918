"""Registry-wide task tests: every registered task gets them the day it is registered."""

from __future__ import annotations

import pytest
import torch

from bench.registry import TASKS, build_task

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
