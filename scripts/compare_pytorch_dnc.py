"""Compare our DNC's training throughput with ixaxaar/pytorch-dnc's at the paper config, in one process.

    python scripts/compare_pytorch_dnc.py --checkout /path/to/pytorch-dnc [--threads 1] [--steps 10] [--repeats 3]
                                          [--warmup 2] [--compiled]

pytorch-dnc (https://github.com/ixaxaar/pytorch-dnc) is not part of this repository and nothing of it is vendored
here: `--checkout` is the user's own clone, put on `sys.path` so that its `dnc.DNC` can be imported. Both models get
the paper config: batch 32, Copy with L = 20 fixed (T = 2L + 1 = 41 model steps), input 9 (8 bits + a delimiter
channel), output 8, a 1 x 100 LSTM controller, 128 x 20 memory, 1 read head (and the one write head both have). Both
see the same batch, drawn by our Copy task, and train with the same step as `bench.perf`: zero_grad, forward, our
loss (sigmoid cross-entropy on the scored steps), backward, global-norm clip 50, Adam lr 1e-3.

Theirs is built as `DNC(input_size=9, hidden_size=100, rnn_type="lstm", num_layers=1, num_hidden_layers=1,
nr_cells=128, cell_size=20, read_heads=1, batch_first=True)`, its own defaults for everything else (one fused
interface layer, `independent_linears=False`; controller clip 20; CPU, `device=None`). Three things differ from a
bare call, each because the config demands it:
- `num_hidden_layers=1`: its default is 2, a 2-layer `nn.LSTM` inside each DNC layer; the config's controller is one
  layer of 100 units.
- An output projection `nn.Linear(9, 8)`: its output layer maps to `input_size` (9) and has no `output_size`
  argument, so a 9 -> 8 linear map after it gives the 8 output bits (80 parameters, counted in its total below).
- Its forward returns `(outputs, (controller_hidden, memory, read_vectors))`, with the outputs time-major
  `[T, B, 9]` even with `batch_first=True` (it stacks the steps on axis 0 and transposes only when not batch-first);
  they are transposed back to `[B, T, 9]` before the projection. It is called as its own copy task calls it:
  `hx=(None, None, None)`, `reset_experience=True`, the whole sequence in one call.
It imports and runs unchanged with torch 2.13: no monkeypatching.

Each measurement is the median seq/s over `--repeats` blocks of `--steps` training steps, after `--warmup` untimed
steps (2 more for the compiled step, as in `bench.perf`); the implementations' blocks are interleaved, so that the
load changes of a shared, noisy machine affect all of them alike. The table also gives each one's spread (min-max
seq/s over the blocks). `--compiled` also times ours with `model.compile_step()`, which takes about 60 s to compile on
a 2-core CPU (4 steps per compiled call).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import registry  # noqa: E402
from bench.perf import adam_clip_step, interleaved_rates  # noqa: E402
from bench.provenance import git_commit  # noqa: E402

BATCH_SIZE = 32
LENGTH = 20  # Copy's L; a sequence is 2L + 1 steps
BITS = 8
CONTROLLER_UNITS = 100
MEMORY_LOCATIONS = 128
MEMORY_WIDTH = 20
READ_HEADS = 1
CLIP_NORM = 50.0  # the paper protocol's global-norm clip
LEARNING_RATE = 1e-3
THEIRS = "pytorch-dnc, eager"


class CheckoutError(Exception):
    """The `--checkout` folder holds no importable pytorch-dnc."""


def import_their_dnc(checkout: Path) -> type[nn.Module]:
    """`DNC` from the user's pytorch-dnc checkout.

    The checkout goes at the end of `sys.path`, after our own `tasks` and `models` are imported, because it has a
    top-level `tasks` package of its own.
    """
    if not (checkout / "dnc" / "dnc.py").is_file():
        raise CheckoutError(f"--checkout {checkout} is not a pytorch-dnc clone: it has no dnc/dnc.py")
    registry.load_all()
    sys.path.append(str(checkout))
    from dnc import DNC

    module_file = Path(sys.modules["dnc"].__file__).resolve()
    if not module_file.is_relative_to(checkout):
        raise CheckoutError(f"imported `dnc` from {module_file}, not from the checkout {checkout}")
    return DNC


class TheirModel(nn.Module):
    """pytorch-dnc's DNC at the config, with a 9 -> 8 output projection; inputs [B, T, 9] -> logits [B, T, 8]."""

    def __init__(self, dnc_class: type[nn.Module], input_size: int, output_size: int):
        super().__init__()
        self.dnc = dnc_class(input_size=input_size, hidden_size=CONTROLLER_UNITS, rnn_type="lstm", num_layers=1,
                             num_hidden_layers=1, nr_cells=MEMORY_LOCATIONS, cell_size=MEMORY_WIDTH,
                             read_heads=READ_HEADS, batch_first=True)
        self.projection = nn.Linear(input_size, output_size)  # its output layer maps to input_size

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.dnc(inputs, (None, None, None), reset_experience=True)  # [T, B, in] even if batch-first
        return self.projection(outputs.transpose(0, 1))


