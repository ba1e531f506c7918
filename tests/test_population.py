"""Seed-parallel training: P seeds trained together match the same seeds trained alone (within float tolerance:
batched and unbatched matrix products round differently), each with its own NaN handling; the compiled step matches
the eager one; bench.perf writes a well-formed CSV."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

from bench.grid import expand, load_suite
from bench.options import WorkerOptions
from bench.train import Member, train_population, train_run
from models.base import run_unrolled

ONE_THREAD = WorkerOptions(threads=1)

OVERRIDES = ["tasks={copy: {bits: 3, train_sizes: [1, 4], test_sizes: [4, 6]}}", "seeds=3", "train.steps=50",
             "train.eval_every=10", "train.checkpoint_every=20", "train.max_nonfinite=3",
             "models={ntm: {controller_units: 12, memory_locations: 8, memory_width: 4}}"]
NAN_SEED, NAN_STEPS = 2, {5, 6, 30}


@pytest.fixture
def nan_for_one_seed(monkeypatch):
    """Seed 2's batches at chosen steps carry NaN inputs, so only its loss is non-finite there."""
    original = Member.next_batch

    def next_batch(self):
        batch = original(self)
        if self.spec.seed == NAN_SEED and self.step + 1 in NAN_STEPS:
            batch = dataclasses.replace(batch, inputs=batch.inputs * float("nan"))
        return batch

    monkeypatch.setattr(Member, "next_batch", next_batch)


def _specs(extra=()):
    specs = expand(load_suite("smoke", [*OVERRIDES, *extra]))
    assert len(specs) == 3 and {s.seed for s in specs} == {1, 2, 3}
    return specs


def _curves(folder):
    return pd.read_csv(folder / "curve.csv").drop(columns=["wall_s"])


def test_population_matches_seeds_trained_alone(tmp_path, nan_for_one_seed):
    specs = _specs()
    together = train_population(specs, [tmp_path / "pop" / s.run_id for s in specs], ONE_THREAD)
    alone = [train_run(s, tmp_path / "solo" / s.run_id, ONE_THREAD) for s in specs]
    for spec, pop, solo in zip(specs, together, alone):
        assert pop["status"] == solo["status"] == "done"
        assert pop["nonfinite_steps"] == solo["nonfinite_steps"] == (len(NAN_STEPS) if spec.seed == NAN_SEED else 0)
        assert pop["steps"] == solo["steps"] == 50
        a, b = _curves(tmp_path / "pop" / spec.run_id), _curves(tmp_path / "solo" / spec.run_id)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-4, atol=1e-4)
    metrics = {s.seed: r["final_loss_bits_per_seq"] for s, r in zip(specs, together)}
    assert len(set(metrics.values())) == 3  # each seed really has its own init and data


@pytest.fixture
def seed_diverges_at_12(monkeypatch):
    """Seed 2's batches are NaN for good from step 12 (it diverges after max_nonfinite = 3 skips)."""
    original = Member.next_batch

    def next_batch(self):
        batch = original(self)
        if self.spec.seed == NAN_SEED and self.step + 1 >= 12:
            batch = dataclasses.replace(batch, inputs=batch.inputs * float("nan"))
        return batch

    monkeypatch.setattr(Member, "next_batch", next_batch)


def test_a_diverged_seed_leaves_the_others_running(tmp_path, seed_diverges_at_12):
    specs = _specs()
    results = train_population(specs, [tmp_path / s.run_id for s in specs], ONE_THREAD)
    by_seed = {s.seed: r for s, r in zip(specs, results)}
    assert by_seed[NAN_SEED]["status"] == "diverged" and by_seed[NAN_SEED]["steps"] == 14
    assert by_seed[1]["status"] == by_seed[3]["status"] == "done"
    assert by_seed[1]["steps"] == by_seed[3]["steps"] == 50
    train_run(specs[0], tmp_path / "solo", ONE_THREAD)
    a, b = _curves(tmp_path / specs[0].run_id), _curves(tmp_path / "solo")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-4, atol=1e-4)


