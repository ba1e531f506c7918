"""The NTM's whole-sequence C++ op (`sequence_forward` / `sequence_backward` in models/ntm_kernel.cpp, called by
`NTMCell.sequence`), which a compiled NTM runs on a CPU: the same values and gradients as looping the cell step by
step, in float32 at the paper's sizes and several head layouts, gradcheck in float64, state carried between calls,
several graphs alive at once (its buffer pool), vmap over a population, and when it runs and when it does not."""

from __future__ import annotations

import pytest
import torch

from models import _ntm_kernel
from models.ntm import NTM
from tests.conftest import assert_vmapped_alike
from tests.test_ntm_kernel import CONFIGS, SEVERAL_HEADS, _kernel

SMALL = dict(controller_units=3, memory_locations=6, memory_width=3)


def _params(cell) -> list[torch.Tensor]:
    """The op's parameter inputs, in its order: the controller's, the interface's, the output layer's."""
    (lstm,) = cell.controller
    return [lstm.weight_ih, lstm.bias_ih, lstm.weight_hh, lstm.bias_hh, cell.interface.weight, cell.interface.bias,
            cell.output.weight, cell.output.bias]


def _model(config: dict, dtype=torch.float32, seed: int = 0) -> NTM:
    torch.manual_seed(seed)
    return NTM(9, 8, **config).to(dtype)


def _outputs(model: NTM, inputs: torch.Tensor, fused: bool, chunks: tuple[int, ...] = ()):
    """Logits and the last state of the model over inputs, fused or step by step, run in pieces split at `chunks`."""
    state = model.initial_state(inputs.shape[0])
    pieces = []
    for part in torch.tensor_split(inputs, list(chunks), dim=1):
        logits, state = (model.cell.sequence if fused else model.steps)(part, state)
        pieces.append(logits)
    return [torch.cat(pieces, dim=1), *state.controller_h, *state.controller_c, state.reads, state.weights,
            state.memory]


