"""The paths a GPU takes and a CPU never does. CUDA only: scripts/gpu_check.sh runs this file on a lent GPU machine,
after tests/test_models.py with BENCH_DEVICE=cuda; on a machine without CUDA every test skips, saying so.

The tests run in file order, cheapest and most basic first, so that a timeout cuts the costliest (each torch.compile
takes tens of seconds on a cold cache, so compiled calls take one time step here; a population and the training of
the same sizes share inductor's cache):
- eager steps on CUDA against the same steps on the CPU;
- the memory check and a worker's memory share on the GPU, the time estimate's memory, evaluation on the model's
  device, a resumed run against one that never stopped, deterministic repeats;
- a population of seeds through `BatchedForward`, the path every GPU suite trains by (`parallel_seeds: auto` groups
  every seed there): eager against compiled against CUDA graphs, forward outputs, gradients and the losses of a few
  Adam steps, and each seed against the same model run alone;
- a short training of the smoke suite's sizes on CUDA, eager against compiled against CUDA graphs;
- a run alone (`SingleForward`), eager against compiled against CUDA graphs.

The tolerances are what docs/PERFORMANCE.md ("On a GPU") promises: a GPU's results repeat within them, not bit for
bit, except under deterministic mode.
"""

from __future__ import annotations

import dataclasses
import io
import json

import pandas as pd
import pytest
import torch

from bench.evaluate import generalization_rows, generalization_set, wrong_bits_by_position
from bench.forward import CUDA_GRAPHS, make_forward, optimizer_step
from bench.gpu import cuda_graphs_recorded, cudagraph_skips, worker_settings
from bench.grid import expand, load_suite, task_key
from bench.local_backend import LocalBackend
from bench.metrics import loss_nats_per_seq
from bench.options import WorkerOptions
from bench.perf import build
from bench.preflight import estimate_seconds
from bench.registry import small_model_params
from bench.runner import train_group
from bench.train import FaultInjected, build_task, train_run
from bench.trained import evaluate_run
from models.base import RecurrentModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (scripts/gpu_check.sh runs these tests on a GPU machine)")

CUDA = torch.device("cuda")
ONE_THREAD = WorkerOptions(threads=1)
#: torch.compile's options per mode, as the training loop and bench.perf pass them
MODES = {"eager": None, "compiled": {}, "cudagraphs": dict(CUDA_GRAPHS)}
MEMORY_MODELS = ["ntm", "dnc"]
#: the same step on two paths (devices, eager or compiled, batched or alone): float32 round-off
OUTPUTS = {"rtol": 1e-4, "atol": 1e-5}
GRADIENTS = {"rtol": 1e-3, "atol": 1e-5}
#: two trainings of the same runs, evaluated along the way: the loss per sequence, and the mean wrong bits per
#: sequence (a logit near 0 that rounds the other way flips a bit: 1/16 on the smoke suite's 16 sequences)
CURVE_LOSS = {"rtol": 1e-3, "atol": 1e-3}
CURVE_WRONG_BITS = 0.25
SEEDS = 2
STEPS = 40


@pytest.fixture(autouse=True)
def one_step_per_compiled_call(monkeypatch):
    """One time step per compiled call: a quarter of the compile time of the models' own 4 steps per call. Chunks of
    4 and the single steps after them, at the paper config, are what parts 2 and 3 of scripts/gpu_check.sh run."""
    for model_class in (RecurrentModel, *RecurrentModel.__subclasses__()):
        monkeypatch.setattr(model_class, "compile_unroll", 1)


def _specs(name: str, *overrides: str) -> list:
    """The smoke suite's Copy and `name` at its small sizes, on CUDA, SEEDS seeds of STEPS steps."""
    return expand(load_suite("smoke", [
        "device=cuda", "tasks={copy: {bits: 4, train_sizes: [1, 4], test_sizes: [4, 8]}}",
        f"models={{{name}: {json.dumps(small_model_params(name))}}}", f"seeds={SEEDS}", f"train.steps={STEPS}",
        "train.eval_every=10", "train.checkpoint_every=10", *overrides]))


def _curve(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "curve.csv").drop(columns=["wall_s"])


def _assert_curves_close(curve: pd.DataFrame, reference: pd.DataFrame) -> None:
    assert list(curve["step"]) == list(reference["step"])
    pd.testing.assert_series_equal(curve["loss_bits_per_seq"], reference["loss_bits_per_seq"], check_exact=False,
                                   **CURVE_LOSS)
    pd.testing.assert_series_equal(curve["wrong_bits_per_seq"], reference["wrong_bits_per_seq"], check_exact=False,
                                   rtol=0, atol=CURVE_WRONG_BITS)


