"""The task interface: a `Task` draws `Batch`es of one algorithmic problem from an explicit generator.

A task knows its input/output widths, its training-size distribution, its generalisation sizes, the error the report
shows for it (`Measure`) and its convergence and solved rules (`Rule`). Sampling is pure: the same `torch.Generator`
state always yields the same batch. Examples of different sizes share a batch by padding at the END with zero inputs,
zero targets and mask 0 (docs/TASKS.md, "Padding and masks").

This package imports nothing from `bench`: the harness finds the tasks through `tasks.TASKS`.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

Size = tuple[int, ...]  # one example's size: (L,) for Copy, (L, n) for Repeat Copy, ...

#: the comparisons a `Rule` may use, and how its text writes them
RULE_OPS = {"<": operator.lt, "<=": operator.le}
RULE_SIGNS = {"<": "<", "<=": "≤"}
#: how a rule's text names a metric column (a column not listed here is named as it is)
METRIC_WORDS = {"wrong_bits_per_seq": "wrong bits/seq", "loss_bits_per_seq": "loss",
                "optimal_loss_bits_per_seq": "the Bayes optimum"}


def _from_json(cls, data: Mapping[str, Any]):
    """An instance of the dataclass `cls` from its `asdict` form; keys it does not know are ignored."""
    names = {f.name for f in fields(cls)}
    return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class Measure:
    """A task's error as the report plots and tabulates it: a per-sequence metric column, less a reference column
    when one is named (N-Grams: the loss less the Bayes-optimal loss on the same sequences, so 0 is optimal).

    The column names are those evaluation writes (curves.csv, generalization.csv).
    """

    metric: str = "wrong_bits_per_seq"
    reference: str | None = None
    label: str = "wrong bits/seq"   # the axis and column label
    reference_label: str = ""       # how a table header names the reference's own value, e.g. "optimum"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measure:
        return _from_json(cls, data)


WRONG_BITS = Measure()


@dataclass(frozen=True)
class Rule:
    """A threshold test on one row of evaluation metrics: ``metrics[metric] - metrics[reference] <op> threshold``,
    without the subtraction when `reference` is None.

    `op` is ``"<"`` or ``"<="``. A NaN value (a broken model) never passes. Convergence rules and solved rules are
    both Rules (docs/TASKS.md, "Convergence and solved rules"); `to_json` / `from_json` carry one through
    suite.json to the report.
    """

    metric: str
    threshold: float
    op: str = "<"
    reference: str | None = None

    def __post_init__(self) -> None:
        if self.op not in RULE_OPS:
            raise ValueError(f"a rule's op must be one of {list(RULE_OPS)}, got {self.op!r}")

    def value(self, metrics: Mapping[str, float]) -> float:
        """The number the rule compares with its threshold."""
        for column in (self.metric, self.reference):
            if column is not None and column not in metrics:
                raise KeyError(f"the rule '{self.text()}' needs {column!r} in the evaluation metrics")
        value = metrics[self.metric]
        return value if self.reference is None else value - metrics[self.reference]

    def passes(self, value: float) -> bool:
        """Whether `value` (already on the rule's scale) meets the threshold."""
        return bool(RULE_OPS[self.op](value, self.threshold))

    def holds(self, metrics: Mapping[str, float]) -> bool:
        """Whether a row of evaluation metrics meets the rule."""
        return self.passes(self.value(metrics))

    def bounds(self, measure: Measure) -> bool:
        """Whether the rule thresholds exactly `measure` (so its threshold can be drawn on that measure's axis)."""
        return (self.metric, self.reference) == (measure.metric, measure.reference)

    def text(self) -> str:
        """The rule in words, e.g. ``wrong bits/seq < 0.1``."""
        name = METRIC_WORDS.get(self.metric, self.metric)
        if self.reference is None:
            return f"{name} {RULE_SIGNS[self.op]} {self.threshold:g}"
        reference = METRIC_WORDS.get(self.reference, self.reference)
        unit = " bits/seq" if self.metric.endswith("bits_per_seq") else ""
        if self.op == "<":
            return f"{name} within {self.threshold:g}{unit} of {reference}"
        return f"{name} at most {self.threshold:g}{unit} above {reference}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rule:
        return _from_json(cls, data)


@dataclass(frozen=True)
class Convergence:
    """Where a run stands against its convergence rule, from its evaluations so far (`convergence`)."""

    step: int | None   # the first evaluation step (> 0) whose metrics met the rule; None: not converged (yet)
    streak: int        # how many of the latest evaluations in a row met it (what `stop_patience` counts)


def convergence(curve: Iterable[Mapping[str, Any]], rule: Rule | None) -> Convergence:
    """THE definition of convergence, used by training (`stop_at_convergence`), by the CSVs and by the report.

    `curve` is a run's evaluations in step order, each a mapping with ``step`` and the evaluation metrics (curve.csv's
    rows, or the loop's own). An evaluation counts when its step is above 0 (an untrained model never has converged)
    and `rule` holds for it; a NaN metric never holds. A task with no rule never converges. Changing how
    convergence is scored is a change to this function alone (docs/ARCHITECTURE.md).
    """
    first, streak = None, 0
    if rule is None:
        return Convergence(None, 0)
    for row in curve:
        if row["step"] > 0 and rule.holds(row):
            streak += 1
            if first is None:
                first = int(row["step"])
        else:
            streak = 0
    return Convergence(first, streak)


@dataclass(frozen=True)
class Batch:
    """A batch of examples. Shapes: inputs [B, T, in], targets [B, T, out], mask [B, T], sizes [B, k] (int64)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    sizes: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def steps(self) -> int:
        return self.inputs.shape[1]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.inputs.to(device), self.targets.to(device), self.mask.to(device), self.sizes.to(device))

    def pad_to(self, steps: int) -> Batch:
        """The same batch padded at the end to `steps` time steps (zero input, zero target, mask 0)."""
        extra = steps - self.steps
        if extra < 0:
            raise ValueError(f"cannot pad a batch of {self.steps} steps down to {steps}")
        if extra == 0:
            return self
        pad = (0, 0, 0, extra)
        return Batch(
            torch.nn.functional.pad(self.inputs, pad),
            torch.nn.functional.pad(self.targets, pad),
            torch.nn.functional.pad(self.mask, (0, extra)),
            self.sizes,
        )


def uniform_int(low: int, high: int, generator: torch.Generator) -> int:
    """An integer drawn uniformly from {low, ..., high}, both ends included."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def random_bits(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Bernoulli(0.5) bits as float32."""
    return torch.randint(0, 2, tuple(shape), generator=generator).to(torch.float32)


def draws_modulo(modulus: int, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """`shape` integers (int64), each one 32-bit number of the generator's stream modulo `modulus` (< 2^32).

    `torch.randint(low, high)` on a CPU generator takes one 32-bit number r per value (high - low < 2^32) and gives
    ``r % (high - low) + low``, in row-major order; `torch.rand` (float32) takes one and gives ``(r % 2^24) / 2^24``.
    Since ``(r % M) % m == r % m`` whenever m divides M, one call with M a multiple of every modulus an example
    uses replaces several calls of different moduli, drawing the same numbers in the same order: a vectorised
    sampler draws a whole batch this way (`random_bits` is ``% 2``, `uniform_int` ``% (high - low + 1)``,
    `uniform_float` ``% 2^24``). tests/test_sampling.py checks each task's batches against its per-example draws."""
    if not 1 <= modulus < 1 << 32:
        raise ValueError(f"a modulus must be in [1, 2^32), got {modulus}")
    return torch.randint(0, modulus, tuple(shape), generator=generator)


#: the float32 uniforms of `torch.rand` use 24 bits of each 32-bit number (`uniform_float`)
FLOAT_DRAW = 1 << 24


def uniform_float(draws: torch.Tensor) -> torch.Tensor:
    """The float32 uniforms on [0, 1) that `torch.rand` makes of the same 32-bit numbers, from `draws_modulo` values
    taken modulo a multiple of `FLOAT_DRAW` (exact: an integer below 2^24 times 2^-24)."""
    return (draws % FLOAT_DRAW).to(torch.float32) * (1.0 / FLOAT_DRAW)


class Task:
    """Base class of every task. Subclasses set the widths and implement `sample_size` and `example`.

    Subclasses must set `name`, `input_size`, `output_size`, `size_parts` (the names of a size's parts, e.g.
    ``("L", "n")``), `train_sizes` (a readable description of the training range, for the report) and
    `test_sizes` (the generalisation sizes, each a tuple matching `size_parts`).

    The rules are data: `convergence` and `solved_when` are `Rule`s (or None), built from `converge_below` and
    `solved_at_most`; `error` is the `Measure` the report shows. `facts()` gives all of it as plain JSON data.
    `version` numbers the task's protocol (its evaluation data and rules); `bench.protocol` fingerprints it.
    """

    name: str = "task"
    #: the version of the task's protocol: its evaluation data and rules (docs/TASKS.md, "Protocol versions and
    #: fingerprints"). A task bumps it whenever what it is evaluated on or scored by changes.
    version: int = 1
    input_size: int
    output_size: int
    size_parts: tuple[str, ...] = ("L",)
    train_sizes: dict[str, tuple[int, int]]
    test_sizes: list[Size]
    #: the error the report plots and tabulates for this task
    error: Measure = WRONG_BITS
    #: training has converged once the evaluation set's wrong bits per sequence is below this (None: no threshold)
    converge_below: float | None = 0.1
    #: a test size counts as SOLVED when the final model's wrong bits per sequence there is at most this (None: the
    #: task has no such notion, e.g. N-Grams, whose targets are random)
    solved_at_most: float | None = 1.0

    # ---- what a subclass implements -------------------------------------------------------------------------
    def sample_size(self, generator: torch.Generator) -> Size:
        """One size drawn from the training distribution."""
        raise NotImplementedError

    def example(self, size: Size, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One example of `size`: (inputs [T, in], targets [T, out], mask [T])."""
        raise NotImplementedError

    def steps_for(self, size: Size) -> int:
        """The sequence length T of an example of `size`."""
        raise NotImplementedError

    def vectors_to_store(self, size: Size) -> int | None:
        """How many input vectors a model must hold at once to solve an example of `size` (one memory slot each in
        the textbook solution); None when the task has no such bound."""
        return None

    # ---- shared machinery -----------------------------------------------------------------------------------
    def max_train_steps(self) -> int:
        """The largest T the training distribution can produce (for static shapes on CUDA)."""
        ranges = [self.train_sizes[p] for p in self.size_parts]
        return self.steps_for(tuple(high for _, high in ranges))

    def check_size(self, size: Size) -> Size:
        size = tuple(int(s) for s in (size if isinstance(size, tuple | list) else (size,)))
        if len(size) != len(self.size_parts):
            raise ValueError(f"{self.name}: a size has {len(self.size_parts)} part(s) {self.size_parts}, got {size}")
        return size

    def size_label(self, size: Size) -> str:
        """A readable label for CSVs, e.g. ``L=10,n=20``."""
        return ",".join(f"{p}={v}" for p, v in zip(self.size_parts, size))

    def examples(self, size: Size, count: int, generator: torch.Generator) -> Batch:
        """`count` examples of one `size` as a batch: the very batch that `count` calls of `example` give, drawing the
        same random numbers in the same order. This default calls `example`; each built-in task overrides it with
        code that builds the whole batch at once (docs/ARCHITECTURE.md, "Adding a task")."""
        return collate([(size, *self.example(size, generator)) for _ in range(count)])

    def sample(self, batch_size: int, generator: torch.Generator, size: Size | int | None = None) -> Batch:
        """A batch of `batch_size` examples. `size=None` draws each example's size from the training distribution.

        Either way the generator is consumed as if each example were drawn in turn (its size, then `example`): a
        fixed size goes to `examples` in one call; drawn sizes go one example at a time, padded at the end."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if size is not None:
            return self.examples(self.check_size(size), batch_size, generator)
        parts = []
        for _ in range(batch_size):
            example_size = self.sample_size(generator)
            parts.append(self.examples(example_size, 1, generator))
        return concat(parts)

    def reference_metrics(self, batch: Batch) -> dict[str, float]:
        """Extra per-batch reference numbers (summed over the batch's examples), e.g. a Bayes-optimal loss."""
        return {}

    @property
    def convergence(self) -> Rule | None:
        """The convergence rule on the evaluation metrics (None: the task has no threshold)."""
        return None if self.converge_below is None else Rule("wrong_bits_per_seq", self.converge_below, "<")

    @property
    def solved_when(self) -> Rule | None:
        """When a test size counts as solved by a final model (None: the task has no such notion)."""
        return None if self.solved_at_most is None else Rule("wrong_bits_per_seq", self.solved_at_most, "<=")

    def facts(self) -> dict[str, Any]:
        """What a report needs to know of this task without building it, as plain JSON data: the sizes, the error
        measure, the convergence and solved rules (`Rule.to_json`, or None), the test size at twice the training
        range, and the trivial predictor's expected error (`trivial_error`) at each test size (in the order of
        ``test_sizes``) and over the training distribution (`trivial_train_error`), which the report's scorecard
        scores against."""
        convergence, solved, double = self.convergence, self.solved_when, self.double_size()
        return {"name": self.name, "size_parts": list(self.size_parts),
                "train_sizes": {p: list(r) for p, r in self.train_sizes.items()},
                "test_sizes": [list(s) for s in self.test_sizes],
                "error": self.error.to_json(),
                "convergence": None if convergence is None else convergence.to_json(),
                "solved": None if solved is None else solved.to_json(),
                "test_size_2x": None if double is None else list(double),
                "trivial_errors": [self.trivial_error(s) for s in self.test_sizes],
                "trivial_error_train": self.trivial_train_error()}

    # ---- the trivial predictor: what the scorecard's 0 is (docs/TASKS.md, "Scores") -------------------------------
    def scored_steps(self, size: Size) -> int:
        """How many time steps of an example of `size` are scored (mask 1). This default counts the mask of one
        example drawn from a fixed generator, which is exact for a task whose mask depends on the size alone; the
        built-in tasks give the count by formula."""
        return int(self.example(self.check_size(size), torch.Generator().manual_seed(0))[2].sum())

    def trivial_error(self, size: Size) -> float:
        """The trivial predictor's expected value, at `size`, of the error measure's metric column (`error.metric`,
        before any reference is subtracted). The trivial predictor is the best constant output: the same value at
        every scored step of every sequence, whatever the input. Where the targets are fair random bits, every
        constant gets half of them wrong, so this default is scored steps × output bits / 2. A task whose targets
        hold anything else overrides it (Repeat Copy's end marker, N-Grams' loss)."""
        return self.scored_steps(self.check_size(size)) * self.output_size / 2

    def train_size_distribution(self) -> dict[Size, float]:
        """Every size the training distribution draws, with its probability: each part uniform on its range,
        independently of the others (as the built-in `sample_size`s draw them). A task that draws otherwise
        overrides it (Priority Sort)."""
        ranges = [range(low, high + 1) for low, high in (self.train_sizes[p] for p in self.size_parts)]
        count = math.prod(len(r) for r in ranges)
        return {size: 1.0 / count for size in itertools.product(*ranges)}

    def trivial_train_error(self) -> float:
        """The trivial predictor's expected error (as `trivial_error`) on one sequence of the training
        distribution."""
        return float(sum(p * self.trivial_error(size) for size, p in self.train_size_distribution().items()))

    def ordered_test_sizes(self, sizes: Sequence[Size] | None = None) -> list[Size]:
        """Test sizes from the shortest sequence to the longest (ties by the size itself)."""
        return sorted((self.check_size(s) for s in (self.test_sizes if sizes is None else sizes)),
                      key=lambda s: (self.steps_for(s), s))

    def double_size(self) -> Size | None:
        """The smallest test size whose every part is at least twice the longest training value of that part."""
        highs = [self.train_sizes[p][1] for p in self.size_parts]
        for size in self.ordered_test_sizes():
            if all(v >= 2 * hi for v, hi in zip(size, highs)):
                return size
        return None

    def solved_extent(self, errors: dict[Size, float]) -> dict[str, object]:
        """How far a final model generalises, from its value of the solved rule's metric (wrong bits/seq) at each
        test size (`errors`).

        Returns ``solved_up_to``: the label of the longest test size reached from the shortest one through solved
        sizes only (None when the shortest is not solved); ``test_size_2x``: the label of `double_size()`; and
        ``solved_2x``: whether that size is solved (None when the task has no solved rule or no such size, or
        the size was not scored).
        """
        double = self.double_size()
        result: dict[str, object] = {"solved_up_to": None,
                                     "test_size_2x": None if double is None else self.size_label(double),
                                     "solved_2x": None}
        rule = self.solved_when
        if rule is None:
            return result
        errors = {self.check_size(size): float(value) for size, value in errors.items()}

        def solved(size: Size) -> bool:
            return rule.passes(errors[size])  # NaN (a broken model) is never solved

        for size in self.ordered_test_sizes(list(errors)):
            if not solved(size):
                break
            result["solved_up_to"] = self.size_label(size)
        if double is not None and double in errors:
            result["solved_2x"] = solved(double)
        return result

    def describe(self) -> str:
        ranges = ", ".join(f"{p} in [{lo}, {hi}]" for p, (lo, hi) in self.train_sizes.items())
        return f"{self.name}: train {ranges}"


def collate(parts: list[tuple[Size, torch.Tensor, torch.Tensor, torch.Tensor]]) -> Batch:
    """Stack examples of possibly different lengths, padding each at the end with zeros and mask 0."""
    steps = max(inputs.shape[0] for _, inputs, _, _ in parts)
    batch_size = len(parts)
    in_width = parts[0][1].shape[1]
    out_width = parts[0][2].shape[1]
    inputs = torch.zeros(batch_size, steps, in_width)
    targets = torch.zeros(batch_size, steps, out_width)
    mask = torch.zeros(batch_size, steps)
    for b, (_, x, y, m) in enumerate(parts):
        inputs[b, : x.shape[0]] = x
        targets[b, : y.shape[0]] = y
        mask[b, : m.shape[0]] = m
    sizes = torch.tensor([s for s, _, _, _ in parts], dtype=torch.int64)
    return Batch(inputs, targets, mask, sizes)


def concat(batches: list[Batch]) -> Batch:
    """Batches one after another along the batch dimension, each padded at the end to the longest (as `collate`)."""
    steps = max(batch.steps for batch in batches)
    padded = [batch.pad_to(steps) for batch in batches]
    return Batch(*(torch.cat([getattr(b, name) for b in padded]) for name in ("inputs", "targets", "mask", "sizes")))


def fixed_sizes(size: Size, count: int) -> torch.Tensor:
    """A batch's `sizes` [count, k] (int64) when every example has `size`."""
    return torch.tensor([size], dtype=torch.int64).expand(count, -1).clone()


def parse_train_sizes(name: str, value, parts: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Normalise `train_sizes`: ``[lo, hi]`` for a one-part size, or ``{part: [lo, hi], ...}`` for several."""
    if not isinstance(value, dict):
        if len(parts) != 1:
            raise ValueError(f"{name}: train_sizes must map each of {list(parts)} to [low, high]")
        value = {parts[0]: value}
    if set(value) != set(parts):
        raise ValueError(f"{name}: train_sizes must give exactly {list(parts)}, got {sorted(value)}")
    ranges = {}
    for part in parts:
        pair = value[part]
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(v, int) for v in pair)):
            raise ValueError(f"{name}: train_sizes.{part} must be [low, high] integers, got {pair!r}")
        low, high = int(pair[0]), int(pair[1])
        if low < 1 or high < low:
            raise ValueError(f"{name}: train_sizes.{part} needs 1 <= low <= high, got [{low}, {high}]")
        ranges[part] = (low, high)
    return ranges


def parse_test_sizes(name: str, value, parts: tuple[str, ...]) -> list[Size]:
    """Normalise `test_sizes`: a list of ints for one-part sizes, or a list of ``[a, b]`` lists."""
    sizes = []
    for item in value:
        size = tuple(item) if isinstance(item, list | tuple) else (item,)
        if len(size) != len(parts) or not all(isinstance(v, int) and v >= 1 for v in size):
            raise ValueError(f"{name}: each test size must be {len(parts)} positive integer(s) {list(parts)}, "
                             f"got {item!r}")
        sizes.append(tuple(int(v) for v in size))
    return sizes
