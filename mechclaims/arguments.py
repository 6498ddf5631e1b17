"""Command-line arguments shared by the pytest options and `python -m mechclaims`, validated at the
boundary: --threshold CLAIM=VALUE, --sweep CLAIM[:PARAM]=START:STOP:STEP, --param CLAIM:NAME=VALUE.
Every malformed value is a one-line MechclaimsError naming the expected form."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mechclaims.claim import Grid
from mechclaims.errors import MechclaimsError


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    """`CLAIM=VALUE` -> (claim, value); a usage error names the expected form."""
    claim, sep, value = text.partition("=")
    if not sep or not claim or not value:
        raise MechclaimsError(f"{option} {text!r} is malformed: use {option} CLAIM=VALUE")
    return claim.strip(), value.strip()


def parse_number(text: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise MechclaimsError(f"{what} {text!r} is not a number") from None
    if not np.isfinite(number):
        raise MechclaimsError(f"{what} {text!r} must be finite")
    return number


def parse_thresholds(texts: list[str]) -> dict[str, float]:
    """Every --threshold CLAIM=VALUE: claim -> value (a later one replaces an earlier one)."""
    thresholds = {}
    for text in texts:
        claim, value = parse_assignment(text, "--threshold")
        thresholds[claim] = parse_number(value, f"--threshold {claim}")
    return thresholds


def parse_sweep(text: str) -> tuple[str, str | None, Grid]:
    """`CLAIM=START:STOP:STEP` (the threshold) or `CLAIM:PARAM=START:STOP:STEP` (a claim parameter, for
    a two-parameter sweep), with START <= STOP and STEP > 0 -> (claim, param or None, grid)."""
    target, grid = parse_assignment(text, "--sweep")
    claim, _, param = target.partition(":")
    parts = grid.split(":")
    if len(parts) != 3 or not claim or (":" in target and not param):
        raise MechclaimsError(f"--sweep {text!r} is malformed: use --sweep CLAIM=START:STOP:STEP or "
                              "CLAIM:PARAM=START:STOP:STEP")
    start, stop, step = (parse_number(p, f"--sweep {target}") for p in parts)
    if step <= 0 or stop < start or (stop - start) / step > 10_000:
        raise MechclaimsError(f"--sweep {text!r} needs START <= STOP, STEP > 0 and at most 10000 points")
    return claim, param or None, (start, stop, step)


def parse_sweeps(texts: list[str]) -> tuple[dict[str, Grid], dict[str, tuple[str, Grid]]]:
    """Every --sweep: (claim -> threshold grid, claim -> (parameter, its grid)); a later one for the same
    claim and axis replaces an earlier one."""
    sweeps: dict[str, Grid] = {}
    param_sweeps: dict[str, tuple[str, Grid]] = {}
    for text in texts:
        claim, param, grid = parse_sweep(text)
        if param is None:
            sweeps[claim] = grid
        else:
            param_sweeps[claim] = (param, grid)
    return sweeps, param_sweeps


def parse_value(text: str, what: str) -> Any:
    """A parameter value: JSON where it parses (10, 0.5, true, null, "raw"), else the text itself; JSON nested
    beyond the interpreter's recursion limit is a MechclaimsError naming `what`."""
    try:
        return json.loads(text)
    except ValueError:
        return text
    except RecursionError:
        raise MechclaimsError(f"{what} is nested too deeply to read: give a flat value") from None


def parse_params(texts: list[str]) -> dict[str, dict[str, Any]]:
    """Every --param CLAIM:NAME=VALUE: claim -> {name: value}; the names are checked against each claim's
    measure when the claims are known (Claim.with_params)."""
    params: dict[str, dict[str, Any]] = {}
    for text in texts:
        target, value = parse_assignment(text, "--param")
        claim, _, name = target.partition(":")
        if not claim or not name.strip():
            raise MechclaimsError(f"--param {text!r} is malformed: use --param CLAIM:NAME=VALUE")
        params.setdefault(claim, {})[name.strip()] = parse_value(value, f"--param {claim}:{name.strip()}")
    return params
