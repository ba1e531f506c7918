"""The NTM (docs/MODELS.md#ntm): gradients, numerical safety, parameter count, step order, memory init, ablation,
training."""

from __future__ import annotations

import math
import time

import pytest
import torch

from bench.metrics import loss_nats_per_seq, per_example
from bench.registry import build_model, build_task
from models.addressing import content_weighting, read_memory
from models.ntm import NTM, NTMCell, NTMConfig, NTMState, _parts

COPY_IN, COPY_OUT = 9, 8  # Copy with 8 bits: 8 data bits + the delimiter flag in, 8 bits out

# A small cell with several heads, so the split of the interface and the per-head loops are exercised.
SMALL = dict(controller_units=6, memory_locations=5, memory_width=3, read_heads=2, write_heads=2)


def random_state(cell: NTMCell, batch: int, generator: torch.Generator, dtype=torch.float32) -> NTMState:
    """A state away from every kink (no clipping, no zero norms), for gradient checks."""

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype)

    layers = len(cell.controller)
    heads = cell.read_heads + cell.write_heads
    return NTMState(
        tuple(0.5 * randn(batch, cell.units) for _ in range(layers)),
        tuple(0.5 * randn(batch, cell.units) for _ in range(layers)),
        torch.tanh(randn(batch, cell.read_heads, cell.width)),
        torch.softmax(randn(batch, heads, cell.locations), -1),
        torch.tanh(randn(batch, cell.locations, cell.width)),
    )


def all_grads_finite(module: torch.nn.Module) -> bool:
    return all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


