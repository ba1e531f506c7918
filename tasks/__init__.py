"""Graves' algorithmic tasks (docs/TASKS.md). `TASKS` maps the name a suite uses to each task's class; a new task is
one module plus one line here. This package imports nothing from `bench`: the harness's registry reads `TASKS`."""

from tasks.associative_recall import AssociativeRecall
from tasks.copy import Copy
from tasks.ngrams import NGrams
from tasks.priority_sort import PrioritySort
from tasks.repeat_copy import RepeatCopy

TASKS: dict[str, type] = {
    "copy": Copy,
    "repeat_copy": RepeatCopy,
    "associative_recall": AssociativeRecall,
    "priority_sort": PrioritySort,
    "ngrams": NGrams,
}
