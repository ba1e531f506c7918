"""Suite files: YAML -> frozen dataclasses, strictly checked before anything trains.

A suite file may `include:` a base file (deep merge, the including file wins); `suites/_defaults.yaml` holds the
paper protocol. Every error is a `ConfigError` whose one-line message names the file, the key path and what is
allowed. The README's suite reference is generated from the `help` metadata of the dataclass fields below
(`python -m bench keys`), and a test keeps the two in sync.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import registry
from bench.bounded import (  # noqa: F401 - StrictLoader and load_yaml: callers may import them from here as before
    DuplicateKeyError,
    RefusedYAML,
    StrictLoader,
    UnreadableFile,
    load_yaml,
    read_yaml,
)
from bench.errors import ConfigError  # noqa: F401 - raised here; callers may import it from here as before
from bench.labels import label_problem, shown_label


def _suites_dir() -> Path:
    """The suites that ship with ntm-bench: ``bench/suites`` in an installed wheel (package data), ``suites/`` next to
    ``bench/`` in a checkout or an editable install."""
    here = Path(__file__).resolve().parent
    packaged = here / "suites"
    return packaged if packaged.is_dir() else here.parent / "suites"


SUITES_DIR = _suites_dir()
DEFAULTS_FILE = "_defaults.yaml"

OPTIMIZERS = ("adam", "rmsprop")
CLIP_KINDS = ("norm", "value", "none")
LENGTH_SAMPLING = ("per_batch", "per_example")
COMPILE_MODES = ("auto", "on", "off", "cudagraphs")

# Limits that a suite must stay within, checked before anything trains, so that a typo (a batch of 10^7, a
# hundred million seeds) fails with one line instead of allocating memory for minutes. They are far above every
# suite in suites/; the README's "Limits" paragraph lists them.
SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: a chain of `include:`s; the suite file itself, its size, nesting and aliases are bounded by bench/bounded.py
MAX_INCLUDES = 20
MAX_SEEDS = 1000
MAX_SEED_VALUE = 2**31 - 1
#: upper bounds of training keys (the lower bound of each is 1, see _check_train)
TRAIN_MAXIMA = {"batch_size": 65536, "steps": 10**8, "eval_sequences": 10**6, "generalization_sequences": 10**6,
                "parallel_seeds": MAX_SEEDS}
#: sequences x time steps of one batch (training, evaluation or a generalisation test size)
MAX_BATCH_ELEMENTS = 10**8
#: trainable parameters of one model
MAX_MODEL_PARAMETERS = 10**9
#: any integer model parameter (a width, a number of units or slots), and the task's input and output widths
MAX_MODEL_INTEGER = 10**7
#: a model's layer or head counts (parameters whose names end in `layers` or `heads`)
MAX_MODEL_REPEATS = 1000
#: memory_locations x memory_width of one memory model, per sequence, and times the batch size
MAX_MEMORY_ELEMENTS = 10**8
MAX_BATCH_MEMORY_ELEMENTS = 10**9


def check_sequence_steps(where: str, sequences: int, steps: int, what: str) -> None:
    """Refuse `sequences` sequences of `steps` time steps (`what`) as one set, beyond `MAX_BATCH_ELEMENTS`: a
    suite's training batch, evaluation set and generalisation test sizes (`bench.grid`) and `ntm-bench evaluate`'s
    sizes (`bench.trained`); the message starts with `where`."""
    if sequences * steps > MAX_BATCH_ELEMENTS:
        raise ConfigError(f"{where} {sequences} x {what} ({steps} steps) = {sequences * steps} sequence steps, more "
                          f"than the limit {MAX_BATCH_ELEMENTS}")


def _help(text: str, choices: tuple | None = None) -> dict:
    return {"help": text, "choices": choices}


@dataclass(frozen=True)
class ClipConfig:
    kind: str = field(default="norm", metadata=_help("gradient clipping: global norm, elementwise value, or none",
                                                     CLIP_KINDS))
    value: float = field(default=50.0, metadata=_help("the norm limit (norm) or the elementwise bound (value)"))


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = field(default="adam", metadata=_help("optimizer", OPTIMIZERS))
    lr: float = field(default=1e-3, metadata=_help("learning rate"))
    alpha: float = field(default=0.95, metadata=_help("rmsprop only: smoothing constant"))
    momentum: float = field(default=0.9, metadata=_help("rmsprop only: momentum"))
    eps: float = field(default=1e-4, metadata=_help("rmsprop only: epsilon (adam keeps torch's 1e-8)"))
    centered: bool = field(default=True, metadata=_help("rmsprop only: centered RMSProp (Graves 2013)"))
    batch_size: int = field(default=32, metadata=_help("sequences per optimizer step"))
    steps: int = field(default=31250, metadata=_help("optimizer steps per run (the budget)"))
    clip: ClipConfig = field(default_factory=ClipConfig, metadata=_help("gradient clipping, applied per run"))
    eval_every: int = field(default=200, metadata=_help("evaluate on the fixed evaluation set every N steps"))
    eval_sequences: int = field(default=640, metadata=_help("size of the fixed evaluation set"))
    generalization_sequences: int = field(default=192, metadata=_help("sequences per generalisation test size"))
    stop_at_convergence: bool = field(default=False, metadata=_help(
        "end a run once it has converged (see stop_patience)"))
    stop_patience: int = field(default=1, metadata=_help(
        "with stop_at_convergence: end a run only once this many consecutive evaluations meet the convergence "
        "rule (1: at the first), so an algorithm can settle before training stops"))
    length_sampling: str = field(default="per_batch", metadata=_help(
        "one training size per batch, or one per example (padded at the end)", LENGTH_SAMPLING))
    checkpoint_every: int = field(default=1000, metadata=_help("write a resumable checkpoint every N steps"))
    max_nonfinite: int = field(default=100, metadata=_help(
        "consecutive non-finite updates (skipped) after which a run ends as diverged"))
    parallel_seeds: int | str = field(default="auto", metadata=_help(
        "train this many seeds of one configuration together as one batched computation; auto: every seed on "
        "a GPU, on a CPU what measures fastest"))
    compile: str = field(default="auto", metadata=_help(
        "torch.compile the model's step function; auto: on for runs long enough to repay the compile time; "
        "cudagraphs: on, and on CUDA also replayed as CUDA graphs (mode reduce-overhead)",
        COMPILE_MODES))


#: training keys that do not change the numbers, so they stay out of the run_id
TRAIN_KEYS_NOT_IN_RUN_ID = ("checkpoint_every", "parallel_seeds", "compile")
#: training keys added after results were published: they enter the run_id only when set away from this default,
#: so the run folders of suites that never set them keep their ids
TRAIN_KEYS_HASHED_UNLESS_DEFAULT = {"stop_patience": 1}


@dataclass(frozen=True)
class ResourcesConfig:
    """What one Ray task (a run, or a group of seeds trained together) reserves on a Ray cluster (the ray
    executor); not part of the run_id."""

    num_cpus: float = field(default=1.0, metadata=_help(
        "ray executor: CPUs reserved per task, a run or a group of parallel_seeds seeds (fractions allowed up to 1)"))
    num_gpus: float = field(default=0.0, metadata=_help(
        "ray executor: GPUs reserved per task, a run or a group of seeds; 0.25 lets four tasks share a GPU; 0 trains "
        "on CPU"))


@dataclass(frozen=True)
class Component:
    """A task or model entry of a suite: its label, the registry name it builds, and its parameters."""

    label: str
    type: str
    params: dict[str, Any]
    #: models only: task label -> parameters that replace `params` for that task (e.g. Graves' per-task sizes)
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: tasks only: training keys that replace the suite's `train:` for this task's runs (e.g. a shorter budget)
    train: dict[str, Any] = field(default_factory=dict)
    #: tasks only: a line the report shows with the task's results (e.g. why a short budget shows little)
    note: str = ""

    def params_for(self, task_label: str) -> dict[str, Any]:
        return {**self.params, **self.per_task.get(task_label, {})}


@dataclass(frozen=True)
class Suite:
    name: str = field(default="", metadata=_help("suite name; defaults to the file's stem"))
    description: str = field(default="", metadata=_help("one line shown in the report"))
    include: str | None = field(default=None, metadata=_help("a base YAML file to deep-merge under this one"))
    seeds: tuple[int, ...] = field(default=(1,), metadata=_help("a count N (seeds 1..N) or an explicit list"))
    eval_seed: int = field(default=20141020, metadata=_help(
        "seed of the evaluation and generalisation sets, shared by every run of the suite"))
    device: str = field(default="auto", metadata=_help(
        "where runs train: auto (CUDA when present), cpu, cuda or cuda:N"))
    train: TrainConfig = field(default_factory=TrainConfig, metadata=_help(
        "the training protocol (docs/TASKS.md#training-protocol)"))
    tasks: dict[str, Component] = field(default_factory=dict, metadata=_help(
        "label -> task parameters; `task:` names the registry entry (defaults to the label); `train: {...}` "
        "overrides training keys for this task's runs; `note: ...` is one line the report shows with its results"))
    models: dict[str, Component] = field(default_factory=dict, metadata=_help(
        "label -> model parameters; `model:` names the registry entry (defaults to the label); "
        "`per_task: {TASK_LABEL: {...}}` overrides parameters for one task"))
    sweep: dict[str, tuple] = field(default_factory=dict, metadata=_help(
        "key -> list of values; `train.KEY` or a model parameter name (all models that take it) or "
        "`models.LABEL.KEY`; each value becomes a model variant named after it"))
    resources: ResourcesConfig = field(default_factory=ResourcesConfig, metadata=_help(
        "ray executor: what each task (a run, or a group of parallel_seeds seeds) reserves on the cluster"))
    max_retries: int = field(default=3, metadata=_help(
        "ray executor: times Ray reruns a task whose worker died; each retry resumes each of its runs from that run's "
        "last checkpoint"))
    checkpoint_dir: str | None = field(default=None, metadata=_help(
        "ray executor: where workers train and keep checkpoints (default: the suite's output folder's runs/); "
        "must be shared storage for a retry on another node to resume"))
    path: str = ""  # the file it came from (not a YAML key)
    resolved: dict[str, Any] = field(default_factory=dict)  # the merged YAML, for the report's appendix


YAML_FIELDS = {"Suite": [f.name for f in dataclasses.fields(Suite) if f.metadata],
               "TrainConfig": [f.name for f in dataclasses.fields(TrainConfig)],
               "ClipConfig": [f.name for f in dataclasses.fields(ClipConfig)],
               "ResourcesConfig": [f.name for f in dataclasses.fields(ResourcesConfig)]}


# ---- loading ----------------------------------------------------------------------------------------------------

def resolve_suite_path(name_or_path: str) -> Path:
    """A suite name in suites/ (``quick``) or a path to any YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.exists():
            raise ConfigError(f"{candidate}: no such suite file")
        return candidate
    path = SUITES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = available_suites()
        hint = difflib.get_close_matches(name_or_path, known, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{name_or_path}: no suite of that name{extra}; known suites: {', '.join(known)}")
    return path


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def _read_yaml(path: Path, included_from: Path | None = None) -> dict:
    """The mapping in suite file `path`, read within `bench.bounded`'s limits. A file that `included_from` includes
    is blamed on both (``a.yaml: include: b.yaml: ...``) and must look like a suite: a mapping of suite keys, else
    it is "not a suite file", and nothing of its content is quoted."""
    where = f"{included_from}: include: {path}" if included_from else str(path)
    try:
        data = read_yaml(path)
    except FileNotFoundError:
        raise ConfigError(f"{where}: does not exist") from None
    except UnreadableFile as error:
        duplicate = error.__cause__
        if included_from and isinstance(duplicate, DuplicateKeyError):  # the key would quote the included file
            raise ConfigError(f"{where}: line {duplicate.line}: a key given twice (first at line {duplicate.first})") \
                from None
        raise ConfigError(f"{where}: {error.reason}") from None
    except OSError as error:
        raise ConfigError(f"{where}: cannot be read ({error.strerror or type(error).__name__})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        if included_from:
            raise ConfigError(f"{where}: not a suite file (its top level is a {type(data).__name__}, not a mapping "
                              "of keys)")
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    if included_from:
        _check_included_keys(data, where)
    return data


def _check_included_keys(data: dict, where: str) -> None:
    """An included file's top-level keys must be suite keys. An unknown key is named only when it is close to a
    suite key (a typo); otherwise the file is not a suite, and its keys (the first line of a system file may read
    as one) are not quoted."""
    known = YAML_FIELDS["Suite"]
    for key in data:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1) if isinstance(key, str) and len(key) <= 64 else []
        if close:
            raise ConfigError(f"{where}: {key}: unknown key (did you mean {close[0]!r}?)")
        raise ConfigError(f"{where}: not a suite file (a top-level key is not a suite key)")


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: `override` merged into `base`, recursing into mappings; `override` wins."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _load_merged(path: Path, seen: tuple[Path, ...] = (), included_from: Path | None = None) -> dict:
    if path.resolve() in seen:
        raise ConfigError(f"{path}: include: circular include ({' -> '.join(str(p) for p in seen)})")
    if len(seen) > MAX_INCLUDES:
        raise ConfigError(f"{included_from}: include: {path}: includes more than {MAX_INCLUDES} files deep")
    data = _read_yaml(path, included_from)
    return _with_include(data, path, seen)


def _with_include(data: dict, path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """`data` (read from `path`) deep-merged over the file it includes, if any."""
    include = data.get("include")
    if include is None:
        return data
    if not isinstance(include, str):
        raise ConfigError(f"{path}: include: must be a file name (string), got {include!r}")
    base = _load_merged(_include_path(path, include), (*seen, path.resolve()), path)
    return deep_merge(base, data)


def _include_path(path: Path, include: str) -> Path:
    """The file that `include` (in suite file `path`) names: a path relative to `path`'s folder, or, when no such
    file exists, a packaged suite by file name or by suite name (``_defaults.yaml``, ``quick``), from any folder."""
    named = Path(include)
    local = named if named.is_absolute() else path.parent / named
    if local.exists():
        return local
    if len(named.parts) == 1:
        for packaged in (SUITES_DIR / include, SUITES_DIR / f"{include}.yaml"):
            if packaged.is_file():
                return packaged
    raise ConfigError(f"{path}: include: included file {local} does not exist, and {include!r} is not a suite that "
                      f"ships with ntm-bench ({', '.join(['_defaults.yaml', *available_suites()])})")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=3e-4`` -> (["train", "lr"], 0.0003); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY.PATH=VALUE, e.g. --set train.lr=3e-4")
    key, value = text.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"--set {text}: empty key")
    try:
        parsed = load_yaml(value) if value.strip() else ""
    except RefusedYAML as error:
        raise ConfigError(f"--set {text}: {str(error).split(': ', 1)[1]}") from None
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", parsed):
        parsed = float(parsed)  # YAML 1.1 reads 3e-4 as a string
    return keys, parsed


#: how a suite given as a Python dict is named in error messages; its `include:` is found from the current folder
DICT_SOURCE = "<dict>"


def read_suite(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """Load, merge, override and validate a suite's keys and types. Raises `ConfigError` with a one-line message.
    `source` is a suite name, a path to a YAML file, or a dict of the same keys (which must then have a `name`).
    `bench.grid.load_suite` does this and then expands the suite, so that a bad value fails before training."""
    if isinstance(source, dict):
        path = Path(DICT_SOURCE)
        if not isinstance(source.get("name"), str):
            raise ConfigError(f"{DICT_SOURCE}: name: a suite given as a dict needs a name (it names the output "
                              "folder), e.g. {'name': 'my_suite', ...}")
        data = _with_include(copy.deepcopy(source), path)
    else:
        path = resolve_suite_path(str(source))
        data = _load_merged(path)
    described = False  # whether --set gives the description itself
    for text in overrides:
        keys, value = parse_override(text)
        described = described or keys[0] == "description"
        if keys[0] == "include":  # the include is read before any --set applies, so it could not take effect
            raise ConfigError(f"--set {text}: include: cannot be set with --set; edit the suite file")
        target = data
        for key in keys[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[keys[-1]] = value
    if overrides and not described and isinstance(data.get("description", ""), str):
        # the suite's description may no longer say what runs (other models, seeds, budget): the report says what
        # changed, unless the description itself was set
        text = f"{data.get('description', '').rstrip()} Changed from the suite: {'; '.join(overrides)}."
        data["description"] = text.lstrip()
    return build_suite(data, path)


# ---- validation -------------------------------------------------------------------------------------------------

def _unknown(where: str, key: str, known) -> ConfigError:
    known = list(known)
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    path = f"{where}.{key}" if where else str(key)
    return ConfigError(f"{path}: unknown key{hint}; known keys: {', '.join(known)}")


def _typed(where: str, value: Any, kind: type, choices: tuple | None = None) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: must be a number, got {value!r}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, got {value!r}")
        if choices and value not in choices:
            raise ConfigError(f"{where}: {value!r} is not allowed; allowed: {', '.join(choices)}")
        return value
    raise TypeError(kind)  # pragma: no cover


_FIELD_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _build_dataclass(cls, data: Any, where: str, file: str, only_given: bool = False):
    """`cls` built from the mapping `data`, each value typed; with `only_given`, the typed values as a dict."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {where}: must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{file}: " + str(_unknown(where, key, fields)))
        f = fields[key]
        if f.type == "ClipConfig":
            values[key] = _build_dataclass(ClipConfig, value, f"{where}.{key}", file)
        elif f.type == "ResourcesConfig":
            values[key] = _build_dataclass(ResourcesConfig, value, f"{where}.{key}", file)
        elif key == "parallel_seeds":
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{file}: {where}.{key}: must be auto or an integer >= 1, got {value!r}")
            values[key] = value
        elif key == "compile" and isinstance(value, bool):
            values[key] = "on" if value else "off"  # YAML 1.1 reads on/off as booleans
        else:
            try:
                values[key] = _typed(f"{where}.{key}", value, _FIELD_TYPES[f.type], f.metadata.get("choices"))
            except ConfigError as error:
                raise ConfigError(f"{file}: {error}") from None
    return values if only_given else cls(**values)


def _check_train(train: TrainConfig, file: str, where: str = "train", keys=None) -> None:
    """The ranges of the training keys; `keys` limits the check to those keys (the others were checked already)."""
    positive = ("lr", "batch_size", "steps", "eval_every", "eval_sequences", "generalization_sequences",
                "checkpoint_every", "max_nonfinite", "stop_patience")
    for key in positive:
        if keys is not None and key not in keys:
            continue
        value = getattr(train, key)
        if value <= 0:
            raise ConfigError(f"{file}: {where}.{key}: must be > 0, got {value}")
    for key, most in TRAIN_MAXIMA.items():
        if keys is not None and key not in keys:
            continue
        value = getattr(train, key)
        if isinstance(value, int) and value > most:
            raise ConfigError(f"{file}: {where}.{key}: must be <= {most}, got {value}")
    if (keys is None or "clip" in keys) and train.clip.kind != "none" and train.clip.value <= 0:
        raise ConfigError(f"{file}: {where}.clip.value: must be > 0, got {train.clip.value}")


def train_with(base: TrainConfig, changes: dict[str, Any], where: str, file: str) -> TrainConfig:
    """`base` with `changes` (raw YAML values) applied, each typed and range-checked exactly like a key of the
    suite's `train:`. This is the one path every training value takes, wherever it comes from: the file, an
    include, `--set`, a sweep (`where` = ``sweep.train``) or a task's `train:` (``tasks.LABEL.train``); errors name
    `file` and ``where.KEY``."""
    if not changes:
        return base
    typed = _build_dataclass(TrainConfig, changes, where, file, only_given=True)
    train = dataclasses.replace(base, **typed)
    _check_train(train, file, where, keys=set(typed))
    return train


def _check_resources(resources: ResourcesConfig, file: str) -> None:
    for key in ("num_cpus", "num_gpus"):
        value = getattr(resources, key)
        if value < 0:
            raise ConfigError(f"{file}: resources.{key}: must be >= 0, got {value:g}")
        if value > 1 and not value.is_integer():  # Ray's rule: only quantities up to 1 may be fractional
            raise ConfigError(f"{file}: resources.{key}: above 1 it must be a whole number, got {value:g}")


def _parse_seeds(value: Any, file: str) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise ConfigError(f"{file}: seeds: must be a count or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{file}: seeds: a count must be >= 1, got {value}")
        if value > MAX_SEEDS:
            raise ConfigError(f"{file}: seeds: a count must be <= {MAX_SEEDS}, got {value}")
        return tuple(range(1, value + 1))
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{file}: seeds: the list is empty; give a count or at least one seed")
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            raise ConfigError(f"{file}: seeds: every seed must be an integer, got {value!r}")
        if len(value) > MAX_SEEDS:
            raise ConfigError(f"{file}: seeds: at most {MAX_SEEDS} seeds, got {len(value)}")
        outside = [s for s in value if not 0 <= s <= MAX_SEED_VALUE]
        if outside:
            raise ConfigError(f"{file}: seeds: every seed must be within 0..{MAX_SEED_VALUE}, got {outside[0]}")
        if len(set(value)) != len(value):
            raise ConfigError(f"{file}: seeds: seeds must be distinct, got {value!r}")
        return tuple(value)
    raise ConfigError(f"{file}: seeds: must be a count or a list of integers, got {value!r}")


def _components(section: str, value: Any, file: str, type_key: str) -> dict[str, Component]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{file}: {section}: must be a non-empty mapping of label -> parameters")
    lookup = registry.task_class if section == "tasks" else registry.model_class
    known_params = registry.task_parameters if section == "tasks" else registry.model_parameters
    components = {}
    for label, params in value.items():
        problem = label_problem(str(label))
        if problem:
            raise ConfigError(f"{file}: {section}.{shown_label(str(label))}: {problem}")
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise ConfigError(f"{file}: {section}.{label}: must be a mapping of parameters, got {params!r}")
        params = dict(params)
        kind = params.pop(type_key, label)
        try:
            lookup(kind)
        except registry.RegistryError as error:
            raise ConfigError(f"{file}: {section}.{label}.{type_key}: {error}") from None
        per_task = params.pop("per_task", {}) if section == "models" else {}
        train = _task_train(params.pop("train", None), f"{section}.{label}.train", file) if section == "tasks" \
            else {}
        note = _task_note(params.pop("note", ""), f"{section}.{label}.note", file) if section == "tasks" else ""
        allowed = known_params(kind)
        for key in params:
            if key not in allowed:
                extra = ["per_task"] if section == "models" else ["train", "note"]
                raise ConfigError(f"{file}: " + str(_unknown(f"{section}.{label}", key, [*allowed, *extra])))
        if not isinstance(per_task, dict) or not all(isinstance(v, dict) for v in per_task.values()):
            raise ConfigError(f"{file}: {section}.{label}.per_task: must map task labels to parameter mappings")
        for task_label, overrides in per_task.items():
            for key in overrides:
                if key not in allowed:
                    raise ConfigError(f"{file}: " + str(_unknown(f"{section}.{label}.per_task.{task_label}", key,
                                                                 allowed)))
        components[str(label)] = Component(str(label), kind, params, per_task, train, note)
    return components


#: the longest task note a suite may give (it is one line of the report)
MAX_NOTE_CHARS = 600


def _task_note(value: Any, where: str, file: str) -> str:
    """A task's `note:`, one line of plain text shown with its results."""
    if not isinstance(value, str) or "\n" in value.strip() or len(value) > MAX_NOTE_CHARS:
        raise ConfigError(f"{file}: {where}: must be one line of text of at most {MAX_NOTE_CHARS} characters, "
                          f"got {str(value)[:60]!r}")
    return value.strip()


def _task_train(value: Any, where: str, file: str) -> dict[str, Any]:
    """A task's `train:` overrides, checked and typed like the suite's `train:` (only the keys given)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{file}: {where}: must be a mapping, got {value!r}")
    train_with(TrainConfig(), value, where, file)  # checked here, and again on top of each run's training keys
    return dict(value)


def _check_values(value: Any, where: str, file: str, seen: set[int] | None = None) -> None:
    """Every number anywhere in the suite must be finite (YAML reads .nan and .inf as floats), and every key a
    string: a label or key of another type (a tuple in a dict suite, a date in YAML) could not be written to
    suite.json, so it is refused here, before anything is written."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{file}: {where}: must be a finite number, got {value!r}")
    if not isinstance(value, dict | list | tuple):
        return
    seen = set() if seen is None else seen
    if id(value) in seen:  # YAML aliases share one object; visit it once, so nested aliases cannot explode
        return
    seen.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                shown = repr(key) if len(repr(key)) <= 60 else f"{repr(key)[:57]}..."
                raise ConfigError(f"{file}: {where or 'top level'}: a key or label must be a string, got "
                                  f"{type(key).__name__} {shown}")
            _check_values(item, f"{where}.{key}" if where else key, file, seen)
    else:
        for item in value:
            _check_values(item, where, file, seen)


def build_suite(data: dict, path: Path) -> Suite:
    """Validate merged YAML `data` from `path` into a `Suite`, building every task and model once to check them."""
    file = str(path)
    known = YAML_FIELDS["Suite"]
    for key in data:
        if key not in known:
            raise ConfigError(f"{file}: " + str(_unknown("", key, known)))
    _check_values(data, "", file)
    train = _build_dataclass(TrainConfig, data.get("train", {}) or {}, "train", file)
    _check_train(train, file)
    name = data.get("name", path.stem)
    for key in ("name", "description", "device"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{file}: {key}: must be a string, got {data[key]!r}")
    # the name becomes a folder (reports/NAME), so it must be a plain file name
    if "name" in data and (not SUITE_NAME.fullmatch(name) or ".." in name):
        raise ConfigError(f"{file}: name: must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter "
                          f"or digit and without '..', got {name!r}")
    if name.strip(".") == "":  # a file named `...yaml` has the stem '..'
        raise ConfigError(f"{file}: name: the file's stem {name!r} cannot name the output folder; set name:")
    device = data.get("device", "auto")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise ConfigError(f"{file}: device: {device!r} is not allowed; allowed: auto, cpu, cuda, cuda:N")
    eval_seed = data.get("eval_seed", Suite.eval_seed)
    _typed(f"{file}: eval_seed", eval_seed, int)
    if not 0 <= eval_seed <= MAX_SEED_VALUE:
        raise ConfigError(f"{file}: eval_seed: must be within 0..{MAX_SEED_VALUE}, got {eval_seed}")
    if "tasks" not in data:
        raise ConfigError(f"{file}: tasks: missing; a suite needs at least one task")
    if "models" not in data:
        raise ConfigError(f"{file}: models: missing; a suite needs at least one model")
    tasks = _components("tasks", data["tasks"], file, "task")
    models = _components("models", data["models"], file, "model")
    for model in models.values():
        for task_label in model.per_task:
            if task_label not in tasks:
                raise ConfigError(f"{file}: models.{model.label}.per_task.{task_label}: no task labelled "
                                  f"{task_label!r}; tasks: {', '.join(tasks)}")
    resources = _build_dataclass(ResourcesConfig, data.get("resources", {}) or {}, "resources", file)
    _check_resources(resources, file)
    max_retries = data.get("max_retries", Suite.max_retries)
    _typed(f"{file}: max_retries", max_retries, int)
    if max_retries < 0:
        raise ConfigError(f"{file}: max_retries: must be >= 0, got {max_retries}")
    checkpoint_dir = data.get("checkpoint_dir")
    if checkpoint_dir is not None and (not isinstance(checkpoint_dir, str) or not checkpoint_dir.strip()):
        raise ConfigError(f"{file}: checkpoint_dir: must be a folder path (string), got {checkpoint_dir!r}")
    sweep = data.get("sweep", {}) or {}
    if not isinstance(sweep, dict):
        raise ConfigError(f"{file}: sweep: must be a mapping of key -> list of values")
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{file}: sweep.{key}: must be a non-empty list of values")
    suite = Suite(name=name, description=data.get("description", ""), include=data.get("include"),
                  seeds=_parse_seeds(data.get("seeds", 1), file), eval_seed=eval_seed, device=device, train=train,
                  tasks=tasks, models=models, sweep={k: tuple(v) for k, v in sweep.items()}, resources=resources,
                  max_retries=max_retries, checkpoint_dir=checkpoint_dir, path=file, resolved=data)
    return suite


def train_from_dict(data: dict) -> TrainConfig:
    """Rebuild a `TrainConfig` from `dataclasses.asdict` output (as stored in spec.json)."""
    data = dict(data)
    data["clip"] = ClipConfig(**data["clip"])
    return TrainConfig(**data)


def reference_rows() -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every suite key, for the README's suite reference."""
    rows = []
    for f in dataclasses.fields(Suite):
        if not f.metadata:
            continue
        default = f.default if f.default is not dataclasses.MISSING else ""
        if f.name == "train":
            rows.append(("train", "mapping", "", f.metadata["help"]))
            for t in dataclasses.fields(TrainConfig):
                if t.name == "clip":
                    rows.append(("train.clip", "mapping", "", t.metadata["help"]))
                    for c in dataclasses.fields(ClipConfig):
                        rows.append((f"train.clip.{c.name}", c.type, repr(c.default), _describe(c)))
                    continue
                rows.append((f"train.{t.name}", t.type, repr(t.default), _describe(t)))
            continue
        if f.name == "resources":
            rows.append(("resources", "mapping", "", f.metadata["help"]))
            for r in dataclasses.fields(ResourcesConfig):
                rows.append((f"resources.{r.name}", r.type, repr(r.default), _describe(r)))
            continue
        type_name = {"tasks": "mapping", "models": "mapping", "sweep": "mapping",
                     "seeds": "int or list"}.get(f.name, str(f.type).replace(" | None", ""))
        shown = {"tasks": "", "models": "", "sweep": "", "seeds": "1"}.get(f.name, repr(default))
        rows.append((f.name, type_name, shown,
                     _describe(f)))
    return rows


def _describe(f) -> str:
    choices = f.metadata.get("choices")
    return f.metadata["help"] + (f" ({' / '.join(choices)})" if choices else "")
