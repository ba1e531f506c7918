"""Fixed evaluation sets and their scoring (docs/TASKS.md#metrics).

The evaluation set of a task is drawn once from the suite's evaluation seed, so every model and seed is scored on
the very same sequences. Sizes are drawn first, then the examples are grouped by size, so no compute is spent on
padding. Generalisation sets hold `n` sequences at each of the task's test sizes.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import torch

from bench.grid import derive_seed
from bench.metrics import MetricTotals, wrong_bits_per_step
from tasks.base import Batch, Size, Task

#: the most sequences scored in one forward pass (bounds evaluation memory)
EVAL_CHUNK = 256


def _chunks(task: Task, size: Size, count: int, generator: torch.Generator) -> list[Batch]:
    batches = []
    while count > 0:
        n = min(count, EVAL_CHUNK)
        batches.append(task.sample(n, generator, size=size))
        count -= n
    return batches


def evaluation_set(task: Task, sequences: int, eval_seed: int, task_key: str, cache: bool = True) -> list[Batch]:
    """`sequences` examples from the training distribution, grouped by size into batches. `cache=False` draws them
    afresh and keeps no copy (the protocol fingerprint, `bench.protocol`, which only hashes them)."""
    return _cached_set(task, sequences, eval_seed, task_key, "eval", cache=cache)


def generalization_set(task: Task, sequences: int, eval_seed: int, task_key: str,
                       sizes: list[Size] | None = None, cache: bool = True) -> dict[Size, list[Batch]]:
    """`sequences` examples at each of `sizes` (default: the task's test sizes); `cache` as for `evaluation_set`.

    A size's sequences depend only on the evaluation seed, the task and the size, so a size is scored on the very
    same sequences whether the suite asks for it or a later `ntm-bench evaluate` does (bench/trained.py).
    """
    sizes = task.test_sizes if sizes is None else [task.check_size(size) for size in sizes]
    return {size: _cached_set(task, sequences, eval_seed, task_key, "gen", size, cache) for size in sizes}


def generalization_rows(model: torch.nn.Module, task: Task, sets: dict[Size, list[Batch]],
                        device: torch.device) -> list[dict[str, float | int | str]]:
    """One row per size of `sets` (`generalization_set`), as in a run's generalization.csv: the size's label
    (``size``) and parts (``size_L``, ...), then `score`'s metrics."""
    return [{"size": task.size_label(size), **{f"size_{p}": v for p, v in zip(task.size_parts, size)},
             **score(model, task, batches, device)} for size, batches in sets.items()]


_CACHE: dict[tuple, list[Batch]] = {}


def _cached_set(task: Task, sequences: int, eval_seed: int, task_key: str, kind: str,
                size: Size | None = None, cache: bool = True) -> list[Batch]:
    if not cache:
        return _draw(task, sequences, eval_seed, task_key, kind, size)
    key = (sequences, eval_seed, task_key, kind, size)
    if key not in _CACHE:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = _draw(task, sequences, eval_seed, task_key, kind, size)
    return _CACHE[key]


def _draw(task: Task, sequences: int, eval_seed: int, task_key: str, kind: str, size: Size | None) -> list[Batch]:
    generator = torch.Generator().manual_seed(derive_seed(kind, eval_seed, task_key, size))
    if size is not None:
        return _chunks(task, size, sequences, generator)
    counts = Counter(task.sample_size(generator) for _ in range(sequences))
    return [batch for s in sorted(counts) for batch in _chunks(task, s, counts[s], generator)]


@torch.no_grad()
def score(model: torch.nn.Module, task: Task, batches: list[Batch], device: torch.device) -> dict[str, float]:
    """Per-sequence means over `batches`: loss_bits_per_seq, wrong_bits_per_seq, seq_accuracy (+ task extras)."""
    was_training = model.training
    model.eval()
    totals = MetricTotals()
    for batch in batches:
        on_device = batch.to(device)
        logits = model(on_device.inputs)
        totals.add(logits, on_device.targets, on_device.mask, task.reference_metrics(batch))
    model.train(was_training)
    return totals.means()


@torch.no_grad()
def example_arrays(model: torch.nn.Module, batch: Batch, size: Size, device: torch.device,
                   name: str) -> dict[str, np.ndarray]:
    """The first example of `batch` (of `size`) with the model's outputs and memory traces, in the layout of a run's
    samples.npz: ``<name>/inputs``, ``/targets``, ``/mask``, ``/outputs`` (probabilities), ``/size`` and
    ``/trace/<key>`` for each trace tensor (``read_weights``, ...)."""
    logits, trace = model(batch.inputs.to(device), trace=True)
    arrays = {f"{name}/inputs": batch.inputs[0].numpy(), f"{name}/targets": batch.targets[0].numpy(),
              f"{name}/mask": batch.mask[0].numpy(), f"{name}/outputs": torch.sigmoid(logits[0]).float().cpu().numpy(),
              f"{name}/size": np.array(size)}
    for key, value in trace.items():
        arrays[f"{name}/trace/{key}"] = value[0].float().cpu().numpy()
    return arrays


@torch.no_grad()
def wrong_bits_by_position(model: torch.nn.Module, task: Task, size: Size, sequences: int, eval_seed: int,
                           task_key: str) -> torch.Tensor:
    """Mean wrong bits at each scored output position [P] over `sequences` examples of one test size: the very
    generalisation sequences the suite scores at that size, computed on the model's device (`model_device`), where
    the result stays."""
    device = model_device(model)
    per_position, count = None, 0
    for batch in _cached_set(task, sequences, eval_seed, task_key, "gen", task.check_size(size)):
        # one size per batch: the same scored steps in every example, found on the host
        scored_steps = batch.mask[0].nonzero().squeeze(1).to(device)
        on_device = batch.to(device)
        wrong = wrong_bits_per_step(model(on_device.inputs), on_device.targets)  # [B, T]
        scored = wrong.index_select(1, scored_steps).sum(0)
        per_position = scored if per_position is None else per_position + scored
        count += batch.batch_size
    return per_position / max(count, 1)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where `model`'s tensors are (its first parameter's or buffer's device; the CPU for a model without any)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")
