"""Numbers as people read them, shared by the log lines and the report."""

from __future__ import annotations

import math


def format_duration(seconds: float) -> str:
    """``45s``, ``3m 05s``, ``2h 03m 00s`` (rounded to the second); ``—`` for a non-finite number."""
    if not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
