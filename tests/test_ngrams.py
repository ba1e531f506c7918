"""Dynamic N-Grams: layout, the Bayes-optimal loss by hand, the sampler's statistics, purity, training."""

from __future__ import annotations

import math

import pytest
import torch

from bench.registry import build_task
from tasks.base import Rule, collate
from tasks.ngrams import generate_bits, layout, optimal_loss_bits, random_table
from tests.conftest import converged


def _batch_from_bits(sequences: list[list[int]], context_bits: int):
    """Inputs, targets and mask for hand-written bit sequences (padded at the end to the longest)."""
    longest = max(len(s) for s in sequences)
    bits = torch.zeros(len(sequences), longest, dtype=torch.int64)
    for b, sequence in enumerate(sequences):
        bits[b, : len(sequence)] = torch.tensor(sequence)
    return layout(bits, [len(s) for s in sequences], context_bits)


def test_widths_steps_and_mask_for_the_default_length():
    task = build_task("ngrams")
    assert (task.input_size, task.output_size) == (1, 1)
    assert task.steps_for((200,)) == 199
    assert task.test_sizes == [(400,)]
    assert task.size_label((200,)) == "length=200"
    batch = task.sample(8, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (8, 199, 1) and batch.targets.shape == (8, 199, 1)
    assert batch.mask.shape == (8, 199)
    assert batch.sizes.tolist() == [[200]] * 8
    assert batch.mask.sum(1).tolist() == [195.0] * 8
    assert (batch.mask[:, :4] == 0).all() and (batch.mask[:, 4:] == 1).all()  # targets are bits 5..199
    assert torch.equal(batch.targets[:, :-1], batch.inputs[:, 1:])  # the target is the next input
    assert set(batch.inputs.unique().tolist()) == {0.0, 1.0}
    long = task.sample(2, torch.Generator().manual_seed(0), size=400)
    assert long.steps == 399 and long.mask.sum(1).tolist() == [395.0, 395.0]


def test_optimal_loss_by_hand_one_bit_context():
    # Bits 0 1 1 0 1 with 1-bit contexts; KT predicts P(1) = (N1 + 1/2) / (N + 1) per context:
    #   bit1=1, context 0, no counts:        P(1) = 1/2 -> 1 bit
    #   bit2=1, context 1, no counts:        P(1) = 1/2 -> 1 bit
    #   bit3=0, context 1, N1=1, N0=0:       P(0) = 1/4 -> 2 bits
    #   bit4=1, context 0, N1=1, N0=0:       P(1) = 3/4 -> log2(4/3) bits
    inputs, targets, mask = _batch_from_bits([[0, 1, 1, 0, 1]], context_bits=1)
    assert mask.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    loss = optimal_loss_bits(inputs, targets, mask, context_bits=1)
    assert loss.tolist() == pytest.approx([4 + math.log2(4 / 3)])


def test_optimal_loss_by_hand_five_bit_context_and_padding():
    # Ten zeros: bits 5..9 all follow context 00000, seen n = 0..4 times before, all zeros:
    # P(0) = (n + 1/2) / (n + 1).
    zeros_bits = -sum(math.log2((n + 0.5) / (n + 1)) for n in range(5))
    # 0 0 0 0 0 1 0 0 0 0 0 1: bit 5 (=1) follows 00000 unseen (1 bit); bits 6..10 have new contexts
    # 00001, 00010, 00100, 01000, 10000 (1 bit each); bit 11 (=1) follows 00000 again with N0=0, N1=1:
    # P(1) = 3/4.
    mixed = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]
    mixed_bits = 6 + math.log2(4 / 3)
    inputs, targets, mask = _batch_from_bits([[0] * 10, mixed, [1] * 6], context_bits=5)
    assert inputs.shape == (3, 11, 1)
    assert mask.sum(1).tolist() == [5.0, 7.0, 1.0]
    loss = optimal_loss_bits(inputs, targets, mask, context_bits=5)
    assert loss.tolist() == pytest.approx([zeros_bits, mixed_bits, 1.0])

    task = build_task("ngrams")
    batch = collate([((10,), inputs[0, :9], targets[0, :9], mask[0, :9]),
                     ((12,), inputs[1], targets[1], mask[1])])
    expected = {"optimal_loss_bits_per_seq": pytest.approx(zeros_bits + mixed_bits)}  # a sum over examples
    assert task.reference_metrics(batch) == expected


