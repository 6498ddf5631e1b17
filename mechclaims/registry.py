"""Claim, Threshold, Measurement, Verdict: claims are data, verdicts are thresholds applied to data."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, Protocol

import numpy as np

from mechclaims.errors import MechclaimsError

Op = Literal[">=", "<=", ">", "<"]
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}
FRACTION_STATISTICS = ("fraction_at_least", "fraction_at_most", "fraction_below")
NULLS: dict[str, frozenset[str]] = {
    "gaussian": frozenset(),
    "random_targets": frozenset({"W_E", "W_pos", "W_U"}),
}
"""Null baselines by name -> the weight matrices they keep (all others become i.i.d. Gaussian).
`random_targets` keeps the token vectors a measurement searches and randomises what it explains."""
CLAIM_ID = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")
Z_95 = 1.959963984540054


class Verdict(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    TRIVIAL = "TRIVIAL"
    NA = "N/A"
    ERROR = "ERROR"


class WeightSource(Protocol):
    """What a measurement reads: a loaded Model, or its Gaussian null."""

    capabilities: Any

    def weights(self, processing: str = "raw") -> Any: ...

    def token_strings(self, ids: Any) -> list[str]: ...


@dataclass
class Measurement:
    """A claim's raw material: named statistics, the per-unit distribution, details to show, and
    curves to draw real beside null (name -> {x, y, x_label, y_label})."""

    statistics: dict[str, float]
    distribution: np.ndarray | None = None
    distribution_label: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Threshold:
    """`statistic op value`. Fraction statistics read the distribution at the cut-off `at`.

    `sweep` is (start, stop, step) over `at` for fraction statistics and over `value` otherwise.
    `origin` is "paper" when the paper states the number, "suite" when it is our reading.
    """

    statistic: str
    op: Op
    value: float
    origin: Literal["paper", "suite"]
    at: float | None = None
    sweep: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"threshold op {self.op!r} is not one of {sorted(OPS)}")
        if (self.statistic in FRACTION_STATISTICS) != (self.at is not None):
            raise ValueError("fraction statistics need `at`; other statistics must not have it")

    def statistic_of(self, measurement: Measurement) -> float:
        """The thresholded number: a named statistic, or a fraction of the distribution at `at`."""
        if self.statistic not in FRACTION_STATISTICS:
            return float(measurement.statistics[self.statistic])
        cut = self.at
        values = np.asarray(measurement.distribution, dtype=np.float64)
        if self.statistic == "fraction_at_least":
            return float(np.mean(values >= cut))
        if self.statistic == "fraction_at_most":
            return float(np.mean(values <= cut))
        return float(np.mean(values < cut))

    def interval_of(self, measurement: Measurement | None) -> tuple[float, float] | None:
        """Wilson 95% interval of a fraction statistic over the distribution's units; None otherwise
        (and for a missing measurement, e.g. a claim without a null)."""
        if self.statistic not in FRACTION_STATISTICS or measurement is None or measurement.distribution is None:
            return None
        return wilson_interval(self.statistic_of(measurement), len(measurement.distribution))

    def passes(self, statistic: float) -> bool:
        return bool(OPS[self.op](statistic, self.value))

    def moved_to(self, x: float) -> Threshold:
        """This threshold at sweep point x: the cut-off `at` for fractions, otherwise the value."""
        return replace(self, at=x) if self.at is not None else replace(self, value=x)

    def describe(self) -> str:
        left = self.statistic if self.at is None else f"{self.statistic}({self.at:g})"
        return f"{left} {self.op} {self.value:g}"

    def sweep_grid(self, override: tuple[float, float, float] | None = None) -> np.ndarray:
        start, stop, step = override or self.sweep or (self.value, self.value, 1.0)
        return np.round(np.arange(start, stop + step / 2, step), 10)


@dataclass(frozen=True)
class Claim:
    """One published statement, as data. `measure(source, **params)` returns a Measurement.

    `null` names the null baseline in NULLS ("gaussian": the same measurement on i.i.d. Gaussian
    weights of the same shapes; "random_targets": Gaussian targets against the real token vectors). `trivial_if_null_passes` is False where the null is the ideal the claim
    compares against (near-orthogonality), not a chance level that a pass must beat.
    """

    id: str
    paper: str
    section: str
    statement: str
    measure: Callable[..., Measurement]
    threshold: Threshold
    params: dict[str, Any] = field(default_factory=dict)
    needs: frozenset[str] = frozenset()
    null: str | None = "gaussian"
    trivial_if_null_passes: bool = True
    rationale: str = ""

    def __post_init__(self) -> None:
        if not CLAIM_ID.match(self.id):
            raise ValueError(f"claim id {self.id!r} must look like paper.measured_thing")
        if self.null is not None and self.null not in NULLS:
            raise ValueError(f"claim {self.id} has unknown null {self.null!r}: choose from {sorted(NULLS)}")
        unknown = set(self.needs) - set(REQUIREMENTS)
        if unknown:
            raise ValueError(f"claim {self.id} needs unknown capabilities {sorted(unknown)}")


REQUIREMENTS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "layernorm": (lambda c: c.norm == "layernorm", "the model uses RMSNorm, which does not centre vectors"),
    "absolute_positions": (lambda c: c.positions == "absolute", "the model has no learned absolute positions"),
    "decoder": (lambda c: c.kind == "decoder", "the model is an encoder"),
    "ungated_mlp": (lambda c: not c.gated_mlp, "the model's MLP is gated"),
    "gated_mlp": (lambda c: c.gated_mlp, "the model's MLP has no gate"),
}


def not_applicable(claim: Claim, capabilities: Any) -> str | None:
    """The reason the claim does not apply to this architecture, or None."""
    reasons = [reason for need in sorted(claim.needs) for ok, reason in [REQUIREMENTS[need]] if not ok(capabilities)]
    return "; ".join(reasons) or None


def wilson_interval(fraction: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion p = fraction over n trials:
    (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), which always holds p (rounding aside,
    so it is clamped to hold it)."""
    if n <= 0:
        raise ValueError("a proportion needs at least one trial")
    centre = fraction + z * z / (2 * n)
    spread = z * np.sqrt(fraction * (1 - fraction) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    low, high = (centre - spread) / scale, (centre + spread) / scale
    return float(min(fraction, max(0.0, low))), float(max(fraction, min(1.0, high)))


def decide(claim: Claim, real: Measurement, null: Measurement | None, threshold: Threshold) -> tuple[Verdict, float, float | None]:
    """PASS / FAIL / TRIVIAL from a measurement and its null under `threshold`."""
    statistic = threshold.statistic_of(real)
    null_statistic = None if null is None else threshold.statistic_of(null)
    if not threshold.passes(statistic):
        return Verdict.FAIL, statistic, null_statistic
    if claim.trivial_if_null_passes and null_statistic is not None and threshold.passes(null_statistic):
        return Verdict.TRIVIAL, statistic, null_statistic
    return Verdict.PASS, statistic, null_statistic


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


def parse_sweep(text: str) -> tuple[str, tuple[float, float, float]]:
    """`CLAIM=START:STOP:STEP` with START <= STOP and STEP > 0."""
    claim, grid = parse_assignment(text, "--sweep")
    parts = grid.split(":")
    if len(parts) != 3:
        raise MechclaimsError(f"--sweep {text!r} is malformed: use --sweep CLAIM=START:STOP:STEP")
    start, stop, step = (parse_number(p, f"--sweep {claim}") for p in parts)
    if step <= 0 or stop < start or (stop - start) / step > 10_000:
        raise MechclaimsError(f"--sweep {text!r} needs START <= STOP, STEP > 0 and at most 10000 points")
    return claim, (start, stop, step)
