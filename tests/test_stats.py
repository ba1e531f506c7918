"""The report's statistics on cases small enough to compute by hand: Kaplan–Meier with ties and censoring, the
censored sample (unequal budgets, a diverged run), the KM median's interval and when it is withheld, the permutation
log-rank and Mann–Whitney tests, the Cox hazard ratio's rule, Clopper–Pearson, Fisher and Holm."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test
from scipy import stats as scipy_stats

from bench import stats, survival
from bench.registry import build_task
from bench.report.data import SuiteData, convergence_sample, task_info

# ---- Kaplan–Meier ------------------------------------------------------------------------------------------------


def test_kaplan_meier_with_ties_and_censoring():
    """Times 2, 3, 3, 3+, 5, 6+, 8, 8+ (+: censored). At 3 two converge and one is censored: it is still at risk at
    3, so S(3) = 7/8 · 5/7. By hand: S = 7/8, 5/8, 5/8 · 3/4 = 15/32, 15/32 · 1/2 = 15/64."""
    durations = [2, 3, 3, 3, 5, 6, 8, 8]
    events = [1, 1, 1, 0, 1, 0, 1, 0]
    times, fraction = survival.fraction_converged(durations, events)
    assert times.tolist() == [0, 2, 3, 5, 6, 8]
    assert fraction == pytest.approx([0, 1 / 8, 3 / 8, 17 / 32, 17 / 32, 49 / 64])
    summary = survival.km_median(durations, events)
    assert (summary.n, summary.n_events, summary.median, summary.followed) == (8, 5, 5, 8)


def test_a_median_that_is_never_reached():
    summary = survival.km_median([100, 200, 1000, 1000, 1000], [1, 1, 0, 0, 0])
    assert summary.median is None and summary.followed == 1000  # the cell says "> 1,000"


def test_no_interval_below_the_declared_number_of_seeds():
    summary = survival.km_median([100, 200, 300], [1, 1, 1])
    assert summary.median == 200 and summary.ci is None
    assert summary.reason == "n = 3: no interval"
    assert survival.hazard_ratio(([1, 2, 3], [1, 1, 1]), ([4, 5, 6], [1, 1, 1])).reason == "n = 3: no interval"


def _log_log_band(durations, events):
    """The KM's pointwise band on the log(−log) scale with Greenwood's variance, by hand: (times, lower, upper)."""
    z = scipy_stats.norm.ppf(0.975)
    durations, events = np.asarray(durations, float), np.asarray(events, bool)
    s, greenwood, rows = 1.0, 0.0, []
    for t in np.unique(durations[events]):
        n, d = np.sum(durations >= t), np.sum((durations == t) & events)
        s *= 1 - d / n
        greenwood += d / (n * (n - d)) if n > d else math.inf
        se = math.sqrt(greenwood) / abs(math.log(s)) if 0 < s < 1 else math.inf
        lower = s ** math.exp(z * se) if 0 < s < 1 else 0.0
        upper = s ** math.exp(-z * se) if 0 < s < 1 else 0.0
        rows.append((t, lower, upper))
    return rows


def test_the_median_interval_is_the_inverted_log_log_band():
    durations = [1, 2, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10]
    events = [1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0]
    band = _log_log_band(durations, events)
    low = next(t for t, lower, _ in band if lower <= 0.5)    # where the band's lower edge first reaches one half
    high = next(t for t, _, upper in band if upper <= 0.5)
    summary = survival.km_median(durations, events)
    assert summary.ci == (low, high)
    assert summary.reason == ""


def test_an_interval_open_above():
    """Five of ten converge by 5, the rest are censored at 10: the median is 5 (S reaches exactly one half there),
    but the band's upper edge never falls to one half, so the interval is [a, > 10]."""
    summary = survival.km_median([1, 2, 3, 4, 5] + [10] * 5, [1] * 5 + [0] * 5)
    assert summary.median == 5
    low, high = summary.ci
    assert low <= 5 and high is None and summary.followed == 10


# ---- the censored sample ------------------------------------------------------------------------------------------


