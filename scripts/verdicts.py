"""Each published claim's verdict, computed from the per-run data committed under results/ by the rules that
docs/RESULTS.md declares ("How a verdict is decided"), and every data table of docs/RESULTS.md, recomputed from the
same files, so the page cannot drift from the data.

    python scripts/verdicts.py                 print the verdict table (Markdown)
    python scripts/verdicts.py --write         rewrite the tables between the markers in docs/RESULTS.md and README.md
    python scripts/verdicts.py --check         exit 1 when a page's table differs from the data's

It also writes the README's table of the shipped bundles' scorecards (`scorecard_table`), docs/RESULTS.md's compute
ledger (`ledger_table`, between `<!-- ledger:start -->` and `<!-- ledger:end -->`), and the tables between
data markers in docs/RESULTS.md (`data_table`):

    <!-- data:summary BUNDLE[+BUNDLE...] TASK -->   the report's summary table of TASK (as in summary.md)
    <!-- data:seeds BUNDLE[+BUNDLE...] TASK -->     wrong bits/seq at every test size, per model and seed
    ...
    <!-- data:end -->

Several bundles joined by `+` are one report of them (`bench.report.combine`, protocols checked). A last word
`seeds=101-105` keeps only those seeds' runs (`bench.report.combine.only_seeds`, as `bench compare --seeds`).

A claim is data (`CLAIMS`): which committed folder, task and models it is judged on, and which kind of test. A claim
whose data are not committed yet gets "not shown" and says what is missing. The tests (tests/test_verdicts.py) check
the rules on small known cases and that docs/RESULTS.md holds what this script computes.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import stats  # noqa: E402
from bench.errors import ConfigError  # noqa: E402
from bench.report.combine import COMPARED, Source, combine, only_seeds, parse_seeds  # noqa: E402
from bench.report.data import convergence_sample, load_suite_data, truthy  # noqa: E402
from bench.report.page import summary_markdown_table  # noqa: E402
from bench.report.tables import summary_table  # noqa: E402
from bench.results import read_csv  # noqa: E402
from bench.survival import hazard_ratio, km_median, logrank, sooner  # noqa: E402

RESULTS = REPO / "results"
PAGE = REPO / "docs" / "RESULTS.md"
START, END = "<!-- verdicts:start -->", "<!-- verdicts:end -->"
ALPHA = 0.05
#: a model "generalises" when at least this share of its seeds solves twice the training length (the declared reading
#: of claims (a) and (c); RESULTS.md, "How a verdict is decided")
MAJORITY = 0.5
#: a NaN claim is about long training: fewer steps per run than this cannot show it
LONG_TRAINING_STEPS = 100_000

REPLICATES, DOES_NOT, NOT_SHOWN = "replicates", "does not replicate", "not shown"


@dataclass(frozen=True)
class Claim:
    key: str                    # (a), (b), ...
    text: str
    kind: str                   # "solves_2x" (A solves 2x, B does not), "faster" (A converges sooner), "fastest"
                                # (A sooner than each of `others`), "position" (claim (b)), "no_nan"
    folder: str | tuple[str, ...] | None  # under results/ (several: one report of them); None: no data yet
    task: str = ""
    better: str = ""            # the model the claim favours
    other: str = ""             # the model it is compared with ("" for one-model claims)
    missing: str = ""           # what has to be run for a (final) verdict while the data are missing or interim
    declared: int = 0           # seeds an arm the declared design needs (0: what is committed is the design)
    others: tuple[str, ...] = ()  # "fastest": the arms `better` is compared with, Holm-corrected together


#: the claims of docs/RESULTS.md, each judged on data nobody tuned on
CLAIMS = [
    Claim("(a)", "The NTM's Copy generalises to twice its training length, the LSTM's does not (Graves 2014), "
                 "default suite", "solves_2x", "quick_heldout", "copy", "ntm", "lstm"),
    Claim("(a')", "The same claim at the paper's sizes (L 1-20, 1 x 100 controller, 128 x 20 memory)", "solves_2x",
          ("paper_copy_fresh", "paper_copy_fresh_lstm"), "copy", "ntm_constant", "lstm_2x256",
          missing="the LSTM arm (2 x 256, Adam 3e-3, 25,000 steps) on the same fresh seeds", declared=20),
    Claim("(b)", "Copy trained on L 1-20 degrades around output position 36 at L = 40 (Collier & Beel)", "position",
          "init_study", "copy", missing="the init_study suite's converged seeds' position errors at L = 40",
          declared=40, others=("ntm_constant", "ntm_random", "ntm_learned")),
    Claim("(c)", "Associative Recall trained on 2-6 items generalises to 12 (Graves 2014)", "solves_2x",
          "paper_recall_fresh", "associative_recall", "ntm_constant", "lstm_3x256",
          missing="paper-size Associative Recall on fresh seeds 101-120, NTM and LSTM 3 x 256", declared=20),
    Claim("(d)", "Constant memory initialisation converges about 2x faster than the next best (Collier & Beel)",
          "fastest", "init_study", "copy", "ntm_constant",
          missing="the init_study suite (3 reference arms, seeds 101-140), declared and running", declared=40,
          others=("ntm_random", "ntm_learned")),
    Claim("(e)", "No NaN in training with gradient and controller clipping (Collier & Beel)", "no_nan",
          "quick_heldout", "copy", "ntm", "dnc"),
    Claim("(f)", "The LSTM learns Associative Recall far more slowly than the NTM (Graves 2014)", "faster",
          "paper_recall_fresh", "associative_recall", "ntm_constant", "lstm_3x256",
          missing="paper-size Associative Recall on fresh seeds 101-120, NTM and LSTM 3 x 256", declared=20),
]


@dataclass(frozen=True)
class Verdict:
    evidence: str
    test: str
    verdict: str


def fmt_ci(ci: tuple[float, float] | None) -> str:
    return "—" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def smallest_significant(n_a: int, n_b: int) -> int | None:
    """The fewest of A's n_a seeds that must solve, with none of B's n_b, for Fisher's p to fall below ALPHA."""
    for k in range(n_a + 1):
        p = stats.fisher_exact(k, n_a, 0, n_b)
        if p is not None and p < ALPHA:
            return k
    return None


