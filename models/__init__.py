"""The sequence models. Each module registers one model; add a new one with one import line here."""

from models import dnc  # noqa: F401
from models import lstm  # noqa: F401
from models import ntm  # noqa: F401
