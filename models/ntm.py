"""The Neural Turing Machine as implemented by Collier & Beel 2018 (SPEC section 3.2).

`NTMCell` is one time step: ``logits_t, state = cell(x_t, state)``, starting from ``cell.initial_state(batch_size)``.
The step is a pure function of tensors (the state is a `NTMState` of tensors), so it can be wrapped by
`torch.compile` or driven by any RNN loop. `NTM` is the registered sequence model that loops the cell over time.

One step, in order:
  1. controller: a stacked LSTM on [x_t, previous read vectors];
  2. interface: ONE linear layer to P raw values, clipped to +-clip, split per head (read heads, then write heads),
     then erase/add per write head;
  3. addressing of every head against the memory of step t-1 (content, then interpolation, shift and sharpening);
  4. read from that old memory, then write: erase then add, one write head after another;
  5. output: a linear layer on [controller output, current reads], clipped to +-clip.

Usage of the cell on its own::

    cell = NTMCell(input_size=9, output_size=8)
    state = cell.initial_state(batch_size=4)
    for x_t in inputs.unbind(1):  # inputs [4, T, 9]
        logits_t, state = cell(x_t, state)  # logits_t [4, 8]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bench.registry import register_model
from models.addressing import circular_shift, content_weighting, erase_and_add, interpolate, read_memory, sharpen
from models.base import RecurrentModel, lstm_cell, set_lstm_forget_bias, stack_time

MEMORY_INITS = ("constant", "random", "learned")
ADDRESSING_MODES = ("content_and_location", "content")
#: every entry of M0 under `memory_init: constant` (the seed's recommended scheme)
CONSTANT_MEMORY_VALUE = 1e-6
#: `memory_init: random` draws M0 = tanh(N(0, RANDOM_MEMORY_STD^2))
RANDOM_MEMORY_STD = 0.5
#: interface and output kernels are truncated normal, cut at this many standard deviations
TRUNCATION_STDS = 2.0


class NTMState(NamedTuple):
    """The recurrent state between steps; every field is a tensor (or a tuple of tensors, one per LSTM layer)."""

    controller_h: tuple[torch.Tensor, ...]  # per layer [B, units]
    controller_c: tuple[torch.Tensor, ...]  # per layer [B, units]
    reads: torch.Tensor  # [B, R, M]: the read vectors of the last step
    weights: torch.Tensor  # [B, R + W, N]: every head's weighting of the last step, read heads first
    memory: torch.Tensor  # [B, N, M]


def _xavier_vector_(tensor: torch.Tensor) -> torch.Tensor:
    """Xavier-uniform init of each vector along the last axis, as a [1, D] kernel: limit sqrt(6 / (1 + D)).

    The seed learns each initial vector as the kernel of a bias-free dense layer applied to a constant 1.
    """
    limit = math.sqrt(6.0 / (1 + tensor.shape[-1]))
    with torch.no_grad():
        return tensor.uniform_(-limit, limit)


def _truncated_normal_linear(layer: nn.Linear) -> None:
    """Kernel ~ truncated normal, std 1/sqrt(fan_in), cut at +-2 std (absolute bounds); bias zero."""
    std = 1.0 / math.sqrt(layer.in_features)
    nn.init.trunc_normal_(layer.weight, mean=0.0, std=std, a=-TRUNCATION_STDS * std, b=TRUNCATION_STDS * std)
    nn.init.zeros_(layer.bias)


def _check_params(input_size, output_size, controller_layers, controller_units, memory_locations, memory_width,
                  read_heads, write_heads, shift_radius, clip_value, memory_init, trainable_memory_init,
                  addressing) -> None:
    """Raise a ValueError naming the first invalid parameter and what is allowed."""
    positive = {
        "input_size": input_size, "output_size": output_size, "controller_layers": controller_layers,
        "controller_units": controller_units, "memory_locations": memory_locations, "memory_width": memory_width,
        "read_heads": read_heads, "write_heads": write_heads,
    }
    for name, value in positive.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"ntm: {name} must be an integer >= 1, got {value!r}")
    if isinstance(shift_radius, bool) or not isinstance(shift_radius, int) or shift_radius < 0:
        raise ValueError(f"ntm: shift_radius must be an integer >= 0, got {shift_radius!r}")
    if memory_locations < 2 * shift_radius + 1:
        raise ValueError(f"ntm: memory_locations must be >= 2 * shift_radius + 1 = {2 * shift_radius + 1} "
                         f"(the shift offsets -S..S must be distinct slots), got {memory_locations}")
    if isinstance(clip_value, bool) or not isinstance(clip_value, int | float) or not clip_value > 0:
        raise ValueError(f"ntm: clip_value must be a number > 0, got {clip_value!r}")
    if memory_init not in MEMORY_INITS:
        raise ValueError(f"ntm: memory_init must be one of {list(MEMORY_INITS)}, got {memory_init!r}")
    if not isinstance(trainable_memory_init, bool):
        raise ValueError(f"ntm: trainable_memory_init must be true or false, got {trainable_memory_init!r}")
    if addressing not in ADDRESSING_MODES:
        raise ValueError(f"ntm: addressing must be one of {list(ADDRESSING_MODES)}, got {addressing!r}")


class NTMCell(nn.Module):
    """One NTM step: ``cell(x_t [B, in], state) -> (logits_t [B, out], state)``. Defaults are SPEC 3.2's.

    Under ``addressing="content"`` the interface keeps its full size (gate, shift and sharpening values are computed
    and ignored), so the ablation has the same parameter count; w0 then gets no gradient.
    """

    def __init__(self, input_size: int, output_size: int, controller_layers: int = 1, controller_units: int = 100,
                 memory_locations: int = 128, memory_width: int = 20, read_heads: int = 1, write_heads: int = 1,
                 shift_radius: int = 1, clip_value: float = 20.0, memory_init: str = "constant",
                 trainable_memory_init: bool = False, addressing: str = "content_and_location"):
        super().__init__()
        _check_params(input_size, output_size, controller_layers, controller_units, memory_locations, memory_width,
                      read_heads, write_heads, shift_radius, clip_value, memory_init, trainable_memory_init,
                      addressing)
        self.input_size = input_size
        self.output_size = output_size
        self.units = controller_units
        self.locations = memory_locations  # N
        self.width = memory_width  # M
        self.read_heads = read_heads  # R
        self.write_heads = write_heads  # W
        self.shift_radius = shift_radius  # S
        self.clip_value = float(clip_value)
        self.memory_init = memory_init
        self.location_addressing = addressing == "content_and_location"

        heads = read_heads + write_heads
        shifts = 2 * shift_radius + 1
        # Per head: key M, strength 1, gate 1, shift weights 2S+1, sharpening 1. Slices into one head's block:
        self.key_end = memory_width
        self.strength_at = memory_width
        self.gate_at = memory_width + 1
        self.shift_end = memory_width + 2 + shifts
        self.gamma_at = self.shift_end
        self.head_size = memory_width + 3 + shifts
        self.heads_size = heads * self.head_size
        self.interface_size = self.heads_size + 2 * memory_width * write_heads  # P

        read_width = read_heads * memory_width
        self.controller = nn.ModuleList(
            nn.LSTMCell(input_size + read_width if layer == 0 else controller_units, controller_units)
            for layer in range(controller_layers)
        )
        for lstm in self.controller:
            set_lstm_forget_bias(lstm, 1.0)
        self.interface = nn.Linear(controller_units, self.interface_size)
        self.output = nn.Linear(controller_units + read_width, output_size)
        _truncated_normal_linear(self.interface)
        _truncated_normal_linear(self.output)

        # r0 = tanh(r0_raw) per read head, w0 = softmax(w0_raw) per head.
        self.r0_raw = nn.Parameter(_xavier_vector_(torch.empty(read_heads, memory_width)))
        self.w0_raw = nn.Parameter(_xavier_vector_(torch.empty(heads, memory_locations)))

        # M0 [N, M]. `learned` stores the raw N*M vector (M0 = its tanh, always trained); the others store M0 itself,
        # as a Parameter when trainable_memory_init, else as a buffer.
        if memory_init == "learned":
            self.m0_raw = nn.Parameter(_xavier_vector_(torch.empty(1, memory_locations * memory_width)))
        else:
            if memory_init == "constant":
                m0 = torch.full((memory_locations, memory_width), CONSTANT_MEMORY_VALUE)
            else:  # random: drawn once here from torch's global RNG, which the harness seeds with the init seed
                m0 = torch.tanh(torch.randn(memory_locations, memory_width) * RANDOM_MEMORY_STD)
            if trainable_memory_init:
                self.m0 = nn.Parameter(m0)
            else:
                self.register_buffer("m0", m0)

    def initial_memory(self) -> torch.Tensor:
        """M0 [N, M], shared by every example."""
        if self.memory_init == "learned":
            return torch.tanh(self.m0_raw).view(self.locations, self.width)
        return self.m0

    def initial_state(self, batch_size: int) -> NTMState:
        """The state before the first step: zero controller state, learned r0 and w0, and M0 for every example."""
        zeros = tuple(self.r0_raw.new_zeros(batch_size, self.units) for _ in self.controller)  # [B, units] each
        reads = torch.tanh(self.r0_raw).expand(batch_size, -1, -1)  # [B, R, M]
        weights = torch.softmax(self.w0_raw, dim=-1).expand(batch_size, -1, -1)  # [B, R+W, N]
        memory = self.initial_memory().expand(batch_size, -1, -1)  # [B, N, M]
        return NTMState(zeros, zeros, reads, weights, memory)

    def forward(self, x_t: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
        """One step: x_t [B, in] -> logits_t [B, out] and the next state."""
        batch = x_t.shape[0]
        clip = self.clip_value

        # 1. Controller on [x_t, previous reads].
        layer_input = torch.cat([x_t, state.reads.flatten(1)], dim=-1)  # [B, in + R*M]
        hs, cs = [], []
        for lstm, h, c in zip(self.controller, state.controller_h, state.controller_c):
            h, c = lstm_cell(lstm, layer_input, h, c)
            hs.append(h)
            cs.append(c)
            layer_input = h
        controller_out = layer_input  # [B, units]

        # 2. One fused interface layer; every raw value is clipped before its activation (the seed's stability fix).
        raw = self.interface(controller_out).clamp(-clip, clip)  # [B, P]
        head_raw = raw[:, : self.heads_size].unflatten(-1, (-1, self.head_size))  # [B, H, head_size]
        keys = torch.tanh(head_raw[..., : self.key_end])  # [B, H, M]
        strengths = F.softplus(head_raw[..., self.strength_at])  # [B, H]

        # 3. Address every head against the memory of step t-1.
        memory = state.memory  # [B, N, M]
        weights = content_weighting(keys, strengths, memory)  # [B, H, N]
        if self.location_addressing:
            gates = torch.sigmoid(head_raw[..., self.gate_at])  # [B, H]
            shifts = torch.softmax(head_raw[..., self.gate_at + 1 : self.shift_end], dim=-1)  # [B, H, 2S+1]
            gammas = 1.0 + F.softplus(head_raw[..., self.gamma_at])  # [B, H]
            weights = interpolate(weights, state.weights, gates)
            weights = circular_shift(weights, shifts)
            weights = sharpen(weights, gammas)

        # 4. Read from the old memory, then write: erase then add, one write head after another.
        read_weights = weights[:, : self.read_heads]  # [B, R, N]
        reads = read_memory(read_weights, memory)  # [B, R, M]
        write_raw = raw[:, self.heads_size :].view(batch, self.write_heads, 2 * self.width)  # [B, W, 2M]
        erase = torch.sigmoid(write_raw[..., : self.width])  # [B, W, M]
        add = torch.tanh(write_raw[..., self.width :])  # [B, W, M]
        for head in range(self.write_heads):
            memory = erase_and_add(memory, weights[:, self.read_heads + head], erase[:, head], add[:, head])

        # 5. Output on [controller output, current reads], clipped like the interface.
        logits = self.output(torch.cat([controller_out, reads.flatten(1)], dim=-1)).clamp(-clip, clip)  # [B, out]
        return logits, NTMState(tuple(hs), tuple(cs), reads, weights, memory)


@register_model("ntm")
class NTM(RecurrentModel):
    """The NTM sequence model: `NTMCell` looped over time. Defaults (SPEC 3.2): 1 x 100 LSTM, 128 x 20 memory,
    1 read and 1 write head, shift radius 1, clip 20, constant M0 (fixed).

    Parameter count on Copy (in 9, out 8): 62,936 with a fixed M0, 65,496 with a learned one.
    The trace holds ``read_weights [B, T, R, N]`` and ``write_weights [B, T, W, N]``.
    """

    has_memory = True
    #: compiled 4 steps at a time: 648 vs 528 seq/s training at the paper config on a 2-core CPU (compiling takes
    #: about 45 s instead of 15 s); see docs/PERFORMANCE.md
    compile_unroll = 4

    def __init__(self, input_size: int, output_size: int, controller_layers: int = 1, controller_units: int = 100,
                 memory_locations: int = 128, memory_width: int = 20, read_heads: int = 1, write_heads: int = 1,
                 shift_radius: int = 1, clip_value: float = 20.0, memory_init: str = "constant",
                 trainable_memory_init: bool = False, addressing: str = "content_and_location"):
        super().__init__()
        self.cell = NTMCell(input_size, output_size, controller_layers=controller_layers,
                            controller_units=controller_units, memory_locations=memory_locations,
                            memory_width=memory_width, read_heads=read_heads, write_heads=write_heads,
                            shift_radius=shift_radius, clip_value=clip_value, memory_init=memory_init,
                            trainable_memory_init=trainable_memory_init, addressing=addressing)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> NTMState:
        """The cell's initial state (on the parameters' device: M0, r0 and w0 are parameters or buffers)."""
        return self.cell.initial_state(batch_size)

    def step(self, x_t: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
        return self.cell(x_t, state)

    def forward(self, inputs: torch.Tensor, trace: bool = False):
        state = self.initial_state(inputs.shape[0])
        if not trace:
            return self.run(inputs, state)[0]  # [B, T, out]
        logits, weights = [], []
        for x_t in inputs.unbind(1):  # x_t [B, in]
            logits_t, state = self.step(x_t, state)
            logits.append(logits_t)
            weights.append(state.weights)
        logits = stack_time(logits)  # [B, T, out]
        weights = stack_time(weights)  # [B, T, R+W, N]
        reads = self.cell.read_heads
        return logits, {"read_weights": weights[:, :, :reads], "write_weights": weights[:, :, reads:]}
