"""The NTM's fused C++ head kernel (models/ntm_kernel.cpp, loaded by models/_ntm_kernel.py) against the PyTorch path
it replaces (`NTMCell.heads`): values and gradients, edge cases, gradcheck, vmap, a whole model, torch.compile, and
the fallbacks."""

from __future__ import annotations

import os

import pytest
import torch

from models import _cpp, _ntm_kernel
from models.ntm import NTM, NTMCell
from tests.conftest import assert_vmapped_alike

PAPER = dict(controller_units=100, memory_locations=128, memory_width=20)
SEVERAL_HEADS = dict(controller_units=8, memory_locations=16, memory_width=5, read_heads=2, write_heads=3,
                     shift_radius=2)
CONFIGS = {
    "paper": PAPER,
    "several_heads": SEVERAL_HEADS,
    "no_shift": dict(controller_units=8, memory_locations=12, memory_width=4, shift_radius=0),
    "content": dict(SEVERAL_HEADS, addressing="content"),
}


def _kernel():
    """The kernel's ops, or a skip (a failure on CI) where it cannot be built, as for the DNC's link kernel."""
    if _ntm_kernel.HEADS.ops() is None:
        message = ("the NTM's C++ kernel is not available here: it needs a C++ compiler and ninja (Debian: g++ "
                   "ninja-build), and NTM_BENCH_NO_CPP_KERNELS unset")
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs both (.ci/run), so the kernel is always tested there
        pytest.skip(message)
    return _ntm_kernel.HEADS.library


def _inputs(cell: NTMCell, batch: int, generator: torch.Generator, dtype=torch.float32, scale: float = 2.0):
    """(raw interface output [B, P], previous weights [B, H, N], memory [B, N, M]) away from every kink."""
    heads = cell.read_heads + cell.write_heads
    raw = scale * torch.randn(batch, cell.interface_size, generator=generator, dtype=dtype)
    prev = torch.softmax(2 * torch.randn(batch, heads, cell.locations, generator=generator, dtype=dtype), -1)
    memory = torch.tanh(torch.randn(batch, cell.locations, cell.width, generator=generator, dtype=dtype))
    return raw, prev, memory


def _both(cell: NTMCell, inputs, generator: torch.Generator):
    """Outputs and input gradients (under one random cotangent) of the kernel and of the PyTorch path."""
    results = []
    cotangents = None
    for path in ("kernel", "pytorch"):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        if path == "kernel":
            outputs = _ntm_kernel.fused_heads(*leaves, cell.clip_value, cell.read_heads, cell.shift_radius,
                                              cell.location_addressing)
        else:
            outputs = cell.heads(*leaves)
        if cotangents is None:
            cotangents = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in outputs]
        grads = torch.autograd.grad(outputs, leaves, cotangents, allow_unused=True)
        results.append((outputs, grads))
    return results


def _assert_match(cell, inputs, generator, rtol=1e-5, atol=1e-6):
    (outputs, grads), (expected_outputs, expected_grads) = _both(cell, inputs, generator)
    for got, expected in zip(outputs, expected_outputs):
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
    for got, expected in zip(grads, expected_grads):
        if expected is None:  # the previous weights under content addressing
            assert got is None
            continue
        # a gradient sums terms up to ~gamma / w (sharpening): round-off is relative to the largest, so atol scales
        tolerance = atol * max(1.0, expected.abs().max().item())
        torch.testing.assert_close(got, expected, rtol=rtol, atol=tolerance)
    return outputs, grads


@pytest.mark.parametrize("config", CONFIGS)
def test_kernel_matches_the_pytorch_path_in_float32(config):
    _kernel()
    torch.manual_seed(0)
    cell = NTMCell(9, 8, **CONFIGS[config])
    generator = torch.Generator().manual_seed(1)
    batch = 32 if config == "paper" else 5
    _assert_match(cell, _inputs(cell, batch, generator), generator)


def test_kernel_matches_the_pytorch_path_at_the_edges_in_float32_and_float64():
    """Zero keys and zero memory rows (norms 0), raw values exactly at and beyond +-clip (saturated gates, the clip's
    gradient ends included), and previous weights of exact zeros with gates shut, so that shifted weights fall below
    the sharpening floor 1e-30 (a larger clip lets the gate reach 1e-44)."""
    _kernel()
    torch.manual_seed(0)
    for dtype, rtol, atol in ((torch.float32, 1e-5, 1e-6), (torch.float64, 1e-10, 1e-12)):
        for clip in (20.0, 100.0):
            cell = NTMCell(9, 8, clip_value=clip, **SEVERAL_HEADS).to(dtype)
            generator = torch.Generator().manual_seed(2)
            raw, prev, memory = _inputs(cell, 6, generator, dtype)
            m, size = cell.width, cell.head_size
            raw[0, :m] = 0.0  # example 0: head 0's key is 0
            memory[0, ::3] = 0.0  # and a third of its memory rows are 0
            memory[1] = 0.0  # example 1: all of its memory is 0
            raw[2] = clip * torch.sign(raw[2])  # example 2: every value exactly at the clip
            raw[3] = 3 * clip * torch.sign(raw[3])  # example 3: every value beyond it
            for head in range(prev.shape[1]):  # example 4: gates shut on a one-hot previous weighting
                raw[4, head * size + m + 1] = -clip
                prev[4, head] = 0.0
                prev[4, head, head] = 1.0
            raw[5, :] = clip * (-1.0) ** torch.arange(raw.shape[1])  # example 5: alternating +-clip
            _assert_match(cell, (raw, prev, memory), generator, rtol, atol)
    # with clip 100 the floor is really reached: some shifted weights of example 4 are below it, in float32
    saved = _kernel().forward(raw.float(), prev.float(), memory.float(), 100.0, 2, 2, True)[3]
    heads, n = prev.shape[1], prev.shape[2]
    shifted = saved[4, : heads * 5 * n].view(heads, 5, n)[:, 2]
    assert (shifted < 1e-30).any()


