"""The LSTM baseline: a stacked ``torch.nn.LSTM`` (cuDNN on GPU) and a linear read-out (docs/MODELS.md#lstm)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from models.base import ModelConfig, SequenceModel, boolean, check_widths, integer, number, param, set_lstm_forget_bias


@dataclasses.dataclass(frozen=True)
class LSTMConfig(ModelConfig):
    """The LSTM's parameters; the default 3 x 256 is Graves 2014's."""

    model = "lstm"
    SMALL = {"layers": 1, "units": 16}

    layers: int = param(3, integer(1))
    units: int = param(256, integer(1))
    #: learn the initial (h, c) of every layer (else zeros)
    learned_init: bool = param(True, boolean())
    #: the forget gate's starting bias
    forget_bias: float = param(1.0, number())


class LSTM(SequenceModel):
    """Stacked LSTM, default 3 x 256 as in Graves 2014, forget-gate bias 1 and (optionally) learned initial states;
    built from an `LSTMConfig` (or its fields as keywords, which replace those of `config`).

    Parameter count on Copy (in 9, out 8) without learned initial states: 1,328,136.
    """

    config_class = LSTMConfig

    def __init__(self, input_size: int, output_size: int, config: LSTMConfig | None = None, **params: Any):
        super().__init__()
        config = LSTMConfig.of(config, **params)
        check_widths("lstm", input_size, output_size)
        self.config = config
        self.layers = layers = config.layers
        self.units = units = config.units
        self.rnn = nn.LSTM(input_size, units, num_layers=layers, batch_first=True)
        set_lstm_forget_bias(self.rnn, config.forget_bias)
        self.output = nn.Linear(units, output_size)
        if config.learned_init:
            self.h0 = nn.Parameter(torch.zeros(layers, 1, units))
            self.c0 = nn.Parameter(torch.zeros(layers, 1, units))
        else:
            self.register_buffer("h0", torch.zeros(layers, 1, units))
            self.register_buffer("c0", torch.zeros(layers, 1, units))

    def forward(self, inputs: torch.Tensor, trace: bool = False):
        batch = inputs.shape[0]
        state = (self.h0.expand(-1, batch, -1).contiguous(), self.c0.expand(-1, batch, -1).contiguous())
        hidden, _ = self.rnn(inputs, state)  # [B, T, units]
        logits = self.output(hidden)  # [B, T, out]
        return (logits, {}) if trace else logits
