"""Ready for a GPU, checked on a CPU: scripts/gpu_check.sh (valid bash; without CUDA one line and a non-zero exit at
once; its parts' commands parse and select what they should; its summary and exit status, run against a stand-in
python), and what a GPU changes in the harness, through stand-ins for torch.cuda: a worker's memory share and
deterministic mode (`bench.gpu`), the memory check on the GPU's memory, the time estimate handing its memory back,
evaluation on the model's device, `evaluate` on `auto`, and bench.perf's CUDA-graph columns. tests/test_cuda.py
checks the same on a real GPU."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from bench import gpu
from bench.cli import build_parser, main
from bench.evaluate import wrong_bits_by_position
from bench.grid import expand, load_suite, task_key
from bench.local_backend import LocalBackend
from bench.options import WorkerOptions
from bench.registry import build_model, build_task
from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"
#: the most files that come back from a GPU machine's output folder
MOST_FILES = 8
no_cuda_only = pytest.mark.skipif(torch.cuda.is_available(), reason="here the script would run the whole GPU check")


# ---- scripts/gpu_check.sh -------------------------------------------------------------------------------------------

def _commands() -> dict[str, list[str]]:
    """The script's `--commands`: each part's python arguments, and the files it may write (`files`)."""
    done = subprocess.run(["bash", str(SCRIPT), "--commands"], capture_output=True, text=True, timeout=30, check=True)
    commands = {}
    for line in done.stdout.splitlines():
        name, _, rest = line.partition(": ")
        commands[name] = rest.split() if name == "files" else shlex.split(rest)
    return commands


def test_the_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)


@no_cuda_only
def test_without_cuda_the_script_says_so_in_one_line_and_fails_at_once(tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(out), "PYTHON": sys.executable})
    assert time.monotonic() - started < 60
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 3 and len(lines) == 1, lines
    assert "no CUDA device" in lines[0]
    assert not out.exists()  # nothing written


def test_the_parts_select_the_cuda_tests_the_riskiest_perf_first_and_a_10_seed_group():
    from bench import perf, registry
    from bench.runner import group_seeds, resolve_parallel_seeds

    commands = _commands()
    tests = commands["TESTS"]
    assert tests[:2] == ["-m", "pytest"] and "-v" in tests and "--tb=short" in tests  # a line per test, tracebacks
    assert [a for a in tests if a.startswith("tests/")] == ["tests/test_models.py", "tests/test_cuda.py"]
    assert all((REPO / a).is_file() for a in tests if a.startswith("tests/"))

    registry.load_all()
    for name, model in (("PERF_DNC", "dnc"), ("PERF_NTM", "ntm"), ("PERF_LSTM", "lstm")):
        assert commands[name][:2] == ["-m", "bench.perf"]
        args = perf.parse_args(commands[name][2:])
        assert args.device == "cuda" and args.models == [model] and model in registry.MODELS
        assert args.modes == (["eager", "cudagraphs"] if model != "lstm" else ["eager"])
    text = SCRIPT.read_text()
    assert text.index("perf_call dnc") < text.index("perf_call ntm") < text.index("perf_call lstm")

    suite_args = commands["SUITE"]
    assert suite_args[:3] == ["-m", "bench", "run"]
    args = build_parser().parse_args(suite_args[2:])
    assert args.device == "cuda" and args.no_report and args.no_estimate
    suite = load_suite(args.suite, args.overrides)
    specs = expand(suite)
    assert {(s.task, s.model, s.model_params.get("memory_init")) for s in specs} == {("copy", "ntm_constant",
                                                                                      "constant")}
    assert len(specs) == 10 and suite.train.steps == 300 and suite.train.compile == "cudagraphs"
    assert [len(group) for group in group_seeds(specs, resolve_parallel_seeds(suite, "cuda"))] == [10]


def test_the_script_writes_at_most_8_files():
    files = _commands()["files"]
    assert len(files) <= MOST_FILES
    text = SCRIPT.read_text()
    written = set(re.findall(r'\$OUT/([\w.]+)', text)) | set(re.findall(r'out / "([\w.]+)"', text))
    assert written <= set(files), written - set(files)


#: a stand-in for the GPU machine's python: CUDA is there, the parts' commands print and write what the real ones
#: would (FAKE_FAIL: a failed test, a graph compiled without CUDA graphs, a failed run), and the script's own snippets
#: run on this python
FAKE_PYTHON = r"""#!/usr/bin/env bash
REAL="$REAL_PYTHON"
option() { local want=$1; shift; while (($#)); do [[ "$1" == "$want" ]] && { echo "$2"; return; }; shift; done; }
case "$1 $2" in
  "-c "*cuda.is_available*) exit 0 ;;
  "- "*) body=$(cat)
       if [[ "$body" == *get_device_properties* ]]; then echo "python 3.12, torch 2.11 (a stand-in)"; exit 0; fi
       printf '%s\n' "$body" | "$REAL" "$@"; exit $? ;;
  "-m pytest") echo "collected 2 items"; echo "tests/test_cuda.py::test_a PASSED [ 50%]"
       if [[ -n "$FAKE_FAIL" ]]; then echo "tests/test_cuda.py::test_b FAILED [100%]"
         echo "FAILED tests/test_cuda.py::test_b - AssertionError"
         echo "===== 1 failed, 1 passed in 1.00s ====="; exit 1; fi
       echo "tests/test_cuda.py::test_b PASSED [100%]"; echo "===== 2 passed in 1.00s ====="; exit 0 ;;
  "-m bench.perf") out=$(option --out "$@"); model=$(option --models "$@"); mkdir -p "$out"
       skips=0; [[ -n "$FAKE_FAIL" && "$model" == ntm ]] && skips=2
       { echo "model,mode,population,seq_per_s,cuda_graphs,cudagraph_skips"; echo "$model,train_eager,1,100,,"
         [[ "$model" != lstm ]] && echo "$model,train_cudagraphs,1,900,11,$skips"; } > "$out/perf.csv"
       echo "a table"; exit 0 ;;
  "-m bench") out=$(option --out "$@"); mkdir -p "$out/runs/r0"
       echo '{"compile_options": {"mode": "reduce-overhead"}}' > "$out/runs/r0/spec.json"
       status=done; [[ -n "$FAKE_FAIL" ]] && status=failed
       echo '{"status": "failed", "error": "RuntimeError: boom", "traceback": "Traceback: boom"}' \
         > "$out/runs/r0/result.json"
       { echo "run_id,seed,status,final_wrong_bits_per_seq,nonfinite_steps,steps,wall_s,seq_per_s"
         echo "r0,1,$status,0.5,0,300,20,160"
         for seed in 2 3 4 5 6 7 8 9 10; do echo "r$seed,$seed,done,0.5,0,300,20,160"; done; } > "$out/runs.csv"
       [[ -n "$FAKE_FAIL" ]] && exit 1; exit 0 ;;
