"""The one error type users see: a single line that names the fix."""


class MechclaimsError(Exception):
    """A user-facing failure (bad spec, missing package, corrupt weights); its message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class MechclaimsWarning(UserWarning):
    """A one-line note of something the run repaired on its own (a damaged cache entry discarded and rebuilt)."""
