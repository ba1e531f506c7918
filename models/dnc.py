"""The Differentiable Neural Computer (Graves et al. 2016), following DeepMind's reference core (docs/MODELS.md#dnc).

One step, in the reference's order (every step reads the state of step t-1 and returns the state of step t):

    controller  LSTM([x_t, read words_{t-1}]) -> output, (h, c); output and (h, c) clipped to +-clip_value
    interface   one fused linear map of the controller output, split into keys, strengths, gates and read modes
    1. usage        u <- u + (1 - u) w_w,prev (no gradient through w_w,prev), then u <- u * prod_i (1 - f_i w_r,i,prev)
    2. allocation   sort usage ascending, a[phi_j] = (1 - u[phi_j]) prod_{i<j} u[phi_i]
    3. write        w_w = g_w (g_a a + (1 - g_a) c_w), c_w a content lookup on the PREVIOUS memory
    4. memory       erase, then add
    5. links        L[i, j] <- (1 - w_i - w_j) L[i, j] + w_i p_j, zero diagonal; then p <- (1 - sum w) p + w
    6. read         content lookup on the NEW memory, forward L w_r,prev, backward L^T w_r,prev, mixed by the read
                    modes; read words = w_r M
    7. output       linear([controller output, read words]), clipped to +-clip_value

Initial state: zeros everywhere (controller state, read words, weights, usage, links, precedence, memory).

Parameters with the defaults on Copy (in 9, out 8): 62,256. Controller LSTM, input 9 + 1*20 = 29, 100 units:
4*100*(29 + 100) weights + 2*400 biases = 52,400 (torch keeps two bias vectors); interface 100 -> 88 values:
8,888; output (100 + 20) -> 8: 968. DeepMind's reference controller (Sonnet's LSTM) keeps ONE bias vector, so the same
network counts 400 fewer there (61,856); the two vectors only ever enter as their sum, so the function is the same.

Deliberate choices, each stated where it is made: only one write head (the setting of the DNC paper and of Collier &
Beel's comparison); the controller is initialised like Sonnet's LSTM (truncated-normal weights AND bias, std
1/sqrt(input + units), plus a forget-gate bias of 1, which Sonnet adds as a constant and we put on one of torch's
two bias vectors).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.addressing import (
    allocation_weights,
    content_weighting,
    erase_and_add,
    read_memory,
    update_link_and_read,
    update_precedence,
    update_usage,
)
from models.base import (
    ModelConfig,
    RecurrentModel,
    check_widths,
    integer,
    lstm_cell,
    one_of,
    param,
    positive_number,
    stack_time,
    truncated_normal_,
    truncated_normal_linear_,
)

#: the reference's epsilon: inside each norm, sqrt(sum x^2 + eps), and added to the cosine denominator
DNC_EPS = 1e-6
#: Sonnet's LSTM adds this constant to the forget gate's pre-activation; we start one bias vector there instead
FORGET_BIAS = 1.0
#: read modes per head with one write head: backward, forward, content (the reference's order)
READ_MODES = 3
STRENGTHS = ("softplus", "oneplus")


class DNCState(NamedTuple):
    """The recurrent state between steps (all zeros at t = 0)."""

    controller: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer (h [B, units], c [B, units]), clipped
    read_words: torch.Tensor  # [B, R, W]
    read_weights: torch.Tensor  # [B, R, N]
    write_weights: torch.Tensor  # [B, 1, N]
    usage: torch.Tensor  # [B, N]
    link: torch.Tensor  # [B, N, N] (one write head)
    precedence: torch.Tensor  # [B, N]
    memory: torch.Tensor  # [B, N, W]


class DNCGates(NamedTuple):
    """The write-side gates of one step, for the trace."""

    allocation_gate: torch.Tensor  # [B, 1]
    write_gate: torch.Tensor  # [B, 1]


@dataclasses.dataclass(frozen=True)
class DNCConfig(ModelConfig):
    """The DNC's parameters; the defaults are Collier & Beel's comparison settings (a 1 x 100 LSTM controller,
    128 x 20 memory, one read head, clip 20)."""

    model = "dnc"
    SMALL = {"controller_units": 16, "memory_locations": 16, "memory_width": 5}

    controller_units: int = param(100, integer(1))
    controller_layers: int = param(1, integer(1))
    memory_locations: int = param(128, integer(1))  # N
    memory_width: int = param(20, integer(1))  # W
    read_heads: int = param(1, integer(1))  # R
    write_heads: int = param(1)  # checked in __post_init__: only 1
    clip_value: float = param(20.0, positive_number())
    #: how raw strengths become strengths: softplus (the reference's) or oneplus = 1 + softplus (the paper's)
    strength: str = param("softplus", one_of(*STRENGTHS))

    def __post_init__(self) -> None:
        if self.write_heads != 1:
            raise ValueError(f"dnc: only write_heads=1 is supported (the paper's setting), got {self.write_heads}")
        super().__post_init__()


class DNC(RecurrentModel):
    """DNC with an LSTM controller, R read heads and one write head, built from a `DNCConfig` (or its fields as
    keywords, which replace those of `config`)."""

    config_class = DNCConfig
    has_memory = True
    #: compiled 4 steps per call: with the link in its own C++ kernel (opaque to the compiler), unrolling pays for its
    #: longer compile; before that kernel it gained nothing (measurements in docs/PERFORMANCE.md)
    compile_unroll = 4

    def __init__(self, input_size: int, output_size: int, config: DNCConfig | None = None, **params: Any):
        super().__init__()
        config = DNCConfig.of(config, **params)
        check_widths("dnc", input_size, output_size)
        self.config = config
        self.input_size = input_size
        self.output_size = output_size
        self.units = config.controller_units
        self.layers = config.controller_layers
        self.locations = config.memory_locations  # N
        self.width = config.memory_width  # W
        self.read_heads = config.read_heads  # R
        self.clip_value = float(config.clip_value)
        self.strength = config.strength

        # controller input at step t: [x_t, read words of step t-1]
        controller_input = input_size + self.read_heads * self.width
        self.controller = nn.ModuleList(
            nn.LSTMCell(controller_input if layer == 0 else self.units, self.units)
            for layer in range(self.layers)
        )

        # The fused interface, grouped by activation so each group is one slice and one activation call:
        #   no activation: read keys R*W, write key W, write vector W
        #   strength:      read strengths R, write strength 1
        #   sigmoid:       erase W, free gates R, allocation gate 1, write gate 1
        #   softmax:       read modes R*3
        R, W = self.read_heads, self.width
        self.interface_sizes = (R * W + 2 * W, R + 1, W + R + 2, R * READ_MODES)
        self.interface = nn.Linear(self.units, sum(self.interface_sizes))
        self.output = nn.Linear(self.units + R * W, output_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Sonnet's initialisers: truncated normal, std 1/sqrt(fan_in), zero biases for the linear maps."""
        with torch.no_grad():
            for cell in self.controller:
                # Sonnet's LSTM has one [input + units, 4 units] kernel and one bias, both drawn with the kernel's std
                std = 1.0 / math.sqrt(cell.input_size + cell.hidden_size)
                truncated_normal_(cell.weight_ih, std)
                truncated_normal_(cell.weight_hh, std)
                truncated_normal_(cell.bias_ih, std)
                cell.bias_hh.zero_()
                # torch's gate order is input, forget, cell, output; Sonnet's constant forget bias lands on one vector
                units = cell.hidden_size
                cell.bias_ih[units : 2 * units] += FORGET_BIAS
            for linear in (self.interface, self.output):
                truncated_normal_linear_(linear)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> DNCState:
        """Zeros everywhere, as in the reference."""
        R, N, W = self.read_heads, self.locations, self.width

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(batch_size, *shape, device=device, dtype=dtype)

        controller = tuple((zeros(self.units), zeros(self.units)) for _ in range(self.layers))
        return DNCState(controller=controller, read_words=zeros(R, W), read_weights=zeros(R, N),
                        write_weights=zeros(1, N), usage=zeros(N), link=zeros(N, N), precedence=zeros(N),
                        memory=zeros(N, W))

    def _strength(self, raw: torch.Tensor) -> torch.Tensor:
        # softplus is the reference's default; oneplus = 1 + softplus keeps every strength >= 1 (the paper's form)
        return F.softplus(raw) + 1.0 if self.strength == "oneplus" else F.softplus(raw)

    def step(self, x: torch.Tensor, state: DNCState) -> tuple[torch.Tensor, DNCState]:
        """One time step: x [B, in] and the state of step t-1 -> (logits [B, out], state of step t)."""
        logits, state, _ = self.step_with_gates(x, state)
        return logits, state

    def step_with_gates(self, x: torch.Tensor, state: DNCState) -> tuple[torch.Tensor, DNCState, DNCGates]:
        """`step`, also returning the write-side gates (for the trace)."""
        batch = x.shape[0]
        R, W, clip = self.read_heads, self.width, self.clip_value

        # ---- controller: the reference clips its output and its whole state, so (h, c) never run away
        layer_input = torch.cat([x, state.read_words.reshape(batch, R * W)], dim=-1)  # [B, in + R*W]
        controller = []
        for cell, (h, c) in zip(self.controller, state.controller):
            h, c = lstm_cell(cell, layer_input, h, c)  # [B, units] each
            layer_input = h
            controller.append((h.clamp(-clip, clip), c.clamp(-clip, clip)))
        controller_output = controller[-1][0]  # [B, units], clipped

        # ---- interface
        raw = self.interface(controller_output)  # [B, P]
        plain, strengths, gates, modes = torch.split(raw, self.interface_sizes, dim=-1)
        read_keys, write_key, write_vector = torch.split(plain, (R * W, W, W), dim=-1)
        read_keys = read_keys.reshape(batch, R, W)  # [B, R, W]
        write_key = write_key.unsqueeze(1)  # [B, 1, W]
        strengths = self._strength(strengths)
        read_strengths, write_strength = strengths[:, :R], strengths[:, R:]  # [B, R], [B, 1]
        gates = torch.sigmoid(gates)
        erase, free_gates, allocation_gate, write_gate = torch.split(gates, (W, R, 1, 1), dim=-1)
        read_modes = torch.softmax(modes.reshape(batch, R, READ_MODES), dim=-1)  # [B, R, 3]

        # ---- 1. usage, from the previous weights (write weights without gradient, inside update_usage)
        usage = update_usage(state.usage, state.write_weights, free_gates, state.read_weights)  # [B, N]
        # ---- 2. allocation
        allocation = allocation_weights(usage).unsqueeze(1)  # [B, 1, N]
        # ---- 3. write weights: allocation vs content lookup on the previous memory, scaled by the write gate
        write_content = content_weighting(write_key, write_strength, state.memory, eps=DNC_EPS,
                                          norm_eps=DNC_EPS)  # [B, 1, N]
        g_a = allocation_gate.unsqueeze(-1)  # [B, 1, 1]
        write_weights = write_gate.unsqueeze(-1) * (g_a * allocation
                                                   + (1.0 - g_a) * write_content)  # [B, 1, N]
        # ---- 4. memory: erase, then add
        memory = erase_and_add(state.memory, write_weights[:, 0], erase, write_vector)  # [B, N, W]
        # ---- 5. temporal links (with the previous precedence), then precedence
        #         and (step 6's first half) the forward and backward reads on the new links, fused: this O(N^2) work is
        #         the DNC's most expensive, and its hand-written backward saves most of the passes over [B, N, N]
        link, forward, backward = update_link_and_read(state.link, state.precedence, write_weights[:, 0],
                                                       state.read_weights)  # [B, N, N], [B, R, N], [B, R, N]
        precedence = update_precedence(state.precedence, write_weights[:, 0])  # [B, N]
        # ---- 6. read weights on the new memory: backward, forward and content, mixed per head
        read_content = content_weighting(read_keys, read_strengths, memory, eps=DNC_EPS, norm_eps=DNC_EPS)
        read_weights = (read_modes[..., 0:1] * backward + read_modes[..., 1:2] * forward
                        + read_modes[..., 2:3] * read_content)  # [B, R, N]
        read_words = read_memory(read_weights, memory)  # [B, R, W]
        # ---- 7. output
        logits = self.output(torch.cat([controller_output, read_words.reshape(batch, R * W)], dim=-1))
        logits = logits.clamp(-clip, clip)  # [B, out]

        state = DNCState(controller=tuple(controller), read_words=read_words, read_weights=read_weights,
                         write_weights=write_weights, usage=usage, link=link, precedence=precedence, memory=memory)
        return logits, state, DNCGates(allocation_gate=allocation_gate, write_gate=write_gate)

    def forward(self, inputs: torch.Tensor, trace: bool = False):
        """inputs [B, T, in] -> logits [B, T, out]; with `trace`, also per-step weightings, usage and gates."""
        batch, steps, _ = inputs.shape
        state = self.initial_state(batch, device=inputs.device, dtype=inputs.dtype)
        if not trace:
            return self.run(inputs, state)[0]  # [B, T, out]
        logits = []
        recorded: dict[str, list[torch.Tensor]] = {key: [] for key in ("read_weights", "write_weights", "usage",
                                                                       "allocation_gate", "write_gate")}
        for t in range(steps):
            logits_t, state, gates = self.step_with_gates(inputs[:, t], state)
            logits.append(logits_t)
            recorded["read_weights"].append(state.read_weights.detach())  # [B, R, N]
            recorded["write_weights"].append(state.write_weights.detach())  # [B, 1, N]
            recorded["usage"].append(state.usage.detach())  # [B, N]
            recorded["allocation_gate"].append(gates.allocation_gate.detach())  # [B, 1]
            recorded["write_gate"].append(gates.write_gate.detach())  # [B, 1]
        return stack_time(logits), {key: stack_time(values) for key, values in recorded.items()}
