"""The LSTM baseline: a stacked ``torch.nn.LSTM`` (cuDNN on GPU) and a linear read-out (SPEC section 3.1)."""

from __future__ import annotations

import torch
from torch import nn

from bench.registry import register_model
from models.base import SequenceModel, set_lstm_forget_bias


@register_model("lstm")
class LSTM(SequenceModel):
    """Stacked LSTM, default 3 x 256 as in Graves 2014, forget-gate bias 1 and (optionally) learned initial states.

    Parameter count on Copy (in 9, out 8) without learned initial states: 1,328,136.
    """

    def __init__(self, input_size: int, output_size: int, layers: int = 3, units: int = 256,
                 learned_init: bool = True, forget_bias: float = 1.0):
        super().__init__()
        if layers < 1 or units < 1:
            raise ValueError(f"lstm: layers and units must be >= 1, got layers={layers}, units={units}")
        self.layers = layers
        self.units = units
        self.rnn = nn.LSTM(input_size, units, num_layers=layers, batch_first=True)
        set_lstm_forget_bias(self.rnn, forget_bias)
        self.output = nn.Linear(units, output_size)
        if learned_init:
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
