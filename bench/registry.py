"""Registries of tasks and models: plain dicts filled by decorators, plus builders that check parameters.

A new task or model is one file with ``@register_task("name")`` / ``@register_model("name")`` plus one import line in
its package's ``__init__``. Outside packages register models through the entry-point group ``ntm_bench.models``
(each entry point names a module to import), or with ``python -m bench run --plugin module.path``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

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
    """Import the built-in tasks and models, and every module named by the ``ntm_bench.models`` entry points."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module("tasks")
    importlib.import_module("models")
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


def load_plugin(module: str) -> None:
    """Import `module` so that its ``@register_*`` decorators run."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise RegistryError(f"plugin {module!r} could not be imported: {error}") from error


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parameters_of(cls: type, skip: int = 0) -> dict[str, Any]:
    """The keyword parameters of ``cls.__init__`` with their defaults, leaving out the first `skip` positional ones."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1 + skip :]
    return {p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


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


def build_task(name: str, **params):
    """An instance of task `name`; unknown parameters raise a `RegistryError` listing the allowed ones."""
    _check_params("task", name, task_parameters(name), params)
    return task_class(name)(**params)


def build_model(name: str, input_size: int, output_size: int, **params):
    """An instance of model `name` for the given widths; unknown parameters raise a `RegistryError`."""
    _check_params("model", name, model_parameters(name), params)
    return model_class(name)(input_size, output_size, **params)
