"""Vectorised sampling: each built-in task's `examples` builds a whole batch at once, and it must give the very batch
that drawing one example at a time gives (`Task.example` + `collate`, the sampler before it), bit for bit, leaving
the generator in the very same state, so that no data stream, evaluation set or protocol fingerprint changes."""

from __future__ import annotations

import pytest
import torch

from bench.registry import build_task
from tasks import TASKS
from tasks.base import Task, collate, draws_modulo, uniform_float

#: per task: the defaults, the tests' small sizes, and settings that change what an example holds
SETTINGS = {
    "copy": [{}, {"bits": 3, "train_sizes": [1, 4]}, {"bits": 5, "delimiter": "all_ones", "train_sizes": [1, 9]}],
    "repeat_copy": [{}, {"bits": 3, "train_sizes": {"L": [1, 3], "n": [1, 2]}},
                    {"bits": 2, "count_encoding": "ratio", "train_sizes": {"L": [2, 5], "n": [3, 7]}}],
    "associative_recall": [{}, {"bits": 3, "train_sizes": [2, 3]}, {"bits": 1, "train_sizes": [2, 9]}],
    "priority_sort": [{}, {"bits": 4, "train_sizes": {"inputs": [3, 5], "outputs": [1, 3]}},
                      {"bits": 1, "train_sizes": {"inputs": [1, 6], "outputs": [1, 6]}}],
    "ngrams": [{}, {"context_bits": 2, "train_sizes": [8, 16]}],
}
BATCH_SIZES = (1, 2, 7, 32)
SEEDS = (0, 1, 7, 12345)


def per_example(task: Task, batch_size: int, generator: torch.Generator, size=None):
    """The sampler before vectorisation: each example's size (unless fixed), then its draws, one example at a time."""
    fixed = None if size is None else task.check_size(size)
    parts = []
    for _ in range(batch_size):
        example_size = fixed if fixed is not None else task.sample_size(generator)
        parts.append((example_size, *task.example(example_size, generator)))
    return collate(parts)


def assert_same(task, batch_size, seed, size):
    vectorised, reference = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    a, b = task.sample(batch_size, vectorised, size=size), per_example(task, batch_size, reference, size)
    for name in ("inputs", "targets", "mask", "sizes"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, (name, size, x.shape, y.shape)
        assert torch.equal(x, y), (task.name, name, size, batch_size, seed)
    assert torch.equal(vectorised.get_state(), reference.get_state()), (task.name, size, batch_size, seed)


def test_every_builtin_task_has_settings_here():
    assert set(SETTINGS) == set(TASKS)
    for name in TASKS:  # each one builds its batches at once (the default `examples` draws example by example)
        assert TASKS[name].examples is not Task.examples, name


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_vectorised_batches_equal_per_example_draws(name):
    for params in SETTINGS[name]:
        task = build_task(name, **params)
        sizes = {task.sample_size(torch.Generator().manual_seed(k)) for k in range(6)} | set(task.test_sizes[:3])
        for seed in SEEDS:
            for batch_size in BATCH_SIZES:
                for size in [None, *sorted(sizes)]:  # None: every example draws its own size (per_example)
                    assert_same(task, batch_size, seed, size)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_stream_of_batches_stays_the_same(name):
    # a training stream as `length_sampling: per_batch` draws it: a size, then a batch of it, 50 times in a row
    task = build_task(name)
    vectorised, reference = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(50):
        a = task.sample(16, vectorised, size=task.sample_size(vectorised))
        b = per_example(task, 16, reference, size=task.sample_size(reference))
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets) and torch.equal(a.mask, b.mask)
    assert torch.equal(vectorised.get_state(), reference.get_state())


def test_draws_modulo_is_randint_and_rand_of_the_same_numbers():
    for modulus, moduli in [(2, [2]), (12, [2, 3, 4, 6, 12]), (1 << 24, [2, 8])]:
        for m in moduli:
            a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
            assert torch.equal(draws_modulo(modulus, (3, 40), a) % m, torch.randint(0, m, (3, 40), generator=b))
            assert torch.equal(a.get_state(), b.get_state())
    a, b = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(uniform_float(draws_modulo(1 << 24, (1000,), a)), torch.rand(1000, generator=b))
    with pytest.raises(ValueError):
        draws_modulo(1 << 32, (1,), a)  # randint would take 64 bits per value
