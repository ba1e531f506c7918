"""The power calculations behind the designs that docs/RESULTS.md declares, by simulation from pilot data.

    python scripts/power.py recall      claims (c)/(f): paired permutation log-rank, NTM against an LSTM
    python scripts/power.py init        claim (d): constant M0 against the next best arm, 20-150 seeds an arm

Each prints the share of simulated studies in which the declared test reaches p < 0.05 (Holm's first step, 0.025,
for the init study's two comparisons) in the claimed direction. The random draws have fixed seeds, so the numbers
are reproducible; they are estimates, with the binomial error of their number of simulated studies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines.statistics import logrank_test

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.survival import logrank  # noqa: E402

BUDGET = 10_000   # steps
BATCH = 32


def recall(studies_10: int = 200, studies_20: int = 100) -> None:
    """Pilot: 1 of 3 NTM seeds converged on Associative Recall in 10,000 steps, 0 of 3 LSTM seeds. The NTM converges
    with probability p_a at a step drawn uniformly from the evaluations 2,000-10,000; the LSTM with p_b."""
    rng = np.random.default_rng(7)

    def power(n: int, p_a: float, p_b: float, studies: int) -> float:
        hits = 0
        for _ in range(studies):
            ca, cb = rng.random(n) < p_a, rng.random(n) < p_b
            ta = np.where(ca, rng.integers(10, 50, n) * 200, BUDGET) * float(BATCH)
            tb = np.where(cb, rng.integers(10, 50, n) * 200, BUDGET) * float(BATCH)
            result = logrank((ta, ca), (tb, cb), paired=True)
            hits += result is not None and result.p_value < 0.05 and ca.sum() > cb.sum()
        return hits / studies

    for n in (10, 20):
        for p_a, p_b in ((1 / 3, 0.0), (1 / 3, 0.1), (0.5, 0.0), (2 / 3, 0.0)):
            studies = studies_10 if n == 10 else studies_20
            print(f"{n} seeds an arm, NTM converging {p_a:.2f}, LSTM {p_b:.2f}: power "
                  f"{power(n, p_a, p_b, studies):.2f} ({studies} simulated studies)")


def init(studies: int = 2000) -> None:
    """Pilot: results/paper_copy_fresh (the fixed-constant NTM, seeds 101-120, 10,000 steps). The constant arm's
    time to converge is drawn from the pilot's (converged with its rate, at one of its observed steps); another arm
    with hazard ratio HR (constant : other) has the pilot's survival raised to 1/HR."""
    runs = pd.read_csv(REPO / "results" / "paper_copy_fresh" / "runs.csv")
    steps = np.sort(runs.loc[runs["converged"].astype(str) == "True", "converge_step"].to_numpy(float))
    rate = len(steps) / len(runs)
    survival = 1 - rate * np.arange(1, len(steps) + 1) / len(steps)   # the pilot's KM just after each event
    print(f"pilot: {len(steps)} of {len(runs)} seeds converged within {BUDGET:,} steps")
    rng = np.random.default_rng(26)

    def constant(n: int):
        event = rng.random(n) < rate
        return np.where(event, rng.choice(steps, n), BUDGET), event

    def other(n: int, hr: float):
        curve = survival ** (1 / hr)
        u = rng.random(n)
        below = curve[None, :] < u[:, None]                 # [n, events]: has the arm converged by each step?
        event = below.any(axis=1)
        return np.where(event, steps[np.argmax(below, axis=1)], BUDGET), event

    for n, hr, count in ((20, 2, studies), (30, 2, studies), (40, 2, studies), (20, 3, studies), (30, 3, studies),
                         (40, 3, studies), (100, 2, studies // 4), (150, 2, studies // 4)):
        hits = 0
        for _ in range(count):
            (tc, ec), (to, eo) = constant(n), other(n, hr)
            hits += logrank_test(tc, to, ec, eo).p_value < 0.025 and ec.sum() > eo.sum()
        print(f"{n} seeds an arm, hazard ratio {hr}: power {hits / count:.2f} ({count} simulated studies)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("design", choices=("recall", "init"))
    args = parser.parse_args(argv)
    (recall if args.design == "recall" else init)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
