"""A causal decoder-only Transformer baseline with pre-LayerNorm blocks (docs/MODELS.md#transformer)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.base import ModelConfig, ParamCheck, SequenceModel, check_widths, integer, one_of, param

POSITIONAL = ("sinusoidal", "learned", "rotary", "none")
#: the base of the sinusoidal encoding's and of RoPE's wavelengths (Vaswani et al. 2017; Su et al. 2021)
ROPE_BASE = 10000.0


def _fraction() -> ParamCheck:
    """A number in [0, 1) (a dropout probability)."""
    return ParamCheck(lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1,
                      "a number in [0, 1)")


@dataclasses.dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    """The Transformer's parameters."""

    model = "transformer"
    SMALL = {"layers": 1, "d_model": 16, "heads": 2, "ff_units": 32}

    layers: int = param(4, integer(1))
    #: the residual stream's width
    d_model: int = param(128, integer(1))
    heads: int = param(4, integer(1))
    #: the hidden width of each block's feed-forward network
    ff_units: int = param(512, integer(1))
    dropout: float = param(0.0, _fraction())
    #: how positions enter: added sinusoids, an added learned table, rotary q/k (RoPE), or none (the causal mask alone)
    positional: str = param("rotary", one_of(*POSITIONAL))
    #: `learned` only: rows of the position table, the longest sequence the model accepts (longer raises ValueError)
    max_positions: int = param(1024, integer(1))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_model % self.heads:
            raise ValueError(f"{self.model}: d_model must be a multiple of heads, got d_model {self.d_model} and "
                             f"heads {self.heads}")
        if self.positional == "rotary" and (self.d_model // self.heads) % 2:
            raise ValueError(f"{self.model}: positional rotary needs an even d_model / heads, got "
                             f"{self.d_model} / {self.heads} = {self.d_model // self.heads}")


def sinusoidal_positions(steps: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[steps, width]: sin(t / 10000^(2i/width)) in column 2i and cos(...) in column 2i+1."""
    position = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
    frequency = ROPE_BASE ** (-torch.arange(0, width, 2, device=device, dtype=torch.float32) / width)
    angles = position * frequency  # [steps, ceil(width / 2)]
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)[:, :width]
    return table.to(dtype)


def rotary(x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """RoPE on x [..., T, d] (d even; positions default 0..T-1): each pair (x[2i], x[2i+1]) at position t is rotated
    by the angle t * 10000^(-2i/d). Then rotary(q)_i . rotary(k)_j depends on i - j, not on i and j."""
    steps, width = x.shape[-2], x.shape[-1]
    if positions is None:
        positions = torch.arange(steps, device=x.device)
    frequency = ROPE_BASE ** (-torch.arange(0, width, 2, device=x.device, dtype=torch.float32) / width)
    angles = positions.to(torch.float32)[:, None] * frequency  # [T, d/2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which step t sees steps 0..t only."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.heads = config.heads
        self.rotary = config.positional == "rotary"
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, d_model] -> q, k, v [B, heads, T, d_head], q and k rotated under RoPE."""
        batch, steps, _ = x.shape
        q, k, v = self.qkv(x).view(batch, steps, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.rotary:
            q, k = rotary(q), rotary(k)
        return q, k, v

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The attention logits q_i . k_j / sqrt(d_head) [B, heads, T, T], before the causal mask (for tests)."""
        q, k, _ = self.project(x)
        return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.project(x)
        dropout = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # [B, heads, T, dh]
        return self.out(attended.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """Pre-LayerNorm block: x + Attention(LN(x)), then x + FF(LN(x)), FF = Linear-GELU-Linear."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attention = CausalSelfAttention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.ff = nn.Sequential(nn.Linear(config.d_model, config.ff_units), nn.GELU(),
                                nn.Linear(config.ff_units, config.d_model))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attention(self.norm1(x)))
        return x + self.drop(self.ff(self.norm2(x)))


class Transformer(SequenceModel):
    """Causal decoder-only Transformer: input projection to d_model, positions (`positional`), `layers` pre-LN
    blocks, a final LayerNorm and a linear read-out to logits; built from a `TransformerConfig` (or its fields as
    keywords). Default 4 layers, d_model 128, 4 heads, ff_units 512, dropout 0, rotary positions.

    The causal mask makes the output at step t depend on inputs 0..t only (padding at the end changes nothing).
    It is not a `RecurrentModel`: it has no step to vmap or compile, so the harness trains the seeds of a group one
    after another and `compile` leaves it eager (as for the LSTM).

    With ``positional: learned`` the model accepts at most `max_positions` time steps: a longer input raises a
    ValueError, and `bench.grid` refuses, before training, a suite whose task has a longer training, test or 2x sample
    sequence (`max_steps`). Rows of the table past the longest training sequence are never trained, so that mode is
    expected to fail beyond its training length: that is the finding, not a bug. `sinusoidal`, `rotary` and `none`
    accept any length.

    Parameter count on Copy (in 9, out 8) at the defaults: 795,656 (+131,072 with `learned` positions).
    """

    config_class = TransformerConfig

    def __init__(self, input_size: int, output_size: int, config: TransformerConfig | None = None, **params: Any):
        super().__init__()
        config = TransformerConfig.of(config, **params)
        check_widths("transformer", input_size, output_size)
        self.config = config
        self.input = nn.Linear(input_size, config.d_model)
        if config.positional == "learned":
            self.positions = nn.Parameter(torch.empty(config.max_positions, config.d_model))
            nn.init.normal_(self.positions, std=0.02)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.output = nn.Linear(config.d_model, output_size)

    @staticmethod
    def max_steps(**params: Any) -> int | None:
        """The longest sequence a model with these parameters accepts (None: any), for the harness's up-front check."""
        config = TransformerConfig.of(None, **params)
        return config.max_positions if config.positional == "learned" else None

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs [B, T, in] -> the first block's input [B, T, d_model] (input projection plus positions)."""
        steps = inputs.shape[1]
        x = self.input(inputs)
        positional = self.config.positional
        if positional == "learned":
            if steps > self.config.max_positions:
                raise ValueError(f"transformer: a sequence of {steps} steps is longer than max_positions "
                                 f"{self.config.max_positions} (positional: learned); raise max_positions")
            x = x + self.positions[:steps]
        elif positional == "sinusoidal":
            x = x + sinusoidal_positions(steps, self.config.d_model, x.device, x.dtype)
        return self.drop(x)

    def forward(self, inputs: torch.Tensor, trace: bool = False):
        x = self.embed(inputs)
        for block in self.blocks:
            x = block(x)
        logits = self.output(self.norm(x))  # [B, T, out]
        return (logits, {}) if trace else logits
