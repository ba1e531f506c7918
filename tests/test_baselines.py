"""The modern baselines, GRU and Transformer, beyond the registry-wide checks of tests/test_models.py."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.metrics import loss_nats_per_seq
from bench.registry import build_task
from models.gru import GRU, GRUConfig
from models.transformer import POSITIONAL, Transformer, TransformerConfig, rotary

SMALL_TRANSFORMER = TransformerConfig.SMALL


# ---- GRU ------------------------------------------------------------------------------------------------------------
def test_gru_learned_initial_state_is_trained():
    torch.manual_seed(0)
    model = GRU(5, 4, layers=2, units=8)
    assert isinstance(model.h0, torch.nn.Parameter) and model.h0.shape == (2, 1, 8)
    assert any(p is model.h0 for p in model.parameters())
    logits = model(torch.randn(3, 6, 5))
    logits.square().sum().backward()
    assert model.h0.grad is not None and model.h0.grad.abs().sum() > 0
    before = model.h0.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(model.h0.detach(), before)


def test_gru_fixed_initial_state_is_a_zero_buffer():
    model = GRU(5, 4, learned_init=False, **GRUConfig.SMALL)
    assert "h0" in dict(model.named_buffers()) and not any(p is model.h0 for p in model.parameters())
    assert model.h0.abs().sum() == 0


def test_default_parameter_counts_on_copy():
    """The counts docs/MODELS.md quotes (Copy: in 9, out 8)."""
    assert GRU(9, 8).parameter_count() == 997_384
    assert GRU(9, 8, learned_init=False).parameter_count() == 996_616
    assert Transformer(9, 8).parameter_count() == 795_656
    assert Transformer(9, 8, positional="learned").parameter_count() == 795_656 + 1024 * 128


# ---- Transformer ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("positional", POSITIONAL)
def test_transformer_is_causal(positional):
    """Changing the input at step t changes no output before t (and does change the output at t)."""
    torch.manual_seed(0)
    model = Transformer(5, 4, positional=positional, layers=2, d_model=16, heads=2, ff_units=32).eval()
    inputs = torch.randn(2, 12, 5)
    changed = inputs.clone()
    changed[:, 7] += torch.randn(2, 5)
    with torch.no_grad():
        before, after = model(inputs), model(changed)
    torch.testing.assert_close(after[:, :7], before[:, :7], rtol=0, atol=1e-6)
    assert (after[:, 7] - before[:, 7]).abs().max() > 1e-4


def test_rotary_scores_depend_only_on_the_offset():
    """With the same content at every position, rotary(q)_i . rotary(k)_j is a function of i - j alone, and not a
    constant (a rotation that did nothing, or an absolute encoding, fails one of the two checks)."""
    torch.manual_seed(0)
    steps, width = 16, 8
    q = torch.randn(width).expand(steps, width)
    k = torch.randn(width).expand(steps, width)
    scores = rotary(q) @ rotary(k).T  # [T, T]
    for offset in range(-steps + 1, steps):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), rtol=1e-5, atol=1e-5)
    offsets = torch.stack([torch.diagonal(scores, o)[0] for o in range(-steps + 1, steps)])
    assert offsets.std() > 1e-2  # positions do change the score
    # RoPE is a rotation: norms are kept, and position 0 is left as it is
    torch.testing.assert_close(rotary(q).norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(rotary(q)[0], q[0])


def test_rotary_inside_the_model_gives_relative_attention_scores():
    """The first block's attention logits on a constant input (same content at every step) depend on i - j only
    under `rotary`; under `sinusoidal` (absolute positions added) they do not."""
    torch.manual_seed(0)
    inputs = torch.randn(1, 1, 5).expand(1, 10, 5)

    def first_block_scores(positional):
        model = Transformer(5, 4, positional=positional, **SMALL_TRANSFORMER)
        with torch.no_grad():
            block = model.blocks[0]
            return block.attention.scores(block.norm1(model.embed(inputs)))[0]  # [heads, T, T]

    def is_relative(scores):
        return all(torch.allclose(d, d[..., :1].expand_as(d), atol=1e-5)
                   for d in (torch.diagonal(scores, o, dim1=-2, dim2=-1) for o in range(-9, 10)))

    assert is_relative(first_block_scores("rotary"))
    assert not is_relative(first_block_scores("sinusoidal"))


def test_learned_positions_beyond_max_positions_raise():
    model = Transformer(5, 4, positional="learned", max_positions=8, **SMALL_TRANSFORMER)
    assert model(torch.zeros(1, 8, 5)).shape == (1, 8, 4)
    with pytest.raises(ValueError, match="9 steps is longer than max_positions 8"):
        model(torch.zeros(1, 9, 5))
    for positional in ("sinusoidal", "rotary", "none"):  # the other modes accept any length
        other = Transformer(5, 4, positional=positional, max_positions=8, **SMALL_TRANSFORMER)
        assert other(torch.zeros(1, 20, 5)).shape == (1, 20, 4)
    assert Transformer.max_steps(positional="learned", max_positions=8) == 8
    assert Transformer.max_steps(positional="rotary", max_positions=8) is None


def test_a_suite_whose_sequences_exceed_max_positions_is_refused_before_training(tmp_path, capsys):
    """Copy tested at L = 6 has T = 13: max_positions 12 is refused by `validate` (and `run`), 13 is accepted."""
    tasks = "tasks={copy: {bits: 3, train_sizes: [1, 3], test_sizes: [3, 6]}}"
    small = ", ".join(f"{k}: {v}" for k, v in SMALL_TRANSFORMER.items())
    for limit, status in ((12, 2), (13, 0)):
        models = f"models={{tf: {{model: transformer, positional: learned, max_positions: {limit}, {small}}}}}"
        assert main(["validate", "smoke", "--set", tasks, "--set", models]) == status
    err = capsys.readouterr().err
    assert "models.tf: accepts at most 12 time steps but tasks.copy has sequences of 13" in err


def test_transformer_config_checks():
    with pytest.raises(ValueError, match="d_model must be a multiple of heads"):
        TransformerConfig(d_model=10, heads=3)
    with pytest.raises(ValueError, match="even d_model / heads"):
        TransformerConfig(d_model=6, heads=2, positional="rotary")
    TransformerConfig(d_model=6, heads=2, positional="sinusoidal")  # odd head width is fine without RoPE
    with pytest.raises(ValueError, match=r"positional must be one of"):
        TransformerConfig(positional="alibi")
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        TransformerConfig(dropout=1.0)


def test_transformer_dropout_trains_stochastically_and_evaluates_deterministically():
    torch.manual_seed(0)
    model = Transformer(5, 4, dropout=0.5, **SMALL_TRANSFORMER)
    inputs = torch.randn(2, 6, 5)
    assert not torch.equal(model(inputs), model(inputs))
    model.eval()
    torch.testing.assert_close(model(inputs), model(inputs), rtol=0, atol=0)


@pytest.mark.parametrize("positional", POSITIONAL)
def test_every_positional_mode_learns_a_little(positional):
    task = build_task("copy", bits=3, train_sizes=[1, 3])
    torch.manual_seed(0)
    model = Transformer(task.input_size, task.output_size, positional=positional, **SMALL_TRANSFORMER)
    batch = task.sample(8, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1]) and losses[-1] < losses[0]


# ---- through the harness --------------------------------------------------------------------------------------------
def test_both_train_through_the_harness(tmp_path):
    """A few steps of each, two seeds trained as one group (the harness's per-run path for models without a pure
    step), compile on (a no-op for them): every run finishes with a finite loss."""
    small = ", ".join(f"{k}: {v}" for k, v in SMALL_TRANSFORMER.items())
    models = (f"models={{gru: {{layers: 1, units: 16}}, transformer: {{{small}}}, "
              f"tf_learned: {{model: transformer, positional: learned, max_positions: 16, {small}}}}}")
    args = ["run", "--suite", "smoke", "--out", str(tmp_path), "--no-report", "--no-estimate",
            "--set", "tasks={copy: {bits: 3, train_sizes: [1, 3], test_sizes: [3, 6]}}", "--set", models,
            "--set", "train.steps=6", "--set", "train.eval_every=3", "--set", "train.checkpoint_every=3",
            "--set", "train.parallel_seeds=2", "--set", "train.compile=on", "--set", "seeds=2"]
    assert main(args) == 0
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert sorted(runs["model"]) == ["gru", "gru", "tf_learned", "tf_learned", "transformer", "transformer"]
    assert (runs["status"] == "done").all() and (runs["steps"] == 6).all()
    assert runs["final_loss_bits_per_seq"].map(math.isfinite).all()
    generalization = pd.read_csv(tmp_path / "generalization.csv")
    assert generalization["loss_bits_per_seq"].map(math.isfinite).all()
