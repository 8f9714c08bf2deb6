"""The one error type a user sees: a single line saying what is wrong and how to fix it."""

from __future__ import annotations


class AlabError(ValueError):
    """A mistake in the user's input or environment; the CLI prints it as one line, exit code 2.

    A message is one line even when it quotes the user's text: line breaks in it are shown escaped.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))
