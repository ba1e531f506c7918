"""Dynamic N-Grams (Graves et al. 2014, section 4.4): predict the next bit from a fresh n-gram table."""

from __future__ import annotations

import math

import torch

from tasks.base import Batch, Measure, Rule, Size, Task, parse_test_sizes, parse_train_sizes, random_bits, uniform_int

#: N-Grams' error: the loss less the Bayes-optimal predictor's loss on the same sequences (0 is optimal)
GAP_TO_OPTIMUM = Measure("loss_bits_per_seq", "optimal_loss_bits_per_seq", label="loss − optimum (bits/seq)",
                         reference_label="optimum")


def random_table(contexts: int, generator: torch.Generator) -> torch.Tensor:
    """P(next bit = 1) per context [contexts], each Beta(1/2, 1/2) drawn as sin^2(pi U / 2) with U uniform."""
    uniform = torch.rand(contexts, generator=generator, dtype=torch.float64)
    return torch.sin(uniform * (math.pi / 2)) ** 2


def generate_bits(table: torch.Tensor, first: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Bits [B, c + n] from tables [B, 2^c], the first c bits [B, c] and n uniforms [B, n].

    Bit i is 1 when its uniform is below its context's P(1). A context is the integer whose binary digits are
    the c previous bits, the oldest one most significant.
    """
    context_bits = first.shape[1]
    contexts = 1 << context_bits
    bits = torch.zeros(first.shape[0], context_bits + uniforms.shape[1], dtype=torch.int64)  # [B, L]
    bits[:, :context_bits] = first.to(torch.int64)
    context = torch.zeros(first.shape[0], dtype=torch.int64)  # [B]
    for i in range(context_bits):
        context = context * 2 + bits[:, i]
    for i in range(uniforms.shape[1]):
        p_one = table.gather(1, context[:, None])[:, 0]  # [B]
        bit = (uniforms[:, i] < p_one).to(torch.int64)
        bits[:, context_bits + i] = bit
        context = (context * 2 + bit) % contexts
    return bits


def layout(bits: torch.Tensor, lengths: list[int], context_bits: int) -> tuple[torch.Tensor, ...]:
    """(inputs [B, T, 1], targets [B, T, 1], mask [B, T]) for bit sequences [B, >= max length] of `lengths`.

    Target t is bit t + 1. Shorter sequences are padded at the end with zeros and mask 0.
    """
    steps = max(lengths) - 1
    bits = bits[:, : steps + 1].to(torch.float32)
    inputs = bits[:, :-1, None].clone()
    targets = bits[:, 1:, None].clone()
    mask = torch.zeros(len(lengths), steps)
    for b, length in enumerate(lengths):
        inputs[b, length - 1 :] = 0.0
        targets[b, length - 1 :] = 0.0
        mask[b, context_bits - 1 : length - 1] = 1.0  # target t is bit t+1: scored once it has a full context
    return inputs, targets, mask


def optimal_loss_bits(inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                      context_bits: int) -> torch.Tensor:
    """Per-example cross-entropy in bits [B] of the Bayes-optimal predictor on the masked steps.

    For each context it predicts P(1) = (N1 + 1/2) / (N1 + N0 + 1) (Krichevsky-Trofimov), counting the
    outcomes of that context at earlier masked steps of the same sequence: the posterior mean under the
    Beta(1/2, 1/2) prior the tables are drawn from.
    """
    batch, steps = mask.shape
    contexts = 1 << context_bits
    bits = torch.cat([inputs[:, :1, 0], targets[:, :, 0]], dim=1).round().to(torch.int64)  # [B, T + 1]
    ones = torch.zeros(batch, contexts, dtype=torch.float64)  # N1 per context
    seen = torch.zeros(batch, contexts, dtype=torch.float64)  # N1 + N0 per context
    total = torch.zeros(batch, dtype=torch.float64)
    weights = 2 ** torch.arange(context_bits - 1, -1, -1)  # oldest bit most significant, as `generate_bits`
    for t in range(context_bits - 1, steps):
        scored = mask[:, t].to(torch.float64)  # [B]
        context = (bits[:, t + 1 - context_bits : t + 1] * weights).sum(1, keepdim=True)  # [B, 1]
        n_one = ones.gather(1, context)[:, 0]
        n_all = seen.gather(1, context)[:, 0]
        p_one = (n_one + 0.5) / (n_all + 1.0)
        bit = bits[:, t + 1].to(torch.float64)
        p_bit = torch.where(bit > 0.5, p_one, 1.0 - p_one)
        total += -torch.log2(p_bit) * scored
        ones.scatter_add_(1, context, (bit * scored)[:, None])
        seen.scatter_add_(1, context, scored[:, None])
    return total


class NGrams(Task):
    """Predict the next bit of a sequence drawn from a fresh (c+1)-gram table. Widths 1 and 1, T = length - 1.

    One example with context_bits=2, length=7 (bits x0..x6; target t is bit t+1)::

        step      0  1  2  3  4  5
        input     x0 x1 x2 x3 x4 x5
        target    .  x2 x3 x4 x5 x6
        mask      0  1  1  1  1  1

    Per example, each of the 2^c contexts gets P(next = 1) ~ Beta(1/2, 1/2). The first c bits are uniform;
    each later bit is drawn given the c bits before it. The mask scores the bits c..length-1, the ones with a
    full context: 195 steps for the default length 200 and c = 5.

    `reference_metrics` gives the Bayes-optimal predictor's loss (``optimal_loss_bits_per_seq``). It averages
    about 128 bits on 200-bit sequences; Graves' "about 133" seems to count the first 5 bits too, at 1 bit
    each. Training has converged once the loss is within `converge_within` bits per sequence of it (our
    choice: 1 bit).
    """

    version = 1  # bump when the evaluation data or rules change (tests/data/protocols.json, CHANGELOG.md)
    size_parts = ("length",)
    error = GAP_TO_OPTIMUM
    converge_below = None  # this task's rule is `converge_within` of the optimum, not a wrong-bits threshold
    solved_at_most = None  # the targets are random bits: no size is ever "solved" in the wrong-bits sense

    def __init__(self, context_bits: int = 5, train_sizes=(200, 200), test_sizes=(400,),
                 converge_within: float | None = 1.0):
        if context_bits < 1:
            raise ValueError(f"ngrams: context_bits must be >= 1, got {context_bits}")
        self.name = "ngrams"
        self.context_bits = context_bits
        self.contexts = 1 << context_bits
        self.input_size = 1
        self.output_size = 1
        self.train_sizes = parse_train_sizes("ngrams", train_sizes, self.size_parts)
        if self.train_sizes["length"][0] < context_bits + 1:
            raise ValueError(f"ngrams: train_sizes.length needs at least context_bits + 1 = "
                             f"{context_bits + 1} bits, got {list(self.train_sizes['length'])}")
        test_sizes = parse_test_sizes("ngrams", test_sizes, self.size_parts)
        self.test_sizes = [self.check_size(size) for size in test_sizes]
        self.converge_within = converge_within

    def check_size(self, size) -> Size:
        size = super().check_size(size)
        if size[0] < self.context_bits + 1:
            raise ValueError(f"ngrams: a sequence needs at least context_bits + 1 = {self.context_bits + 1} "
                             f"bits to score one, got length={size[0]}")
        return size

    def sample_size(self, generator: torch.Generator) -> Size:
        return (uniform_int(*self.train_sizes["length"], generator),)

    def steps_for(self, size: Size) -> int:
        return size[0] - 1

    def scored_steps(self, size: Size) -> int:
        return size[0] - self.context_bits  # the bits with a full context

    def trivial_error(self, size: Size) -> float:
        """The loss (the error's metric) of predicting 1/2 at every scored bit, the best constant (a bit is 1 with
        probability 1/2 under the symmetric prior): 1 bit each."""
        return float(self.scored_steps(self.check_size(size)))

    def _draw(self, length: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The random numbers behind one sequence: its table, its first bits and one uniform per later bit."""
        table = random_table(self.contexts, generator)  # [2^c]
        first = random_bits((self.context_bits,), generator)  # [c]
        uniforms = torch.rand(length - self.context_bits, generator=generator, dtype=torch.float64)  # [L - c]
        return table, first, uniforms

    def _build(self, sizes: list[Size], draws: list[tuple[torch.Tensor, ...]]) -> Batch:
        lengths = [size[0] for size in sizes]
        longest = max(lengths)
        # Padding uniforms of 1.0 give bits 0; `layout` zeroes everything past each example's end anyway.
        uniforms = torch.ones(len(sizes), longest - self.context_bits, dtype=torch.float64)
        for b, (_, _, drawn) in enumerate(draws):
            uniforms[b, : drawn.shape[0]] = drawn
        table = torch.stack([d[0] for d in draws])  # [B, 2^c]
        first = torch.stack([d[1] for d in draws])  # [B, c]
        bits = generate_bits(table, first, uniforms)  # [B, longest]
        inputs, targets, mask = layout(bits, lengths, self.context_bits)
        return Batch(inputs, targets, mask, torch.tensor(sizes, dtype=torch.int64))

    def example(self, size: Size, generator: torch.Generator):
        batch = self.examples(size, 1, generator)
        return batch.inputs[0], batch.targets[0], batch.mask[0]

    def examples(self, size: Size, count: int, generator: torch.Generator) -> Batch:
        """`count` examples: each one's draws in turn, then the bit recurrence over the whole batch. The draws stay
        three calls per example: a float64 uniform takes two 32-bit numbers of the stream, which no single call
        returns together with the first bits' (`tasks.base.draws_modulo`)."""
        return self._build([size] * count, [self._draw(size[0], generator) for _ in range(count)])

    def sample(self, batch_size: int, generator: torch.Generator, size: Size | int | None = None) -> Batch:
        """As `Task.sample`: the same draws in the same order, but the bit recurrence runs over the batch, also when
        each example draws its own size."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        fixed = None if size is None else self.check_size(size)
        sizes, draws = [], []
        for _ in range(batch_size):
            example_size = fixed if fixed is not None else self.sample_size(generator)
            sizes.append(example_size)
            draws.append(self._draw(example_size[0], generator))
        return self._build(sizes, draws)

    def reference_metrics(self, batch: Batch) -> dict[str, float]:
        loss = optimal_loss_bits(batch.inputs.cpu(), batch.targets.cpu(), batch.mask.cpu(), self.context_bits)
        return {"optimal_loss_bits_per_seq": float(loss.sum())}

    @property
    def convergence(self) -> Rule | None:
        """The loss gap to the Bayes optimum below `converge_within` (None: no threshold). It needs the
        ``optimal_loss_bits_per_seq`` column that `reference_metrics` adds to the evaluation metrics."""
        if self.converge_within is None:
            return None
        return Rule(self.error.metric, self.converge_within, "<", self.error.reference)
