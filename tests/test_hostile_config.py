"""Hostile suite files: every bad value fails at validation with exit status 2, one `error:` line on stderr and
nothing written, whatever the value came from (the file, `--set`, a sweep, a task's `train:`)."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.config import ConfigError, load_yaml
from bench.grid import expand, load_suite
from tests.test_config import write as write_suite

# self-contained: include paths resolve relative to the file, so these suites include nothing
BASE = """
name: t
seeds: 2
device: cpu
train: {steps: 10, eval_every: 5, batch_size: 4, eval_sequences: 8, generalization_sequences: 4}
tasks:
  copy: {bits: 4, train_sizes: [1, 3], test_sizes: [4]}
models:
  lstm: {layers: 1, units: 8}
"""


def write(tmp_path, text, name="x.yaml"):
    return write_suite(tmp_path, text, name)


def fails(tmp_path, capsys, text, *phrases, command="run", extra=()):
    """Run `command` on the suite `text`; assert exit 2, one `error:` line holding `phrases`, nothing written."""
    path = write(tmp_path, text)
    out = tmp_path / "out"
    argv = ["run", "--suite", str(path), "--out", str(out)] if command == "run" else ["validate", str(path)]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert str(path) in err or "--set" in err, err
    for phrase in phrases:
        assert phrase in err, err
    assert not out.exists()
    assert not (tmp_path / "reports").exists()
    return err


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default output folder would land here, where the tests look for it


def test_the_base_suite_is_valid(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, BASE))]) == 0


# ---- 1. sweep values and per-task training keys take the same path as train: ------------------------------

@pytest.mark.parametrize("sweep, phrases", [
    ("{train.optimizer: [adam, sgd]}", ["sweep.train.optimizer:", "'sgd'", "adam, rmsprop"]),
    ("{train.eval_sequences: [0]}", ["sweep.train.eval_sequences:", "must be > 0"]),
    ("{train.lr: [abc]}", ["sweep.train.lr:", "must be a number", "'abc'"]),
    ("{train.batch_size: [2.5]}", ["sweep.train.batch_size:", "integer"]),
    ("{train.batch_size: [100000]}", ["sweep.train.batch_size:", "<= 65536"]),
    ("{train.lr: [.nan]}", ["sweep.train.lr", "finite"]),
])
def test_bad_sweep_values(tmp_path, capsys, sweep, phrases):
    fails(tmp_path, capsys, BASE + f"sweep: {sweep}\n", *phrases)


@pytest.mark.parametrize("train, phrases", [
    ("{optimizer: sgd}", ["tasks.copy.train.optimizer:", "adam, rmsprop"]),
    ("{eval_sequences: 0}", ["tasks.copy.train.eval_sequences:", "> 0"]),
    ("{lr: .inf}", ["tasks.copy.train.lr", "finite"]),
    ("{steps: 1000000000}", ["tasks.copy.train.steps:", "<= 100000000"]),
])
def test_bad_task_training_keys(tmp_path, capsys, train, phrases):
    text = BASE.replace("test_sizes: [4]}", f"test_sizes: [4], train: {train}}}")
    fails(tmp_path, capsys, text, *phrases, command="validate")


def test_a_bad_set_value_is_caught_like_a_file_value(tmp_path, capsys):
    fails(tmp_path, capsys, BASE, "train.optimizer:", "adam, rmsprop", extra=["--set", "train.optimizer=sgd"])


def test_swept_values_are_typed_like_train_values(tmp_path):
    runs = expand(load_suite(str(write(tmp_path, BASE + "sweep: {train.lr: [1], train.compile: [off]}\n"))))
    assert {type(r.train.lr) for r in runs} == {float}
    assert {r.train.compile for r in runs} == {"off"}  # YAML reads `off` as false


# ---- 2. finite numbers only -----------------------------------------------------------------------------------

@pytest.mark.parametrize("old, new, key", [
    ("steps: 10", "steps: 10, lr: .nan", "train.lr"),
    ("steps: 10", "steps: 10, lr: .inf", "train.lr"),
    ("steps: 10", "steps: 10, clip: {kind: value, value: -.inf}", "train.clip.value"),
    ("units: 8", "units: 8, forget_bias: .nan", "models.lstm.forget_bias"),
    ("device: cpu", "device: cpu\nresources: {num_cpus: .nan}", "resources.num_cpus"),
])
def test_non_finite_numbers_are_refused(tmp_path, capsys, old, new, key):
    fails(tmp_path, capsys, BASE.replace(old, new), key, "finite")


# ---- 3. duplicate keys -----------------------------------------------------------------------------------------

def test_a_duplicate_top_level_key_names_both_lines(tmp_path, capsys):
    text = BASE + "train: {steps: 20}\n"  # BASE's train: is on line 5
    fails(tmp_path, capsys, text, "line 10: duplicate key 'train' (first at line 5)")


def test_a_duplicate_model_label_is_refused(tmp_path, capsys):
    fails(tmp_path, capsys, BASE + "  lstm: {layers: 2, units: 8}\n", "line 10: duplicate key 'lstm' (first at line 9)")


def test_a_duplicate_key_in_a_flow_mapping_is_refused(tmp_path, capsys):
    fails(tmp_path, capsys, BASE.replace("steps: 10,", "steps: 10, steps: 20,"), "duplicate key 'steps'")


def test_yaml_merge_keys_still_work():
    assert load_yaml("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  c: 3\n") == {"a": {"b": 1, "c": 2}, "d": {"b": 1, "c": 3}}


# ---- 4. the suite name -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", "..", "x..y", "-rf", "'a b'", "''", "a" * 65])
def test_unsafe_suite_names_are_refused(tmp_path, capsys, name):
    fails(tmp_path, capsys, BASE.replace("name: t", f"name: {name}"), "name:", "letters, digits")


def test_unsafe_name_by_set(tmp_path, capsys):
    fails(tmp_path, capsys, BASE, "name:", extra=["--set", "name=../../etc"])


# ---- 5. sizes ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("old, new, phrases", [
    ("seeds: 2", "seeds: 100000000", ["seeds:", "<= 1000"]),
    ("seeds: 2", "seeds: [1, 4294967296]", ["seeds:", "0..2147483647"]),
    ("seeds: 2", "seeds: [-1]", ["seeds:", "0..2147483647"]),
    ("seeds: 2", "seeds: 2\neval_seed: -5", ["eval_seed:", "0..2147483647"]),
    ("batch_size: 4", "batch_size: 10000000", ["train.batch_size:", "<= 65536"]),
    ("steps: 10,", "steps: 1000000000,", ["train.steps:", "<= 100000000"]),
    ("eval_sequences: 8", "eval_sequences: 10000000", ["train.eval_sequences:", "<= 1000000"]),
    ("generalization_sequences: 4", "generalization_sequences: 0", ["train.generalization_sequences:", "> 0"]),
    ("test_sizes: [4]", "test_sizes: [100000000]", ["tasks.copy:", "sequence steps", "limit"]),
    ("train_sizes: [1, 3]", "train_sizes: [1, 10000000]", ["tasks.copy:", "the longest training sequence", "limit"]),
    ("units: 8", "units: 100000", ["models.lstm:", "parameters", "limit"]),
    ("units: 8", "units: 100000000000000000000", ["models.lstm:", "units must be <= 10000000"]),
    ("layers: 1", "layers: 100000000", ["models.lstm:", "layers must be <= 1000"]),
    ("bits: 4", "bits: 100000000000000000000", ["tasks.copy:", "input_size", "limit"]),
    ("copy: {bits: 4, train_sizes: [1, 3], test_sizes: [4]}", "ngrams: {context_bits: 40}",
     ["tasks.ngrams:", "contexts", "limit"]),
    ("lstm: {layers: 1, units: 8}", "ntm: {memory_locations: 100000, memory_width: 10000}",
     ["models.ntm:", "memory_locations x memory_width"]),
    ("batch_size: 4", "batch_size: 64", ["models.ntm:", "train.batch_size x memory_locations"]),
])
def test_sizes_beyond_the_limits_fail_at_validation(tmp_path, capsys, old, new, phrases):
    text = BASE
    if "batch_size x memory" in phrases[1]:  # a memory within the per-sequence limit, too large for the batch
        text = text.replace("lstm: {layers: 1, units: 8}", "ntm: {memory_locations: 1000000, memory_width: 64}")
    fails(tmp_path, capsys, text.replace(old, new), *phrases, command="validate")


def test_seeds_option_beyond_the_limit(tmp_path, capsys):
    fails(tmp_path, capsys, BASE, "seeds:", "<= 1000", extra=["--seeds", "5000"])


# ---- 6. --set include -----------------------------------------------------------------------------------------

def test_set_include_is_refused(tmp_path, capsys):
    fails(tmp_path, capsys, BASE, "include: cannot be set with --set", extra=["--set", "include=other.yaml"])


# ---- 7. the top-level unknown-key message ------------------------------------------------------------------

def test_top_level_unknown_key_reads_without_a_dot(tmp_path, capsys):
    err = fails(tmp_path, capsys, BASE + "foo: 1\n", "unknown key")
    assert f"{tmp_path / 'x.yaml'}: foo: unknown key" in err and ".foo" not in err


def test_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="duplicate key"):
        load_suite(str(write(tmp_path, BASE + "seeds: 3\n")))


def test_a_non_finite_set_value_is_refused(tmp_path, capsys):
    fails(tmp_path, capsys, BASE, "train.lr", "finite", extra=["--set", "train.lr=.nan"])


def test_a_file_stem_of_dots_cannot_name_the_output_folder(tmp_path, capsys):
    path = write(tmp_path, BASE.replace("name: t\n", ""), name="...yaml")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "name:" in err, err


def test_nested_aliases_are_checked_once():
    """Shared objects (what YAML aliases give, or a dict suite that reuses a list) are checked once each. Such a
    YAML document is refused when it is read (tests/test_hostile_inputs.py); a dict suite can still share."""
    from bench.config import _check_values

    shared: list = [1.0, 2.0]
    for _ in range(10):
        shared = [shared] * 8
    _check_values({"d": shared}, "", "x.yaml")  # 8^10 paths, a few dozen objects: returns at once