# ---- gradients -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("addressing", ["content_and_location", "content"])
def test_gradcheck_one_full_step(addressing):
    """float64 finite differences through one step, w.r.t. the input, the whole state and the step's parameters."""
    torch.manual_seed(0)
    cell = NTMCell(3, 2, controller_layers=2, addressing=addressing, **SMALL).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, generator=g, dtype=torch.float64)
    state = random_state(cell, 2, g, torch.float64)
    names = [n for n, _ in cell.named_parameters() if n not in ("r0_raw", "w0_raw")]
    params = [cell.get_parameter(n).detach().clone() for n in names]
    flat_state = [*state.controller_h, *state.controller_c, state.reads, state.weights, state.memory]
    layers = len(cell.controller)

    def step(x, *tensors):
        param_values, s = tensors[: len(names)], tensors[len(names) :]
        st = NTMState(tuple(s[:layers]), tuple(s[layers : 2 * layers]), *s[2 * layers :])
        logits, new = torch.func.functional_call(cell, dict(zip(names, param_values)), (x, st))
        return (logits, *new.controller_h, *new.controller_c, new.reads, new.weights, new.memory)

    inputs = [t.clone().requires_grad_(True) for t in (x, *params, *flat_state)]
    # fast_mode compares random projections of the Jacobian; the full Jacobian takes over a minute on 2 cores.
    assert torch.autograd.gradcheck(step, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_gradcheck_through_initial_state_with_learned_memory():
    """r0, w0 and a learned M0 receive correct gradients through three steps of the sequence model."""
    torch.manual_seed(0)
    model = NTM(3, 2, memory_init="learned", **SMALL).double()
    x = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    names = ["cell.r0_raw", "cell.w0_raw", "cell.m0_raw"]

    def run(*values):
        return torch.func.functional_call(model, dict(zip(names, values)), (x,))

    inputs = [model.get_parameter(n).detach().clone().requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_zero_key_and_zero_memory_rows_give_finite_outputs_and_grads():
    """Constant init; the interface is zeroed so every key has norm 0, and half of M0's rows are exactly 0."""
    torch.manual_seed(0)
    model = NTM(COPY_IN, COPY_OUT, controller_units=16, trainable_memory_init=True)
    with torch.no_grad():
        model.cell.interface.weight.zero_()
        model.cell.interface.bias.zero_()  # raw 0: keys tanh(0) = 0, norm 0
        model.cell.m0[::2] = 0.0  # zero memory rows next to 1e-6 rows
    task = build_task("copy", train_sizes=[1, 5])
    batch = task.sample(4, torch.Generator().manual_seed(0), size=5)
    logits, trace = model(batch.inputs, trace=True)
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(v).all() for v in trace.values())
    loss_nats_per_seq(logits, batch.targets, batch.mask).backward()
    assert all_grads_finite(model)
    assert model.cell.m0.grad is not None and model.cell.interface.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("pattern", ["plus", "minus", "alternating"])
@pytest.mark.parametrize("magnitude", ["at_clip", "beyond_clip"])
def test_interface_at_plus_minus_clip_is_finite(pattern, magnitude):
    """Every raw interface value at +-20: gamma = 21 over a uniform weighting of 128 slots (constant M0).

    `at_clip` sets the raw values to exactly +-20, where the clip still passes gradients, so the backward pass goes
    through the activations at their extremes; `beyond_clip` pushes them far past it.
    """
    torch.manual_seed(0)
    model = NTM(COPY_IN, COPY_OUT, controller_units=16, trainable_memory_init=True)  # 128 x 20 memory
    cell = model.cell
    signs = {
        "plus": torch.ones(cell.interface_size),
        "minus": -torch.ones(cell.interface_size),
        "alternating": (-1.0) ** torch.arange(cell.interface_size),
    }[pattern]
    value = cell.clip_value if magnitude == "at_clip" else 1e3
    with torch.no_grad():
        cell.interface.weight.zero_()
        cell.interface.bias.copy_(signs * value)
    task = build_task("copy", train_sizes=[1, 5])
    batch = task.sample(4, torch.Generator().manual_seed(0), size=5)
    logits, trace = model(batch.inputs, trace=True)
    assert torch.isfinite(logits).all()
    for weights in trace.values():
        assert torch.isfinite(weights).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    loss_nats_per_seq(logits, batch.targets, batch.mask).backward()
    assert all_grads_finite(model)
    if magnitude == "at_clip":
        assert cell.interface.bias.grad.abs().sum() > 0


# ---- parameter count -----------------------------------------------------------------------------------------------
def expected_parameter_count(inputs, outputs, units=100, n=128, m=20, reads=1, writes=1, shift_radius=1,
                             learned_memory=False):
    """The count of docs/MODELS.md#ntm-defaults-and-parameter-count, derived term by term."""
    controller_in = inputs + reads * m  # x_t and the previous reads
    lstm = 4 * units * (controller_in + units) + 2 * 4 * units  # two weight matrices, two bias vectors
    per_head = m + 1 + 1 + (2 * shift_radius + 1) + 1  # key, strength, gate, shifts, sharpening
    interface_values = (reads + writes) * per_head + 2 * m * writes  # + erase and add per write head
    interface = units * interface_values + interface_values
    output = (units + reads * m) * outputs + outputs
    initial_reads = reads * m
    initial_weights = (reads + writes) * n
    memory = n * m if learned_memory else 0
    return lstm + interface + output + initial_reads + initial_weights + memory


def test_parameter_count_matches_docs():
    fixed = build_model("ntm", COPY_IN, COPY_OUT)
    learned = build_model("ntm", COPY_IN, COPY_OUT, memory_init="learned")
    assert fixed.parameter_count() == expected_parameter_count(COPY_IN, COPY_OUT) == 62_936
    assert learned.parameter_count() == expected_parameter_count(COPY_IN, COPY_OUT, learned_memory=True) == 65_496
    assert fixed.cell.interface_size == 92


def test_parameter_count_other_sizes():
    params = dict(controller_units=7, memory_locations=9, memory_width=4, read_heads=2, write_heads=3, shift_radius=2)
    model = build_model("ntm", 5, 3, **params)
    assert model.parameter_count() == expected_parameter_count(5, 3, units=7, n=9, m=4, reads=2, writes=3,
                                                               shift_radius=2)


# ---- initialisation ------------------------------------------------------------------------------------------------
def test_initialisation():
    torch.manual_seed(0)
    cell = NTM(COPY_IN, COPY_OUT).cell
    lstm = cell.controller[0]
    units = cell.units
    # forget-gate bias 1 on ONE bias vector only
    torch.testing.assert_close(lstm.bias_ih + lstm.bias_hh, torch.cat([torch.zeros(units), torch.ones(units),
                                                                       torch.zeros(2 * units)]))
    for layer in (cell.interface, cell.output):
        bound = 2.0 / math.sqrt(layer.in_features)
        assert layer.weight.abs().max() <= bound
        truncated_std = 0.88 / math.sqrt(layer.in_features)  # a normal cut at +-2 std keeps 0.88 of its std
        assert float(layer.weight.detach().std()) == pytest.approx(truncated_std, rel=0.1)
        assert (layer.bias == 0).all()
    assert cell.r0_raw.abs().max() <= math.sqrt(6 / (1 + cell.width))
    assert cell.w0_raw.abs().max() <= math.sqrt(6 / (1 + cell.locations))
    state = cell.initial_state(3)
    assert all((h == 0).all() for h in state.controller_h + state.controller_c)
    torch.testing.assert_close(state.reads[0], torch.tanh(cell.r0_raw))
    torch.testing.assert_close(state.weights.sum(-1), torch.ones(3, 2))


def test_memory_init_constant():
    model = build_model("ntm", COPY_IN, COPY_OUT)
    state = model.cell.initial_state(2)
    torch.testing.assert_close(state.memory, torch.full((2, 128, 20), 1e-6))
    assert "cell.m0" in dict(model.named_buffers())
    assert "cell.m0" not in dict(model.named_parameters())


def test_memory_init_random_is_shared_and_seeded():
    torch.manual_seed(7)
    a = build_model("ntm", COPY_IN, COPY_OUT, memory_init="random")
    torch.manual_seed(7)
    b = build_model("ntm", COPY_IN, COPY_OUT, memory_init="random")
    torch.manual_seed(8)
    c = build_model("ntm", COPY_IN, COPY_OUT, memory_init="random")
    memory = a.cell.initial_state(3).memory
    torch.testing.assert_close(memory[0], memory[1])  # one draw shared by every example
    torch.testing.assert_close(memory[0], memory[2])
    assert memory.abs().max() < 1 and memory.std() == pytest.approx(math.tanh(0.5), rel=0.25)
    torch.testing.assert_close(a.cell.m0, b.cell.m0)
    assert not torch.equal(a.cell.m0, c.cell.m0)
    assert "cell.m0" not in dict(a.named_parameters())


def test_memory_init_learned_is_a_parameter():
    torch.manual_seed(0)
    model = build_model("ntm", COPY_IN, COPY_OUT, memory_init="learned")
    raw = dict(model.named_parameters())["cell.m0_raw"]
    assert raw.requires_grad and raw.numel() == 128 * 20
    assert raw.abs().max() <= math.sqrt(6 / (1 + 128 * 20))
    torch.testing.assert_close(model.cell.initial_state(2).memory[1], torch.tanh(raw).view(128, 20))
    # trainable_memory_init does not matter for `learned`: it is always trained
    also = build_model("ntm", COPY_IN, COPY_OUT, memory_init="learned", trainable_memory_init=True)
    assert also.parameter_count() == model.parameter_count()


@pytest.mark.parametrize("memory_init", ["constant", "random"])
def test_trainable_memory_init_toggles_requires_grad(memory_init):
    fixed = build_model("ntm", COPY_IN, COPY_OUT, memory_init=memory_init)
    trained = build_model("ntm", COPY_IN, COPY_OUT, memory_init=memory_init, trainable_memory_init=True)
    assert not fixed.cell.m0.requires_grad
    assert isinstance(trained.cell.m0, torch.nn.Parameter) and trained.cell.m0.requires_grad
    assert trained.parameter_count() == fixed.parameter_count() + 128 * 20
    task = build_task("copy", train_sizes=[1, 3])
    batch = task.sample(2, torch.Generator().manual_seed(0))
    loss_nats_per_seq(trained(batch.inputs), batch.targets, batch.mask).backward()
    assert trained.cell.m0.grad is not None and torch.isfinite(trained.cell.m0.grad).all()


# ---- the order of a step -------------------------------------------------------------------------------------------
def test_read_before_write():
    """A write at step t changes the read at step t+1, not at step t."""
    torch.manual_seed(0)
    base = NTMCell(4, 3, **SMALL)
    other = NTMCell(4, 3, **SMALL)
    other.load_state_dict(base.state_dict())
    with torch.no_grad():  # change only what the write heads add and erase
        other.interface.bias[other.heads_size :] += 1.0
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 4, generator=g)
    state_base = state_other = base.initial_state(2)
    reads = []
    for t in range(2):
        _, state_base = base(x[:, t], state_base)
        _, state_other = other(x[:, t], state_other)
        reads.append((state_base.reads, state_other.reads))
        if t == 0:
            assert not torch.allclose(state_base.memory, state_other.memory)  # the writes differ ...
    torch.testing.assert_close(reads[0][0], reads[0][1])  # ... but not the reads of the same step
    assert not torch.allclose(reads[1][0], reads[1][1])  # the next step reads what was written


