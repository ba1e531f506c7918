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
    runs.loc[runs.index[runs["model"] == "ntm"][0], "nonfinite_steps"] = 3  # one NTM run skipped 3 updates
    runs.to_csv(tmp_path / "runs.csv", index=False)
    assert verdicts.judge_no_nan(claim, verdicts.load_suite_data(tmp_path)).verdict == "does not replicate"


def test_a_claim_with_one_arm_committed_is_not_shown_and_says_what_is_missing(tmp_path):
    import shutil

    claim = next(c for c in verdicts.CLAIMS if c.key == "(a')")
    shutil.copytree(verdicts.RESULTS / claim.folder[0], tmp_path / claim.folder[0])  # the NTM arm alone
    verdict = verdicts.verdict_of(claim, tmp_path)
    assert verdict.verdict == "not shown" and "not run yet" in verdict.evidence and claim.missing in verdict.test


def test_every_data_table_of_results_md_names_a_committed_bundle_and_is_recomputed():
    text = verdicts.PAGE.read_text()
    blocks = verdicts.DATA_BLOCK.findall(text)
    assert len(blocks) >= 6, "docs/RESULTS.md's tables come from data markers"
    for _, kind, bundles, task, seeds, table, _ in blocks:
        for name in bundles.split("+"):
            assert (verdicts.RESULTS / name / "runs.csv").is_file(), f"results/{name} is not committed"
        assert table.strip() == verdicts.data_table(kind, bundles, task, seeds=seeds or None), \
            f"{kind} {bundles} {task}: run python scripts/verdicts.py --write"


def test_a_seeds_table_is_the_bundles_generalization_csv(tmp_path):
    """The per-seed table reads its numbers from generalization.csv: change one there and the table changes."""
    import shutil

    shutil.copytree(verdicts.RESULTS / "quick_heldout", tmp_path / "b")
    before = verdicts.data_table("seeds", "b", "copy", tmp_path)
    gen = pd.read_csv(tmp_path / "b" / "generalization.csv")
    row = gen[(gen["model"] == "ntm") & (gen["seed"] == 12) & (gen["size"] == "L=16")].index[0]
    assert f"| ntm | 12 | — | 0 | {gen.loc[row - 2, 'wrong_bits_per_seq']:.3g} |" in before  # L=4, then L=8
    gen.loc[row, "wrong_bits_per_seq"] = 123.0
    gen.to_csv(tmp_path / "b" / "generalization.csv", index=False)
    after = verdicts.data_table("seeds", "b", "copy", tmp_path)
    changed = [line for line in after.splitlines() if line not in before.splitlines()]
    assert len(changed) == 1 and changed[0].startswith("| ntm | 12 |") and "| 123 |" in changed[0]
    # a page whose table is stale is rewritten from the data
    page = f"x\n<!-- data:seeds b copy -->\n{before}\n<!-- data:end -->\ny"
    assert verdicts.data_blocks(page, tmp_path) == f"x\n<!-- data:seeds b copy -->\n{after}\n<!-- data:end -->\ny"


def test_a_data_marker_can_keep_the_seeds_that_bundles_share():
    """`seeds=` keeps only those seeds' rows (e.g. the seeds a baseline ran beside a longer study)."""
    every = verdicts.data_table("seeds", "quick_heldout", "copy")
    some = verdicts.data_table("seeds", "quick_heldout", "copy", seeds="10,12-13")
    rows = some.splitlines()[2:]
    assert {line.split(" | ")[1] for line in rows} == {"10", "12", "13"} and set(rows) < set(every.splitlines())
    assert len(rows) == 3 * len({line.split(" | ")[0] for line in rows})
    marker = "<!-- data:seeds quick_heldout copy seeds=10,12-13 -->"
    assert verdicts.data_blocks(f"{marker}\nstale\n<!-- data:end -->") == f"{marker}\n{some}\n<!-- data:end -->"
    with pytest.raises(SystemExit, match="'12-10' is not a seed list"):
        verdicts.data_table("seeds", "quick_heldout", "copy", seeds="12-10")


def test_a_data_marker_naming_a_missing_bundle_or_task_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="results/nothing_here"):
        verdicts.data_table("summary", "nothing_here", "copy", tmp_path)
    with pytest.raises(SystemExit, match="task 'sorting'"):
        verdicts.data_table("summary", "quick_heldout", "sorting")


