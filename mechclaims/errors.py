"""The one error type users see: a single line that names the fix (with the closest choice to a mistyped name)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MechclaimsError(Exception):
    """A user-facing failure (bad spec, missing package, corrupt weights); its message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class NotApplicable(MechclaimsError):
    """A measurement finds nothing its claim is about on this model (no head fires, nothing to trace): the claim is
    N/A with this one-line reason, not an error."""


class MechclaimsWarning(UserWarning):
    """A one-line note of something the run repaired on its own (a damaged cache entry discarded and rebuilt)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest choice, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
