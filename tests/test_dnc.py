"""DNC tests: the memory-management maths on hand-worked cases, gradients, the parameter count, and a slow Copy run."""

from __future__ import annotations

import os
import time

import pytest
import torch

from bench.metrics import loss_nats_per_seq, per_example
from bench.registry import build_model, build_task
from models.addressing import (
    DNC_USAGE_FLOOR,
    allocation_weights,
    directional_read_weights,
    update_link,
    update_link_and_read,
    update_precedence,
    update_usage,
)
from models.dnc import DNC, DNCConfig, DNCState
from tests.conftest import assert_vmapped_alike

TOLERANCE = 1e-6


def floored(u: float) -> float:
    return DNC_USAGE_FLOOR + (1 - DNC_USAGE_FLOOR) * u


def one_hot(index: int, size: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(index), size).float()


# ---- allocation ------------------------------------------------------------------------------------------------------
def test_allocation_hand_worked():
    usage = torch.tensor([[0.5, 0.2, 0.9, 0.3]])
    # free list (ascending usage): slots 1, 3, 0, 2
    u0, u1, u2, u3 = (floored(u) for u in (0.5, 0.2, 0.9, 0.3))
    expected = torch.tensor([[(1 - u0) * u1 * u3, 1 - u1, (1 - u2) * u1 * u3 * u0, (1 - u3) * u1]])
    allocation = allocation_weights(usage)
    torch.testing.assert_close(allocation, expected)  # about [0.03, 0.8, 0.003, 0.14]
    assert int(allocation.argmax()) == 1  # the least-used slot
    assert float(allocation.sum()) <= 1.0


def test_allocation_ties_go_to_the_lower_slot_first():
    allocation = allocation_weights(torch.tensor([[0.3, 0.3, 0.3]]))
    u = floored(0.3)
    torch.testing.assert_close(allocation, torch.tensor([[1 - u, (1 - u) * u, (1 - u) * u * u]]))
    # a tie between two free slots among used ones
    allocation = allocation_weights(torch.tensor([[1.0, 0.0, 1.0, 0.0]]))
    assert allocation[0, 1] == pytest.approx(1 - floored(0.0), abs=TOLERANCE)
    assert allocation[0, 3] == pytest.approx((1 - floored(0.0)) * floored(0.0), abs=TOLERANCE)
    assert float(allocation[0, [0, 2]].abs().max()) < TOLERANCE


def test_allocation_empty_and_full_memory():
    empty = allocation_weights(torch.zeros(1, 5))
    assert float(empty[0, 0]) == pytest.approx(1 - DNC_USAGE_FLOOR, abs=TOLERANCE)  # everything to the first free slot
    assert float(empty.sum()) <= 1.0 + TOLERANCE
    full = allocation_weights(torch.ones(1, 5))
    assert float(full.abs().max()) < TOLERANCE  # nothing left to allocate
    nearly_full = allocation_weights(torch.tensor([[1.0, 1.0, 0.99, 1.0]]))
    assert int(nearly_full.argmax()) == 2
    assert float(nearly_full.sum()) == pytest.approx(0.01, abs=1e-4)


def test_allocation_random_batches():
    generator = torch.Generator().manual_seed(0)
    usage = torch.rand(64, 3, 10, generator=generator)  # works with a head axis too
    allocation = allocation_weights(usage)
    assert allocation.shape == usage.shape
    assert (allocation >= 0).all()
    assert (allocation.sum(-1) <= 1.0 + TOLERANCE).all()
    # it sums to 1 - prod(u) (a telescoping product) and peaks at the least-used slot
    torch.testing.assert_close(allocation.sum(-1), 1 - floored(usage).prod(-1))
    assert torch.equal(allocation.argmax(-1), usage.argmin(-1))
    # batched result equals the per-row result
    torch.testing.assert_close(allocation[5, 1], allocation_weights(usage[5, 1]))


# ---- temporal links --------------------------------------------------------------------------------------------------
def _write_sequence(slots, size):
    link = torch.zeros(1, size, size)
    precedence = torch.zeros(1, size)
    for slot in slots:
        write = one_hot(slot, size).unsqueeze(0)  # [1, N]
        link = update_link(link, precedence, write)
        precedence = update_precedence(precedence, write)
    return link, precedence


