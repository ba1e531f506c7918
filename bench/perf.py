"""`make perf`: training and inference throughput of every model at the paper config, written to a CSV.

    python -m bench.perf [--device cpu|cuda] [--quick] [--models ntm dnc lstm] [--populations 1 4 10] [--threads N]
                         [--modes eager compiled cudagraphs] [--no-compile] [--out reports/perf]

For each registered model at the paper config (batch 32, Copy with L = 20 so T = 41; every model at its defaults:
NTM and DNC 128 x 20 memory with a 100-unit controller, LSTM 3 x 256) it measures, in one process: training seq/s
and steps/s eager and with the step compiled, forward-only seq/s, peak memory, and the aggregate seq/s of P seeds
trained together (P = 1, 4, 10) with the speed-up over training those P seeds one after another, eager and with the
vmapped step compiled (each against the single run in the same mode). On CUDA it also measures the step compiled
with mode reduce-overhead (CUDA graphs, `cudagraphs`), and says whether CUDA graphs really ran: a `cudagraphs` row
counts the graphs recorded (`cuda_graphs`) and the graphs inductor compiled without them (`cudagraph_skips`; torch
logs why, and a line here warns that the row is then plain compiled code). `--quick` shrinks everything for the
tests: each model at its small sizes (its config's SMALL, the sizes of the tests and the smoke suite), and a model
without them stops the run before any measurement. perf.csv is rewritten after every measurement, so a run that is
stopped keeps what it measured.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import torch

from bench import registry
from bench.forward import CUDA_GRAPHS, BatchedForward, batch_loss, optimizer_step
from bench.gpu import cuda_graphs_recorded, cudagraph_skips
from bench.metrics import loss_nats_per_seq
from bench.provenance import device_name, resolve_device
from bench.results import atomic_write_csv
from models.base import RecurrentModel

COLUMNS = ["model", "mode", "population", "batch_size", "seq_len", "device", "device_name", "torch", "python",
           "threads", "params", "steps_per_s", "seq_per_s", "aggregate_seq_per_s", "speedup_vs_sequential",
           "peak_memory_mb", "cuda_graphs", "cudagraph_skips"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB; a process-wide peak


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Seconds per call of `fn`, the median of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2]


# ---- shared with scripts/compare_pytorch_*.py (our model against another implementation, in one process) ----------

def adam_clip_step(model: torch.nn.Module, batch, lr: float = 1e-3, clip: float = 50.0,
                   compile_options: dict | None = None) -> Callable[[], None]:
    """One training step of a model (inputs [B, T, in] -> logits [B, T, out]) on `batch`, as this module times it:
    zero_grad, forward, loss, backward, global-norm clip, Adam (`bench.forward.optimizer_step`). `compile_options`:
    those the model's step was compiled with, if any."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return functools.partial(optimizer_step, [optimizer], functools.partial(batch_loss, model, batch), clip,
                             compile_options)


def interleaved_rates(train_steps: dict[str, Callable[[], None]], steps: int, repeats: int,
                      warmups: dict[str, int], batch_size: int) -> dict[str, list[float]]:
    """Sequences per second of each training step in each of `repeats` blocks of `steps` calls, after its warm-up.

    The blocks are interleaved (one block of each step per repeat), so that a change in the machine's load between
    blocks hits every implementation alike instead of skewing the ratio.
    """
    for name, train_step in train_steps.items():
        for _ in range(warmups[name]):
            train_step()
    rates: dict[str, list[float]] = {name: [] for name in train_steps}
    for _ in range(repeats):
        for name, train_step in train_steps.items():
            start = time.perf_counter()
            for _ in range(steps):
                train_step()
            rates[name].append(steps * batch_size / (time.perf_counter() - start))
    return rates


