"""The HTML report: it renders from files alone, embeds every figure, shows every task x model, and says plainly
when a run diverged, failed or never converged. The `browser` test opens it in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main as cli_main
from bench.registry import build_task
from bench.report.figures import wrap_label
from bench.report.page import write_report
from bench.results import atomic_write_bytes, atomic_write_csv, atomic_write_json, collect

REPO = Path(__file__).resolve().parents[1]
STEPS, BATCH, EVAL_EVERY = 400, 8, 50
SEEDS = [1, 2, 3, 4]
LONG_MODEL = "ntm[memory_init=constant]"
MODELS = {"lstm": "lstm", "ntm": "ntm", LONG_MODEL: "ntm", "dnc": "dnc"}
TASKS = {
    "copy": {"type": "copy", "size_parts": ["L"], "train_sizes": {"L": [1, 4]}, "test_sizes": [[4], [8], [12]],
             "bits": 4},
    "repeat_copy": {"type": "repeat_copy", "size_parts": ["L", "n"], "train_sizes": {"L": [1, 3], "n": [1, 2]},
                    "test_sizes": [[3, 2], [3, 4], [6, 2], [6, 4]], "bits": 3},
    "priority_sort": {"type": "priority_sort", "size_parts": ["inputs", "outputs"],
                      "train_sizes": {"inputs": [6, 6], "outputs": [4, 4]}, "test_sizes": [[6, 4], [9, 6]],
                      "bits": 3},
    "ngrams": {"type": "ngrams", "size_parts": ["length"], "train_sizes": {"length": [20, 20]},
               "test_sizes": [[40]], "bits": 1},
}
# converge steps per (task, model); None = never converges. dnc on copy seed 2 diverges; ntm on repeat_copy seed 3 fails
CONVERGE = {
    ("copy", "lstm"): [None, None, None, None],
    ("copy", "ntm"): [100, 150, 150, 200],
    ("copy", LONG_MODEL): [50, 100, 100, 50],
    ("copy", "dnc"): [200, None, 250, 300],
    ("repeat_copy", "lstm"): [300, None, 350, None],
    ("repeat_copy", "ntm"): [150, 200, None, 250],
    ("repeat_copy", LONG_MODEL): [100, 150, 150, 200],
    ("repeat_copy", "dnc"): [200, 250, 300, 350],
    ("ngrams", "lstm"): [300, 350, None, 400],
    ("ngrams", "ntm"): [200, 250, 300, 350],
    ("ngrams", LONG_MODEL): [200, 200, 250, 300],
    ("ngrams", "dnc"): [250, 300, 350, 400],
}
DIVERGED = ("copy", "dnc", 2)
FAILED = ("repeat_copy", "ntm", 3)
FAILURE_MESSAGE = "RuntimeError: injected failure for the report test"


def _error_curve(steps: np.ndarray, converge: int | None, rng: np.random.Generator) -> np.ndarray:
    """Wrong bits/seq decaying so that it drops below 0.1 exactly at `converge` (never, when None)."""
    start = 6.0
    if converge is None:
        return np.maximum(0.5, start * np.exp(-steps / 400)) + rng.uniform(0, 0.2, len(steps))
    rate = np.log(start / 0.09) / converge
    values = start * np.exp(-rate * steps)
    values[steps < converge] = np.maximum(values[steps < converge], 0.11)
    values[steps >= converge] = np.minimum(values[steps >= converge], 0.09)
    values[steps >= converge + 100] = 0.0  # exact zeros: the log plot must cope
    return values


def _samples(task: dict, model_type: str, rng: np.random.Generator) -> bytes:
    arrays = {}
    bits = task["bits"]
    largest = [hi for _, hi in (task["train_sizes"][p] for p in task["size_parts"])]
    for name, factor in (("train_max", 1), ("double", 2)):
        size = [factor * s for s in largest]
        steps = 2 * size[0] + 1 if task["type"] != "ngrams" else size[0] - 1
        inputs = rng.integers(0, 2, (steps, bits + 1)).astype(np.float32)
        if task["type"] == "priority_sort":
            inputs[:, -1] = rng.uniform(-1, 1, steps)  # a negative channel, like the priorities
        targets = rng.integers(0, 2, (steps, bits)).astype(np.float32)
        mask = np.zeros(steps, np.float32)
        mask[steps // 2:] = 1
        arrays |= {f"{name}/inputs": inputs, f"{name}/targets": targets, f"{name}/mask": mask,
                   f"{name}/outputs": rng.uniform(0, 1, (steps, bits)).astype(np.float32),
                   f"{name}/size": np.array(size)}
        if model_type in ("ntm", "dnc"):
            locations = 8
            weights = rng.dirichlet(np.ones(locations) * 0.3, (steps, 1)).astype(np.float32)
            arrays[f"{name}/trace/read_weights"] = weights
            arrays[f"{name}/trace/write_weights"] = np.roll(weights, 1, axis=-1)
        if model_type == "dnc":
            arrays[f"{name}/trace/usage"] = np.cumsum(rng.uniform(0, 0.1, (steps, 8)), axis=0).clip(0, 1)
            arrays[f"{name}/trace/allocation_gate"] = rng.uniform(0, 1, (steps, 1)).astype(np.float32)
            arrays[f"{name}/trace/write_gate"] = rng.uniform(0, 1, (steps, 1)).astype(np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _task(task: dict):
    """The registry's task with the fixture's sizes (for its rules, its 2x size and the facts suite.json records)."""
    one_part = len(task["size_parts"]) == 1
    sizes = {"train_sizes": task["train_sizes"][task["size_parts"][0]] if one_part else task["train_sizes"],
             "test_sizes": [s[0] for s in task["test_sizes"]] if one_part else task["test_sizes"]}
    if task["type"] == "ngrams":
        return build_task("ngrams", **sizes)
    return build_task(task["type"], bits=task["bits"], **sizes)


def make_suite(out_dir: Path) -> Path:
    """Write a finished suite by hand, run folders and all, then build its CSVs with the harness's own `collect`."""
    rng = np.random.default_rng(7)
    run_ids = []
    eval_steps = np.arange(0, STEPS + 1, EVAL_EVERY)
    provenance = {"git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": False, "python": "3.11.7",
                  "torch": "2.13.0+cpu", "numpy": np.__version__, "pandas": pd.__version__,
                  "device_name": "cpu (x86_64, 2 cores)", "command": "test", "hostname": "test"}
    for task_label, task in TASKS.items():
        for model, model_type in MODELS.items():
            for i, seed in enumerate(SEEDS):
                run_id = f"{len(run_ids):04d}{task_label[:3]}{seed}"
                run_ids.append(run_id)
                folder = out_dir / "runs" / run_id
                spec = {"suite": "fixture", "task": task_label, "task_type": task["type"], "model": model,
                        "model_type": model_type, "seed": seed, "run_id": run_id, "provenance": provenance,
                        "train": {"steps": STEPS, "batch_size": BATCH}}
                atomic_write_json(folder / "spec.json", spec)
                if (task_label, model, seed) == FAILED:
                    atomic_write_json(folder / "result.json", {"status": "failed", "error": FAILURE_MESSAGE})
                    continue
                converge = None if _task(task).convergence is None else CONVERGE[(task_label, model)][i]
                diverged = (task_label, model, seed) == DIVERGED
                steps = eval_steps[eval_steps <= 150] if diverged else eval_steps
                wrong = _error_curve(steps.astype(float), converge, rng)
                if task["type"] == "priority_sort":
                    wrong = 40 * np.exp(-steps / 300) + 10 + 3 * i + {"lstm": 20, "dnc": 5}.get(model, 0)
                optimum = np.full(len(steps), 12.0)
                loss = wrong * 2 + (optimum if task["type"] == "ngrams" else 0)
                if task["type"] == "ngrams":
                    loss = optimum + np.where(wrong < 0.1, 0.5, 1.0 + wrong)
                curve = pd.DataFrame({"step": steps, "sequences_seen": steps * BATCH, "loss_bits_per_seq": loss,
                                      "wrong_bits_per_seq": wrong, "seq_accuracy": np.clip(1 - wrong / 4, 0, 1),
                                      "wall_s": steps * 0.01})
                if task["type"] == "ngrams":
                    curve["optimal_loss_bits_per_seq"] = optimum
                atomic_write_csv(folder / "curve.csv", curve)
                gen_rows = []
                if not diverged:
                    for size in task["test_sizes"]:
                        scale = size[0] / task["test_sizes"][0][0]
                        row = {"size": ",".join(f"{p}={v}" for p, v in zip(task["size_parts"], size)),
                               **{f"size_{p}": v for p, v in zip(task["size_parts"], size)},
                               "loss_bits_per_seq": 2 * scale + i, "wrong_bits_per_seq": max(0.0, scale - 1) * 3 + i,
                               "seq_accuracy": 0.5}
                        if (task_label, model) == ("copy", "ntm"):  # generalises to 2x in seeds 1-3, not seed 4
                            row["wrong_bits_per_seq"] = 0.5 * i if scale <= 2 else 5.0 - i
                        if task["type"] == "ngrams":
                            row["optimal_loss_bits_per_seq"] = 24.0
                            row["loss_bits_per_seq"] = 25.0 + i
                        gen_rows.append(row)
                    atomic_write_bytes(folder / "samples.npz", _samples(task, model_type, rng))
                atomic_write_csv(folder / "generalization.csv", pd.DataFrame(gen_rows))
                converged = converge is not None and not diverged
                errors = {tuple(r[f"size_{p}"] for p in task["size_parts"]): r["wrong_bits_per_seq"] for r in gen_rows}
                solved = _task(task).solved_extent(errors) if errors else {}
                result = {"status": "diverged" if diverged else "done", "converged": converged,
                          "converge_step": converge if converged else None,
                          "converge_sequences": converge * BATCH if converged else None,
                          "final_loss_bits_per_seq": float(loss[-1]), "final_wrong_bits_per_seq": float(wrong[-1]),
                          "nonfinite_steps": 100 if diverged else 0, "params": {"lstm": 1572, "dnc": 2900}.get(
                              model, 2445), "steps": int(steps[-1]), "device": "cpu (x86_64, 2 cores)",
                          "wall_s": 3.5 + i, "seq_per_s": {"lstm": 140.0, "dnc": 30.0}.get(model, 45.0),
                          **solved}
                atomic_write_json(folder / "result.json", result)
    resolved = {"name": "fixture", "description": "A hand-written suite for the report tests.", "seeds": len(SEEDS),
                "train": {"steps": STEPS, "batch_size": BATCH, "eval_every": EVAL_EVERY},
                "tasks": {label: {"task": t["type"]} for label, t in TASKS.items()},
                "models": {label: {"model": m} for label, m in MODELS.items()}}
    facts = {label: {"type": t["type"], **_task(t).facts()} for label, t in TASKS.items()}  # as the runner writes
    atomic_write_json(out_dir / "suite.json", {"name": "fixture", "description": resolved["description"],
                                               "path": "suites/fixture.yaml", "resolved": resolved,
                                               "run_ids": run_ids, "seeds": SEEDS, "steps": STEPS,
                                               "batch_size": BATCH, "tasks": facts})
    collect(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out_dir = make_suite(tmp_path_factory.mktemp("fixture_suite"))
    stale = out_dir / "figures" / "curves_a_task_that_is_gone.png"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"old")
    return write_report(out_dir)


