"""The sequence models. Each module registers one model; add a new one with one import line here."""

from models import (
    dnc,  # noqa: F401
    lstm,  # noqa: F401
    ntm,  # noqa: F401
)
