"""Errors the CLI turns into one clear line and an exit code.

`AlignError` is for problems the user can fix (bad config, bad data, a path that does not exist):
the CLI prints its message on one line and exits 2. `ServiceError` is for an outside service that
failed after retries (Argilla down, 5xx): exit 1, because the user's input was fine.
Anything else is a bug or an unexpected failure: exit 1 with a traceback in the log.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AlignError(Exception):
    """A user-fixable problem. The message says what, what was given, and how to fix it."""

    exit_code = 2


class ServiceError(AlignError):
    """An outside service (Argilla, a model server) failed after bounded retries."""

    exit_code = 1


def nearest(name: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint for a misspelt name, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""