def test_an_interim_verdict_says_how_many_declared_seeds_are_in():
    claim = verdicts.Claim("(x)", "x", "solves_2x", "quick_heldout", "copy", "ntm", "lstm", declared=20)
    assert verdicts.verdict_of(claim).evidence.startswith("interim: 10 of 20 seeds; ")
    complete = verdicts.Claim("(x)", "x", "solves_2x", "quick_heldout", "copy", "ntm", "lstm", declared=10)
    assert "interim" not in verdicts.verdict_of(complete).evidence


def _ledger_bundle(root, name: str, runs: dict, curves: list[tuple[str, int, float]]) -> None:
    import json

    folder = root / name
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"by_run": runs}))
    pd.DataFrame(curves, columns=["run_id", "step", "wall_s"]).to_csv(folder / "curves.csv", index=False)


def test_the_compute_ledger_counts_each_run_once_and_leaves_out_pauses(tmp_path):
    cpu = {"model": "Some CPU", "isa": "avx2"}
    run = {"commit": "abcdef0123", "cpu": cpu, "device": "cpu", "threads": 1, "source": "trained"}
    # a: one run of an hour (evaluations every 600 s), one of 2 threads and 30 min with a 5-hour pause after step 0
    _ledger_bundle(tmp_path, "a", {"r1": {**run, "wall_s": 3600.0},
                                   "r2": {**run, "wall_s": 1800.0 + 18000.0, "threads": 2}},
                   [("r1", s, 600.0 * i) for i, s in enumerate(range(0, 700, 100))]
                   + [("r2", 0, 0.0)] + [("r2", s, 18000.0 + 300.0 * i) for i, s in enumerate(range(100, 700, 100), 1)])
    # b: trained one run of 900 s, reused a's first (counted in a, not again)
    _ledger_bundle(tmp_path, "b", {"r3": {**run, "wall_s": 900.0},
                                   "r1": {**run, "wall_s": 3600.0, "source": "reused from a"}},
                   [("r3", 0, 0.0), ("r3", 100, 450.0), ("r3", 200, 900.0), ("r1", 0, 0.0), ("r1", 600, 3600.0)])
    rows = {line.split(" | ")[0].strip("| `"): line.split(" | ") for line in
            verdicts.ledger_table(tmp_path).split("\n") if line.startswith("| ")}
    # r2: 19,800 s of wall, of which the 18,300 s interval to step 100 is a pause, counted as its median interval
    # (300 s): 1,800 s on 2 threads
    assert rows["a"][1] == "2" and rows["a"][2] == f"{(3600 + 2 * 1800) / 3600:.2f}"
    assert rows["b"][1] == "1 (+1 reused)" and rows["b"][2] == "0.25"
    assert rows["all"][1] == "3" and rows["all"][2] == f"{(3600 + 2 * 1800 + 900) / 3600:.1f}"
    assert "1 run(s) were suspended" in verdicts.ledger_table(tmp_path)


def test_the_fastest_arm_rule_holm_corrects_over_the_other_arms():
    """Claim (d)'s rule on the held-out Copy runs (DNC 10/10 converged at 500-1,000 steps, NTM 8/10, LSTM 0/10)."""
    def verdict(better, others, declared=10):
        claim = verdicts.Claim("(x)", "t", "fastest", "quick_heldout", "copy", better, declared=declared,
                               others=others)
        return verdicts.verdict_of(claim)

    dnc = verdict("dnc", ("ntm", "lstm"))
    assert dnc.verdict == "replicates"  # Holm-adjusted paired p 0.0156 (against the NTM) and 0.0039 (the LSTM)
    assert "dnc 10/10, ntm 8/10, lstm 0/10" in dnc.evidence and "Holm" in dnc.test
    assert verdict("lstm", ("dnc", "ntm")).verdict == "does not replicate"
    assert verdict("ntm", ("dnc", "lstm")).verdict == "does not replicate"  # the DNC is significantly ahead
    interim = verdict("dnc", ("ntm", "lstm"), declared=40)
    assert "interim: 10 of 40 seeds" in interim.evidence
    assert interim.verdict == "not shown yet (interim reading: replicates)"  # taken on the complete sample only


