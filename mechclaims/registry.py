"""Claim, Threshold, Measurement, Verdict: claims are data, verdicts are thresholds applied to data."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, Protocol

import numpy as np

from mechclaims.errors import MechclaimsError

Op = Literal[">=", "<=", ">", "<"]
Grid = tuple[float, float, float]
"""A sweep grid: (start, stop, step), stop included."""
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
    """A claim's raw material: named statistics, the per-unit distribution, details to show,
    curves to draw real beside null (name -> {x, y, x_label, y_label}), and `by_param`: the
    distribution at other values of one parameter, for two-parameter sweeps without re-measuring
    (parameter -> {"values": [v_1..v_m], "distributions": m x units array}).
    """

    statistics: dict[str, float]
    distribution: np.ndarray | None = None
    distribution_label: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_param: dict[str, dict[str, Any]] = field(default_factory=dict)

    def param_values(self, name: str) -> list[float]:
        """The values of `name` whose distributions `by_param` kept."""
        if name not in self.by_param:
            raise MechclaimsError(f"this measurement has no distributions by {name!r} (it has "
                                  f"{sorted(self.by_param) or 'none'}): sweep one of those, or re-measure with {name} set")
        return [float(v) for v in self.by_param[name]["values"]]

    def at_param(self, name: str, value: float) -> Measurement:
        """This measurement with the distribution it has at `name = value` (from `by_param`)."""
        values = self.param_values(name)
        if float(value) not in values:
            raise MechclaimsError(f"{name} = {value:g} was not measured (measured: "
                                  f"{', '.join(f'{v:g}' for v in values)}): choose a grid within those values")
        return replace(self, distribution=np.asarray(self.by_param[name]["distributions"])[values.index(float(value))])


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
    sweep: Grid | None = None

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

    def sweep_grid(self, override: Grid | None = None) -> np.ndarray:
        """The override grid, else the declared sweep, else this threshold's own point on the swept axis."""
        own = self.at if self.at is not None else self.value
        return sweep_grid(*(override or self.sweep or (own, own, 1.0)))


@dataclass(frozen=True)
class Claim:
    """One published statement, as data. `measure(source, **params)` returns a Measurement.

    `null` names the null baseline in NULLS ("gaussian": the same measurement on i.i.d. Gaussian
    weights of the same shapes; "random_targets": Gaussian targets against the real token vectors).
    `trivial_if_null_passes` is False where the null is the ideal the claim compares against
    (near-orthogonality), not a chance level that a pass must beat. `tolerance` is how far (absolute)
    the statistic may move from its baseline before a run reports a regression; 0.01 suits
    fractions, and claims on other scales declare their own.
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
    tolerance: float = 0.01

    def __post_init__(self) -> None:
        if not CLAIM_ID.match(self.id):
            raise ValueError(f"claim id {self.id!r} must look like paper.measured_thing")
        if self.null is not None and self.null not in NULLS:
            raise ValueError(f"claim {self.id} has unknown null {self.null!r}: choose from {sorted(NULLS)}")
        if not (np.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"claim {self.id} has tolerance {self.tolerance!r}: it must be finite and >= 0")
        unknown = set(self.needs) - set(REQUIREMENTS)
        if unknown:
            raise ValueError(f"claim {self.id} needs unknown capabilities {sorted(unknown)}")

    def decide(self, real: Measurement, null: Measurement | None,
               threshold: Threshold | None = None) -> tuple[Verdict, float, float | None]:
        """This claim's verdict under `threshold` (default: its own)."""
        return decide(real, null, threshold or self.threshold, self.trivial_if_null_passes)


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


def decide(real: Measurement, null: Measurement | None, threshold: Threshold,
           trivial_if_null_passes: bool = True) -> tuple[Verdict, float, float | None]:
    """PASS / FAIL / TRIVIAL from a measurement and its null under `threshold` (TRIVIAL: the null
    passes too, for claims whose null is a chance level)."""
    statistic = threshold.statistic_of(real)
    null_statistic = None if null is None else threshold.statistic_of(null)
    if not threshold.passes(statistic):
        return Verdict.FAIL, statistic, null_statistic
    if trivial_if_null_passes and null_statistic is not None and threshold.passes(null_statistic):
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


def sweep_grid(start: float, stop: float, step: float) -> np.ndarray:
    """START, START + STEP, ..., STOP (inclusive, rounded so that decimal steps land on decimals)."""
    return np.round(np.arange(start, stop + step / 2, step), 10)
