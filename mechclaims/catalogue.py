"""Claims modules: `claims/test_<paper>.py` files that declare `CLAIMS = [Claim(...), ...]`.

The pytest plugin collects them; `load_claims` reads them without pytest (notebooks, the CLI). A
`CLAIMS` list that holds anything but Claims, or repeats an id, is an error, never skipped.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mechclaims.claim import Claim
from mechclaims.errors import MechclaimsError, did_you_mean

DEFAULT_DIR = Path("claims")


def claims_of(value: Any, where: str) -> list[Claim]:
    """A module's CLAIMS as a checked list."""
    try:
        claims = list(value)
    except TypeError:
        raise MechclaimsError(f"{where}: CLAIMS must be a list of Claim, not {type(value).__name__}") from None
    for index, claim in enumerate(claims):
        if not isinstance(claim, Claim):
            raise MechclaimsError(f"{where}: CLAIMS[{index}] is a {type(claim).__name__}, not a Claim: build it with "
                                  "mechclaims.claim.Claim(...)")
    ids = [claim.id for claim in claims]
    repeated = sorted({claim_id for claim_id in ids if ids.count(claim_id) > 1})
    if repeated:
        raise MechclaimsError(f"{where}: claim id {repeated[0]!r} appears twice in CLAIMS: give each claim its own id")
    return claims


def load_claims(directory: Path = DEFAULT_DIR) -> dict[str, Claim]:
    """Every claim in the `test_*.py` modules of `directory`, by id."""
    files = sorted(Path(directory).glob("test_*.py"))
    if not files:
        raise MechclaimsError(f"no claims modules (test_*.py) in {directory}: pass the folder holding them")
    found: dict[str, Claim] = {}
    for file in files:
        spec = importlib.util.spec_from_file_location(f"mechclaims_claims_{file.stem}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for claim in claims_of(getattr(module, "CLAIMS", []), str(file)):
            found[claim.id] = claim
    return found


def find_claim(claim_id: str, directory: Path = DEFAULT_DIR) -> Claim:
    claims = load_claims(directory)
    if claim_id not in claims:
        raise MechclaimsError(f"unknown claim {claim_id!r}{did_you_mean(claim_id, claims)}: choose from "
                              f"{', '.join(sorted(claims))}")
    return claims[claim_id]
