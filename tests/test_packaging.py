"""ntm-bench as an installed package: a wheel built from this tree, installed (not editable) into a fresh virtual
environment outside the repository, used from an empty folder exactly as the README shows.

The fresh environment gets only the wheel; the third-party dependencies (torch, pandas, ...) are made visible from
the test's own environment through a path file, so that the test needs no network and no second torch install.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh venv's bin folder, an empty working folder)."""
    root = tmp_path_factory.mktemp("wheel")
    wheels = root / "dist"
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
              str(wheels), str(REPO)], cwd=root))
    (wheel,) = wheels.glob("ntm_bench-*.whl")
    venv = root / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root))
    python = venv / "bin" / "python"
    purelib = Path(_ok(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            cwd=root)).strip())
    # third-party packages from this environment; its editable ntm-bench is not visible, as path files listed in
    # a path file are not run
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _ok(_run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
              str(wheel)], cwd=root))
    empty = root / "work"
    empty.mkdir()
    return venv / "bin", empty


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    bin_dir, work = installed
    where = _ok(_run([str(bin_dir / "python"), "-c", "import bench, models, tasks, bench.config as c; "
                      "print(bench.__file__); print(models.__file__); print(c.SUITES_DIR)"], cwd=work))
    for line in where.split():
        assert str(bin_dir.parent) in line and str(REPO) not in line, where


def test_the_kernel_sources_ship_and_load_from_the_installed_package(installed):
    """The C++ kernels' sources (models/link_kernel.cpp, models/ntm_kernel.cpp and the header both include) are
    package data: the installed `models` reads them from its own folder and, wherever this checkout can build the C++
    kernels, loads the kernels built from them."""
    from models import _cpp, _link_kernel, _ntm_kernel

    bin_dir, work = installed
    found = _ok(_run([str(bin_dir / "python"), "-c", "from models import _cpp, _link_kernel as l, _ntm_kernel as n; "
                      "print(l.LINK.source); print(n.HEADS.source); print(_cpp.HEADER); "
                      "print(l.link_ops() is not None, n.HEADS.ops() is not None)"], cwd=work))
    *sources, loaded = found.splitlines()
    for source, ours in zip(sources, (_link_kernel.LINK.source, _ntm_kernel.HEADS.source, _cpp.HEADER)):
        assert str(bin_dir.parent) in source and str(REPO) not in source, found
        assert Path(source).read_text() == ours.read_text()
    if _link_kernel.link_ops() is not None and _ntm_kernel.HEADS.ops() is not None:
        assert loaded == "True True", found


def test_version_list_and_usage(installed):
    bin_dir, work = installed
    import bench

    assert _ok(_run([str(bin_dir / "ntm-bench"), "--version"], cwd=work)).strip() == f"ntm-bench {bench.__version__}"
    listing = _ok(_run([str(bin_dir / "ntm-bench"), "list"], cwd=work))
    suites = dict(line.split(":", 1) for line in listing.splitlines())["suites"]
    for name in ("quick", "smoke", "init_schemes", "paper_copy"):
        assert name in suites.split(", ") or f" {name}" in suites, listing
    usage = _run([str(bin_dir / "ntm-bench"), "run", "--workers", "0"], cwd=work)
    assert usage.returncode == 2 and "--workers" in usage.stderr
    help_text = _ok(_run([str(bin_dir / "ntm-bench"), "--help"], cwd=work))
    assert help_text.startswith("usage: ntm-bench") and "``" not in help_text


