"""A task added from outside the packages (README, "Adding a task"): tests/plugins/reverse_task.py registers Reverse
with `@register_task`, draws what it promises, and trains through the normal harness with `--plugin`; the README
shows that file and the suite this test runs."""

from __future__ import annotations

import json
import re

import pandas as pd
import torch
import yaml

from bench import registry
from bench.cli import main
from tests.conftest import REPO, small_params

PLUGIN = "tests.plugins.reverse_task"


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_the_plugin_registers_reverse_and_its_target_is_the_input_reversed():
    registry.load_plugin(PLUGIN)
    assert "reverse" in registry.TASKS and registry.TASKS["reverse"].__module__ == PLUGIN
    task = registry.build_task("reverse", bits=3, train_sizes=[1, 6])
    batch = task.sample(16, torch.Generator().manual_seed(0))
    assert batch.inputs.shape[2] == 4 and batch.targets.shape[2] == 3
    reordered = 0
    for b in range(batch.batch_size):
        (length,) = batch.sizes[b].tolist()
        data = batch.inputs[b, :length, :3]
        assert batch.inputs[b, length, 3] == 1 and batch.inputs[b, :length, 3].sum() == 0  # the delimiter
        answer = batch.targets[b, length + 1 : 2 * length + 1]
        assert torch.equal(answer, data.flip(0)), f"example {b}: the target is not the input reversed"
        assert batch.mask[b].tolist() == [0.0] * (length + 1) + [1.0] * length + [0.0] * (batch.steps - 2 * length - 1)
        reordered += not torch.equal(answer, data)
    assert reordered > 0  # some examples where reversing differs from copying, so the check above can tell them apart
    # the same generator state gives the same batch
    again = task.sample(16, torch.Generator().manual_seed(0))
    assert torch.equal(batch.inputs, again.inputs) and torch.equal(batch.targets, again.targets)


def test_the_readme_shows_the_plugin_file_as_it_is():
    blocks = code_blocks(readme_section("Adding a task"), "python")
    assert (REPO / "tests" / "plugins" / "reverse_task.py").read_text() in blocks


def test_the_readme_suite_trains_reverse_through_the_harness(tmp_path):
    section = readme_section("Adding a task")
    (suite_text,) = code_blocks(section, "yaml")
    assert f"--plugin {PLUGIN}" in section
    suite = yaml.safe_load(suite_text)
    assert set(suite["tasks"]) == {"reverse"} and set(suite["models"]) == {"lstm", "ntm"}
    suite["include"] = str(REPO / "suites" / "_defaults.yaml")  # the README's suite lives in no particular folder
    path = tmp_path / "reverse.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    models = {name: small_params(name) for name in ("lstm", "ntm")}
    tiny = {"tasks.reverse.bits": 3, "tasks.reverse.train_sizes": [1, 3], "tasks.reverse.test_sizes": [3, 6],
            "models": models, "seeds": 1, "train.steps": 12, "train.eval_every": 6, "train.batch_size": 4,
            "train.eval_sequences": 8, "train.generalization_sequences": 4, "train.checkpoint_every": 6,
            "train.stop_at_convergence": False}
    overrides = [arg for key, value in tiny.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    code = main(["run", "--suite", str(path), "--out", str(out), "--no-report", "--no-estimate", "--device", "cpu",
                 "--plugin", PLUGIN, *overrides])
    assert code == 0
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["model"]) == ["lstm", "ntm"]
    assert (runs["task"] == "reverse").all() and (runs["task_type"] == "reverse").all()
    assert (runs["status"] == "done").all() and (runs["steps"] == 12).all()
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["task"]) == {"reverse"} and sorted(set(curves["step"])) == [0, 6, 12]
    generalization = pd.read_csv(out / "generalization.csv")
    assert set(generalization["size"]) == {"L=3", "L=6"} and len(generalization) == 4
    facts = json.loads((out / "suite.json").read_text())["tasks"]["reverse"]  # what the report knows of the task
    assert facts["type"] == "reverse" and facts["test_size_2x"] == [6]
    assert facts["convergence"] == {"metric": "wrong_bits_per_seq", "threshold": 0.1, "op": "<", "reference": None}
