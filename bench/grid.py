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
from pathlib import Path
from typing import Any

import torch

from bench import registry
from bench.config import (
    MAX_BATCH_MEMORY_ELEMENTS,
    MAX_MEMORY_ELEMENTS,
    MAX_MODEL_INTEGER,
    MAX_MODEL_PARAMETERS,
    MAX_MODEL_REPEATS,
    TRAIN_KEYS_HASHED_UNLESS_DEFAULT,
    TRAIN_KEYS_NOT_IN_RUN_ID,
    Component,
    ConfigError,
    Suite,
    TrainConfig,
    check_sequence_steps,
    read_suite,
    train_with,
)
from bench.labels import MAX_SWEPT_LABEL, label_problem, shown_label


def load_suite(name_or_path: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
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


def task_key(task_type: str, task_params: dict[str, Any]) -> str:
    """The key that, with the evaluation seed, decides a task's evaluation and generalisation sequences
    (`bench.evaluate`): its registry name and its parameters as the suite gives them. Training, `ntm-bench evaluate`
    and the protocol fingerprint (`bench.protocol`) all draw their sets under this one key."""
    return json.dumps([task_type, task_params], sort_keys=True, default=str)


def task_train(suite: Suite, label: str, base: TrainConfig | None = None, swept: set[str] | frozenset = frozenset()
               ) -> TrainConfig:
    """The training settings of task `label`'s runs: `base` (the suite's `train:`, or a sweep variant's) with the
    task's own `train:` keys on top, except the `swept` keys, which keep the sweep's value."""
    overrides = {k: v for k, v in suite.tasks[label].train.items() if k not in swept}
    return train_with(suite.train if base is None else base, overrides, f"tasks.{label}.train", suite.path)


#: the keys of a spec (and of its spec.json) that its run_id hashes, besides the training keys (`identity_of`)
IDENTITY_KEYS = ("task", "task_type", "task_params", "model", "model_type", "model_params", "seed", "eval_seed")


def identity_of(recorded: dict[str, Any]) -> dict[str, Any]:
    """What the run_id of a spec recorded as `recorded` (a `RunSpec.to_json`, as spec.json holds it) hashes: the
    `IDENTITY_KEYS` and the training keys that change the numbers (a key missing from `recorded` counts as None)."""
    train = dict(recorded.get("train") or {}) if isinstance(recorded.get("train"), dict) else recorded.get("train")
    if isinstance(train, dict):
        for key in TRAIN_KEYS_NOT_IN_RUN_ID:
            train.pop(key, None)
        for key, default in TRAIN_KEYS_HASHED_UNLESS_DEFAULT.items():
            if key in train and train[key] == default:
                train.pop(key)
    return {**{key: recorded.get(key) for key in IDENTITY_KEYS}, "train": train}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def run_id_of(identity: dict[str, Any]) -> str:
    """The run_id of an identity (`RunSpec.identity`, `identity_of`): 12 hex digits of its SHA-256."""
    return hashlib.sha256(_canonical(identity).encode()).hexdigest()[:12]


def _first_difference(theirs: Any, ours: Any, path: str = "") -> tuple[str, str, str]:
    """(dotted key, their value, our value) of the first place where two identities differ, values shortened."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for key in sorted({*theirs, *ours}, key=str):
            if _canonical(theirs.get(key)) != _canonical(ours.get(key)):
                return _first_difference(theirs.get(key), ours.get(key), f"{path}.{key}" if path else str(key))

    def short(value: Any) -> str:
        text = _canonical(value)
        return text if len(text) <= 40 else text[:37] + "..."

    return path or "the spec", short(theirs), short(ours)


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
        return identity_of({**{key: getattr(self, key) for key in IDENTITY_KEYS},
                            "train": dataclasses.asdict(self.train)})

    @property
    def run_id(self) -> str:
        return run_id_of(self.identity())

    def disagreement(self, recorded: dict[str, Any]) -> str | None:
        """Why a run folder's spec.json (`recorded`) is not this run's, in a few words naming the first key that
        differs and the run_id its content hashes to; None when its identity is this run's."""
        theirs, ours = identity_of(recorded), self.identity()
        if _canonical(theirs) == _canonical(ours):
            return None
        where = _first_difference(theirs, ours)
        return (f"{where[0]} is {where[1]} there but {where[2]} in this run, so its content hashes to run_id "
                f"{run_id_of(theirs)}, not {self.run_id}")

    def to_json(self) -> dict[str, Any]:
        return {**self.identity(), "suite": self.suite, "device": self.device, "run_id": self.run_id,
                "train": dataclasses.asdict(self.train), "data_seed": self.data_seed, "init_seed": self.init_seed}


def _value_label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def model_variants(suite: Suite) -> list[tuple[Component, TrainConfig]]:
    """Each model label crossed with the sweep values that apply to it, named ``label[key=value,...]``."""
    variants = []
    # every swept training value is typed and checked like a `train:` key, once, before any variant is built
    for key, values in suite.sweep.items():
        parts = key.split(".")
        if parts[0] == "train" and len(parts) == 2 and parts[1] in {f.name for f in dataclasses.fields(TrainConfig)} \
                and parts[1] != "clip":
            for value in values:
                train_with(suite.train, {parts[1]: value}, "sweep.train", suite.path)
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
            train = train_with(suite.train, train_changes, "sweep.train", suite.path)
            variant_label = f"{label}[{','.join(names)}]"
            problem = label_problem(variant_label, MAX_SWEPT_LABEL)
            if problem:
                raise ConfigError(f"{suite.path}: sweep: the label it gives models.{label}, "
                                  f"{shown_label(variant_label)}: {problem}")
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
            train = task_train(suite, task.label, variant_train, swept)
            _check_sizes(suite, task.label, built_task, train)
            model = Component(variant.label, variant.type, variant.params_for(task.label))
            _check_model(suite, model, built_task, train.batch_size)
            _check_steps(suite, model, task.label, built_task)
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


def _check_sizes(suite: Suite, task_label: str, task, train: TrainConfig) -> None:
    """Refuse a task whose longest batch (sequences x time steps) is beyond `MAX_BATCH_ELEMENTS`: the training
    batch at the longest training size, the evaluation set, and each generalisation test size."""
    try:
        longest_train = task.max_train_steps()
        longest_test = max((task.steps_for(size) for size in task.test_sizes), default=0)
    except (ValueError, TypeError, NotImplementedError):
        return  # the task's own checks report a bad size
    batches = [("train.batch_size", train.batch_size, longest_train, "the longest training sequence"),
               ("train.eval_sequences", train.eval_sequences, longest_train, "the longest training sequence"),
               ("train.generalization_sequences", train.generalization_sequences, longest_test,
                "the longest test sequence")]
    for key, sequences, steps, what in batches:
        check_sequence_steps(f"{suite.path}: tasks.{task_label}: {key}", sequences, steps, what)
    for name in ("input_size", "output_size"):  # the widths of the model built for it
        if getattr(task, name) > MAX_MODEL_INTEGER:
            raise ConfigError(f"{suite.path}: tasks.{task_label}: its {name} {getattr(task, name)} is more than the "
                              f"limit {MAX_MODEL_INTEGER}")
    contexts = getattr(task, "contexts", None)  # N-Grams draws a table of this many probabilities per sequence
    most = max(train.batch_size, train.eval_sequences, train.generalization_sequences)
    if type(contexts) is int and contexts * most > MAX_BATCH_MEMORY_ELEMENTS:
        raise ConfigError(f"{suite.path}: tasks.{task_label}: {contexts} contexts x {most} sequences = "
                          f"{contexts * most} table entries, more than the limit {MAX_BATCH_MEMORY_ELEMENTS}")


def _check_steps(suite: Suite, model: Component, task_label: str, task) -> None:
    """Refuse a model that accepts at most `max_steps(**params)` time steps (a class attribute; the transformer
    with learned positions) when the task's longest training, test or 2x-sample sequence is longer: it would fail
    only after training, when it is evaluated there."""
    max_steps = getattr(registry.model_class(model.type), "max_steps", None)
    limit = max_steps(**model.params) if callable(max_steps) else None
    if limit is None:
        return
    sizes = [*task.test_sizes, tuple(2 * high for _, high in (task.train_sizes[p] for p in task.size_parts))]
    longest = task.max_train_steps()
    for size in sizes:
        try:
            longest = max(longest, task.steps_for(task.check_size(size)))
        except ValueError:
            continue  # a 2x size the task cannot draw is not sampled either
    if longest > limit:
        raise ConfigError(f"{suite.path}: models.{model.label.split('[')[0]}: accepts at most {limit} time steps "
                          f"but tasks.{task_label} has sequences of {longest}; raise the limit (a transformer's "
                          "max_positions)")


def model_size_problem(params: dict[str, Any], batch_size: int = 1) -> str | None:
    """The first of a model's parameters beyond the suite limits (`bench.config`), found without building anything:
    an integer size, or its memory (per sequence, and times `batch_size`); None when all are within them. Sizes beyond
    these would overflow even the meta device's size arithmetic, or take minutes to build."""
    for name, value in params.items():
        if type(value) is not int:
            continue
        most = MAX_MODEL_REPEATS if name.endswith(("layers", "heads")) else MAX_MODEL_INTEGER
        if value > most:
            return f"{name} must be <= {most}, got {value}"
    locations, width = params.get("memory_locations"), params.get("memory_width")
    if type(locations) is int and type(width) is int:  # the model's own checks report other types
        if locations * width > MAX_MEMORY_ELEMENTS:
            return f"memory_locations x memory_width = {locations * width}, more than the limit {MAX_MEMORY_ELEMENTS}"
        if batch_size * locations * width > MAX_BATCH_MEMORY_ELEMENTS:
            return (f"train.batch_size x memory_locations x memory_width = {batch_size * locations * width}, more "
                    f"than the limit {MAX_BATCH_MEMORY_ELEMENTS}")
    return None


def meta_model(model_type: str, input_size: int, output_size: int,
               params: dict[str, Any]) -> torch.nn.Module | None:
    """The model built on the meta device: its parameters' and state_dict's shapes without allocating them; None for
    a model that cannot be built there. The model's own checks raise ValueError or TypeError, as in a real build."""
    try:
        with torch.device("meta"):
            return registry.build_model(model_type, input_size, output_size, **params)
    except (NotImplementedError, RuntimeError):
        return None


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


_checked: dict[str, None] = {}


def _check_model(suite: Suite, model: Component, task, batch_size: int = 1) -> None:
    label = model.label.split("[")[0]
    problem = model_size_problem(model.params, batch_size)
    if problem:
        raise ConfigError(f"{suite.path}: models.{label}: {problem}")
    key = json.dumps([model.type, model.params, task.input_size, task.output_size], sort_keys=True, default=str)
    if key in _checked:
        return
    try:
        built = meta_model(model.type, task.input_size, task.output_size, model.params)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{suite.path}: models.{label}: {error}") from None
    count = parameter_count(built) if built is not None else None
    if count is not None and count > MAX_MODEL_PARAMETERS:
        raise ConfigError(f"{suite.path}: models.{label}: {count} parameters, more than the limit "
                          f"{MAX_MODEL_PARAMETERS}")
    if built is None:  # the model cannot be built on the meta device; a real build checks its parameters
        try:
            real = registry.build_model(model.type, task.input_size, task.output_size, **model.params)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{suite.path}: models.{label}: {error}") from None
        del real
    _checked[key] = None
