"""Graves' algorithmic tasks. Each module registers one task; add a new one with one import line here."""

from tasks import associative_recall, copy, ngrams, priority_sort, repeat_copy  # noqa: F401
