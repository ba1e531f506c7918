"""Copy (Graves et al. 2014, section 4.1): read a sequence of bit vectors, then write it back after a delimiter."""

from __future__ import annotations

import torch

from tasks.base import Batch, Size, Task, fixed_sizes, parse_test_sizes, parse_train_sizes, random_bits, uniform_int

DELIMITERS = ("flag", "all_ones")


class Copy(Task):
    """Copy a sequence of L random bit vectors. Input width bits+1, output width bits, T = 2L + 1.

    One example with bits=3, L=2 (``d`` is the delimiter channel)::

        step      0  1  2  3  4
        input  b0 1  0  0  0  0
               b1 0  1  0  0  0
               b2 1  1  0  0  0
               d  0  0  1  0  0
        target b0 .  .  .  1  0
               b1 .  .  .  0  1
               b2 .  .  .  1  1
        mask      0  0  0  1  1

    ``delimiter: all_ones`` sets every input channel at the delimiter step (a layout Collier & Beel's reference code
    uses).
    """

    version = 1  # bump when the evaluation data or rules change (tests/data/protocols.json, CHANGELOG.md)
    size_parts = ("L",)

    def __init__(self, bits: int = 8, train_sizes=(1, 20), test_sizes=(10, 20, 30, 40, 50, 60, 80, 100, 120),
                 delimiter: str = "flag", converge_below: float | None = 0.1):
        if bits < 1:
            raise ValueError(f"copy: bits must be >= 1, got {bits}")
        if delimiter not in DELIMITERS:
            raise ValueError(f"copy: delimiter must be one of {list(DELIMITERS)}, got {delimiter!r}")
        self.name = "copy"
        self.bits = bits
        self.delimiter = delimiter
        self.input_size = bits + 1
        self.output_size = bits
        self.train_sizes = parse_train_sizes("copy", train_sizes, self.size_parts)
        self.test_sizes = parse_test_sizes("copy", test_sizes, self.size_parts)
        self.converge_below = converge_below

    def sample_size(self, generator: torch.Generator) -> Size:
        return (uniform_int(*self.train_sizes["L"], generator),)

    def steps_for(self, size: Size) -> int:
        return 2 * size[0] + 1

    def vectors_to_store(self, size: Size) -> int:
        return size[0]  # every item, until the copy is written back

    def scored_steps(self, size: Size) -> int:
        return size[0]  # the copy

    def example(self, size: Size, generator: torch.Generator):
        (length,) = size
        data = random_bits((length, self.bits), generator)  # [L, bits]
        steps = self.steps_for(size)
        inputs = torch.zeros(steps, self.input_size)
        inputs[:length, : self.bits] = data
        if self.delimiter == "flag":
            inputs[length, self.bits] = 1.0
        else:
            inputs[length, :] = 1.0
        targets = torch.zeros(steps, self.output_size)
        targets[length + 1 :] = data
        mask = torch.zeros(steps)
        mask[length + 1 :] = 1.0
        return inputs, targets, mask

    def examples(self, size: Size, count: int, generator: torch.Generator) -> Batch:
        """`count` examples at once: one draw of [count, L, bits] bits takes the stream's numbers in the order of
        `count` calls of `example`."""
        (length,) = size
        data = random_bits((count, length, self.bits), generator)  # [B, L, bits]
        steps = self.steps_for(size)
        inputs = torch.zeros(count, steps, self.input_size)
        inputs[:, :length, : self.bits] = data
        if self.delimiter == "flag":
            inputs[:, length, self.bits] = 1.0
        else:
            inputs[:, length, :] = 1.0
        targets = torch.zeros(count, steps, self.output_size)
        targets[:, length + 1 :] = data
        mask = torch.zeros(count, steps)
        mask[:, length + 1 :] = 1.0
        return Batch(inputs, targets, mask, fixed_sizes(size, count))
