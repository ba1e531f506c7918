"""Output folders under attack by someone who can write into them: a symbolic link planted among the harness's own
files and folders is refused in one line naming it, and the link's target is left byte for byte as it was; two
writers of one folder at once are refused by its lock, which a killed holder never leaves behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from bench import runner
from bench.bundles import MANIFEST
from bench.cli import main
from bench.config import ConfigError
from bench.folders import LOCK_FILE, MARKER, output_lock, refuse_links, remove_tree
from bench.report.page import REFERENCES, SCORECARD_FILE, SUMMARY_FILES
from bench.results import OUTPUT_ENTRIES, atomic_write_text, claim_output_folder, read_json
from tests.conftest import REPO
from tests.test_end_to_end import TINY
from tests.test_hostile_files import copy_of, one_error_line, run_cli, smoke

LINK = "is a symbolic link inside the output folder"
HOLDER = "another ntm-bench process"
#: a suite the gated plugin model trains (tests/plugins/gated_model.py): its process holds the lock while it waits
GATED = ["--plugin", "tests.plugins.gated_model", *TINY, "--set", "models={gated_lstm: {units: 8}}"]


def snapshot(folder):
    """Everything under `folder`, links not followed: {relative path: bytes, or the link's target, or 'folder'}."""
    found = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = os.path.join(root, name)
            key = os.path.relpath(path, folder)
            if os.path.islink(path):
                found[key] = "link to " + os.readlink(path)
            elif os.path.isdir(path):
                found[key] = "folder"
            else:
                with open(path, "rb") as handle:
                    found[key] = handle.read()
    return found


# the finished tiny suite (with its report) of tests/test_hostile_files.py, and a fresh copy of it per test
finished, out = smoke, copy_of


def plant_link(out, entry, tmp_path):
    """Move `entry` of `out` into a victim folder of the user's and put a link to it in its place; returns (the
    link, the victim folder)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("the user's own file\n")
    target = victim / os.path.basename(entry)
    shutil.move(out / entry, target)
    (out / entry).symlink_to(target, target_is_directory=target.is_dir())
    return out / entry, victim


def first_run(out):
    return sorted(p.name for p in (out / "runs").iterdir())[0]


# ---- symbolic links ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "command"), [
    ("runs", "run"), ("runs", "--fresh"), ("runs", "report"),
    ("run folder", "run"), ("run folder", "--fresh"),
    ("figures", "run"), ("figures", "report"),
    ("runs.csv", "run"), ("runs.csv", "report"),
    ("suite.json", "--fresh"), ("suite.json", "report"),
    (MARKER, "report"),
])
def test_a_link_inside_the_output_folder_is_refused_and_its_target_untouched(out, tmp_path, capsys, entry, command):
    entry = f"runs/{first_run(out)}" if entry == "run folder" else entry
    link, victim = plant_link(out, entry, tmp_path)
    before, folder_before = snapshot(victim), snapshot(out)
    if command == "report":
        status = main(["report", "--out", str(out)])
    else:
        status = run_cli(out, *(["--fresh"] if command == "--fresh" else []))
    line = one_error_line(capsys)
    assert status == 2 and line.startswith(f"error: {link}: {LINK} {out};"), line
    assert snapshot(victim) == before and snapshot(out) == folder_before  # nothing written or deleted anywhere


def test_a_report_reads_through_a_linked_run_folder_and_writes_nothing_into_it(out, tmp_path):
    link, victim = plant_link(out, f"runs/{first_run(out)}", tmp_path)
    before = snapshot(victim)
    assert main(["report", "--out", str(out)]) == 0  # the report reads run folders; it never writes into one
    assert snapshot(victim) == before


@pytest.mark.parametrize("entry", ["runs", "run folder", "suite.json", "summary.csv", MANIFEST])
def test_export_refuses_a_link_in_its_bundle_folder(finished, tmp_path, capsys, entry):
    bundle = tmp_path / "bundle"
    assert main(["export", str(finished), "--to", str(bundle)]) == 0
    capsys.readouterr()
    entry = f"runs/{first_run(bundle)}" if entry == "run folder" else entry
    link, victim = plant_link(bundle, entry, tmp_path)
    before, bundle_before = snapshot(victim), snapshot(bundle)
    assert main(["export", str(finished), "--to", str(bundle)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {link}: {LINK} {bundle};"), line
    assert snapshot(victim) == before and snapshot(bundle) == bundle_before


def test_the_output_folder_itself_may_be_a_link(finished, tmp_path):
    """`--out` on a scratch disk: the folder the user names may be a link; only links inside it are refused."""
    real = tmp_path / "scratch" / "out"
    shutil.copytree(finished, real)
    link = tmp_path / "out"
    link.symlink_to(real, target_is_directory=True)
    assert run_cli(link, "--fresh") == 0
    assert main(["report", "--out", str(link)]) == 0
    assert link.is_symlink() and (real / "index.html").is_file()


def test_every_write_and_delete_passes_the_one_check(out, tmp_path):
    """The atomic writers, folder creation and deletion all refuse a path behind a link inside an output folder,
    even if the link's target holds a mark of its own; outside output folders, nothing changes."""
    rid = first_run(out)
    link, victim = plant_link(out, "runs", tmp_path)
    (victim / "runs" / MARKER).write_text("planted\n")
    before = snapshot(victim)
    for attempt in (lambda: atomic_write_text(out / "runs" / rid / "curve.csv", "x\n"),
                    lambda: atomic_write_text(out / "runs" / "new" / "spec.json", "{}\n"),
                    lambda: remove_tree(out / "runs" / rid)):
        with pytest.raises(ConfigError, match=f"^{re.escape(str(link))}: {LINK}"):
            attempt()
    assert snapshot(victim) == before
    elsewhere = tmp_path / "plain"
    (elsewhere / "real").mkdir(parents=True)
    (elsewhere / "linked").symlink_to(elsewhere / "real", target_is_directory=True)
    atomic_write_text(elsewhere / "linked" / "table.csv", "x\n")  # not an output folder: `evaluate --out` and such
    assert (elsewhere / "real" / "table.csv").read_text() == "x\n"
    refuse_links(elsewhere / "linked" / "table.csv")


def test_every_file_the_report_and_export_write_is_checked_up_front():
    for name in (*SUMMARY_FILES, SCORECARD_FILE, REFERENCES, MANIFEST, "index.html", "figures", "runs", LOCK_FILE):
        assert name in OUTPUT_ENTRIES, name


def test_a_linked_mark_is_refused(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (tmp_path / "elsewhere").write_text("a user's file\n")
    (folder / MARKER).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=LINK):
        claim_output_folder(folder)
    assert (tmp_path / "elsewhere").read_text() == "a user's file\n"


# ---- one writer at a time ----------------------------------------------------------------------------------------

def test_a_second_writer_is_refused_in_one_line_naming_the_holder(out, capsys):
    before = snapshot(out)
    with output_lock(out):
        for extra in ([], ["--fresh"]):
            assert run_cli(out, *extra) == 2
            line = one_error_line(capsys)
            assert line.startswith(f"error: {out}: {HOLDER} (pid {os.getpid()} on host {socket.gethostname()}, "
                                   "since "), line
            assert line.endswith(") is writing this folder; wait for it or stop it"), line
        holder = json.loads((out / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
    assert snapshot(out) == {**before, LOCK_FILE: b""}  # released: the file no longer names a holder
    assert main(["report", "--out", str(out)]) == 0  # a reader takes no lock


def test_export_locks_its_bundle_folder(finished, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert main(["export", str(finished), "--to", str(bundle)]) == 0
    capsys.readouterr()
    with output_lock(bundle):
        assert main(["export", str(finished), "--to", str(bundle)]) == 2
        assert f"{HOLDER} (pid {os.getpid()} " in one_error_line(capsys)
    assert main(["export", str(finished), "--to", str(bundle)]) == 0


def test_the_lock_file_is_never_trusted_over_the_lock(out):
    """A record left by a holder that is gone (or written by anyone) names no holder: only the flock counts."""
    (out / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                             "since": "2026-01-01 00:00 UTC"}))
    assert run_cli(out, "--no-report") == 0
    (out / LOCK_FILE).write_bytes(b"\x00garbage\n" * 1000)
    assert run_cli(out, "--no-report") == 0


def test_the_lock_is_released_when_a_run_is_interrupted(out, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "prepare", interrupted)
    assert run_cli(out) == 130
    with output_lock(out):  # taken at once: the interrupted run let it go
        pass


def start_gated(out, gate, *extra):
    """`python -m bench run` of the gated suite into `out`, stopped at its first training step (holding the lock)
    until `gate` is removed; returns the process once it waits there."""
    gate.write_text("hold\n")
    env = {**os.environ, "BENCH_TEST_GATE": str(gate), "BENCH_TEST_LOCK": str(out / LOCK_FILE)}
    command = [sys.executable, "-m", "bench", "run", "--suite", "smoke", "--out", str(out), "--no-report",
               "--no-estimate", *GATED, *extra]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    waiting = gate.with_name(gate.name + ".waiting")
    deadline = time.monotonic() + 600  # generous: a loaded 2-core machine can be many times slower
    while not waiting.exists():
        if process.poll() is not None:
            pytest.fail(f"the gated run ended early ({process.returncode}): {process.stderr.read()}")
        assert time.monotonic() < deadline, "the gated run never reached its first training step"
        time.sleep(0.1)
    waiting.unlink()
    return process


def test_two_runs_on_one_folder_at_once(tmp_path, capsys):
    out, gate = tmp_path / "out", tmp_path / "gate"
    first = start_gated(out, gate)
    try:
        for extra in ([], ["--fresh"]):
            assert run_cli(out, *extra) == 2
            line = one_error_line(capsys)
            assert line.startswith(f"error: {out}: {HOLDER} (pid {first.pid} on host "), line
        gate.unlink()
        _, stderr = first.communicate(timeout=900)
    finally:
        first.kill()
    assert first.returncode == 0, stderr
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["model"]) == {"gated_lstm"} and (runs["status"] == "done").all()
    assert list(runs["run_id"]) == read_json(out / "suite.json")["run_ids"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(runs["run_id"])

    # a holder killed outright leaves its record behind, and no lock: the next run proceeds
    killed = start_gated(out, gate, "--set", "train.lr=0.01")
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == killed.pid
    assert run_cli(out, "--no-report") == 0
    assert set(pd.read_csv(out / "runs.csv")["model"]) == {"lstm"}


def test_the_api_takes_the_lock_too(tmp_path):
    from bench.api import run_suite

    out = tmp_path / "api"
    claim_output_folder(out)
    overrides = TINY[1::2]
    with output_lock(out), pytest.raises(ConfigError, match=f"^{re.escape(str(out))}: {HOLDER} \\(pid {os.getpid()} "):
        run_suite("smoke", out=out, overrides=overrides)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, LOCK_FILE] and not (out / LOCK_FILE).read_bytes()
    results = run_suite("smoke", out=out, overrides=overrides)  # the report is written while the lock is held
    assert (out / "index.html").is_file() and (results.runs["status"] == "done").all()