def test_step_reads_old_memory_with_the_new_weights():
    torch.manual_seed(0)
    cell = NTMCell(4, 3, **SMALL)
    state = random_state(cell, 2, torch.Generator().manual_seed(4))
    _, new = cell(torch.randn(2, 4), state)
    torch.testing.assert_close(new.reads, read_memory(new.weights[:, : cell.read_heads], state.memory))
    assert not torch.allclose(new.memory, state.memory)


def test_cell_alone_matches_the_sequence_model():
    torch.manual_seed(0)
    model = NTM(4, 3, **SMALL)
    x = torch.randn(2, 6, 4)
    logits, trace = model(x, trace=True)
    state = model.cell.initial_state(2)
    for t in range(6):
        logits_t, state = model.cell(x[:, t], state)
        torch.testing.assert_close(logits_t, logits[:, t])
        torch.testing.assert_close(state.weights[:, :2], trace["read_weights"][:, t])
        torch.testing.assert_close(state.weights[:, 2:], trace["write_weights"][:, t])
    assert trace["read_weights"].shape == (2, 6, 2, 5) and trace["write_weights"].shape == (2, 6, 2, 5)


def test_interface_parts_cover_the_interface_once_in_order():
    # the named widths cut the interface into consecutive parts (a head's scalars lose their axis) that, put back
    # together, are the interface again
    cell = NTMCell(4, 3, **{**SMALL, "write_heads": 3, "shift_radius": 2})
    raw = torch.arange(float(cell.interface_size)).expand(2, -1)
    heads, writes = _parts(raw, cell.interface_widths)
    blocks = [_parts(heads.unflatten(-1, (-1, cell.head_size)), cell.head_widths),
              _parts(writes.unflatten(-1, (cell.write_heads, -1)), cell.write_widths)]
    rebuilt = [torch.cat([p if p.dim() == 3 else p.unsqueeze(-1) for p in parts], -1).flatten(1) for parts in blocks]
    assert torch.equal(torch.cat(rebuilt, -1), raw)
    assert [p.shape for p in blocks[0]] == [(2, 5, 3), (2, 5), (2, 5), (2, 5, 5), (2, 5)]


