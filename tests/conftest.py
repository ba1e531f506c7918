"""Shared fixtures. `BENCH_DEVICE=cuda` runs the device-aware tests on a GPU (scripts/gpu_check.sh does)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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


def assert_vmapped_alike(function, reference, stacked: list[torch.Tensor], generator: torch.Generator, in_dims=0,
                         compiled: bool = False) -> None:
    """`function` and `reference` (say a C++ kernel's op and its PyTorch twin), each `torch.func.vmap`-ed over the
    population axis of `stacked`, give the same outputs and the same input gradients under random cotangents, and
    those gradients are not all 0. `compiled` compiles the vmapped `function` (fullgraph), as the harness compiles
    the vmapped step of every compiled run."""
    runs = []
    for candidate in (function, reference):
        leaves = [t.clone().requires_grad_(True) for t in stacked]
        mapped = torch.func.vmap(candidate, in_dims=in_dims)
        if compiled and candidate is function:
            torch._dynamo.reset()
            mapped = torch.compile(mapped, fullgraph=True)
        runs.append((mapped(*leaves), leaves))
    (outputs, leaves), (expected_outputs, expected_leaves) = runs
    for got, expected in zip(outputs, expected_outputs, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    cotangents = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in expected_outputs]
    for got, expected in zip(torch.autograd.grad(outputs, leaves, cotangents),
                             torch.autograd.grad(expected_outputs, expected_leaves, cotangents), strict=True):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


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


# ---- running the tests in parallel: `make test` runs pytest-xdist's `-n auto --dist loadgroup` ----------------------

# One torch thread in every test process. The harness and the scripts train at one thread, and most tests ran at one
# already (the first training in the process set it for the rest of the session); fixed here, it no longer depends on
# which tests ran before in the same process, parallel workers do not oversubscribe the cores, and inductor (whose
# generated code, and so its on-disk cache key, depends on the thread count) compiles the same code in every run, so
# a later run finds it in its cache.
torch.set_num_threads(1)

#: scopes that outlive one test: the tests that share such a fixture run on one xdist worker, so that it is built once
#: and its tests see what they saw when run one after another
_SHARED_SCOPES = ("class", "module", "package", "session")
#: where the xdist workers leave each test's group for the scheduler (see _GroupScheduling)
_GROUPS_FOLDER = pytest.StashKey[Path]()


def pytest_configure(config):
    config.addinivalue_line("markers", "xdist_group(name): run on the same xdist worker as the group's other tests")
    workers = getattr(config.option, "numprocesses", None)
    dist = getattr(config.option, "dist", "no")
    if workers and dist not in ("loadgroup", "loadscope", "loadfile"):
        raise pytest.UsageError(f"--dist {dist}: run the tests in parallel with --dist loadgroup (as `make test` "
                                "does), which keeps the tests that share a module fixture on one worker")
    if workers and dist == "loadgroup":
        config.option.loadscopereorder = False  # hand out the tests in _Worker's order (the long ones first)
        config.stash[_GROUPS_FOLDER] = Path(tempfile.mkdtemp(prefix="ntm-bench-xdist-"))
    if hasattr(config, "workerinput"):
        config.pluginmanager.register(_Worker(config), "ntm-bench-xdist-worker")


def pytest_unconfigure(config):
    if _GROUPS_FOLDER in config.stash:
        shutil.rmtree(config.stash[_GROUPS_FOLDER], ignore_errors=True)


def _shared_fixtures(item) -> list[str]:
    """The fixtures defined under tests/ (not a plugin's) with a scope above the test's that `item` uses."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    names = []
    for name in info.names_closure:
        definitions = info.name2fixturedefs.get(name)
        if definitions and definitions[-1].scope in _SHARED_SCOPES and definitions[-1].baseid:
            names.append(f"{definitions[-1].baseid}::{name}")
    return names


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Tests that share a module- or session-scoped fixture (directly or through other fixtures) get one xdist_group,
    which `--dist loadgroup` runs on one worker. Without xdist the marks change nothing."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    shared = {item.nodeid: _shared_fixtures(item) for item in items}
    for names in shared.values():
        for name in names[1:]:
            parent[find(name)] = find(names[0])
    for item in items:
        if shared[item.nodeid]:
            item.add_marker(pytest.mark.xdist_group(find(shared[item.nodeid][0])))


def _group(item) -> str | None:
    """The item's xdist group, named as xdist names it; None for a test in no group."""
    names = {str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
             for mark in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) or None


#: the longest tests when inductor's cache is cold (a fresh machine: one to three minutes each on 2 cores, against
#: seconds once cached), started before everything else; a name that no longer matches only loses its head start
_COLD_COMPILES = ("tests/test_population.py::test_compiled_",)


class _Worker:
    """In an xdist worker: the tests that take longest first (the compile tests, then the others marked slow, then
    those marked ray; each kind in collection order), since a long test handed out last keeps one worker busy while
    the other idles; and each test's group written where _GroupScheduling reads it."""

    def __init__(self, config):
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        def rank(item) -> int:
            if item.nodeid.startswith(_COLD_COMPILES):
                return 0
            return 1 if item.get_closest_marker("slow") else 2 if item.get_closest_marker("ray") else 3

        items.sort(key=rank)
        folder = self.config.workerinput.get("ntm_bench_groups")
        if folder:
            groups = {item.nodeid: group for item in items if (group := _group(item))}
            path = Path(folder) / f"{self.config.workerinput['workerid']}.json"
            path.with_suffix(".tmp").write_text(json.dumps(groups))
            path.with_suffix(".tmp").replace(path)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    if _GROUPS_FOLDER in node.config.stash:
        node.workerinput["ntm_bench_groups"] = str(node.config.stash[_GROUPS_FOLDER])


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") == "loadgroup" and _GROUPS_FOLDER in config.stash:
        return _group_scheduling()(config, log)
    return None


def _group_scheduling():
    """xdist's loadgroup scheduler, told each test's group through files rather than through its node id: xdist
    appends the group to the node id, which pytest 9.2 ignores (pytest-dev/pytest-xdist#1386), and then runs every
    test on its own, building each shared fixture on every worker that runs one of its tests."""
    from xdist.scheduler import LoadGroupScheduling

    class _GroupScheduling(LoadGroupScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first called once every worker has collected, so has written its file
                self.groups = {}
                for path in sorted(self.config.stash[_GROUPS_FOLDER].glob("*.json")):
                    self.groups.update(json.loads(path.read_text()))
            group = self.groups.get(nodeid)
            return f"group:{group}" if group else super()._split_scope(nodeid)

    return _GroupScheduling
