"""Task facts in the forms earlier versions wrote to suite.json, mapped to what the report uses today.

Before the convergence and solved rules were recorded as data (`tasks.base.Rule.to_json`), suite.json gave a task's
rule as words, sometimes with its number. Old output folders still render: this module reads those forms, and
nothing else in the report needs to know they existed.
"""

from __future__ import annotations

from typing import Any

from tasks import TASKS
from tasks.base import WRONG_BITS, Rule
from tasks.ngrams import GAP_TO_OPTIMUM


def _first_number(words: str) -> float | None:
    """The first word of `words` that reads as a number ("wrong bits/seq < 0.1" -> 0.1), or None."""
    for word in words.split():
        try:
            return float(word)
        except ValueError:
            continue
    return None


def legacy_task_fields(label: str, fact: dict[str, Any], has_optimum: bool) -> dict[str, Any]:
    """`TaskInfo`'s fields (all but the sizes) from task facts written by an earlier version.

    Those facts gave the registry name (``type``) and the convergence rule as words (``convergence_rule``; None: no
    threshold); later ones also its number (``convergence_threshold``) and the solved level (``solved_at_most``,
    wrong bits/seq). The rule always bounded the task's error, strictly, so the error measure (the task class's
    own, or the gap to the optimum when the curves carry one) gives its metric. Without the number, the first
    number in the words is the threshold.
    """
    task_class = TASKS.get(str(fact.get("type", label)))
    error = GAP_TO_OPTIMUM if has_optimum else getattr(task_class, "error", WRONG_BITS)
    words = fact.get("convergence_rule")
    threshold = fact.get("convergence_threshold")
    if threshold is None and words is not None:
        threshold = _first_number(words)
    convergence = None if words is None or threshold is None else Rule(error.metric, threshold, "<",
                                                                        error.reference)
    solved_at_most = fact.get("solved_at_most")
    return {"type": str(fact.get("type", label)), "error": error, "convergence": convergence,
            "solved": None if solved_at_most is None else Rule("wrong_bits_per_seq", solved_at_most, "<="),
            "test_size_2x": fact.get("test_size_2x"), "rule_text": words}