def test_optimal_loss_matches_a_per_example_reference():
    """The batched estimator against plain dictionary counts, on sampled sequences of mixed lengths."""
    task = build_task("ngrams", train_sizes=[20, 120])
    batch = task.sample(12, torch.Generator().manual_seed(7))
    loss = optimal_loss_bits(batch.inputs, batch.targets, batch.mask, context_bits=5)
    for b in range(12):
        length = int(batch.sizes[b, 0])
        bits = [int(batch.inputs[b, 0, 0])] + [int(v) for v in batch.targets[b, : length - 1, 0]]
        counts: dict[tuple[int, ...], list[int]] = {}
        expected = 0.0
        for j in range(5, length):
            zeros, ones = counts.setdefault(tuple(bits[j - 5 : j]), [0, 0])
            p_one = (ones + 0.5) / (zeros + ones + 1)
            expected -= math.log2(p_one if bits[j] else 1 - p_one)
            counts[tuple(bits[j - 5 : j])][bits[j]] += 1
        assert float(loss[b]) == pytest.approx(expected, rel=1e-9)


def test_optimal_loss_is_near_graves_on_average():
    # Graves reports about 133 bits, seemingly over all 200 bits; we score 195; the other 5 cost 1 bit each.
    task = build_task("ngrams")
    batch = task.sample(500, torch.Generator().manual_seed(0))
    per_seq = task.reference_metrics(batch)["optimal_loss_bits_per_seq"] / 500
    assert 122 < per_seq < 134


def _assert_frequencies_match(bits: torch.Tensor, table: torch.Tensor, context_bits: int,
                              min_visits: int) -> int:
    """Per context, the count of ones after it is within 5 binomial sigmas (+1); returns contexts checked."""
    checked = 0
    weights = 2 ** torch.arange(context_bits - 1, -1, -1)
    windows = bits.unfold(0, context_bits, 1)[:-1]  # [L - c, c]: the context of each bit c..L-1
    contexts = (windows * weights).sum(1)
    following = bits[context_bits:]
    for context in range(1 << context_bits):
        after = following[contexts == context]
        visits = after.numel()
        if visits < min_visits:
            continue
        p = float(table[context])
        ones = int(after.sum())
        assert abs(ones - visits * p) <= 5 * math.sqrt(visits * p * (1 - p)) + 1, (context, ones, visits, p)
        checked += 1
    return checked


def test_generated_bits_follow_a_fixed_table():
    generator = torch.Generator().manual_seed(11)
    table = torch.linspace(0.05, 0.95, 32, dtype=torch.float64)
    table = table[torch.randperm(32, generator=generator)]  # a context-order mix-up would not pass
    length = 60_000
    first = torch.tensor([[1, 0, 1, 1, 0]])
    uniforms = torch.rand(1, length - 5, generator=generator, dtype=torch.float64)
    bits = generate_bits(table[None], first, uniforms)[0]
    assert bits[:5].tolist() == [1, 0, 1, 1, 0]
    assert _assert_frequencies_match(bits, table, 5, min_visits=200) == 32


def test_sampled_sequence_follows_its_table():
    """End to end through `sample`: the table is an example's first draw, so a twin generator recovers it."""
    task = build_task("ngrams")
    generator = torch.Generator().manual_seed(5)
    clone = torch.Generator().manual_seed(5)
    table = random_table(32, clone)
    batch = task.sample(1, generator, size=40_000)
    bits = torch.cat([batch.inputs[0, :1, 0], batch.targets[0, :, 0]]).to(torch.int64)
    assert _assert_frequencies_match(bits, table, 5, min_visits=30) >= 16


