"""Expand a suite into runs: task x model variant x seed -> `RunSpec`, each with a stable `run_id`.

Seed k alone gives the run's data seed and init seed, so at seed k every model sees the same training data
(paired comparisons; docs/TASKS.md#seeds). The run_id hashes everything that changes the numbers and nothing that
does not (device, executor, workers, checkpoint interval), so a rerun elsewhere finds its finished runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

import torch

from bench import registry
from bench.config import (
    TRAIN_KEYS_HASHED_UNLESS_DEFAULT,
    TRAIN_KEYS_NOT_IN_RUN_ID,
    Component,
    ConfigError,
    Suite,
    TrainConfig,
    read_suite,
)


def load_suite(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Load, merge, override and validate a suite (`bench.config.read_suite`), then expand it once: that checks the
    sweeps and builds every task and model, so that a bad value fails here, with a one-line `ConfigError`, and not
    in the middle of training."""
    suite = read_suite(name_or_path, overrides)
    expand(suite)
    return suite


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived deterministically from `parts` (e.g. ``("data", 3)``)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class RunSpec:
    """Everything one training run needs, resolved."""

    suite: str
    task: str  # the suite's label
    task_type: str  # the registry name
    task_params: dict[str, Any]
    model: str
    model_type: str
    model_params: dict[str, Any]
    train: TrainConfig
    seed: int
    eval_seed: int
    device: str = "auto"

    @property
    def data_seed(self) -> int:
        return derive_seed("data", self.seed)

    @property
    def init_seed(self) -> int:
        return derive_seed("init", self.seed)

    def identity(self) -> dict[str, Any]:
        """What the run_id hashes: labels, resolved params, the training keys that change the numbers, seeds."""
        train = dataclasses.asdict(self.train)
        for key in TRAIN_KEYS_NOT_IN_RUN_ID:
            train.pop(key)
        for key, default in TRAIN_KEYS_HASHED_UNLESS_DEFAULT.items():
            if train[key] == default:
                train.pop(key)
        return {"task": self.task, "task_type": self.task_type, "task_params": self.task_params,
                "model": self.model, "model_type": self.model_type, "model_params": self.model_params,
                "train": train, "seed": self.seed, "eval_seed": self.eval_seed}

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        return {**self.identity(), "suite": self.suite, "device": self.device, "run_id": self.run_id,
                "train": dataclasses.asdict(self.train), "data_seed": self.data_seed, "init_seed": self.init_seed}


def _value_label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def model_variants(suite: Suite) -> list[tuple[Component, TrainConfig]]:
    """Each model label crossed with the sweep values that apply to it, named ``label[key=value,...]``."""
    variants = []
    for label, model in suite.models.items():
        allowed = registry.model_parameters(model.type)
        axes = []  # (display key, kind, key, values)
        for key, values in suite.sweep.items():
            parts = key.split(".")
            if parts[0] == "train" and len(parts) == 2:
                if parts[1] not in {f.name for f in dataclasses.fields(TrainConfig)} or parts[1] == "clip":
                    raise ConfigError(f"{suite.path}: sweep.{key}: unknown training key; sweepable: "
                                      + ", ".join(f"train.{f.name}" for f in dataclasses.fields(TrainConfig)
                                                  if f.name != "clip"))
                axes.append((parts[1], "train", parts[1], values))
            elif parts[0] == "models" and len(parts) == 3:
                if parts[1] not in suite.models:
                    raise ConfigError(f"{suite.path}: sweep.{key}: no model labelled {parts[1]!r}; models: "
                                      + ", ".join(suite.models))
                if parts[1] == label:
                    if parts[2] not in allowed:
                        raise ConfigError(f"{suite.path}: sweep.{key}: {model.type} has no parameter {parts[2]!r}; "
                                          f"allowed: {', '.join(allowed)}")
                    axes.append((parts[2], "model", parts[2], values))
            elif len(parts) == 1:
                if not any(parts[0] in registry.model_parameters(m.type) for m in suite.models.values()):
                    raise ConfigError(f"{suite.path}: sweep.{key}: no model of this suite takes {key!r}; use "
                                      "train.KEY, a model parameter, or models.LABEL.KEY")
                if parts[0] in allowed:
                    axes.append((parts[0], "model", parts[0], values))
            else:
                raise ConfigError(f"{suite.path}: sweep.{key}: expected train.KEY, a model parameter, or "
                                  "models.LABEL.KEY")
        if not axes:
            variants.append((model, suite.train))
            continue
        for combo in itertools.product(*(values for _, _, _, values in axes)):
            params = dict(model.params)
            train_changes = {}
            names = []
            for (display, kind, key, _), value in zip(axes, combo):
                names.append(f"{display}={_value_label(value)}")
                if kind == "train":
                    train_changes[key] = value
                else:
                    params[key] = value
            train = dataclasses.replace(suite.train, **train_changes) if train_changes else suite.train
            variant_label = f"{label}[{','.join(names)}]"
            variants.append((Component(variant_label, model.type, params, model.per_task), train))
    return variants


