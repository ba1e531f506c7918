"""The ray executor on a real local Ray instance (loopback only, shared by this module's tests): the same rows as the
local executor, seeds grouped into one task as the local executor groups them, a killed worker retried and resumed
without lost or doubled rows, and Ray shut down whatever happens.

Without Ray these tests skip, except in CI (env CI set), where they fail and say what to install.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import json
import logging
import os
import re
import sys
import types

import pytest

from bench.api import load_model
from bench.cli import main
from bench.config import ConfigError, TrainConfig
from bench.grid import expand, load_suite
from bench.options import WorkerOptions
from bench.ray_backend import (
    ATTEMPTS_FILE,
    KILL_FIRST_ATTEMPT,
    RESULT_FILES,
    RayBackend,
    ray_session,
    train_group_on_worker,
)
from bench.results import atomic_write_json
from bench.runner import run_suite
from tests.test_end_to_end import TINY, assert_same_rows, frames

pytestmark = pytest.mark.ray

OVERRIDES = TINY[1::2]  # the --set values
# Seed-parallel training only matches training alone within a float tolerance (batched and unbatched matrix
# products round differently; see tests/test_population.py). On a CPU both executors train one run at a time under
# `parallel_seeds: auto`; the reference does so explicitly, for an exact comparison.
ONE_RUN_AT_A_TIME = (["train.parallel_seeds=1"]
                     if "parallel_seeds" in {f.name for f in dataclasses.fields(TrainConfig)} else [])
#: Ray's own health checks and reconnection deadlines, made generous: on a loaded 2-core machine the defaults (a
#: node missing 5 checks of 10 s, a driver not reaching its GCS for 60 s) can declare the local node dead, and the
#: driver's core worker then aborts the whole pytest process (SIGABRT). Read by the processes `ray.init` starts.
PATIENT_RAY = {"RAY_health_check_period_ms": "10000", "RAY_health_check_timeout_ms": "60000",
               "RAY_health_check_failure_threshold": "30", "RAY_gcs_rpc_server_reconnect_timeout_s": "600",
               "RAY_worker_register_timeout_seconds": "600"}
SEED_PAIRS = ["train.parallel_seeds=2"]  # TINY's two seeds trained together: one group, one Ray task
TOLERANCE = 1e-5  # for seed-parallel results, which a float tolerance compares (test_population)


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module (it is slow to start), on loopback, shut down even if a test fails."""
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed, so the ray executor goes untested: pip install -e .[ray] "
                        "(the dev extra includes it; `make test` installs it)")
        pytest.skip("Ray is not installed: pip install -e .[ray]")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RAY_ADDRESS", raising=False)  # never a real cluster from the tests
        patch.delenv(KILL_FIRST_ATTEMPT, raising=False)
        for name, value in PATIENT_RAY.items():
            patch.setenv(name, value)
        with ray_session(num_cpus=2) as ray:
            try:
                yield ray
            finally:
                ray.shutdown()


@pytest.fixture(scope="module")
def local_out(tmp_path_factory):
    """The reference: the same tiny smoke suite on the local executor."""
    out = tmp_path_factory.mktemp("local")
    assert main(["run", "--suite", "smoke", "--out", str(out), "--no-report", "--no-estimate", *TINY,
                 *[arg for value in ONE_RUN_AT_A_TIME for arg in ("--set", value)]]) == 0
    return out


@pytest.fixture(scope="module")
def local_pairs_out(tmp_path_factory):
    """The reference for seed groups: the tiny smoke suite's two seeds trained together on the local executor."""
    out = tmp_path_factory.mktemp("local_pairs")
    assert main(["run", "--suite", "smoke", "--out", str(out), "--no-report", "--no-estimate", *TINY,
                 *[arg for value in SEED_PAIRS for arg in ("--set", value)]]) == 0
    return out


def assert_trained_as_one_group(out, run_ids):
    for run_id in run_ids:
        assert json.loads((out / "runs" / run_id / "spec.json").read_text())["population"] == len(run_ids)


def test_local_instance_listens_on_loopback_only(ray_instance):
    assert ray_instance.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert {node["NodeManagerAddress"] for node in ray_instance.nodes()} == {"127.0.0.1"}


def test_smoke_suite_on_ray_gives_the_same_rows_as_local(ray_instance, local_out, tmp_path):
    out = tmp_path / "ray"
    assert main(["run", "--suite", "smoke", "--out", str(out), "--no-report", "--no-estimate", "--executor", "ray",
                 *TINY]) == 0
    assert_same_rows(frames(local_out), frames(out))
    for run_id in frames(out)["runs"]["run_id"]:
        for name in ("spec.json", "curve.csv", "generalization.csv", "result.json", "samples.npz"):
            assert (out / "runs" / run_id / name).exists(), name

        spec = json.loads((out / "runs" / run_id / "spec.json").read_text())
        assert spec["torch_threads"] == 1  # set per run, whatever Ray put in OMP_NUM_THREADS

    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    # a rerun skips finished runs
    outcome = run_suite(load_suite("smoke", OVERRIDES), out, RayBackend(), estimate=False)
    assert outcome.skipped == outcome.total and not outcome.results
    assert mtimes == {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}


