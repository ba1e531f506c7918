"""A/B of a compiled NTM through its whole-sequence C++ op against torch.compile's graphs, in one process.

    python scripts/ntm_sequence_ab.py [--threads 1] [--steps 10] [--repeats 7] [--warmup 4]

Two NTMs at the paper config (batch 32, Copy with L = 20 so T = 41, 1 x 100 controller, 128 x 20 memory, 1 read and
1 write head), built from the same seed and both compiled as training compiles them (`compile_step`), train with
`bench.perf`'s step (zero_grad, forward, loss, backward, clip 50, Adam). One runs the sequence op (`NTM.fused_steps`,
what a compiled NTM trained alone on a CPU runs); the other has `runs_fused` switched off, so it runs torch.compile's
4-step graphs with the heads kernel inside, as before the op. Their blocks of `--steps` steps alternate
(`bench.perf.interleaved_rates`), so the load changes of a shared machine hit both alike; each prints the median
seq/s of `--repeats` blocks with every block's rate, then the ratio of the medians. The torch.compile arm compiles
during its warm-up (about 25 s from a cold inductor cache).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import registry  # noqa: E402
from bench.perf import adam_clip_step, interleaved_rates  # noqa: E402

BATCH_SIZE = 32
LENGTH = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, the harness's per run)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per arm")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps per arm first (compiles)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = registry.build_task("copy", bits=8, train_sizes=[LENGTH, LENGTH])
    batch = task.sample(BATCH_SIZE, torch.Generator().manual_seed(0), size=LENGTH)
    steps = {}
    for arm in ("sequence op", "torch.compile"):
        torch.manual_seed(0)
        model = registry.build_model("ntm", task.input_size, task.output_size)
        model.compile_step()
        if arm == "torch.compile":
            model.runs_fused = lambda inputs: False  # this instance only
        elif not model.runs_fused(batch.inputs):
            print("the sequence op does not apply here (a CPU with the C++ kernel built is needed)", file=sys.stderr)
            return 1
        steps[arm] = adam_clip_step(model, batch)
    rates = interleaved_rates(steps, args.steps, args.repeats, {arm: args.warmup for arm in steps}, BATCH_SIZE)
    print(f"training seq/s, {args.repeats} blocks of {args.steps} steps, interleaved: batch {BATCH_SIZE}, copy "
          f"L={LENGTH}, paper config, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for arm, values in rates.items():
        print(f"{arm:>14}: median {statistics.median(values):8.1f}  blocks {', '.join(f'{v:.0f}' for v in values)}")
    ratio = statistics.median(rates["sequence op"]) / statistics.median(rates["torch.compile"])
    print(f"sequence op / torch.compile: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
