"""A family: models measured together as one subject (a configuration's training seeds), for claims about how
often a structure appears across training runs (SORT-1: in >= 80% of seeds). It stands where a Model stands in
the engine, the cache, the baselines and the report: a name, capabilities (the members share an architecture)
and one fingerprint, over the members' fingerprints in order."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from mechclaims.errors import MechclaimsError
from mechclaims.models.model import Capabilities, Model


@dataclass(frozen=True)
class Family:
    name: str
    members: tuple[Model, ...]
    resolved_from: str | None = None
    initialised_at_load: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        shapes = {member.capabilities for member in self.members}
        if len(shapes) > 1:
            raise MechclaimsError(f"family {self.name!r} mixes architectures: its members must share one")

    def __getattr__(self, name: str) -> Any:
        """A model's methods (weights, activations, ...) are not a family's: a one-line error names a member."""
        if name.startswith("__"):
            raise AttributeError(name)
        raise MechclaimsError(f"{self.name!r} is a family of {len(self.members)} models, which only the claims about "
                              f"training runs measure: name one member, e.g. --model {self.members[0].name}")

    @property
    def capabilities(self) -> Capabilities:
        return self.members[0].capabilities

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(" ".join(member.fingerprint for member in self.members).encode()).hexdigest()
