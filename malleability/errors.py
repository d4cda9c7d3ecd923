"""One exception type for bad user input.

Anything the user can get wrong (a NaN entry, a wrong shape, a missing data set, an
index out of range) raises :class:`MalleabilityError` with a one-line message. The CLI
turns it into ``error: <message>`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations


class MalleabilityError(ValueError):
    """Invalid input or configuration; the message is one line, meant for the user."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def require(condition: bool, message: str) -> None:
    """Raise :class:`MalleabilityError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise MalleabilityError(message)