def expand(suite: Suite) -> list[RunSpec]:
    """Every run of the suite, task-major then model then seed. Builds each task and model once to check them."""
    specs = []
    variants = model_variants(suite)
    for task in suite.tasks.values():
        try:
            built_task = registry.build_task(task.type, **task.params)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{suite.path}: tasks.{task.label}: {error}") from None
        swept = {key.split(".", 1)[1] for key in suite.sweep if key.startswith("train.")}
        for variant, variant_train in variants:
            # the task's own training keys apply on top of the suite's; a swept key keeps the sweep's value
            overrides = {k: v for k, v in task.train.items() if k not in swept}
            train = dataclasses.replace(variant_train, **overrides) if overrides else variant_train
            model = Component(variant.label, variant.type, variant.params_for(task.label))
            _check_model(suite, model, built_task)
            for key in ("lr", "batch_size", "steps", "eval_every"):
                if getattr(train, key) <= 0:
                    raise ConfigError(f"{suite.path}: sweep.train.{key}: values must be > 0")
            for seed in suite.seeds:
                specs.append(RunSpec(suite.name, task.label, task.type, dict(task.params), model.label, model.type,
                                     dict(model.params), train, seed, suite.eval_seed, suite.device))
    return specs


def memory_overflows(suite: Suite) -> list[str]:
    """One line per task x memory model whose largest test size needs more memory slots than the model has.

    A memory model (one with a `memory_locations` parameter) cannot store more vectors than it has slots, so a test
    size beyond that measures the memory size, not generalisation. The suite still runs; this is a warning.
    """
    problems = []
    for task in suite.tasks.values():
        built = registry.build_task(task.type, **task.params)
        needs = [(built.vectors_to_store(size), size) for size in built.test_sizes]
        needs = [(n, size) for n, size in needs if n is not None]
        if not needs:
            continue
        most, size = max(needs)
        for label, model in suite.models.items():
            params = {**registry.model_parameters(model.type), **model.params_for(task.label)}
            if "memory_locations" not in params:
                continue
            slots = params["memory_locations"]
            if isinstance(slots, int) and most > slots:
                problems.append(f"{suite.path}: tasks.{task.label}: test size {built.size_label(size)} needs {most} "
                                f"memory slots but models.{label} has memory_locations {slots}")
    return problems


_checked: dict[str, None] = {}


def _check_model(suite: Suite, model: Component, task) -> None:
    key = json.dumps([model.type, model.params, task.input_size, task.output_size], sort_keys=True, default=str)
    if key in _checked:
        return
    try:
        try:
            with torch.device("meta"):  # cheap: checks the parameters without allocating weights
                registry.build_model(model.type, task.input_size, task.output_size, **model.params)
        except (NotImplementedError, RuntimeError):
            registry.build_model(model.type, task.input_size, task.output_size, **model.params)
    except (ValueError, TypeError) as error:
        label = model.label.split("[")[0]
        raise ConfigError(f"{suite.path}: models.{label}: {error}") from None
    _checked[key] = None
