"""Measure the NTM's training throughput in sequences per second (forward + backward + Adam step), eager mode.

Paper config by default: batch 32, Copy with L = 20 fixed (T = 41), 128 x 20 memory, 100 controller units.

    python scripts/ntm_throughput.py [--steps 20] [--warmup 3] [--threads 2] [--batch-size 32] [--length 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.metrics import loss_nats_per_seq  # noqa: E402
from bench.registry import build_model, build_task  # noqa: E402


def measure(steps: int, warmup: int, batch_size: int, length: int, model_params: dict) -> float:
    """Training sequences per second over `steps` timed steps, after `warmup` untimed ones."""
    torch.manual_seed(0)
    task = build_task("copy", bits=8, train_sizes=[length, length])
    model = build_model("ntm", task.input_size, task.output_size, **model_params)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = task.sample(batch_size, torch.Generator().manual_seed(0), size=length)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_nats_per_seq(model(batch.inputs), batch.targets, batch.mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
        optimizer.step()

    for _ in range(warmup):
        train_step()
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    elapsed = time.perf_counter() - start
    return steps * batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seq_per_s = measure(args.steps, args.warmup, args.batch_size, args.length, {})
    print(f"ntm eager training: {seq_per_s:.1f} seq/s (batch {args.batch_size}, copy L={args.length}, "
          f"T={2 * args.length + 1}, 128x20 memory, 100 units, {args.threads} threads, torch {torch.__version__})")


if __name__ == "__main__":
    main()
