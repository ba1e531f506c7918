"""Memory addressing shared by the NTM and the DNC (SPEC sections 3.2-3.3).

Shapes: memory ``[B, N, M]`` (N locations of width M), weightings ``[B, H, N]`` for H heads, per-head scalars
``[B, H]``. Every function is pure and differentiable with finite gradients at zero keys and zero memory rows.
"""

from __future__ import annotations

import torch

#: sharpening works on log(max(w, SHARPEN_FLOOR)); w^gamma itself underflows float32 (SPEC 3.2, step 4)
SHARPEN_FLOOR = 1e-30
#: the NTM's cosine denominator is |M_i| |k| + NTM_COSINE_EPS
NTM_COSINE_EPS = 1e-8


def vector_norms(x: torch.Tensor, norm_eps: float = 0.0) -> torch.Tensor:
    """Euclidean norms over the last axis. With ``norm_eps > 0`` this is sqrt(sum x^2 + eps), the DNC's form.

    With ``norm_eps == 0`` it uses `torch.linalg.vector_norm`, whose gradient at a zero vector is 0, not NaN.
    """
    if norm_eps > 0:
        return torch.sqrt((x * x).sum(-1) + norm_eps)
    return torch.linalg.vector_norm(x, dim=-1)


def cosine_similarity(keys: torch.Tensor, memory: torch.Tensor, eps: float = NTM_COSINE_EPS,
                      norm_eps: float = 0.0) -> torch.Tensor:
    """Cosine similarity of each head's key with each memory row: keys [B, H, M], memory [B, N, M] -> [B, H, N].

    The denominator is ``|M_i| * |k| + eps``; `norm_eps` goes inside each norm (0 for the NTM, 1e-6 for the DNC).
    """
    dot = torch.matmul(keys, memory.transpose(1, 2))  # [B, H, N]
    key_norms = vector_norms(keys, norm_eps).unsqueeze(-1)  # [B, H, 1]
    memory_norms = vector_norms(memory, norm_eps).unsqueeze(1)  # [B, 1, N]
    return dot / (key_norms * memory_norms + eps)


def content_weighting(keys: torch.Tensor, strengths: torch.Tensor, memory: torch.Tensor,
                      eps: float = NTM_COSINE_EPS, norm_eps: float = 0.0) -> torch.Tensor:
    """Content-based addressing: softmax over locations of strength * cosine. strengths [B, H] -> [B, H, N]."""
    similarity = cosine_similarity(keys, memory, eps=eps, norm_eps=norm_eps)
    return torch.softmax(strengths.unsqueeze(-1) * similarity, dim=-1)


def interpolate(content: torch.Tensor, previous: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Graves eq. 7: g * w_c + (1 - g) * w_prev, with gate [B, H]."""
    gate = gate.unsqueeze(-1)
    return gate * content + (1.0 - gate) * previous


def circular_shift(weights: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Graves eq. 8, w~(i) = sum_k w(i - k) s(k) for offsets k = -S..S; shift [B, H, 2S+1] is ordered -S..+S.

    A weight of 1 on offset +1 moves the focus one slot forward (towards higher indices), wrapping around.
    """
    radius = (shift.shape[-1] - 1) // 2
    if radius == 0:
        return weights * shift
    padded = torch.cat([weights[..., -radius:], weights, weights[..., :radius]], dim=-1)  # [B, H, N + 2S]
    windows = padded.unfold(-1, 2 * radius + 1, 1)  # [B, H, N, 2S+1]; window m holds w(i - S + m)
    return (windows * shift.flip(-1).unsqueeze(-2)).sum(-1)


def sharpen(weights: torch.Tensor, gamma: torch.Tensor, floor: float = SHARPEN_FLOOR) -> torch.Tensor:
    """Graves eq. 9 in log space: softmax(gamma * log(max(w, floor))), equal to w^gamma / sum w^gamma. gamma [B, H]."""
    return torch.softmax(gamma.unsqueeze(-1) * torch.log(weights.clamp_min(floor)), dim=-1)


def read_memory(weights: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """Read vectors r = w M: weights [B, H, N], memory [B, N, M] -> [B, H, M]."""
    return torch.matmul(weights, memory)


def erase_and_add(memory: torch.Tensor, weights: torch.Tensor, erase: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """One head's write, erase then add: M <- M * (1 - w e^T) + w a^T. weights [B, N], erase/add [B, M]."""
    w = weights.unsqueeze(-1)  # [B, N, 1]
    return memory * (1.0 - w * erase.unsqueeze(1)) + w * add.unsqueeze(1)
