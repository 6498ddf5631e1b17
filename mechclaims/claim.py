"""Claim, Threshold, Verdict, decide: the domain types, validated when built.

A mistake in a claim's data (an unknown parameter, a value of the wrong type, an unknown null or
capability, a weight null on a claim that runs inputs) raises MechclaimsError at import of the
claims module, not per model at run time.
"""

from __future__ import annotations

import enum
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from mechclaims.datasets import DATASETS
from mechclaims.errors import MechclaimsError, did_you_mean
from mechclaims.measurement import Measurement
from mechclaims.nulls import NULLS, MeasurementNull, Null, WeightNull
from mechclaims.stats import wilson_interval

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
CLAIM_ID = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")


class Verdict(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    TRIVIAL = "TRIVIAL"
    NA = "N/A"
    ERROR = "ERROR"


def sweep_grid(start: float, stop: float, step: float) -> np.ndarray:
    """START, START + STEP, ..., STOP (inclusive, rounded so that decimal steps land on decimals)."""
    return np.round(np.arange(start, stop + step / 2, step), 10)


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
            raise MechclaimsError(f"threshold op {self.op!r} is not one of {sorted(OPS)}")
        if self.origin not in ("paper", "suite"):
            raise MechclaimsError(f"threshold origin {self.origin!r} must be 'paper' or 'suite'")
        if (self.statistic in FRACTION_STATISTICS) != (self.at is not None):
            raise MechclaimsError("fraction statistics need `at`; other statistics must not have it")
        if self.at is not None and not 0.0 <= self.value <= 1.0:
            raise MechclaimsError(f"threshold value {self.value:g} for the fraction statistic {self.statistic} is "
                                  "outside [0, 1]: give a fraction between 0 and 1")
        if self.sweep is not None and (len(self.sweep) != 3 or self.sweep[2] <= 0 or self.sweep[1] < self.sweep[0]):
            raise MechclaimsError(f"threshold sweep {self.sweep!r} must be (start, stop, step) with start <= stop, step > 0")

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

    def to_json(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "op": self.op, "value": self.value, "at": self.at, "origin": self.origin,
                "sweep": None if self.sweep is None else list(self.sweep), "describe": self.describe()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Threshold:
        sweep = data.get("sweep")
        return cls(statistic=data["statistic"], op=data["op"], value=data["value"], origin=data["origin"],
                   at=data.get("at"), sweep=None if sweep is None else tuple(sweep))


REQUIREMENTS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "layernorm": (lambda c: c.norm == "layernorm", "the model uses RMSNorm, which does not centre vectors"),
    "absolute_positions": (lambda c: c.positions == "absolute", "the model has no learned absolute positions"),
    "decoder": (lambda c: c.kind == "decoder", "the model is an encoder"),
    "ungated_mlp": (lambda c: not c.gated_mlp, "the model's MLP is gated"),
    "gated_mlp": (lambda c: c.gated_mlp, "the model's MLP has no gate"),
    "mlp": (lambda c: c.has_mlp, "the model has no MLP layers"),
    "normalised": (lambda c: c.norm != "none", "the model has no normalisation layers"),
    "untied": (lambda c: not c.tied_embeddings, "the model ties W_U to W_E, so W_U is W_E again"),
    "gpt2_small": (lambda c: c.published == "openai-community/gpt2" and c.architecture == "GPT2LMHeadModel",
                   "the paper's numbers are for OpenAI's GPT-2 small weights only (recognised by the SHA-256 of the "
                   "published model.safetensors), not for another checkpoint of its shape"),
}
"""Capabilities a claim may need -> (test on Capabilities, the N/A reason when it fails)."""


@dataclass(frozen=True)
class Inputs:
    """The data set a claim runs through the model (a name in mechclaims.datasets), with its options."""

    dataset: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "options": dict(self.options)}


