"""Threshold sweeps from a measurement already made: the verdict at every grid point, nothing re-measured.

A one-parameter sweep moves the threshold (the cut-off `at` of a fraction statistic, else the
value). A two-parameter sweep also moves one claim parameter whose distributions the measurement
kept (`Measurement.by_param`, e.g. the bundles' `max_tokens`), and is drawn as a heatmap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

from mechclaims.claim import Grid, Threshold, Verdict, decide, sweep_grid
from mechclaims.errors import MechclaimsError
from mechclaims.measurement import Measurement


@dataclass(frozen=True)
class SweepPoint:
    """The verdict with the threshold moved to `x`."""

    x: float
    statistic: float
    null_statistic: float | None
    verdict: str
    interval: tuple[float, float] | None
    null_interval: tuple[float, float] | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SweepPoint:
        interval, null_interval = data.get("interval"), data.get("null_interval")
        return cls(x=data["x"], statistic=data["statistic"], null_statistic=data["null_statistic"],
                   verdict=data["verdict"], interval=None if interval is None else tuple(interval),
                   null_interval=None if null_interval is None else tuple(null_interval))


@dataclass(frozen=True)
class ThresholdSweep:
    """Verdicts over a grid of one threshold axis: "at" (a fraction's cut-off) or "value"."""

    axis: str
    points: tuple[SweepPoint, ...]

    def to_json(self) -> dict[str, Any]:
        return {"axis": self.axis, "points": [asdict(point) for point in self.points]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ThresholdSweep:
        return cls(axis=data["axis"], points=tuple(SweepPoint.from_json(point) for point in data["points"]))


@dataclass(frozen=True)
class ParamSweep:
    """The fraction statistic and verdict on the grid cut-off x `param`: statistic[i][j] is at
    param = y[i], cut-off = x[j]."""

    axis: str
    param: str
    x: list[float]
    y: list[float]
    statistic: list[list[float]]
    null_statistic: list[list[float | None]]
    verdict: list[list[str]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParamSweep:
        return cls(**{key: data[key] for key in ("axis", "param", "x", "y", "statistic", "null_statistic", "verdict")})


def threshold_sweep(real: Measurement, null: Measurement | None, threshold: Threshold, grid: Sequence[float],
                    trivial_if_null_passes: bool) -> ThresholdSweep:
    """The verdict, statistic and intervals at each point of `grid`."""
    points = []
    for x in grid:
        moved = threshold.moved_to(float(x))
        verdict, statistic, null_statistic = decide(real, null, moved, trivial_if_null_passes)
        points.append(SweepPoint(float(x), statistic, null_statistic, verdict.value, moved.interval_of(real),
                                 moved.interval_of(null)))
    return ThresholdSweep("at" if threshold.at is not None else "value", tuple(points))


def param_sweep(real: Measurement, null: Measurement | None, threshold: Threshold, grid: Sequence[float],
                param: str, param_grid: Sequence[float] | None, trivial_if_null_passes: bool) -> ParamSweep:
    """The fraction statistic and verdict on the grid (cut-off x `param`), real and null; `param_grid`
    None means every value the measurement kept."""
    if threshold.at is None:
        raise MechclaimsError(f"a sweep over {param!r} needs a fraction statistic; {threshold.statistic!r} is a "
                              "single number: sweep its threshold alone")
    values = real.param_values(param) if param_grid is None else [float(v) for v in param_grid]
    rows = []
    for value in values:
        at_value = real.at_param(param, value)
        null_at_value = None if null is None or param not in null.by_param else null.at_param(param, value)
        rows.append(threshold_sweep(at_value, null_at_value, threshold, grid, trivial_if_null_passes).points)
    return ParamSweep(axis="at", param=param, x=[float(x) for x in grid], y=values,
                      statistic=[[p.statistic for p in row] for row in rows],
                      null_statistic=[[p.null_statistic for p in row] for row in rows],
                      verdict=[[p.verdict for p in row] for row in rows])


def sweeps_for(threshold: Threshold, real: Measurement, null: Measurement | None, trivial_if_null_passes: bool,
               grid_override: Grid | None, asked: tuple[str, Grid] | None) -> tuple[ThresholdSweep | None, ParamSweep | None]:
    """A claim's threshold sweep and two-parameter sweep (None where neither asked nor declared).

    A declared threshold sweep on a measurement that kept distributions by one parameter also gets
    the two-parameter sweep over every kept value."""
    if not (grid_override or threshold.sweep or asked):
        return None, None
    grid = threshold.sweep_grid(grid_override)
    sweep = threshold_sweep(real, null, threshold, grid, trivial_if_null_passes)
    if asked is not None:
        param, param_grid = asked[0], sweep_grid(*asked[1])
    elif threshold.at is not None and len(real.by_param) == 1:
        param, param_grid = next(iter(real.by_param)), None
    else:
        return sweep, None
    return sweep, param_sweep(real, null, threshold, grid, param, param_grid, trivial_if_null_passes)


def resweep(results: Any, sweeps: dict[str, Grid], param_sweeps: dict[str, tuple[str, Grid]]) -> Any:
    """Saved results (a results.RunRecord) with the named claims swept again from their saved
    distributions (no model loads). A claim given only a parameter sweep keeps the threshold grid it
    was saved with. Results no threshold decided (N/A, also one whose gate measured it, and ERROR) are left as they
    are."""
    unknown = sorted((set(sweeps) | set(param_sweeps)) - set(results.claims))
    if unknown:
        raise MechclaimsError(f"--sweep names claim {unknown[0]!r}, which these results do not hold: choose from "
                              f"{', '.join(sorted(results.claims))}")
    rows = []
    for row in results.results:
        claim_id = row.claim
        undecided = row.measurement is None or row.verdict in (Verdict.NA, Verdict.ERROR)
        if undecided or claim_id not in {*sweeps, *param_sweeps}:
            rows.append(row)
            continue
        trivial = results.claims[claim_id]["trivial_if_null_passes"]
        if claim_id in sweeps:
            grid = [float(x) for x in sweep_grid(*sweeps[claim_id])]
        elif row.sweep is not None:
            grid = [point.x for point in row.sweep.points]
        else:
            grid = [float(x) for x in row.threshold.sweep_grid()]
        updated = replace(row, sweep=threshold_sweep(row.measurement, row.null, row.threshold, grid, trivial))
        if claim_id in param_sweeps:
            param, param_grid = param_sweeps[claim_id]
            try:
                updated = replace(updated, param_sweep=param_sweep(row.measurement, row.null, row.threshold, grid, param,
                                                                   list(sweep_grid(*param_grid)), trivial))
            except MechclaimsError as exc:
                raise MechclaimsError(f"{claim_id} on {row.model}: {exc}") from None
        rows.append(updated)
    return replace(results, results=rows)