def test_killed_worker_is_retried_and_resumes_without_lost_or_doubled_rows(ray_instance, local_out, tmp_path,
                                                                             monkeypatch, caplog):
    monkeypatch.setenv(KILL_FIRST_ATTEMPT, "1")  # each task SIGKILLs its worker at step 6, after the step-5 checkpoint
    checkpoints = tmp_path / "checkpoints"
    suite = load_suite("smoke", [*OVERRIDES, f"checkpoint_dir={checkpoints}", "max_retries=2"])
    out = tmp_path / "ray"
    with caplog.at_level(logging.INFO, logger="bench"):
        outcome = run_suite(suite, out, RayBackend(), estimate=False)
    assert not outcome.failed and len(outcome.results) == outcome.total == 2

    assert_same_rows(frames(local_out), frames(out))
    runs = frames(out)["runs"]
    assert runs["run_id"].is_unique and len(runs) == 2
    resumed = [r.getMessage() for r in caplog.records if "resumed from step 5" in r.getMessage()]
    assert len(resumed) == 2, [r.getMessage() for r in caplog.records]
    for run_id in runs["run_id"]:
        assert json.loads((checkpoints / run_id / ATTEMPTS_FILE).read_text())["attempts"] == 2
        assert (checkpoints / run_id / "checkpoint.pt").exists()
        # the driver's run folder got the result files, the final weights included, from the task's return value
        for name in ("result.json", "checkpoint.pt"):
            assert (out / "runs" / run_id / name).read_bytes() == (checkpoints / run_id / name).read_bytes()
        assert not (out / "runs" / run_id / ATTEMPTS_FILE).exists()  # not a shared folder: only what was returned
        assert not load_model(out / "runs" / run_id).training  # so a Ray run's model loads like a local one's


def test_seed_groups_on_ray_give_the_same_runs_as_on_the_local_executor(ray_instance, local_pairs_out, tmp_path):
    out = tmp_path / "ray"
    assert main(["run", "--suite", "smoke", "--out", str(out), "--no-report", "--no-estimate", "--executor", "ray",
                 *TINY, *[arg for value in SEED_PAIRS for arg in ("--set", value)]]) == 0
    local, ray = frames(local_pairs_out), frames(out)
    assert_same_rows(local, ray, TOLERANCE)  # converge_step, final losses, curves and generalisation, run by run
    run_ids = list(ray["runs"]["run_id"])
    assert len(run_ids) == 2 and (ray["runs"]["status"] == "done").all()
    local_folders = {p.name for p in (local_pairs_out / "runs").iterdir()}
    assert {p.name for p in (out / "runs").iterdir()} == set(run_ids) == local_folders
    for run_id in run_ids:
        assert set(RESULT_FILES) <= {p.name for p in (out / "runs" / run_id).iterdir()}
    assert_trained_as_one_group(out, run_ids)
    assert_trained_as_one_group(local_pairs_out, run_ids)


def test_a_killed_group_is_retried_and_each_run_resumes_from_its_own_checkpoint(ray_instance, local_pairs_out,
                                                                                tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KILL_FIRST_ATTEMPT, "1")  # the group's task dies at step 6, after both runs checkpoint step 5
    checkpoints = tmp_path / "checkpoints"
    suite = load_suite("smoke", [*OVERRIDES, *SEED_PAIRS, f"checkpoint_dir={checkpoints}", "max_retries=1"])
    out = tmp_path / "ray"
    with caplog.at_level(logging.INFO, logger="bench"):
        outcome = run_suite(suite, out, RayBackend(), estimate=False)
    assert not outcome.failed and len(outcome.results) == outcome.total == 2

    assert_same_rows(frames(local_pairs_out), frames(out), TOLERANCE)
    run_ids = list(frames(out)["runs"]["run_id"])
    resumed = [r.getMessage() for r in caplog.records if "attempt 2" in r.getMessage()]
    assert len(resumed) == 2 and all("resumed from step 5" in m for m in resumed), resumed
    for run_id in run_ids:
        assert json.loads((checkpoints / run_id / ATTEMPTS_FILE).read_text())["attempts"] == 2
    assert_trained_as_one_group(out, run_ids)  # the retry trained the group together again


