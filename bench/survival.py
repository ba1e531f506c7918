"""Convergence speed as survival analysis, with lifelines: a run "survives" until it converges. Its duration is what
it trained until then (sequences seen, or steps), and a run that never converged is right-censored at what it
actually trained: its own budget, or the step it diverged at.

- `km_median`: the Kaplan–Meier median and its interval, lifelines' ``median_survival_times`` of the KM's pointwise
  95 % band (lifelines' "exponential Greenwood" band, i.e. on the log(−log) scale), inverted at 0.5: the
  Brookmeyer–Crowley-type interval. It is given only from MIN_SEEDS_FOR_INTERVAL runs.
- `logrank`: the log-rank test as an exact permutation test (`bench.stats.relabellings`): unpaired, every split of
  the pooled runs; paired (both models ran the same seeds, and seed k gives every model the same data stream), every
  swap of labels within a seed's pair, which stratifies it by seed. lifelines has no stratified log-rank, and its χ²
  p-value is asymptotic, which at 3 seeds a model it is not.
- `hazard_ratio`: a Cox model (lifelines ``CoxPHFitter``; Efron's ties; stratified by seed when paired) with a 95 % Wald
  interval, from MIN_SEEDS_FOR_INTERVAL runs a model, both with a converged run.

Nothing here imports lifelines' plotting (which would load matplotlib).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning
from lifelines.statistics import logrank_test
from lifelines.utils import median_survival_times

from bench.stats import CONFIDENCE, PermutationTest, permutation_test, relabellings

#: The fewest runs (seeds) a model needs before the report prints a KM median's interval or a hazard ratio's. Both
#: are asymptotic: Greenwood's variance on the log(−log) scale, and a Wald interval from the Cox partial likelihood.
#: Below about ten runs one seed moves the KM curve by 10 % or more, so the band inverted at 0.5 jumps by whole seeds
#: and its coverage is not the 95 % it would be labelled (at 3 seeds the band at the median spans nearly [0, 1]).
#: Ten is a declared convention, not a derived bound; under it the cell says "n = 3: no interval".
MIN_SEEDS_FOR_INTERVAL = 10

KM_MEDIAN_METHOD = ("Kaplan–Meier median; 95 % interval: the KM's pointwise log(−log) band inverted at 0.5 "
                    f"(Brookmeyer–Crowley type, asymptotic), given from n ≥ {MIN_SEEDS_FOR_INTERVAL} runs")
COX_METHOD = ("hazard ratio of converging, A : B, from a Cox proportional-hazards model (lifelines, Efron ties; "
              "stratified by seed when paired); 95 % Wald interval (asymptotic), given from "
              f"n ≥ {MIN_SEEDS_FOR_INTERVAL} runs a model with a converged run in each")


def no_interval(n: int) -> str:
    return f"n = {n}: no interval"


def kaplan_meier(durations: Sequence[float], events: Sequence[bool]) -> KaplanMeierFitter:
    """lifelines' Kaplan–Meier fit (pointwise 95 % band on the log(−log) scale)."""
    return KaplanMeierFitter(alpha=1 - CONFIDENCE).fit(np.asarray(durations, dtype=float),
                                                       np.asarray(events, dtype=bool))