def build(name: str, params: dict, task, device: torch.device, seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return registry.build_model(name, task.input_size, task.output_size, **params).to(device)


def _cuda_graph_use(mode: str, device: torch.device, skips_before: int) -> dict:
    """For a `cudagraphs` measurement: the CUDA graphs recorded and the graphs compiled without them since
    `skips_before` (`bench.gpu`), with a warning when that row ran as plain compiled code. Nothing for other modes."""
    if mode != "cudagraphs":
        return {}
    use = {"cuda_graphs": cuda_graphs_recorded(device), "cudagraph_skips": cudagraph_skips() - skips_before}
    if use["cudagraph_skips"] or use["cuda_graphs"] == 0:
        print(f"warning: cudagraphs: {use['cuda_graphs']} CUDA graph(s) recorded, {use['cudagraph_skips']} graph(s) "
              "compiled without them (torch's log above says why): that row is plain compiled code, at least in part",
              file=sys.stderr, flush=True)
    return use


def _show_cuda_graph_decisions() -> None:
    """Turn on torch's log of CUDA-graph decisions, off by default, so that a skipped graph says why (artifact
    `cudagraphs`; older torch logs skips as `perf_hints`)."""
    try:
        torch._logging.set_logs(cudagraphs=True, perf_hints=True)
    except TypeError:  # a torch without the `cudagraphs` artifact
        torch._logging.set_logs(perf_hints=True)


def measure_model(name: str, params: dict, args, device: torch.device) -> Iterator[dict]:
    """Eager and compiled training, forward only, and populations, for one model: each row as it is measured."""
    task = registry.build_task("copy", train_sizes=[args.length, args.length])
    batch = task.sample(args.batch_size, torch.Generator().manual_seed(0), size=args.length).to(device)
    singles = {}
    base = {"model": name, "batch_size": args.batch_size, "seq_len": batch.steps, "device": str(device)}

    # compiled: torch.compile's default mode; cudagraphs (CUDA only): mode reduce-overhead, replayed as CUDA graphs
    modes = ["eager"] if args.no_compile else ["eager", "compiled"] + (["cudagraphs"] if device.type == "cuda" else [])
    modes = [mode for mode in modes if mode in (args.modes or modes)]
    options = {"eager": None, "compiled": {}, "cudagraphs": CUDA_GRAPHS}
    for mode in modes:
        torch._dynamo.reset()  # a fresh compile cache for every measurement (see train_population)
        model = build(name, params, task, device)
        if mode != "eager":
            if not isinstance(model, RecurrentModel):
                continue  # this model has no step to compile (the LSTM runs cuDNN/oneDNN over the whole sequence)
            model.compile_step(**options[mode])
        _reset_peak(device)
        skips = cudagraph_skips()
        seconds = _timed(adam_clip_step(model, batch, compile_options=options[mode]), device,
                         args.warmup + (0 if mode == "eager" else 2), args.repeats)
        singles[mode] = {**base, "mode": f"train_{mode}", "population": 1, "params": model.parameter_count(),
                         "steps_per_s": 1 / seconds, "seq_per_s": args.batch_size / seconds,
                         "peak_memory_mb": _peak_memory_mb(device), **_cuda_graph_use(mode, device, skips)}
        yield singles[mode]

    model = build(name, params, task, device)
    with torch.no_grad():
        seconds = _timed(lambda: model(batch.inputs), device, args.warmup, args.repeats)
    yield {**base, "mode": "forward", "population": 1, "params": model.parameter_count(),
           "steps_per_s": 1 / seconds, "seq_per_s": args.batch_size / seconds,
           "peak_memory_mb": _peak_memory_mb(device)}

    for mode in modes:
        single = singles.get(mode)
        if single is None or (mode != "eager" and not isinstance(model, RecurrentModel)):
            continue  # nothing to compare with, or nothing to compile (groups of other models run one by one)
        for population in args.populations:
            if mode != "eager" and population == 1:
                continue  # that is the single compiled run
            torch._dynamo.reset()
            models = [build(name, params, task, device, seed) for seed in range(population)]
            optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
            _reset_peak(device)
            skips = cudagraph_skips()
            step = _population_step(models, optimizers, batch, options[mode])
            seconds = _timed(step, device, args.warmup + (0 if mode == "eager" else 2), args.repeats)
            aggregate = population * args.batch_size / seconds
            yield {**base, "mode": "population" if mode == "eager" else f"population_{mode}",
                   "population": population, "params": single["params"], "steps_per_s": 1 / seconds,
                   "seq_per_s": args.batch_size / seconds, "aggregate_seq_per_s": aggregate,
                   "speedup_vs_sequential": aggregate / single["seq_per_s"],
                   "peak_memory_mb": _peak_memory_mb(device), **_cuda_graph_use(mode, device, skips)}


def _population_step(models, optimizers, batch, compile_options):
    """One training step of P models on the same batch, through the training loop's own batched forward."""
    forward = BatchedForward(models, compile_options)
    inputs = batch.inputs.expand(len(models), *batch.inputs.shape).contiguous()

    def loss():
        return sum(loss_nats_per_seq(lg, batch.targets, batch.mask) for lg in forward(inputs).unbind(0))

    return functools.partial(optimizer_step, optimizers, loss, 50.0, compile_options)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--quick", action="store_true", help="tiny models and few repeats (for the tests)")
    parser.add_argument("--models", nargs="+", help="subset of models (default: every registered model)")
    parser.add_argument("--out", default=str(Path("reports") / "perf"), help="folder for perf.csv")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled measurements")
    parser.add_argument("--populations", type=int, nargs="+", help="population sizes P (default: 1 4 10)")
    parser.add_argument("--modes", nargs="+", choices=("eager", "compiled", "cudagraphs"),
                        help="training modes to measure (default: eager, compiled, and on CUDA cudagraphs)")
    args = parser.parse_args(argv)
    parsed_populations = args.populations
    args.batch_size = 32
    args.length = 20
    args.warmup, args.repeats = 3, 10
    args.populations = [1, 4, 10]
    if args.quick:
        args.length, args.warmup, args.repeats, args.populations = 4, 1, 2, [1, 2]
    if parsed_populations:
        args.populations = parsed_populations
    return args


def _frame(rows: list[dict], device: torch.device) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["device_name"] = device_name(device)
    frame["torch"] = torch.__version__
    frame["python"] = platform.python_version()
    frame["threads"] = torch.get_num_threads()
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[COLUMNS]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if "cudagraphs" in (args.modes or ()) and device.type != "cuda":
        print(f"error: --modes cudagraphs needs a CUDA device, not {device}", file=sys.stderr)
        return 2
    registry.load_all()
    names = args.models or list(registry.MODELS)
    # the paper config is every model's defaults; --quick takes each model's small sizes, all looked up before any
    # measurement so that a model without them fails at once (a RegistryError saying what to add)
    catalogue = {name: registry.small_model_params(name) if args.quick else {} for name in names}
    out = Path(args.out)
    if device.type == "cuda" and "cudagraphs" in (args.modes or ["cudagraphs"]) and not args.no_compile:
        _show_cuda_graph_decisions()
    rows = []
    for name in names:
        print(f"measuring {name} on {device} ...", file=sys.stderr, flush=True)
        measured = []
        for row in measure_model(name, catalogue[name], args, device):
            measured.append(row)
            rows.append(row)
            atomic_write_csv(out / "perf.csv", _frame(rows, device))  # after every measurement: a timeout keeps them
            rate = row.get("aggregate_seq_per_s") or row["seq_per_s"]
            print(f"  {name} {row['mode']} P={row['population']}: {rate:,.1f} seq/s", file=sys.stderr, flush=True)
        shown = _frame(measured, device)[["model", "mode", "population", "seq_per_s", "steps_per_s",
                                          "aggregate_seq_per_s", "speedup_vs_sequential", "peak_memory_mb"]
                                         + (["cuda_graphs", "cudagraph_skips"] if device.type == "cuda" else [])]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:,.1f}"), flush=True)
    print(f"device: {device_name(device)}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"pid {os.getpid()}")
    print(f"wrote {out / 'perf.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
