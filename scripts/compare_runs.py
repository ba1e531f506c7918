"""Check that two output folders of the same suite hold the same results.

    python scripts/compare_runs.py reports/quick /tmp/quick-before

Compares runs.csv, curves.csv and generalization.csv cell by cell: the same columns in the same order, the same
rows, and equal values (NaN equals NaN). The timing columns (`wall_s`, `seq_per_s`) are left out, as they differ
between any two runs on a shared machine. This is how a change that must not alter behaviour proves it: train the
suite before and after the change and compare. Exits 1 and prints the first differences when the folders differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

CSV_FILES = ("runs.csv", "curves.csv", "generalization.csv")
#: columns that measure time, not behaviour
TIMING_COLUMNS = ("wall_s", "seq_per_s")


def differences(left: Path, right: Path, limit: int = 10) -> list[str]:
    """Lines describing how the two folders' CSVs differ (empty when they agree)."""
    problems: list[str] = []
    for name in CSV_FILES:
        frames = []
        for folder in (left, right):
            path = folder / name
            if not path.is_file():
                problems.append(f"{path}: missing")
                break
            frame = pd.read_csv(path)
            frames.append(frame.drop(columns=[c for c in TIMING_COLUMNS if c in frame.columns]))
        if len(frames) != 2:
            continue
        a, b = frames
        if list(a.columns) != list(b.columns):
            problems.append(f"{name}: columns differ: {list(a.columns)} vs {list(b.columns)}")
            continue
        if a.shape != b.shape:
            problems.append(f"{name}: {a.shape[0]} rows vs {b.shape[0]}")
            continue
        for column in a.columns:
            x, y = a[column], b[column]
            same = (x == y) | (x.isna() & y.isna())
            for row in same.index[~same][:limit]:
                problems.append(f"{name}: row {row} ({a.at[row, 'run_id']}), {column}: {x[row]} vs {y[row]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("left", type=Path, help="a suite's output folder")
    parser.add_argument("right", type=Path, help="another output folder of the same suite")
    args = parser.parse_args(argv)
    problems = differences(args.left, args.right)
    for line in problems[:40]:
        print(line)
    if problems:
        print(f"{len(problems)} difference(s)", file=sys.stderr)
        return 1
    print(f"identical: {', '.join(CSV_FILES)} (every column but {', '.join(TIMING_COLUMNS)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
