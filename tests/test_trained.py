"""A trained model is usable after its run: `bench.trained` loads it, scores it at any size on the suite's own
sequences, and draws its figures; `python -m bench evaluate RUN_FOLDER` does the same from the command line."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.trained import TrainedRun, TrainedRunError, evaluate_run, load_model, load_run, parse_sizes, render_figures

# a tiny suite: Copy with an LSTM (one-part sizes) and Repeat Copy with an NTM (two-part sizes, memory traces)
TINY = ["--set", "tasks={copy: {bits: 3, train_sizes: [1, 3], test_sizes: [3, 6]}, "
                 "repeat_copy: {bits: 3, train_sizes: {L: [1, 3], n: [1, 2]}, test_sizes: [[3, 2], [4, 4]]}}",
        "--set", "models={lstm: {layers: 1, units: 16}, "
                 "ntm: {controller_units: 16, memory_locations: 8, memory_width: 5}}",
        "--set", "seeds=1", "--set", "train.steps=20", "--set", "train.eval_every=10",
        "--set", "train.checkpoint_every=10"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    assert main(["run", "--suite", "smoke", "--out", str(out), "--no-report", *TINY]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert (runs["status"] == "done").all() and len(runs) == 4
    return out, runs


def run_dir(suite, task, model):
    out, runs = suite
    row = runs[(runs["task"] == task) & (runs["model"] == model)].iloc[0]
    return out / "runs" / row["run_id"]


def test_load_model_gives_the_final_weights_in_eval_mode(suite):
    folder = run_dir(suite, "copy", "lstm")
    model = load_model(folder)
    assert isinstance(model, torch.nn.Module) and not model.training
    final = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert final["step"] == 20
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, final["model"][name]), name
    run = load_run(folder)
    assert isinstance(run, TrainedRun) and run.spec["run_id"] == folder.name and run.result["status"] == "done"
    assert run.task.test_sizes == [(3,), (6,)]
    batch = run.task.sample(2, torch.Generator().manual_seed(0), size=4)
    assert run.model(batch.inputs).shape == batch.targets.shape


@pytest.mark.parametrize("task, model", [("copy", "lstm"), ("repeat_copy", "ntm")])
def test_evaluate_at_the_suites_sizes_reproduces_its_generalization_csv(suite, task, model):
    folder = run_dir(suite, task, model)
    frame = evaluate_run(folder, device="cpu")  # where it trained (the default, auto, takes a GPU if there is one)
    # the very bytes the run wrote: same sequences, same metrics, same columns
    assert frame.to_csv(index=False, lineterminator="\n") == (folder / "generalization.csv").read_text()


def test_evaluate_at_new_sizes_and_fewer_sequences(suite, caplog):
    folder = run_dir(suite, "repeat_copy", "ntm")
    suite_rows = pd.read_csv(folder / "generalization.csv")
    frame = evaluate_run(folder, sizes="3x2,12x3", sequences=4)
    assert list(frame["size"]) == ["L=3,n=2", "L=12,n=3"] and list(frame["size_n"]) == [2, 3]
    assert frame["seq_accuracy"].between(0, 1).all() and (frame["wrong_bits_per_seq"] >= 0).all()
    # fewer sequences of a size are the first ones the suite scored: a different mean, but drawn the same way
    assert not frame.equals(suite_rows)
    assert "L=12,n=3 needs 12 memory slots but the model has memory_locations 8" in caplog.text
    lstm = evaluate_run(run_dir(suite, "copy", "lstm"), sizes=[3, 10], device="cpu")
    assert list(lstm["size_L"]) == [3, 10]
    same = lstm.iloc[0].drop("size").astype(float).to_numpy()
    suite_copy = pd.read_csv(run_dir(suite, "copy", "lstm") / "generalization.csv")
    assert (same == suite_copy.iloc[0].drop("size").astype(float).to_numpy()).all()


def test_parse_sizes_one_and_two_parts(suite):
    copy = load_run(run_dir(suite, "copy", "lstm")).task
    repeat = load_run(run_dir(suite, "repeat_copy", "ntm")).task
    assert parse_sizes("30,40, 60", copy) == [(30,), (40,), (60,)]
    assert parse_sizes("3x6,6X6", repeat) == [(3, 6), (6, 6)]
    for text, task in (("3x6", copy), ("30", repeat), ("a", copy), ("0", copy), ("", copy)):
        with pytest.raises(TrainedRunError) as error:
            parse_sizes(text, task)
        assert "\n" not in str(error.value)


def test_render_figures_writes_samples_and_memory(suite, tmp_path):
    written = render_figures(run_dir(suite, "repeat_copy", "ntm"), "4x4", tmp_path / "figs")
    names = sorted(path.name for path in written)
    assert names == ["memory_repeat_copy_4x4.png", "samples_repeat_copy_4x4.png"]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in written)
    lstm = render_figures(run_dir(suite, "copy", "lstm"), 6, tmp_path / "figs")
    assert [path.name for path in lstm] == ["samples_copy_6.png"]  # no memory, no heat map


def test_cli_evaluate_prints_a_table_writes_the_csv_and_figures(suite, tmp_path, capsys):
    folder = run_dir(suite, "repeat_copy", "ntm")
    csv, figures = tmp_path / "gen.csv", tmp_path / "figs"
    assert main(["evaluate", str(folder), "--sizes", "3x2,4x4", "--out", str(csv), "--figures", str(figures)]) == 0
    out = capsys.readouterr().out
    assert main(["evaluate", str(folder), "--sizes", "9x2", "--figures", str(tmp_path / "more")]) == 0
    assert capsys.readouterr().err.count("needs 9 memory slots") == 1  # warned once, though scored and drawn
    header = out.splitlines()[0].split()
    assert header[:4] == ["size", "wrong_bits_per_seq", "loss_bits_per_seq", "seq_accuracy"]
    assert "L=3,n=2" in out and "L=4,n=4" in out
    # the suite's two test sizes, so the CSV is the run's own generalization.csv
    assert csv.read_text() == (folder / "generalization.csv").read_text()
    assert sorted(p.name for p in figures.iterdir()) == ["memory_repeat_copy_3x2.png", "memory_repeat_copy_4x4.png",
                                                        "samples_repeat_copy_3x2.png", "samples_repeat_copy_4x4.png"]


def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_cli_errors_are_one_line_with_status_2(suite, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a run folder" in one_line_error(capsys, ["evaluate", str(empty)])
    assert "not a run folder" in one_line_error(capsys, ["evaluate", str(tmp_path / "missing")])
    assert "suite's output folder" in one_line_error(capsys, ["evaluate", str(suite[0])])
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir(suite, "copy", "lstm"), unfinished)
    (unfinished / "result.json").unlink()
    assert "unfinished run" in one_line_error(capsys, ["evaluate", str(unfinished)])
    no_weights = tmp_path / "no_weights"
    shutil.copytree(run_dir(suite, "copy", "lstm"), no_weights)
    (no_weights / "checkpoint.pt").unlink()
    assert "no weights" in one_line_error(capsys, ["evaluate", str(no_weights)])
    folder = str(run_dir(suite, "copy", "lstm"))
    assert "is not a size" in one_line_error(capsys, ["evaluate", folder, "--sizes", "3,x"])
    assert "2 part(s)" in one_line_error(capsys, ["evaluate", str(run_dir(suite, "repeat_copy", "ntm")),
                                                  "--sizes", "30"])
    assert "--sequences" in one_line_error(capsys, ["evaluate", folder, "--sequences", "0"])