def solve_rate_verdict(k_a: int, n_a: int, k_b: int, n_b: int) -> str:
    """The declared rule for "A solves 2x, B does not": replicates when Fisher's two-sided p < ALPHA with A ahead;
    does not replicate when B is significantly ahead, or A's Clopper–Pearson upper bound is below MAJORITY (at
    most a minority of A's seeds can solve it); not shown otherwise."""
    p = stats.fisher_exact(k_a, n_a, k_b, n_b)
    ahead = k_a / n_a > k_b / n_b
    if p is not None and p < ALPHA:
        return REPLICATES if ahead else DOES_NOT
    ci = stats.clopper_pearson(k_a, n_a)
    if ci is not None and ci[1] < MAJORITY:
        return DOES_NOT
    return NOT_SHOWN


def _finished(data, task: str, model: str) -> pd.DataFrame:
    runs = data.runs_of(task, model)
    return runs[runs["status"] == "done"]


def _solves_2x(runs: pd.DataFrame) -> tuple[int, int]:
    return int(runs["solved_2x"].map(truthy).sum()), len(runs)


def judge_solves_2x(claim: Claim, data, results: Path = RESULTS) -> Verdict:
    a, b = _finished(data, claim.task, claim.better), _finished(data, claim.task, claim.other)
    if len(a) and len(b):  # the declared rule counts the seeds both arms have finished
        common = set(a["seed"]) & set(b["seed"])
        a, b = a[a["seed"].isin(common)], b[b["seed"].isin(common)]
    (k_a, n_a), (k_b, n_b) = _solves_2x(a), _solves_2x(b)
    if not n_a or not n_b:  # one arm is committed, the other still to run
        done, (k, n) = (claim.better, (k_a, n_a)) if n_a else (claim.other, (k_b, n_b))
        return Verdict(f"seeds solving 2×: {done} {k}/{n} {fmt_ci(stats.clopper_pearson(k, n))} (Clopper–Pearson "
                       "95 %); the other arm is not run yet", f"needs {claim.missing}", NOT_SHOWN)
    p = stats.fisher_exact(k_a, n_a, k_b, n_b)
    size = data.tasks[claim.task].test_size_2x
    where = "" if size is None else " at " + ",".join(f"{part}={v}" for part, v in
                                                        zip(data.tasks[claim.task].size_parts, size))
    evidence = (f"{interim(claim, min(n_a, n_b))}seeds solving 2×{where}: "
                f"{claim.better} {k_a}/{n_a} {fmt_ci(stats.clopper_pearson(k_a, n_a))}, "
                f"{claim.other} {k_b}/{n_b} {fmt_ci(stats.clopper_pearson(k_b, n_b))} (Clopper–Pearson 95 %)")
    need = smallest_significant(n_a, n_b)
    test = f"Fisher exact, two-sided: p = {p:.3g}" + ("" if need is None else
                                                      f" (this design needs ≥ {need}/{n_a} against 0/{n_b})")
    return Verdict(evidence, test, solve_rate_verdict(k_a, n_a, k_b, n_b))


