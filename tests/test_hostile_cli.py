"""Hostile input on the command line: every error is one line on stderr with exit status 2 (1 for a bug), nothing is
written before the suite, the output folder and the device are known to be usable, and SIGTERM/SIGHUP stop a suite
the way Ctrl-C does (workers ended, finished runs kept, CSVs collected) with exit status 128 + the signal number."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

import bench.report.page  # noqa: F401  imported before any test patches bench.results, whose names it copies
import bench.results
from bench import cli
from bench.cli import Stopped, main
from bench.grid import expand, load_suite
from bench.ray_backend import RayBackend, _init_keeping_sigterm
from tests.conftest import REPO
from tests.test_end_to_end import TINY

QUICK = ["--no-report", "--no-estimate", *TINY]


def run_main(capsys, *argv):
    """main(argv) -> (exit status, stderr lines)."""
    status = main(list(argv))
    return status, capsys.readouterr().err.strip().splitlines()


def assert_one_line(lines, status, expected_status, *fragments):
    assert status == expected_status, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


# ---- the output folder ----------------------------------------------------------------------------------------------

def test_out_is_an_existing_file(capsys, tmp_path):
    target = tmp_path / "taken.txt"
    target.write_text("keep me\n")
    status, lines = run_main(capsys, "run", "--suite", "smoke", "--out", str(target), *QUICK)
    assert_one_line(lines, status, 2, str(target), "not a folder")
    assert target.read_text() == "keep me\n" and files_under(tmp_path) == {target}


def test_out_below_a_file(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, lines = run_main(capsys, "run", "--suite", "smoke", "--out", str(blocker / "sub" / "out"), *QUICK)
    assert_one_line(lines, status, 2, "is a file")
    assert files_under(tmp_path) == {blocker}


def test_out_in_a_place_nobody_can_write(capsys):
    """/proc refuses new folders even to root (CI runs as root, where a chmod 0500 folder would not stop it)."""
    target = Path("/proc") / "ntm-bench-out"
    status, lines = run_main(capsys, "run", "--suite", "smoke", "--out", str(target), *QUICK)
    assert_one_line(lines, status, 2, str(target))
    assert not target.exists()


# ---- the device -----------------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_writes_nothing(capsys, tmp_path):
    out = tmp_path / "out"
    status, lines = run_main(capsys, "run", "--suite", "smoke", "--out", str(out), "--device", "cuda", *QUICK)
    assert_one_line(lines, status, 2, "cuda", "CUDA is not available")
    assert not out.exists()


def test_unknown_device_writes_nothing(capsys, tmp_path):
    out = tmp_path / "out"
    status, lines = run_main(capsys, "run", "--suite", "smoke", "--out", str(out), "--device", "tpu9", *QUICK)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "tpu9" in lines[0], lines
    assert not out.exists()


# ---- the suite file and plugins -------------------------------------------------------------------------------------

def test_suite_path_is_a_folder(capsys, tmp_path):
    folder = tmp_path / "suite.yaml"
    folder.mkdir()
    out = tmp_path / "out"
    status, lines = run_main(capsys, "run", "--suite", str(folder), "--out", str(out), *QUICK)
    assert_one_line(lines, status, 2, str(folder))
    assert not out.exists()
    status, lines = run_main(capsys, "validate", str(folder))
    assert_one_line(lines, status, 2, str(folder))


def test_suite_path_is_a_binary_file(capsys, tmp_path):
    binary = tmp_path / "garbage.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    out = tmp_path / "out"
    status, lines = run_main(capsys, "run", "--suite", str(binary), "--out", str(out), *QUICK)
    assert_one_line(lines, status, 2, str(binary))
    assert not out.exists()


def test_plugin_that_raises_at_import(capsys, tmp_path):
    out = tmp_path / "out"
    status, lines = run_main(capsys, "run", "--suite", "smoke", "--out", str(out), "--plugin",
                             "tests.plugins.raises_at_import", *QUICK)
    assert_one_line(lines, status, 2, "tests.plugins.raises_at_import", "RuntimeError", "broken on purpose")
    assert not out.exists()
    status, lines = run_main(capsys, "validate", "smoke", "--plugin", "tests.plugins.raises_at_import")
    assert_one_line(lines, status, 2, "broken on purpose")


def test_missing_plugin(capsys, tmp_path):
    out = tmp_path / "out"
    status, lines = run_main(capsys, "run", "--suite", "smoke", "--out", str(out), "--plugin",
                             "tests.plugins.no_such_plugin", *QUICK)
    assert_one_line(lines, status, 2, "tests.plugins.no_such_plugin")
    assert not out.exists()


# ---- errors while writing, and bugs ---------------------------------------------------------------------------------

def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    assert main(["run", "--suite", "smoke", "--out", str(out), *QUICK]) == 0
    return out


def test_full_disk_during_the_report(capsys, monkeypatch, trained):
    monkeypatch.setattr(bench.results, "atomic_write_bytes", _disk_full)
    status, lines = run_main(capsys, "report", "--out", str(trained))
    assert_one_line(lines, status, 2, "No space left on device")
    assert not (trained / "index.html").exists() and not (trained / "summary.csv").exists()


def test_full_disk_before_training(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(bench.results, "atomic_write_bytes", _disk_full)
    out = tmp_path / "out"
    status, lines = run_main(capsys, "run", "--suite", "smoke", "--out", str(out), *QUICK)
    assert_one_line(lines, status, 2, "No space left on device")
    assert not (out / "suite.json").exists() and not (out / "runs").exists()


def test_debug_shows_the_traceback(monkeypatch, trained):
    monkeypatch.setattr(bench.results, "atomic_write_bytes", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        main(["--debug", "report", "--out", str(trained)])


def test_an_unexpected_error_is_one_line_with_status_1(capsys, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    status, lines = run_main(capsys, "list")
    assert_one_line(lines, status, 2, "internal error: ZeroDivisionError: division by zero", "--debug")
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "list"])


# ---- signals --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signals_give_128_plus_the_signal(capsys, monkeypatch, signum, status):
    def stopped(args):
        os.kill(os.getpid(), signum)  # the handler main installs raises Stopped right here
        time.sleep(30)
        raise AssertionError("the signal did not interrupt")

    monkeypatch.setitem(cli.COMMANDS, "list", stopped)
    before = signal.getsignal(signum)
    assert main(["list"]) == status
    assert "interrupted; finished runs are kept" in capsys.readouterr().err
    assert signal.getsignal(signum) is before  # the handler is put back


def test_sigterm_status_survives_code_that_replaces_the_interrupt(capsys, monkeypatch):
    """Ray's waits catch a KeyboardInterrupt and raise a plain new one: the status still says SIGTERM."""
    def swallowed(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        except KeyboardInterrupt:
            raise KeyboardInterrupt from None
        raise AssertionError("the signal did not interrupt")

    monkeypatch.setitem(cli.COMMANDS, "list", swallowed)
    assert main(["list"]) == 143
    monkeypatch.setitem(cli.COMMANDS, "list", lambda args: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["list"]) == 130  # a later plain Ctrl-C is SIGINT again


def test_stopped_unwinds_like_ctrl_c():
    assert issubclass(Stopped, KeyboardInterrupt) and Stopped(signal.SIGTERM).signum == signal.SIGTERM


def test_ray_init_keeps_our_sigterm_handler():
    def ours(signum, frame):
        raise Stopped(signum)

    def rays(signum, frame):
        sys.exit(signum)

    fake = types.SimpleNamespace(init=lambda **kwargs: signal.signal(signal.SIGTERM, rays))
    previous = signal.signal(signal.SIGTERM, ours)
    try:
        _init_keeping_sigterm(fake, num_cpus=1)
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_during_ray_init_stops_what_ray_started():
    """Ray's own handler (sys.exit(15)) ran during ray.init: Ray is shut down and our Stopped goes up instead."""
    calls = []

    def ours(signum, frame):
        raise Stopped(signum)

    def init(**kwargs):
        calls.append("init")
        sys.exit(signal.SIGTERM)

    fake = types.SimpleNamespace(init=init, shutdown=lambda: calls.append("shutdown"))
    previous = signal.signal(signal.SIGTERM, ours)
    try:
        with pytest.raises(Stopped):
            _init_keeping_sigterm(fake)
        assert calls == ["init", "shutdown"] and signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ray_driver_cancels_its_tasks_when_stopped(tmp_path):
    """A SIGTERM while the driver waits on Ray: every submitted task is cancelled before Stopped goes on up."""
    cancelled = []

    def wait(refs, num_returns):
        raise Stopped(signal.SIGTERM)

    remote = types.SimpleNamespace(remote=lambda *args: object())
    fake = types.SimpleNamespace(remote=lambda fn: types.SimpleNamespace(options=lambda **kwargs: remote),
                                 wait=wait, cancel=lambda ref, force: cancelled.append(ref))
    backend = RayBackend()
    backend.ray, backend.suite = fake, load_suite("smoke", TINY[1::2])
    groups = [[spec] for spec in expand(backend.suite)]
    with pytest.raises(Stopped):
        list(backend.train(groups, tmp_path / "runs"))
    assert len(cancelled) == len(groups) == 2


def _descendants(pid: int) -> set[int]:
    """Every living process below `pid`, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigterm_stops_the_workers_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "out"
    long = [*TINY, "--set", "train.steps=2000", "--set", "train.eval_every=1000", "--set", "train.checkpoint_every=5"]
    command = [sys.executable, "-m", "bench", "run", "--suite", "smoke", "--out", str(out), "--no-report",
               "--no-estimate", "--workers", "2", *long]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600  # generous: spawning workers that import torch is slow on a busy machine
        while not list(out.glob("runs/*/checkpoint.pt")) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert driver.poll() is None, driver.communicate()
        workers = _descendants(driver.pid)
        assert workers, "no worker processes"
        driver.send_signal(signal.SIGTERM)
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 143, stderr
    assert "interrupted; finished runs are kept" in stderr
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)], "worker processes outlived the driver"
    assert (out / "runs.csv").exists()  # collected on the way out
    # both runs were a few steps into 2000 when the signal came: workers left running would have finished them
    assert not list(out.glob("runs/*/result.json")), "a worker trained on after SIGTERM"
    checkpointed = {path.parent.name for path in out.glob("runs/*/checkpoint.pt")}
    assert checkpointed

    # one process this time, so that its "resuming from step N" lines reach stderr (run ids ignore --workers)
    rerun = [arg if arg != "2" or previous != "--workers" else "1" for previous, arg in zip(["", *command], command)]
    resumed = subprocess.run(rerun, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    resuming = [line for line in resumed.stderr.splitlines() if "resuming from step" in line]
    assert {line.split(":")[0] for line in resuming} == checkpointed, resumed.stderr
    assert len(list(out.glob("runs/*/result.json"))) == 2


# ---- memory ---------------------------------------------------------------------------------------------------------

def test_a_suite_that_cannot_fit_in_memory_is_refused_before_anything_is_written(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("bench.local_backend.machine_memory", lambda: 2**10)  # a machine with 1 KiB
    out = tmp_path / "out"
    status, lines = run_main(capsys, "run", "--suite", "smoke", "--out", str(out), "--workers", "2", *QUICK)
    assert_one_line(lines, status, 2, "GiB of memory at once", "2 at a time", "lower train.batch_size")
    assert not out.exists()


def test_the_memory_measure_extrapolates_to_what_a_full_batch_keeps():
    """peak_bytes measures at two small batches and extrapolates; measured directly at the run's batch it agrees
    (exactly for the NTM and DNC; the LSTM's fused kernel grows in steps, which the line overestimates)."""
    import dataclasses

    from bench.grid import expand, load_suite
    from bench.preflight import _saved_bytes, peak_bytes
    from bench.train import build_model, build_task

    for spec in expand(load_suite("smoke", ["seeds=1"])):
        if spec.task != "copy":
            continue
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, batch_size=8))
        task = build_task(spec)
        model = build_model(spec, task, torch.device("cpu"))
        largest = tuple(high for _, high in (task.train_sizes[p] for p in task.size_parts))
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        direct = 4 * params + _saved_bytes(model, task, 8, largest)
        estimate = peak_bytes(spec)
        assert direct <= estimate <= 1.25 * direct, (spec.model, estimate, direct)
