"""Memory addressing shared by the NTM and the DNC: the NTM's equations are in docs/MODELS.md#ntm-addressing, the
DNC's in docs/MODELS.md#dnc-content-weighting to #dnc-read-modes.

Shapes: memory ``[B, N, M]`` (N locations of width M), weightings ``[B, H, N]`` for H heads, per-head scalars
``[B, H]``. Every function is pure and differentiable with finite gradients at zero keys and zero memory rows.
"""

from __future__ import annotations

import torch

from models._link_kernel import fused_link_update

#: sharpening works on log(max(w, SHARPEN_FLOOR)); w^gamma itself underflows float32 (a flat weighting over 128 slots
#: with gamma = 21 gives about 2^-147 per slot; docs/MODELS.md#ntm-addressing)
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


# ---- DNC memory management (docs/MODELS.md#dnc-usage-and-allocation; Graves et al. 2016, DeepMind's reference) ----
#
# Shapes: usage and precedence [B, N]; read weights [B, R, N]; write weights [B, N] for the single write head the DNC
# model uses, or [B, Wh, N] for Wh write heads; link matrices [B, N, N], or [B, Wh, N, N] with one graph per write head.

#: allocation floors usage at DNC_USAGE_FLOOR + (1 - DNC_USAGE_FLOOR) * u so the exclusive cumulative product of
#: sorted usages never hits exactly 0, whose gradient is degenerate (the reference's epsilon)
DNC_USAGE_FLOOR = 1e-6


def _as_heads(weights: torch.Tensor, dims: int) -> torch.Tensor:
    """Give per-head weights a head axis: a [B, N] tensor becomes [B, 1, N] (`dims` is the rank without heads)."""
    return weights.unsqueeze(1) if weights.dim() == dims else weights


def update_usage(usage: torch.Tensor, prev_write_weights: torch.Tensor, free_gates: torch.Tensor,
                 prev_read_weights: torch.Tensor) -> torch.Tensor:
    """DNC usage: u <- u + (1 - u) w_w,prev, then u <- u * prod_i (1 - f_i w_r,i,prev). Returns [B, N].

    usage [B, N]; prev_write_weights [B, N] or [B, Wh, N] (several heads combine as 1 - prod(1 - w)); free_gates
    [B, R]; prev_read_weights [B, R, N]. The previous write weights enter WITHOUT gradient, as in the reference.
    """
    written = 1.0 - torch.prod(1.0 - _as_heads(prev_write_weights.detach(), 2), dim=1)  # [B, N]
    usage = usage + (1.0 - usage) * written
    retention = torch.prod(1.0 - free_gates.unsqueeze(-1) * prev_read_weights, dim=1)  # [B, N]; psi in the paper
    return usage * retention


def allocation_weights(usage: torch.Tensor, floor: float = DNC_USAGE_FLOOR) -> torch.Tensor:
    """DNC allocation: sort usage ascending (free list phi), a[phi_j] = (1 - u[phi_j]) prod_{i<j} u[phi_i]. [B, N].

    Works on any leading shape ``[..., N]``. Ties keep slot order (stable sort), so of two equally used slots the lower
    index is allocated first, as with the reference's top-k. The weights sum to 1 - prod(u) <= 1.
    """
    usage = floor + (1.0 - floor) * usage
    sorted_usage, free_list = torch.sort(usage, dim=-1, stable=True)  # [..., N] ascending, phi
    # exclusive cumulative product: the j-th entry is prod_{i<j} sorted_usage[i]
    shifted = torch.cat([torch.ones_like(sorted_usage[..., :1]), sorted_usage[..., :-1]], dim=-1)
    sorted_allocation = (1.0 - sorted_usage) * torch.cumprod(shifted, dim=-1)  # [..., N]
    # back to slot order: slot free_list[j] gets sorted_allocation[j]
    return torch.zeros_like(sorted_allocation).scatter(-1, free_list, sorted_allocation)


def update_link(link: torch.Tensor, prev_precedence: torch.Tensor, write_weights: torch.Tensor) -> torch.Tensor:
    """Temporal links: L[i, j] <- (1 - w_i - w_j) L[i, j] + w_i p_j with the PREVIOUS precedence p; diagonal 0.

    link [B, N, N] with write_weights and prev_precedence [B, N], or link [B, Wh, N, N] with [B, Wh, N] (one graph
    per write head). L[i, j] near 1 means slot i was written right after slot j.
    """
    w_i = write_weights.unsqueeze(-1)  # [..., N, 1]
    w_j = write_weights.unsqueeze(-2)  # [..., 1, N]
    link = (1.0 - w_i - w_j) * link + w_i * prev_precedence.unsqueeze(-2)
    size = link.shape[-1]
    # a slot never follows itself; multiplying by a mask (not an in-place fill) keeps the function pure for compile
    off_diagonal = 1.0 - torch.eye(size, dtype=link.dtype, device=link.device)  # [N, N]
    return link * off_diagonal


def update_precedence(precedence: torch.Tensor, write_weights: torch.Tensor) -> torch.Tensor:
    """Precedence p <- (1 - sum_i w_i) p + w: where the last write went. [B, N] (or [B, Wh, N] per write head)."""
    return (1.0 - write_weights.sum(-1, keepdim=True)) * precedence + write_weights


def directional_read_weights(link: torch.Tensor, prev_read_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward, backward) = (L w_r,prev, L^T w_r,prev) for each read head.

    prev_read_weights [B, R, N]; link [B, N, N] gives two [B, R, N]; link [B, Wh, N, N] gives two [B, R, Wh, N].
    Forward moves each head to the slot written right after the one it read; backward to the one written before.
    """
    if link.dim() == 3:
        # forward[b, r, i] = sum_j L[b, i, j] w[b, r, j]  -> w L^T;  backward[b, r, j] = sum_i L[b, i, j] w[b, r, i]
        return torch.matmul(prev_read_weights, link.transpose(-1, -2)), torch.matmul(prev_read_weights, link)
    weights = prev_read_weights.unsqueeze(1)  # [B, 1, R, N], broadcast over write heads
    forward = torch.matmul(weights, link.transpose(-1, -2)).transpose(1, 2)  # [B, R, Wh, N]
    backward = torch.matmul(weights, link).transpose(1, 2)
    return forward, backward


def update_link_and_read(link: torch.Tensor, prev_precedence: torch.Tensor, write_weights: torch.Tensor,
                         prev_read_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One write head's link update, then both directional reads on the NEW links: (link, forward, backward).

    link [B, N, N], prev_precedence and write_weights [B, N], prev_read_weights [B, R, N]. Exactly
    ``update_link`` then ``directional_read_weights``, computed in one fused step with a hand-written backward, by a
    C++ kernel on the CPU or in PyTorch elsewhere (models/_link_kernel.py): the O(N^2) link work is the DNC's largest.
    """
    return fused_link_update(link, prev_precedence, write_weights, prev_read_weights)
