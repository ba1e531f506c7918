"""Output folders and files under hostile conditions: a folder of the user's own files, a planted checkpoint, damaged
run files, odd labels. The harness refuses what is not its own in one line, never deletes or overwrites a user's
files, and redoes (never merges) a run whose files are damaged."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import re
import shutil
import stat
import types

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from bench.cli import main
from bench.config import ConfigError
from bench.hooks import tensorboard_dir
from bench.labels import MAX_LABEL, MAX_SWEPT_LABEL, SLUG_LENGTH, unique_slugs
from bench.report.data import load_suite_data, slug
from bench.report.page import write_comparison, write_report
from bench.results import (
    FIGURES_MANIFEST,
    MARKER,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    claim_output_folder,
    collect,
    read_csv,
    read_json,
    run_is_finished,
)
from bench.text import markdown_text
from bench.train import CHECKPOINT_KEYS, load_checkpoint
from tests.test_end_to_end import TINY, assert_same_rows, frames
from tests.test_report import rendered_markdown

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


# ---- labels from shared suite files: refused, or escaped everywhere they go ---------------------------------------

#: a tiny suite whose labels are given as a mapping (so that any text can be a label)
TINY_SUITE = {"name": "odd", "seeds": 1, "device": "cpu",
              "train": {"steps": 10, "eval_every": 5, "batch_size": 4, "eval_sequences": 8,
                        "generalization_sequences": 4, "checkpoint_every": 5}}
COPY = {"task": "copy", "bits": 3, "train_sizes": [1, 3], "test_sizes": [3, 6]}
LSTM = {"model": "lstm", "layers": 1, "units": 8}
FORMULA = '=HYPERLINK("http://evil","x")'


def suite_file(tmp_path, tasks, models, **extra):
    path = tmp_path / "odd.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, "tasks": tasks, "models": models, **extra}))
    return path


def formula_cells(folder):
    """Every cell of every CSV under `folder` that a spreadsheet would run as a formula: (file, cell)."""
    return [(path.name, cell) for path in sorted(folder.rglob("*.csv")) for cell in csv_cells(path)
            if cell.startswith(("=", "+", "-", "@", "\t", "\r"))
            and not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", cell)]


@pytest.mark.parametrize("section", ["tasks", "models"])
@pytest.mark.parametrize("label, phrase", [
    ("x" * 300, "300 characters"), ("", "empty"), (FORMULA, "starts with '='"), ("@SUM(A1)", "starts with '@'"),
    ("+cmd", "starts with '+'"), ("-cmd", "starts with '-'"), ("a\nb", "control character"),
    ("\tcopy", "control character"), (" copy", "starts or ends with a space"),
])
def test_a_hostile_label_is_refused_before_anything_trains(tmp_path, capsys, section, label, phrase):
    tasks, models = {"copy": COPY}, {"lstm": LSTM}
    (tasks if section == "tasks" else models)[label] = COPY if section == "tasks" else LSTM
    path = suite_file(tmp_path, tasks, models)
    for argv in (["validate", str(path)], ["run", "--suite", str(path), "--out", str(tmp_path / "out")]):
        assert main(argv) == 2
        line = one_error_line(capsys)
        assert line.startswith(f"error: {path}: {section}.") and phrase in line, line
        assert f"a label is 1 to {MAX_LABEL} printable characters" in line and len(line) < 400, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "reports").exists()  # nothing trained or written


def test_a_sweep_label_too_long_is_refused(tmp_path, capsys):
    label = "m" * MAX_LABEL
    sweep = {"train.lr": [0.001], "train.batch_size": [4], "train.eval_sequences": [8],
             "train.generalization_sequences": [4]}
    path = suite_file(tmp_path, {"copy": COPY}, {label: LSTM}, sweep=sweep)
    assert main(["run", "--suite", str(path), "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert f"sweep: the label it gives models.{label[:37]}" in line and f"1 to {MAX_SWEPT_LABEL}" in line, line
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def odd_labels(tmp_path_factory):
    """A finished tiny suite whose labels and description are HTML, a javascript: link, a remote image (with TeX that
    matplotlib cannot parse, drawn in the figures' legends and tick labels), and labels whose file-safe forms are alike
    (``a b``, ``a_b``, and ``a_b-7dbde9``, the hashed form of ``a b``), with its report."""
    folder = tmp_path_factory.mktemp("odd")
    tasks = {"<img src=https://evil/x>": COPY, "a b": COPY, "a_b": COPY, slug("a b"): COPY}  # the last: a_b-7dbde9
    models = {"[x](javascript:alert(1))": LSTM, "![](http://tracker/p.png) $\\badcmd{$": LSTM}
    path = suite_file(folder, tasks, models,
                      description="<script>alert(1)</script> [x](javascript:alert(1)) <http://evil> www.evil.com")
    out = folder / "out"
    assert main(["run", "--suite", str(path), "--out", str(out), "--no-estimate"]) == 0
    return out, tasks, models


def test_summary_md_shows_hostile_labels_as_text(odd_labels):
    out, tasks, models = odd_labels
    markdown = (out / "summary.md").read_text()
    assert "<" not in markdown and "](" not in markdown and "![" not in markdown and "://" not in markdown
    assert "www.evil" not in markdown
    headings = [rendered_markdown(line[3:]) for line in markdown.splitlines() if line.startswith("## ")]
    assert sorted(headings) == sorted(tasks)  # each label still reads as it was written
    rows = {rendered_markdown(line.split(" | ")[0][2:]) for line in markdown.splitlines() if line.startswith("| ")}
    assert set(models) <= rows
    assert "<script>alert(1)</script>" in rendered_markdown(markdown)  # the description, shown as text
    page = (out / "index.html").read_text()
    assert "<img src=https://evil" not in page and "<script>alert" not in page and 'href="javascript' not in page


def test_labels_alike_get_their_own_figures_and_anchors(odd_labels):
    out, tasks, _ = odd_labels
    data = load_suite_data(out)
    slugs = {task.slug for task in data.tasks.values()}
    assert len(slugs) == len(tasks) and {"a_b", slug("a b"), slug("a b") + "-2"} <= slugs
    curves = sorted(p.name for p in (out / "figures").glob("curves_*.png"))
    assert curves == sorted(f"curves_{name}.png" for name in slugs)
    assert all(len(p.name) <= 80 for p in (out / "figures").iterdir())
    page = (out / "index.html").read_text()
    assert all(f'id="summary-{name}"' in page for name in slugs)


def csv_cells(path):
    with path.open(newline="") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


def test_csvs_neutralise_formulas_and_read_back_exactly(odd_labels, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(odd_labels[0], out)
    run_id = pd.read_csv(out / "runs.csv")["run_id"][0]
    result = out / "runs" / run_id / "result.json"
    atomic_write_json(result, {**read_json(result), "device": FORMULA})  # a text column from a shared bundle
    write_report(out)
    assert "'" + FORMULA in csv_cells(out / "runs.csv") and not formula_cells(out)
    runs = read_csv(out / "runs.csv")
    assert runs.set_index("run_id").loc[run_id, "device"] == FORMULA  # read back as it was
    assert list(runs["model"]) == list(pd.read_csv(odd_labels[0] / "runs.csv")["model"])
    assert (runs["wall_s"] > 0).all() and pd.api.types.is_numeric_dtype(runs["final_wrong_bits_per_seq"])


def test_a_prefix_that_makes_formula_labels_is_neutralised(odd_labels, tmp_path):
    out, other = tmp_path / "compared", shutil.copytree(odd_labels[0], tmp_path / "other")
    write_comparison([(odd_labels[0], "=1+"), (other, "@")], out)
    assert not formula_cells(out)
    assert "'=1+[x](javascript:alert(1))" in csv_cells(out / "summary.csv")
    models = {"=1+" + m for m in odd_labels[2]} | {"@" + m for m in odd_labels[2]}
    assert set(read_csv(out / "summary.csv")["model"]) == models
    assert set(load_suite_data(out).runs["model"]) == models


def test_numbers_are_never_quoted(tmp_path):
    frame = pd.DataFrame({"model": [FORMULA, "-cmd", "lstm", "'=x", np.nan], "delta": [-1.5, -2.0, 0.0, 3.0, -4.0],
                          "text_number": ["-0.5", "+3", "1e-3", "-inf", "@x"]})
    atomic_write_csv(tmp_path / "x.csv", frame)
    lines = (tmp_path / "x.csv").read_text().splitlines()
    assert lines[2:] == ["'-cmd,-2.0,+3", "lstm,0.0,1e-3", "''=x,3.0,'-inf", ",-4.0,'@x"]
    assert not formula_cells(tmp_path)
    pd.testing.assert_frame_equal(read_csv(tmp_path / "x.csv"), frame)


def test_markdown_text_lets_nothing_form():
    hostile = ["<img src=https://evil/x>", "[x](javascript:alert(1))", "![](http://tracker/p.png)", "<http://a.b>",
               "&lt;b&gt;", "`code`", "*a* _b_ ~c~ $x$", "# heading", "- item", "1. item", "a | b", "back\\slash",
               "www.evil.com", "line\nbreak"]
    for text in hostile:
        escaped = markdown_text(text)
        assert "<" not in escaped and "](" not in escaped and "![" not in escaped and "://" not in escaped
        assert rendered_markdown(escaped) == text.replace("\n", "; ")
    assert markdown_text("ntm_constant") == "ntm\\_constant" and markdown_text("-0.5") == "-0.5"


def test_file_names_of_labels_are_short_and_distinct():
    assert slug("x" * 300) == "x" * 49 + "-" + slug("x" * 300)[-6:] and len(slug("y" * 64)) == SLUG_LENGTH
    # a label that is another's slug, labels that differ only in case, and two labels whose 24-bit hashes collide
    punctuation = " !#$%&()*+,:;<=>?@[]^{|}~"
    seen, collision = {}, None
    for a, b, c in itertools.product(punctuation, repeat=3):
        label = f"a{a}{b}{c}b"
        collision = (seen[slug(label)], label) if slug(label) in seen else None
        if collision:
            break
        seen[slug(label)] = label
    assert collision is not None and slug(collision[0]) == slug(collision[1])
    shared = [*collision, slug(collision[0])]  # three labels whose own slug is the same
    labels = [*shared, "Copy", "copy", "copy-2", "x" * 300]
    names = unique_slugs(labels)
    assert len({name.lower() for name in names.values()}) == len(labels)  # distinct, even ignoring case
    assert all(names[label].startswith(slug(label)) for label in labels)
    assert sum(names[label] == slug(collision[0]) for label in shared) == 1
    assert (names["Copy"], names["copy"], names["copy-2"]) == ("Copy", "copy-3", "copy-2")
    assert all(len(f"generalization_{name}.png") <= 80 for name in names.values())
    assert unique_slugs(["copy", "repeat_copy"]) == {"copy": "copy", "repeat_copy": "repeat_copy"}


def test_tensorboard_folders_stay_inside_their_root(tmp_path):
    spec = types.SimpleNamespace(suite="s", task="..", model="..", seed=1)
    assert tensorboard_dir(tmp_path, spec) == tmp_path / "s" / "_" / "_" / "seed1"
