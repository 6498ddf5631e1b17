"""The Dataset type, its fingerprint, and the lookup of data files in fixtures/."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from mechclaims.errors import MechclaimsError

FIXTURES_ENV = "MECHCLAIMS_FIXTURES"

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Dataset:
    """Texts built deterministically from fixtures/ (or the standard library), fingerprinted by content.

    `fingerprint` is the sha256 of the canonical JSON of name, version (the builder's data-version string),
    texts and metadata; it is computed here, so it always matches the content.
    """

    name: str
    version: str
    texts: tuple[str, ...]
    provenance: str
    metadata: tuple[Mapping[str, Scalar], ...] = field(default=(), hash=False)
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.texts, tuple) or not self.texts:
            raise MechclaimsError(f"data set {self.name!r} has no texts: check its fixture files")
        if not all(isinstance(text, str) and text.strip() for text in self.texts):
            raise MechclaimsError(f"data set {self.name!r} holds an empty or non-string text: check its fixture files")
        if self.metadata and len(self.metadata) != len(self.texts):
            raise MechclaimsError(
                f"data set {self.name!r} has {len(self.metadata)} metadata rows for {len(self.texts)} texts"
            )
        object.__setattr__(self, "metadata", tuple(MappingProxyType(dict(row)) for row in self.metadata))
        object.__setattr__(self, "fingerprint", _fingerprint(self))

    def __len__(self) -> int:
        return len(self.texts)


def _fingerprint(dataset: Dataset) -> str:
    """sha256 over the canonical JSON of the data set's content and data version."""
    content = {
        "name": dataset.name,
        "version": dataset.version,
        "texts": list(dataset.texts),
        "metadata": [dict(row) for row in dataset.metadata],
    }
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def fixtures_dir() -> Path:
    """The fixtures/ folder: $MECHCLAIMS_FIXTURES when set, else the one beside the mechclaims package directory."""
    override = os.environ.get(FIXTURES_ENV)
    if override:
        folder = Path(override)
        if not folder.is_dir():
            raise MechclaimsError(
                f"{FIXTURES_ENV}={override} is not a directory: point it at a mechclaims fixtures/ folder"
            )
        return folder
    folder = Path(__file__).resolve().parents[2] / "fixtures"
    if not folder.is_dir():
        raise MechclaimsError(
            f"fixtures folder not found at {folder}: install mechclaims from its repository checkout "
            f"(pip install -e .) or set {FIXTURES_ENV} to the checkout's fixtures/ folder"
        )
    return folder


def read_fixture(relative: str) -> str:
    """The UTF-8 text of fixtures/<relative>; a missing file is a one-line error naming it."""
    path = fixtures_dir() / relative
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        message = f"cannot read fixture {path} ({exc}): restore it from the mechclaims repository"
        raise MechclaimsError(message) from None


def fixture_lines(relative: str) -> tuple[str, ...]:
    """The non-blank lines of fixtures/<relative>, stripped."""
    return tuple(line.strip() for line in read_fixture(relative).splitlines() if line.strip())