def _suite(tmp_path: Path, rows: list[dict], budgets: dict[str, int], batch: int) -> SuiteData:
    runs = pd.DataFrame(rows)
    specs = {run_id: {"train": {"steps": steps, "batch_size": batch}} for run_id, steps in budgets.items()}
    task = task_info("copy", {"type": "copy", **build_task("copy").facts()})
    return SuiteData(tmp_path, {"steps": max(budgets.values()), "batch_size": batch}, runs, pd.DataFrame(),
                     pd.DataFrame(), specs, {"copy": task}, ["ntm"], {"ntm": "#000000"})


def _run(run_id, seed, status, steps, converge_step=None):
    return {"task": "copy", "model": "ntm", "seed": seed, "run_id": run_id, "status": status,
            "converged": converge_step is not None, "converge_step": converge_step,
            "converge_sequences": None if converge_step is None else converge_step * 10, "steps": steps}


def test_each_run_is_censored_at_its_own_budget_and_a_diverged_run_where_it_diverged(tmp_path):
    """Budgets 1,000 and 2,000 steps (batch 10), one run converging at 1,500, one diverging at step 300, one failed.
    Censored at their own budgets and the divergence step, two runs remain at risk at 15,000 sequences and one
    converges: S = 1/2, the median is 15,000. Censored at the largest budget instead, three would be at risk
    (S = 2/3: no median)."""
    rows = [_run("a", 1, "done", 1000), _run("b", 2, "done", 2000), _run("c", 3, "done", 1500, 1500),
            _run("d", 4, "diverged", 300), _run("e", 5, "failed", 50)]
    data = _suite(tmp_path, rows, {"a": 1000, "b": 2000, "c": 2000, "d": 2000, "e": 2000}, batch=10)
    sample = convergence_sample(data, "copy", "ntm")
    assert sample.seeds == [1, 2, 3, 4]                       # the failed run says nothing
    assert sample.sequences == [10_000, 20_000, 15_000, 3_000]
    assert sample.steps == [1000, 2000, 1500, 300]
    assert sample.converged == [False, False, True, False]
    assert sample.statuses == ["done", "done", "done", "diverged"]
    assert survival.km_median(*sample.survival()).median == 15_000
    assert survival.km_median([20_000, 20_000, 15_000, 20_000], sample.converged).median is None  # the old way


# ---- the log-rank test as a permutation test ----------------------------------------------------------------------


def test_exact_logrank_of_three_against_three():
    """3 vs 3, all converged, every A before every B: the two most extreme of the C(6, 3) = 20 splits (either group
    entirely first) give p = 2/20, the smallest this design allows."""
    result = survival.logrank(([1, 2, 3], [1, 1, 1]), ([4, 5, 6], [1, 1, 1]))
    assert result.p_value == pytest.approx(0.1) and result.min_p == pytest.approx(0.1)
    assert result.exact and result.design.count == 20 and not result.paired
    assert result.statistic == pytest.approx(logrank_test([1, 2, 3], [4, 5, 6]).test_statistic)
    assert "exact: all 20 relabellings" in result.method


def test_paired_logrank_swaps_within_seeds():
    """Paired by seed, 3 pairs: 2^3 = 8 relabellings; A first in every pair is the most extreme: p = 2/8."""
    result = survival.logrank(([1, 2, 3], [1, 1, 1]), ([4, 5, 6], [1, 1, 1]), paired=True)
    assert result.p_value == pytest.approx(0.25) and result.design.count == 8 and result.paired
    assert "within each seed's pair" in result.method


def test_logrank_with_no_event_is_no_test():
    assert survival.logrank(([5, 5], [0, 0]), ([5, 5], [0, 0])) is None


