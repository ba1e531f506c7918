"""Statistics for the report that need no survival model: exact binomial intervals, Fisher's exact test, exact
permutation tests (the designs and a Mann–Whitney test on them), Holm's correction, quartiles.

Every interval and test names its method (the ``*_METHOD`` strings), so the report can say which one each number
comes from. Nothing here is a bootstrap: with the handful of seeds a benchmark runs, a percentile bootstrap of a
median is [min, max] of three values and covers 75 %, not the 95 % it would be labelled. The survival side
(Kaplan–Meier, log-rank, Cox) is `bench.survival`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
#: a permutation test enumerates every relabelling its design allows up to this many (the statistics are vectorised,
#: so 200,000 relabellings of 20 runs take well under a second); past it, MONTE_CARLO_DRAWS random ones
MAX_EXACT_RELABELLINGS = 200_000
MONTE_CARLO_DRAWS = 20_000
PERMUTATION_SEED = 20141020     # a fixed generator: a re-render gives the same p-values

CLOPPER_PEARSON_METHOD = "Clopper–Pearson exact 95 % interval (coverage at least 95 % at every n)"
FISHER_METHOD = "Fisher's exact test, two-sided"
MANN_WHITNEY_METHOD = "Mann–Whitney U as an exact permutation test, two-sided (midranks for ties)"
HOLM_METHOD = "Holm's step-down correction across the pairs of this table"


def clopper_pearson(k: int, n: int) -> tuple[float, float] | None:
    """The exact 95 % interval of a proportion k/n (scipy's ``binomtest(...).proportion_ci(method="exact")``);
    None when n is 0."""
    if n <= 0:
        return None
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return float(ci.low), float(ci.high)


def fisher_exact(k_a: int, n_a: int, k_b: int, n_b: int) -> float | None:
    """Two-sided p of Fisher's exact test that k_a/n_a and k_b/n_b share one proportion; None without runs."""
    if n_a <= 0 or n_b <= 0:
        return None
    table = [[int(k_a), int(n_a - k_a)], [int(k_b), int(n_b - k_b)]]
    return float(stats.fisher_exact(table, alternative="two-sided").pvalue)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input's order; None entries (no test) are skipped and do not count."""
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The distribution-free interval of a median from order statistics: the j-th and k-th smallest values, j and k
    symmetric and the narrowest whose binomial(n, 1/2) coverage is at least `confidence`. None when even the sample's
    minimum and maximum cover less (n < 6 at 95 %)."""
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    if n == 0:
        return None
    best = None
    for j in range(1, n // 2 + 1):  # ranks j and n + 1 - j, 1-based
        coverage = float(stats.binom.cdf(n - j, n, 0.5) - stats.binom.cdf(j - 1, n, 0.5))
        if coverage < confidence:
            break
        best = (ordered[j - 1], ordered[n - j])
    return best


@dataclass(frozen=True)
class Relabellings:
    """The relabellings a two-group permutation test considers, as rows of a (m, n_a + n_b) boolean matrix
    (True: group A). The runs are ordered A's then B's; in a paired design A's i-th and B's i-th are one pair (the
    same seed). Unpaired: any n_a of the pooled runs may be A. Paired: each pair's two labels may swap."""

    labels: np.ndarray
    exact: bool      # every relabelling the design allows (the observed one among them), else random draws
    count: int       # how many relabellings the design allows
    paired: bool
    n_a: int

    @property
    def observed(self) -> np.ndarray:
        return np.arange(self.labels.shape[1]) < self.n_a

    def describe(self) -> str:
        design = "labels swapped within each seed's pair" if self.paired else "runs pooled and split"
        if self.exact:
            return f"exact: all {self.count:,} relabellings ({design})"
        return (f"Monte Carlo: {len(self.labels):,} random relabellings of {self.count:,} ({design}; "
                f"generator seed {PERMUTATION_SEED})")


def relabellings(n_a: int, n_b: int, paired: bool) -> Relabellings:
    """Every relabelling of the design when there are at most MAX_EXACT_RELABELLINGS, else MONTE_CARLO_DRAWS random
    ones from a fixed generator."""
    n = n_a + n_b
    if paired:
        if n_a != n_b:
            raise ValueError("a paired design needs as many runs in each group")
        count = 2 ** n_a
    else:
        count = math.comb(n, n_a)
    if count <= MAX_EXACT_RELABELLINGS:
        if paired:
            swaps = (np.arange(count)[:, None] >> np.arange(n_a)[None, :]) & 1
        else:
            labels = np.zeros((count, n), dtype=bool)
            for row, chosen in enumerate(itertools.combinations(range(n), n_a)):
                labels[row, list(chosen)] = True
            return Relabellings(labels, True, count, False, n_a)
    else:
        rng = np.random.default_rng(PERMUTATION_SEED)
        if paired:
            swaps = rng.integers(0, 2, size=(MONTE_CARLO_DRAWS, n_a))
        else:
            ranks = np.argsort(rng.random((MONTE_CARLO_DRAWS, n)), axis=1)
            return Relabellings(ranks < n_a, False, count, False, n_a)
    swaps = swaps.astype(bool)  # paired: A's i-th run keeps its label unless swapped with B's i-th
    return Relabellings(np.concatenate([~swaps, swaps], axis=1), count <= MAX_EXACT_RELABELLINGS, count, True, n_a)


@dataclass(frozen=True)
class PermutationTest:
    """A two-sided permutation test's result: the observed statistic, its p-value and how it was reached."""

    statistic: float
    p_value: float
    min_p: float            # the smallest p this design can give (exact designs; 1/(draws + 1) for Monte Carlo)
    design: Relabellings
    test: str               # the test's name, e.g. "log-rank"

    @property
    def exact(self) -> bool:
        return self.design.exact

    @property
    def paired(self) -> bool:
        return self.design.paired

    @property
    def method(self) -> str:
        return f"{self.test} as a permutation test, two-sided; {self.design.describe()}"


def permutation_test(observed: float, statistics: np.ndarray, design: Relabellings, test: str) -> PermutationTest:
    """p = the share of relabellings whose statistic is at least the observed one (a larger statistic is more
    extreme). Exact designs count the observed labelling among their rows; Monte Carlo adds it: (1 + k)/(1 + m)."""
    tolerance = 1e-9 * max(1.0, abs(observed))
    extreme = int(np.count_nonzero(statistics >= observed - tolerance))
    if design.exact:
        p = extreme / len(statistics)
        top = float(statistics.max())
        min_p = int(np.count_nonzero(statistics >= top - 1e-9 * max(1.0, abs(top)))) / len(statistics)
    else:
        p = (1 + extreme) / (1 + len(statistics))
        min_p = 1 / (1 + len(statistics))
    return PermutationTest(float(observed), min(1.0, p), min_p, design, test)


def mann_whitney(a: Sequence[float], b: Sequence[float], paired: bool = False) -> PermutationTest | None:
    """Two-sided Mann–Whitney U as an exact permutation test (statistic |U_A − n_a n_b / 2| on midranks, so ties are
    exact too), over the relabellings of the design (`paired`: a[i] and b[i] are one seed's pair). None when a group
    is empty."""
    x = np.concatenate([np.asarray(a, dtype=float), np.asarray(b, dtype=float)])
    n_a, n_b = len(a), len(b)
    if not n_a or not n_b:
        return None
    ranks = stats.rankdata(x)
    design = relabellings(n_a, n_b, paired)

    def statistic(labels: np.ndarray) -> np.ndarray:
        u_a = labels.astype(float) @ ranks - n_a * (n_a + 1) / 2
        return np.abs(u_a - n_a * n_b / 2)

    observed = float(statistic(design.observed[None, :])[0])
    return permutation_test(observed, statistic(design.labels), design, "Mann–Whitney U")


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(25th, 50th, 75th) percentiles of the finite values; NaNs when there are none."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return math.nan, math.nan, math.nan
    q1, q2, q3 = np.percentile(x, [25, 50, 75])
    return float(q1), float(q2), float(q3)
