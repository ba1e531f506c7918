"""Associative Recall (Graves et al. 2014, section 4.3): given a list of items and a query item, return the next."""

from __future__ import annotations

import math

import torch

from tasks.base import (
    Batch,
    Size,
    Task,
    draws_modulo,
    fixed_sizes,
    parse_test_sizes,
    parse_train_sizes,
    random_bits,
    uniform_int,
)

ITEM_VECTORS = 3  # each item is 3 consecutive bit vectors, as in Graves 2014


class AssociativeRecall(Task):
    """Recall the item after a queried one. Input width bits+2, output width bits, T = 4k + 1 + 3 + 1 + 3.

    One example with k=2 items of 3 vectors (shown as blocks; ``i`` item delimiter, ``q`` query delimiter)::

        step    0   1-3   4   5-7   8   9-11  12  13-15
        bits    .   A     .   B     .   A     .   .
        i       1   0     1   0     0   0     0   0
        q       0   0     0   0     1   0     1   0
        target  .   .     .   .     .   .     .   B
        mask    0   0     0   0     0   0     0   1

    The query is item i with i uniform in 0..k-2; the target is item i+1 at the 3 answer steps.
    """

    version = 1  # bump when the evaluation data or rules change (tests/data/protocols.json, CHANGELOG.md)
    size_parts = ("items",)

    def __init__(self, bits: int = 6, train_sizes=(2, 6), test_sizes=(2, 4, 6, 8, 10, 12, 15, 20),
                 converge_below: float | None = 0.1):
        if bits < 1:
            raise ValueError(f"associative_recall: bits must be >= 1, got {bits}")
        self.name = "associative_recall"
        self.bits = bits
        self.input_size = bits + 2
        self.output_size = bits
        self.train_sizes = parse_train_sizes("associative_recall", train_sizes, self.size_parts)
        self.test_sizes = parse_test_sizes("associative_recall", test_sizes, self.size_parts)
        if self.train_sizes["items"][0] < 2 or any(s[0] < 2 for s in self.test_sizes):
            raise ValueError("associative_recall: every size needs at least 2 items")
        self.converge_below = converge_below

    def sample_size(self, generator: torch.Generator) -> Size:
        return (uniform_int(*self.train_sizes["items"], generator),)

    def steps_for(self, size: Size) -> int:
        (items,) = size
        return (ITEM_VECTORS + 1) * items + 1 + ITEM_VECTORS + 1 + ITEM_VECTORS

    def vectors_to_store(self, size: Size) -> int:
        return size[0] * ITEM_VECTORS  # every item, 3 vectors each

    def scored_steps(self, size: Size) -> int:
        return ITEM_VECTORS  # the recalled item, whatever the number of items

    def check_size(self, size) -> Size:
        size = super().check_size(size)
        if size[0] < 2:
            raise ValueError(f"associative_recall: needs at least 2 items, got {size[0]}")
        return size

    def example(self, size: Size, generator: torch.Generator):
        (items,) = size
        data = random_bits((items, ITEM_VECTORS, self.bits), generator)  # [k, 3, bits]
        query = uniform_int(0, items - 2, generator)
        steps = self.steps_for(size)
        item_flag, query_flag = self.bits, self.bits + 1
        inputs = torch.zeros(steps, self.input_size)
        for k in range(items):
            start = k * (ITEM_VECTORS + 1)
            inputs[start, item_flag] = 1.0
            inputs[start + 1 : start + 1 + ITEM_VECTORS, : self.bits] = data[k]
        query_start = items * (ITEM_VECTORS + 1)
        inputs[query_start, query_flag] = 1.0
        inputs[query_start + 1 : query_start + 1 + ITEM_VECTORS, : self.bits] = data[query]
        inputs[query_start + 1 + ITEM_VECTORS, query_flag] = 1.0
        targets = torch.zeros(steps, self.output_size)
        targets[steps - ITEM_VECTORS :] = data[query + 1]
        mask = torch.zeros(steps)
        mask[steps - ITEM_VECTORS :] = 1.0
        return inputs, targets, mask

    def examples(self, size: Size, count: int, generator: torch.Generator) -> Batch:
        """`count` examples at once. Each example draws its k x 3 x bits bits (``% 2``) and then its query
        (``% (k - 1)``): one `draws_modulo` call modulo both takes the same numbers in the same order."""
        (items,) = size
        per_item = ITEM_VECTORS * self.bits
        draws = draws_modulo(math.lcm(2, items - 1), (count, items * per_item + 1), generator)
        data = (draws[:, :-1] % 2).to(torch.float32).view(count, items, ITEM_VECTORS, self.bits)  # [B, k, 3, bits]
        query = draws[:, -1] % (items - 1)  # [B], as uniform_int(0, k - 2)
        rows = torch.arange(count)
        steps = self.steps_for(size)
        item_flag, query_flag = self.bits, self.bits + 1
        inputs = torch.zeros(count, steps, self.input_size)
        listed = inputs[:, : items * (ITEM_VECTORS + 1)].view(count, items, ITEM_VECTORS + 1, self.input_size)
        listed[:, :, 0, item_flag] = 1.0
        listed[:, :, 1:, : self.bits] = data
        query_start = items * (ITEM_VECTORS + 1)
        inputs[:, query_start, query_flag] = 1.0
        inputs[:, query_start + 1 : query_start + 1 + ITEM_VECTORS, : self.bits] = data[rows, query]
        inputs[:, query_start + 1 + ITEM_VECTORS, query_flag] = 1.0
        targets = torch.zeros(count, steps, self.output_size)
        targets[:, steps - ITEM_VECTORS :] = data[rows, query + 1]
        mask = torch.zeros(count, steps)
        mask[:, steps - ITEM_VECTORS :] = 1.0
        return Batch(inputs, targets, mask, fixed_sizes(size, count))