esac
exec "$REAL" "$@"
"""


def _run_with_stand_in(tmp_path: Path, fail: bool) -> tuple[subprocess.CompletedProcess, Path]:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = {"PATH": "/usr/bin:/bin", "OUT": str(out), "PYTHON": str(fake), "REAL_PYTHON": sys.executable,
           "FAKE_FAIL": "1" if fail else "", "TMPDIR": str(tmp_path)}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env), out


def test_the_summary_gives_one_line_per_part_and_the_exit_status_says_whether_all_passed(tmp_path):
    done, out = _run_with_stand_in(tmp_path, fail=False)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (out / "summary.txt").read_text().splitlines()
    assert any("a stand-in" in line for line in summary)  # the versions
    parts = [line for line in summary if re.match(r"\d\. ", line)]
    assert [line.split(":")[0] for line in parts] == ["1. CUDA tests", "2. perf", "3. population run"]
    assert all(": passed" in line for line in parts), parts
    assert "2 passed" in parts[0] and "11 CUDA graphs, 0 skipped" in parts[1] and "10 of 10 runs finished" in parts[2]
    assert all(line in done.stdout for line in parts)
    assert len(list(out.iterdir())) <= MOST_FILES
    assert len(pd.read_csv(out / "perf.csv")) == 5 and len(pd.read_csv(out / "runs.csv")) == 10
    assert not (out / "failure.txt").exists()


def test_a_failed_test_a_skipped_cuda_graph_and_a_failed_run_each_fail_the_check(tmp_path):
    done, out = _run_with_stand_in(tmp_path, fail=True)
    assert done.returncode == 1, done.stdout + done.stderr
    parts = [line for line in (out / "summary.txt").read_text().splitlines() if re.match(r"\d\. ", line)]
    assert len(parts) == 3 and not any(": passed" in line for line in parts), parts
    assert "1 failed, 1 passed" in parts[0]
    assert "2 skipped" in parts[1]
    assert "1 failed (failure.txt)" in parts[2]
    assert "FAILED tests/test_cuda.py::test_b" in done.stdout
    assert "Traceback: boom" in (out / "failure.txt").read_text()
    assert len(list(out.iterdir())) <= MOST_FILES


def test_the_cuda_only_tests_skip_here_saying_why():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: tests/test_cuda.py runs")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
                           "tests/test_cuda.py"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    assert re.search(r"\b1[0-9] skipped\b", done.stdout) and "passed" not in done.stdout, done.stdout[-2000:]
    assert "needs a CUDA device" in done.stdout


# ---- a worker's memory share and deterministic mode ---------------------------------------------------------------

class _Stop(BaseException):
    """Ends a command where a test has seen what it wanted (past the CLI's error handling)."""


def test_the_memory_fraction_option_is_checked_and_reaches_the_workers(monkeypatch, capsys, tmp_path):
    out = ["--out", str(tmp_path / "out")]
    for bad in ("0", "1.5", "nan", "-0.1"):
        assert main(["run", "--suite", "smoke", *out, "--gpu-memory-fraction", bad]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --gpu-memory-fraction: must be a number in (0, 1]")
    seen = {}

    def make_backend(executor, workers, options, fresh):
        seen["options"] = options
        raise _Stop

    monkeypatch.setattr("bench.cli.make_backend", make_backend)
    with pytest.raises(_Stop):
        main(["run", "--suite", "smoke", *out, "--gpu-memory-fraction", "0.5", "--deterministic"])
    assert seen["options"].gpu_memory_fraction == 0.5 and seen["options"].deterministic
    with pytest.raises(_Stop):
        main(["run", "--suite", "smoke", *out])
    assert seen["options"].gpu_memory_fraction is None and not seen["options"].deterministic
    assert not (tmp_path / "out").exists()


def test_a_worker_applies_its_memory_share_on_a_gpu_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda *args: calls.append(args))
    with gpu.worker_settings(0.3, False, torch.device("cpu")):
        pass
    assert calls == []
    with gpu.worker_settings(0.3, False, torch.device("cuda", 1)):
        pass
    assert calls == [(0.3, torch.device("cuda", 1))]
    with gpu.worker_settings(None, False, torch.device("cuda")):
        pass
    assert len(calls) == 1


def test_deterministic_mode_is_on_while_a_group_trains_and_put_back_after(monkeypatch, tmp_path):
    from bench import runner

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    calls, seen = [], {}
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda *args: calls.append(args))
    monkeypatch.setattr(runner, "resolve_device", lambda name: torch.device("cuda"))  # as on a GPU machine

    def train_population(specs, run_dirs, options, hooks):
        seen["deterministic"] = torch.are_deterministic_algorithms_enabled()
        seen["cublas"] = runner.os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        for spec in specs:
            hooks[-1].on_finish(spec, {"status": "done"})

    monkeypatch.setattr(runner, "train_population", train_population)
    spec = expand(load_suite("smoke", ["seeds=1"]))[0]
    options = WorkerOptions(gpu_memory_fraction=0.5, deterministic=True)
    assert runner.train_group([spec], tmp_path, options) == {spec.run_id: {"status": "done"}}
    assert seen == {"deterministic": True, "cublas": gpu.CUBLAS_WORKSPACE}
    assert calls == [(0.5, torch.device("cuda"))]
    assert not torch.are_deterministic_algorithms_enabled()
    runner.train_group([spec], tmp_path, WorkerOptions())
    assert seen["deterministic"] is False  # off unless asked for


