"""Compare our NTM's training throughput with loudinthecloud/pytorch-ntm's at the paper config, in one process.

    python scripts/compare_pytorch_ntm.py --checkout /path/to/pytorch-ntm [--threads 1] [--steps 10] [--repeats 3]
                                          [--warmup 2] [--compiled]

pytorch-ntm (https://github.com/loudinthecloud/pytorch-ntm) is not part of this repository and nothing of it is
vendored here: `--checkout` is the user's own clone, put on `sys.path` so that its `ntm.aio.EncapsulatedNTM` can be
imported. Both models get the paper config: batch 32, Copy with L = 20 fixed, input 9 (8 bits + a delimiter channel),
output 8, a 1 x 100 LSTM controller, 128 x 20 memory, 1 read and 1 write head (their `num_heads=1` builds one of
each). Both see the same batch, drawn by our Copy task.

Theirs is driven the way its copy-task training loop drives it: `init_sequence(32)`, one call per input step for the
L + 1 steps of bits and delimiter, then L calls without input (it feeds zeros) whose outputs are collected, so a
sequence is 2L + 1 = 41 model steps, as ours is. Its loss is its own choice, `BCELoss` on its sigmoid outputs. Both
train with the same step as `bench.perf`: zero_grad, forward, loss, backward, global-norm clip 50, Adam lr 1e-3 (their
own loop uses per-element clamping and RMSprop instead; neither changes the cost of a step much).

Each measurement is the median seq/s over `--repeats` blocks of `--steps` training steps, after `--warmup` untimed
steps (2 more for the compiled step, as in `bench.perf`); the implementations' blocks are interleaved, so that the
load changes of a shared, noisy machine affect all of them alike. `--compiled` also times ours with
`model.compile_step()`, which takes 30-45 s to compile on a 2-core CPU (4 steps per compiled call).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
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
CLIP_NORM = 50.0  # the paper protocol's global-norm clip
LEARNING_RATE = 1e-3


def import_their_ntm(checkout: Path) -> type[nn.Module]:
    """`EncapsulatedNTM` from the user's pytorch-ntm checkout.

    The checkout goes at the end of `sys.path`, after our own `tasks` and `models` are imported, because it has a
    top-level `tasks` package of its own.
    """
    if not (checkout / "ntm" / "aio.py").is_file():
        print(f"error: --checkout {checkout} is not a pytorch-ntm clone: it has no ntm/aio.py", file=sys.stderr)
        raise SystemExit(2)
    registry.load_all()
    sys.path.append(str(checkout))
    from ntm.aio import EncapsulatedNTM

    module_file = Path(sys.modules["ntm"].__file__).resolve()
    if not module_file.is_relative_to(checkout):
        print(f"error: imported `ntm` from {module_file}, not from the checkout {checkout}", file=sys.stderr)
        raise SystemExit(2)
    return EncapsulatedNTM


def their_train_step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> Callable[[], None]:
    """One training step of pytorch-ntm's model; `inputs [L+1, B, in]` and `targets [L, B, out]` are time-major."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    criterion = nn.BCELoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.init_sequence(BATCH_SIZE)
        for x_t in inputs:
            model(x_t)
        outputs = torch.zeros(targets.shape)
        for t in range(targets.shape[0]):
            outputs[t], _ = model()  # no input: the model feeds zeros
        criterion(outputs, targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="a clone of loudinthecloud/pytorch-ntm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compiled", action="store_true", help="also time ours with the step compiled (~30-45 s)")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    torch.set_num_threads(args.threads)
    their_ntm_class = import_their_ntm(checkout)

    task = registry.build_task("copy", bits=BITS, train_sizes=[LENGTH, LENGTH])
    batch = task.sample(BATCH_SIZE, torch.Generator().manual_seed(0), size=LENGTH)  # inputs [B, 2L+1, 9]
    their_inputs = batch.inputs[:, : LENGTH + 1].transpose(0, 1).contiguous()  # bits and delimiter, [L+1, B, 9]
    their_targets = batch.targets[:, LENGTH + 1 :].transpose(0, 1).contiguous()  # [L, B, 8]

    torch.manual_seed(0)
    theirs = their_ntm_class(task.input_size, task.output_size, CONTROLLER_UNITS, 1, 1, MEMORY_LOCATIONS,
                             MEMORY_WIDTH)
    train_steps = {"pytorch-ntm, eager": their_train_step(theirs, their_inputs, their_targets)}
    warmups = {"pytorch-ntm, eager": args.warmup}
    for mode in ["eager"] + (["compiled step"] if args.compiled else []):
        torch.manual_seed(0)
        ours = registry.build_model("ntm", task.input_size, task.output_size)
        if mode == "compiled step":
            ours.compile_step()
        train_steps[f"ours, {mode}"] = adam_clip_step(ours, batch, LEARNING_RATE, CLIP_NORM)
        warmups[f"ours, {mode}"] = args.warmup + (2 if mode == "compiled step" else 0)
    rates = {name: statistics.median(values) for name, values in
             interleaved_rates(train_steps, args.steps, args.repeats, warmups, BATCH_SIZE).items()}
    their_rate = rates["pytorch-ntm, eager"]

    print(f"training seq/s, median of {args.repeats} x {args.steps} steps after {args.warmup} warm-up steps: batch "
          f"{BATCH_SIZE}, copy L={LENGTH} (T={2 * LENGTH + 1}), {MEMORY_LOCATIONS}x{MEMORY_WIDTH} memory, "
          f"{CONTROLLER_UNITS} units, Adam + clip {CLIP_NORM:g}")
    print(f"| {'implementation':<22} | {'seq/s':>8} | {'ratio to pytorch-ntm':>20} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 22}|")
    for name, rate in rates.items():
        print(f"| {name:<22} | {rate:>8.1f} | {rate / their_rate:>19.2f}x |")
    print(f"params: pytorch-ntm {theirs.calculate_num_params():,}, ours {ours.parameter_count():,}")
    print(f"pytorch-ntm commit {git_commit(checkout)} at {checkout}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