def interim(claim: Claim, seeds: int) -> str:
    """"interim: k of n seeds; " while fewer seeds than the declared design are in (a verdict on them is
    provisional), else ""."""
    return f"interim: {seeds} of {claim.declared} seeds; " if seeds < claim.declared else ""


def _on_seeds(sample, seeds: set[int]):
    """A `ConvergenceSample` cut to the given seeds (in seed order)."""
    keep = [i for i, seed in enumerate(sample.seeds) if seed in seeds]
    return type(sample)(**{field.name: [getattr(sample, field.name)[i] for i in keep] for field in fields(sample)})


def judge_faster(claim: Claim, data, results: Path = RESULTS) -> Verdict:
    a = convergence_sample(data, claim.task, claim.better)
    b = convergence_sample(data, claim.task, claim.other)
    if a.seeds and b.seeds:  # the declared rule counts the seeds both arms have finished
        common = set(a.seeds) & set(b.seeds)
        a, b = _on_seeds(a, common), _on_seeds(b, common)
    if not a.seeds or not b.seeds:
        return Verdict("the runs of one arm are not finished yet", f"needs {claim.missing}", NOT_SHOWN)
    result = logrank((a.sequences, a.converged), (b.sequences, b.converged), paired=a.seeds == b.seeds)
    evidence = (f"{interim(claim, len(a.seeds))}converged: {claim.better} {sum(a.converged)}/{len(a.seeds)}, "
                f"{claim.other} {sum(b.converged)}/{len(b.seeds)}")
    if result is None:
        return Verdict(evidence, "log-rank: no run converged", NOT_SHOWN)
    ahead = sooner((a.sequences, a.converged), (b.sequences, b.converged))  # the log-rank's own sign
    verdict = NOT_SHOWN if result.p_value >= ALPHA or not ahead else REPLICATES if ahead > 0 else DOES_NOT
    return Verdict(evidence, f"log-rank permutation test: p = {result.p_value:.3g} (min p {result.min_p:.3g})",
                   verdict)


def _steps(median: float | None) -> str:
    """A KM median in steps; None: the curve never reaches one half (the median lies past the budget)."""
    return "not reached" if median is None else f"{median:,.0f}"


def _fmt_hr(hr) -> str:
    return hr.reason if hr.ratio is None else f"{hr.ratio:.2f} {fmt_ci(hr.ci)}"


def _p_text(test: stats.PermutationTest, adjusted: float) -> str:
    """"p = 0.34 (Holm 0.34" for a test, or, where a Monte Carlo test's p is at the floor its draws can give (no
    draw as extreme as the data), "p ≤ 5e-05 (the floor of 20,000 random relabellings; Holm ≤ 0.0001": the p is an
    upper bound there, not a value."""
    if test.exact or test.p_value > test.min_p * (1 + 1e-9):
        return f"p = {test.p_value:.3g} (Holm {adjusted:.3g}"
    draws = round(1 / test.min_p) - 1
    return f"p ≤ {test.p_value:.3g} (the floor of {draws:,} random relabellings; Holm ≤ {adjusted:.3g}"


