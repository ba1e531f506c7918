"""Registry-wide model tests: every registered model gets them the day it is registered."""

from __future__ import annotations

import pytest
import torch

from bench.metrics import loss_nats_per_seq
from bench.registry import MODELS, TASKS, build_model, build_task
from tests.conftest import small_params, small_task_params

MODEL_NAMES = sorted(MODELS)


def _model(name, task, device, seed=0):
    torch.manual_seed(seed)
    return build_model(name, task.input_size, task.output_size, **small_params(name)).to(device)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_and_trace(name, device, generator):
    task = build_task("copy", bits=4, train_sizes=[1, 5])
    model = _model(name, task, device)
    batch = task.sample(3, generator).to(device)
    logits = model(batch.inputs)
    assert logits.shape == (3, batch.steps, task.output_size)
    logits2, trace = model(batch.inputs, trace=True)
    torch.testing.assert_close(logits, logits2)
    assert isinstance(trace, dict)
    for key, value in trace.items():
        assert value.shape[:2] == (3, batch.steps), key
    if model.has_memory:
        assert "read_weights" in trace and "write_weights" in trace


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("task_name", ["copy", "repeat_copy", "associative_recall"])
def test_padding_invariance(name, task_name, device):
    """An example's scored logits are the same alone and inside a batch padded to a longer example."""
    task = build_task(task_name)
    model = _model(name, task, device).eval()
    short = task.sample(1, torch.Generator().manual_seed(5), size=task.test_sizes[0])
    long_size = tuple(2 * s for s in task.test_sizes[0])
    longer = task.sample(2, torch.Generator().manual_seed(6), size=long_size)
    from tasks.base import collate

    parts = [(tuple(short.sizes[0].tolist()), short.inputs[0], short.targets[0], short.mask[0])]
    parts += [(tuple(longer.sizes[i].tolist()), longer.inputs[i], longer.targets[i], longer.mask[i]) for i in range(2)]
    padded = collate(parts).to(device)
    assert padded.steps > short.steps
    with torch.no_grad():
        alone = model(short.inputs.to(device))[0]
        together = model(padded.inputs)[0, : short.steps]
    scored = short.mask[0].bool()
    torch.testing.assert_close(together[scored], alone[scored], rtol=1e-5, atol=1e-5)
    assert padded.mask[0, short.steps :].sum() == 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_few_steps_lower_the_loss(name, device, generator):
    task = build_task("copy", bits=4, train_sizes=[1, 3])
    model = _model(name, task, device)
    batch = task.sample(8, generator).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask))
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.8 * before
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_unknown_parameter_is_rejected(name):
    with pytest.raises(ValueError, match="allowed"):
        build_model(name, 9, 8, no_such_parameter=1)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_every_model_trains_a_few_steps_on_every_task(name, task_name, device):
    task = build_task(task_name, **small_task_params(task_name))
    model = _model(name, task, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        batch = task.sample(4, generator).to(device)
        optimizer.zero_grad()
        loss = loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
