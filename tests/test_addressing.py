"""The addressing math of models/addressing.py against values worked out by hand on a tiny memory
(docs/MODELS.md#ntm-addressing)."""

from __future__ import annotations

import math

import pytest
import torch

from models.addressing import (
    circular_shift,
    content_weighting,
    cosine_similarity,
    erase_and_add,
    interpolate,
    read_memory,
    sharpen,
)

# N = 4 locations of width M = 3; row 3 is at 45 degrees between rows 0 and 1.
MEMORY = torch.tensor([[[1.0, 0.0, 0.0],
                        [0.0, 1.0, 0.0],
                        [0.0, 0.0, 2.0],
                        [1.0, 1.0, 0.0]]])  # [1, 4, 3]


def one_hot(index: int, size: int = 5) -> torch.Tensor:
    """A weighting [1, 1, size] focused on `index`."""
    w = torch.zeros(1, 1, size)
    w[0, 0, index] = 1.0
    return w


# ---- content weighting -------------------------------------------------------------------------------------------
def test_cosine_similarity_by_hand():
    key = torch.tensor([[[3.0, 0.0, 0.0]]])  # [1, 1, 3]; its norm must not matter
    similarity = cosine_similarity(key, MEMORY)
    torch.testing.assert_close(similarity, torch.tensor([[[1.0, 0.0, 0.0, 1 / math.sqrt(2)]]]))


def test_content_weighting_by_hand():
    key = torch.tensor([[[1.0, 0.0, 0.0]]])
    weights = content_weighting(key, torch.tensor([[2.0]]), MEMORY)  # strength 2
    # softmax(2 * [1, 0, 0, 1/sqrt 2])
    scores = [math.exp(2.0), 1.0, 1.0, math.exp(2.0 / math.sqrt(2))]
    expected = torch.tensor([[[s / sum(scores) for s in scores]]])
    torch.testing.assert_close(weights, expected)


def test_content_weighting_several_heads_and_strength():
    keys = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])  # [1, 2, 3]
    weights = content_weighting(keys, torch.tensor([[0.0, 50.0]]), MEMORY)
    torch.testing.assert_close(weights[0, 0], torch.full((4,), 0.25))  # strength 0: uniform
    assert weights[0, 1].argmax() == 1 and weights[0, 1, 1] > 0.99999  # sharp on the exact match
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2))


def test_content_weighting_eps_is_a_parameter():
    key = torch.tensor([[[1.0, 0.0, 0.0]]])
    tiny = torch.zeros(1, 4, 3)
    tiny[0, 0, 0] = 1e-3
    # With a large eps the tiny row's cosine shrinks towards 0; with the NTM's 1e-8 it stays 1.
    ntm = cosine_similarity(key, tiny)[0, 0, 0]
    large = cosine_similarity(key, tiny, eps=1e-3)[0, 0, 0]
    torch.testing.assert_close(ntm, torch.tensor(1.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(large, torch.tensor(0.5), atol=1e-4, rtol=0)


def test_zero_key_and_zero_memory_rows_are_finite():
    memory = torch.tensor([[[0.0, 0.0, 0.0],
                            [1.0, -1.0, 0.5],
                            [0.0, 0.0, 0.0],
                            [0.3, 0.2, 0.1]]], requires_grad=True)
    keys = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], requires_grad=True)  # a zero key and a normal one
    strengths = torch.tensor([[5.0, 5.0]], requires_grad=True)
    weights = content_weighting(keys, strengths, memory)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights[0, 0], torch.full((4,), 0.25))  # a zero key matches nothing better
    (weights * torch.randn(weights.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    for tensor in (memory, keys, strengths):
        assert torch.isfinite(tensor.grad).all()


def test_all_zero_memory_and_zero_key_are_finite():
    memory = torch.zeros(2, 5, 3, requires_grad=True)
    keys = torch.zeros(2, 1, 3, requires_grad=True)
    strengths = torch.full((2, 1), 20.0, requires_grad=True)
    weights = content_weighting(keys, strengths, memory)
    torch.testing.assert_close(weights, torch.full((2, 1, 5), 0.2))
    weights[..., 0].sum().backward()
    for tensor in (memory, keys, strengths):
        assert torch.isfinite(tensor.grad).all()


# ---- interpolation -----------------------------------------------------------------------------------------------
def test_interpolation_by_hand():
    content = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    previous = torch.tensor([[[0.0, 0.0, 0.5, 0.5]]])
    torch.testing.assert_close(interpolate(content, previous, torch.tensor([[0.25]])),
                               torch.tensor([[[0.25, 0.0, 0.375, 0.375]]]))
    torch.testing.assert_close(interpolate(content, previous, torch.tensor([[1.0]])), content)
    torch.testing.assert_close(interpolate(content, previous, torch.tensor([[0.0]])), previous)


# ---- circular shift (offsets ordered -S..+S) ---------------------------------------------------------------------
def test_shift_plus_one_moves_focus_forward():
    torch.testing.assert_close(circular_shift(one_hot(1), torch.tensor([[[0.0, 0.0, 1.0]]])), one_hot(2))


def test_shift_minus_one_moves_focus_backward():
    torch.testing.assert_close(circular_shift(one_hot(1), torch.tensor([[[1.0, 0.0, 0.0]]])), one_hot(0))


def test_shift_zero_keeps_focus():
    torch.testing.assert_close(circular_shift(one_hot(3), torch.tensor([[[0.0, 1.0, 0.0]]])), one_hot(3))


def test_shift_wraps_around_both_ends():
    torch.testing.assert_close(circular_shift(one_hot(4), torch.tensor([[[0.0, 0.0, 1.0]]])), one_hot(0))
    torch.testing.assert_close(circular_shift(one_hot(0), torch.tensor([[[1.0, 0.0, 0.0]]])), one_hot(4))


def test_split_shift_by_hand():
    shifted = circular_shift(one_hot(1), torch.tensor([[[0.1, 0.3, 0.6]]]))
    torch.testing.assert_close(shifted, torch.tensor([[[0.1, 0.3, 0.6, 0.0, 0.0]]]))
    # A spread weighting: w~(i) = sum_j w(j) s(i - j); w = [0.5, 0.5, 0, 0, 0], s = (-1: 0.2, 0: 0.0, +1: 0.8).
    spread = circular_shift(torch.tensor([[[0.5, 0.5, 0.0, 0.0, 0.0]]]), torch.tensor([[[0.2, 0.0, 0.8]]]))
    torch.testing.assert_close(spread, torch.tensor([[[0.1, 0.4, 0.4, 0.0, 0.1]]]))


def test_shift_radius_two():
    shift = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 1.0]]])  # offsets -2..+2: all weight on +2
    torch.testing.assert_close(circular_shift(one_hot(4), shift), one_hot(1))
    shift = torch.tensor([[[1.0, 0.0, 0.0, 0.0, 0.0]]])  # -2
    torch.testing.assert_close(circular_shift(one_hot(1), shift), one_hot(4))


