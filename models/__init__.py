"""The sequence models. Each module registers one model; add a new one with one import line here."""

from models import lstm  # noqa: F401
