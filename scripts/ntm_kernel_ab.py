"""A/B of the NTM's fused C++ head kernel (models/_ntm_kernel.py) against its PyTorch path, in one process.

    python scripts/ntm_kernel_ab.py [--modes eager compiled] [--threads 1] [--steps 5] [--repeats 8] [--warmup 3]
                                    [--cold-compile N]

Two NTMs at the paper config (batch 32, Copy with L = 20 so T = 41, 1 x 100 controller, 128 x 20 memory, 1 read and
1 write head), built from the same seed, train with `bench.perf`'s step (zero_grad, forward, loss, backward, clip 50,
Adam): one through the kernel, one through the PyTorch path (what NTM_BENCH_NO_CPP_KERNELS=1 gives). Their blocks of
`--steps` steps alternate (`bench.perf.interleaved_rates`), so the load changes of a shared machine hit both alike;
each prints the median seq/s of `--repeats` blocks with the min-max. For `compiled` each model's step is compiled as
training compiles it (`compile_step`, 4 time steps per call) with the path fixed while it is traced: the path is a
guarded global of `models._ntm_kernel`, so torch.compile keeps one compiled entry per path. Before timing, one
profiled step of each model shows which path it really ran (calls of the kernel's op per step).

`--cold-compile N` also times N cold compiles of each path, alternating, each in a fresh process with its own empty
inductor cache (TORCHINDUCTOR_CACHE_DIR): the wall time of the first training step (tracing and compiling both
compiled functions, then the step) minus that of the second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import registry  # noqa: E402
from bench.perf import adam_clip_step, build, interleaved_rates  # noqa: E402
from models import _ntm_kernel  # noqa: E402

BATCH_SIZE = 32
LENGTH = 20
ARMS = ("kernel", "pytorch")
_LOADED = _ntm_kernel._kernel_loaded


def _use(arm: str) -> None:
    """Route the NTM's heads through the kernel or the PyTorch path: swaps the global `kernel_applies` reads (a
    guard of every compiled entry)."""
    _ntm_kernel._kernel_loaded = _LOADED if arm == "kernel" else _never


def _never() -> bool:
    return False


def _training_step(arm: str, compiled: bool, task, batch):
    model = build("ntm", {}, task, torch.device("cpu"))
    if compiled:
        model.compile_step()
    step = adam_clip_step(model, batch, compile_options={} if compiled else None)

    def run() -> None:
        _use(arm)
        step()

    return run


def _kernel_calls(step) -> int:
    """Calls of the kernel's forward op in one step of `step`."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return sum(e.count for e in prof.key_averages()
               if e.key.startswith(_ntm_kernel.HEADS.prefix) and e.key.endswith("::forward"))


def _setup():
    registry.load_all()
    task = registry.build_task("copy", train_sizes=[LENGTH, LENGTH])
    return task, task.sample(BATCH_SIZE, torch.Generator().manual_seed(0), size=LENGTH)


def measure(modes: list[str], steps: int, repeats: int, warmup: int) -> None:
    task, batch = _setup()
    for mode in modes:
        torch._dynamo.reset()
        compiled = mode == "compiled"
        arms = {arm: _training_step(arm, compiled, task, batch) for arm in ARMS}
        for arm, step in arms.items():
            step()  # compiles, in `compiled`
            print(f"{mode} {arm}: {_kernel_calls(step)} kernel calls per step", flush=True)
        rates = interleaved_rates(arms, steps, repeats, {arm: warmup for arm in ARMS}, BATCH_SIZE)
        medians = {arm: statistics.median(r) for arm, r in rates.items()}
        for arm, r in rates.items():
            print(f"{mode} {arm}: {medians[arm]:.1f} seq/s (min {min(r):.1f}, max {max(r):.1f}; "
                  f"{' '.join(f'{x:.0f}' for x in r)})", flush=True)
        print(f"{mode}: kernel / pytorch = {medians['kernel'] / medians['pytorch']:.2f}x", flush=True)


def cold_one(arm: str) -> None:
    """One cold compile in this (fresh) process: prints the seconds of the first step less the second's."""
    task, batch = _setup()
    step = _training_step(arm, True, task, batch)
    started = time.perf_counter()
    step()
    first = time.perf_counter() - started
    started = time.perf_counter()
    step()
    second = time.perf_counter() - started
    print(f"{first - second:.2f}")


def cold_compile(repeats: int, threads: int) -> None:
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for _ in range(repeats):
        for arm in ARMS:
            with tempfile.TemporaryDirectory() as cache:
                env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
                done = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--cold-one", arm],
                                      env=env, capture_output=True, text=True, check=True)
            times[arm].append(float(done.stdout.split()[-1]))
            print(f"cold compile {arm}: {times[arm][-1]:.1f} s", flush=True)
    for arm, t in times.items():
        print(f"cold compile {arm}: median {statistics.median(t):.1f} s ({', '.join(f'{x:.1f}' for x in t)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="*", choices=("eager", "compiled"), default=["eager", "compiled"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed block")
    parser.add_argument("--repeats", type=int, default=8, help="timed blocks per path")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per path before the blocks")
    parser.add_argument("--cold-compile", type=int, default=0, metavar="N", help="cold compiles per path")
    parser.add_argument("--cold-one", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if _ntm_kernel.HEADS.ops() is None:
        print("error: the NTM's C++ kernel is not available here (NTM_BENCH_NO_CPP_KERNELS set, or it failed to "
              "build)", file=sys.stderr)
        return 2
    if args.cold_one:
        cold_one(args.cold_one)
        return 0
    measure(args.modes, args.steps, args.repeats, args.warmup)
    if args.cold_compile:
        cold_compile(args.cold_compile, args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
