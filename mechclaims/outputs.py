"""Where a run writes, checked before it measures or reads anything: a folder it writes into must be one (or be
creatable), and a file it writes must not be one of the files it reads, so no output ever replaces an input."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mechclaims.errors import MechclaimsError


def _checked_chain(path: Path, option: str, chain: tuple[Path, ...], fix: str) -> None:
    """No path of `chain` (`path` or its folders, nearest first) is an existing file, and the nearest existing one
    is writable; else a one-line error naming `option` and `fix`."""
    blocker = next((p for p in chain if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        place = "is a file" if blocker == path else f"is under {blocker}, which is a file"
        raise MechclaimsError(f"{option} {path} {place}: {fix}")
    existing = next(p for p in chain if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MechclaimsError(f"{option} {path}: {existing} is not writable: {fix}")


def writable_folder(path: Path | str, option: str) -> Path:
    """`path` as a folder the run can create and write into."""
    path = Path(path)
    _checked_chain(path, option, (path, *path.absolute().parents), "pass a folder you can write to")
    return path


def output_file(path: Path | str, option: str, inputs: Iterable[Path | str] = ()) -> Path:
    """`path` as a file the run may write: not a folder, in a writable folder, and none of the `inputs`."""
    path = Path(path)
    if path.is_dir():
        raise MechclaimsError(f"{option} {path} is a folder: name a file (e.g. {path / 'report.html'})")
    for source in inputs:
        if path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise MechclaimsError(f"{option} {path} is also an input, which writing it would destroy: name another "
                                  "file")
    _checked_chain(path, option, tuple(path.absolute().parents), "name a file in a folder you can write to")
    return path