def test_run_smoke_from_an_empty_folder_with_a_plugin_and_an_include(installed):
    """The README's workflow from an empty folder: a suite file that includes a packaged suite by name, a model
    plugin in the current folder, output under --out there; then evaluate a finished run at new sizes."""
    bin_dir, work = installed
    (work / "mylstm.py").write_text(textwrap.dedent("""
        from bench.registry import register_model
        from models.lstm import LSTM


        @register_model("mylstm")
        class MyLSTM(LSTM):
            pass
    """))
    (work / "mine.yaml").write_text(textwrap.dedent("""
        name: mine
        include: _defaults.yaml
        seeds: 1
        device: cpu
        train: {batch_size: 8, steps: 20, eval_every: 10, eval_sequences: 16, generalization_sequences: 8}
        tasks:
          copy: {bits: 4, train_sizes: [1, 4], test_sizes: [4, 8]}
        models:
          mylstm: {layers: 1, units: 16}
    """))
    # a packaged suite by name; only copy and two of its models, to keep the test short
    smoke = _run([str(bin_dir / "ntm-bench"), "run", "--suite", "smoke", "--seeds", "1", "--out", "out",
                  "--no-estimate", "--set", "tasks={copy: {bits: 4, train_sizes: [1, 4], test_sizes: [4, 8]}}",
                  "--set", "models={lstm: {layers: 1, units: 16}, ntm: {controller_units: 16, "
                  "memory_locations: 16, memory_width: 5}}"], cwd=work)
    _ok(smoke)
    assert (work / "out" / "index.html").is_file() and (work / "out" / "summary.csv").is_file()
    with open(work / "out" / "runs.csv", newline="") as handle:
        runs = list(csv.DictReader(handle))
    assert sorted(row["model"] for row in runs) == ["lstm", "ntm"] and {row["status"] for row in runs} == {"done"}

    mine = _run([str(bin_dir / "ntm-bench"), "run", "--suite", "mine.yaml", "--plugin", "mylstm",
                 "--no-estimate", "--no-report"], cwd=work)
    _ok(mine)
    manifest = json.loads((work / "reports" / "mine" / "suite.json").read_text())
    assert manifest["name"] == "mine" and len(manifest["run_ids"]) == 1
    run = work / "reports" / "mine" / "runs" / manifest["run_ids"][0]
    assert json.loads((run / "spec.json").read_text())["model_type"] == "mylstm"
    assert json.loads((run / "result.json").read_text())["status"] == "done"

    # evaluate a finished run at new sizes, as the README shows
    ntm_run = next(row["run_id"] for row in runs if row["model"] == "ntm")
    table = _run([str(bin_dir / "ntm-bench"), "evaluate", f"out/runs/{ntm_run}", "--sizes", "6,10", "--out",
                  "eval.csv"], cwd=work)
    _ok(table)
    with open(work / "eval.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["size"] for row in rows] == ["L=6", "L=10"], rows


def test_adding_a_baseline_beside_the_shipped_reference(installed):
    """The README's "Adding a baseline" from an empty folder: a model plugin trained alone on the quick suite's
    Copy, its report showing the shipped quick bundle's LSTM, NTM and DNC beside it without training them."""
    bin_dir, work = installed
    (work / "mygru.py").write_text(textwrap.dedent("""
        import torch
        from bench.registry import register_model
        from models.base import SequenceModel


        @register_model("mygru")
        class MyGRU(SequenceModel):
            def __init__(self, input_size, output_size, units=32):
                super().__init__()
                self.gru = torch.nn.GRU(input_size, units, batch_first=True)
                self.out = torch.nn.Linear(units, output_size)

            def forward(self, inputs, trace=False):
                logits = self.out(self.gru(inputs)[0])
                return (logits, {}) if trace else logits
    """))
    listing = _ok(_run([str(bin_dir / "ntm-bench"), "list"], cwd=work))
    assert "  quick: suite quick" in listing, listing
    # the quick suite's own Copy task (so it is the same test), one seed and a few steps to keep the test short
    mine = _run([str(bin_dir / "ntm-bench"), "run", "--suite", "quick", "--plugin", "mygru", "--out", "mine",
                 "--no-estimate", "--set", "models={mygru: {units: 8}}", "--set", "seeds=[1]",
                 "--set", "train.steps=20", "--set",
                 "tasks={copy: {bits: 6, train_sizes: [1, 8], test_sizes: [4, 8, 12, 16, 20, 24]}}",
                 "--reference", "quick"], cwd=work)
    _ok(mine)
    with open(work / "mine" / "runs.csv", newline="") as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["mygru"]  # only the new model trained
    with open(work / "mine" / "summary.csv", newline="") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"mygru", "lstm", "ntm", "dnc"}
    assert rows["ntm"]["source"] == "reference: quick" and rows["mygru"]["source"] == "this folder"
    assert int(rows["ntm"]["seeds"]) == 3
    assert "reference: quick" in (work / "mine" / "index.html").read_text()
