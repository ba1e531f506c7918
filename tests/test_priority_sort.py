"""Priority Sort: layout, the sorted top-k target (ties included), size checks, purity, training steps."""

from __future__ import annotations

import pytest
import torch

from bench.registry import build_task
from tasks import priority_sort
from tasks.priority_sort import sort_by_priority
from tests.conftest import converged


def _expected_top(data: list[list[float]], priorities: list[float], outputs: int) -> list[list[float]]:
    """Independent reference: sort indices by (-priority, index), keep the first `outputs` rows."""
    order = sorted(range(len(priorities)), key=lambda i: (-priorities[i], i))
    return [data[i] for i in order[:outputs]]


def test_widths_steps_and_defaults():
    task = build_task("priority_sort")
    assert (task.input_size, task.output_size) == (10, 8)
    assert task.test_sizes == [(20, 16), (30, 24), (40, 32)]
    assert task.converge_below is None and task.convergence is None
    assert not converged(task, {"wrong_bits_per_seq": 0.0})
    assert task.steps_for((20, 16)) == 37
    assert task.max_train_steps() == 37
    assert task.size_label((20, 16)) == "inputs=20,outputs=16"


@pytest.mark.parametrize("size", [(20, 16), (30, 24), (40, 32), (5, 5), (1, 1)])
def test_layout_and_sorted_target(size):
    task = build_task("priority_sort", bits=4)
    n_in, n_out = size
    batch = task.sample(6, torch.Generator().manual_seed(3), size=size)
    steps = n_in + 1 + n_out
    assert batch.inputs.shape == (6, steps, 6)
    assert batch.targets.shape == (6, steps, 4)
    assert batch.mask.shape == (6, steps)
    assert batch.sizes.tolist() == [list(size)] * 6
    for b in range(6):
        data = batch.inputs[b, :n_in, :4]
        priorities = batch.inputs[b, :n_in, 4]
        assert set(data.unique().tolist()) <= {0.0, 1.0}
        assert (priorities >= -1).all() and (priorities <= 1).all()
        assert (batch.inputs[b, :n_in, 5] == 0).all()
        assert batch.inputs[b, n_in].tolist() == [0.0] * 5 + [1.0]  # the delimiter step carries only the flag
        assert (batch.inputs[b, n_in + 1 :] == 0).all()
        assert batch.mask[b].tolist() == [0.0] * (n_in + 1) + [1.0] * n_out
        assert (batch.targets[b, : n_in + 1] == 0).all()
        expected = _expected_top(data.tolist(), priorities.tolist(), n_out)
        assert batch.targets[b, n_in + 1 :].tolist() == expected


def test_priorities_span_the_range():
    task = build_task("priority_sort")
    batch = task.sample(64, torch.Generator().manual_seed(0))
    priorities = batch.inputs[:, :20, 8]
    assert priorities.min() < -0.95 and priorities.max() > 0.95
    assert abs(float(priorities.mean())) < 0.05


def test_ties_keep_input_order():
    data = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    priorities = torch.tensor([0.5, -0.5, 0.5, 0.9, -0.5])
    top = sort_by_priority(data, priorities, 4)
    # 0.9 (row 3), then the two 0.5s in input order (rows 0, 2), then the first -0.5 (row 1).
    assert top.tolist() == [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    all_equal = sort_by_priority(data, torch.zeros(5), 5)
    assert torch.equal(all_equal, data)


def test_ties_in_a_sampled_example(monkeypatch):
    """Force equal priorities through the sampler itself: the earlier input vector comes first."""
    task = build_task("priority_sort", bits=3)
    # the uniforms behind the priorities (the generator still moves as the real draw makes it)
    monkeypatch.setattr(priority_sort, "uniform_float",
                        lambda draws: torch.tensor([[0.75, 0.25, 0.75, 0.25]]))  # priorities 0.5, -0.5, 0.5, -0.5
    batch = task.sample(1, torch.Generator().manual_seed(9), size=(4, 3))
    monkeypatch.undo()
    data = batch.inputs[0, :4, :3]
    assert batch.inputs[0, :4, 3].tolist() == [0.5, -0.5, 0.5, -0.5]
    assert torch.equal(batch.targets[0, 5:], data[[0, 2, 1]])


def test_outputs_may_not_exceed_inputs():
    task = build_task("priority_sort")
    with pytest.raises(ValueError, match="outputs <= inputs"):
        task.sample(2, torch.Generator().manual_seed(0), size=(3, 5))
    with pytest.raises(ValueError, match="outputs <= inputs"):
        build_task("priority_sort", test_sizes=[[20, 16], [4, 8]])
    with pytest.raises(ValueError, match="must not exceed"):
        build_task("priority_sort", train_sizes={"inputs": [10, 20], "outputs": [12, 16]})
    with pytest.raises(ValueError):
        task.check_size((20,))


def test_variable_sizes_are_valid_and_padded_at_the_end():
    task = build_task("priority_sort", bits=4, train_sizes={"inputs": [2, 12], "outputs": [1, 12]})
    batch = task.sample(64, torch.Generator().manual_seed(1))
    sizes = [tuple(s) for s in batch.sizes.tolist()]
    assert len(set(sizes)) > 5
    assert batch.steps == max(task.steps_for(s) for s in sizes)
    assert task.max_train_steps() >= batch.steps
    for b, (n_in, n_out) in enumerate(sizes):
        assert 2 <= n_in <= 12 and 1 <= n_out <= n_in
        steps = task.steps_for((n_in, n_out))
        assert batch.mask[b].sum() == n_out and batch.mask[b, steps - n_out : steps].all()
        assert (batch.inputs[b, steps:] == 0).all() and (batch.targets[b, steps:] == 0).all()
        assert (batch.mask[b, steps:] == 0).all()
