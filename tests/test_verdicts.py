"""docs/RESULTS.md's verdicts follow from the committed per-run data by the declared rules (scripts/verdicts.py)."""

from __future__ import annotations

import importlib.util
import sys

import pandas as pd
import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("verdicts", REPO / "scripts" / "verdicts.py")
verdicts = sys.modules["verdicts"] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
spec.loader.exec_module(verdicts)


def test_results_md_holds_the_verdicts_the_committed_data_give():
    assert verdicts.page_table() == verdicts.table(), "run python scripts/verdicts.py --write"
    assert verdicts.page_table(verdicts.README, verdicts.SCORE_START, verdicts.SCORE_END) == \
        verdicts.scorecard_table(), "run python scripts/verdicts.py --write"
    assert verdicts.main(["--check"]) == 0


def test_every_claim_with_data_points_at_a_committed_folder():
    for claim in verdicts.CLAIMS:
        present = verdicts.folders(claim)
        if isinstance(claim.folder, str):
            assert present == [claim.folder], f"{claim.key}: results/{claim.folder} is not committed"
        for name in present:
            for file in ("runs.csv", "curves.csv", "generalization.csv", "suite.json", "manifest.json"):
                assert (verdicts.RESULTS / name / file).is_file(), f"{claim.key}: {name}/{file} is not committed"
        if not present or not isinstance(claim.folder, str):
            assert claim.missing, f"{claim.key}: say what has to be run"


def test_a_claim_judged_on_two_folders_counts_the_seeds_both_arms_finished(tmp_path):
    """Each arm in its own bundle (as claim (a') at the paper's sizes): one report of both, on the common seeds."""
    import shutil

    for name, model, seeds in (("arm_a", "ntm", range(10, 20)), ("arm_b", "lstm", range(10, 15))):
        shutil.copytree(verdicts.RESULTS / "quick_heldout", tmp_path / name)
        for csv in ("runs", "curves", "generalization"):
            frame = pd.read_csv(tmp_path / name / f"{csv}.csv")
            frame[(frame["model"] == model) & frame["seed"].isin(list(seeds))].to_csv(
                tmp_path / name / f"{csv}.csv", index=False)
    claim = verdicts.Claim("(x)", "two arms", "solves_2x", ("arm_a", "arm_b"), "copy", "ntm", "lstm")
    verdict = verdicts.verdict_of(claim, tmp_path)
    solved = pd.read_csv(verdicts.RESULTS / "quick_heldout" / "runs.csv")
    k = int(solved[(solved["model"] == "ntm") & solved["seed"].between(10, 14)]["solved_2x"].sum())
    assert f"ntm {k}/5" in verdict.evidence and "lstm 0/5" in verdict.evidence
    # only one arm committed so far: not shown, and says what is missing
    shutil.rmtree(tmp_path / "arm_b")
    assert verdicts.verdict_of(claim, tmp_path).verdict == verdicts.NOT_SHOWN


@pytest.mark.parametrize("counts, verdict", [
    ((5, 10, 0, 10), "replicates"),          # Fisher p = 0.0325
    ((4, 10, 0, 10), "not shown"),           # p = 0.087, and 4/10's upper bound (0.74) is above one half
    ((0, 10, 5, 10), "does not replicate"),  # significant the other way
    ((0, 10, 0, 10), "does not replicate"),  # 0/10: at most 0.31 of A's seeds can solve it
    ((1, 3, 0, 3), "not shown"),             # 3 seeds a model cannot decide
])
def test_the_solve_rate_rule(counts, verdict):
    assert verdicts.solve_rate_verdict(*counts) == verdict


def test_the_smallest_split_a_design_can_detect():
    assert verdicts.smallest_significant(10, 10) == 5
    assert verdicts.smallest_significant(3, 3) is None      # no split of 3 against 3 reaches p < 0.05


def test_a_nan_claim_needs_long_runs(tmp_path):
    source = verdicts.RESULTS / "quick_heldout"
    for name in ("curves.csv", "generalization.csv", "suite.json"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    runs = pd.read_csv(source / "runs.csv")
    claim = next(c for c in verdicts.CLAIMS if c.key == "(e)")
    runs.to_csv(tmp_path / "runs.csv", index=False)
    assert verdicts.judge_no_nan(claim, verdicts.load_suite_data(tmp_path)).verdict == "not shown"  # 4,000 steps
    runs["steps"] = 200_000
    runs.to_csv(tmp_path / "runs.csv", index=False)
    assert verdicts.judge_no_nan(claim, verdicts.load_suite_data(tmp_path)).verdict == "replicates"
    runs.loc[runs["model"] == "ntm", "nonfinite_steps"] = [3] + [0] * 9
    runs.to_csv(tmp_path / "runs.csv", index=False)
    assert verdicts.judge_no_nan(claim, verdicts.load_suite_data(tmp_path)).verdict == "does not replicate"


def test_a_claim_with_one_arm_committed_is_not_shown_and_says_what_is_missing(tmp_path):
    import shutil

    claim = next(c for c in verdicts.CLAIMS if c.key == "(a')")
    shutil.copytree(verdicts.RESULTS / claim.folder[0], tmp_path / claim.folder[0])  # the NTM arm alone
    verdict = verdicts.verdict_of(claim, tmp_path)
    assert verdict.verdict == "not shown" and "not run yet" in verdict.evidence and claim.missing in verdict.test