def _steps(name: str, mode: str, population: int, device: torch.device = CUDA, steps: int = 3) -> dict:
    """`steps` Adam steps of `population` seeds of `name` on the smoke suite's Copy batches (padded to the longest
    training T, as on a GPU), through the forward the training loop builds (`make_forward`: a run alone or a
    `BatchedForward`) and `optimizer_step`. Returns the first step's logits and gradients and every step's losses, on
    the CPU, and, for CUDA graphs, how many were recorded and how many graphs were compiled without them."""
    torch._dynamo.reset()
    spec = _specs(name)[0]
    task = build_task(spec)
    models = [build(name, spec.model_params, task, device, seed) for seed in range(population)]
    optimizers = [torch.optim.Adam(model.parameters(), lr=1e-3) for model in models]
    options = MODES[mode]
    forward = make_forward(models, population, options)
    largest = tuple(high for _, high in (task.train_sizes[p] for p in task.size_parts))
    batches = [task.sample(spec.train.batch_size, torch.Generator().manual_seed(seed), size=largest)
               .pad_to(task.max_train_steps()).to(device) for seed in range(population)]
    inputs = torch.stack([batch.inputs for batch in batches])  # [P, B, T, in], as the training loop stacks them
    seen: dict = {}

    def loss() -> torch.Tensor:
        logits = forward(inputs)
        seen["logits"] = logits.detach().clone()  # a CUDA graph's outputs are overwritten by its next replay
        losses = torch.stack([loss_nats_per_seq(lg, b.targets, b.mask) for lg, b in zip(logits.unbind(0), batches)])
        seen["losses"] = losses.detach()
        return losses.sum()

    record: dict = {"losses": []}
    if mode == "eager":
        with torch.no_grad():  # each seed's model run alone, before any update
            record["alone"] = torch.stack([model(x) for model, x in zip(models, inputs)]).cpu()
    skips = cudagraph_skips()
    for step in range(steps):
        optimizer_step(optimizers, loss, 50.0, options)
        record["losses"].append(seen["losses"].cpu())
        if step == 0:
            record["logits"] = seen["logits"].cpu()
            record["grads"] = [p.grad.cpu() for model in models for p in model.parameters() if p.grad is not None]
    record["cuda_graphs"] = cuda_graphs_recorded(device)
    record["skips"] = cudagraph_skips() - skips
    torch._dynamo.reset()
    return record


def _assert_steps_close(record: dict, reference: dict) -> None:
    torch.testing.assert_close(record["logits"], reference["logits"], **OUTPUTS)
    assert len(record["grads"]) == len(reference["grads"]) > 0
    for grad, expected in zip(record["grads"], reference["grads"]):
        torch.testing.assert_close(grad, expected, **GRADIENTS)
    torch.testing.assert_close(torch.stack(record["losses"]), torch.stack(reference["losses"]), **OUTPUTS)


def _assert_modes_agree(name: str, population: int) -> None:
    eager = _steps(name, "eager", population)
    for mode in ("compiled", "cudagraphs"):
        record = _steps(name, mode, population)
        _assert_steps_close(record, eager)
        if mode == "cudagraphs":  # really replayed as CUDA graphs, not plain compiled code
            assert record["skips"] == 0, f"{record['skips']} graph(s) compiled without CUDA graphs"
            assert record["cuda_graphs"] != 0, "no CUDA graph recorded"
    if population > 1:
        torch.testing.assert_close(eager["logits"], eager["alone"], **OUTPUTS)


# ---- eager, against the CPU ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MEMORY_MODELS)
def test_eager_steps_on_cuda_match_the_cpu(name):
    _assert_steps_close(_steps(name, "eager", 1, CUDA), _steps(name, "eager", 1, torch.device("cpu")))


# ---- memory -------------------------------------------------------------------------------------------------------

def test_the_memory_check_counts_the_gpus_memory_and_each_workers_share():
    suite = load_suite("smoke", ["device=cuda"])
    total = torch.cuda.get_device_properties(CUDA).total_memory
    assert LocalBackend(2).memory(suite) == (total, 2)
    assert LocalBackend(2, WorkerOptions(gpu_memory_fraction=0.25)).memory(suite) == (int(0.25 * total * 2), 2)


def test_a_memory_fraction_caps_what_a_worker_allocates():
    total = torch.cuda.get_device_properties(CUDA).total_memory
    try:
        with worker_settings(0.05, False, CUDA), pytest.raises(torch.cuda.OutOfMemoryError):
            torch.empty(int(0.1 * total), dtype=torch.uint8, device=CUDA)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, CUDA)
        torch.cuda.empty_cache()


def test_the_time_estimate_hands_its_gpu_memory_back():
    spec = _specs("ntm", "seeds=1")[0]
    estimate_seconds([spec], threads=1)  # the first one also allocates what CUDA keeps for the process (cuBLAS)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_reserved(CUDA)
    estimate_seconds([spec], threads=1)
    assert torch.cuda.memory_reserved(CUDA) <= before


