"""Statistics for the report: medians of right-censored convergence times, bootstrap CIs and rank tests.

A seed that never converged is **right-censored at the step budget**: it counts as `budget` (it needed at least
that many steps). The median is reported only when at least half the seeds converged; with exactly half of an even
number converged, the median rests on a censored value and is a lower bound (`median_is_bound`). Confidence intervals
are 95% percentile bootstraps (`scipy.stats.bootstrap`) of the same statistic on the same censored sample, with a
fixed generator so that a re-render gives the same numbers; they need at least `MIN_SEEDS_FOR_CI` seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_SEEDS_FOR_CI = 3
CONFIDENCE = 0.95
N_RESAMPLES = 4000
BOOTSTRAP_SEED = 20141020


def censor(values: Sequence[float | None], budget: float) -> tuple[np.ndarray, np.ndarray]:
    """(times, observed): unconverged entries (None or NaN) become `budget`, and `observed` marks the others."""
    raw = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    observed = np.isfinite(raw)
    return np.where(observed, raw, float(budget)), observed


def _median(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis)


def _bootstrap(data: tuple[np.ndarray, ...], statistic, paired: bool = False) -> tuple[float, float] | None:
    """A 95% percentile-bootstrap interval, or None when the resampled statistic is undefined."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # degenerate samples (all equal) are fine for the percentile method
        result = stats.bootstrap(data, statistic, n_resamples=N_RESAMPLES, vectorized=True, paired=paired,
                                 confidence_level=CONFIDENCE, method="percentile",
                                 rng=np.random.default_rng(BOOTSTRAP_SEED))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return low, high


@dataclass(frozen=True)
class CensoredMedian:
    """The median time to converge of one model on one task, over its seeds, with a bootstrap CI."""

    n: int                      # seeds with a result (done or diverged)
    n_converged: int
    budget: float
    median: float | None        # None: fewer than half converged ("> budget")
    median_is_bound: bool       # the median rests on a censored seed, so the true median is at least this
    ci: tuple[float, float] | None  # None: fewer than MIN_SEEDS_FOR_CI seeds, or no median
    ci_high_censored: bool      # the upper bound is the budget itself, so the true bound is at least the budget

    @property
    def reason(self) -> str:
        """Why there is no CI, in a few words (empty when there is one)."""
        if self.ci is not None:
            return ""
        if self.n < MIN_SEEDS_FOR_CI:
            return f"n/a (CI needs ≥ {MIN_SEEDS_FOR_CI} seeds)"
        return "n/a"


def censored_median(values: Sequence[float | None], budget: float) -> CensoredMedian:
    """Median of convergence times, unconverged seeds (None/NaN) right-censored at `budget`, with a 95% CI."""
    times, observed = censor(values, budget)
    n, n_converged = len(times), int(observed.sum())
    if n == 0 or 2 * n_converged < n:
        return CensoredMedian(n, n_converged, float(budget), None, False, None, False)
    median = float(np.median(times))
    median_is_bound = n % 2 == 0 and 2 * n_converged == n
    ci = None
    if n >= MIN_SEEDS_FOR_CI:
        ci = _bootstrap((times,), _median)
    ci_high_censored = ci is not None and not observed.all() and ci[1] >= budget
    return CensoredMedian(n, n_converged, float(budget), median, median_is_bound, ci, ci_high_censored)


@dataclass(frozen=True)
class MedianRatio:
    """median(a) / median(b) of two models' censored convergence times, with a bootstrap CI and a rank test."""

    ratio: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    paired: bool
    note: str                   # why something is n/a, or a caveat (censored seeds); empty when all is plain


def compare(a: Sequence[float | None], b: Sequence[float | None], budget_a: float, budget_b: float,
            paired: bool = False) -> MedianRatio:
    """Compare two models' convergence times (None/NaN = unconverged, censored at each one's budget).

    The ratio is shown only when both medians are (at least half of each model's seeds converged); its CI needs
    `MIN_SEEDS_FOR_CI` seeds per model. `paired` resamples seeds jointly (same seeds, same training data). The
    Mann–Whitney U test (two-sided) ranks censored seeds as ties at the budget, which is where they belong: after
    every converged seed.
    """
    ta, oa = censor(a, budget_a)
    tb, ob = censor(b, budget_b)
    notes = []
    p_value = None
    if len(ta) < MIN_SEEDS_FOR_CI or len(tb) < MIN_SEEDS_FOR_CI:
        notes.append(f"test and CI need ≥ {MIN_SEEDS_FOR_CI} seeds each")
    elif not oa.any() and not ob.any():
        notes.append("neither converged")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(stats.mannwhitneyu(ta, tb, alternative="two-sided").pvalue)
        p_value = p if math.isfinite(p) else None
    ma, mb = censored_median(a, budget_a), censored_median(b, budget_b)
    if ma.median is None or mb.median is None:
        if oa.any() or ob.any():
            notes.append("a median is > budget")
        return MedianRatio(None, None, p_value, paired, "; ".join(notes))
    if mb.median == 0:
        return MedianRatio(None, None, p_value, paired, "; ".join([*notes, "the median of B is 0"]))
    ratio = ma.median / mb.median
    ci = None
    if len(ta) >= MIN_SEEDS_FOR_CI and len(tb) >= MIN_SEEDS_FOR_CI:
        paired = paired and len(ta) == len(tb)

        def median_ratio(x, y, axis=-1):
            return np.median(x, axis=axis) / np.median(y, axis=axis)

        ci = _bootstrap((ta, tb), median_ratio, paired=paired)
    else:
        paired = False
    if not (oa.all() and ob.all()):
        notes.append("unconverged seeds counted at the budget")
    if ma.median_is_bound or mb.median_is_bound:
        notes.append("a median rests on a censored seed")
    return MedianRatio(ratio, ci, p_value, paired, "; ".join(notes))


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(25th, 50th, 75th) percentiles of the finite values; NaNs when there are none."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return math.nan, math.nan, math.nan
    q1, q2, q3 = np.percentile(x, [25, 50, 75])
    return float(q1), float(q2), float(q3)
