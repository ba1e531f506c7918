"""The sequence models. A new one is one module plus one line in `MODELS` (and its import).

Nothing here imports the harness: `bench.registry.load_all` reads `MODELS` and merges it into the registry.
"""

from models.dnc import DNC
from models.gru import GRU
from models.lstm import LSTM
from models.ntm import NTM
from models.transformer import Transformer

#: the built-in models by the name suites use
MODELS: dict[str, type] = {
    "lstm": LSTM,
    "ntm": NTM,
    "dnc": DNC,
    "gru": GRU,
    "transformer": Transformer,
}