def fraction_converged(durations: Sequence[float], events: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(times, 1 − S(t)): the KM estimate of the fraction converged as a step function starting at (0, 0)."""
    if not len(durations):
        return np.zeros(1), np.zeros(1)
    km = kaplan_meier(durations, events)
    curve = km.survival_function_.iloc[:, 0]
    return curve.index.to_numpy(dtype=float), 1 - curve.to_numpy(dtype=float)


@dataclass(frozen=True)
class KMMedian:
    """One model's KM median time to converge on one task, with its interval where one is credible."""

    n: int                      # runs with a result (done or diverged)
    n_events: int               # of them converged
    median: float | None        # None: the KM curve never falls to 0.5 (the median is past `followed`)
    followed: float             # the longest any run was followed (converged or censored)
    ci: tuple[float, float | None] | None   # (low, high); high None: open above (the band never reaches 0.5)
    reason: str                 # why there is no interval; empty when there is one


def km_median(durations: Sequence[float], events: Sequence[bool]) -> KMMedian:
    """The KM median of `durations` (`events`: converged) and its interval (`KM_MEDIAN_METHOD`)."""
    n, n_events = len(durations), int(np.sum(np.asarray(events, dtype=bool)))
    if n == 0:
        return KMMedian(0, 0, None, 0.0, None, "no runs")
    km = kaplan_meier(durations, events)
    followed = float(np.max(durations))
    median = float(km.median_survival_time_)
    median = median if math.isfinite(median) else None
    if n < MIN_SEEDS_FOR_INTERVAL:
        return KMMedian(n, n_events, median, followed, None, no_interval(n))
    bounds = median_survival_times(km.confidence_interval_).iloc[0]
    low, high = float(bounds.iloc[0]), float(bounds.iloc[1])
    if not math.isfinite(low):
        return KMMedian(n, n_events, median, followed, None, "no interval: the band never falls to 0.5")
    return KMMedian(n, n_events, median, followed, (low, high if math.isfinite(high) else None), "")


def logrank_statistics(durations: np.ndarray, events: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The two-group log-rank χ² statistic, (O_A − E_A)² / V, for each row of `labels` (True: group A), vectorised.
    It is lifelines' ``logrank_test(...).test_statistic`` for the same split (tests/test_stats.py checks it);
    recomputing it here lets a permutation test run 200,000 relabellings in under a second, where one lifelines
    call takes about 10 ms."""
    z, v = _observed_minus_expected(durations, events, labels)
    return np.divide(z ** 2, v, out=np.zeros_like(z), where=v > 1e-12)


def _observed_minus_expected(durations: np.ndarray, events: np.ndarray,
                             labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `labels`: group A's observed minus expected events, O_A − E_A, and its variance V."""
    times = np.unique(durations[events])
    at_risk = (durations[:, None] >= times[None, :]).astype(float)              # (n, T)
    died = ((durations[:, None] == times[None, :]) & events[:, None]).astype(float)
    n_t, d_t = at_risk.sum(axis=0), died.sum(axis=0)
    g = labels.astype(float)
    n_a, d_a = g @ at_risk, g @ died                                              # (m, T)
    expected = n_a * d_t / n_t
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.where(n_t > 1, n_a * (n_t - n_a) * d_t * (n_t - d_t) / (n_t ** 2 * (n_t - 1)), 0.0)
    return (d_a - expected).sum(axis=1), variance.sum(axis=1)


def sooner(a: tuple[Sequence[float], Sequence[bool]], b: tuple[Sequence[float], Sequence[bool]]) -> int:
    """Which of A's and B's (durations, converged) converges sooner in the log-rank sense: 1 when A has more events
    than expected under no difference (O_A > E_A), −1 when fewer, 0 when neither (or no event)."""
    durations = np.concatenate([np.asarray(a[0], dtype=float), np.asarray(b[0], dtype=float)])
    events = np.concatenate([np.asarray(a[1], dtype=bool), np.asarray(b[1], dtype=bool)])
    if not events.any():
        return 0
    labels = (np.arange(len(durations)) < len(a[0]))[None, :]
    z = float(_observed_minus_expected(durations, events, labels)[0][0])
    return 0 if abs(z) < 1e-12 else 1 if z > 0 else -1


def logrank(a: tuple[Sequence[float], Sequence[bool]], b: tuple[Sequence[float], Sequence[bool]],
            paired: bool = False) -> PermutationTest | None:
    """Two-sided log-rank test of A's and B's (durations, converged) as a permutation test over the relabellings of
    the design (`paired`: a's i-th and b's i-th run share a seed). The observed statistic is lifelines'
    ``logrank_test``. None when a group is empty or no run converged."""
    (dur_a, ev_a), (dur_b, ev_b) = a, b
    if not len(dur_a) or not len(dur_b) or not (np.any(ev_a) or np.any(ev_b)):
        return None
    durations = np.concatenate([np.asarray(dur_a, dtype=float), np.asarray(dur_b, dtype=float)])
    events = np.concatenate([np.asarray(ev_a, dtype=bool), np.asarray(ev_b, dtype=bool)])
    design = relabellings(len(dur_a), len(dur_b), paired)
    observed = float(logrank_test(durations[:len(dur_a)], durations[len(dur_a):], events[:len(dur_a)],
                                  events[len(dur_a):]).test_statistic)
    return permutation_test(observed, logrank_statistics(durations, events, design.labels), design, "log-rank")


@dataclass(frozen=True)
class HazardRatio:
    """A : B hazard ratio of converging (above 1: A converges sooner) with its 95 % Wald interval, or why not."""

    ratio: float | None
    ci: tuple[float, float] | None
    reason: str                 # why there is none; empty when there is one


def hazard_ratio(a: tuple[Sequence[float], Sequence[bool]], b: tuple[Sequence[float], Sequence[bool]],
                 seeds: Sequence[int] | None = None) -> HazardRatio:
    """The Cox hazard ratio A : B (`COX_METHOD`), stratified by seed when `seeds` (the pairs' seeds, in the order of
    both groups' runs) is given. Only from MIN_SEEDS_FOR_INTERVAL runs a model with a converged run in each."""
    (dur_a, ev_a), (dur_b, ev_b) = a, b
    smallest = min(len(dur_a), len(dur_b))
    if smallest < MIN_SEEDS_FOR_INTERVAL:
        return HazardRatio(None, None, no_interval(smallest))
    if not np.any(ev_a) or not np.any(ev_b):
        return HazardRatio(None, None, "no interval: a model has no converged run")
    frame = pd.DataFrame({"duration": np.concatenate([dur_a, dur_b]).astype(float),
                          "event": np.concatenate([ev_a, ev_b]).astype(bool),
                          "group": [1] * len(dur_a) + [0] * len(dur_b)})
    if seeds is not None:
        frame["seed"] = list(seeds) * 2
    fitter = CoxPHFitter(alpha=1 - CONFIDENCE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            fitter.fit(frame, "duration", "event", strata=["seed"] if seeds is not None else None)
    except (ConvergenceError, ConvergenceWarning, np.linalg.LinAlgError) as error:
        return HazardRatio(None, None, "no interval: the Cox fit did not converge (separation: one model converges "
                                       f"first in every pair or every run; lifelines: {type(error).__name__})")
    ratio = float(np.exp(fitter.params_["group"]))
    low, high = (float(v) for v in np.exp(fitter.confidence_intervals_.loc["group"]))
    if not all(math.isfinite(v) and 0 < v for v in (ratio, low, high)):
        return HazardRatio(None, None, "no interval: the Cox fit diverged (one model always converges first)")
    return HazardRatio(ratio, (low, high), "")