def test_a_retried_group_does_not_retrain_a_run_an_earlier_attempt_finished(tmp_path):
    """The task function alone, no Ray: attempt 1 of a group finished one seed and died before the other's first
    checkpoint; attempt 2 returns the finished seed as it is and trains only the other one."""
    finished, unfinished = expand(load_suite("smoke", [*OVERRIDES, *SEED_PAIRS]))
    root = tmp_path / "checkpoints"
    train_group_on_worker([finished], str(root), WorkerOptions(threads=1), "submission", False)
    atomic_write_json(root / unfinished.run_id / ATTEMPTS_FILE, {"submission": "submission", "attempts": 1})
    result_json = root / finished.run_id / "result.json"
    before = result_json.stat().st_mtime_ns

    replies = train_group_on_worker([finished, unfinished], str(root), WorkerOptions(threads=1), "submission",
                                    False)
    assert result_json.stat().st_mtime_ns == before
    assert replies[finished.run_id]["attempt"] == 1 and replies[unfinished.run_id]["attempt"] == 2
    assert replies[unfinished.run_id]["resumed_from_step"] is None  # it died before its first checkpoint
    for spec in (finished, unfinished):
        reply = replies[spec.run_id]
        assert reply["result"]["status"] == "done" and set(reply["files"]) == set(RESULT_FILES)
        assert reply["files"]["result.json"] == (root / spec.run_id / "result.json").read_bytes()
        assert json.loads((root / spec.run_id / ATTEMPTS_FILE).read_text())["attempts"] == reply["attempt"]


def test_runs_whose_retries_run_out_fail_and_the_next_invocation_resumes_them(ray_instance, local_out, tmp_path,
                                                                             monkeypatch):
    checkpoints = tmp_path / "checkpoints"
    overrides = [*OVERRIDES, f"checkpoint_dir={checkpoints}", "max_retries=0"]
    out = tmp_path / "ray"
    monkeypatch.setenv(KILL_FIRST_ATTEMPT, "1")
    outcome = run_suite(load_suite("smoke", overrides), out, RayBackend(), estimate=False)
    assert sorted(outcome.failed) == sorted(outcome.results) and len(outcome.failed) == 2
    assert (frames(out)["runs"]["status"] == "failed").all()
    for run_id in outcome.failed:
        assert "WorkerCrashedError" in json.loads((out / "runs" / run_id / "result.json").read_text())["error"]

    monkeypatch.delenv(KILL_FIRST_ATTEMPT)
    outcome = run_suite(load_suite("smoke", overrides), out, RayBackend(), estimate=False)
    assert not outcome.failed and outcome.skipped == 0
    assert_same_rows(frames(local_out), frames(out))


def test_ray_session_shuts_down_what_it_started_even_when_the_body_fails(monkeypatch):
    calls = []
    fake = types.ModuleType("ray")
    fake.__spec__ = importlib.machinery.ModuleSpec("ray", None)
    fake.is_initialized = lambda: False
    fake.init = lambda **kwargs: calls.append(("init", kwargs))
    fake.shutdown = lambda: calls.append(("shutdown", {}))
    fake.get_runtime_context = lambda: types.SimpleNamespace(gcs_address="127.0.0.1:6379")
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(RuntimeError, match="a test failed"), ray_session(num_cpus=2):
        raise RuntimeError("a test failed")
    assert [name for name, _ in calls] == ["init", "shutdown"]
    init = calls[0][1]
    assert init["_node_ip_address"] == "127.0.0.1" and init["include_dashboard"] is False and init["num_cpus"] == 2


@pytest.mark.parametrize("extra, message", [([], "pip install -e .[ray]"), (["--workers", "2"], "--workers")])
def test_cli_ray_executor_errors_are_one_line(monkeypatch, capsys, tmp_path, extra, message):
    if not extra:
        monkeypatch.setattr("bench.ray_backend.ray_available", lambda: False)
    elif importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed: pip install -e .[ray]")
    assert main(["run", "--suite", "smoke", "--out", str(tmp_path), "--executor", "ray", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_resources_keys_are_strict_and_stay_out_of_the_run_id():
    base = {s.run_id for s in expand(load_suite("smoke"))}
    suite = load_suite("smoke", ["resources={num_cpus: 0.5, num_gpus: 0.25}", "max_retries=5", "checkpoint_dir=/x"])
    assert (suite.resources.num_cpus, suite.resources.num_gpus, suite.max_retries) == (0.5, 0.25, 5)
    assert {s.run_id for s in expand(suite)} == base
    for override, fragment in [("resources.num_gpu=1", "unknown key (did you mean 'num_gpus'?)"),
                               ("resources.num_cpus=-1", "must be >= 0"),
                               ("resources.num_gpus=1.5", "above 1 it must be a whole number"),
                               ("max_retries=-1", "max_retries: must be >= 0"),
                               ("checkpoint_dir=3", "checkpoint_dir: must be a folder path")]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            load_suite("smoke", [override])
