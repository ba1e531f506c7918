"""The interface every sequence model implements.

A model maps ``inputs [B, T, input_size]`` to ``logits [B, T, output_size]`` and is built from
``(input_size, output_size, **params)``. Memory models may also return a `Trace` with ``forward(inputs, trace=True)``:
a dict of per-step tensors, each ``[B, T, ...]`` (e.g. ``read_weights [B, T, heads, N]``), for the report's heat maps.
Models are causal: the output at step t depends on inputs 0..t only, so padding at the end never changes it.

A model's parameters are one frozen dataclass, a subclass of `ModelConfig` named by the model's `config_class`; the
registry reads the allowed parameter names and their defaults from its fields. Each field states its default and the
check its value must pass (`param(default, check)`), and the dataclass checks every field when it is built. Its
`SMALL` class attribute gives small sizes for the tests, the smoke suite and ``perf --quick``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

Trace = dict[str, torch.Tensor]

#: truncated-normal initialisers cut at this many standard deviations (like TensorFlow's truncated_normal)
TRUNCATION_STDS = 2.0


# ---- parameters and their checks ------------------------------------------------------------------------------------
class ParamCheck(NamedTuple):
    """What one parameter allows: `test(value)` is true for an allowed value, `allowed` says in words what is."""

    test: Callable[[Any], bool]
    allowed: str  # completes "NAME must be ..."


def integer(minimum: int = 1) -> ParamCheck:
    """An int (not a bool) >= `minimum`."""
    return ParamCheck(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
                      f"an integer >= {minimum}")


def positive_number() -> ParamCheck:
    """An int or float (not a bool) > 0."""
    return ParamCheck(lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0, "a number > 0")


def number() -> ParamCheck:
    """Any int or float (not a bool)."""
    return ParamCheck(lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number")


def one_of(*choices: Any) -> ParamCheck:
    """One of `choices`."""
    return ParamCheck(lambda v: v in choices, f"one of {list(choices)}")


def boolean() -> ParamCheck:
    """True or False."""
    return ParamCheck(lambda v: isinstance(v, bool), "true or false")


def check_value(model: str, name: str, value: Any, check: ParamCheck) -> None:
    """Raise a ValueError naming `model`, the parameter `name` and what `check` allows, unless `value` passes it."""
    if not check.test(value):
        raise ValueError(f"{model}: {name} must be {check.allowed}, got {value!r}")


def check_widths(model: str, input_size: Any, output_size: Any) -> None:
    """The input and output widths a task gives a model are integers >= 1."""
    check_value(model, "input_size", input_size, integer(1))
    check_value(model, "output_size", output_size, integer(1))


def param(default: Any, check: ParamCheck | None = None) -> Any:
    """A `ModelConfig` field: its default, and the check `ModelConfig.__post_init__` runs on it."""
    return dataclasses.field(default=default, metadata={"check": check})


Config = TypeVar("Config", bound="ModelConfig")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of every model's parameter dataclass. A subclass sets `model` (the name that starts its error messages)
    and `SMALL`, and declares its fields with `param`; one with checks between fields extends `__post_init__`."""

    #: the model's name, which starts every error message
    model: ClassVar[str] = "model"
    #: small sizes for the tests, the smoke suite and ``perf --quick``: field name -> value
    SMALL: ClassVar[dict[str, Any] | None] = None

    def __post_init__(self) -> None:
        """Run every field's check; a ValueError names the first field that fails it."""
        for field in dataclasses.fields(self):
            check = field.metadata.get("check")
            if check is not None:
                check_value(self.model, field.name, getattr(self, field.name), check)

    @classmethod
    def of(cls: type[Config], config: Config | None = None, **params: Any) -> Config:
        """`config` (default: every default) with the fields named in `params` replaced; a TypeError names an
        unknown parameter and lists the allowed ones."""
        allowed = [field.name for field in dataclasses.fields(cls)]
        for key in params:
            if key not in allowed:
                raise TypeError(f"{cls.model}: unknown parameter {key!r}; allowed: {', '.join(allowed)}")
        if config is None:
            return cls(**params)
        if not isinstance(config, cls):
            raise TypeError(f"{cls.model}: config must be of type {cls.__name__}, got {config!r}")
        return dataclasses.replace(config, **params) if params else config


