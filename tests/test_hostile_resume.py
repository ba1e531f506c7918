"""Run folders that cannot be taken as they are: a finished run whose files disagree with each other or with its
run_id is redone; a checkpoint that does not fit its run's model, optimizer or code is moved aside (never deleted)
and the run starts over; `evaluate` and `load_model` check spec.json against the checkpoint before building anything
large. Each ends with the rows of a run that was never tampered with."""

from __future__ import annotations

import logging
import shutil
import time

import pandas as pd
import pytest
import torch

from bench import registry
from bench.api import load_model as api_load_model
from bench.cli import main
from bench.grid import expand, load_suite, meta_model, parameter_count
from bench.results import atomic_write_csv, atomic_write_json, collect, read_json, run_is_finished
from bench.train import CHECKPOINT, CODE_FINGERPRINT, FaultInjected, build_task, code_fingerprint, train_run
from bench.trained import TrainedRunError, load_model
from tests.conftest import small_params, small_task_params
from tests.test_end_to_end import TINY, assert_same_rows, frames, run_cli

#: the RunSpecs of the TINY smoke suite (copy x lstm x 2 seeds, 30 steps, a checkpoint every 5)
SPECS = expand(load_suite("smoke", TINY[1::2]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The TINY suite, trained once without interference."""
    out = tmp_path_factory.mktemp("resume") / "reference"
    run_cli(out, *TINY)
    return out


@pytest.fixture
def copy_of(reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    return out


def folder_of(out, spec=SPECS[0]):
    return out / "runs" / spec.run_id


def rerun(out, capsys):
    """Run the suite again in `out`; returns its log (stderr)."""
    capsys.readouterr()
    run_cli(out, *TINY)
    return capsys.readouterr().err


def warnings_about(log, run_id, words):
    lines = [line for line in log.splitlines() if run_id in line and words in line]
    assert len(lines) == 1, log  # one line, once
    return lines[0]


# ---- a finished run whose files are not its run's ---------------------------------------------------------------

def test_a_finished_run_with_a_changed_model_parameter_is_redone(reference, copy_of, capsys, caplog):
    spec = SPECS[0]
    path = folder_of(copy_of) / "spec.json"
    recorded = read_json(path)
    recorded["model_params"]["units"] = 32
    atomic_write_json(path, recorded)
    assert run_is_finished(path.parent)  # its files agree with each other: only its RunSpec tells
    with caplog.at_level(logging.WARNING):
        assert not run_is_finished(path.parent, spec)
    assert "spec.json: model_params.units is 32 there but 16 in this run" in caplog.text
    log = rerun(copy_of, capsys)
    line = warnings_about(log, spec.run_id, "the run is redone")
    assert "model_params.units" in line and "hashes to run_id" in line
    assert_same_rows(frames(reference), frames(copy_of))
    assert read_json(path)["model_params"]["units"] == 16 and run_is_finished(path.parent, spec)


def test_a_spec_json_that_hashes_to_another_run_id_is_redone(reference, copy_of, capsys):
    mine, other = SPECS
    recorded = read_json(folder_of(copy_of, other) / "spec.json")
    atomic_write_json(folder_of(copy_of) / "spec.json", {**recorded, "run_id": mine.run_id})  # another run's content
    log = rerun(copy_of, capsys)
    line = warnings_about(log, mine.run_id, "the run is redone")
    assert f"seed is 2 there but 1 in this run, so its content hashes to run_id {other.run_id}, not {mine.run_id}" \
        in line
    assert_same_rows(frames(reference), frames(copy_of))
    assert read_json(folder_of(copy_of) / "spec.json")["seed"] == 1


def _truncated(folder):
    """A curve that ends early (step 20 of 30) with a result.json that says so and done: as if it stopped at
    convergence, which this run does not."""
    curve = pd.read_csv(folder / "curve.csv")
    atomic_write_csv(folder / "curve.csv", curve[curve["step"] <= 20])
    return {"steps": 20}


def _beyond_budget(folder):
    """A curve and result.json that agree, on a step beyond the run's budget."""
    curve = pd.read_csv(folder / "curve.csv")
    atomic_write_csv(folder / "curve.csv", pd.concat([curve, curve.tail(1).assign(step=40)]))
    return {"steps": 40}


@pytest.mark.parametrize("change, problem", [
    ({"steps": 999999}, "result.json: steps 999999, but curve.csv ends at step 30"),
    (_beyond_budget, "result.json: steps 40, beyond the budget of 30 steps in spec.json"),
    ({"steps": 20}, "result.json: steps 20, but curve.csv ends at step 30"),
    ({"steps": "30"}, "result.json: steps '30' is not a step count"),
    (_truncated, "result.json: status done at step 20, before the budget of 30 steps, though spec.json does not "
                 "stop at convergence"),
], ids=["steps_beyond_the_curve", "beyond_the_budget", "steps_before_the_curve_ends", "steps_not_a_number",
        "done_early"])
def test_a_result_json_that_disagrees_with_its_curve_or_budget_is_redone(reference, copy_of, capsys, caplog, change,
                                                                         problem):
    folder = folder_of(copy_of)
    result = read_json(folder / "result.json")
    edit = change(folder) if callable(change) else change
    atomic_write_json(folder / "result.json", {**result, **edit})
    with caplog.at_level(logging.WARNING):
        assert not run_is_finished(folder)
        runs = collect(copy_of)["runs"]  # left out of the CSVs with a warning, never reported as it says
    assert problem in caplog.text and SPECS[0].run_id not in set(runs["run_id"])
    assert problem in warnings_about(rerun(copy_of, capsys), SPECS[0].run_id, "the run is redone")
    assert_same_rows(frames(reference), frames(copy_of))


# ---- a checkpoint that does not fit -----------------------------------------------------------------------------

@pytest.fixture
def interrupted(copy_of, monkeypatch):
    """The copy with its first run interrupted at step 12: a checkpoint of step 10 and no result.json."""
    folder = folder_of(copy_of)
    shutil.rmtree(folder)
    monkeypatch.setenv("BENCH_FAULT", "step:12")
    with pytest.raises(FaultInjected):
        train_run(SPECS[0], folder)
    monkeypatch.delenv("BENCH_FAULT")
    state = torch.load(folder / CHECKPOINT, weights_only=True)
    assert state["step"] == 10 and state["status"] == "running" and not (folder / "result.json").exists()
    return copy_of


def plant(folder, **changes):
    """Rewrite the run's checkpoint with `changes`; returns its bytes."""
    state = torch.load(folder / CHECKPOINT, weights_only=True)
    state.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del state[key]
    torch.save(state, folder / CHECKPOINT)
    return (folder / CHECKPOINT).read_bytes()


def other_model():
    """The run's model as changed code would build it: twice the units."""
    task = build_task(SPECS[0])
    return registry.build_model("lstm", task.input_size, task.output_size, layers=1, units=32).state_dict()


def other_optimizer(folder):
    state = torch.load(folder / CHECKPOINT, weights_only=True)["optimizer"]
    state["state"][0]["exp_avg"] = torch.zeros(3)
    return state


@pytest.mark.parametrize("changes, problem", [
    (lambda folder: {"model": other_model()}, "it does not fit the model: tensor h0 is [1, 1, 32] in the checkpoint "
                                              "but [1, 1, 16] in the model"),
    (lambda folder: {"optimizer": other_optimizer(folder)}, "its optimizer or data state does not fit: its exp_avg "
                                                            "is [3] for a parameter of [1, 1, 16]"),
    (lambda folder: {"data_generator": torch.zeros(3, dtype=torch.uint8)}, "its optimizer or data state does not fit"),
    (lambda folder: {CODE_FINGERPRINT: "0" * 16}, "it was written by other code for the model or task (code "
                                                  "fingerprint 0000000000000000"),
], ids=["model", "optimizer", "data_generator", "code"])
def test_a_checkpoint_that_does_not_fit_is_moved_aside_and_the_run_starts_over(reference, interrupted, capsys,
                                                                               changes, problem):
    folder = folder_of(interrupted)
    planted = plant(folder, **changes(folder))
    old_curve = (folder / "curve.csv").read_bytes()
    log = rerun(interrupted, capsys)
    line = warnings_about(log, SPECS[0].run_id, "cannot be resumed")
    assert problem in line and "starts over from step 0" in line and "resuming" not in log
    (stale,) = folder.glob(f"{CHECKPOINT}.stale-*")
    (stale_curve,) = folder.glob("curve.csv.stale-*")
    assert stale.read_bytes() == planted and stale_curve.read_bytes() == old_curve  # moved, never deleted
    assert stale_curve.name.removeprefix("curve.csv") == stale.name.removeprefix(CHECKPOINT)
    assert_same_rows(frames(reference), frames(interrupted))  # trained from step 0: the rows of a clean run
    final = torch.load(folder / CHECKPOINT, weights_only=True)
    task = build_task(SPECS[0])
    model = registry.build_model("lstm", task.input_size, task.output_size, **SPECS[0].model_params)
    assert final["step"] == 30 and final[CODE_FINGERPRINT] == code_fingerprint(model, task)


def test_a_checkpoint_of_the_same_code_or_without_a_fingerprint_resumes(reference, interrupted, capsys):
    folder = folder_of(interrupted)
    assert torch.load(folder / CHECKPOINT, weights_only=True)[CODE_FINGERPRINT]  # every new checkpoint has one
    plant(folder, **{CODE_FINGERPRINT: None})  # as written before fingerprints
    log = rerun(interrupted, capsys)
    assert f"{SPECS[0].run_id}: resuming from step 10" in log and "cannot be resumed" not in log
    assert not list(folder.glob("*.stale-*"))
    assert_same_rows(frames(reference), frames(interrupted))
    assert torch.load(folder / CHECKPOINT, weights_only=True)[CODE_FINGERPRINT]  # the resumed run records its code


# ---- evaluate and load_model ------------------------------------------------------------------------------------

NTM = ["--set", "models={ntm: {controller_units: 8, memory_locations: 8, memory_width: 4}}", "--set", "seeds=1",
       "--set", "train.steps=10", "--set", "train.eval_every=10"]


@pytest.fixture(scope="module")
def trained(reference, tmp_path_factory):
    """A finished LSTM run (the reference's) and a finished NTM run."""
    out = tmp_path_factory.mktemp("resume") / "ntm"
    run_cli(out, *TINY, *NTM)
    (ntm_id,) = pd.read_csv(out / "runs.csv")["run_id"]
    return {"lstm": folder_of(reference), "ntm": out / "runs" / ntm_id}


def tampered(trained, tmp_path, model, **params):
    folder = tmp_path / f"tampered_{model}"
    shutil.copytree(trained[model], folder)
    spec = read_json(folder / "spec.json")
    atomic_write_json(folder / "spec.json", {**spec, "model_params": {**spec["model_params"], **params}})
    return folder


@pytest.fixture
def never_built_large(monkeypatch):
    """Fails a test that builds an LSTM or NTM of more than 1000 units or slots anywhere but on the meta device (the
    check comes before the model's own constructor, so nothing is allocated)."""
    for name in ("lstm", "ntm"):

        class Guarded(registry.model_class(name)):
            def __init__(self, input_size, output_size, config=None, **params):
                large = max((v for v in params.values() if type(v) is int), default=0) > 1000
                assert not large or torch.get_default_device().type == "meta", f"built a large model: {params}"
                super().__init__(input_size, output_size, config, **params)

        monkeypatch.setitem(registry.MODELS, name, Guarded)
    with pytest.raises(AssertionError, match="built a large model"):
        registry.build_model("lstm", 4, 4, layers=1, units=1001)


def refused(capsys, folder, *words):
    """load_model, the API's load_model and `ntm-bench evaluate` refuse `folder` in one line, quickly; returns the
    message."""
    started = time.perf_counter()
    for load in (load_model, api_load_model):
        with pytest.raises(TrainedRunError) as error:
            load(folder)
        message = str(error.value)
        assert "\n" not in message and str(folder) in message and all(w in message for w in words), message
    assert main(["evaluate", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}"
    assert time.perf_counter() - started < 10  # all three; a real build of these models would take minutes, or fail
    return message


@pytest.mark.parametrize("params, words", [
    ({"memory_locations": 10**9}, ["beyond the suite limits", "memory_locations must be <= 10000000"]),
    ({"memory_locations": 10**7}, ["does not fit checkpoint.pt: tensor cell.w0_raw is [2, 8] in checkpoint.pt but "
                                   "[2, 10000000] in the model spec.json describes"]),
])
def test_evaluate_refuses_a_spec_json_with_huge_memory_without_building_it(trained, tmp_path, capsys,
                                                                           never_built_large, params, words):
    refused(capsys, tampered(trained, tmp_path, "ntm", **params), *words)


def test_evaluate_refuses_a_spec_json_over_the_parameter_limit_from_the_meta_model(trained, tmp_path, capsys,
                                                                                   never_built_large):
    refused(capsys, tampered(trained, tmp_path, "lstm", units=10**6), "spec.json's model has 4000",
            "parameters, more than the limit 1000000000; refusing to build it")


def test_evaluate_refuses_a_spec_json_that_does_not_fit_the_checkpoint_naming_the_tensor(trained, tmp_path, capsys):
    refused(capsys, tampered(trained, tmp_path, "lstm", units=17),
            "spec.json does not fit checkpoint.pt: tensor h0 is [1, 1, 16] in checkpoint.pt but [1, 1, 17] in "
            "the model spec.json describes")
    model = load_model(trained["lstm"])  # the untampered run still loads
    assert parameter_count(model) == read_json(trained["lstm"] / "result.json")["params"]


@pytest.mark.parametrize("name", sorted(registry.BUILTIN_MODELS))
def test_every_model_builds_on_the_meta_device_with_the_real_shapes(name):
    task = registry.build_task("copy", **small_task_params("copy"))
    params = small_params(name)
    meta = meta_model(name, task.input_size, task.output_size, params)
    assert meta is not None, f"{name} cannot be built on the meta device"
    assert all(t.is_meta for t in meta.state_dict().values())
    real = registry.build_model(name, task.input_size, task.output_size, **params)
    assert {k: tuple(v.shape) for k, v in meta.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in real.state_dict().items()}
    assert parameter_count(meta) == parameter_count(real)