def test_which_arm_converges_sooner_when_both_converge_as_often():
    from bench.survival import sooner

    early, late = ([100.0, 200.0, 300.0], [True, True, True]), ([400.0, 500.0, 600.0], [True, True, True])
    assert sooner(early, late) == 1 and sooner(late, early) == -1
    assert sooner(early, early) == 0
    assert sooner(([1.0], [False]), ([1.0], [False])) == 0


def test_a_median_interval_from_order_statistics():
    from bench.stats import median_interval

    assert median_interval(range(1, 6)) is None             # 5 values: min-max covers 93.8 % < 95 %
    assert median_interval(range(1, 7)) == (1.0, 6.0)       # 6: 96.9 %
    assert median_interval(range(1, 11)) == (2.0, 9.0)      # 10: ranks 2 and 9 (97.9 %)
    assert median_interval(range(1, 41)) == (14.0, 27.0)    # 40: ranks 14 and 27


@pytest.mark.parametrize("firsts, verdict", [
    ([34, 35, 35, 36, 36, 36, 37, 37, 38, 39], "replicates"),    # interval [35, 38]: holds 36, inside 31-40
    ([22, 24, 25, 25, 26, 27, 28, 28, 30, 41], "does not replicate"),  # [24, 30] excludes 36
    ([20, 25, 30, 35, 36, 38, 40, 40, 40, 40], "not shown"),     # [25, 40] holds 36 but reaches below 31
    ([33, 34, 41, 41, 41, 41, 41, 41, 41, 41], "not shown"),     # [34, 41]: most seeds never fail at L = 40
    ([36, 36, 36, 36, 36], "not shown"),                          # 5 seeds: no 95 % interval
])
def test_the_position_rule(firsts, verdict):
    assert verdicts.position_verdict(firsts)[2] == verdict


def test_first_failing_positions_count_the_seeds_that_fit_their_training_range(tmp_path):
    import shutil

    shutil.copytree(verdicts.RESULTS / "quick_heldout", tmp_path / "b")
    gen = pd.read_csv(tmp_path / "b" / "generalization.csv")
    ntm = gen[(gen["task"] == "copy") & (gen["model"] == "ntm") & (gen["size"] == "L=20")]
    gen.loc[ntm.index, "wrong_bits_per_seq"] = [0.0 if seed in (10, 11, 12) else 5.0 for seed in ntm["seed"]]
    gen.to_csv(tmp_path / "b" / "generalization.csv", index=False)
    runs = pd.read_csv(tmp_path / "b" / "runs.csv")
    ids = {seed: runs[(runs["task"] == "copy") & (runs["model"] == "ntm") & (runs["seed"] == seed)]["run_id"].iloc[0]
           for seed in (10, 11, 12, 14)}
    rows = []
    for seed, first in ((10, 30), (11, None), (12, 5), (14, 7)):  # 14 fails at L = 20, so it is not measured
        rows += [{"run_id": ids[seed], "position": p, "wrong_bits": 1.0 if first and p >= first else 0.0}
                 for p in range(1, 41)]
    data = verdicts.load_suite_data(tmp_path / "b")
    firsts = verdicts.first_failures(data, pd.DataFrame(rows), "copy", ("ntm",))
    assert firsts == {"ntm": [30, 41, 5]}  # in seed order; 41: seed 11 holds all of L = 40
    with pytest.raises(SystemExit, match="end at position 39, not 40"):  # errors of another test size are refused
        verdicts.first_failures(data, pd.DataFrame(rows)[lambda f: f["position"] < 40], "copy", ("ntm",))


def _made_up_samples(monkeypatch, arms: dict) -> None:
    """The verdicts' convergence samples made up: arm -> (steps to converge or censor, converged), seeds 1..n."""
    from bench.report.data import ConvergenceSample

    def sample(data, task, model):
        steps, converged = arms[model]
        n = len(steps)
        return ConvergenceSample(list(range(1, n + 1)), list(converged), list(steps), [x * 32 for x in steps],
                                 ["done"] * n, [10_000] * n)

    monkeypatch.setattr(verdicts, "convergence_sample", sample)


