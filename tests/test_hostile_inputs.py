"""Hostile inputs, from someone with write access to a suite file or a shared results folder: every input is bounded
before it is used (bench/bounded.py), and every refusal is one line that names the right file and quotes nothing of
its content. Suite files: an alias bomb, a device, a FIFO, deep nesting, a huge file, a folder or a system file as
`include:`. Options: --threads, --workers, evaluate's --sequences and --sizes. Results folders: a samples.npz that
inflates, JSON files that are not objects or not UTF-8. The Python API: a dict suite with a label that is not a
string."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile

import numpy as np
import pandas as pd
import pytest

import bench.bounded
import tests.test_hostile_files
from bench.api import UsageError, load_model, load_results, run_suite
from bench.bounded import MAX_SUITE_BYTES, MAX_YAML_DEPTH, UnreadableFile, read_json_object, read_npz
from bench.cli import main
from bench.config import MAX_INCLUDES, ConfigError, load_yaml
from bench.report.data import SAMPLE_ARRAYS, load_suite_data, sample_runs
from bench.trained import TrainedRunError, evaluate_run
from tests.test_end_to_end import TINY
from tests.test_hostile_config import BASE

SECRET = "toor:$6$s4lt$SECRETHASHVALUE:19000:0:99999:7:::"  # a password hash line


def one_error(capsys, *argv, status=2) -> str:
    """main(argv) must exit with `status` and print one `error:` line; returns it."""
    assert main(list(argv)) == status
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def refused(capsys, tmp_path, text, *phrases, name="x.yaml") -> str:
    """`validate` of a suite file holding `text` fails in one short line naming the file and `phrases`."""
    path = tmp_path / name
    path.write_text(text)
    line = one_error(capsys, "validate", str(path))
    assert str(path) in line and len(line) < 300, line
    for phrase in phrases:
        assert phrase in line, line
    return line


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output folder would land here


# ---- suite files ------------------------------------------------------------------------------------------------

def billion_laughs() -> str:
    """About 650 bytes that expand to 10^9 strings: each of nine levels lists the one below ten times."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        below, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [{', '.join([f'*{below}'] * 10)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once_without_its_value(tmp_path, capsys):
    text = billion_laughs()
    assert len(text) < 700
    started = time.perf_counter()
    line = refused(capsys, tmp_path, text, "values once its aliases are expanded")
    assert time.perf_counter() - started < 5
    assert "lol" not in line
    with pytest.raises(bench.bounded.YAMLLimitError):
        load_yaml(text)


def test_an_alias_bomb_under_a_key_that_is_checked_is_refused_too(tmp_path, capsys):
    """Before, `seeds: *bomb` would have printed the expanded value in its error."""
    line = refused(capsys, tmp_path, billion_laughs() + "seeds: *i\n", "once its aliases are expanded")
    assert "lol" not in line


def test_an_alias_inside_what_it_names_is_refused(tmp_path, capsys):
    refused(capsys, tmp_path, "a: &a [1, *a]\n", "an alias inside the node it names")


def test_dev_zero_as_a_suite_is_refused_before_reading(capsys):
    line = one_error(capsys, "validate", "/dev/zero")
    assert "/dev/zero" in line and "character device" in line


