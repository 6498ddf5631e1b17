"""Measurement: what a metric returns (arrays in, this out), with its one JSON form.

The cache stores `to_json()` exactly; results.json stores `to_json(decimals=6)` to stay small.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from mechclaims.errors import MechclaimsError


class Source(Protocol):
    """What a measurement reads: a loaded Model (weights and forward passes) or a weight null."""

    capabilities: Any

    def weights(self, processing: str = "raw") -> Any: ...

    def token_strings(self, ids: Any) -> list[str]: ...


@dataclass(frozen=True)
class KnownCircuit:
    """The ground truth of a planted model: the edges its tracing should find ("L.H@role" upstream ->
    downstream), and per head "L.H" the residual directions its query and key sides were built to read ([m, d]);
    `note` says what the model's twin broke."""

    edges: frozenset[tuple[str, str]]
    key_directions: dict[str, np.ndarray]
    query_directions: dict[str, np.ndarray]
    note: str = ""


def _floats(values: Any, decimals: int | None) -> list[Any]:
    array = np.asarray(values, dtype=np.float64)
    return (array if decimals is None else np.round(array, decimals)).tolist()


@dataclass(frozen=True)
class Curve:
    """A statistic drawn against a parameter (real beside null in the report): y[i] at x[i]."""

    x: list[float]
    y: list[float]
    x_label: str
    y_label: str

    def to_json(self) -> dict[str, Any]:
        return {"x": [float(v) for v in self.x], "y": [float(v) for v in self.y], "x_label": self.x_label,
                "y_label": self.y_label}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Curve:
        return cls(x=list(data["x"]), y=list(data["y"]), x_label=data["x_label"], y_label=data["y_label"])


@dataclass(frozen=True)
class ParamAxis:
    """A measurement's distribution at other values of one parameter: `distributions[i]` is the
    distribution at `values[i]` (m x units), for two-parameter sweeps without re-measuring."""

    values: list[float]
    distributions: np.ndarray

    def to_json(self, decimals: int | None = None) -> dict[str, Any]:
        return {"values": [float(v) for v in self.values], "distributions": _floats(self.distributions, decimals)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParamAxis:
        return cls(values=[float(v) for v in data["values"]],
                   distributions=np.asarray(data["distributions"], dtype=np.float64))


@dataclass(frozen=True)
class Measurement:
    """A claim's raw material: named statistics, the per-unit distribution, details to show, curves
    to draw real beside null, and `by_param`: the distribution at other values of one parameter."""

    statistics: dict[str, float]
    distribution: np.ndarray | None = None
    distribution_label: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, Curve] = field(default_factory=dict)
    by_param: dict[str, ParamAxis] = field(default_factory=dict)

    def param_values(self, name: str) -> list[float]:
        """The values of `name` whose distributions `by_param` kept."""
        if name not in self.by_param:
            raise MechclaimsError(f"this measurement has no distributions by {name!r} (it has "
                                  f"{sorted(self.by_param) or 'none'}): sweep one of those, or re-measure with {name} set")
        return [float(v) for v in self.by_param[name].values]

    def at_param(self, name: str, value: float) -> Measurement:
        """This measurement with the distribution it has at `name = value` (from `by_param`)."""
        values = self.param_values(name)
        if float(value) not in values:
            raise MechclaimsError(f"{name} = {value:g} was not measured (measured: "
                                  f"{', '.join(f'{v:g}' for v in values)}): choose a grid within those values")
        return replace(self, distribution=np.asarray(self.by_param[name].distributions)[values.index(float(value))])

    def to_json(self, decimals: int | None = None) -> dict[str, Any]:
        """JSON-ready; `decimals` rounds the distributions (None: exact, float64 round-trips)."""
        return {
            "statistics": {k: float(v) for k, v in self.statistics.items()},
            "distribution": None if self.distribution is None else _floats(self.distribution, decimals),
            "distribution_label": self.distribution_label,
            "details": self.details,
            "curves": {name: curve.to_json() for name, curve in self.curves.items()},
            "by_param": {name: axis.to_json(decimals) for name, axis in self.by_param.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        distribution = data.get("distribution")
        return cls(
            statistics={k: float(v) for k, v in data["statistics"].items()},
            distribution=None if distribution is None else np.asarray(distribution, dtype=np.float64),
            distribution_label=data.get("distribution_label", ""),
            details=data.get("details", {}),
            curves={name: Curve.from_json(curve) for name, curve in (data.get("curves") or {}).items()},
            by_param={name: ParamAxis.from_json(axis) for name, axis in (data.get("by_param") or {}).items()},
        )