def test_table_is_beta_half_half():
    """The draws follow the arcsine law, CDF (2/pi) asin(sqrt(x)), within the DKW bound at 1e-6."""
    draws = random_table(100_000, torch.Generator().manual_seed(2)).sort().values
    cdf = (2 / math.pi) * torch.asin(draws.sqrt())
    empirical_hi = torch.arange(1, draws.numel() + 1, dtype=torch.float64) / draws.numel()
    distance = torch.maximum(empirical_hi - cdf, cdf - (empirical_hi - 1 / draws.numel())).max()
    assert float(distance) < math.sqrt(math.log(2 / 1e-6) / (2 * draws.numel()))


def test_variable_lengths_are_padded_at_the_end():
    task = build_task("ngrams", train_sizes=[10, 60])
    batch = task.sample(32, torch.Generator().manual_seed(3))
    lengths = batch.sizes[:, 0].tolist()
    assert len(set(lengths)) > 5 and all(10 <= n <= 60 for n in lengths)
    assert batch.steps == max(lengths) - 1 and task.max_train_steps() == 59
    for b, length in enumerate(lengths):
        steps = task.steps_for((length,))
        assert batch.mask[b].sum() == length - 5 and batch.mask[b, 4:steps].all()
        assert (batch.inputs[b, steps:] == 0).all() and (batch.targets[b, steps:] == 0).all()
        assert (batch.mask[b, steps:] == 0).all()


def test_sample_matches_the_per_example_path():
    """The batched `sample` draws exactly what the base class would: one `example` after another."""
    task = build_task("ngrams", train_sizes=[10, 40])
    batch = task.sample(5, torch.Generator().manual_seed(8))
    generator = torch.Generator().manual_seed(8)
    parts = []
    for _ in range(5):
        size = task.sample_size(generator)
        parts.append((size, *task.example(size, generator)))
    reference = collate(parts)
    for field in ("inputs", "targets", "mask", "sizes"):
        assert torch.equal(getattr(batch, field), getattr(reference, field))


def test_convergence_is_a_gap_to_the_optimum():
    task = build_task("ngrams")
    assert converged(task, {"loss_bits_per_seq": 130.9, "optimal_loss_bits_per_seq": 130.0,
                           "wrong_bits_per_seq": 60.0})
    assert not converged(task, {"loss_bits_per_seq": 131.0, "optimal_loss_bits_per_seq": 130.0})
    assert not converged(build_task("ngrams", converge_within=None),
        {"loss_bits_per_seq": 0.0, "optimal_loss_bits_per_seq": 130.0})
    with pytest.raises(KeyError, match="optimal_loss_bits_per_seq"):
        converged(task, {"loss_bits_per_seq": 130.0})


def test_the_convergence_rule_is_data():
    task = build_task("ngrams", converge_within=0.5)
    assert task.convergence == Rule("loss_bits_per_seq", 0.5, "<", reference="optimal_loss_bits_per_seq")
    assert task.convergence.bounds(task.error) and task.error.reference_label == "optimum"
    assert task.convergence.text() == "loss within 0.5 bits/seq of the Bayes optimum"
    assert not converged(task, {"loss_bits_per_seq": 130.5, "optimal_loss_bits_per_seq": 130.0})  # strict
    assert build_task("ngrams", converge_within=None).convergence is None


def test_sizes_too_short_for_a_context_are_rejected():
    task = build_task("ngrams")
    with pytest.raises(ValueError, match="context_bits"):
        task.sample(1, torch.Generator().manual_seed(0), size=5)
    assert task.sample(1, torch.Generator().manual_seed(0), size=6).mask.sum() == 1
    with pytest.raises(ValueError, match="context_bits"):
        build_task("ngrams", train_sizes=[3, 200])
    with pytest.raises(ValueError, match="context_bits"):
        build_task("ngrams", context_bits=3, test_sizes=[3])
    with pytest.raises(ValueError):
        build_task("ngrams", context_bits=0)