@pytest.mark.parametrize("config", ["several_heads", "content", "no_shift"])
def test_kernel_gradcheck_float64(config):
    _kernel()
    torch.manual_seed(0)
    cell = NTMCell(3, 2, **{**CONFIGS[config], "memory_locations": 6, "memory_width": 3})
    raw, prev, memory = (t.requires_grad_(True) for t in _inputs(cell, 2, torch.Generator().manual_seed(3),
                                                                   torch.float64, scale=1.0))
    location = cell.location_addressing

    def heads(raw, prev, memory):
        return _ntm_kernel.fused_heads(raw, prev, memory, cell.clip_value, cell.read_heads, cell.shift_radius,
                                       location)

    if location:
        assert torch.autograd.gradcheck(heads, (raw, prev, memory), eps=1e-6, atol=1e-6)
    else:  # the previous weights are ignored and get no gradient: check the other two
        assert torch.autograd.gradcheck(lambda r, mem: heads(r, prev.detach(), mem), (raw, memory), eps=1e-6,
                                        atol=1e-6)


@pytest.mark.parametrize("compiled", [False, True])
def test_kernel_under_vmap_matches_the_pytorch_path(compiled):
    # seed-parallel training vmaps the step over a population, and the harness compiles the vmapped step of every
    # compiled run: the op's own vmap rule folds the population into the batch, and its backward still runs (an op
    # without them is batched example by example there and passes no gradient)
    _kernel()
    torch.manual_seed(0)
    cell = NTMCell(9, 8, **SEVERAL_HEADS)
    generator = torch.Generator().manual_seed(4)
    stacked = [torch.stack(parts) for parts in zip(*(_inputs(cell, 3, generator) for _ in range(4)))]
    stacked[2] = stacked[2][0]  # one memory shared by the population (in_dims None), as M0 is

    def kernel(raw, prev, memory):
        return _ntm_kernel.fused_heads(raw, prev, memory, cell.clip_value, cell.read_heads, cell.shift_radius, True)

    assert_vmapped_alike(kernel, cell.heads, stacked, generator, in_dims=(0, 0, None), compiled=compiled)


