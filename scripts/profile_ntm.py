"""Where a training step of the paper-size NTM spends its time: a torch.profiler breakdown by phase and by operator.

    python scripts/profile_ntm.py [--steps 30] [--threads 1] [--compiled] [--top 25]

The NTM at the paper config (1 x 100 LSTM controller, 128 x 20 memory, 1 read and 1 write head), Copy with L = 20
(T = 41), batch 32, one training step = forward, backward, global-norm clip 50, Adam: the step `make perf` times.
It prints the share of each phase (forward, backward, clip, Adam, the rest: Python between them) and the operators
with the most self CPU time, each with its share of the profiled steps. Shares are steadier than absolute times on
a shared machine, but both are from one process on one machine: say which when quoting them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import registry  # noqa: E402
from bench.forward import batch_loss  # noqa: E402

PHASES = ("forward", "backward", "clip", "adam")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="profiled steps (after 5 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compiled", action="store_true", help="compile the step as training does (compile: on)")
    parser.add_argument("--top", type=int, default=25, help="operators to list")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    registry.load_all()
    task = registry.build_task("copy")
    model = registry.build_model("ntm", task.input_size, task.output_size)
    if args.compiled:
        model.compile_step()  # the same policy as training: compile_unroll steps per compiled call
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = task.sample(32, torch.Generator().manual_seed(0), size=(20,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with record_function("forward"):
            loss = batch_loss(model, batch)
        with record_function("backward"):
            loss.backward()
        with record_function("clip"):
            torch.nn.utils.clip_grad_norm_(list(model.parameters()), 50.0)
        with record_function("adam"):
            optimizer.step()

    for _ in range(5):
        step()
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    wall = time.perf_counter() - started
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"NTM paper config, batch 32, L = 20, {args.threads} thread(s), {'compiled' if args.compiled else 'eager'}:"
          f" {args.steps} steps in {wall:.2f} s under the profiler ({32 * args.steps / wall:.0f} seq/s)")
    print("\n| phase | share of step time |\n|---|---|")
    phase_time = {e.key: e.cpu_time_total for e in events if e.key in PHASES}
    for phase in PHASES:
        print(f"| {phase} | {phase_time.get(phase, 0) / (wall * 1e6):.1%} |")
    rest = 1 - sum(phase_time.values()) / (wall * 1e6)
    print(f"| between phases (zero_grad, Python) | {rest:.1%} |")
    print("\n| operator | calls per step | self CPU share |\n|---|---|---|")
    ranked = sorted((e for e in events if e.key not in PHASES), key=lambda e: -e.self_cpu_time_total)
    for event in ranked[:args.top]:
        print(f"| `{event.key}` | {event.count / args.steps:.0f} | {event.self_cpu_time_total / total:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