@dataclass(frozen=True)
class Gate:
    """A condition on the real measurement for the claim to apply: `statistic op value`, else N/A with
    `reason` and the measured number (e.g. a model that cannot do the task a claim is about); `explained_by` names
    a details entry (text) that says which units failed it, appended to the reason. The null is not gated: a random
    model is expected to fail the task."""

    statistic: str
    op: Op
    value: float
    reason: str
    explained_by: str | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise MechclaimsError(f"gate op {self.op!r} is not one of {sorted(OPS)}")

    def not_met(self, measurement: Measurement) -> str | None:
        """The N/A reason when the measurement fails the gate, else None."""
        measured = float(measurement.statistics[self.statistic])
        if OPS[self.op](measured, self.value):
            return None
        explained = measurement.details.get(self.explained_by) if self.explained_by else None
        return (f"{self.reason} ({self.statistic} = {measured:.4g}, needs {self.op} {self.value:g})"
                + (f": {explained}" if explained else ""))

    def to_json(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "op": self.op, "value": self.value, "reason": self.reason}


def _accepts(value: Any, expected: Any) -> bool:
    """Whether `value` fits the annotation `expected` (bool, int, float, str, Literal, unions; others pass)."""
    origin = typing.get_origin(expected)
    if origin is typing.Union or type(expected).__name__ == "UnionType":
        return any(_accepts(value, arm) for arm in typing.get_args(expected))
    if origin is Literal:
        return value in typing.get_args(expected)
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    return True


def check_params(measure: Callable[..., Any], params: Mapping[str, Any], where: str) -> None:
    """Every name in `params` is a keyword of `measure` (its first argument is the source) and each value
    fits the parameter's annotation; MechclaimsError naming the fix otherwise."""
    signature = inspect.signature(measure)
    accepted = list(signature.parameters)[1:]
    try:
        hints = typing.get_type_hints(measure)
    except Exception:  # annotations naming what only a type checker imports: check names, not types
        hints = {}
    for name, value in params.items():
        if name not in accepted:
            raise MechclaimsError(f"{where}: {measure.__name__} has no parameter {name!r}{did_you_mean(name, accepted)}; "
                                  f"choose from {', '.join(accepted)}")
        if name in hints and not _accepts(value, hints[name]):
            raise MechclaimsError(f"{where}: parameter {name}={value!r} does not fit {measure.__name__}'s "
                                  f"annotation {hints[name]}")


