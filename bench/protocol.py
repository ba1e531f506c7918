"""A task's evaluation protocol, versioned and fingerprinted (docs/TASKS.md, "Protocol versions and fingerprints").

Two output folders measure the same thing of a task only when they test it the same way: the same task type at the
same protocol `version` (`tasks.base.Task.version`), the same parameters, the same convergence and solved rules and
error measure, and the very same evaluation and generalisation sequences. `protocol` hashes all of that, the
sequences included (the tensors `bench.evaluate` draws for training, byte for byte), into one SHA-256 fingerprint;
the runner records it per task in suite.json (`bench.runner.task_facts`) and runs.csv carries its short form.
`describe_difference` says, in one line, why two folders' fingerprints of a task differ.

tests/data/protocols.json holds every built-in task's fingerprint at a small fixed configuration, so a change to a
task's evaluation data or rules without a version bump fails a test (`scripts/protocols.py` rewrites it).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterable
from typing import Any

import torch

from bench import registry
from bench.evaluate import evaluation_set, generalization_set
from tasks.base import Batch, Rule, Task

#: how many hex digits of the fingerprint the short form keeps (runs.csv's `protocol` column)
SHORT = 12
#: the evaluation settings a protocol records, in the order a difference names them
EVALUATION_KEYS = ("eval_sequences", "generalization_sequences", "eval_seed")
#: the rules a protocol covers, as `Task.facts()` names them
RULE_KEYS = ("convergence", "solved")


def canonical(data: Any) -> str:
    """`data` as canonical JSON: sorted keys, no spaces; tuples as lists, anything else as its str."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def resolved_params(task_type: str, params: dict[str, Any]) -> dict[str, Any]:
    """The task's parameters as it is built: each default of the registered class, with `params` over them, as
    plain JSON data (so a default changed in the code shows here, and tuples read as the lists suite.json holds)."""
    defaults = {key: value for key, value in registry.task_parameters(task_type).items()
                if value is not inspect.Parameter.empty}
    return json.loads(canonical({**defaults, **params}))


def _hash_batches(digest: Any, where: str, batches: Iterable[Batch]) -> None:
    for number, batch in enumerate(batches):
        for name in ("inputs", "targets", "mask", "sizes"):
            tensor = getattr(batch, name).detach().cpu().contiguous()
            head = {"set": where, "batch": number, "tensor": name, "dtype": str(tensor.dtype),
                    "shape": list(tensor.shape)}
            digest.update(canonical(head).encode() + b"\n")
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def protocol(task: Task, task_type: str, params: dict[str, Any], eval_sequences: int, generalization_sequences: int,
             eval_seed: int, task_key: str) -> dict[str, Any]:
    """The protocol of `task` (built as `task_type` with `params`) evaluated on `eval_sequences` sequences and
    `generalization_sequences` per test size, drawn from `eval_seed` under `task_key` (`bench.grid.task_key`, the key
    training draws its sets under).

    Returns plain JSON data: ``version`` (the task's), ``fingerprint`` (SHA-256 hex of the type, version, resolved
    parameters, convergence and solved rules, error measure, training and test sizes, evaluation settings, and the
    evaluation and generalisation tensors themselves: inputs, targets, mask and sizes, each with its dtype and
    shape), ``short``
    (its first 12 hex digits), ``params`` (the resolved parameters, `resolved_params`) and ``evaluation`` (the
    three settings). The sets are drawn afresh on the CPU and not kept.
    """
    version = int(getattr(task, "version", 1))
    rules = {name: None if rule is None else rule.to_json()
             for name, rule in (("convergence", task.convergence), ("solved", task.solved_when))}
    evaluation = {"eval_sequences": int(eval_sequences), "generalization_sequences": int(generalization_sequences),
                  "eval_seed": int(eval_seed)}
    resolved = resolved_params(task_type, params)
    header = {"type": task_type, "version": version, "params": resolved, **rules, "error": task.error.to_json(),
              "train_sizes": {part: list(r) for part, r in task.train_sizes.items()},
              "test_sizes": [list(size) for size in task.test_sizes], "evaluation": evaluation}
    digest = hashlib.sha256(canonical(header).encode() + b"\n")
    _hash_batches(digest, "eval", evaluation_set(task, eval_sequences, eval_seed, task_key, cache=False))
    sets = generalization_set(task, generalization_sequences, eval_seed, task_key, cache=False)
    for size, batches in sets.items():
        _hash_batches(digest, f"gen {task.size_label(size)}", batches)
    fingerprint = digest.hexdigest()
    return {"version": version, "fingerprint": fingerprint, "short": fingerprint[:SHORT], "params": resolved,
            "evaluation": evaluation}


_MISSING = object()


def _changes(mine: dict[str, Any], theirs: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """"key A vs B" for each of `keys` whose value differs between the two mappings ("unset" where one lacks it)."""
    def show(value: Any) -> str:
        return "unset" if value is _MISSING else json.dumps(value, default=str)

    pairs = ((key, mine.get(key, _MISSING), theirs.get(key, _MISSING)) for key in keys)
    return [f"{key} {show(a)} vs {show(b)}" for key, a, b in pairs if a != b]


def _rule_text(data: Any) -> str:
    if data is None:
        return "none"
    try:
        return Rule.from_json(data).text()
    except (TypeError, ValueError):
        return json.dumps(data, default=str)


def describe_difference(label: str, mine: dict[str, Any], theirs: dict[str, Any]) -> str | None:
    """None when two suite.json entries of task `label` (``suite.json["tasks"][label]``, with their ``protocol``)
    have the same fingerprint; else one line naming the task and what differs, the most specific cause first:
    a missing protocol, the type, the version, the parameters, a rule, the error measure or the sizes, the
    evaluation settings, and otherwise the evaluation or generalisation sets themselves."""
    head = f"task {label}:"
    ours, other = mine.get("protocol"), theirs.get("protocol")
    missing = [side for side, entry in (("mine", ours), ("theirs", other)) if not isinstance(entry, dict)]
    if missing:
        side = "neither side has a" if len(missing) == 2 else f"{missing[0]} has no"
        return f"{head} {side} protocol fingerprint (written before protocols were versioned)"
    if ours.get("fingerprint") == other.get("fingerprint"):
        return None
    if mine.get("type") != theirs.get("type"):
        return f"{head} task type {mine.get('type')} vs {theirs.get('type')}"
    if ours.get("version") != other.get("version"):
        return f"{head} protocol version {ours.get('version')} vs {other.get('version')}"
    params, their_params = ours.get("params") or {}, other.get("params") or {}
    changed = _changes(params, their_params, sorted(set(params) | set(their_params)))
    if changed:
        return f"{head} params differ: " + ", ".join(changed)
    for name in RULE_KEYS:
        if mine.get(name) != theirs.get(name):
            return f"{head} {name} rule {_rule_text(mine.get(name))} vs {_rule_text(theirs.get(name))}"
    changed = _changes(mine, theirs, ("error", "train_sizes", "test_sizes"))
    if changed:
        return f"{head} " + ", ".join(changed)
    changed = _changes(ours.get("evaluation") or {}, other.get("evaluation") or {}, EVALUATION_KEYS)
    if changed:
        return f"{head} evaluation settings differ: " + ", ".join(changed)
    return (f"{head} the evaluation or generalisation sets differ (fingerprint "
            f"{str(ours.get('fingerprint'))[:SHORT]} vs {str(other.get('fingerprint'))[:SHORT]})")