# ---- initialisers ---------------------------------------------------------------------------------------------------
def truncated_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """In-place N(0, std^2) cut at +-2 std, like TensorFlow's truncated_normal (trunc_normal_ takes ABSOLUTE bounds)."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-TRUNCATION_STDS * std, b=TRUNCATION_STDS * std)


def truncated_normal_linear_(layer: nn.Linear) -> None:
    """Kernel ~ truncated normal, std 1/sqrt(fan_in), cut at +-2 std; bias zero."""
    truncated_normal_(layer.weight, 1.0 / math.sqrt(layer.in_features))
    nn.init.zeros_(layer.bias)


class SequenceModel(nn.Module):
    """Base class: subclasses implement `forward(inputs, trace=False)`."""

    #: the dataclass of this model's parameters (a `ModelConfig`); the registry reads the allowed parameters and their
    #: defaults from its fields. A model without one (a plugin written as a plain class) is read from its signature.
    config_class: ClassVar[type[ModelConfig] | None] = None
    #: whether `forward(..., trace=True)` returns memory weightings worth plotting
    has_memory: bool = False

    def forward(self, inputs: torch.Tensor, trace: bool = False):  # pragma: no cover - interface
        raise NotImplementedError

    def parameter_count(self) -> int:
        """The number of trainable scalars (what the results report as `params`)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class RecurrentModel(SequenceModel):
    """A model whose forward loops one pure step over time, exposed so the harness can batch and compile it:

    - ``initial_state(batch_size, device, dtype)``: the state before the first step (a pytree of tensors, which may
      depend on the parameters, e.g. a learned initial memory);
    - ``step(x_t, state) -> (logits_t, state)``: one time step, a pure function of its tensors (no in-place updates
      of its inputs, no data-dependent Python control flow), so that it can be `torch.func.vmap`-ed over a
      population of seeds and compiled with `torch.compile`.

    `forward` runs the steps with `run`, which uses the compiled steps after `compile_step`. The harness trains several
    seeds of such a model as one vmapped computation of its steps (bench.train.BatchedForward).
    """

    #: time steps per call of the compiled function: a few steps compiled unrolled pay the per-call overhead of a
    #: compiled function (guards, wrappers, autograd nodes) once per chunk; a subclass sets what measures fastest
    compile_unroll: int = 1
    #: the shortest step budget for which `compile: auto` compiles this model's step: where the time a compiled step
    #: saves over an eager one has paid for a cold compile. 10,000 unless a model measured its own (docs/PERFORMANCE.md,
    #: "When `compile: auto` compiles")
    compile_break_even_steps: int = 10_000

    def initial_state(self, batch_size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32):  # pragma: no cover - interface
        raise NotImplementedError

    def step(self, x_t: torch.Tensor, state):  # pragma: no cover - interface
        raise NotImplementedError

    def runs_fused(self, inputs: torch.Tensor) -> bool:
        """Whether this model, compiled and trained alone, runs these inputs [B, T, in] through `fused_steps` (its own
        fused op, such as the NTM's C++ sequence op on a CPU) instead of torch.compile's graphs. A compiled group of
        seeds (`bench.forward.BatchedForward`) keeps torch.compile's vmapped graphs. False unless a model overrides
        it."""
        return False

    def fused_steps(self, inputs: torch.Tensor, state):
        """What a compiled model runs where `runs_fused`: the whole sequence, like `steps`, as a fused op."""
        raise NotImplementedError(f"{type(self).__name__} has no fused steps")

    def steps(self, inputs: torch.Tensor, state):
        """`step` over inputs [B, k, in] -> (logits [B, k, out], the last state)."""
        logits = []
        for x_t in inputs.unbind(1):
            logits_t, state = self.step(x_t, state)
            logits.append(logits_t)
        return torch.stack(logits, dim=1), state

    def compile_step(self, **options) -> None:
        """Compile `steps` on chunks of `compile_unroll` time steps, and `step` for a remainder, with `torch.compile`
        (never the whole unrolled sequence, whose compile takes far longer)."""
        compiled = (torch.compile(self.steps, **options), torch.compile(self.step, **options))
        object.__setattr__(self, "_compiled", compiled)  # not submodules
        object.__setattr__(self, "_cuda_graphs", options.get("mode") == "reduce-overhead")

    def run(self, inputs: torch.Tensor, state):
        """All time steps of inputs [B, T, in] -> (logits [B, T, out], the last state); compiled after
        `compile_step` (through the model's `fused_steps` where it `runs_fused`). Without gradients (evaluation) a
        step compiled with CUDA graphs runs eagerly: with no backward pending, every call would start a new graph
        iteration and overwrite the previous chunk's outputs."""
        compiled = self.__dict__.get("_compiled")
        if compiled is not None and self.runs_fused(inputs):
            return self.fused_steps(inputs, state)
        if compiled is None or (self.__dict__.get("_cuda_graphs") and not torch.is_grad_enabled()):
            return self.steps(inputs, state)
        return run_unrolled(*compiled, self.compile_unroll, inputs, state, time_dim=1)


def run_unrolled(steps, step, unroll: int, inputs: torch.Tensor, state, time_dim: int):
    """Run `steps` on chunks of `unroll` time steps of `inputs` (time on `time_dim`) and `step` on the remainder, so
    a compiled `steps` sees one shape whatever the sequence length. Returns (logits, last state)."""
    length = inputs.shape[time_dim]
    whole = length - length % unroll
    chunks = []
    for start in range(0, whole, unroll):
        logits, state = steps(inputs.narrow(time_dim, start, unroll), state)
        chunks.append(logits)
    for t in range(whole, length):
        logits_t, state = step(inputs.select(time_dim, t), state)
        chunks.append(logits_t.unsqueeze(time_dim))
    return torch.cat(chunks, dim=time_dim), state


def set_lstm_forget_bias(lstm: nn.LSTM | nn.LSTMCell, value: float = 1.0) -> None:
    """Zero both bias vectors, then put `value` on the forget gate of ONE of them (else the effective bias is 2x)."""
    with torch.no_grad():
        for name, param in lstm.named_parameters():
            if name.startswith("bias_"):
                param.zero_()
                if name.startswith("bias_ih"):
                    units = param.shape[0] // 4  # gate order: input, forget, cell, output
                    param[units : 2 * units] = value


def stack_time(steps: list[torch.Tensor]) -> torch.Tensor:
    """Stack a list of per-step tensors [B, ...] into [B, T, ...]."""
    return torch.stack(steps, dim=1)


def lstm_cell(cell: nn.LSTMCell, x: torch.Tensor, h: torch.Tensor,
              c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One `nn.LSTMCell` step written out with plain tensor ops, so that it runs under `torch.func.vmap` (which has no
    batching rule for ``aten::lstm_cell``) and fuses under `torch.compile`. Same function, same parameters."""
    gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)  # [B, 4U]
    in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=-1)  # torch's gate order: i, f, g, o
    c = torch.sigmoid(forget_gate) * c + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
    h = torch.sigmoid(out_gate) * torch.tanh(c)
    return h, c