class _Rows(HTMLParser):
    """The summary rows (task, model) -> their text, and every <img src>."""

    def __init__(self):
        super().__init__()
        self.rows: dict[tuple[str, str], str] = {}
        self.images: list[str] = []
        self._row: tuple[str, str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-task" in attrs:
            self._row = (attrs["data-task"], attrs["data-model"])
            self.rows[self._row] = ""
        if tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row is not None:
            self.rows[self._row] += " " + data.strip()


def _parse(path: Path) -> _Rows:
    parser = _Rows()
    parser.feed(path.read_text())
    return parser


def test_writes_the_page_and_every_figure(report):
    out_dir = report.parent
    figures = sorted(p.name for p in (out_dir / "figures").glob("*.png"))
    expected = ({"convergence.png", "scorecard.png"} | {f"{kind}_{task}.png" for task in TASKS
                                       for kind in ("curves", "generalization", "samples", "memory")}
                | {f"km_{task}.png" for task in TASKS if task != "priority_sort"})  # the one task without threshold
    assert set(figures) == expected  # the stale PNG of an earlier render is gone
    page = report.read_text()
    images = _parse(report).images
    assert len(images) == len(expected)
    for name in figures:  # each figure is embedded, byte for byte, and linked as a file
        encoded = base64.b64encode((out_dir / "figures" / name).read_bytes()).decode()
        assert f"data:image/png;base64,{encoded}" in images
        assert f'href="figures/{name}"' in page


def test_a_row_per_task_and_model(report):
    rows = _parse(report).rows
    assert set(rows) == {(task, model) for task in TASKS for model in MODELS}


def test_the_page_is_self_contained(report):
    page = report.read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "@font-face" not in page
    assert all(src.startswith("data:image/png;base64,") for src in _parse(report).images)
    for name in ("runs.csv", "curves.csv", "generalization.csv"):
        assert f'href="{name}"' in page


def test_header_facts(report):
    page = report.read_text()
    assert "Suite <code>fixture</code>" in page and "A hand-written suite for the report tests." in page
    assert "0123456789ab" in page and "cpu (x86_64, 2 cores)" in page and "torch 2.13.0+cpu" in page
    assert f"{len(TASKS) * len(MODELS) * len(SEEDS)}" in page


def test_diverged_failed_and_never_converged_are_plain(report):
    rows = _parse(report).rows
    copy_lstm = rows[("copy", "lstm")]
    assert "0/4" in copy_lstm and "> 400" in copy_lstm and "> 3,200" in copy_lstm  # never half converged
    copy_dnc = rows[("copy", "dnc")]
    assert "1 diverged" in copy_dnc and "3/4" in copy_dnc  # seed 2 diverged; the others converged
    assert "1 failed" in rows[("repeat_copy", "ntm")]
    page = report.read_text()
    assert FAILURE_MESSAGE in page


def test_medians_cis_and_highlights(report):
    rows = _parse(report).rows
    ntm_copy = rows[("copy", "ntm")]
    assert "4/4" in ntm_copy and re.search(r"\b150\b", ntm_copy)          # median steps
    assert "1,200" in ntm_copy                                            # median sequences = 150 x 8
    assert "n = 4: no interval" in ntm_copy                               # too few seeds for the KM interval
    assert "[0.398, 1]" in ntm_copy                                       # Clopper–Pearson of 4/4
    page = report.read_text()
    assert 'class="best"' in page


def test_a_task_without_threshold_says_so(report):
    rows = _parse(report).rows
    for model in MODELS:
        text = rows[("priority_sort", model)]
        assert "no threshold" in text and "> " not in text and "0/4" not in text


def test_pairwise_comparison(report):
    page = report.read_text()
    assert "Mann–Whitney" in page and "log-rank" in page and "ratio of KM medians A&nbsp;/&nbsp;B" in page
    # on Copy the plain NTM's KM median is 150 steps and the long-labelled one's 50 (its KM curve reaches one half
    # at 50: seeds at 50, 50, 100, 100): a ratio of 3, the latter faster
    section = page[page.index('id="pairwise"'):page.index('id="curves"')]
    rows = [[re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", section, re.S)]
    cells = next(r for r in rows if r and r[0] == ["ntm"] and r[1] == [LONG_MODEL])  # the first: Copy
    assert cells[2][0] == "3"
    assert cells[3] == [LONG_MODEL]  # the lower median
    # log-rank, paired by seed (seeds 1-4 of both): 2^4 = 16 relabellings; in every pair the long-labelled NTM
    # converged first, the most extreme split, so p is the smallest this design can give: 2/16
    assert cells[4] == ["0.125", "exact,", "16;", "min", "p", "0.125"]
    assert "n = 4: no interval" in " ".join(cells[6])  # the hazard ratio needs 10 seeds a model
    never = next(r for r in rows if r and r[0] == ["lstm"] and r[1] == ["ntm"])  # Copy: the LSTM never converges
    assert never[2] == ["n/a"] and never[3] == ["ntm"]  # no ratio, but the NTM's KM median is the lower one
    holm = [float(r[5][0]) for r in rows if len(r) > 5 and r[5] != ["n/a"]][:6]  # Copy's six pairs, Holm-adjusted
    raw = [float(r[4][0]) for r in rows if len(r) > 5 and r[4] != ["n/a"]][:6]
    assert all(h >= p for h, p in zip(holm, raw)) and max(holm) <= 1


def test_the_kaplan_meier_panel_is_drawn(report, monkeypatch):
    """One step curve per model in its palette colour, rising from 0 at each converged seed; the censored seeds
    ticked where they stopped (Copy's diverged DNC seed at step 150, the LSTM's at the budget)."""
    from bench.report import figures
    from bench.report.data import load_suite_data

    page = report.read_text()
    assert 'id="km"' in page and "Fraction of seeds converged on copy (Kaplan–Meier, 1 − S)." in page
    drawn = []
    monkeypatch.setattr(figures.FigureSink, "save", lambda self, fig, name: drawn.append((fig.axes[0], name)) or {})
    data = load_suite_data(report.parent)
    figures.figure_km(data, data.tasks["copy"], figures.FigureSink(report.parent))
    assert figures.figure_km(data, data.tasks["priority_sort"], None) is None  # no threshold, no panel
    (ax, name), = drawn
    assert name == "km_copy"
    lines = ax.get_lines()
    steps = {line.get_color(): line for line in lines if line.get_linestyle() == "-"}
    assert set(steps) == {data.palette[m] for m in MODELS}
    ntm = steps[data.palette["ntm"]]
    assert ntm.get_ydata()[:4] == pytest.approx([0, 0.25, 0.75, 1.0])  # seeds at 100, 150, 150, 200 steps
    ticks = {line.get_color(): list(line.get_xdata()) for line in lines if line.get_marker() == "|"}
    assert ticks[data.palette["dnc"]] == [150 * BATCH]      # the diverged seed, censored at its divergence
    assert ticks[data.palette["lstm"]] == [STEPS * BATCH] * 4


def test_no_header_claims_95_percent_without_its_method(report):
    """Every header or second line that says 95 % names a method whose nominal level is 95 %; nothing is a
    bootstrap; the interval of a KM median appears only from MIN_SEEDS_FOR_INTERVAL seeds."""
    page = report.read_text()
    headers = [re.sub(r"<[^>]+>", " ", h).replace("&nbsp;", " ") for h in re.findall(r"<th[^>]*>(.*?)</th>", page)]
    claims = [h for h in headers if "95" in h]
    assert claims  # the summary and pairwise tables carry intervals
    methods = ("Clopper–Pearson", "log(−log) band", "Wald CI")
    assert all(any(m in h for m in methods) for h in claims), claims
    assert "bootstrap" not in page.replace("No interval here is a bootstrap", "").lower()
    assert "95% CI" not in page and "[95 % CI]" not in page


def test_long_model_labels_wrap():
    lines = wrap_label(LONG_MODEL).split("\n")
    assert len(lines) > 1 and all(len(line) <= 14 for line in lines)
    assert "".join(lines) == LONG_MODEL
    assert wrap_label("lstm") == "lstm"


def test_renders_from_a_real_smoke_run(tmp_path, capsys):
    """A tiny real run through the CLI: the report reads what training actually writes (curves, samples, traces)."""
    code = cli_main(["run", "--suite", "smoke", "--out", str(tmp_path), "--no-report", "--no-estimate",
                     "--set", "seeds=1",
                     "--set", "train.steps=2", "--set", "train.eval_every=1", "--set", "train.eval_sequences=2",
                     "--set", "train.generalization_sequences=2", "--set", "train.batch_size=2",
                     "--set", "tasks={copy: {bits: 2, train_sizes: [1, 2], test_sizes: [2, 3]}}",
                     "--set", "models={lstm: {layers: 1, units: 4}, "
                              "ntm: {controller_units: 4, memory_locations: 4, memory_width: 3}, "
                              "dnc: {controller_units: 4, memory_locations: 4, memory_width: 3}}"])
    assert code == 0
    assert cli_main(["report", "--suite", "smoke", "--out", str(tmp_path)]) == 0
    path = tmp_path / "index.html"
    assert str(path) in capsys.readouterr().out
    rows = _parse(path).rows
    assert set(rows) == {("copy", m) for m in ("lstm", "ntm", "dnc")}
    figures = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert {"curves_copy.png", "generalization_copy.png", "samples_copy.png", "memory_copy.png"} <= figures
    if "convergence.png" not in figures:  # two steps: no seed converges, and the page says so instead of a blank plot
        assert "No seed converged" in path.read_text()


def test_a_task_note_reaches_the_report_and_summary_md(tmp_path):
    """A suite's `tasks.LABEL.note` is recorded in suite.json and shown with that task's results (HTML, escaped, and
    summary.md), without changing its protocol or run ids."""
    note = "Trains for 2 steps: <b>a look</b>, not a result; see docs/RESULTS.md"
    base = ["run", "--suite", "smoke", "--no-estimate", "--set", "seeds=1", "--set", "train.steps=2",
            "--set", "train.eval_every=1", "--set", "train.eval_sequences=2",
            "--set", "train.generalization_sequences=2", "--set", "train.batch_size=2",
            "--set", "models={lstm: {layers: 1, units: 4}}"]
    copy = "copy: {bits: 2, train_sizes: [1, 2], test_sizes: [2, 3]"
    assert cli_main([*base, "--out", str(tmp_path / "a"), "--set", f"tasks={{{copy}, note: '{note}'}}}}"]) == 0
    assert cli_main([*base, "--out", str(tmp_path / "b"), "--no-report", "--set", f"tasks={{{copy}}}}}"]) == 0
    facts = {name: json.loads((tmp_path / name / "suite.json").read_text())["tasks"]["copy"] for name in "ab"}
    assert facts["a"]["note"] == note and "note" not in facts["b"]
    assert facts["a"]["protocol"] == facts["b"]["protocol"]
    assert json.loads((tmp_path / "a" / "suite.json").read_text())["run_ids"] == \
        json.loads((tmp_path / "b" / "suite.json").read_text())["run_ids"]
    page = (tmp_path / "a" / "index.html").read_text()
    assert "Trains for 2 steps: &lt;b&gt;a look&lt;/b&gt;, not a result" in page
    assert "Trains for 2 steps: &lt;b&gt;a look&lt;/b&gt;, not a result" in (tmp_path / "a" / "summary.md").read_text()


@pytest.mark.parametrize("value", ["two\nlines", 3, "x" * 601])
def test_a_bad_task_note_is_refused_in_one_line(tmp_path, value):
    from bench.config import ConfigError, read_suite

    with pytest.raises(ConfigError, match=r"tasks\.copy\.note: must be one line of text"):
        read_suite({"name": "n", "tasks": {"copy": {"note": value}}, "models": {"lstm": {}}})


# ---- a real browser ---------------------------------------------------------------------------------------------

BROWSER_HINT = "install Debian's chromium (apt-get install chromium) and `pip install playwright`"


def _browser_or_skip() -> str:
    """The Chromium executable; a missing Chromium or Playwright skips the test, or fails it under CI."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright.sync_api  # noqa: F401
        has_playwright = True
    except ImportError:
        has_playwright = False
    if chromium is None or not has_playwright:
        missing = " and ".join(n for n, ok in (("chromium", chromium), ("playwright", has_playwright)) if not ok)
        if os.environ.get("CI"):
            pytest.fail(f"the browser test needs {missing} in CI: {BROWSER_HINT}")
        pytest.skip(BROWSER_HINT)
    return chromium


@pytest.mark.browser
def test_report_in_a_real_browser(report):
    chromium = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    url = report.resolve().as_uri()
    requests, console_errors, page_errors = [], [], []
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
            timeout=120_000)  # a loaded 2-core machine can take longer than the 30 s default to start Chromium
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: console_errors.append(message.text)
                    if message.type == "error" else None)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(url, wait_until="load", timeout=120_000)
            images = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => ({complete: i.complete, width: i.naturalWidth, alt: i.alt}))")
            page.screenshot(path=str(artifacts / "report.png"), full_page=True)
            overflow = page.evaluate("document.documentElement.scrollWidth")
        finally:
            browser.close()
    assert images and all(i["complete"] and i["width"] > 0 for i in images), images
    assert not console_errors and not page_errors, console_errors + page_errors
    network = [u for u in requests if u != url and not u.startswith("data:")]
    assert not network, network
    assert overflow <= 1200, f"the page is wider than a laptop screen: {overflow}px"


# ---- exported summaries -----------------------------------------------------------------------------------------

class _SummaryCells(HTMLParser):
    """Each summary row (task, model) -> its cells, each as [main text, badge texts..., second-line texts...]."""

    def __init__(self):
        super().__init__()
        self.rows: dict[tuple[str, str], list[dict[str, list[str]]]] = {}
        self._row = None
        self._cell = None
        self._span: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-task" in attrs:
            self._row = self.rows.setdefault((attrs["data-task"], attrs["data-model"]), [])
        elif tag == "td" and self._row is not None:
            self._cell = {"main": [], "badge": [], "sub": []}
            self._row.append(self._cell)
        elif tag == "span" and self._cell is not None:
            classes = (attrs.get("class") or "").split()
            self._span = "badge" if "badge" in classes else "sub" if "sub" in classes else None

    def handle_endtag(self, tag):
        if tag == "span":
            self._span = None
        elif tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None and data.strip():
            self._cell[self._span or "main"].append(data.strip())


def rendered_markdown(text: str) -> str:
    """What Markdown shows for inline text that `bench.text.markdown_text` escaped: each backslash escape as its
    character, each entity as its character."""
    return html_unescape(re.sub(r"\\(.)", r"\1", text))


def test_summary_exports_match_the_html(report):
    from bench.report.data import fmt
    from bench.report.tables import SUMMARY_COLUMNS

    out_dir = report.parent
    parser = _SummaryCells()
    parser.feed(report.read_text())
    html = {key: {k: " ".join(v) for k, v in cells[i].items()} for key, cells in parser.rows.items()
            for i in [0]} and {key: [{k: " ".join(v) for k, v in c.items()} for c in cells]
                               for key, cells in parser.rows.items()}
    csv = pd.read_csv(out_dir / "summary.csv")
    assert len(csv) == len(html) == len(TASKS) * len(MODELS)
    keys = [column.key for column in SUMMARY_COLUMNS]
    for _, row in csv.iterrows():
        cells = dict(zip(keys, html[(row["task"], row["model"])]))
        assert cells["model"]["main"] == row["model"]
        assert row["seeds"] == len(SEEDS)
        if row["task"] != "priority_sort":   # the one task without a threshold
            assert cells["converged"]["main"] == f"{int(row['converged'])}/{int(row['converged_n'])}"
            assert cells["converged"]["sub"] == f"[{fmt(row['converged_ci_low'])}, {fmt(row['converged_ci_high'])}]"
        median = cells["median_steps"]["main"]
        if median.startswith("> "):
            assert median == f"> {fmt(row['median_steps_exceeds'])}" and pd.isna(row["median_steps"])
            assert cells["median_sequences"]["main"] == f"> {fmt(row['median_sequences_exceeds'])}"
        elif median not in ("no threshold", "—"):
            assert median == fmt(row["median_steps"])
            assert fmt(row["median_sequences"]) == cells["median_sequences"]["main"]
            assert cells["median_steps"]["sub"] == f"n = {int(row['converged_n'])}: no interval"  # 4 seeds
            assert pd.isna(row["median_steps_ci_low"])
        assert cells["final_error"]["main"] == fmt(row["final_error"])
        size = cells["generalization"]["main"].split(": ")[0]
        assert cells["generalization"]["main"] == f"{size}: {fmt(row['generalization_' + size])}"
        assert fmt(row["generalization"]) == fmt(row["generalization_" + size])
        if pd.notna(row["solved_2x"]):
            assert cells["solved_2x"]["main"] == f"{int(row['solved_2x'])}/{int(row['solved_2x_n'])}"
            assert cells["solved_2x"]["sub"] == (f"at {row['solved_2x_size']} "
                                                 f"[{fmt(row['solved_2x_ci_low'])}, {fmt(row['solved_2x_ci_high'])}]")
        if pd.notna(row["solved_up_to"]):
            assert cells["solved_up_to"]["main"] == row["solved_up_to"]
        assert cells["params"]["main"] == fmt(row["params"])
        assert cells["seq_per_s"]["main"] == fmt(row["seq_per_s"])
    # the NTM on Copy solves 2x the training length (L=8) in seeds 1-3 of 4; the rest of the fixture never does
    ntm = csv[(csv["task"] == "copy") & (csv["model"] == "ntm")].iloc[0]
    assert ntm["solved_2x"] == 3 and ntm["solved_2x_size"] == "L=8"
    assert ntm["solved_up_to"] == "L=8 · L=8 · L=8 · none"  # 1.0 wrong bits is solved (at most 1), 1.5 is not
    assert csv.loc[(csv["task"] == "copy") & (csv["model"] == "lstm"), "solved_2x"].iloc[0] == 0

    # summary.md: one GitHub table per task whose cells read as the HTML's (main text and badges first), once
    # rendered (every text in it is escaped: `ntm\_constant` renders as ntm_constant)
    markdown = (out_dir / "summary.md").read_text()
    sections = {rendered_markdown(part.split("\n", 1)[0]): part for part in markdown.split("\n## ")[1:]}
    assert set(sections) == set(TASKS)
    body = [(task, line) for task, part in sections.items() for line in part.splitlines()
            if line.startswith("| ") and not line.startswith("| model")]
    assert len(body) == len(html)
    for task, line in body:
        cells = [rendered_markdown(c.strip()) for c in line.strip("| ").split(" | ")]
        expected = html[(task, cells[0])]
        for text, cell in zip(cells, expected):
            head = cell["main"] + "".join(f" [{b}]" for b in cell["badge"].split("  ") if b) if cell["badge"] \
                else cell["main"]
            assert text.startswith(head), (text, head)


def test_generalisation_panel_draws_every_seed(report, monkeypatch):
    """The line plot has a thin line per seed besides each model's median, and the dashed solved level."""
    from bench.report import figures as report_module
    from bench.report.data import load_suite_data

    figures = {}
    monkeypatch.setattr(report_module.FigureSink, "save", lambda self, fig, name: figures.setdefault(name, fig))
    data = load_suite_data(report.parent)
    report_module.figure_generalization(data, data.tasks["copy"], report_module.FigureSink(report.parent))
    ax = figures["generalization_copy"].axes[0]
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert len(solid) == len(MODELS) * (1 + len(SEEDS)) - 1  # the diverged DNC seed has no generalisation rows
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [tuple(line.get_ydata()) for line in dashed] == [(1.0, 1.0)]


# ---- task facts: the current form and the forms earlier versions wrote ------------------------------------------

def _old_facts(fact: dict, with_numbers: bool) -> dict:
    """`fact` (the current form) as an earlier suite.json gave it: the rules as words, and, from a later version
    on (`with_numbers`), the threshold and the solved level as numbers."""
    from tasks.base import Rule

    rule = None if fact["convergence"] is None else Rule.from_json(fact["convergence"])
    old = {"type": fact["type"], "size_parts": fact["size_parts"], "train_sizes": fact["train_sizes"],
           "test_sizes": fact["test_sizes"], "convergence_rule": None if rule is None else rule.text()}
    if with_numbers:
        solved = None if fact["solved"] is None else Rule.from_json(fact["solved"])
        old |= {"convergence_threshold": None if rule is None else rule.threshold,
                "solved_at_most": None if solved is None else solved.threshold,
                "solved_rule": None if solved is None else solved.text(), "test_size_2x": fact["test_size_2x"]}
    return old


def _summary_csv(out_dir: Path) -> pd.DataFrame:
    """summary.csv's frame, without drawing a figure."""
    from bench.report.data import load_suite_data
    from bench.report.tables import summary_frame, summary_table

    data = load_suite_data(out_dir)
    return summary_frame([{"task": task, "summary": summary_table(data, task)} for task in data.tasks.values()])


def test_old_task_facts_read_as_the_new(report, tmp_path):
    """A suite.json written before the rules were data gives the same tasks and the same summary."""
    from bench.report.data import load_suite_data
    from bench.results import read_json

    new = load_suite_data(report.parent)
    old_dir = tmp_path / "old"
    shutil.copytree(report.parent, old_dir, ignore=shutil.ignore_patterns("figures", "*.html", "summary.*"))
    manifest = read_json(old_dir / "suite.json")
    manifest["tasks"] = {label: _old_facts(fact, True) for label, fact in manifest["tasks"].items()}
    atomic_write_json(old_dir / "suite.json", manifest)
    old = load_suite_data(old_dir)
    for label, task in new.tasks.items():
        was = old.tasks[label]
        assert (was.error, was.convergence, was.solved, was.test_size_2x) == \
            (task.error, task.convergence, task.solved, task.test_size_2x)
        assert (was.has_threshold, was.rule, was.threshold(), was.metric_label) == \
            (task.has_threshold, task.rule, task.threshold(), task.metric_label)
    assert new.tasks["ngrams"].error.reference == "optimal_loss_bits_per_seq"   # the gap, from facts alone
    assert new.tasks["ngrams"].threshold() == 1.0 and new.tasks["copy"].threshold() == 0.1
    pd.testing.assert_frame_equal(_summary_csv(old_dir), _summary_csv(report.parent))

    # older still: words only (no threshold, no solved level), then no task facts at all
    manifest["tasks"] = {label: _old_facts(fact, False)
                         for label, fact in read_json(report.parent / "suite.json")["tasks"].items()}
    atomic_write_json(old_dir / "suite.json", manifest)
    words_only = load_suite_data(old_dir).tasks
    for label, task in new.tasks.items():
        assert words_only[label].threshold() == task.threshold()  # read from the words
        assert words_only[label].solved is None
    del manifest["tasks"]
    atomic_write_json(old_dir / "suite.json", manifest)
    bare = load_suite_data(old_dir).tasks
    assert bare["ngrams"].error == new.tasks["ngrams"].error
    assert bare["repeat_copy"].size_parts == ["L", "n"]
    assert bare["copy"].has_threshold and bare["copy"].rule == "(rule not recorded)" and bare["copy"].threshold() \
        is None


def test_legacy_facts_map_to_rules():
    from bench.report.data import task_info
    from bench.report.data import task_info as legacy_task_info  # facts without "convergence" are an old form
    from tasks.base import WRONG_BITS, Rule
    from tasks.ngrams import GAP_TO_OPTIMUM

    ngrams = legacy_task_info("n", {"type": "ngrams", "convergence_rule": "loss within 2 bits/seq of the Bayes "
                                                                          "optimum"}, has_optimum=False)
    assert ngrams.error == GAP_TO_OPTIMUM
    assert ngrams.convergence == Rule("loss_bits_per_seq", 2.0, "<", "optimal_loss_bits_per_seq")
    assert ngrams.threshold() == 2.0 and ngrams.solved is None
    copy = legacy_task_info("c", {"type": "copy", "convergence_rule": "wrong bits/seq < 0.1",
                                  "convergence_threshold": 0.3, "solved_at_most": 2.0}, has_optimum=False)
    assert copy.error == WRONG_BITS and copy.threshold() == 0.3  # the number wins over the words
    assert copy.solved == Rule("wrong_bits_per_seq", 2.0, "<=")
    assert copy.rule == "wrong bits/seq < 0.1"                   # shown as recorded
    sort = legacy_task_info("p", {"type": "priority_sort", "convergence_rule": None}, has_optimum=False)
    assert not sort.has_threshold and sort.rule is None and sort.threshold() is None
    plugin = legacy_task_info("x", {"type": "a_plugin_task", "convergence_rule": "within 0.5 bits"}, has_optimum=True)
    assert plugin.error == GAP_TO_OPTIMUM and plugin.threshold() == 0.5  # curves with an optimum: the gap
    current = task_info("c", {"type": "copy", **build_task("copy", converge_below=None).facts()})
    assert not current.has_threshold and current.solved == Rule("wrong_bits_per_seq", 1.0, "<=")


# ---- best values, shaded by each column's direction -------------------------------------------------------------

def test_best_value_is_shaded_by_direction():
    from bench.report.data import fmt
    from bench.report.tables import Cell, Column, table

    def number(value, source):
        return Cell(fmt(value), sort=value)

    columns = [Column("name", "{what}", get=lambda s: s[0], show=lambda v, s: Cell(v)),
               Column("low", "low", get=lambda s: s[1], show=number, better="lower"),
               Column("high", "high", get=lambda s: s[1], show=number, better="higher"),
               Column("plain", "plain", get=lambda s: s[1], show=number)]

    def shaded(sources):
        t = table(columns, [(s[0], s) for s in sources], what="model")
        assert t["headers"][0]["text"] == "model"
        return {c.key: [row["key"] for row in t["rows"] if "best" in row["by_key"][c.key].cls] for c in columns}

    # 1.0004 reads as 1 at three significant digits, so it ties with 1.0; a missing value is never best
    assert shaded([("a", 1.0), ("b", 2.0), ("c", 1.0004), ("d", None)]) == \
        {"name": [], "low": ["a", "c"], "high": ["b"], "plain": []}
    assert shaded([("a", 1.0), ("b", 1.0)]) == {"name": [], "low": [], "high": [], "plain": []}  # all the same
    assert shaded([("a", 1.0)]) == {"name": [], "low": [], "high": [], "plain": []}              # one model


def test_summary_columns_shade_by_their_direction(report):
    from bench.report.data import load_suite_data
    from bench.report.tables import SUMMARY_COLUMNS, summary_table

    assert {c.key: c.better for c in SUMMARY_COLUMNS if c.better} == {
        "converged": "higher", "median_steps": "lower", "median_sequences": "lower", "final_error": "lower",
        "generalization": "lower", "solved_2x": "higher", "seq_per_s": "higher"}
    data = load_suite_data(report.parent)
    rows = summary_table(data, data.tasks["copy"])["rows"]

    def best(key):
        return sorted(row["key"] for row in rows if "best" in row["by_key"][key].cls)

    assert best("seq_per_s") == ["lstm"]                  # the highest throughput
    assert best("median_steps") == [LONG_MODEL]           # the fewest steps (50 against 150 and more)
    assert best("converged") == sorted(["ntm", LONG_MODEL])   # 4/4 each
    assert best("params") == []                           # not a scored column


def test_model_colours_are_distinct():
    """Every model gets its own colour; the first four are far apart (no two shades of orange side by side)."""
    import seaborn as sns
    from matplotlib.colors import to_hex, to_rgb

    from bench.report.data import COLORBLIND, model_palette

    assert list(COLORBLIND) == [to_hex(c) for c in sns.color_palette("colorblind", 10)]  # seaborn's, kept as hex
    for count in (1, 4, 10, 11):
        palette = model_palette([f"m{i}" for i in range(count)])
        assert len(set(palette.values())) == count
    first = [to_rgb(c) for c in model_palette(["a", "b", "c", "d"]).values()]
    closest = min(sum((x - y) ** 2 for x, y in zip(first[i], first[j])) ** 0.5
                  for i in range(4) for j in range(i + 1, 4))
    assert closest > 0.25  # orange and vermillion, which stood side by side before, are 0.20 apart