def test_the_memory_comes_back_transposed_and_any_layout_goes_in():
    # the kernel writes memories as [B, M, N] buffers, viewed as [B, N, M]: the next step reads them without a copy;
    # a contiguous [B, N, M] memory (or M0 expanded over the batch) gives the same results
    _kernel()
    cell = NTMCell(9, 8, **SEVERAL_HEADS)
    raw, prev, memory = _inputs(cell, 3, torch.Generator().manual_seed(5))
    args = (cell.clip_value, cell.read_heads, cell.shift_radius, True)
    reads, weights, new_memory = _ntm_kernel.fused_heads(raw, prev, memory, *args)
    assert new_memory.shape == memory.shape and new_memory.transpose(1, 2).is_contiguous()
    for layout in (memory.transpose(1, 2).contiguous().transpose(1, 2), memory[:1].expand(3, -1, -1)):
        expected = _ntm_kernel.fused_heads(raw, prev, layout.contiguous(), *args)
        for got, want in zip(_ntm_kernel.fused_heads(raw, prev, layout, *args), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_the_ops_fake_implementations():
    # torch.compile sees the ops through their fake implementations: shapes, dtypes and strides as the real ones
    ops = _kernel()
    cell = NTMCell(9, 8, **SEVERAL_HEADS)
    raw, prev, memory = _inputs(cell, 3, torch.Generator().manual_seed(6))
    forward_args = (raw, prev, memory, cell.clip_value, cell.read_heads, cell.shift_radius, True)
    torch.library.opcheck(ops.forward, forward_args, test_utils=("test_schema", "test_faketensor"))
    reads, weights, new_memory, saved = ops.forward(*forward_args)
    backward_args = (torch.randn_like(reads), torch.randn_like(weights), torch.randn_like(new_memory), raw, prev,
                     memory, weights, saved, cell.clip_value, cell.read_heads, cell.shift_radius, True)
    torch.library.opcheck(ops.backward, backward_args, test_utils=("test_schema", "test_faketensor"))


def _train(model: NTM, inputs: torch.Tensor, targets: torch.Tensor, steps: int):
    """Losses and, after each step, the parameters' gradients, over `steps` Adam steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, grads = [], []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(inputs), targets)
        loss.backward()
        losses.append(loss.detach())
        grads.append([None if p.grad is None else p.grad.clone() for p in model.parameters()])
        optimizer.step()
    return losses, grads


@pytest.mark.parametrize("addressing", ["content_and_location", "content"])
def test_a_whole_model_trains_alike_with_and_without_the_kernel(monkeypatch, addressing):
    _kernel()
    torch.manual_seed(0)
    reference = NTM(9, 8, controller_units=16, memory_locations=32, memory_width=8, addressing=addressing)
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(4, 12, 9, generator=generator)
    targets = (torch.rand(4, 12, 8, generator=generator) > 0.5).float()
    runs = {}
    for path in ("kernel", "pytorch"):
        if path == "pytorch":
            monkeypatch.setenv("NTM_BENCH_NO_CPP_KERNELS", "1")
            assert not _ntm_kernel.kernel_applies(inputs)
        model = NTM(9, 8, controller_units=16, memory_locations=32, memory_width=8, addressing=addressing)
        model.load_state_dict(reference.state_dict())
        runs[path] = _train(model, inputs, targets, steps=4)
    for got, expected in zip(runs["kernel"][0], runs["pytorch"][0]):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for step_grads, expected_grads in zip(runs["kernel"][1], runs["pytorch"][1]):
        for got, expected in zip(step_grads, expected_grads):
            if expected is None:  # w0 under content addressing
                assert got is None
                continue
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_the_compiled_step_runs_the_kernel_and_matches_eager(monkeypatch):
    # torch.compile's graphs call the op (on a CPU a compiled one-layer NTM runs its sequence op instead,
    # tests/test_ntm_sequence.py; torch.compile's path is what other controllers and a GPU take)
    _kernel()
    monkeypatch.setattr(NTM, "runs_fused", lambda self, inputs: False)
    torch.manual_seed(0)
    eager = NTM(9, 8, controller_units=8, memory_locations=16, memory_width=5, read_heads=2, write_heads=2)
    compiled = NTM(9, 8, controller_units=8, memory_locations=16, memory_width=5, read_heads=2, write_heads=2)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_step()
    inputs = torch.randn(3, 6, 9, generator=torch.Generator().manual_seed(8))  # one chunk of 4 steps, then 2 single
    compiled(inputs).square().sum().backward()  # compiles
    compiled.zero_grad()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        logits = compiled(inputs)
        logits.square().sum().backward()
    calls = {e.key.split("::")[-1]: e.count for e in prof.key_averages()
             if e.key.startswith(_ntm_kernel.HEADS.prefix)}
    assert calls == {"forward": 6, "backward": 6}
    expected = eager(inputs)
    expected.square().sum().backward()
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(compiled.parameters(), eager.parameters()):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-6)


def test_fallbacks(monkeypatch, caplog):
    """NTM_BENCH_NO_CPP_KERNELS=1, a failed build (one warning), a missing source file and dtypes other than
    float32/float64 all take the PyTorch path."""
    torch.manual_seed(0)
    model = NTM(9, 8, controller_units=8, memory_locations=16, memory_width=5)
    inputs = torch.randn(2, 5, 9, generator=torch.Generator().manual_seed(9))
    monkeypatch.setenv("NTM_BENCH_NO_CPP_KERNELS", "1")
    assert _ntm_kernel.HEADS.ops() is None and not _ntm_kernel.kernel_applies(inputs)
    expected = model(inputs)
    monkeypatch.delenv("NTM_BENCH_NO_CPP_KERNELS")

    def broken_build():
        raise RuntimeError("no compiler")

    for broken in ("build", "source"):
        monkeypatch.setattr(_ntm_kernel.HEADS, "_state", {})
        if broken == "build":
            monkeypatch.setattr(_ntm_kernel.HEADS, "_build", broken_build)
        else:
            monkeypatch.setattr(_ntm_kernel.HEADS, "source", _ntm_kernel.HEADS.source.with_name("missing.cpp"))
        caplog.clear()
        with caplog.at_level("WARNING", logger=_cpp.__name__):
            assert _ntm_kernel.HEADS.ops() is None and _ntm_kernel.HEADS.ops() is None
            torch.testing.assert_close(model(inputs), expected, rtol=0, atol=0)
        assert len([r for r in caplog.records if "NTM head C++ kernel unavailable" in r.getMessage()]) == 1
        assert ("no compiler" if broken == "build" else "missing.cpp") in caplog.text
        monkeypatch.undo()
    assert not _ntm_kernel.kernel_applies(inputs.bfloat16())
    assert model.bfloat16()(inputs.bfloat16()).dtype == torch.bfloat16
