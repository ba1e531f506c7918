"""The Neural Turing Machine as implemented by Collier & Beel 2018 (docs/MODELS.md#ntm).

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

import dataclasses
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models._ntm_kernel import fused_heads, fused_sequence, kernel_applies, sequence_applies
from models.addressing import circular_shift, content_weighting, erase_and_add, interpolate, read_memory, sharpen
from models.base import (
    ModelConfig,
    RecurrentModel,
    boolean,
    check_widths,
    integer,
    lstm_cell,
    one_of,
    param,
    positive_number,
    set_lstm_forget_bias,
    stack_time,
    truncated_normal_linear_,
)

MEMORY_INITS = ("constant", "random", "learned")
ADDRESSING_MODES = ("content_and_location", "content")
#: every entry of M0 under `memory_init: constant` (the scheme Collier & Beel recommend)
CONSTANT_MEMORY_VALUE = 1e-6
#: `memory_init: random` draws M0 = tanh(N(0, RANDOM_MEMORY_STD^2))
RANDOM_MEMORY_STD = 0.5


@dataclasses.dataclass(frozen=True)
class NTMConfig(ModelConfig):
    """The NTM's parameters; the defaults are Collier & Beel's: a 1 x 100 LSTM controller, 128 x 20 memory, one read
    and one write head, shift radius 1, clip 20, a constant M0 that is not trained.

    Adding an option is one field here (its default and check), then its use in `NTMCell`.
    """

    model = "ntm"
    SMALL = {"controller_units": 16, "memory_locations": 16, "memory_width": 5}

    controller_layers: int = param(1, integer(1))
    controller_units: int = param(100, integer(1))
    memory_locations: int = param(128, integer(1))  # N
    memory_width: int = param(20, integer(1))  # M
    read_heads: int = param(1, integer(1))  # R
    write_heads: int = param(1, integer(1))  # W
    shift_radius: int = param(1, integer(0))  # S
    clip_value: float = param(20.0, positive_number())
    memory_init: str = param("constant", one_of(*MEMORY_INITS))
    trainable_memory_init: bool = param(False, boolean())
    #: "content" is the ablation without location addressing
    addressing: str = param("content_and_location", one_of(*ADDRESSING_MODES))

    def __post_init__(self) -> None:
        super().__post_init__()
        shifts = 2 * self.shift_radius + 1
        if self.memory_locations < shifts:
            raise ValueError(f"ntm: memory_locations must be >= 2 * shift_radius + 1 = {shifts} "
                             f"(the shift offsets -S..S must be distinct slots), got {self.memory_locations}")


class NTMState(NamedTuple):
    """The recurrent state between steps; every field is a tensor (or a tuple of tensors, one per LSTM layer)."""

    controller_h: tuple[torch.Tensor, ...]  # per layer [B, units]
    controller_c: tuple[torch.Tensor, ...]  # per layer [B, units]
    reads: torch.Tensor  # [B, R, M]: the read vectors of the last step
    weights: torch.Tensor  # [B, R + W, N]: every head's weighting of the last step, read heads first
    memory: torch.Tensor  # [B, N, M]


def _xavier_vector_(tensor: torch.Tensor) -> torch.Tensor:
    """Xavier-uniform init of each vector along the last axis, as a [1, D] kernel: limit sqrt(6 / (1 + D)).

    Collier & Beel's reference code learns each initial vector as the kernel of a bias-free dense layer applied to a
    constant 1.
    """
    limit = math.sqrt(6.0 / (1 + tensor.shape[-1]))
    with torch.no_grad():
        return tensor.uniform_(-limit, limit)


def _parts(block: torch.Tensor, widths: tuple[int | None, ...]) -> list[torch.Tensor]:
    """Consecutive parts of `block`'s last axis, as views: a width gives that many values, None gives one value with
    the axis dropped (a [B, H] tensor from a [B, H, P] block). `torch.split` does the same with whole widths, but
    its backward (one concatenation) is a different graph from that of indexing, which torch.compile fuses into
    kernels that round differently: indexing keeps the compiled NTM's float results equal to earlier versions'."""
    parts, start = [], 0
    for width in widths:
        parts.append(block[..., start] if width is None else block[..., start : start + width])
        start += 1 if width is None else width
    return parts


class NTMCell(nn.Module):
    """One NTM step: ``cell(x_t [B, in], state) -> (logits_t [B, out], state)``, built from an `NTMConfig` (or its
    fields as keywords, which replace those of `config`): ``NTMCell(9, 8, NTMConfig(memory_locations=64))`` or
    ``NTMCell(9, 8, memory_locations=64)``.

    Under ``addressing="content"`` the interface keeps its full size (gate, shift and sharpening values are computed
    and ignored), so the ablation has the same parameter count; w0 then gets no gradient.
    """

    def __init__(self, input_size: int, output_size: int, config: NTMConfig | None = None, **params: Any):
        super().__init__()
        config = NTMConfig.of(config, **params)
        check_widths("ntm", input_size, output_size)
        self.config = config
        self.input_size = input_size
        self.output_size = output_size
        self.units = config.controller_units
        self.locations = config.memory_locations  # N
        self.width = config.memory_width  # M
        self.read_heads = config.read_heads  # R
        self.write_heads = config.write_heads  # W
        self.shift_radius = config.shift_radius  # S
        self.clip_value = float(config.clip_value)
        self.memory_init = config.memory_init
        self.location_addressing = config.addressing == "content_and_location"

        units, locations, width = self.units, self.locations, self.width
        heads = self.read_heads + self.write_heads
        shifts = 2 * self.shift_radius + 1
        # The interface's P values, in order: one block per head (read heads, then write heads), then one block per
        # write head; `_parts` cuts each block into its named parts by these widths (None: one value per head).
        self.head_widths = (width, None, None, shifts, None)  # key M, strength, gate, shift weights 2S+1, sharpening
        self.write_widths = (width, width)  # erase M, add M
        self.head_size = sum(1 if part is None else part for part in self.head_widths)
        self.heads_size = heads * self.head_size
        self.interface_widths = (self.heads_size, self.write_heads * sum(self.write_widths))
        self.interface_size = sum(self.interface_widths)  # P

        read_width = self.read_heads * width
        self.controller = nn.ModuleList(
            nn.LSTMCell(input_size + read_width if layer == 0 else units, units)
            for layer in range(config.controller_layers)
        )
        for lstm in self.controller:
            set_lstm_forget_bias(lstm, 1.0)
        self.interface = nn.Linear(units, self.interface_size)
        self.output = nn.Linear(units + read_width, output_size)
        truncated_normal_linear_(self.interface)
        truncated_normal_linear_(self.output)

        # r0 = tanh(r0_raw) per read head, w0 = softmax(w0_raw) per head.
        self.r0_raw = nn.Parameter(_xavier_vector_(torch.empty(self.read_heads, width)))
        self.w0_raw = nn.Parameter(_xavier_vector_(torch.empty(heads, locations)))

        # M0 [N, M]. `learned` stores the raw N*M vector (M0 = its tanh, always trained); the others store M0 itself,
        # as a Parameter when trainable_memory_init, else as a buffer.
        if self.memory_init == "learned":
            self.m0_raw = nn.Parameter(_xavier_vector_(torch.empty(1, locations * width)))
        else:
            if self.memory_init == "constant":
                m0 = torch.full((locations, width), CONSTANT_MEMORY_VALUE)
            else:  # random: drawn once here from torch's global RNG, which the harness seeds with the init seed
                m0 = torch.tanh(torch.randn(locations, width) * RANDOM_MEMORY_STD)
            if config.trainable_memory_init:
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

    def heads(self, raw: torch.Tensor, prev_weights: torch.Tensor,
              memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 2-4 of a step in PyTorch: the interface's raw output [B, P], the previous weights [B, H, N] and the
        memory of step t-1 [B, N, M] -> (reads [B, R, M], weights [B, H, N], new memory [B, N, M]). `forward` runs
        the same math through one C++ op where `models._ntm_kernel.kernel_applies`."""
        clip = self.clip_value

        # 2. One fused interface layer; every raw value is clipped before its activation (Collier & Beel's stability
        #    fix).
        raw = raw.clamp(-clip, clip)  # [B, P]
        head_raw, write_raw = _parts(raw, self.interface_widths)  # [B, H * head_size], [B, W * 2M]
        head_raw = head_raw.unflatten(-1, (-1, self.head_size))  # [B, H, head_size]
        key, strength, gate, shift, gamma = _parts(head_raw, self.head_widths)
        keys = torch.tanh(key)  # [B, H, M]
        strengths = F.softplus(strength)  # [B, H]

        # 3. Address every head against the memory of step t-1.
        weights = content_weighting(keys, strengths, memory)  # [B, H, N]
        if self.location_addressing:
            gates = torch.sigmoid(gate)  # [B, H]
            shifts = torch.softmax(shift, dim=-1)  # [B, H, 2S+1]
            gammas = 1.0 + F.softplus(gamma)  # [B, H]
            weights = interpolate(weights, prev_weights, gates)
            weights = circular_shift(weights, shifts)
            weights = sharpen(weights, gammas)

        # 4. Read from the old memory, then write: erase then add, one write head after another.
        read_weights = weights[:, : self.read_heads]  # [B, R, N]
        reads = read_memory(read_weights, memory)  # [B, R, M]
        erase, add = _parts(write_raw.unflatten(-1, (self.write_heads, -1)), self.write_widths)
        erase = torch.sigmoid(erase)  # [B, W, M]
        add = torch.tanh(add)  # [B, W, M]
        for head in range(self.write_heads):
            memory = erase_and_add(memory, weights[:, self.read_heads + head], erase[:, head], add[:, head])

        return reads, weights, memory

    def forward(self, x_t: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
        """One step: x_t [B, in] -> logits_t [B, out] and the next state."""
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

        # 2.-4. One fused interface layer, then the heads: addressing, read, write (`heads`, or the same math in one C++
        #    op on a CPU: models/_ntm_kernel.py).
        raw = self.interface(controller_out)  # [B, P]
        if kernel_applies(raw):
            reads, weights, memory = fused_heads(raw, state.weights, state.memory, clip, self.read_heads,
                                                 self.shift_radius, self.location_addressing)
        else:
            reads, weights, memory = self.heads(raw, state.weights, state.memory)

        # 5. Output on [controller output, current reads], clipped like the interface.
        logits = self.output(torch.cat([controller_out, reads.flatten(1)], dim=-1)).clamp(-clip, clip)  # [B, out]
        return logits, NTMState(tuple(hs), tuple(cs), reads, weights, memory)

    def sequence(self, inputs: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
        """`forward` over every time step of inputs [B, T, in] -> (logits [B, T, out], the last state), as one C++ op
        each way (`models._ntm_kernel.fused_sequence`; check `models._ntm_kernel.sequence_applies` first): the same
        function as looping `forward`, to round-off."""
        (lstm,) = self.controller
        params = (lstm.weight_ih, lstm.bias_ih, lstm.weight_hh, lstm.bias_hh, self.interface.weight,
                  self.interface.bias, self.output.weight, self.output.bias)
        start = (state.controller_h[0], state.controller_c[0], state.reads, state.weights, state.memory)
        logits, h, c, reads, weights, memory = fused_sequence(inputs, start, params, self.clip_value, self.read_heads,
                                                              self.shift_radius, self.location_addressing)
        return logits, NTMState((h,), (c,), reads, weights, memory)


class NTM(RecurrentModel):
    """The NTM sequence model: `NTMCell` looped over time, built like the cell from an `NTMConfig` (defaults:
    Collier & Beel's) or its fields as keywords.

    Parameter count on Copy (in 9, out 8): 62,936 with a fixed M0, 65,496 with a learned one.
    The trace holds ``read_weights [B, T, R, N]`` and ``write_weights [B, T, W, N]``.
    """

    config_class = NTMConfig
    has_memory = True
    #: compiled 4 steps at a time: faster training at the paper config than 1 step per call, for a longer compile
    #: (measurements in docs/PERFORMANCE.md)
    compile_unroll = 4
    #: a cold compile (about 23 s) is repaid by about 3,000 training steps on Copy at the paper config; rounded up
    #: because many runs stop at convergence, well before their budget (docs/PERFORMANCE.md)
    compile_break_even_steps = 5_000

    def __init__(self, input_size: int, output_size: int, config: NTMConfig | None = None, **params: Any):
        super().__init__()
        self.config = NTMConfig.of(config, **params)
        self.cell = NTMCell(input_size, output_size, self.config)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> NTMState:
        """The cell's initial state (on the parameters' device: M0, r0 and w0 are parameters or buffers)."""
        return self.cell.initial_state(batch_size)

    def step(self, x_t: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
        return self.cell(x_t, state)

    def runs_fused(self, inputs: torch.Tensor) -> bool:
        """Compiled on a CPU (float32 or float64, one controller layer, the C++ kernel built), the whole sequence is
        one op each way (`NTMCell.sequence`), about 1.5x as fast as torch.compile's graphs and with nothing to
        compile. Eager runs keep the step-by-step path, so their results stay those of earlier versions."""
        return sequence_applies(inputs, len(self.cell.controller))

    def fused_steps(self, inputs: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
        return self.cell.sequence(inputs, state)

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
