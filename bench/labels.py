"""Task and model labels: what a suite may call a task or model, and the one file name made of each label.

Labels come from suite files that people share, and they end up in CSVs, Markdown, the HTML page and file names.
`label_problem` is the rule `bench.config` checks every label against (and `bench.grid` every label a sweep makes),
before anything trains. `slug` and `unique_slugs` turn labels into the names of figure files and page anchors:
short, file-safe, and distinct for distinct labels.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable

#: the longest task or model label a suite may give, and the longest label a sweep may make of one
#: (``label[key=value,...]``, `bench.grid.model_variants`): labels name figures, table rows and legend entries
MAX_LABEL = 64
MAX_SWEPT_LABEL = 128
#: a label must not start with these: a spreadsheet runs a CSV cell that starts with one as a formula
FORMULA_START = ("=", "+", "-", "@")
#: the longest slug: figure names (``generalization_<slug>-<n>.png``) stay within 80 characters
SLUG_LENGTH = 56


def label_problem(label: str, most: int = MAX_LABEL) -> str | None:
    """What is wrong with a task or model label, followed by what a label may be; None when it is fine."""
    if not label or len(label) > most:
        problem = f"{len(label)} characters" if label else "empty"
    elif not label.isprintable():
        problem = "holds a line break, tab or other control character"
    elif label.startswith(FORMULA_START):
        problem = f"starts with {label[0]!r}, which makes a spreadsheet run the CSV cell as a formula"
    elif label != label.strip():
        problem = "starts or ends with a space"
    else:
        return None
    return (f"{problem}; a label is 1 to {most} printable characters, not starting with {' '.join(FORMULA_START)} "
            "and not starting or ending with a space")


def shown_label(label: str) -> str:
    """A label as an error message shows it: on one line, at most 40 characters."""
    shown = label if label.isprintable() else repr(label)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def slug(text: str) -> str:
    """A file- and anchor-safe form of a label, at most `SLUG_LENGTH` characters. A label that needs changing or
    shortening gets a short hash of the exact label appended, so two labels such as ``copy/a`` and ``copy a`` never
    share a figure file or an anchor; a file-safe label of up to `SLUG_LENGTH` characters is its own slug."""
    text = str(text)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"
    if safe == text and len(safe) <= SLUG_LENGTH:
        return safe
    return f"{safe[:SLUG_LENGTH - 7]}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def unique_slugs(labels: Iterable[str]) -> dict[str, str]:
    """label -> its file and anchor name: its `slug`, or where two labels share one, also when only the case differs
    (a case-insensitive file system holds one file for both), ``<slug>-2``, ``<slug>-3``, ... in the labels' sorted
    order. Names are distinct, ignoring case, and none takes the slug of another label."""
    labels = sorted({str(label) for label in labels})
    own = {label: slug(label) for label in labels}
    reserved, used, names = {name.lower() for name in own.values()}, set(), {}
    for label in labels:
        candidates = itertools.chain([own[label]], (f"{own[label]}-{n}" for n in itertools.count(2)))
        names[label] = next(c for c in candidates
                            if c.lower() not in used and (c == own[label] or c.lower() not in reserved))
        used.add(names[label].lower())
    return names
