"""A GRU baseline defined only here (registered as `mygru`, apart from the built-in `gru` of models/gru.py), to prove
that a model plugs in without touching the harness."""

from torch import nn

from bench.registry import register_model
from models.base import SequenceModel


@register_model("mygru")
class MyGRU(SequenceModel):
    def __init__(self, input_size, output_size, layers=1, units=16):
        super().__init__()
        self.rnn = nn.GRU(input_size, units, num_layers=layers, batch_first=True)
        self.output = nn.Linear(units, output_size)

    def forward(self, inputs, trace=False):
        logits = self.output(self.rnn(inputs)[0])
        return (logits, {}) if trace else logits
