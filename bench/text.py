"""Numbers and text as people read them, shared by the log lines and the report."""

from __future__ import annotations

import math
import re
import unicodedata


def format_duration(seconds: float) -> str:
    """``45s``, ``3m 05s``, ``2h 03m 00s`` (rounded to the second); ``—`` for a non-finite number."""
    if not math.isfinite(seconds):
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


#: characters that start Markdown syntax (emphasis, code, links, images, headings, tables, strikethrough, math): each
#: is escaped with a backslash, which CommonMark allows before any ASCII punctuation and renders as the bare character
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_\[\]()!#|~$])")
#: a line that starts with these is a list item or a rule (a leading "-" or "+" before a digit is a number)
_BLOCK_START = re.compile(r"^(?:[-+](?![\d.])|\d{1,9}(?=\.(?:\s|$)))")


def markdown_text(text: object, newline: str = "; ") -> str:
    """`text` as Markdown inline text that shows exactly what it says: no HTML, link, image, autolink, emphasis or
    code can form from it, whatever it holds (labels and descriptions come from suite files people share).

    HTML's special characters become entities (``&lt;``, ``&gt;``, ``&amp;``), Markdown's punctuation is escaped with
    a backslash, ``://`` and ``www.`` are broken up so that GitHub does not turn a bare address into a link, a leading
    list or rule marker is escaped, control characters become spaces and line breaks become `newline`.
    ``ntm_constant`` is written ``ntm\\_constant``, which renders as ntm_constant."""
    text = newline.join(str(text).splitlines())
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text).strip()
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MARKDOWN_SYNTAX.sub(r"\\\1", text)
    text = re.sub(r"(?i)(www)\.", r"\1\\.", text.replace("://", ":\\/\\/"))
    match = _BLOCK_START.match(text)
    if match:  # a backslash before a list marker, or after the number that would start a numbered list
        at = match.end() if match.group()[0].isdigit() else 0
        text = text[:at] + "\\" + text[at:]
    return text