@dataclass(frozen=True)
class Claim:
    """One published statement, as data. `measure(source, **params)` returns a Measurement; a claim
    with `inputs` also gets `inputs=` the data set, and its source runs forward passes.

    `null` names a null in nulls.NULLS ("gaussian", "random_targets": weight nulls; "random_model":
    the `random:` model) or is a MeasurementNull. `gate`: one Gate or several, checked in order (`gates`).
    `trivial_if_null_passes` is False where the null is the ideal the claim compares against
    (near-orthogonality), not a chance level that a pass must beat. `tolerance` is how far (absolute) the
    statistic may move from its baseline before a run reports a regression; 0.01 suits fractions, and claims on other scales declare their own.
    `subjects` are the model specs the claim runs on whatever --model names (the suite's own trained
    models, e.g. a family of training seeds); empty, it runs on the run's models. A `slow` claim runs
    only with --slow-claims.
    """

    id: str
    paper: str
    section: str
    statement: str
    measure: Callable[..., Measurement]
    threshold: Threshold
    params: dict[str, Any] = field(default_factory=dict)
    needs: frozenset[str] = frozenset()
    null: str | MeasurementNull | None = "gaussian"
    trivial_if_null_passes: bool = True
    rationale: str = ""
    tolerance: float = 0.01
    inputs: Inputs | tuple[Inputs, ...] | None = None
    gate: Gate | tuple[Gate, ...] | None = None
    subjects: tuple[str, ...] = ()
    slow: bool = False

    def __post_init__(self) -> None:
        if not CLAIM_ID.match(self.id):
            raise MechclaimsError(f"claim id {self.id!r} must look like paper.measured_thing")
        if isinstance(self.null, str) and self.null not in NULLS:
            raise MechclaimsError(f"claim {self.id} has unknown null {self.null!r}{did_you_mean(self.null, NULLS)}: "
                                  f"choose from {sorted(NULLS)}")
        if not (np.isfinite(self.tolerance) and self.tolerance >= 0):
            raise MechclaimsError(f"claim {self.id} has tolerance {self.tolerance!r}: it must be finite and >= 0")
        unknown = set(self.needs) - set(REQUIREMENTS)
        if unknown:
            raise MechclaimsError(f"claim {self.id} needs unknown capabilities {sorted(unknown)}: choose from "
                                  f"{sorted(REQUIREMENTS)}")
        check_params(self.measure, self.params, f"claim {self.id}")
        if isinstance(self.null, MeasurementNull):
            check_params(self.measure, {self.null.param: self.null.value}, f"claim {self.id}'s null")
        if self.inputs is not None:
            self._check_inputs(self.inputs)
        self._check_subjects()

    def _check_subjects(self) -> None:
        from mechclaims.models import specs

        if isinstance(self.subjects, str):
            raise MechclaimsError(f"claim {self.id} has subjects {self.subjects!r}: give a tuple of model specs")
        for subject in self.subjects:
            try:
                specs.check(specs.parse(subject), probe_hub=False)
            except MechclaimsError as exc:
                raise MechclaimsError(f"claim {self.id} subject: {exc}") from None

    @property
    def input_list(self) -> tuple[Inputs, ...]:
        """The claim's data sets as a tuple (empty without inputs)."""
        if self.inputs is None:
            return ()
        return self.inputs if isinstance(self.inputs, tuple) else (self.inputs,)

    def _check_inputs(self, inputs: Inputs | tuple[Inputs, ...]) -> None:
        for one in self.input_list:
            if not isinstance(one, Inputs) or one.dataset not in DATASETS:
                name = getattr(one, "dataset", one)
                raise MechclaimsError(f"claim {self.id} reads unknown data set {name!r}"
                                      f"{did_you_mean(str(name), DATASETS)}: choose from {sorted(DATASETS)}")
        if "inputs" not in inspect.signature(self.measure).parameters:
            raise MechclaimsError(f"claim {self.id} has inputs but {self.measure.__name__} takes no `inputs` argument")
        if isinstance(self.null_baseline, WeightNull):
            raise MechclaimsError(f"claim {self.id} runs inputs through the model, which a weight null "
                                  f"({self.null}) cannot do: use null='random_model' or a MeasurementNull")

    @property
    def gates(self) -> tuple[Gate, ...]:
        return () if self.gate is None else self.gate if isinstance(self.gate, tuple) else (self.gate,)

    def not_met(self, measurement: Measurement) -> str | None:
        """The first unmet gate's N/A reason, else None."""
        return next((reason for gate in self.gates if (reason := gate.not_met(measurement))), None)

    @property
    def null_baseline(self) -> Null | None:
        """The null as an object (a name resolved through nulls.NULLS)."""
        return NULLS[self.null] if isinstance(self.null, str) else self.null

    def with_params(self, overrides: Mapping[str, Any]) -> Claim:
        """This claim with some parameters replaced (checked against the measure like the claim's own)."""
        check_params(self.measure, overrides, f"--param {self.id}")
        return replace(self, params={**self.params, **overrides})

    def decide(self, real: Measurement, null: Measurement | None,
               threshold: Threshold | None = None) -> tuple[Verdict, float, float | None]:
        """This claim's verdict under `threshold` (default: its own)."""
        return decide(real, null, threshold or self.threshold, self.trivial_if_null_passes)

    def to_json(self) -> dict[str, Any]:
        null = self.null_baseline
        return {
            "paper": self.paper,
            "section": self.section,
            "statement": self.statement,
            "rationale": self.rationale,
            "params": self.params,
            "threshold": self.threshold.to_json(),
            "null": None if null is None else null.name,
            "trivial_if_null_passes": self.trivial_if_null_passes,
            "tolerance": self.tolerance,
            "inputs": None if self.inputs is None else [one.to_json() for one in self.input_list],
            "gates": [gate.to_json() for gate in self.gates],
            "subjects": list(self.subjects),
            "slow": self.slow,
        }


def not_applicable(claim: Claim, capabilities: Any) -> str | None:
    """The reason the claim does not apply to this architecture, or None."""
    reasons = [reason for need in sorted(claim.needs) for ok, reason in [REQUIREMENTS[need]] if not ok(capabilities)]
    return "; ".join(reasons) or None


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