def judge_fastest(claim: Claim, data, results: Path = RESULTS) -> Verdict:
    """`better` against each of `others` on the seeds every arm finished: the log-rank permutation test paired by
    seed, Holm-corrected over the comparisons. Replicates when every adjusted p < ALPHA with `better` converging in
    more seeds (in as many: sooner, by the log-rank's observed against expected events); does not replicate when
    another arm is significantly ahead; not shown otherwise. The Cox hazard ratio stratified by seed (95 % Wald)
    is reported beside it."""
    arms = [claim.better, *claim.others]
    samples = {arm: convergence_sample(data, claim.task, arm) for arm in arms}
    common = set.intersection(*(set(sample.seeds) for sample in samples.values()))
    if not common:
        return Verdict("no seed has finished under every arm yet", f"needs {claim.missing}", NOT_SHOWN)
    samples = {arm: _on_seeds(sample, common) for arm, sample in samples.items()}
    a = samples[claim.better]
    tests, ratios, ahead = [], [], []
    for other in claim.others:
        b = samples[other]
        tests.append(logrank((a.sequences, a.converged), (b.sequences, b.converged), paired=True))
        ratios.append(hazard_ratio((a.sequences, a.converged), (b.sequences, b.converged), a.seeds))
        ahead.append(sooner((a.sequences, a.converged), (b.sequences, b.converged)))  # the log-rank's own sign
    # a comparison with no converged run is a test with p = 1: it still counts in Holm's correction
    adjusted = stats.holm([1.0 if t is None else t.p_value for t in tests])
    medians = {arm: km_median(sample.steps, sample.converged).median for arm, sample in samples.items()}
    evidence = (f"{interim(claim, len(common))}converged: "
                + ", ".join(f"{arm} {sum(samples[arm].converged)}/{len(common)}" for arm in arms)
                + "; KM median steps: " + ", ".join(f"{arm} {_steps(medians[arm])}" for arm in arms)
                + "; Cox hazard ratio (stratified by seed, 95 % Wald): "
                + "; ".join(f"{claim.better} : {other} {_fmt_hr(hr)}" for other, hr in zip(claim.others, ratios)))
    direction = {1: f"{claim.better} sooner", -1: f"{claim.better} later", 0: "even"}
    test = "log-rank permutation test paired by seed, Holm over the comparisons: " + "; ".join(
        f"vs {other} " + ("no run converged, p = 1" if t is None else
                          f"{_p_text(t, p)}; {direction[first]})")
        for other, t, p, first in zip(claim.others, tests, adjusted, ahead))
    significant = [p is not None and p < ALPHA for p in adjusted]
    if any(sig and first < 0 for sig, first in zip(significant, ahead)):
        verdict = DOES_NOT
    elif all(significant) and all(first > 0 for first in ahead):
        verdict = REPLICATES
    else:
        verdict = NOT_SHOWN
    return Verdict(evidence, test, verdict)


#: claim (b): where along L = 40 a Copy model's output first fails, against the claimed position 36
POSITION_SIZE, POSITION_THRESHOLD, POSITION_CLAIMED, POSITION_WINDOW = 40, 0.5, 36, (31, 40)
#: a seed's position is measured only when its final model solves its training range: at most this many wrong
#: bits per sequence at L = 20
POSITION_FIT = 1.0


def first_failures(data, positions: pd.DataFrame, task: str, models: tuple[str, ...],
                   seeds: set[int] | None = None) -> dict[str, list[int]]:
    """Per model, for each seed (of `seeds`, when given) whose final model makes at most POSITION_FIT wrong bits at
    L = 20, the first output position whose mean error exceeds POSITION_THRESHOLD (POSITION_SIZE + 1 when none
    does: a censored value, not a position)."""
    gen = data.gen[(data.gen["task"] == task) & (data.gen["size"] == "L=20")].set_index("run_id")
    out = {}
    for model in models:
        runs = _finished(data, task, model)
        if seeds is not None:
            runs = runs[runs["seed"].isin(seeds)]
        firsts = []
        for _, run in runs.sort_values("seed").iterrows():
            fits = run["run_id"] in gen.index and float(gen.loc[run["run_id"], "wrong_bits_per_seq"]) <= POSITION_FIT
            curve = positions[positions["run_id"] == run["run_id"]].sort_values("position")
            if not fits or curve.empty:
                continue
            if int(curve["position"].max()) != POSITION_SIZE:
                raise SystemExit(f"position errors of run {run['run_id']} end at position "
                                 f"{int(curve['position'].max())}, not {POSITION_SIZE}: rerun "
                                 f"scripts/position_errors.py --size {POSITION_SIZE}")
            over = curve[curve["wrong_bits"] > POSITION_THRESHOLD]["position"]
            firsts.append(int(over.iloc[0]) if len(over) else POSITION_SIZE + 1)
        out[model] = firsts
    return out


