"""Repeat Copy (Graves et al. 2014, section 4.2): copy a sequence n times, then emit an end marker."""

from __future__ import annotations

import math

import torch

from tasks.base import Batch, Size, Task, fixed_sizes, parse_test_sizes, parse_train_sizes, random_bits, uniform_int

COUNT_ENCODINGS = ("zscore", "ratio")


class RepeatCopy(Task):
    """Repeat a sequence of L bit vectors n times. Input width bits+2, output width bits+1, T = L + 1 + n*L + 1.

    One example with bits=2, L=2, n=2 (``d`` delimiter, ``c`` repeat count, ``e`` end marker)::

        step      0  1  2  3  4  5  6  7
        input  b0 1  0  0  0  0  0  0  0
               b1 0  1  0  0  0  0  0  0
               d  0  0  1  0  0  0  0  0
               c  0  0  c2 0  0  0  0  0
        target b0 .  .  .  1  0  1  0  0
               b1 .  .  .  0  1  0  1  0
               e  .  .  .  0  0  0  0  1
        mask      0  0  0  1  1  1  1  1

    The count channel carries n encoded by `count_encoding`: ``zscore`` is Graves' (n - mean) / std under the training
    distribution of n (uniform on its range); ``ratio`` is n / max_repeats, as Collier & Beel's reference code and
    DeepMind's encode it.
    """

    version = 1  # bump when the evaluation data or rules change (tests/data/protocols.json, CHANGELOG.md)
    size_parts = ("L", "n")

    def __init__(self, bits: int = 8, train_sizes=None, test_sizes=((10, 10), (10, 20), (20, 10), (20, 20)),
                 count_encoding: str = "zscore", converge_below: float | None = 0.1):
        if bits < 1:
            raise ValueError(f"repeat_copy: bits must be >= 1, got {bits}")
        if count_encoding not in COUNT_ENCODINGS:
            raise ValueError(f"repeat_copy: count_encoding must be one of {list(COUNT_ENCODINGS)}, "
                             f"got {count_encoding!r}")
        self.name = "repeat_copy"
        self.bits = bits
        self.count_encoding = count_encoding
        self.input_size = bits + 2
        self.output_size = bits + 1
        train_sizes = {"L": [1, 10], "n": [1, 10]} if train_sizes is None else train_sizes
        self.train_sizes = parse_train_sizes("repeat_copy", train_sizes, self.size_parts)
        self.test_sizes = parse_test_sizes("repeat_copy", test_sizes, self.size_parts)
        self.converge_below = converge_below
        low, high = self.train_sizes["n"]
        count = high - low + 1
        self._n_mean = (low + high) / 2
        self._n_std = math.sqrt((count * count - 1) / 12) or 1.0  # std of the discrete uniform on [low, high]
        self._n_max = high

    def encode_count(self, repeats: int) -> float:
        if self.count_encoding == "zscore":
            return (repeats - self._n_mean) / self._n_std
        return repeats / self._n_max

    def sample_size(self, generator: torch.Generator) -> Size:
        return (uniform_int(*self.train_sizes["L"], generator), uniform_int(*self.train_sizes["n"], generator))

    def steps_for(self, size: Size) -> int:
        length, repeats = size
        return length + 1 + repeats * length + 1

    def vectors_to_store(self, size: Size) -> int:
        return size[0]  # the sequence, read n times

    def scored_steps(self, size: Size) -> int:
        length, repeats = size
        return repeats * length + 1  # the n copies, then the end marker's step

    def trivial_error(self, size: Size) -> float:
        """Half the n·L·bits random data bits, plus the end marker: it is 1 at one scored step of n·L + 1, so the
        best constant output there is 0, wrong once. The bits' 0 at the marker's step is right for that constant."""
        length, repeats = self.check_size(size)
        return repeats * length * self.bits / 2 + 1.0

    def example(self, size: Size, generator: torch.Generator):
        length, repeats = size
        data = random_bits((length, self.bits), generator)  # [L, bits]
        steps = self.steps_for(size)
        inputs = torch.zeros(steps, self.input_size)
        inputs[:length, : self.bits] = data
        inputs[length, self.bits] = 1.0
        inputs[length, self.bits + 1] = self.encode_count(repeats)
        targets = torch.zeros(steps, self.output_size)
        start = length + 1
        targets[start : start + repeats * length, : self.bits] = data.repeat(repeats, 1)
        targets[steps - 1, self.bits] = 1.0
        mask = torch.zeros(steps)
        mask[start:] = 1.0
        return inputs, targets, mask

    def examples(self, size: Size, count: int, generator: torch.Generator) -> Batch:
        """`count` examples at once: one draw of [count, L, bits] bits takes the stream's numbers in the order of
        `count` calls of `example`."""
        length, repeats = size
        data = random_bits((count, length, self.bits), generator)  # [B, L, bits]
        steps = self.steps_for(size)
        inputs = torch.zeros(count, steps, self.input_size)
        inputs[:, :length, : self.bits] = data
        inputs[:, length, self.bits] = 1.0
        inputs[:, length, self.bits + 1] = self.encode_count(repeats)
        targets = torch.zeros(count, steps, self.output_size)
        start = length + 1
        targets[:, start : start + repeats * length, : self.bits] = data.repeat(1, repeats, 1)
        targets[:, steps - 1, self.bits] = 1.0
        mask = torch.zeros(count, steps)
        mask[:, start:] = 1.0
        return Batch(inputs, targets, mask, fixed_sizes(size, count))
