"""Registries of tasks and models: plain dicts, plus builders that check parameters.

Registration flows one way: the packages `tasks` and `models` import nothing from `bench`; each lists its built-ins in
one dict (``tasks.TASKS``, ``models.MODELS``), which `load_all` merges into `TASKS` and `MODELS` here. Outside packages
register with ``@register_task("name")`` / ``@register_model("name")``, through the entry-point group
``ntm_bench.models`` (each entry point names a module to import) or ``python -m bench run --plugin module.path``.

A class's parameters are the fields of its ``config_class`` dataclass where it has one (every built-in model), else
the keyword parameters of its ``__init__``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from models import MODELS as BUILTIN_MODELS
from tasks import TASKS as BUILTIN_TASKS

TASKS: dict[str, type] = {}
MODELS: dict[str, type] = {}
ENTRY_POINT_GROUP = "ntm_bench.models"

_loaded = False


class RegistryError(ValueError):
    """An unknown name or parameter; the message lists what is allowed."""


def register_task(name: str) -> Callable[[type], type]:
    def decorator(cls: type) -> type:
        if name in TASKS and TASKS[name] is not cls:
            raise RegistryError(f"task {name!r} is already registered by {TASKS[name].__module__}")
        TASKS[name] = cls
        return cls

    return decorator


def register_model(name: str) -> Callable[[type], type]:
    def decorator(cls: type) -> type:
        if name in MODELS and MODELS[name] is not cls:
            raise RegistryError(f"model {name!r} is already registered by {MODELS[name].__module__}")
        MODELS[name] = cls
        return cls

    return decorator


def load_all() -> None:
    """Merge the built-in tasks and models into the registries, then import every module named by the
    ``ntm_bench.models`` entry points. A name a plugin already took raises a `RegistryError`."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name, cls in BUILTIN_TASKS.items():
        register_task(name)(cls)
    for name, cls in BUILTIN_MODELS.items():
        register_model(name)(cls)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


def load_plugin(module: str) -> None:
    """Import `module` so that its ``@register_*`` decorators run. Modules in the current folder are found, as with
    ``python -m bench``, also when the ``ntm-bench`` script (whose path does not hold it) is the caller."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise RegistryError(f"plugin {module!r} could not be imported: {error}") from error
    except Exception as error:  # the module itself raised while loading: one line, the traceback under --debug
        message = " ".join(str(error).split())
        raise RegistryError(f"plugin {module!r} raised while loading: {type(error).__name__}: {message}") from error


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parameters_of(cls: type, skip: int = 0) -> dict[str, Any]:
    """The parameters of `cls` with their defaults: the fields of its ``config_class`` dataclass if it has one, else
    the keyword parameters of ``cls.__init__``, leaving out the first `skip` positional ones (the widths)."""
    config = getattr(cls, "config_class", None)
    if config is not None and dataclasses.is_dataclass(config):
        return {field.name: _default(field) for field in dataclasses.fields(config)}
    params = list(inspect.signature(cls.__init__).parameters.values())[1 + skip :]
    return {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _default(field: dataclasses.Field) -> Any:
    """A dataclass field's default; `inspect.Parameter.empty` (as for a signature) when it has none."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return inspect.Parameter.empty


def _lookup(kind: str, registry: dict[str, type], name: str) -> type:
    load_all()
    if name not in registry:
        raise RegistryError(f"unknown {kind} {name!r}{did_you_mean(name, registry)}; known {kind}s: "
                            f"{', '.join(sorted(registry))}")
    return registry[name]


def _check_params(kind: str, name: str, allowed: dict[str, Any], params: dict[str, Any]) -> None:
    unknown = [key for key in params if key not in allowed]
    if unknown:
        key = unknown[0]
        raise RegistryError(f"unknown parameter {key!r} for {kind} {name!r}{did_you_mean(key, allowed)}; "
                            f"allowed: {', '.join(allowed)}")


def task_class(name: str) -> type:
    return _lookup("task", TASKS, name)


def model_class(name: str) -> type:
    return _lookup("model", MODELS, name)


def task_parameters(name: str) -> dict[str, Any]:
    return parameters_of(task_class(name))


def model_parameters(name: str) -> dict[str, Any]:
    return parameters_of(model_class(name), skip=2)


def small_model_params(name: str) -> dict[str, Any]:
    """Small sizes of model `name` (its config's ``SMALL``) for the tests, the smoke suite and ``perf --quick``; a
    model without them raises a `RegistryError` saying what to add."""
    cls = model_class(name)
    small = getattr(getattr(cls, "config_class", None), "SMALL", None)
    if small is None:
        raise RegistryError(f"model {name!r} has no small sizes for the tests and `perf --quick`: give "
                            f"{cls.__module__}.{cls.__name__} a parameter dataclass (`config_class`, a "
                            "models.base.ModelConfig) with SMALL = {parameter: value, ...}")
    return dict(small)


def build_task(name: str, **params):
    """An instance of task `name`; unknown parameters raise a `RegistryError` listing the allowed ones."""
    _check_params("task", name, task_parameters(name), params)
    return task_class(name)(**params)


def build_model(name: str, input_size: int, output_size: int, **params):
    """An instance of model `name` for the given widths; unknown parameters raise a `RegistryError`."""
    _check_params("model", name, model_parameters(name), params)
    return model_class(name)(input_size, output_size, **params)