def judge_position(claim: Claim, data, results: Path = RESULTS) -> Verdict:
    """The declared rule of claim (b): the median first failing position over the measured seeds (pooled over the
    arms), with its distribution-free 95 % interval (order statistics). Replicates when the interval contains the
    claimed position and lies within POSITION_WINDOW; does not replicate when it excludes the claimed position."""
    path = results / claim.folder / "position_errors.csv"
    if not path.is_file():
        return Verdict("no position errors committed yet", f"needs {claim.missing}", NOT_SHOWN)
    # the seeds every arm has a result for, as claim (d) counts them
    common = set.intersection(*(set(convergence_sample(data, claim.task, m).seeds) for m in claim.others))
    firsts = first_failures(data, read_csv(path), claim.task, claim.others, common)
    pooled = sorted(p for values in firsts.values() for p in values)
    per_arm = "; ".join(f"{m} {len(v)}" + (f" (median {pd.Series(v).median():g}, {_position_ci(v)})" if v else "")
                        for m, v in firsts.items())
    if not pooled:
        return Verdict(f"{interim(claim, len(common))}no seed solves its training range yet ({per_arm})",
                       "median first failing position with its order-statistic 95 % interval", NOT_SHOWN)
    median, _, verdict = position_verdict(pooled)
    held = sum(p > POSITION_SIZE for p in pooled)
    evidence = (f"{interim(claim, len(common))}first position above {POSITION_THRESHOLD:g} wrong bits at L = "
                f"{POSITION_SIZE} ({POSITION_SIZE + 1}: none) of the seeds that fit L = 20, per arm: {per_arm}; "
                f"pooled ({held} of {len(pooled)} hold all of L = {POSITION_SIZE}): median {median:g}, "
                f"{_position_ci(pooled)}")
    test = (f"the pooled interval decides: replicates if it contains {POSITION_CLAIMED} and lies within "
            f"{POSITION_WINDOW[0]}–{POSITION_WINDOW[1]}; does not if it excludes {POSITION_CLAIMED}")
    return Verdict(evidence, test, verdict)


def _position_ci(values: list[int]) -> str:
    ci = stats.median_interval(values)
    return "no 95 % interval (n < 6)" if ci is None else f"95 % interval [{ci[0]:g}, {ci[1]:g}] (order statistics)"


def position_verdict(firsts: list[int]) -> tuple[float, tuple[float, float] | None, str]:
    """Claim (b)'s declared rule on the seeds' first failing positions: (median, its order-statistic 95 % interval,
    verdict)."""
    median = float(pd.Series(firsts).median())
    ci = stats.median_interval(firsts)
    if ci is None:
        return median, ci, NOT_SHOWN
    if not ci[0] <= POSITION_CLAIMED <= ci[1]:
        return median, ci, DOES_NOT
    inside = POSITION_WINDOW[0] <= ci[0] and ci[1] <= POSITION_WINDOW[1]
    return median, ci, REPLICATES if inside else NOT_SHOWN


