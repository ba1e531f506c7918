"""The harness's user-facing error, at the bottom of the layers so that every module can raise it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A problem with a suite file, a folder or an option; the message is one line: ``FILE: KEY.PATH: what is wrong;
    what is allowed``. The command line prints it as it is and exits with status 2."""
