"""Suite files: loading, include/--set merging, sweeps, and one clear line for every kind of mistake."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from bench.cli import main
from bench.config import ConfigError, reference_rows
from bench.grid import expand, load_suite
from tests.conftest import REPO

GOOD = """
name: t
include: {defaults}
seeds: 2
device: cpu
train: {steps: 10, eval_every: 5, batch_size: 4}
tasks:
  copy: {bits: 4, train_sizes: [1, 3], test_sizes: [4]}
models:
  lstm: {layers: 1, units: 8}
"""


def write(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("{defaults}", str(REPO / "suites" / "_defaults.yaml")))
    return path


def test_smoke_suite_loads_and_expands():
    suite = load_suite("smoke")
    runs = expand(suite)
    assert len(runs) == len(suite.tasks) * len(suite.models) * len(suite.seeds)
    assert len({r.run_id for r in runs}) == len(runs)
    assert {r.seed for r in runs} == set(suite.seeds)


def test_include_deep_merges_and_the_including_file_wins(tmp_path):
    suite = load_suite(str(write(tmp_path, GOOD)))
    assert suite.train.steps == 10 and suite.train.batch_size == 4
    assert suite.train.lr == 1e-3 and suite.train.clip.value == 50  # from _defaults.yaml
    assert suite.seeds == (1, 2)


def test_set_overrides(tmp_path):
    suite = load_suite(str(write(tmp_path, GOOD)), ["train.lr=3e-4", "seeds=[5, 7]", "train.clip.kind=value"])
    assert suite.train.lr == pytest.approx(3e-4)
    assert suite.seeds == (5, 7)
    assert suite.train.clip.kind == "value"


def test_the_description_says_what_set_changed(tmp_path):
    """A suite's description is about the file; --set can change its models, seeds or budget, so the description
    (report header, suite.json, bundles) gains what was set, unless --set gives the description itself."""
    path = str(write(tmp_path, GOOD + "description: An LSTM on Copy.\n"))
    assert load_suite(path).description == "An LSTM on Copy."
    changed = load_suite(path, ["seeds=[5, 7]", "models={gru: {model: gru}}"]).description
    assert changed == "An LSTM on Copy. Changed from the suite: seeds=[5, 7]; models={gru: {model: gru}}."
    assert load_suite(path, ["description=mine", "seeds=3"]).description == "mine"


def test_run_id_ignores_device_and_checkpointing_but_not_the_numbers(tmp_path):
    path = str(write(tmp_path, GOOD))
    base = {r.run_id for r in expand(load_suite(path))}
    assert base == {r.run_id for r in expand(load_suite(path, ["device=auto", "train.checkpoint_every=3"]))}
    assert base.isdisjoint({r.run_id for r in expand(load_suite(path, ["train.lr=0.01"]))})


def test_sweep_expands_into_named_variants(tmp_path):
    text = GOOD + "sweep: {train.lr: [0.001, 0.0003], learned_init: [true, false]}\n"
    runs = expand(load_suite(str(write(tmp_path, text))))
    models = sorted({r.model for r in runs})
    assert models == ["lstm[lr=0.0003,learned_init=False]", "lstm[lr=0.0003,learned_init=True]",
                      "lstm[lr=0.001,learned_init=False]", "lstm[lr=0.001,learned_init=True]"]
    lrs = {r.model: r.train.lr for r in runs}
    assert lrs["lstm[lr=0.0003,learned_init=True]"] == 0.0003
    assert len(runs) == 4 * 2


def test_reference_covers_every_key():
    keys = {row[0] for row in reference_rows()}
    assert {"seeds", "train.lr", "train.clip.kind", "train.max_nonfinite", "tasks", "models", "sweep"} <= keys


def test_readme_documents_every_key():
    readme = (REPO / "README.md").read_text()
    missing = [row[0] for row in reference_rows() if f"`{row[0]}`" not in readme]
    assert not missing, f"README's suite reference lacks {missing}; paste `python -m bench keys` into it"


# (yaml text, the key path the message must name, a phrase it must contain)
BAD = [
    (GOOD + "bogus: 1\n", "bogus", "unknown key"),
    (GOOD.replace("seeds: 2", "seeds: []"), "seeds", "empty"),
    (GOOD.replace("seeds: 2", "seeds: 0"), "seeds", ">= 1"),
    (GOOD.replace("seeds: 2", "seeds: two"), "seeds", "count or a list"),
    (GOOD.replace("seeds: 2", "seeds: [1, 1]"), "seeds", "distinct"),
    (GOOD.replace("steps: 10", "stepz: 10"), "train.stepz", "did you mean 'steps'"),
    (GOOD.replace("steps: 10", "steps: ten"), "train.steps", "integer"),
    (GOOD.replace("steps: 10", "steps: 0"), "train.steps", "> 0"),
    (GOOD.replace("batch_size: 4", "batch_size: 0"), "train.batch_size", "> 0"),
    (GOOD.replace("batch_size: 4", "batch_size: 2.5"), "train.batch_size", "integer"),
    (GOOD.replace("eval_every: 5", "eval_every: -1"), "train.eval_every", "> 0"),
    (GOOD.replace("steps: 10", "steps: 10, lr: fast"), "train.lr", "number"),
    (GOOD.replace("steps: 10", "steps: 10, optimizer: sgd"), "train.optimizer", "adam"),
    (GOOD.replace("steps: 10", "steps: 10, clip: {kind: l2}"), "train.clip.kind", "norm"),
    (GOOD.replace("steps: 10", "steps: 10, clip: {value: -1}"), "train.clip.value", "> 0"),
    (GOOD.replace("steps: 10", "steps: 10, stop_at_convergence: maybe"), "train.stop_at_convergence", "true or false"),
    (GOOD.replace("steps: 10", "steps: 10, length_sampling: random"), "train.length_sampling", "per_batch"),
    (GOOD.replace("device: cpu", "device: tpu"), "device", "allowed"),
    (GOOD.replace("lstm: {layers", "lstmm: {layers"), "models.lstmm", "did you mean 'lstm'"),
    (GOOD.replace("layers: 1", "layerz: 1"), "models.lstm.layerz", "did you mean 'layers'"),
    (GOOD.replace("layers: 1", "layers: 0"), "models.lstm", ">= 1"),
    (GOOD.replace("copy: {bits", "kopy: {bits"), "tasks.kopy", "did you mean 'copy'"),
    (GOOD.replace("train_sizes: [1, 3]", "train_sizes: [0, 3]"), "tasks.copy", "low"),
    (GOOD.replace("train_sizes: [1, 3]", "train_sizes: [5, 3]"), "tasks.copy", "low <= high"),
    (GOOD.replace("bits: 4", "bitz: 4"), "tasks.copy.bitz", "did you mean 'bits'"),
    (GOOD.replace("test_sizes: [4]", "test_sizes: [-4]"), "tasks.copy", "positive"),
    (GOOD.replace("models:\n  lstm: {layers: 1, units: 8}", "models: {}"), "models", "non-empty"),
    (GOOD.replace("tasks:\n  copy", "taskz:\n  copy"), "taskz", "did you mean 'tasks'"),
    (GOOD + "sweep: {train.lrr: [1]}\n", "sweep.train.lrr", "unknown training key"),
    (GOOD + "sweep: {memory_size: [1]}\n", "sweep.memory_size", "no model"),
    (GOOD + "sweep: {train.lr: []}\n", "sweep.train.lr", "non-empty list"),
    (GOOD.replace("name: t", "name: t\nname2: [unclosed"), "line", "YAML syntax error"),
    (GOOD.replace("include: {defaults}", "include: missing.yaml"), "include", "does not exist"),
    ("- just\n- a list\n", "top level", "mapping"),
]


@pytest.mark.parametrize("text,key,phrase", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_malformed_suite_exits_2_with_one_line(tmp_path, capsys, text, key, phrase, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, text)
    out = tmp_path / "out"
    assert main(["run", "--suite", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and key in err and phrase in err, err
    assert not out.exists()


def test_validate_ok_and_bad(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, GOOD))]) == 0
    assert "2 runs" in capsys.readouterr().out
    assert main(["validate", str(write(tmp_path, GOOD + "oops: 1\n", "bad.yaml"))]) == 2


def test_unknown_suite_name(capsys):
    assert main(["validate", "quik"]) == 2
    assert "known suites" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--set", "train.lr=oops"]])
def test_cli_error_is_one_line_without_traceback_in_a_subprocess(tmp_path, extra):
    path = write(tmp_path, GOOD.replace("bits: 4", "bitz: 4") if not extra else GOOD)
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--suite", str(path), "--out",
                           str(tmp_path / "out"), *extra], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_a_task_can_override_training_keys_for_its_runs(tmp_path):
    text = GOOD.replace("  copy: {bits: 4, train_sizes: [1, 3], test_sizes: [4]}",
                        "  copy: {bits: 4, train_sizes: [1, 3], test_sizes: [4], train: {steps: 3, lr: 0.01}}\n"
                        "  associative_recall: {bits: 4, train_sizes: [2, 3], test_sizes: [4]}")
    runs = expand(load_suite(str(write(tmp_path, text))))
    copy = [r for r in runs if r.task == "copy"]
    recall = [r for r in runs if r.task == "associative_recall"]
    assert {(r.train.steps, r.train.lr) for r in copy} == {(3, 0.01)}
    assert {(r.train.steps, r.train.lr) for r in recall} == {(10, 1e-3)}
    assert "train" not in copy[0].task_params  # not a task parameter
    # a sweep of the same key keeps the sweep's values
    swept = expand(load_suite(str(write(tmp_path, text + "sweep: {train.steps: [5, 6]}\n"))))
    assert {r.train.steps for r in swept if r.task == "copy"} == {5, 6}


@pytest.mark.parametrize("train, key, words", [
    ("{stepz: 3}", "tasks.copy.train.stepz", "unknown key"),
    ("{steps: 0}", "tasks.copy.train.steps", "must be > 0"),
    ("{stop_patience: two}", "tasks.copy.train.stop_patience", "integer"),
])
def test_bad_task_training_keys_are_one_line_errors(tmp_path, train, key, words):
    text = GOOD.replace("test_sizes: [4]}", f"test_sizes: [4], train: {train}}}")
    with pytest.raises(ConfigError) as error:
        load_suite(str(write(tmp_path, text)))
    message = str(error.value)
    assert key in message and words in message and "\n" not in message


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "suites").glob("*.yaml")
                                        if not p.stem.startswith(("_", "exp_"))))
def test_shipped_suites_never_test_beyond_their_memory(name):
    from bench.grid import memory_overflows

    assert memory_overflows(load_suite(name)) == []


def test_a_test_size_beyond_the_memory_is_a_warning(tmp_path, capsys):
    text = GOOD.replace("  lstm: {layers: 1, units: 8}",
                        "  ntm: {controller_units: 8, memory_locations: 3, memory_width: 4}")
    assert main(["validate", str(write(tmp_path, text))]) == 0
    err = capsys.readouterr().err
    assert "tasks.copy: test size L=4 needs 4 memory slots but models.ntm has memory_locations 3" in err
