"""A model that emits NaN on chosen training forward passes, to test the harness's non-finite handling."""

import torch
from torch import nn

from bench.registry import register_model
from models.base import SequenceModel


@register_model("nan_lstm")
class NaNLSTM(SequenceModel):
    """An LSTM whose logits are NaN on the training forward passes listed in `nan_at` (1-based), and on every one
    from `nan_from` on (0 = never)."""

    def __init__(self, input_size, output_size, units=8, nan_at=(), nan_from=0):
        super().__init__()
        self.rnn = nn.LSTM(input_size, units, batch_first=True)
        self.output = nn.Linear(units, output_size)
        self.nan_at = set(nan_at)
        self.nan_from = nan_from
        self.calls = 0

    def forward(self, inputs, trace=False):
        logits = self.output(self.rnn(inputs)[0])
        if self.training:
            self.calls += 1
            if self.calls in self.nan_at or (self.nan_from and self.calls >= self.nan_from):
                logits = logits * torch.tensor(float("nan"))
        return (logits, {}) if trace else logits
