"""Priority Sort (Graves et al. 2014, section 4.5): read prioritised vectors, write the top ones in order."""

from __future__ import annotations

import torch

from tasks.base import (
    FLOAT_DRAW,
    Batch,
    Size,
    Task,
    draws_modulo,
    fixed_sizes,
    parse_test_sizes,
    parse_train_sizes,
    random_bits,
    uniform_float,
    uniform_int,
)


def sort_by_priority(data: torch.Tensor, priorities: torch.Tensor, outputs: int) -> torch.Tensor:
    """The `outputs` rows of `data` [..., n, bits] with the highest `priorities` [..., n], highest first (leading
    dimensions: a batch of examples, each sorted on its own).

    Equal priorities keep input order: a stable sort, so the earlier row comes first.
    """
    order = torch.sort(priorities, dim=-1, descending=True, stable=True).indices[..., :outputs]  # [..., outputs]
    return data.gather(-2, order[..., None].expand(*order.shape, data.shape[-1]))  # [..., outputs, bits]


class PrioritySort(Task):
    """Sort vectors by priority. Input width bits+2, output width bits, T = n_in + 1 + n_out.

    One example with bits=2, n_in=3, n_out=2 (``p`` priority channel, ``d`` delimiter)::

        step      0    1    2    3  4  5
        input  b0 1    0    1    0  0  0
               b1 0    1    1    0  0  0
               p  -.4  .7   .2   0  0  0
               d  0    0    0    1  0  0
        target b0 .    .    .    .  0  1
               b1 .    .    .    .  1  1
        mask      0    0    0    0  1  1

    Priorities are uniform on [-1, 1). The target is the n_out highest-priority input vectors, from the
    highest priority to the lowest (our reading of Graves). Equal priorities (practically never drawn) are
    broken by input order: the earlier vector comes first. During training, n_out is drawn uniformly from its
    range capped at the drawn n_in, so that outputs <= inputs always holds.
    """

    version = 1  # bump when the evaluation data or rules change (tests/data/protocols.json, CHANGELOG.md)
    size_parts = ("inputs", "outputs")

    def __init__(self, bits: int = 8, train_sizes=None, test_sizes=((20, 16), (30, 24), (40, 32)),
                 converge_below: float | None = None):
        if bits < 1:
            raise ValueError(f"priority_sort: bits must be >= 1, got {bits}")
        self.name = "priority_sort"
        self.bits = bits
        self.input_size = bits + 2
        self.output_size = bits
        train_sizes = {"inputs": [20, 20], "outputs": [16, 16]} if train_sizes is None else train_sizes
        self.train_sizes = parse_train_sizes("priority_sort", train_sizes, self.size_parts)
        (in_low, in_high), (out_low, out_high) = self.train_sizes["inputs"], self.train_sizes["outputs"]
        if out_low > in_low or out_high > in_high:
            raise ValueError(f"priority_sort: train_sizes.outputs [{out_low}, {out_high}] must not exceed "
                             f"train_sizes.inputs [{in_low}, {in_high}] at either end")
        test_sizes = parse_test_sizes("priority_sort", test_sizes, self.size_parts)
        self.test_sizes = [self.check_size(size) for size in test_sizes]
        self.converge_below = converge_below

    def check_size(self, size) -> Size:
        size = super().check_size(size)
        inputs, outputs = size
        if inputs < 1 or outputs < 1 or outputs > inputs:
            raise ValueError(f"priority_sort: a size needs 1 <= outputs <= inputs, got inputs={inputs}, "
                             f"outputs={outputs}")
        return size

    def sample_size(self, generator: torch.Generator) -> Size:
        inputs = uniform_int(*self.train_sizes["inputs"], generator)
        out_low, out_high = self.train_sizes["outputs"]
        return (inputs, uniform_int(out_low, min(out_high, inputs), generator))

    def steps_for(self, size: Size) -> int:
        inputs, outputs = size
        return inputs + 1 + outputs

    def vectors_to_store(self, size: Size) -> int:
        return size[0]  # every input vector, until the sorted ones are written

    def scored_steps(self, size: Size) -> int:
        return size[1]  # the n_out sorted vectors

    def train_size_distribution(self) -> dict[Size, float]:
        """n_in uniform on its range, then n_out uniform on its range capped at n_in (as `sample_size`)."""
        (in_low, in_high), (out_low, out_high) = self.train_sizes["inputs"], self.train_sizes["outputs"]
        sizes = {}
        for inputs in range(in_low, in_high + 1):
            outputs = range(out_low, min(out_high, inputs) + 1)
            for count in outputs:
                sizes[(inputs, count)] = 1.0 / (in_high - in_low + 1) / len(outputs)
        return sizes

    def example(self, size: Size, generator: torch.Generator):
        inputs_count, outputs = size
        data = random_bits((inputs_count, self.bits), generator)  # [n_in, bits]
        priorities = torch.rand(inputs_count, generator=generator) * 2.0 - 1.0  # [n_in], U[-1, 1)
        steps = self.steps_for(size)
        priority_channel, delimiter = self.bits, self.bits + 1
        inputs = torch.zeros(steps, self.input_size)
        inputs[:inputs_count, : self.bits] = data
        inputs[:inputs_count, priority_channel] = priorities
        inputs[inputs_count, delimiter] = 1.0
        targets = torch.zeros(steps, self.output_size)
        start = inputs_count + 1
        targets[start:] = sort_by_priority(data, priorities, outputs)
        mask = torch.zeros(steps)
        mask[start:] = 1.0
        return inputs, targets, mask

    def examples(self, size: Size, count: int, generator: torch.Generator) -> Batch:
        """`count` examples at once. Each example draws n_in x bits bits (``% 2``) and then n_in float32 uniforms
        (24 bits each): one `draws_modulo` call modulo 2^24 takes the same numbers in the same order."""
        inputs_count, outputs = size
        draws = draws_modulo(FLOAT_DRAW, (count, inputs_count * (self.bits + 1)), generator)
        data = (draws[:, : inputs_count * self.bits] % 2).to(torch.float32).view(count, inputs_count, self.bits)
        priorities = uniform_float(draws[:, inputs_count * self.bits :]) * 2.0 - 1.0  # [B, n_in], U[-1, 1)
        steps = self.steps_for(size)
        priority_channel, delimiter = self.bits, self.bits + 1
        inputs = torch.zeros(count, steps, self.input_size)
        inputs[:, :inputs_count, : self.bits] = data
        inputs[:, :inputs_count, priority_channel] = priorities
        inputs[:, inputs_count, delimiter] = 1.0
        targets = torch.zeros(count, steps, self.output_size)
        start = inputs_count + 1
        targets[:, start:] = sort_by_priority(data, priorities, outputs)
        mask = torch.zeros(count, steps)
        mask[:, start:] = 1.0
        return Batch(inputs, targets, mask, fixed_sizes(size, count))
