"""Measure the DNC's training throughput in sequences per second: forward + backward + norm clip + Adam, eager mode.

The seed's comparison setting by default: batch 32, Copy with L = 20 fixed (T = 41), 128 x 20 memory, 100 controller
units, 1 read and 1 write head. Prints one line; the median over `--repeats` timed blocks resists a noisy machine.

    python scripts/dnc_throughput.py [--steps 10] [--repeats 3] [--warmup 2] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.metrics import loss_nats_per_seq  # noqa: E402
from bench.registry import build_model, build_task  # noqa: E402

CLIP_NORM = 50.0  # the paper protocol's global-norm clip


def train_seq_per_s(steps: int, repeats: int, warmup: int, batch_size: int, length: int,
                    device: torch.device) -> list[float]:
    """Sequences per second of each of `repeats` blocks of `steps` training steps, after `warmup` untimed steps."""
    torch.manual_seed(0)
    task = build_task("copy", bits=8, train_sizes=[length, length])
    model = build_model("dnc", task.input_size, task.output_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = task.sample(batch_size, torch.Generator().manual_seed(0), size=length).to(device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        optimizer.step()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        train_step()
    rates = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            train_step()
        synchronize()
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rates = train_seq_per_s(args.steps, args.repeats, args.warmup, args.batch_size, args.length, device)
    print(f"dnc eager training: {statistics.median(rates):.1f} seq/s median of {[round(r, 1) for r in rates]} "
          f"(batch {args.batch_size}, copy L={args.length}, T={2 * args.length + 1}, 128x20 memory, 100 units, "
          f"device {device}, {args.threads} threads, torch {torch.__version__})")


if __name__ == "__main__":
    main()