def test_suite_groups_seeds_with_parallel_seeds(tmp_path):
    from bench.cli import main

    out = tmp_path / "out"
    assert main(["run", "--suite", "smoke", "--out", str(out), "--no-report", *sum([["--set", o] for o in OVERRIDES],
                                                                                  []),
                 "--set", "train.parallel_seeds=3"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 3 and (runs["status"] == "done").all()
    specs = [json.loads((out / "runs" / rid / "spec.json").read_text()) for rid in runs["run_id"]]
    assert all(spec["population"] == 3 for spec in specs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ntm", "ntm_torch_compile", "dnc"])
def test_compiled_step_matches_eager(name, monkeypatch):
    from bench.registry import build_model, build_task
    from models.dnc import DNC
    from models.ntm import NTM

    if name == "ntm_torch_compile":  # torch.compile's graphs, which a CPU skips for the NTM's fused sequence op
        monkeypatch.setattr(NTM, "runs_fused", lambda self, inputs: False)
        name = "ntm"

    # 2 steps per compiled call: T = 9 runs as 4 chunks and 1 single step (the compiled remainder path); the models'
    # own 4 costs twice the compile time (the DNC's took 100 s on this CPU)
    monkeypatch.setattr(NTM, "compile_unroll", 2)
    monkeypatch.setattr(DNC, "compile_unroll", 2)
    task = build_task("copy", bits=3, train_sizes=[1, 4])
    batch = task.sample(4, torch.Generator().manual_seed(0), size=4)
    outputs, grads = [], []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(name, task.input_size, task.output_size, controller_units=8, memory_locations=6,
                            memory_width=3)
        if compiled:
            model.compile_step()
        logits = model(batch.inputs)
        logits.square().sum().backward()
        outputs.append(logits.detach())
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    for compiled_grad, eager_grad in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-3, atol=1e-5)


def test_evaluation_under_cuda_graphs_runs_eagerly():
    # with no backward pending, each call of a CUDA-graph step would overwrite the previous chunk's outputs
    from torch._dynamo.utils import counters

    from bench.registry import build_model

    torch.manual_seed(0)
    model = build_model("ntm", 4, 3, controller_units=8, memory_locations=6, memory_width=3)
    inputs = torch.randn(2, 9, 4)
    with torch.no_grad():
        expected = model(inputs)
        model.compile_step(mode="reduce-overhead")
        torch._dynamo.reset()
        counters.clear()
        torch.testing.assert_close(model(inputs), expected)
    assert counters["stats"]["unique_graphs"] == 0  # nothing was compiled: the eager steps ran


def test_compile_options_per_setting():
    from bench.forward import compile_options
    from bench.registry import build_model

    ntm, dnc, lstm = build_model("ntm", 4, 3), build_model("dnc", 4, 3), build_model("lstm", 4, 3)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # only the device type is looked at
    for setting, steps, device, expected in [("off", 50, cpu, None), ("on", 50, cpu, {}), ("auto", 50, cpu, None),
                                             ("cudagraphs", 50, cpu, {}),
                                             ("cudagraphs", 50, cuda, {"mode": "reduce-overhead"}),
                                             ("on", 50, cuda, {})]:
        spec = _specs([f"train.compile={setting}", f"train.steps={steps}"])[0]
        assert compile_options(spec, ntm, device) == expected, (setting, steps, device)
        assert compile_options(spec, lstm, device) is None  # no step to compile
    # auto: from each model's own measured break-even budget, the NTM's shorter than the default
    assert ntm.compile_break_even_steps < dnc.compile_break_even_steps
    for model in (ntm, dnc):
        for steps, expected in [(model.compile_break_even_steps - 1, None), (model.compile_break_even_steps, {})]:
            spec = _specs(["train.compile=auto", f"train.steps={steps}"])[0]
            assert compile_options(spec, model, cpu) == expected, (type(model).__name__, steps)


def test_run_unrolled_matches_stepping():
    from bench.registry import build_model

    torch.manual_seed(0)
    model = build_model("ntm", 4, 3, controller_units=8, memory_locations=6, memory_width=3)
    inputs = torch.randn(2, 7, 4)
    expected, expected_state = model.steps(inputs, model.initial_state(2))
    for unroll in (1, 3, 7, 8):  # 7 = 2 chunks of 3 + 1 single step; 8 = all single steps
        logits, state = run_unrolled(model.steps, model.step, unroll, inputs, model.initial_state(2), time_dim=1)
        torch.testing.assert_close(logits, expected)
        torch.testing.assert_close(state.memory, expected_state.memory)

    def twice(fn):  # a stand-in for a group of two identical runs: time on dim 2, as in BatchedForward
        def call(x, state):
            logits, state = fn(x[0], state)
            return torch.stack([logits, logits]), state
        return call

    logits, _ = run_unrolled(twice(model.steps), twice(model.step), 3, torch.stack([inputs, inputs]),
                             model.initial_state(2), time_dim=2)
    torch.testing.assert_close(logits, torch.stack([expected, expected]))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ntm", "dnc"])
def test_compiled_population_matches_eager(tmp_path, seed_diverges_at_12, monkeypatch, name):
    # the vmapped step compiled, with a seed leaving the group mid-run (the group shrinks from 3 runs to 2); one step
    # per compiled call here, as compiling 4 (the NTM's compile_unroll) takes minutes on a CPU: run_unrolled's
    # chunking has a test of its own, and test_compiled_step_matches_eager compiles 2-step chunks and a remainder
    from models.base import RecurrentModel

    monkeypatch.setattr(RecurrentModel, "compile_unroll", 1)
    for model_class in RecurrentModel.__subclasses__():
        monkeypatch.setattr(model_class, "compile_unroll", 1)
    # a compiled group keeps torch.compile's vmapped graphs (the NTM's fused sequence op is for runs alone)
    results = {}
    model = f"models={{{name}: {{controller_units: 12, memory_locations: 8, memory_width: 4}}}}"
    from torch._dynamo.utils import counters

    for mode in ("off", "on"):
        specs = _specs([f"train.compile={mode}", model])
        counters.clear()
        results[mode] = train_population(specs, [tmp_path / mode / s.run_id for s in specs], ONE_THREAD)
        assert (counters["stats"]["unique_graphs"] > 0) == (mode == "on")  # dynamo really compiled (or did not)
        assert [json.loads((tmp_path / mode / s.run_id / "spec.json").read_text())["compiled"] for s in specs] == \
            [mode == "on"] * 3
    for spec, eager, compiled in zip(specs, results["off"], results["on"]):
        assert compiled["status"] == eager["status"] == ("diverged" if spec.seed == NAN_SEED else "done")
        assert compiled["steps"] == eager["steps"]
        pd.testing.assert_frame_equal(_curves(tmp_path / "on" / spec.run_id), _curves(tmp_path / "off" / spec.run_id),
                                      check_exact=False, rtol=1e-4, atol=1e-4)


def test_perf_quick_writes_a_well_formed_csv(tmp_path, builtin_models_only):
    from bench import perf

    assert perf.main(["--quick", "--no-compile", "--out", str(tmp_path), "--threads", "1"]) == 0
    frame = pd.read_csv(tmp_path / "perf.csv")
    assert list(frame.columns) == perf.COLUMNS
    from models import MODELS

    assert set(frame["model"]) == set(MODELS)  # every built-in model, each from its config's SMALL sizes
    assert {"train_eager", "forward", "population"} <= set(frame["mode"])
    assert (frame["seq_per_s"] > 0).all() and (frame["steps_per_s"] > 0).all()
    population = frame[frame["mode"] == "population"]
    assert set(population["population"]) == {1, 2}
    assert population["speedup_vs_sequential"].notna().all()
    assert frame["device_name"].notna().all() and frame["torch"].eq(torch.__version__).all()
