"""Registry-wide model tests: every registered model gets them the day it is registered."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
import yaml

import models
from bench import registry
from bench.metrics import loss_nats_per_seq
from bench.registry import MODELS, TASKS, build_model, build_task
from models.base import ModelConfig, SequenceModel
from tests.conftest import REPO, small_params, small_task_params

MODEL_NAMES = sorted(MODELS)


def _model(name, task, device, seed=0):
    torch.manual_seed(seed)
    return build_model(name, task.input_size, task.output_size, **small_params(name)).to(device)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_and_trace(name, device, generator):
    task = build_task("copy", bits=4, train_sizes=[1, 5])
    model = _model(name, task, device)
    batch = task.sample(3, generator).to(device)
    logits = model(batch.inputs)
    assert logits.shape == (3, batch.steps, task.output_size)
    logits2, trace = model(batch.inputs, trace=True)
    torch.testing.assert_close(logits, logits2)
    assert isinstance(trace, dict)
    for key, value in trace.items():
        assert value.shape[:2] == (3, batch.steps), key
    if model.has_memory:
        assert "read_weights" in trace and "write_weights" in trace


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("task_name", ["copy", "repeat_copy", "associative_recall"])
def test_padding_invariance(name, task_name, device):
    """An example's scored logits are the same alone and inside a batch padded to a longer example."""
    task = build_task(task_name)
    model = _model(name, task, device).eval()
    short = task.sample(1, torch.Generator().manual_seed(5), size=task.test_sizes[0])
    long_size = tuple(2 * s for s in task.test_sizes[0])
    longer = task.sample(2, torch.Generator().manual_seed(6), size=long_size)
    from tasks.base import collate

    parts = [(tuple(short.sizes[0].tolist()), short.inputs[0], short.targets[0], short.mask[0])]
    parts += [(tuple(longer.sizes[i].tolist()), longer.inputs[i], longer.targets[i], longer.mask[i]) for i in range(2)]
    padded = collate(parts).to(device)
    assert padded.steps > short.steps
    with torch.no_grad():
        alone = model(short.inputs.to(device))[0]
        together = model(padded.inputs)[0, : short.steps]
    scored = short.mask[0].bool()
    torch.testing.assert_close(together[scored], alone[scored], rtol=1e-5, atol=1e-5)
    assert padded.mask[0, short.steps :].sum() == 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_few_steps_lower_the_loss(name, device, generator):
    task = build_task("copy", bits=4, train_sizes=[1, 3])
    model = _model(name, task, device)
    batch = task.sample(8, generator).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask))
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.8 * before
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_unknown_parameter_is_rejected(name):
    with pytest.raises(ValueError, match="allowed"):
        build_model(name, 9, 8, no_such_parameter=1)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_every_model_trains_a_few_steps_on_every_task(name, task_name, device):
    task = build_task(task_name, **small_task_params(task_name))
    model = _model(name, task, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        batch = task.sample(4, generator).to(device)
        optimizer.zero_grad()
        loss = loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---- parameters, small sizes and registration -----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_builtin_model_has_a_config_with_small_sizes(name):
    """Every built-in model keeps its parameters in one dataclass, whose SMALL sizes the tests, the smoke suite and
    `perf --quick` share."""
    cls = models.MODELS[name]
    config = cls.config_class
    assert config is not None and dataclasses.is_dataclass(config) and issubclass(config, ModelConfig), (
        f"model {name!r}: give {cls.__name__} a `config_class`, a frozen dataclass subclassing models.base.ModelConfig "
        "with one field per parameter")
    assert config.SMALL is not None, (
        f"model {name!r}: add SMALL = {{parameter: value, ...}} (small sizes for the tests) to {config.__name__}, "
        f"and the same sizes to models.{name} in suites/smoke.yaml")
    config(**config.SMALL)  # valid sizes
    assert registry.model_parameters(name) == {f.name: f.default for f in dataclasses.fields(config)}


def test_smoke_suite_uses_each_models_small_sizes():
    smoke = yaml.safe_load((REPO / "suites" / "smoke.yaml").read_text())["models"]
    kinds = {}
    for label, params in smoke.items():
        params = dict(params)
        kind = params.pop("model", label)
        kinds[kind] = label
        assert params == small_params(kind), (f"suites/smoke.yaml: models.{label} must equal {kind}'s SMALL sizes "
                                              f"{small_params(kind)} (its config in models/)")
    missing = sorted(set(models.MODELS) - set(kinds))
    assert not missing, f"suites/smoke.yaml: add {missing} under models:, with each one's SMALL sizes"


def test_the_model_registry_lists_the_builtin_models():
    for name, cls in models.MODELS.items():
        assert MODELS[name] is cls


def test_models_import_nothing_from_bench():
    code = "import sys, models; print(sorted(m for m in sys.modules if m == 'bench' or m.startswith('bench.')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_plugin_cannot_take_a_builtin_name():
    class Impostor(SequenceModel):
        pass

    with pytest.raises(registry.RegistryError, match="model 'ntm' is already registered by models.ntm"):
        registry.register_model("ntm")(Impostor)
    # and a plugin registered before the built-ins are merged in makes the merge fail the same way
    code = ("from bench import registry\n"
            "registry.register_model('lstm')(type('Impostor', (), {}))\n"
            "try:\n    registry.load_all()\n"
            "except registry.RegistryError as error:\n    print(error)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "model 'lstm' is already registered by __main__" in out.stdout


def test_a_model_without_small_sizes_fails_loudly(monkeypatch, tmp_path, builtin_models_only):
    class Plain(SequenceModel):
        def __init__(self, input_size, output_size, units=4):
            super().__init__()

    monkeypatch.setitem(MODELS, "plain", Plain)
    assert registry.model_parameters("plain") == {"units": 4}  # a model without a config is read from its signature
    with pytest.raises(registry.RegistryError, match="model 'plain' has no small sizes.*SMALL"):
        small_params("plain")
    from bench import perf

    with pytest.raises(registry.RegistryError, match="model 'plain' has no small sizes"):
        perf.main(["--quick", "--no-compile", "--out", str(tmp_path)])  # before measuring anything
    assert not (tmp_path / "perf.csv").exists()