def copy_batch():
    """The Copy task and its batch of 32 sequences with L = 20 (inputs [B, 2L+1, 9]), the same for both."""
    task = registry.build_task("copy", bits=BITS, train_sizes=[LENGTH, LENGTH])
    return task, task.sample(BATCH_SIZE, torch.Generator().manual_seed(0), size=LENGTH)


def our_train_steps(task, batch, modes: list[str], warmup: int) -> tuple[dict, dict, nn.Module]:
    """Our DNC's training step in each mode ("eager", "compiled step"), their warm-ups and the (last) model."""
    train_steps, warmups = {}, {}
    for mode in modes:
        torch.manual_seed(0)
        ours = registry.build_model("dnc", task.input_size, task.output_size, controller_units=CONTROLLER_UNITS,
                                    memory_locations=MEMORY_LOCATIONS, memory_width=MEMORY_WIDTH,
                                    read_heads=READ_HEADS)
        if mode == "compiled step":
            ours.compile_step()
        train_steps[f"ours, {mode}"] = adam_clip_step(ours, batch, LEARNING_RATE, CLIP_NORM)
        warmups[f"ours, {mode}"] = warmup + (2 if mode == "compiled step" else 0)
    return train_steps, warmups, ours


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="a clone of ixaxaar/pytorch-dnc")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compiled", action="store_true", help="also time ours with the step compiled (~30 s)")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    torch.set_num_threads(args.threads)
    try:
        their_dnc_class = import_their_dnc(checkout)
    except CheckoutError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    task, batch = copy_batch()
    torch.manual_seed(0)
    theirs = TheirModel(their_dnc_class, task.input_size, task.output_size)
    train_steps = {THEIRS: adam_clip_step(theirs, batch, LEARNING_RATE, CLIP_NORM)}
    warmups = {THEIRS: args.warmup}
    modes = ["eager"] + (["compiled step"] if args.compiled else [])
    our_steps, our_warmups, ours = our_train_steps(task, batch, modes, args.warmup)
    train_steps.update(our_steps)
    warmups.update(our_warmups)
    rates = interleaved_rates(train_steps, args.steps, args.repeats, warmups, BATCH_SIZE)
    medians = {name: statistics.median(values) for name, values in rates.items()}

    print(f"training seq/s, median of {args.repeats} x {args.steps} steps after {args.warmup} warm-up steps: batch "
          f"{BATCH_SIZE}, copy L={LENGTH} (T={2 * LENGTH + 1}), {MEMORY_LOCATIONS}x{MEMORY_WIDTH} memory, "
          f"{READ_HEADS} read head, {CONTROLLER_UNITS} units, Adam + clip {CLIP_NORM:g}")
    print(f"| {'implementation':<22} | {'seq/s':>8} | {'min-max seq/s':>15} | {'ratio to pytorch-dnc':>20} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 17}|{'-' * 22}|")
    for name, rate in medians.items():
        spread = f"{min(rates[name]):.1f}-{max(rates[name]):.1f}"
        print(f"| {name:<22} | {rate:>8.1f} | {spread:>15} | {rate / medians[THEIRS]:>19.2f}x |")
    their_params = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    print(f"params: pytorch-dnc {their_params:,} (with the 9 -> 8 projection), ours {ours.parameter_count():,}")
    print(f"pytorch-dnc commit {git_commit(checkout)} at {checkout}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
