"""Shared fixtures. `BENCH_DEVICE=cuda` runs the device-aware tests on a GPU (scripts/gpu_check.sh does)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench import registry
from bench.registry import load_all, small_model_params
from tasks.base import convergence

load_all()

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def device() -> torch.device:
    return torch.device(os.environ.get("BENCH_DEVICE", "cpu"))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# Small parameters per registered task for the registry-wide training test; a task without an entry uses defaults.
SMALL_TASK_PARAMS = {
    "copy": {"bits": 3, "train_sizes": [1, 4]},
    "repeat_copy": {"bits": 3, "train_sizes": {"L": [1, 3], "n": [1, 2]}},
    "associative_recall": {"bits": 3, "train_sizes": [2, 3]},
    "priority_sort": {"bits": 4, "train_sizes": {"inputs": [3, 5], "outputs": [1, 3]}},
    "ngrams": {"train_sizes": [8, 16]},
}


def converged(task, metrics: dict) -> bool:
    """Whether one evaluation (at a step after 0) with `metrics` counts as converged under `task`'s rule."""
    return convergence([{"step": 1, **metrics}], task.convergence).step is not None


def small_task_params(task_name: str) -> dict:
    return dict(SMALL_TASK_PARAMS.get(task_name, {}))


def small_params(model_name: str) -> dict:
    """Small sizes of a registered model so the registry-wide tests stay fast: its config's SMALL, the same sizes as
    the smoke suite and `perf --quick`. A model without them fails with a message saying what to add."""
    return small_model_params(model_name)


@pytest.fixture
def builtin_models_only(monkeypatch):
    """The model registry without the plugin models that other tests registered (tests/plugins), for the duration
    of one test: `make perf` measures every registered model, and the plugins have no small sizes."""
    registry.load_all()
    for name in [n for n in registry.MODELS if n not in registry.BUILTIN_MODELS]:
        monkeypatch.delitem(registry.MODELS, name)
    return registry.MODELS


@pytest.fixture
def one_thread():
    """torch at 1 thread for the test (as the harness and the scripts run): small ops run faster on one thread, and a
    second thread stalls badly whenever the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# One torch thread in every test process. The harness and the scripts train at one thread, and most tests ran at one
# already (the first training in the process set it for the rest of the session); fixed here, it no longer depends on
# which tests ran before in the same process, parallel workers do not oversubscribe the cores, and inductor (whose
# generated code, and so its on-disk cache key, depends on the thread count) compiles the same code in every run, so
# a later run finds it in its cache.
torch.set_num_threads(1)