# ---- evaluation, resume, deterministic mode ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    spec = _specs("ntm", "seeds=1", "train.steps=20")[0]
    run_dir = tmp_path_factory.mktemp("cuda_run") / spec.run_id
    assert train_run(spec, run_dir, ONE_THREAD)["status"] == "done"
    return spec, run_dir


def test_evaluation_runs_on_the_models_device(finished_run):
    spec, run_dir = finished_run
    # `ntm-bench evaluate` (device auto: this GPU) gives back the generalisation rows training wrote on it
    frame = pd.read_csv(io.StringIO(evaluate_run(run_dir).to_csv(index=False)))
    pd.testing.assert_frame_equal(frame, pd.read_csv(run_dir / "generalization.csv"), check_exact=False, rtol=1e-6,
                                  atol=1e-6)
    task, key = build_task(spec), task_key(spec.task_type, spec.task_params)
    cpu = build("ntm", spec.model_params, task, torch.device("cpu"))
    gpu = build("ntm", spec.model_params, task, CUDA)
    on_gpu = wrong_bits_by_position(gpu, task, (8,), 16, spec.eval_seed, key)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), wrong_bits_by_position(cpu, task, (8,), 16, spec.eval_seed, key),
                               rtol=0, atol=CURVE_WRONG_BITS)
    sets = generalization_set(task, 16, spec.eval_seed, key)
    for row_gpu, row_cpu in zip(generalization_rows(gpu, task, sets, CUDA),
                                generalization_rows(cpu, task, sets, torch.device("cpu")), strict=True):
        assert row_gpu["loss_bits_per_seq"] == pytest.approx(row_cpu["loss_bits_per_seq"], rel=1e-4)


def test_a_resumed_run_on_cuda_follows_the_run_that_never_stopped(tmp_path, monkeypatch):
    spec = _specs("ntm", "seeds=1")[0]
    assert train_run(spec, tmp_path / "straight" / spec.run_id, ONE_THREAD)["status"] == "done"
    monkeypatch.setenv("BENCH_FAULT", "step:15")  # killed after step 15; the checkpoint of step 10 is resumed
    with pytest.raises(FaultInjected):
        train_run(spec, tmp_path / "resumed" / spec.run_id, ONE_THREAD)
    monkeypatch.delenv("BENCH_FAULT")
    assert train_run(spec, tmp_path / "resumed" / spec.run_id, ONE_THREAD)["status"] == "done"
    _assert_curves_close(_curve(tmp_path / "resumed" / spec.run_id), _curve(tmp_path / "straight" / spec.run_id))


@pytest.mark.parametrize("name", MEMORY_MODELS)
def test_deterministic_mode_repeats_a_run_bit_for_bit(tmp_path, name):
    spec = _specs(name, "seeds=1", "train.steps=20")[0]
    options = dataclasses.replace(ONE_THREAD, deterministic=True)
    for attempt in ("first", "second"):
        result = train_group([spec], tmp_path / attempt, options)[spec.run_id]
        assert result["status"] == "done", result.get("error")
    assert not torch.are_deterministic_algorithms_enabled()  # put back after the group
    pd.testing.assert_frame_equal(_curve(tmp_path / "second" / spec.run_id), _curve(tmp_path / "first" / spec.run_id),
                                  check_exact=True)


# ---- compiled and CUDA graphs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MEMORY_MODELS)
def test_a_population_eager_compiled_and_cuda_graphs_agree(name):
    _assert_modes_agree(name, SEEDS)


@pytest.mark.parametrize("name", MEMORY_MODELS)
def test_a_short_training_follows_the_same_curve_eager_compiled_and_cuda_graphs(tmp_path, name):
    curves = {}
    for setting in ("off", "on", "cudagraphs"):
        specs = _specs(name, f"train.compile={setting}")
        results = train_group(specs, tmp_path / setting, ONE_THREAD)
        assert [results[s.run_id]["status"] for s in specs] == ["done"] * SEEDS, \
            [results[s.run_id].get("error") for s in specs]
        recorded = json.loads((tmp_path / setting / specs[0].run_id / "spec.json").read_text())
        assert recorded["compile_options"] == {"off": None, "on": {}, "cudagraphs": CUDA_GRAPHS}[setting]
        assert recorded["population"] == SEEDS  # (whether the graphs were recorded: the population test above)
        curves[setting] = [_curve(tmp_path / setting / s.run_id) for s in specs]
    for setting in ("on", "cudagraphs"):
        for curve, eager in zip(curves[setting], curves["off"]):
            _assert_curves_close(curve, eager)


@pytest.mark.parametrize("name", MEMORY_MODELS)
def test_a_run_alone_eager_compiled_and_cuda_graphs_agree(name):
    _assert_modes_agree(name, 1)
