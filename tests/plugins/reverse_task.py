"""Reverse: read L random bit vectors, then, after a delimiter, write them back last one first.

A task defined only here, to show that a task plugs in without touching the harness (README, "Adding a task").
"""

import torch

from bench.registry import register_task
from tasks.base import Task, parse_test_sizes, parse_train_sizes, random_bits, uniform_int


@register_task("reverse")
class Reverse(Task):
    """Input width bits+1 (the last channel marks the delimiter), output width bits, T = 2L + 1."""

    name = "reverse"
    size_parts = ("L",)

    def __init__(self, bits: int = 8, train_sizes=(1, 10), test_sizes=(10, 20, 40), converge_below: float = 0.1):
        if bits < 1:
            raise ValueError(f"reverse: bits must be >= 1, got {bits}")
        self.bits, self.input_size, self.output_size = bits, bits + 1, bits
        self.train_sizes = parse_train_sizes("reverse", train_sizes, self.size_parts)
        self.test_sizes = parse_test_sizes("reverse", test_sizes, self.size_parts)
        self.converge_below = converge_below

    def sample_size(self, generator):
        return (uniform_int(*self.train_sizes["L"], generator),)

    def steps_for(self, size):
        return 2 * size[0] + 1

    def vectors_to_store(self, size):
        return size[0]

    def example(self, size, generator):
        (length,) = size
        data = random_bits((length, self.bits), generator)  # [L, bits], drawn from the given generator only
        inputs = torch.zeros(2 * length + 1, self.input_size)
        inputs[:length, : self.bits] = data
        inputs[length, self.bits] = 1.0  # the delimiter
        targets = torch.zeros(2 * length + 1, self.output_size)
        targets[length + 1 :] = data.flip(0)  # the answer: the inputs, last one first
        mask = torch.zeros(2 * length + 1)
        mask[length + 1 :] = 1.0  # only the answer is scored
        return inputs, targets, mask
