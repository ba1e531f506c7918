"""Output folders and files under hostile conditions: a folder of the user's own files, a planted checkpoint, damaged
run files, odd labels. The harness refuses what is not its own in one line, never deletes or overwrites a user's
files, and redoes (never merges) a run whose files are damaged."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.config import ConfigError
from bench.report.data import slug
from bench.report.page import write_report
from bench.results import (
    FIGURES_MANIFEST,
    MARKER,
    atomic_write_json,
    atomic_write_text,
    claim_output_folder,
    collect,
    read_json,
    run_is_finished,
)
from bench.train import CHECKPOINT_KEYS, load_checkpoint
from tests.conftest import REPO
from tests.test_end_to_end import TINY, assert_same_rows, frames

REFUSED = "not an ntm-bench output folder"


def run_cli(out, *extra):
    return main(["run", "--suite", "smoke", "--out", str(out), *TINY, *extra])


def user_files(folder):
    """A user's own files in `folder`; returns {path: bytes} to check later that they were not touched."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my_figure.png").write_bytes(b"\x89PNG my own figure")
    (folder / "notes.txt").write_text("my notes\n")
    return {p: p.read_bytes() for p in (folder / "my_figure.png", folder / "notes.txt")}


def untouched(files):
    return all(path.exists() and path.read_bytes() == data for path, data in files.items())


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A finished tiny suite with its report."""
    out = tmp_path_factory.mktemp("hostile") / "out"
    assert run_cli(out) == 0
    return out


@pytest.fixture
def copy_of(smoke, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(smoke, out)
    return out


def test_a_new_or_empty_folder_is_marked_and_stays_ours(tmp_path):
    new = tmp_path / "a" / "b"
    claim_output_folder(new)
    assert (new / MARKER).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_output_folder(empty)
    assert (empty / MARKER).is_file()
    (empty / "runs.csv").write_text("x\n")
    claim_output_folder(empty)  # marked: its files are the harness's


def test_a_folder_of_user_files_is_refused_untouched(tmp_path):
    files = user_files(tmp_path / "mine")
    with pytest.raises(ConfigError, match=REFUSED):
        claim_output_folder(tmp_path / "mine")
    assert untouched(files) and sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["my_figure.png",
                                                                                          "notes.txt"]
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        claim_output_folder(tmp_path / "a_file")


def test_report_into_a_users_folder_is_refused_in_one_line(tmp_path, capsys):
    folder = tmp_path / "mine"
    files = user_files(folder)
    files[folder / "suite.json"] = b'{"name": "mine"}'  # passes the report's own check, yet is not ours
    (folder / "suite.json").write_bytes(files[folder / "suite.json"])
    assert main(["report", "--out", str(folder)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: ") and REFUSED in line
    assert untouched(files) and not (folder / "index.html").exists() and not (folder / "figures").exists()


def test_run_into_a_users_folder_is_refused_in_one_line(tmp_path, capsys):
    folder = tmp_path / "mine"
    files = user_files(folder)
    assert run_cli(folder) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: ") and REFUSED in line
    assert untouched(files) and sorted(p.name for p in folder.iterdir()) == ["my_figure.png", "notes.txt"]


def test_report_deletes_only_figures_it_wrote(copy_of):
    figures = copy_of / "figures"
    files = user_files(figures)
    files.update(user_files(copy_of))
    stale = figures / "curves_a_task_that_is_gone.png"
    stale.write_bytes(b"an earlier render")
    listed = (figures / FIGURES_MANIFEST).read_text().split()
    assert "curves_copy.png" in listed and "my_figure.png" not in listed
    atomic_write_text(figures / FIGURES_MANIFEST, "".join(f"{n}\n" for n in [*listed, stale.name, "../notes.txt"]))
    write_report(copy_of)
    assert not stale.exists() and (figures / "curves_copy.png").exists()
    assert untouched(files)  # the user's figure, and notes.txt named with a path in the list, are kept
    assert "my_figure.png" not in (figures / FIGURES_MANIFEST).read_text()


def test_an_older_output_folder_is_adopted(copy_of):
    (copy_of / MARKER).unlink()
    (copy_of / "figures" / FIGURES_MANIFEST).unlink()
    files = user_files(copy_of / "figures")
    write_report(copy_of)  # suite.json + runs/: an older version's folder, so it is marked and reported
    assert (copy_of / MARKER).is_file() and untouched(files)
    assert "curves_copy.png" in (copy_of / "figures" / FIGURES_MANIFEST).read_text()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == mode


def test_a_real_checkpoint_loads_weights_only(smoke):
    run_id = pd.read_csv(smoke / "runs.csv")["run_id"][0]
    path = smoke / "runs" / run_id / "checkpoint.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(CHECKPOINT_KEYS) <= set(state)
    loaded = load_checkpoint(path.parent, run_id)
    assert loaded is not None and loaded["data_generator"].dtype == torch.uint8 and loaded["curve"]


class Payload:
    """Pickles as a call to os.system: loading it with weights_only=False would create `path`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_a_planted_checkpoint_never_runs_and_the_run_starts_over(smoke, copy_of, tmp_path, caplog):
    run_id = pd.read_csv(copy_of / "runs.csv")["run_id"][0]
    folder = copy_of / "runs" / run_id
    sentinel = tmp_path / "payload_ran"
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    torch.save({**state, "status": "running", "payload": Payload(sentinel)}, folder / "checkpoint.pt")
    (folder / "result.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(folder, run_id) is None
    assert "cannot be loaded safely" in caplog.text and "\n" not in caplog.records[-1].getMessage()
    assert run_cli(copy_of, "--no-report") == 0
    assert not sentinel.exists()
    assert_same_rows(frames(smoke), frames(copy_of))  # started over from step 0: the same rows


def test_a_damaged_finished_run_is_redone(smoke, copy_of, caplog):
    run_ids = list(pd.read_csv(copy_of / "runs.csv")["run_id"])
    curve = copy_of / "runs" / run_ids[0] / "curve.csv"
    curve.write_bytes(b"\x00\xffgarbage,\nstep\n1,2,3\n")
    spec = copy_of / "runs" / run_ids[-1] / "spec.json"
    spec.write_text('{"run_id": ')
    with caplog.at_level(logging.WARNING):
        assert not run_is_finished(curve.parent)
        data = collect(copy_of)  # skipped with a warning, not merged, not a crash
    assert run_ids[0] in caplog.text and "curve.csv" in caplog.text
    assert set(data["runs"]["run_id"]) == set(run_ids[1:-1])
    assert run_cli(copy_of) == 0  # both redone, then reported
    assert_same_rows(frames(smoke), frames(copy_of))
    assert read_json(spec)["run_id"] == run_ids[-1]


def test_a_failed_runs_traceback_stays_out_of_runs_csv(copy_of):
    run_id = pd.read_csv(copy_of / "runs.csv")["run_id"][0]
    result = copy_of / "runs" / run_id / "result.json"
    atomic_write_json(result, {"status": "failed", "error": "RuntimeError: boom",
                               "traceback": "Traceback (most recent call last):\n  line 1\nRuntimeError: boom\n"})
    runs = collect(copy_of)["runs"]
    assert "traceback" not in runs.columns and list(runs.columns) == list(pd.read_csv(copy_of / "runs.csv").columns)
    assert len((copy_of / "runs.csv").read_text().splitlines()) == len(runs) + 1
    assert "Traceback" in json.loads(result.read_text())["traceback"]


def test_the_suite_column_follows_a_rename(copy_of):
    manifest = read_json(copy_of / "suite.json")
    atomic_write_json(copy_of / "suite.json", {**manifest, "name": "renamed"})
    data = collect(copy_of)
    assert all((frame["suite"] == "renamed").all() for frame in data.values() if len(frame))


def test_figure_names_of_similar_labels_differ():
    assert slug("copy") == "copy" and slug("repeat_copy") == "repeat_copy"
    names = {slug(label) for label in ("copy/a", "copy a", "copy_a", "copy:a")}
    assert len(names) == 4
    assert all(name.replace("-", "").replace("_", "").replace(".", "").isalnum() for name in names)