def test_shift_matches_graves_eq8_on_random_values():
    g = torch.Generator().manual_seed(3)
    weights = torch.softmax(torch.randn(2, 3, 7, generator=g), -1)
    shift = torch.softmax(torch.randn(2, 3, 5, generator=g), -1)  # radius 2
    expected = torch.zeros_like(weights)
    for i in range(7):
        for j in range(7):
            offset = (i - j) % 7
            offset = offset - 7 if offset > 2 else offset  # into -2..+2, or out of range
            if -2 <= offset <= 2:
                expected[..., i] += weights[..., j] * shift[..., offset + 2]
    torch.testing.assert_close(circular_shift(weights, shift), expected)


# ---- sharpening --------------------------------------------------------------------------------------------------
def test_sharpen_by_hand():
    weights = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]])
    # gamma 2: [0.01, 0.04, 0.09, 0.16] / 0.30
    torch.testing.assert_close(sharpen(weights, torch.tensor([[2.0]])),
                               torch.tensor([[[1 / 30, 4 / 30, 9 / 30, 16 / 30]]]))
    torch.testing.assert_close(sharpen(weights, torch.tensor([[1.0]])), weights)


@pytest.mark.parametrize("gamma", [1.0, 1.5, 3.0, 7.0])
def test_sharpen_matches_direct_form(gamma):
    weights = torch.softmax(torch.randn(3, 2, 6, generator=torch.Generator().manual_seed(1)), -1)
    gammas = torch.full((3, 2), gamma)
    direct = weights**gamma / (weights**gamma).sum(-1, keepdim=True)
    torch.testing.assert_close(sharpen(weights, gammas), direct)


def test_sharpen_uniform_128_with_gamma_21_has_finite_gradients():
    """The case that underflows in the direct form: sum of (1/128)^21 over 128 slots is 2^-140 in float32."""
    weights = torch.full((2, 1, 128), 1.0 / 128, requires_grad=True)
    gamma = torch.full((2, 1), 21.0, requires_grad=True)
    sharpened = sharpen(weights, gamma)
    torch.testing.assert_close(sharpened, torch.full((2, 1, 128), 1.0 / 128))
    upstream = torch.randn(sharpened.shape, generator=torch.Generator().manual_seed(2))
    (sharpened * upstream).sum().backward()
    assert torch.isfinite(weights.grad).all() and torch.isfinite(gamma.grad).all()


def test_sharpen_with_exact_zeros_is_finite():
    weights = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]], requires_grad=True)
    gamma = torch.tensor([[21.0]], requires_grad=True)
    sharpened = sharpen(weights, gamma)
    torch.testing.assert_close(sharpened, weights.detach())
    sharpened[..., 1].sum().backward()
    assert torch.isfinite(weights.grad).all() and torch.isfinite(gamma.grad).all()


# ---- reading and writing -----------------------------------------------------------------------------------------
def test_read_by_hand():
    weights = torch.tensor([[[0.5, 0.5, 0.0, 0.0]]])
    torch.testing.assert_close(read_memory(weights, MEMORY), torch.tensor([[[0.5, 0.5, 0.0]]]))


def test_erase_then_add_by_hand():
    memory = torch.ones(1, 4, 3)
    weights = torch.tensor([[1.0, 0.5, 0.0, 0.0]])
    erase = torch.tensor([[1.0, 0.0, 0.5]])
    add = torch.tensor([[0.1, 0.2, 0.3]])
    expected = torch.tensor([[[0.1, 1.2, 0.8],  # 1 * (1 - 1 * e) + 1 * a
                              [0.55, 1.1, 0.9],  # 1 * (1 - 0.5 * e) + 0.5 * a
                              [1.0, 1.0, 1.0],
                              [1.0, 1.0, 1.0]]])
    torch.testing.assert_close(erase_and_add(memory, weights, erase, add), expected)