def test_dev_zero_as_an_include_blames_the_including_file(tmp_path, capsys):
    line = refused(capsys, tmp_path, "include: /dev/zero\n" + BASE, "include: /dev/zero:", "character device")
    assert line.startswith(f"error: {tmp_path / 'x.yaml'}: include: /dev/zero")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_a_suite_or_an_include_is_refused_without_waiting(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.yaml")
    line = one_error(capsys, "validate", str(tmp_path / "pipe.yaml"))
    assert "pipe.yaml" in line and "FIFO" in line
    refused(capsys, tmp_path, "include: pipe.yaml\n" + BASE, "include:", "pipe.yaml: is a FIFO")


def test_deep_nesting_is_refused_in_one_line(tmp_path, capsys):
    text = BASE + "description: " + "[" * 100 + "]" * 100 + "\n"
    refused(capsys, tmp_path, text, f"nested more than {MAX_YAML_DEPTH} levels deep")
    refused(capsys, tmp_path, BASE + "".join(f"{'  ' * i}k{i}:\n" for i in range(100)), "levels deep")


def test_deep_nesting_by_set_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "x.yaml"
    path.write_text(BASE)
    line = one_error(capsys, "validate", str(path), "--set", "description=" + "[" * 100 + "]" * 100)
    assert "--set" in line and "levels deep" in line


def test_a_file_over_the_size_limit_is_refused(tmp_path, capsys):
    text = BASE + "# padding\n" * (2 * 2**20 // 10)
    assert len(text) > MAX_SUITE_BYTES
    refused(capsys, tmp_path, text, "larger than 1 MiB, the limit for a suite file")


def test_a_folder_as_include_names_both_files(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    line = refused(capsys, tmp_path, "include: folder\n" + BASE, "include:", "folder: is a folder")
    assert line.startswith(f"error: {tmp_path / 'x.yaml'}: include: {tmp_path / 'folder'}:")


def test_a_system_file_as_include_is_not_quoted(tmp_path, capsys):
    """Its first line reads as a YAML key; the error names both files and says it is not a suite file."""
    shadow = tmp_path / "shadow"
    shadow.write_text(f"{SECRET}\ndaemon:*:19000:0:99999:7:::\n")
    line = refused(capsys, tmp_path, f"include: {shadow}\n" + BASE, f"include: {shadow}: not a suite file")
    assert "SECRET" not in line and "$6$" not in line and "daemon" not in line
    for text in (f"{SECRET}\n", f"{SECRET}: [\n", f"x: *{SECRET[:4]}\n", f"a: 1\na: {SECRET}\n",
                 f"{SECRET[:4]}: 1\n{SECRET[:4]}: 2\n", f"- {SECRET}\n", f"x: !!python/object:{SECRET[:4]} 1\n"):
        shadow.write_text(text)
        line = refused(capsys, tmp_path, f"include: {shadow}\n" + BASE, f"include: {shadow}:")
        assert "SECRET" not in line and "toor" not in line and "s4lt" not in line, line


def test_a_typo_in_an_included_file_is_named(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("trian: {steps: 3}\n")
    refused(capsys, tmp_path, "include: base.yaml\n" + BASE, "base.yaml: trian: unknown key (did you mean 'train'?)")


def test_a_chain_of_includes_is_bounded(tmp_path, capsys):
    for i in range(MAX_INCLUDES + 3):
        (tmp_path / f"i{i}.yaml").write_text(f"include: i{i + 1}.yaml\n")
    (tmp_path / f"i{MAX_INCLUDES + 3}.yaml").write_text("seeds: 1\n")
    (tmp_path / "x.yaml").write_text("include: i0.yaml\n" + BASE)
    line = one_error(capsys, "validate", str(tmp_path / "x.yaml"))  # blamed where the chain gets too long
    last = MAX_INCLUDES - 1
    assert f"i{last}.yaml: include: {tmp_path}/i{last + 1}.yaml: includes more than {MAX_INCLUDES} files deep" in line


def test_a_yaml_syntax_error_quotes_nothing(tmp_path, capsys):
    line = refused(capsys, tmp_path, BASE + "x: *hunter2\n", "YAML syntax error at line 10, column 4")
    assert "hunter2" not in line


@pytest.mark.parametrize("line, phrase", [
    ("description: 2024-13-45", "line 10, column 14: a value that cannot be read"),  # a date that does not exist
    ("description: " + "1" * 5000, "line 10, column 14: a value that cannot be read"),  # too many digits for int()
    ("sweep: {2024-01-01: [1]}", "sweep: a key or label must be a string, got date"),  # no key of suite.json
])
def test_values_yaml_cannot_build_or_json_cannot_write_are_one_line(tmp_path, capsys, line, phrase):
    refused(capsys, tmp_path, BASE + line + "\n", phrase)


# ---- options ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--threads", "--workers"])
def test_threads_and_workers_have_a_limit(tmp_path, capsys, option):
    out = tmp_path / "out"
    line = one_error(capsys, "run", "--suite", "smoke", "--out", str(out), option, "100000", *TINY)
    assert f"{option}: must be <= 256, got 100000" in line
    assert not out.exists()
    with pytest.raises(UsageError, match=f"{option}: must be <= 256"):
        run_suite("smoke", out, **{option[2:]: 100000})
    assert not out.exists()


#: test_hostile_files' fixtures: a finished tiny suite (one task, one model, two seeds) with its report, and a copy
smoke, copy_of = tests.test_hostile_files.smoke, tests.test_hostile_files.copy_of


def first_run(folder):
    return folder / "runs" / str(pd.read_csv(folder / "runs.csv")["run_id"][0])


def test_evaluate_sequences_and_sizes_obey_the_suites_limits(smoke, capsys):
    run = str(first_run(smoke))
    line = one_error(capsys, "evaluate", run, "--sequences", str(10**9))
    assert "--sequences: must be within 1..1000000" in line
    line = one_error(capsys, "evaluate", run, "--sizes", "1000000000")
    assert "sizes: L=1000000000:" in line and "more than the limit 100000000" in line
    assert "is not a size" in one_error(capsys, "evaluate", run, "--sizes", "9" * 5000)
    assert "is not a size" in one_error(capsys, "evaluate", run, "--sizes", "\u00b2")  # a digit int() refuses
    with pytest.raises(TrainedRunError, match="sequences: must be within"):
        evaluate_run(run, [3], sequences=10**9)
    with pytest.raises(TrainedRunError, match="more than the limit"):
        evaluate_run(run, [10**7], sequences=1000)
    assert len(evaluate_run(run, [3], sequences=2)) == 1  # within the limits it scores


# ---- results folders: samples.npz ---------------------------------------------------------------------------------

def test_a_samples_file_that_inflates_is_skipped(copy_of, monkeypatch, capsys):
    data = load_suite_data(copy_of)
    task = data.tasks["copy"]
    assert [model for model, _, _ in sample_runs(data, task)] == ["lstm"]
    big = np.zeros((1000, 1000), dtype=np.float32)  # 4 MB that compress to a few kB
    for path in copy_of.glob("runs/*/samples.npz"):
        np.savez_compressed(path, **{"train_max/trace/read_weights": big})
    assert all(path.stat().st_size < 64 * 1024 for path in copy_of.glob("runs/*/samples.npz"))
    assert [model for model, _, _ in sample_runs(data, task)] == ["lstm"]  # within the limit it is read
    monkeypatch.setattr(bench.bounded, "MAX_SAMPLES_BYTES", 2**20)  # as 64 MiB is to a file of 64 GiB
    assert sample_runs(data, task) == []
    assert main(["report", "--out", str(copy_of)]) == 0  # the report is written, without the sample panel


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def zip_declaring(path, name: str, declared: int) -> None:
    """A zip with one small member whose headers declare `declared` bytes uncompressed."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, b"\x93NUMPY" + b"\0" * 100)
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local and central header: file_size
        at = data.index(signature) + offset
        data[at:at + 4] = declared.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_an_npz_is_checked_before_any_array_is_read(tmp_path):
    path = tmp_path / "samples.npz"
    zip_declaring(path, "train_max/inputs.npy", 2**31)
    with pytest.raises(UnreadableFile, match="larger than 64 MiB"):
        read_npz(path, SAMPLE_ARRAYS)
    np.savez(path, **{"train_max/inputs": np.zeros(3), "passwords": np.zeros(3)})
    with pytest.raises(UnreadableFile, match="of a name not in"):
        read_npz(path, SAMPLE_ARRAYS)
    lying = npy_bytes(np.arange(3.0)).replace(b"'shape': (3,)", b"'shape': (9,)")  # more than it holds
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train_max/inputs.npy", lying)
    with pytest.raises(UnreadableFile, match="larger than its stored size"):
        read_npz(path, SAMPLE_ARRAYS)
    np.savez(path, **{"train_max/inputs": np.arange(3.0)})
    assert read_npz(path, SAMPLE_ARRAYS)["train_max/inputs"].tolist() == [0.0, 1.0, 2.0]


# ---- results folders: JSON files ----------------------------------------------------------------------------------

BAD_JSON = {"a list": (b"[1, 2]", "not a JSON object"), "not UTF-8": (b'{"name": "\xff"}', "not UTF-8 text"),
            "not JSON": (b'{"name": ', "not valid JSON"),
            "too deep": (b"[" * 5000 + b"]" * 5000, "nested more than 100 levels deep")}


@pytest.mark.parametrize("kind", BAD_JSON)
def test_a_damaged_suite_json_is_one_line_in_every_reader(copy_of, tmp_path, capsys, kind):
    content, phrase = BAD_JSON[kind]
    (copy_of / "suite.json").write_bytes(content)
    expected = f"{copy_of / 'suite.json'}: {phrase}"
    for argv in (["report", "--out", str(copy_of)],
                 ["export", str(copy_of), "--to", str(tmp_path / "bundle")],
                 ["compare", str(copy_of), str(copy_of), "--out", str(tmp_path / "compared")],
                 ["run", "--suite", "smoke", "--out", str(tmp_path / "reusing"), "--reuse", str(copy_of),
                  "--no-estimate", *TINY],
                 ["run", "--suite", "smoke", "--out", str(tmp_path / "referring"), "--reference", str(copy_of),
                  "--no-estimate", *TINY]):
        line = one_error(capsys, *argv)
        assert expected in line, (argv, line)
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "compared").exists()
    assert not (tmp_path / "reusing").exists() and not (tmp_path / "referring").exists()
    with pytest.raises(ConfigError, match=phrase):
        load_results(copy_of)


def test_damaged_run_files_are_one_line_for_load_model(copy_of):
    run = first_run(copy_of)
    for name in ("spec.json", "result.json"):
        original = (run / name).read_bytes()
        for content, _ in BAD_JSON.values():
            (run / name).write_bytes(content)
            with pytest.raises(TrainedRunError) as error:
                load_model(run)
            message = str(error.value)
            assert "\n" not in message and name in message, message
        (run / name).write_bytes(original)
    assert load_model(run) is not None


def test_a_damaged_manifest_or_references_file_is_one_line(copy_of, tmp_path, capsys):
    assert main(["export", str(copy_of), "--to", str(tmp_path / "bundle")]) == 0
    capsys.readouterr()
    (tmp_path / "bundle" / "manifest.json").write_bytes(b"[]")
    line = one_error(capsys, "compare", str(copy_of), str(tmp_path / "bundle"), "--out", str(tmp_path / "c"))
    assert "manifest.json: not a JSON object" in line
    (copy_of / "references.json").write_bytes(b"\xff\xfe")
    assert "references.json" in one_error(capsys, "report", "--out", str(copy_of))


def test_the_json_reader_refuses_a_device_and_a_folder(tmp_path):
    with pytest.raises(UnreadableFile, match="is a character device"):
        read_json_object("/dev/zero")
    with pytest.raises(UnreadableFile, match="is a folder"):
        read_json_object(tmp_path)
    (tmp_path / "ok.json").write_text(json.dumps({"a": [1, {"b": 2}]}))
    assert read_json_object(tmp_path / "ok.json") == {"a": [1, {"b": 2}]}


# ---- the Python API ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["models", "tasks", "sweep"])
def test_a_dict_suite_with_a_label_that_is_not_a_string_writes_nothing(tmp_path, where):
    suite = {"name": "labels", "include": "smoke.yaml", "seeds": 1,
             "tasks": {"copy": {"bits": 3, "train_sizes": [1, 3], "test_sizes": [3]}},
             "models": {"lstm": {"layers": 1, "units": 16}}}
    if where == "sweep":
        suite["sweep"] = {("train", "lr"): [0.1]}
    else:
        suite[where] = {("a", "b"): next(iter(suite[where].values()))}
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"a key or label must be a string, got tuple \('a', 'b'\)|"
                                          r"got tuple \('train', 'lr'\)") as error:
        run_suite(suite, out)
    assert "\n" not in str(error.value) and where in str(error.value)
    assert not out.exists() and not (tmp_path / "reports").exists()
