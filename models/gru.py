"""The GRU baseline: a stacked ``torch.nn.GRU`` (cuDNN on GPU) and a linear read-out (docs/MODELS.md#gru)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from models.base import ModelConfig, SequenceModel, boolean, check_widths, integer, param


@dataclasses.dataclass(frozen=True)
class GRUConfig(ModelConfig):
    """The GRU's parameters; the default 3 x 256 matches the LSTM baseline's."""

    model = "gru"
    SMALL = {"layers": 1, "units": 16}

    layers: int = param(3, integer(1))
    units: int = param(256, integer(1))
    #: learn the initial hidden state h0 of every layer (else zeros)
    learned_init: bool = param(True, boolean())


class GRU(SequenceModel):
    """Stacked GRU, default 3 x 256, with (optionally) a learned initial hidden state and a linear read-out to logits;
    built from a `GRUConfig` (or its fields as keywords, which replace those of `config`).

    The GRU counterpart of `models.lstm.LSTM`: like it, a plain `SequenceModel` that runs ``torch.nn.GRU`` over the
    whole sequence (cuDNN on a GPU, oneDNN on a CPU) rather than a `RecurrentModel` with a pure step, so the harness
    trains the seeds of a group one after another and `compile` leaves it eager, exactly as for the LSTM.

    Parameter count on Copy (in 9, out 8) at the defaults: 996,616 (+768 learned h0).
    """

    config_class = GRUConfig

    def __init__(self, input_size: int, output_size: int, config: GRUConfig | None = None, **params: Any):
        super().__init__()
        config = GRUConfig.of(config, **params)
        check_widths("gru", input_size, output_size)
        self.config = config
        self.layers = layers = config.layers
        self.units = units = config.units
        self.rnn = nn.GRU(input_size, units, num_layers=layers, batch_first=True)
        self.output = nn.Linear(units, output_size)
        if config.learned_init:
            self.h0 = nn.Parameter(torch.zeros(layers, 1, units))
        else:
            self.register_buffer("h0", torch.zeros(layers, 1, units))

    def forward(self, inputs: torch.Tensor, trace: bool = False):
        state = self.h0.expand(-1, inputs.shape[0], -1).contiguous()  # [layers, B, units]
        hidden, _ = self.rnn(inputs, state)  # [B, T, units]
        logits = self.output(hidden)  # [B, T, out]
        return (logits, {}) if trace else logits