def test_output_is_clipped():
    torch.manual_seed(0)
    model = NTM(4, 3, clip_value=0.5, **SMALL)
    with torch.no_grad():
        model.cell.output.bias.fill_(10.0)
    assert model(torch.randn(2, 3, 4)).max() == 0.5


# ---- the content-only ablation -------------------------------------------------------------------------------------
def test_content_addressing_ignores_previous_weights():
    torch.manual_seed(0)
    content = NTMCell(4, 3, addressing="content", **SMALL)
    location = NTMCell(4, 3, **SMALL)
    location.load_state_dict(content.state_dict())
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, generator=g)
    state = random_state(content, 2, g)
    moved = state._replace(weights=state.weights.roll(1, -1))
    _, a = content(x, state)
    _, b = content(x, moved)
    torch.testing.assert_close(a.weights, b.weights)  # content only: the previous weights do not matter
    # and the weights are exactly the content lookup of the interface's keys and strengths
    raw = content.interface(a.controller_h[-1]).clamp(-20, 20)[:, : content.heads_size]
    raw = raw.unflatten(-1, (-1, content.head_size))
    expected = content_weighting(torch.tanh(raw[..., :3]), torch.nn.functional.softplus(raw[..., 3]), state.memory)
    torch.testing.assert_close(a.weights, expected)
    _, c = location(x, state)
    _, d = location(x, moved)
    assert not torch.allclose(c.weights, d.weights)
    assert sum(p.numel() for p in content.parameters()) == sum(p.numel() for p in location.parameters())


# ---- validation ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, names", [
    ({"controller_layers": 0}, "controller_layers"),
    ({"controller_units": 0}, "controller_units"),
    ({"memory_locations": 0}, "memory_locations"),
    ({"memory_width": -1}, "memory_width"),
    ({"read_heads": 0}, "read_heads"),
    ({"write_heads": 0}, "write_heads"),
    ({"read_heads": 1.5}, "read_heads"),
    ({"shift_radius": -1}, "shift_radius"),
    ({"memory_locations": 4, "shift_radius": 2}, "memory_locations"),
    ({"clip_value": 0}, "clip_value"),
    ({"clip_value": "20"}, "clip_value"),
    ({"memory_init": "zeros"}, "memory_init"),
    ({"trainable_memory_init": "yes"}, "trainable_memory_init"),
    ({"addressing": "location"}, "addressing"),
])
def test_invalid_parameters_are_rejected(params, names):
    with pytest.raises(ValueError, match=names):
        build_model("ntm", COPY_IN, COPY_OUT, **params)


def test_invalid_parameter_message_lists_allowed_values():
    with pytest.raises(ValueError, match="constant.*random.*learned"):
        NTMCell(9, 8, memory_init="zeros")
    with pytest.raises(ValueError, match=r"2 \* shift_radius \+ 1 = 5"):
        NTMCell(9, 8, memory_locations=4, shift_radius=2)


