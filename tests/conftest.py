"""Shared fixtures. `BENCH_DEVICE=cuda` runs the device-aware tests on a GPU (scripts/gpu_check.sh does)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.registry import load_all

load_all()

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def device() -> torch.device:
    return torch.device(os.environ.get("BENCH_DEVICE", "cpu"))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# Small parameters per registered model so the registry-wide tests stay fast; a model without an entry uses defaults.
SMALL_MODEL_PARAMS = {
    "lstm": {"layers": 2, "units": 16},
    "ntm": {"controller_units": 16, "memory_locations": 8, "memory_width": 5},
    "dnc": {"controller_units": 16, "memory_locations": 8, "memory_width": 5},
}


def small_params(model_name: str) -> dict:
    return dict(SMALL_MODEL_PARAMS.get(model_name, {}))