def judge_no_nan(claim: Claim, data, results: Path = RESULTS) -> Verdict:
    runs = data.runs[data.runs["model"].isin([claim.better, claim.other]) & (data.runs["status"] != "failed")]
    with_nan = int((pd.to_numeric(runs["nonfinite_steps"], errors="coerce").fillna(0) > 0).sum())
    steps = pd.to_numeric(runs["steps"], errors="coerce")
    ci = stats.clopper_pearson(with_nan, len(runs))
    evidence = (f"{with_nan} of {len(runs)} {claim.better}/{claim.other} runs had a non-finite update (rate "
                f"{fmt_ci(ci)}); {int(steps.max()):,} steps per run at most, {int(steps.sum()):,} in all")
    if with_nan:
        return Verdict(evidence, "count of runs with a skipped update", DOES_NOT)
    if steps.max() < LONG_TRAINING_STEPS:
        return Verdict(evidence, f"runs shorter than {LONG_TRAINING_STEPS:,} steps cannot show it (NaNs were "
                                 "reported after about 350,000 steps)", NOT_SHOWN)
    return Verdict(evidence, "count of runs with a skipped update", REPLICATES)


JUDGES = {"solves_2x": judge_solves_2x, "faster": judge_faster, "fastest": judge_fastest,
          "position": judge_position, "no_nan": judge_no_nan}


def folders(claim: Claim, results: Path = RESULTS) -> list[str]:
    """The claim's committed folders (those of a several-folder claim that exist so far)."""
    named = [] if claim.folder is None else [claim.folder] if isinstance(claim.folder, str) else list(claim.folder)
    return [name for name in named if (results / name / "suite.json").is_file()]


def load_bundles(names: list[str], results: Path = RESULTS):
    """One bundle's data, or one report of several (a task they share must be the same test: protocol
    fingerprints)."""
    if len(names) == 1:
        return load_suite_data(results / names[0])
    parts = [(load_suite_data(results / name), Source(results / name, name, COMPARED)) for name in names]
    return combine(parts, only_first_tasks=False)


def verdict_of(claim: Claim, results: Path = RESULTS) -> Verdict:
    present = folders(claim, results)
    if not present:
        return Verdict("no per-run data committed yet", f"needs {claim.missing}", NOT_SHOWN)
    verdict = JUDGES[claim.kind](claim, load_bundles(present, results), results)
    if verdict.evidence.startswith("interim:") and verdict.verdict != NOT_SHOWN:
        # the declared rules take a verdict on the complete sample only: an interim reading is shown, not taken
        return Verdict(verdict.evidence, verdict.test, f"{NOT_SHOWN} yet (interim reading: {verdict.verdict})")
    return verdict


def table(results: Path = RESULTS) -> str:
    lines = ["| claim | data (`results/`) | evidence | test | verdict |", "|---|---|---|---|---|"]
    for claim in CLAIMS:
        verdict = verdict_of(claim, results)
        data = " + ".join(folders(claim, results)) or "—"
        lines.append(f"| {claim.key} {claim.text} | {data} | {verdict.evidence} | {verdict.test} | "
                     f"**{verdict.verdict}** |")
    return "\n".join(lines)


README = REPO / "README.md"
SCORE_START, SCORE_END = "<!-- scorecards:start -->", "<!-- scorecards:end -->"


def _score_cell(row: pd.Series, kind: str) -> str:
    """A scorecard's median and how many seeds reach the threshold, e.g. ``0.89 (5/10)``."""
    seeds, median, share = int(row["seeds"]), row[f"{kind}_median"], row[f"{kind}_at_or_above"]
    return "—" if pd.isna(median) else f"{median:.2f} ({round(share * seeds)}/{seeds})"


def scorecard_table() -> str:
    """The README's table of the shipped bundles' scorecards: per bundle, task and model, the median score over
    seeds and how many seeds reach the threshold, for learning in range and for generalisation beyond it."""
    lines = ["| bundle | task | model | seeds | learning: median (seeds ≥ threshold) | generalisation: median "
             "(seeds ≥ threshold) |", "|---|---|---|---|---|---|"]
    for folder in sorted(p for p in RESULTS.iterdir() if (p / "scorecard.csv").is_file()):
        card = read_csv(folder / "scorecard.csv")
        for _, row in card.iterrows():
            lines.append(f"| `{folder.name}` | {row['task']} | {row['model']} | {int(row['seeds'])} | "
                         f"{_score_cell(row, 'learning')} | {_score_cell(row, 'generalization')} |")
    threshold = {float(read_csv(p)["threshold"].iloc[0]) for p in RESULTS.glob("*/scorecard.csv")}
    return "\n".join(lines) + f"\n\nThreshold: {', '.join(f'{t:g}' for t in sorted(threshold))}."