def _values_and_grads(model: NTM, inputs: torch.Tensor, fused: bool, generator: torch.Generator,
                      chunks: tuple[int, ...] = ()):
    """The outputs and every parameter's gradient under random cotangents on the logits AND the last state."""
    model.zero_grad()
    outputs = _outputs(model, inputs, fused, chunks)
    cotangents = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in outputs]
    sum(((o * c).sum() for o, c in zip(outputs, cotangents))).backward()
    return [o.detach() for o in outputs], {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_alike(got, expected, rtol=1e-5, atol=1e-6, grad_rtol=1e-4, grad_atol=1e-5):
    (outputs, grads), (expected_outputs, expected_grads) = got, expected
    for value, want in zip(outputs, expected_outputs, strict=True):
        torch.testing.assert_close(value, want, rtol=rtol, atol=atol)
    assert grads.keys() == expected_grads.keys()
    for name, want in expected_grads.items():
        assert grads[name].abs().sum() > 0, name
        # round-off is relative to a gradient's largest entry (sums over time steps and examples)
        torch.testing.assert_close(grads[name], want, rtol=grad_rtol, atol=grad_atol * max(1.0, want.abs().max()),
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("config", CONFIGS)
def test_sequence_matches_stepping_in_float32(config):
    _kernel()
    model = _model(CONFIGS[config])
    batch, time = (32, 41) if config == "paper" else (5, 9)
    inputs = torch.randn(batch, time, 9, generator=torch.Generator().manual_seed(1))
    expected = _values_and_grads(model, inputs, False, torch.Generator().manual_seed(2))
    _assert_alike(_values_and_grads(model, inputs, True, torch.Generator().manual_seed(2)), expected)


@pytest.mark.parametrize("config", ["several_heads", "content"])
def test_sequence_gradcheck_float64(config):
    _kernel()
    model = _model({**CONFIGS[config], **SMALL}, torch.float64)
    cell = model.cell
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(2, 3, 9, generator=generator, dtype=torch.float64)
    state = model.initial_state(2)
    start = [state.controller_h[0] + 0.1 * torch.randn(2, 3, generator=generator, dtype=torch.float64),
             0.1 * torch.randn(2, 3, generator=generator, dtype=torch.float64), state.reads, state.weights,
             torch.tanh(torch.randn(2, 6, 3, generator=generator, dtype=torch.float64))]
    params = _params(cell)
    leaves = [t.detach().clone().requires_grad_(True) for t in [inputs, *start, *params]]

    def sequence(*tensors):
        return _ntm_kernel.fused_sequence(tensors[0], tensors[1:6], tensors[6:], cell.clip_value, cell.read_heads,
                                          cell.shift_radius, cell.location_addressing)

    assert torch.autograd.gradcheck(sequence, leaves, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_state_carries_between_calls_and_graphs_alive_at_once_do_not_share_buffers():
    _kernel()
    model = _model(SEVERAL_HEADS)
    generator = torch.Generator().manual_seed(4)
    inputs = torch.randn(4, 11, 9, generator=generator)
    expected = _values_and_grads(model, inputs, False, torch.Generator().manual_seed(5))
    # in three calls (4, 5 and 2 time steps), the last state of each the start of the next
    _assert_alike(_values_and_grads(model, inputs, True, torch.Generator().manual_seed(5), chunks=(4, 9)), expected)
    # two graphs alive at once (the pool must not hand the first one's saved buffers to the second), of different
    # lengths, their backwards run in the other order
    other = torch.randn(3, 7, 9, generator=generator)
    model.zero_grad()
    first = _outputs(model, inputs, True)[0]
    second = _outputs(model, other, True)[0]
    second.square().sum().backward(retain_graph=True)
    second_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    first.square().sum().backward()
    first_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    for sequence, grads in ((inputs, first_grads), (other, second_grads)):
        model.zero_grad()
        logits = _outputs(model, sequence, False)[0]
        logits.square().sum().backward()
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(grads[name], parameter.grad, rtol=1e-4,
                                       atol=1e-5 * max(1.0, parameter.grad.abs().max()))
    torch.testing.assert_close(first, _outputs(model, inputs, False)[0], rtol=1e-5, atol=1e-6)


def test_sequence_under_vmap_matches_stepping():
    """A population of 3 runs (each its own parameters, as the harness stacks them): the op's vmap rule runs it once
    per run, forward and backward."""
    _kernel()
    model = _model({**SEVERAL_HEADS, "write_heads": 1})
    cell = model.cell
    generator = torch.Generator().manual_seed(6)
    population, batch, time = 3, 2, 5
    params = {name: torch.stack([p.detach() + 0.05 * torch.randn(p.shape, generator=generator)
                                 for _ in range(population)]) for name, p in cell.named_parameters()}
    names = list(params)
    inputs = torch.randn(population, batch, time, 9, generator=generator)
    buffers = {f"model.{name}": value for name, value in model.named_buffers()}

    def path(fused):
        def call(x, *tensors):
            parameters = {f"model.cell.{name}": value for name, value in zip(names, tensors)}
            return torch.func.functional_call(_Paths(model, fused), parameters | buffers, (x,))
        return call

    assert_vmapped_alike(path(True), path(False), [inputs, *params.values()], generator)


class _Paths(torch.nn.Module):
    """An NTM's logits over inputs [B, T, in], through the fused op or step by step (for functional_call)."""

    def __init__(self, model: NTM, fused: bool):
        super().__init__()
        self.model = model
        self.fused = fused

    def forward(self, inputs):
        state = self.model.initial_state(inputs.shape[0])
        return ((self.model.fused_steps if self.fused else self.model.steps)(inputs, state)[0],)


def test_only_a_compiled_one_layer_ntm_on_a_cpu_runs_the_sequence_op(monkeypatch):
    """Compiled, the op runs once each way per sequence and gives the eager values; eager runs, other controllers,
    other dtypes and NTM_BENCH_NO_CPP_KERNELS=1 keep the step-by-step path (eager results stay those of earlier
    versions to the bit)."""
    _kernel()
    inputs = torch.randn(3, 6, 9, generator=torch.Generator().manual_seed(8))

    def sequence_calls(model, x):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(x).square().sum().backward()
        return {e.key.split("::")[-1]: e.count for e in prof.key_averages()
                if e.key.startswith(_ntm_kernel.HEADS.prefix) and "sequence" in e.key}

    eager = _model(SEVERAL_HEADS)
    compiled = _model(SEVERAL_HEADS)
    compiled.compile_step()
    assert compiled.runs_fused(inputs) and eager.runs_fused(inputs)  # it could; only the compiled one does
    assert sequence_calls(compiled, inputs) == {"sequence_forward": 1, "sequence_backward": 1}
    assert sequence_calls(eager, inputs) == {}
    torch.testing.assert_close(compiled(inputs), eager(inputs), rtol=1e-5, atol=1e-6)
    two_layers = _model({**SEVERAL_HEADS, "controller_layers": 2})
    assert not two_layers.runs_fused(inputs)
    assert not compiled.runs_fused(inputs.double().bfloat16())
    monkeypatch.setenv("NTM_BENCH_NO_CPP_KERNELS", "1")
    assert not compiled.runs_fused(inputs)


def test_opcheck_of_the_sequence_op():
    """The op's schema, fake implementation (torch.compile), and autograd and vmap registrations agree with it."""
    library = _kernel()
    model = _model({**SEVERAL_HEADS, **SMALL})
    cell = model.cell
    state = model.initial_state(2)
    params = _params(cell)
    args = (torch.randn(2, 4, 9), state.controller_h[0], state.controller_c[0], state.reads.contiguous(),
            state.weights.contiguous(), state.memory.contiguous(), *[p.detach().requires_grad_(True) for p in params],
            cell.clip_value, cell.read_heads, cell.shift_radius, True, True)
    torch.library.opcheck(library.sequence_forward, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_evaluation_keeps_nothing_for_a_backward_and_gives_the_same_values():
    """Under no_grad the op keeps two time steps' values at a time (its saved outputs are empty), and its logits and
    last state are those of a forward that keeps everything; at batch 1 its gradients are fresh tensors, not views of
    one buffer."""
    library = _kernel()
    model = _model(SEVERAL_HEADS)
    cell = model.cell
    inputs = torch.randn(4, 9, 9, generator=torch.Generator().manual_seed(10))
    state = model.initial_state(4)
    params = _params(cell)
    start = (state.controller_h[0], state.controller_c[0], state.reads, state.weights, state.memory)
    options = (cell.clip_value, cell.read_heads, cell.shift_radius, True)
    with torch.no_grad():
        kept = library.sequence_forward(inputs, *start, *params, *options, True)
        lean = library.sequence_forward(inputs, *start, *params, *options, False)
        assert all(t.numel() == 0 for t in lean[6:]) and all(t.numel() > 0 for t in kept[6:])
        for got, want in zip(lean[:6], kept[:6]):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        through_model = _outputs(model, inputs, True)
    torch.testing.assert_close(through_model[0], kept[0], rtol=0, atol=0)
    one = _model(SEVERAL_HEADS)
    state = one.initial_state(1)
    h0 = state.controller_h[0].clone().requires_grad_(True)
    reads0 = state.reads.detach().clone().requires_grad_(True)
    logits = _ntm_kernel.fused_sequence(inputs[:1], (h0, state.controller_c[0], reads0, state.weights, state.memory),
                                        _params(one.cell), one.cell.clip_value, one.cell.read_heads,
                                        one.cell.shift_radius, True)[0]
    grad_h, grad_reads = torch.autograd.grad(logits.square().sum(), (h0, reads0))
    assert grad_h.untyped_storage().data_ptr() != grad_reads.untyped_storage().data_ptr()
