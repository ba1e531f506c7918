"""Reference bundles: export, reuse of finished runs, the reference overlay, compare, and the shipped bundles."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench import bundles
from bench.api import load
from bench.cli import main
from bench.errors import ConfigError
from bench.report.combine import parse_seeds
from bench.report.page import write_comparison, write_report
from bench.runner import task_facts

SUITE = ["--set", "tasks={copy: {bits: 3, train_sizes: [1, 3], test_sizes: [3, 6]}}",
         "--set", "train.steps=30", "--set", "train.eval_every=10", "--set", "train.checkpoint_every=10"]
TWO_MODELS = ["--set", "models={lstm: {layers: 1, units: 16}, ntm: {controller_units: 16, memory_locations: 8, "
                       "memory_width: 5}}"]
IGNORED = ("wall_s", "seq_per_s", "source")  # timing, and where a row came from


def run(out, *extra, seeds="[1, 2]", report=False):
    args = ["run", "--suite", "smoke", "--out", str(out), *SUITE, "--set", f"seeds={seeds}", *extra]
    assert main(args + ([] if report else ["--no-report"])) == 0


def frames(out):
    return {name: pd.read_csv(out / f"{name}.csv") for name in ("runs", "curves", "generalization")}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The whole two-model suite, trained without a stop."""
    out = tmp_path_factory.mktemp("full")
    run(out, *TWO_MODELS)
    return out


@pytest.fixture(scope="module")
def half_bundle(tmp_path_factory):
    """Half of the suite (seed 1 only), exported."""
    root = tmp_path_factory.mktemp("half")
    run(root / "out", *TWO_MODELS, seeds="[1]")
    assert main(["export", str(root / "out"), "--to", str(root / "bundle")]) == 0
    return root / "bundle"