LEDGER_START, LEDGER_END = "<!-- ledger:start -->", "<!-- ledger:end -->"


#: an evaluation interval this much longer than the run's median interval (and over PAUSE_MIN_S) is a pause, not
#: training: the run's process was suspended (e.g. while the machine was measured) and the clock ran on
PAUSE_FACTOR, PAUSE_MIN_S = 20, 300


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def active_seconds(wall_s: float, curve: pd.DataFrame) -> tuple[float, bool]:
    """A run's wall time less the pauses its curve shows (an interval between evaluations over PAUSE_FACTOR times
    the median interval and over PAUSE_MIN_S counts as one median interval), and whether it had any."""
    intervals = curve.sort_values("step")["wall_s"].diff().dropna()
    if intervals.empty:
        return wall_s, False
    median = float(intervals.median())
    paused = intervals[intervals > max(PAUSE_FACTOR * median, PAUSE_MIN_S)]
    return wall_s - float(paused.sum()) + median * len(paused), not paused.empty


def ledger_table(results: Path = RESULTS) -> str:
    """The compute ledger: per committed bundle, the runs trained for it and their cost in core-hours (each run's
    wall time less pauses, times its torch threads; manifest.json and curves.csv), its commits and machines. A run a
    bundle reused from another shipped bundle is counted there, not twice."""
    shipped = {p.name: pd.read_json(p / "manifest.json", typ="series")["by_run"]
               for p in results.iterdir() if (p / "manifest.json").is_file()}

    def counted_elsewhere(name: str, run_id: str, run: dict) -> bool:
        """Reused from another shipped bundle that still holds the same run (same id, same commit)."""
        origin = run.get("source", "trained").removeprefix("reused from ")
        held = shipped.get(origin, {}) if origin != name else {}
        return run_id in held and held[run_id].get("commit") == run.get("commit")

    lines = ["| bundle | runs trained | core-hours | median run | commits | machine |", "|---|---|---|---|---|---|"]
    total, total_runs, paused_runs = 0.0, 0, 0
    for name in sorted(shipped):
        runs = shipped[name]
        own = {run_id: r for run_id, r in runs.items() if not counted_elsewhere(name, run_id, r)}
        if not own:
            continue
        curves = read_csv(results / name / "curves.csv")
        seconds = []
        for run_id, r in own.items():
            active, paused = active_seconds(float(r["wall_s"]), curves[curves["run_id"] == run_id])
            seconds.append(active * int(r.get("threads") or 1))
            paused_runs += paused
        machines = sorted({f"{r['cpu']['model']} ({r['cpu'].get('isa', '?')})" if isinstance(r.get("cpu"), dict)
                           else str(r.get("device")) for r in own.values()})
        commits = sorted({str(r.get("commit", "?"))[:7] for r in own.values()})
        others = len(runs) - len(own)
        lines.append(f"| `{name}` | {len(own)}{f' (+{others} reused)' if others else ''} | {sum(seconds) / 3600:.2f} | "
                     f"{_minutes(statistics.median(seconds))} | {', '.join(commits)} | {'; '.join(machines)} |")
        total += sum(seconds)
        total_runs += len(own)
    lines.append(f"| all | {total_runs} | {total / 3600:.1f} | | | |")
    note = (f"\n\n{paused_runs} run(s) were suspended for a while; their pauses (an evaluation interval over "
            f"{PAUSE_FACTOR}× the run's median and over {PAUSE_MIN_S} s) count as one median interval each.")
    return "\n".join(lines) + (note if paused_runs else "")


#: a data table of docs/RESULTS.md: <!-- data:KIND BUNDLE[+BUNDLE...] TASK [seeds=LIST] --> table <!-- data:end -->
DATA_BLOCK = re.compile(r"(<!-- data:(summary|seeds) (\S+) (\S+)(?: seeds=(\S+))? -->\n)(.*?)(<!-- data:end -->)",
                        re.S)


def _bits(value: float) -> str:
    return "—" if pd.isna(value) else "0" if value == 0 else f"{value:.3g}"


