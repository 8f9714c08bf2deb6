"""The one error type a user sees: a single line saying what is wrong and how to fix it."""

from __future__ import annotations


class AlabError(ValueError):
    """A mistake in the user's input or environment; the CLI prints it as one line, exit code 2."""