def _fastest_on(monkeypatch, arms: dict) -> str:
    """Claim (d)'s rule on made-up samples."""
    _made_up_samples(monkeypatch, arms)
    claim = verdicts.Claim("(x)", "t", "fastest", "f", "copy", "a", declared=len(next(iter(arms.values()))[0]),
                           others=tuple(m for m in arms if m != "a"))
    return verdicts.judge_fastest(claim, None).verdict


def test_the_fastest_arm_rule_reads_the_direction_from_the_log_rank_not_the_counts(monkeypatch):
    n = 24
    late = ([8_000 + 50 * i for i in range(n - 1)] + [10_000], [True] * (n - 1) + [False])   # 23 of 24, late
    early = ([600 + 50 * i for i in range(n - 2)] + [10_000] * 2, [True] * (n - 2) + [False] * 2)  # 22, early
    never = ([10_000] * n, [False] * n)
    # "a" converges in one seed more than "b", but far later: significantly slower, not faster
    assert _fastest_on(monkeypatch, {"a": late, "b": early, "c": never}) == "does not replicate"
    assert _fastest_on(monkeypatch, {"a": early, "b": late, "c": never}) == "replicates"
    # as many converged in each arm: the log-rank's sign still tells which is sooner
    both = ([600 + 50 * i for i in range(n)], [True] * n)
    slow = ([8_000 + 50 * i for i in range(n)], [True] * n)
    assert _fastest_on(monkeypatch, {"a": both, "b": slow, "c": never}) == "replicates"


def test_the_fastest_arm_rule_holm_corrects_and_counts_a_comparison_without_events(monkeypatch):
    # 6 seeds: "a" converges in all 6, "b" in none; the exact paired p is 2/2^6 = 0.03125, under 0.05 alone,
    # 0.0625 after Holm over two comparisons
    a = ([1_000 + 100 * i for i in range(6)], [True] * 6)
    never = ([10_000] * 6, [False] * 6)
    assert _fastest_on(monkeypatch, {"a": a, "b": never}) == "replicates"            # one comparison: no Holm
    assert _fastest_on(monkeypatch, {"a": a, "b": never, "c": never}) == "not shown"  # two: 0.0625 each
    # no converged run in one pair: that test counts as p = 1, so the other is still corrected for two
    assert _fastest_on(monkeypatch, {"a": never, "b": never, "c": a}) == "not shown"


def test_a_two_model_speed_claim_also_reads_the_direction_from_the_log_rank(monkeypatch):
    n = 24
    _made_up_samples(monkeypatch, {
        "a": ([8_000 + 50 * i for i in range(n - 1)] + [10_000], [True] * (n - 1) + [False]),  # 23 of 24, late
        "b": ([600 + 50 * i for i in range(n - 2)] + [10_000] * 2, [True] * (n - 2) + [False] * 2)})  # 22, early
    claim = verdicts.Claim("(x)", "a faster than b", "faster", "f", "copy", "a", "b", declared=n)
    assert verdicts.judge_faster(claim, None).verdict == "does not replicate"
    claim = verdicts.Claim("(x)", "b faster than a", "faster", "f", "copy", "b", "a", declared=n)
    assert verdicts.judge_faster(claim, None).verdict == "replicates"


def test_a_monte_carlo_p_at_its_floor_is_printed_as_a_bound(monkeypatch):
    """24 paired seeds are too many relabellings to enumerate, so the log-rank test draws them; when no draw is as
    extreme as the data, p is the floor 1 / (draws + 1) and the verdict table says "p ≤" (an exact p stays "p =")."""
    never = ([10_000] * 24, [False] * 24)
    early = ([600 + 50 * i for i in range(24)], [True] * 24)
    for n, bound in ((24, True), (6, False)):
        arms = {"a": (early[0][:n], early[1][:n]), "b": (never[0][:n], never[1][:n])}
        _made_up_samples(monkeypatch, arms)
        claim = verdicts.Claim("(x)", "t", "fastest", "f", "copy", "a", declared=n, others=("b",))
        test = verdicts.judge_fastest(claim, None).test
        assert ("p ≤ " in test and "random relabellings; Holm ≤ " in test) == bound, test
        assert ("p = " in test) == (not bound), test