def seeds_table(data, task: str) -> list[str]:
    """Wrong bits per sequence at every test size, one row per model and seed (from generalization.csv), with the
    step at which the run converged (runs.csv)."""
    gen = data.gen[data.gen["task"] == task]
    runs = data.runs[(data.runs["task"] == task) & (data.runs["status"] == "done")]
    parts = [column for column in gen.columns if column.startswith("size_")]  # size_L, size_items, ...
    sizes = list(gen.drop_duplicates("size").sort_values(parts or ["size"])["size"])
    lines = ["| model | seed | converged at step | " + " | ".join(sizes) + " |",
             "|---|---|---|" + "---|" * len(sizes)]
    for model in [m for m in data.models if m in set(runs["model"])]:
        for _, run in runs[runs["model"] == model].sort_values("seed").iterrows():
            errors = gen[gen["run_id"] == run["run_id"]].set_index("size")["wrong_bits_per_seq"]
            step = f"{int(run['converge_step']):,}" if truthy(run["converged"]) else "—"
            lines.append(f"| {model} | {int(run['seed'])} | {step} | "
                         + " | ".join(_bits(errors.get(size, float("nan"))) for size in sizes) + " |")
    return lines


def data_table(kind: str, bundles: str, task: str, results: Path = RESULTS, seeds: str | None = None) -> str:
    """The table a data marker names, computed from the committed bundle(s), on `seeds` only if given."""
    names = bundles.split("+")
    missing = [name for name in names if not (results / name / "suite.json").is_file()]
    if missing:
        raise SystemExit(f"{PAGE}: data marker names results/{missing[0]}, which is not a committed bundle")
    data = load_bundles(names, results)
    if seeds is not None:
        try:
            data = only_seeds(data, parse_seeds(seeds, f"{PAGE}: data marker {bundles} {task}"))
        except ConfigError as error:
            raise SystemExit(str(error)) from None
    if task not in data.tasks:
        raise SystemExit(f"{PAGE}: data marker names task '{task}', which results/{bundles} does not have "
                         f"(it has: {', '.join(data.tasks)})")
    lines = summary_markdown_table(summary_table(data, data.tasks[task])) if kind == "summary" \
        else seeds_table(data, task)
    return "\n".join(lines)


def data_blocks(text: str, results: Path = RESULTS) -> str:
    """`text` with every data marker's table recomputed."""
    return DATA_BLOCK.sub(lambda m: f"{m[1]}{data_table(m[2], m[3], m[4], results, m[5])}\n{m[7]}", text)


#: (page, start marker, end marker, the function that computes the block)
BLOCKS = ((PAGE, START, END, lambda: table()), (README, SCORE_START, SCORE_END, scorecard_table),
          (PAGE, LEDGER_START, LEDGER_END, lambda: ledger_table()))


def page_table(page: Path = PAGE, start: str = START, end: str = END) -> str | None:
    text = page.read_text()
    if start not in text or end not in text:
        return None
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true",
                        help="rewrite the tables in docs/RESULTS.md (verdicts) and README.md (scorecards)")
    action.add_argument("--check", action="store_true", help="exit 1 if a page's table is not the data's")
    args = parser.parse_args(argv)
    status = 0
    text = PAGE.read_text()
    computed = data_blocks(text)
    if args.write:
        PAGE.write_text(computed)
    elif args.check and computed != text:
        print(f"{PAGE}: a data table differs from the data; run python scripts/verdicts.py --write", file=sys.stderr)
        status = 1
    for page, start, end, compute in BLOCKS:
        computed = compute()
        if args.write:
            text = page.read_text()
            if start not in text:
                print(f"{page}: no '{start}' marker; add the markers where the table goes", file=sys.stderr)
                return 2
            head, rest = text.split(start, 1)
            page.write_text(f"{head}{start}\n{computed}\n{end}{rest.split(end, 1)[1]}")
        elif args.check:
            if page_table(page, start, end) != computed:
                print(f"{page}: a table differs from the data; run python scripts/verdicts.py --write",
                      file=sys.stderr)
                status = 1
        else:
            print(computed + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