# ---- the memory check, the estimate ------------------------------------------------------------------------------

def test_the_memory_check_counts_the_gpus_memory_and_each_workers_share(monkeypatch):
    import bench.local_backend

    monkeypatch.setattr(bench.local_backend, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=80 * 2**30))
    monkeypatch.setattr(bench.local_backend, "machine_memory", lambda: 2**30)  # the host's: not what counts
    suite = load_suite("smoke")
    assert LocalBackend(4).memory(suite) == (80 * 2**30, 4)
    assert LocalBackend(4, WorkerOptions(gpu_memory_fraction=0.1)).memory(suite) == (int(0.1 * 80 * 2**30 * 4), 4)
    assert LocalBackend(4, WorkerOptions(gpu_memory_fraction=0.5)).memory(suite) == (80 * 2**30, 4)  # never more


def test_the_estimate_hands_back_the_memory_of_each_probe(monkeypatch):
    import bench.preflight

    released = []
    monkeypatch.setattr(bench.preflight, "release_memory", released.append)
    specs = [s for s in expand(load_suite("smoke", ["seeds=1"])) if s.task == "copy"]
    assert bench.preflight.estimate_seconds(specs, threads=1, probe_steps=1) > 0
    assert released == [torch.device("cpu")] * len(specs)
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    gpu.release_memory(torch.device("cpu"))
    assert emptied == []
    gpu.release_memory(torch.device("cuda"))
    assert emptied == [True]