@pytest.mark.parametrize("params, message", [
    ({"controller_units": 0}, "ntm: controller_units must be an integer >= 1, got 0"),
    ({"read_heads": True}, "ntm: read_heads must be an integer >= 1, got True"),
    ({"shift_radius": -1}, "ntm: shift_radius must be an integer >= 0, got -1"),
    ({"clip_value": float("nan")}, "ntm: clip_value must be a number > 0, got nan"),
    ({"memory_init": "zeros"}, "ntm: memory_init must be one of ['constant', 'random', 'learned'], got 'zeros'"),
    ({"trainable_memory_init": 1}, "ntm: trainable_memory_init must be true or false, got 1"),
    ({"addressing": "location"},
     "ntm: addressing must be one of ['content_and_location', 'content'], got 'location'"),
])
def test_config_messages_name_the_parameter_and_what_is_allowed(params, message):
    with pytest.raises(ValueError) as error:
        NTMConfig(**params)
    assert str(error.value) == message


def test_widths_are_checked():
    with pytest.raises(ValueError, match="ntm: input_size must be an integer >= 1, got 0"):
        NTMCell(0, 8)


def test_the_config_is_passed_whole_and_keywords_replace_its_fields():
    config = NTMConfig(memory_locations=16, memory_width=5, memory_init="random")
    torch.manual_seed(0)
    whole = NTM(COPY_IN, COPY_OUT, config)
    torch.manual_seed(0)
    keywords = NTM(COPY_IN, COPY_OUT, memory_locations=16, memory_width=5, memory_init="random")
    assert whole.config == keywords.config == config
    assert whole.cell.config is whole.config  # the cell gets the model's config itself
    for (name, a), (name_b, b) in zip(whole.state_dict().items(), keywords.state_dict().items(), strict=True):
        assert name == name_b and torch.equal(a, b), name
    replaced = NTM(COPY_IN, COPY_OUT, config, memory_width=7)
    assert replaced.cell.width == 7 and replaced.cell.locations == 16 and config.memory_width == 5
    with pytest.raises(TypeError, match="unknown parameter 'no_such'.*allowed: controller_layers"):
        NTMCell(COPY_IN, COPY_OUT, no_such=1)
    with pytest.raises(TypeError, match="config must be of type NTMConfig"):
        NTMCell(COPY_IN, COPY_OUT, 100)  # an old positional parameter is refused, not misread


# ---- training ------------------------------------------------------------------------------------------------------
SLOW_SEEDS = (1, 2, 3)
SLOW_STEP_BUDGET = 2000  # seeds 1-3 converge at steps 1100, 1100 and 1300 (torch 2.13, CPU)
SLOW_EVAL_EVERY = 100
SLOW_MODEL = dict(controller_units=100, memory_locations=16, memory_width=8)
#: 1e-2, not the paper's 1e-3: at 1e-3 this small Copy needs over 3,000 steps, too slow for the default test run
SLOW_LR = 1e-2


def train_copy_until_converged(seed: int, max_steps: int) -> int | None:
    """Adam (SLOW_LR), batch 32, global-norm clip 50 on Copy (8 bits, L in 1..5, one length per batch).

    Returns the first step (a multiple of SLOW_EVAL_EVERY) at which the fixed evaluation batch has under 0.1 wrong
    bits per sequence, or None within `max_steps`.
    """
    task = build_task("copy", train_sizes=[1, 5])
    torch.manual_seed(seed)
    model = build_model("ntm", task.input_size, task.output_size, **SLOW_MODEL)
    optimizer = torch.optim.Adam(model.parameters(), lr=SLOW_LR)
    data = torch.Generator().manual_seed(seed)
    eval_generator = torch.Generator().manual_seed(10_000)
    eval_batches = [task.sample(64, eval_generator, size=length) for length in range(1, 6)]  # 320 sequences
    for step in range(1, max_steps + 1):
        batch = task.sample(32, data, size=task.sample_size(data))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
        optimizer.step()
        if step % SLOW_EVAL_EVERY == 0:
            with torch.no_grad():
                wrong = sum(float(per_example(model(b.inputs), b.targets, b.mask)["wrong_bits"].sum())
                            for b in eval_batches)
            if wrong / sum(b.batch_size for b in eval_batches) < 0.1:
                return step
    return None


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_ntm_learns_copy(seed, one_thread):
    start = time.perf_counter()
    converged_at = train_copy_until_converged(seed, SLOW_STEP_BUDGET)
    elapsed = time.perf_counter() - start
    print(f"seed {seed}: converged at step {converged_at} in {elapsed:.1f}s")
    assert converged_at is not None, f"seed {seed} did not reach 0.1 wrong bits/seq in {SLOW_STEP_BUDGET} steps"