def test_vectorised_logrank_is_lifelines():
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(4, 14))
        durations = rng.integers(1, 7, n).astype(float)  # many ties
        events = rng.random(n) < 0.7
        events[0] = True
        labels = rng.random((6, n)) < 0.5
        labels[:, 0], labels[:, 1] = True, False
        ours = survival.logrank_statistics(durations, events, labels)
        theirs = [logrank_test(durations[g], durations[~g], events[g], events[~g]).test_statistic for g in labels]
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_large_designs_fall_back_to_monte_carlo_with_a_fixed_generator():
    a, b = list(range(1, 13)), list(range(7, 19))
    first = survival.logrank((a, [1] * 12), (b, [1] * 12))
    assert not first.exact and first.design.count == math.comb(24, 12)
    assert len(first.design.labels) == stats.MONTE_CARLO_DRAWS and "Monte Carlo" in first.method
    assert survival.logrank((a, [1] * 12), (b, [1] * 12)).p_value == first.p_value  # the same draws each time
    assert 0 < first.p_value < 0.05


# ---- hazard ratio -------------------------------------------------------------------------------------------------


def test_hazard_ratio_rules():
    fast = ([float(t) for t in range(1, 11)], [1] * 10)
    slow = ([float(t) + 3.5 for t in range(1, 11)], [1] * 9 + [0])
    result = survival.hazard_ratio(fast, slow)
    assert result.ratio > 1 and result.ci[0] < result.ratio < result.ci[1]   # A converges sooner
    # stratified by seed, each seed its own stratum: A first in every pair is complete separation, no finite ratio
    separated = survival.hazard_ratio(fast, slow, seeds=list(range(10)))
    assert separated.ratio is None and "did not converge" in separated.reason
    mixed = ([t + (1.5 if t % 2 else -1.5) for t in fast[0]], [1] * 10)   # A first in half the pairs
    paired = survival.hazard_ratio(fast, mixed, seeds=list(range(10)))
    assert paired.ratio == pytest.approx(1.0) and paired.ci[0] < 1 < paired.ci[1]   # by symmetry
    none = survival.hazard_ratio(fast, ([20.0] * 10, [0] * 10))
    assert none.ratio is None and "no converged run" in none.reason


# ---- exact tests and intervals on counts, ranks and many comparisons -------------------------------------------


def test_clopper_pearson_known_values():
    low, high = stats.clopper_pearson(5, 10)
    assert (round(low, 3), round(high, 3)) == (0.187, 0.813)
    assert stats.clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))  # 0/n: [0, 1 − (α/2)^(1/n)]
    assert stats.clopper_pearson(0, 0) is None


def test_fisher_known_value():
    # 5/10 against 0/10: two-sided p = 2 · C(10,5)·C(10,0)/C(20,5) = 2 · 252/15504
    assert stats.fisher_exact(5, 10, 0, 10) == pytest.approx(2 * 252 / 15504)
    assert round(stats.fisher_exact(5, 10, 0, 10), 4) == 0.0325
    assert stats.fisher_exact(0, 10, 0, 10) == 1.0
    assert stats.fisher_exact(1, 0, 0, 3) is None


def test_holm_known_list():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> kept monotone: 0.06
    assert stats.holm([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]
    assert stats.holm([]) == []


def test_mann_whitney_is_scipys_exact_permutation_test():
    a, b = [1.0, 2.0, 2.0, 5.0, 7.0], [2.0, 3.0, 6.0, 8.0, 9.0, 9.0]  # ties: mannwhitneyu(method="exact") is wrong
    ours = stats.mann_whitney(a, b)
    theirs = scipy_stats.permutation_test(   # two-sided as |U − n_a n_b / 2|, as ours
        (a, b), lambda x, y: abs(scipy_stats.mannwhitneyu(x, y).statistic - len(x) * len(y) / 2),
        permutation_type="independent", n_resamples=np.inf, alternative="greater")
    assert ours.p_value == pytest.approx(theirs.pvalue) and ours.exact
    full = stats.mann_whitney([1, 2, 3], [4, 5, 6])
    assert full.p_value == pytest.approx(0.1)                 # 2 of 20
    paired = stats.mann_whitney([1, 2, 3], [4, 5, 6], paired=True)
    assert paired.p_value == pytest.approx(0.25) and paired.design.count == 8
    assert stats.mann_whitney([], [1.0]) is None


def test_quartiles():
    assert stats.quartiles([1, 2, 3, 4, 5]) == (2, 3, 4)
    assert all(math.isnan(v) for v in stats.quartiles([float("nan")]))