# ---- evaluation on the model's device ----------------------------------------------------------------------------

class _Recording(torch.nn.Module):
    """A model whose tensors are on the meta device: it records where its inputs are and answers there."""

    def __init__(self, output_size: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(1, device="meta"))
        self.output_size, self.devices = output_size, []

    def forward(self, inputs):
        self.devices.append(inputs.device)
        return torch.zeros(*inputs.shape[:2], self.output_size, device=inputs.device)


def test_wrong_bits_by_position_runs_on_the_models_device():
    task = build_task("copy", bits=3, train_sizes=[1, 4])
    model = _Recording(task.output_size)
    errors = wrong_bits_by_position(model, task, (6,), 8, 1, task_key("copy", {}))
    assert model.devices and {d.type for d in model.devices} == {"meta"}
    assert errors.device.type == "meta" and errors.shape == (6,)
    # on the CPU, the same numbers as scoring each example's scored steps by hand
    torch.manual_seed(0)
    real = build_model("ntm", task.input_size, task.output_size, controller_units=8, memory_locations=8,
                       memory_width=3)
    errors = wrong_bits_by_position(real, task, (6,), 8, 1, task_key("copy", {}))
    from bench.evaluate import generalization_set
    from bench.metrics import wrong_bits_per_step

    batch = generalization_set(task, 8, 1, task_key("copy", {}), [(6,)])[(6,)][0]
    with torch.no_grad():
        expected = wrong_bits_per_step(real(batch.inputs), batch.targets)[:, batch.mask[0].bool()].mean(0)
    torch.testing.assert_close(errors, expected)


def test_evaluate_takes_the_gpu_when_there_is_one():
    import inspect

    from bench.trained import evaluate_run, render_figures

    assert build_parser().parse_args(["evaluate", "some/run"]).device == "auto"
    assert inspect.signature(evaluate_run).parameters["device"].default == "auto"
    assert inspect.signature(render_figures).parameters["device"].default == "auto"


# ---- bench.perf ---------------------------------------------------------------------------------------------------

def test_perf_writes_each_measurement_as_it_goes_with_the_cuda_graph_columns(tmp_path, monkeypatch):
    from bench import perf

    written = []
    original = perf.atomic_write_csv
    monkeypatch.setattr(perf, "atomic_write_csv", lambda path, frame: (written.append(len(frame)),
                                                                      original(path, frame)))
    assert perf.main(["--quick", "--no-compile", "--models", "ntm", "--out", str(tmp_path), "--threads", "1"]) == 0
    frame = pd.read_csv(tmp_path / "perf.csv")
    assert list(frame.columns) == perf.COLUMNS and {"cuda_graphs", "cudagraph_skips"} <= set(frame.columns)
    assert written == list(range(1, len(frame) + 1))  # after every row: a timeout keeps what was measured
    assert frame["cuda_graphs"].isna().all()  # no CUDA-graph row on a CPU
    assert gpu.cuda_graphs_recorded(torch.device("cpu")) == 0 and gpu.cudagraph_skips() >= 0