def test_links_follow_write_order():
    size, first, second = 5, 1, 3
    link, precedence = _write_sequence([first, second], size)
    assert float(link[0, second, first]) == pytest.approx(1.0)  # `second` was written right after `first`
    assert float(link.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(precedence, one_hot(second, size).unsqueeze(0))
    read_at_first = one_hot(first, size).view(1, 1, size)  # [B, R, N]
    forward, backward = directional_read_weights(link, read_at_first)
    torch.testing.assert_close(forward, one_hot(second, size).view(1, 1, size))  # forward moves first -> second
    assert float(backward.abs().sum()) == 0.0  # nothing was written before `first`
    _, backward = directional_read_weights(link, one_hot(second, size).view(1, 1, size))
    torch.testing.assert_close(backward, read_at_first)


def test_links_chain_and_head_axis():
    size = 6
    link, _ = _write_sequence([0, 4, 2], size)
    forward, _ = directional_read_weights(link, one_hot(4, size).view(1, 1, size))
    assert int(forward.argmax()) == 2
    # the [B, Wh, N, N] form gives [B, R, Wh, N] and the same numbers
    forward_heads, backward_heads = directional_read_weights(link.unsqueeze(1), one_hot(4, size).view(1, 1, size))
    assert forward_heads.shape == (1, 1, 1, size)
    torch.testing.assert_close(forward_heads[:, :, 0], forward)
    assert int(backward_heads.argmax()) == 0


def test_links_diagonal_zero_and_sums_bounded_under_soft_writes():
    generator = torch.Generator().manual_seed(1)
    batch, size = 16, 8
    link = torch.zeros(batch, size, size)
    precedence = torch.zeros(batch, size)
    for _ in range(30):
        # a soft write: a softmax over slots scaled by a random write gate, so it sums to <= 1
        gate = torch.rand(batch, 1, generator=generator)
        write = gate * torch.softmax(3 * torch.randn(batch, size, generator=generator), -1)
        link = update_link(link, precedence, write)
        precedence = update_precedence(precedence, write)
        assert float(link.diagonal(dim1=-2, dim2=-1).abs().max()) == 0.0
        assert (link >= -TOLERANCE).all() and (link <= 1 + TOLERANCE).all()
        assert (link.sum(-1) <= 1 + TOLERANCE).all() and (link.sum(-2) <= 1 + TOLERANCE).all()
        assert (precedence.sum(-1) <= 1 + TOLERANCE).all()
    # writing twice to the same slot never links it to itself
    link, _ = _write_sequence([2, 2], 4)
    assert float(link.abs().sum()) == 0.0


def _soft_link_inputs(batch: int, size: int, heads: int, generator: torch.Generator, dtype=torch.float64):
    """Random but valid inputs: links and weightings that each sum to at most 1."""
    def soft(*shape):
        return torch.rand(shape[:-1] + (1,), generator=generator, dtype=dtype) * torch.softmax(
            3 * torch.randn(shape, generator=generator, dtype=dtype), -1)
    link = soft(batch, size, size)
    link = link * (1 - torch.eye(size, dtype=dtype))
    return link, soft(batch, size), soft(batch, size), soft(batch, heads, size)


@pytest.mark.parametrize("heads", [1, 3])
def test_fused_link_update_and_read_matches_the_composition(heads):
    # the DNC uses the fused form for speed; the separate functions are the readable reference
    inputs = [t.requires_grad_(True) for t in _soft_link_inputs(4, 7, heads, torch.Generator().manual_seed(3))]
    link, precedence, write, read = inputs
    new_link = update_link(link, precedence, write)
    reference = (new_link, *directional_read_weights(new_link, read))
    fused = update_link_and_read(link, precedence, write, read)
    for expected, got in zip(reference, fused):
        torch.testing.assert_close(got, expected)
    cotangents = [torch.randn_like(t) for t in reference]
    for expected, got in zip(torch.autograd.grad(reference, inputs, cotangents),
                             torch.autograd.grad(fused, inputs, cotangents)):
        torch.testing.assert_close(got, expected)
    assert torch.autograd.gradcheck(update_link_and_read, inputs)


@pytest.mark.parametrize("heads", [1, 2])
def test_fused_link_fast_path_matches_the_plain_formula_in_float32(heads):
    # the fused function's eager fast path (a broadcast lerp, one baddbmm for the gradient reaching the links,
    # row-vector matmuls, the factor written into a spent buffer) against the formula written out plainly, at the
    # paper's N = 128 in float32: equal to round-off, forward and backward
    generator = torch.Generator().manual_seed(5)
    inputs = [t.float().requires_grad_(True) for t in _soft_link_inputs(3, 128, heads, generator)]
    link, precedence, write, read = inputs
    w_i, w_j = write.unsqueeze(-1), write.unsqueeze(-2)
    plain_link = ((1 - w_i - w_j) * link + w_i * precedence.unsqueeze(-2)) * (1 - torch.eye(128))
    plain = (plain_link, torch.einsum("bij,brj->bri", plain_link, read), torch.einsum("bij,bri->brj", plain_link, read))
    fused = update_link_and_read(link, precedence, write, read)
    for expected, got in zip(plain, fused):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (fused[0].diagonal(dim1=-2, dim2=-1) == 0).all()
    cotangents = [torch.randn(t.shape, generator=generator) for t in plain]
    for expected, got in zip(torch.autograd.grad(plain, inputs, cotangents),
                             torch.autograd.grad(fused, inputs, cotangents)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_fused_link_update_and_read_under_vmap():
    # seed-parallel training vmaps the step over a leading population axis
    generator = torch.Generator().manual_seed(4)
    stacked = [torch.stack(parts) for parts in zip(*(_soft_link_inputs(2, 5, 2, generator) for _ in range(3)))]
    stacked = [t.requires_grad_(True) for t in stacked]
    batched = torch.func.vmap(update_link_and_read)(*stacked)
    looped = [torch.stack(parts) for parts in zip(*(update_link_and_read(*parts) for parts in zip(*stacked)))]
    for got, expected in zip(batched, looped):
        torch.testing.assert_close(got, expected)
    weights = [torch.randn_like(t) for t in looped]
    grads_batched = torch.autograd.grad(sum((o * w).sum() for o, w in zip(batched, weights)), stacked)
    grads_looped = torch.autograd.grad(sum((o * w).sum() for o, w in zip(looped, weights)), stacked)
    for got, expected in zip(grads_batched, grads_looped):
        torch.testing.assert_close(got, expected)


# ---- the C++ link kernel (models/link_kernel.cpp, loaded by models/_link_kernel.py) ----------------------------------
def _cpp_link_functions():
    from models import _link_kernel

    if _link_kernel.link_ops() is None:
        message = ("the C++ link kernel is not available here: it needs a C++ compiler and ninja (Debian: g++ "
                   "ninja-build), and NTM_BENCH_NO_CPP_KERNELS unset")
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs both (.ci/run), so the kernel is always tested there
        pytest.skip(message)
    return _link_kernel.LINK.library.forward, _link_kernel._LinkUpdateAndRead.apply


@pytest.mark.parametrize("heads", [1, 2])
def test_cpp_link_kernel_matches_the_pytorch_path_in_float32(heads):
    # the fused C++ forward and backward against the pure-PyTorch autograd.Function, at the
    # paper's N = 128 in float32 (with a non-contiguous link gradient, as autograd may pass one)
    cpp, plain = _cpp_link_functions()
    generator = torch.Generator().manual_seed(7)
    base = [t.float() for t in _soft_link_inputs(5, 128, heads, generator)]
    cpp_inputs = [t.clone().requires_grad_(True) for t in base]
    plain_inputs = [t.clone().requires_grad_(True) for t in base]
    cpp_out = cpp(*cpp_inputs)
    plain_out = plain(*plain_inputs)
    for got, expected in zip(cpp_out, plain_out):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (cpp_out[0].diagonal(dim1=-2, dim2=-1) == 0).all()
    cotangents = [torch.randn(t.shape, generator=generator) for t in plain_out]
    cotangents[0] = cotangents[0].transpose(-1, -2).contiguous().transpose(-1, -2)
    for got, expected in zip(torch.autograd.grad(cpp_out, cpp_inputs, cotangents),
                             torch.autograd.grad(plain_out, plain_inputs, cotangents)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_cpp_link_kernel_gradcheck_float64():
    cpp, _ = _cpp_link_functions()
    inputs = [t.requires_grad_(True) for t in _soft_link_inputs(3, 6, 2, torch.Generator().manual_seed(8))]
    assert torch.autograd.gradcheck(cpp, inputs)


@pytest.mark.parametrize("compiled", [False, True])
def test_cpp_link_kernel_under_vmap_matches_the_pytorch_path(compiled):
    # seed-parallel training vmaps the step, and the harness compiles the vmapped step of every compiled run: the
    # op's own vmap rule folds the population into the batch, and its backward still runs (before the op had them,
    # a compiled vmapped step batched it example by example and passed no gradient through the link)
    cpp, plain = _cpp_link_functions()
    generator = torch.Generator().manual_seed(9)
    stacked = [torch.stack(parts).float() for parts in zip(*(_soft_link_inputs(2, 32, 1, generator) for _ in range(3)))]
    assert_vmapped_alike(cpp, plain, stacked, generator, compiled=compiled)


def test_cpp_link_kernel_fallbacks(monkeypatch, caplog):
    from models import _cpp, _link_kernel

    inputs = _soft_link_inputs(2, 5, 1, torch.Generator().manual_seed(10))
    reference = _link_kernel._LinkUpdateAndRead.apply(*inputs)
    # NTM_BENCH_NO_CPP_KERNELS=1 forces the PyTorch path
    monkeypatch.setenv("NTM_BENCH_NO_CPP_KERNELS", "1")
    assert _link_kernel.link_ops() is None and not _link_kernel._kernel_loaded()
    for got, expected in zip(update_link_and_read(*inputs), reference):
        torch.testing.assert_close(got, expected)
    monkeypatch.delenv("NTM_BENCH_NO_CPP_KERNELS")
    # a failed build (no compiler, a build error) logs one warning and falls back

    def broken_build():
        raise RuntimeError("no compiler")

    monkeypatch.setattr(_link_kernel.LINK, "_state", {})
    monkeypatch.setattr(_link_kernel.LINK, "_build", broken_build)
    with caplog.at_level("WARNING", logger=_cpp.__name__):
        assert _link_kernel.link_ops() is None
        assert _link_kernel.link_ops() is None
        for got, expected in zip(update_link_and_read(*inputs), reference):
            torch.testing.assert_close(got, expected)
    assert len([r for r in caplog.records if "no compiler" in r.getMessage()]) == 1


def test_cpp_link_kernel_without_its_source_falls_back(monkeypatch, caplog, tmp_path):
    # a copy of the package without link_kernel.cpp (a wheel built without its package data) warns once, naming the
    # file, and the PyTorch path runs
    from models import _cpp, _link_kernel

    monkeypatch.delenv("NTM_BENCH_NO_CPP_KERNELS", raising=False)
    monkeypatch.setattr(_link_kernel.LINK, "_state", {})
    monkeypatch.setattr(_link_kernel.LINK, "source", tmp_path / "link_kernel.cpp")
    with caplog.at_level("WARNING", logger=_cpp.__name__):
        assert _link_kernel.link_ops() is None
        assert _link_kernel.link_ops() is None
    assert len([r for r in caplog.records if "link_kernel.cpp" in r.getMessage()]) == 1


# ---- usage -----------------------------------------------------------------------------------------------------------
def test_usage_free_gate_frees_a_read_slot():
    usage = torch.tensor([[1.0, 1.0, 0.5]])
    no_write = torch.zeros(1, 1, 3)
    read = one_hot(0, 3).view(1, 1, 3)
    freed = update_usage(usage, no_write, torch.ones(1, 1), read)
    torch.testing.assert_close(freed, torch.tensor([[0.0, 1.0, 0.5]]))
    kept = update_usage(usage, no_write, torch.zeros(1, 1), read)  # free gate 0: nothing changes
    torch.testing.assert_close(kept, usage)
    half = update_usage(usage, no_write, torch.full((1, 1), 0.5), read)
    torch.testing.assert_close(half, torch.tensor([[0.5, 1.0, 0.5]]))


def test_usage_rises_with_writes():
    usage = torch.tensor([[0.0, 0.5, 0.2]])
    write = torch.tensor([[[1.0, 0.5, 0.0]]])
    after = update_usage(usage, write, torch.zeros(1, 1), torch.zeros(1, 1, 3))
    torch.testing.assert_close(after, torch.tensor([[1.0, 0.75, 0.2]]))
    assert (after >= usage).all()
    torch.testing.assert_close(update_usage(usage, write[:, 0], torch.zeros(1, 1), torch.zeros(1, 1, 3)), after)


def test_usage_stops_the_gradient_of_previous_write_weights():
    usage = torch.rand(2, 4, requires_grad=True)
    write = torch.rand(2, 1, 4, requires_grad=True)
    free = torch.rand(2, 2, requires_grad=True)
    read = torch.rand(2, 2, 4, requires_grad=True)
    update_usage(usage, write, free, read).sum().backward()
    assert write.grad is None  # never reached: the reference's stop_gradient
    for tensor in (usage, free, read):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


# ---- the model -------------------------------------------------------------------------------------------------------
SMALL = {"controller_units": 6, "memory_locations": 5, "memory_width": 3, "read_heads": 2}


def _random_state(model: DNC, batch: int, generator: torch.Generator, dtype=torch.float64) -> DNCState:
    """A plausible mid-sequence state whose usage values are far apart, so the sort in allocation stays put."""
    R, N, W = model.read_heads, model.locations, model.width

    def rand(*shape):
        return torch.rand(batch, *shape, generator=generator, dtype=dtype)

    usage = torch.stack([torch.randperm(N, generator=generator) for _ in range(batch)]).to(dtype) / N + 0.05
    write = 0.5 * torch.softmax(rand(1, N), -1)
    link = 0.3 * rand(N, N) * (1 - torch.eye(N, dtype=dtype))
    controller = tuple((rand(model.units) - 0.5, rand(model.units) - 0.5) for _ in range(model.layers))
    return DNCState(controller=controller, read_words=rand(R, W) - 0.5, read_weights=torch.softmax(rand(R, N), -1),
                    write_weights=write, usage=usage, link=link, precedence=0.5 * torch.softmax(rand(N), -1),
                    memory=rand(N, W) - 0.5)


class _Step(torch.nn.Module):
    """Calls `model.step`, so `functional_call` can swap parameters in for gradcheck to perturb."""

    def __init__(self, model: DNC):
        super().__init__()
        self.model = model

    def forward(self, x, state):
        return self.model.step_with_gates(x, state)


def test_gradcheck_one_step_float64():
    torch.manual_seed(0)
    step = _Step(DNC(4, 3, **SMALL).double())
    generator = torch.Generator().manual_seed(2)
    batch = 2
    state = _random_state(step.model, batch, generator)
    x = torch.randn(batch, 4, generator=generator, dtype=torch.float64)
    names = ["model.interface.weight", "model.interface.bias", "model.controller.0.weight_ih", "model.output.weight"]
    ((h, c),) = state.controller

    def one_step(x, h, c, read_words, read_weights, usage, link, precedence, memory, *weights):
        # the previous write weights stay a constant: usage takes them without gradient by design
        start = DNCState(((h, c),), read_words, read_weights, state.write_weights, usage, link, precedence, memory)
        logits, new, gates = torch.func.functional_call(step, dict(zip(names, weights)), (x, start))
        return (logits, new.read_words, new.read_weights, new.write_weights, new.usage, new.memory, new.link,
                new.precedence, new.controller[0][1], gates.write_gate)

    params = dict(step.named_parameters())
    inputs = [x, h, c, state.read_words, state.read_weights, state.usage, state.link, state.precedence, state.memory]
    inputs += [params[name].detach() for name in names]
    inputs = [tensor.clone().requires_grad_(True) for tensor in inputs]
    assert torch.autograd.gradcheck(one_step, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_finite_gradients_from_the_zero_state():
    torch.manual_seed(0)
    model = DNC(9, 8)  # the defaults: 128 x 20 memory, all-zero memory and state at t = 0
    for inputs in (torch.zeros(2, 3, 9), torch.randn(2, 3, 9)):
        inputs = inputs.clone().requires_grad_(True)
        model.zero_grad()
        model(inputs).pow(2).sum().backward()
        assert torch.isfinite(inputs.grad).all()
        for name, param in model.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_initial_state_is_zero_and_step_matches_forward():
    torch.manual_seed(0)
    model = DNC(5, 4, **SMALL)
    state = model.initial_state(3)
    for tensor in torch.utils._pytree.tree_leaves(state):
        assert float(tensor.abs().sum()) == 0.0
    inputs = torch.randn(3, 6, 5)
    logits = []
    for t in range(inputs.shape[1]):
        logits_t, state = model.step(inputs[:, t], state)
        logits.append(logits_t)
    torch.testing.assert_close(torch.stack(logits, 1), model(inputs))


def test_previous_read_words_reach_the_controller():
    """The known pytorch-dnc bug: reads of step t-1 must feed the controller at step t."""
    torch.manual_seed(0)
    model = DNC(5, 4, **SMALL).double()
    generator = torch.Generator().manual_seed(3)
    state = _random_state(model, 2, generator)
    x = torch.randn(2, 5, generator=generator, dtype=torch.float64)
    read_words = state.read_words.clone().requires_grad_(True)
    logits, _ = model.step(x, state._replace(read_words=read_words))
    (grad,) = torch.autograd.grad(logits.sum(), read_words)
    assert grad.abs().sum() > 0


def test_trace_shapes_and_gates():
    torch.manual_seed(0)
    model = DNC(5, 4, **SMALL)
    logits, trace = model(torch.randn(2, 7, 5), trace=True)
    R, N = model.read_heads, model.locations
    assert trace["read_weights"].shape == (2, 7, R, N)
    assert trace["write_weights"].shape == (2, 7, 1, N)
    assert trace["usage"].shape == (2, 7, N)
    assert trace["allocation_gate"].shape == (2, 7, 1) and trace["write_gate"].shape == (2, 7, 1)
    # a write never exceeds its gate, and read weightings are (sub-)distributions
    assert (trace["write_weights"].sum(-1) <= trace["write_gate"] + TOLERANCE).all()
    assert (trace["read_weights"].sum(-1) <= 1 + TOLERANCE).all()
    assert ((trace["usage"] >= 0) & (trace["usage"] <= 1 + TOLERANCE)).all()


def test_parameter_count_with_defaults_on_copy():
    inputs, outputs, units, W, R = 9, 8, 100, 20, 1  # Copy's widths; N = 128 slots add no parameters
    controller = 4 * units * (inputs + R * W + units) + 2 * 4 * units  # torch's LSTM keeps two bias vectors
    interface_values = R * W + R + W + 1 + W + W + R + 1 + 1 + 3 * R  # keys, strengths, erase, write, gates, modes
    interface = units * interface_values + interface_values
    output = (units + R * W) * outputs + outputs
    assert controller + interface + output == 62_256  # docs/MODELS.md#dnc-defaults-and-parameter-count
    model = build_model("dnc", inputs, outputs)
    assert model.parameter_count() == 62_256
    # DeepMind's reference (Sonnet's LSTM, one bias vector) counts one bias vector fewer for the same network
    assert model.parameter_count() - 4 * units == 61_856


def test_oneplus_strength():
    torch.manual_seed(0)
    model = DNC(5, 4, strength="oneplus", **SMALL)
    raw = torch.linspace(-30, 30, 7)
    assert (model._strength(raw) >= 1.0).all()
    logits = model(torch.randn(2, 4, 5))
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    torch.manual_seed(0)
    softplus = DNC(5, 4, **SMALL)
    assert not torch.allclose(softplus(torch.ones(1, 3, 5)), model(torch.ones(1, 3, 5)))


@pytest.mark.parametrize("params, message", [
    ({"write_heads": 2}, "only write_heads=1"),
    ({"write_heads": 0}, "only write_heads=1"),
    ({"strength": "exp"}, "strength"),
    ({"read_heads": 0}, "read_heads"),
    ({"memory_locations": 0}, "memory_locations"),
    ({"memory_width": 0}, "memory_width"),
    ({"controller_units": 0}, "controller_units"),
    ({"controller_layers": 0}, "controller_layers"),
    ({"clip_value": 0}, "clip_value"),
])
def test_invalid_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        build_model("dnc", 9, 8, **params)


@pytest.mark.parametrize("params, message", [
    ({"write_heads": 2}, "dnc: only write_heads=1 is supported (the paper's setting), got 2"),
    ({"memory_width": 2.5}, "dnc: memory_width must be an integer >= 1, got 2.5"),
    ({"clip_value": -1}, "dnc: clip_value must be a number > 0, got -1"),
    ({"strength": "exp"}, "dnc: strength must be one of ['softplus', 'oneplus'], got 'exp'"),
])
def test_config_messages(params, message):
    with pytest.raises(ValueError) as error:
        DNCConfig(**params)
    assert str(error.value) == message


def test_the_config_is_passed_whole():
    config = DNCConfig(controller_units=8, memory_locations=6, memory_width=3, read_heads=2)
    torch.manual_seed(0)
    whole = DNC(5, 4, config)
    torch.manual_seed(0)
    keywords = DNC(5, 4, controller_units=8, memory_locations=6, memory_width=3, read_heads=2)
    assert whole.config is config and keywords.config == config
    for (name, a), (name_b, b) in zip(whole.state_dict().items(), keywords.state_dict().items(), strict=True):
        assert name == name_b and torch.equal(a, b), name


def test_two_controller_layers():
    torch.manual_seed(0)
    model = DNC(5, 4, controller_layers=2, **SMALL)
    logits = model(torch.randn(2, 4, 5))
    assert logits.shape == (2, 4, 4)
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# ---- learning --------------------------------------------------------------------------------------------------------
SLOW_STEP_BUDGET = 2500


@pytest.mark.slow
def test_dnc_learns_copy_of_lengths_1_to_5():
    """Adam, batch 32, norm clip 50: below 0.1 wrong bits per sequence on a fixed evaluation batch within budget.

    About 700 steps and 10-20 s on an idle 2-core CPU; the budget leaves room for other seeds and slower machines.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tensors are tiny: one thread is as fast, and immune to a busy machine
    try:
        _train_copy_until_converged()
    finally:
        torch.set_num_threads(threads)


def _train_copy_until_converged() -> None:
    task = build_task("copy", train_sizes=[1, 5])
    torch.manual_seed(1)
    model = build_model("dnc", task.input_size, task.output_size, controller_units=64, memory_locations=16,
                        memory_width=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train_generator = torch.Generator().manual_seed(1)
    evaluation = task.sample(128, torch.Generator().manual_seed(999))  # mixed lengths, padded at the end
    wrong_bits = float("inf")
    start = time.perf_counter()
    for step in range(1, SLOW_STEP_BUDGET + 1):
        batch = task.sample(32, train_generator, size=task.sample_size(train_generator))  # one length per batch
        optimizer.zero_grad()
        loss = loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
        optimizer.step()
        if step % 100 == 0:
            with torch.no_grad():
                logits = model(evaluation.inputs)
            wrong_bits = float(per_example(logits, evaluation.targets, evaluation.mask)["wrong_bits"].mean())
            if wrong_bits < 0.1:
                break
    print(f"dnc copy 1-5: {wrong_bits:.3f} wrong bits/seq after {step} steps, {time.perf_counter() - start:.1f} s")
    assert wrong_bits < 0.1
