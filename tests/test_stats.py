"""The report's statistics: censored medians, bootstrap CIs, median ratios and the rank test, on known data."""

from __future__ import annotations

import math

import pytest

from bench import stats


def test_censor_marks_unconverged_seeds_at_the_budget():
    times, observed = stats.censor([10, None, float("nan"), 30], budget=100)
    assert times.tolist() == [10, 100, 100, 30]
    assert observed.tolist() == [True, False, False, True]


def test_median_and_ci_of_a_fixed_sample():
    summary = stats.censored_median([1, 2, 3, 4, 5, 6, 7, 8, 9], budget=100)
    assert summary.median == 5
    assert (summary.n, summary.n_converged) == (9, 9)
    assert not summary.median_is_bound
    low, high = summary.ci
    assert 1 <= low <= 5 <= high <= 9
    assert high - low < 8  # narrower than the whole range
    assert not summary.ci_high_censored
    assert stats.censored_median([1, 2, 3, 4, 5, 6, 7, 8, 9], budget=100).ci == summary.ci  # a fixed generator


def test_censored_seeds_count_at_the_budget():
    summary = stats.censored_median([100, 200, 300, None, None], budget=1000)
    assert summary.median == 300
    assert summary.n_converged == 3
    assert summary.ci[1] == 1000 and summary.ci_high_censored  # the upper bound is "at least the budget"
    assert summary.ci[0] >= 100


def test_fewer_than_half_converged_has_no_median():
    summary = stats.censored_median([100, 200, None, None, None], budget=1000)
    assert summary.median is None and summary.ci is None
    assert summary.n_converged == 2


def test_exactly_half_converged_gives_a_lower_bound():
    summary = stats.censored_median([100, 200, None, None], budget=1000)
    assert summary.median == 600  # (200 + 1000) / 2: the true median is at least this
    assert summary.median_is_bound


def test_a_ci_needs_three_seeds():
    summary = stats.censored_median([100, 200], budget=1000)
    assert summary.median == 150
    assert summary.ci is None
    assert "3 seeds" in summary.reason


def test_no_seeds():
    summary = stats.censored_median([], budget=1000)
    assert summary.median is None and summary.n == 0


def test_ratio_of_medians_with_ci_and_rank_test():
    fast = [100, 110, 120, 130, 140]
    slow = [200, 220, 240, 260, 280]
    result = stats.compare(fast, slow, 1000, 1000, paired=True)
    assert result.ratio == pytest.approx(0.5)
    low, high = result.ci
    assert low <= 0.5 <= high < 1
    assert result.paired
    assert result.p_value == pytest.approx(2 / 252)  # exact two-sided p of two fully separated samples of 5
    assert result.note == ""


def test_ratio_with_censored_seeds_is_flagged():
    result = stats.compare([100, 120, 140, None], [300, 320, 340, 360], 1000, 1000)
    assert result.ratio == pytest.approx(130 / 330)
    assert "budget" in result.note


def test_ratio_is_na_when_a_median_is_over_the_budget():
    result = stats.compare([100, 120, 140], [None, None, 900], 1000, 1000)
    assert result.ratio is None and result.ci is None
    assert result.p_value is not None and result.p_value < 0.2  # the rank test still says something
    assert "budget" in result.note


def test_neither_converged():
    result = stats.compare([None] * 4, [None] * 4, 1000, 1000)
    assert result.ratio is None and result.p_value is None
    assert "neither" in result.note


def test_too_few_seeds_for_a_test():
    result = stats.compare([100, 200], [300, 400], 1000, 1000, paired=True)
    assert result.ratio == pytest.approx(150 / 350)
    assert result.ci is None and result.p_value is None
    assert not result.paired
    assert "seeds" in result.note


def test_uncensored_comparison_of_final_errors():
    result = stats.compare([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], math.inf, math.inf)
    assert result.ratio == pytest.approx(0.5)
    assert result.note == ""


def test_zero_median_denominator_is_na():
    result = stats.compare([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], math.inf, math.inf)
    assert result.ratio is None


def test_quartiles():
    assert stats.quartiles([1, 2, 3, 4, 5]) == (2, 3, 4)
    assert all(math.isnan(v) for v in stats.quartiles([float("nan")]))