def test_export_writes_a_small_self_describing_bundle(full, tmp_path, capsys):
    assert main(["export", str(full), "--to", str(tmp_path / "b")]) == 0
    assert "4 of 4 runs" in capsys.readouterr().out
    bundle = tmp_path / "b"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format"] == bundles.FORMAT and manifest["runs"] == 4 and manifest["seeds"] == [1, 2]
    run_record = next(iter(manifest["by_run"].values()))
    for key in ("wall_s", "threads", "torch", "device", "cpu", "commit"):
        assert run_record[key] is not None, key
    assert run_record["cpu"]["model"] and manifest["cpus"]
    assert manifest["tasks"]["copy"]["fingerprint"]
    files = [p for p in bundle.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pt", ".npz")]  # no checkpoints, no samples
    assert sum(p.stat().st_size for p in files) < 200_000
    for name, frame in frames(full).items():
        pd.testing.assert_frame_equal(frame, frames(bundle)[name], obj=name)
    assert (bundle / "summary.csv").is_file()
    assert bundles.resolve(bundle) == bundle


def test_reuse_trains_only_the_rest_and_equals_one_uninterrupted_run(full, half_bundle, tmp_path):
    out = tmp_path / "rest"
    run(out, *TWO_MODELS, "--reuse", str(half_bundle))
    runs = pd.read_csv(out / "runs.csv")
    reused = runs[runs["seed"] == 1]
    assert set(reused["source"]) == {"reused from bundle"} and set(runs[runs["seed"] == 2]["source"]) == {"trained"}
    for run_id in reused["run_id"]:
        assert not (out / "runs" / run_id / "checkpoint.pt").exists()  # copied, not trained
    for run_id in runs[runs["seed"] == 2]["run_id"]:
        assert (out / "runs" / run_id / "checkpoint.pt").exists()
    for name, frame in frames(full).items():
        mine = frames(out)[name]
        pd.testing.assert_frame_equal(frame.drop(columns=[c for c in IGNORED if c in frame]),
                                      mine.drop(columns=[c for c in IGNORED if c in mine]), obj=name)


def test_reuse_refuses_a_bundle_of_another_test(half_bundle, tmp_path, capsys):
    bundle = tmp_path / "tampered"
    main(["export", str(half_bundle), "--to", str(bundle)])
    suite = json.loads((bundle / "suite.json").read_text())
    suite["tasks"]["copy"]["protocol"]["fingerprint"] = "0" * 64
    (bundle / "suite.json").write_text(json.dumps(suite))
    assert main(["run", "--suite", "smoke", "--out", str(tmp_path / "out"), *SUITE, "--set", "seeds=[1, 2]",
                 *TWO_MODELS, "--reuse", str(bundle), "--no-report"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --reuse ") and "task copy: the evaluation or generalisation sets differ" in error
    assert error.count("\n") == 1
    assert not list((tmp_path / "out" / "runs").glob("*/result.json"))  # nothing copied


def test_reference_overlay_shows_the_bundle_beside_one_new_model(full, tmp_path):
    bundle = tmp_path / "ref"
    main(["export", str(full), "--to", str(bundle)])
    out = tmp_path / "mine"
    run(out, "--set", "models={gru: {layers: 1, units: 8}}", "--reference", str(bundle), report=True)
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["model"]) == ["gru", "lstm", "ntm"]
    sources = dict(zip(summary["model"], summary["source"]))
    assert sources == {"gru": "this folder", "lstm": "reference: ref", "ntm": "reference: ref"}
    assert len(pd.read_csv(out / "runs.csv")) == 2  # only the new model trained
    page = (out / "index.html").read_text()
    assert "reference: ref" in page and "not trained here" in page
    # the reference is recorded: a later `report` shows it again
    write_report(out)
    assert sorted(pd.read_csv(out / "summary.csv")["model"]) == ["gru", "lstm", "ntm"]


def test_a_reference_with_a_model_label_of_the_suite_needs_a_prefix(full, tmp_path, capsys):
    with pytest.raises(AssertionError):
        run(tmp_path / "a", "--set", "models={lstm: {layers: 1, units: 8}}", "--reference", str(full))
    assert "model label(s) lstm are in this suite too" in capsys.readouterr().err
    out = tmp_path / "b"
    run(out, "--set", "models={lstm: {layers: 1, units: 8}}", "--reference", str(full), "--prefix", "ref-",
        report=True)
    assert sorted(pd.read_csv(out / "summary.csv")["model"]) == ["lstm", "ref-lstm", "ref-ntm"]


def test_a_reference_of_another_test_is_refused_before_training(full, tmp_path, capsys):
    with pytest.raises(AssertionError):
        run(tmp_path / "a", "--set", "tasks={copy: {bits: 4, train_sizes: [1, 3], test_sizes: [3, 6]}}",
            "--set", "models={gru: {layers: 1, units: 8}}", "--reference", str(full))
    assert "task copy: params differ" in capsys.readouterr().err
    assert not (tmp_path / "a" / "runs").exists()


def test_compare_renders_one_report_from_two_folders(full, half_bundle, tmp_path):
    with pytest.raises(ConfigError, match="--prefix"):
        write_comparison([(full, ""), (half_bundle, "")], tmp_path / "nope")
    out = tmp_path / "cmp"
    assert main(["compare", str(full), str(half_bundle), "--out", str(out), "--prefix", "all-",
                 "--prefix", "half-"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["model"]) == ["all-lstm", "all-ntm", "half-lstm", "half-ntm"]
    seeds = summary.set_index("model")["seeds"]
    assert seeds["all-lstm"] == 2 and seeds["half-lstm"] == 1
    assert len(pd.read_csv(out / "runs.csv")) == 6
    assert (out / "index.html").is_file()
    write_report(out)  # a comparison is redone from its recorded sources
    assert len(pd.read_csv(out / "summary.csv")) == 4


def test_compare_of_one_bundle_writes_its_own_report_elsewhere(half_bundle, tmp_path):
    """One source: the bundle's own report in another folder, with the bundle's numbers; the bundle is untouched."""
    before = {path.name: path.read_bytes() for path in half_bundle.iterdir() if path.is_file()}
    out = tmp_path / "view"
    assert main(["compare", str(half_bundle), "--out", str(out)]) == 0
    assert (out / "index.html").is_file()
    ours, theirs = pd.read_csv(out / "summary.csv"), pd.read_csv(half_bundle / "summary.csv")
    pd.testing.assert_frame_equal(ours.drop(columns="source"), theirs)
    name = json.loads((half_bundle / "manifest.json").read_text())["name"]
    assert json.loads((out / "suite.json").read_text())["name"] == name
    assert {path.name: path.read_bytes() for path in half_bundle.iterdir() if path.is_file()} == before


def test_compare_on_the_seeds_the_sources_share(full, half_bundle, tmp_path, capsys):
    """--seeds keeps only those seeds' runs from every source (here the full suite has seeds 1-2, the bundle seed 1),
    and a later `report` redoes the comparison on the same seeds."""
    out = tmp_path / "cmp"
    assert main(["compare", str(full), str(half_bundle), "--out", str(out), "--prefix", "all-",
                 "--prefix", "half-", "--seeds", "1"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and set(runs["seed"]) == {1}
    assert set(pd.read_csv(out / "curves.csv")["seed"]) == {1} == set(pd.read_csv(out / "generalization.csv")["seed"])
    assert set(pd.read_csv(out / "summary.csv")["seeds"]) == {1}
    manifest = json.loads((out / "suite.json").read_text())
    assert manifest["compare_seeds"] == [1] and manifest["seeds"] == [1] and len(manifest["run_ids"]) == 4
    write_report(out)
    assert set(pd.read_csv(out / "runs.csv")["seed"]) == {1}
    capsys.readouterr()
    assert main(["compare", str(full), str(half_bundle), "--out", str(tmp_path / "bad"), "--prefix", "a-",
                 "--prefix", "b-", "--seeds", "2-1"]) != 0
    error = capsys.readouterr().err
    assert "--seeds: '2-1' is not a seed list" in error and error.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_seed_lists_are_read_as_written():
    assert parse_seeds("101-105", "x") == (101, 102, 103, 104, 105)
    assert parse_seeds("1,3,10-12,3", "x") == (1, 3, 10, 11, 12)
    for bad in ("", "a", "5-3", "1-", "-3", "1-5000"):
        with pytest.raises(ConfigError, match=f"where: '{bad}' is not a seed list"):
            parse_seeds(bad, "where")


def test_compare_refuses_a_changed_evaluation_set_in_one_line(full, tmp_path):
    other = tmp_path / "other"
    run(other, *TWO_MODELS, "--set", "train.eval_sequences=12", seeds="[1]")
    with pytest.raises(ConfigError, match="task copy") as error:
        write_comparison([(full, "a-"), (other, "b-")], tmp_path / "cmp")
    assert "\n" not in str(error.value)


def test_shipped_bundles_are_listed_and_still_the_same_test(capsys):
    shipped = bundles.shipped()
    assert {"quick", "quick_heldout", "paper_copy_fresh"} <= {m["name"] for m in shipped}
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for manifest in shipped:
        assert manifest["name"] in listing
        bundle = bundles.SHIPPED / manifest["name"]
        suite_json = json.loads((bundle / "suite.json").read_text())
        current = task_facts(load(suite_json["resolved"]))
        for label, fact in suite_json["tasks"].items():
            assert fact["protocol"]["fingerprint"] == current[label]["protocol"]["fingerprint"], (
                f"shipped bundle {manifest['name']}: task {label} is no longer the test it was trained on; "
                "bump the task's version and re-export or retire the bundle")
        assert manifest["runs"] == len(pd.read_csv(bundle / "runs.csv"))


def test_runs_reused_from_another_cpu_model_are_marked_in_the_report(half_bundle, tmp_path):
    bundle = tmp_path / "other_cpu"
    main(["export", str(half_bundle), "--to", str(bundle)])
    for spec_path in (bundle / "runs").glob("*/spec.json"):
        spec = json.loads(spec_path.read_text())
        spec["provenance"]["cpu"] = {"model": "AMD EPYC 7B13", "isa": "avx2", "machine": "x86_64"}
        spec_path.write_text(json.dumps(spec))
    out = tmp_path / "out"
    run(out, *TWO_MODELS, "--reuse", str(bundle), report=True)
    page = (out / "index.html").read_text()
    assert "2 run(s) reused from other_cpu, trained on AMD EPYC 7B13 (avx2)" in page
    assert "not bit-identical" in page
