"""ntm-bench: the harness that trains NTM, DNC and LSTM models on Graves' algorithmic tasks and reports on them."""

__version__ = "0.2.0"
