"""A model whose first training forward waits while a gate file exists, once its output folder's writer lock is held:
it keeps a ``python -m bench run`` holding the lock for as long as a test needs (tests/test_hostile_folders.py).

The test sets GATE (a file; the model writes ``<GATE>.waiting`` when it starts to wait) and LOCK (the output
folder's `.ntm-bench.lock`). The model waits only once the lock file names its holder, so never in the memory check
that runs before the lock is taken.
"""

import os
import time
from pathlib import Path

from torch import nn

from bench.registry import register_model
from models.base import SequenceModel

GATE = "BENCH_TEST_GATE"
LOCK = "BENCH_TEST_LOCK"
#: the longest a gated run waits, whatever the test does
LONGEST_WAIT_S = 600

_waited = False


def wait_at_gate() -> None:
    global _waited
    gate, lock = os.environ.get(GATE), os.environ.get(LOCK)
    if _waited or not gate or not lock or not (Path(lock).is_file() and Path(lock).stat().st_size > 0):
        return
    _waited = True
    Path(gate + ".waiting").write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + LONGEST_WAIT_S
    while Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@register_model("gated_lstm")
class GatedLSTM(SequenceModel):
    def __init__(self, input_size, output_size, units=8):
        super().__init__()
        self.rnn = nn.LSTM(input_size, units, batch_first=True)
        self.output = nn.Linear(units, output_size)

    def forward(self, inputs, trace=False):
        if self.training:
            wait_at_gate()
        logits = self.output(self.rnn(inputs)[0])
        return (logits, {}) if trace else logits
