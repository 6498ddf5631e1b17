"""Threshold sweeps from a measurement already made: the verdict at every grid point, nothing re-measured.

A one-parameter sweep moves the threshold (the cut-off `at` of a fraction statistic, else the
value). A two-parameter sweep also moves one claim parameter whose distributions the measurement
kept (`Measurement.by_param`, e.g. the bundles' `max_tokens`), and is drawn as a heatmap.
"""

from __future__ import annotations

from typing import Any, Sequence

from mechclaims.errors import MechclaimsError
from mechclaims.registry import Grid, Measurement, Threshold, decide, sweep_grid
from mechclaims.results import measurement_from_json, threshold_from_json


def threshold_sweep(real: Measurement, null: Measurement | None, threshold: Threshold, grid: Sequence[float],
                    trivial_if_null_passes: bool) -> dict[str, Any]:
    """{axis, points[{x, statistic, null_statistic, verdict, interval, null_interval}]} over `grid`."""
    points = []
    for x in grid:
        moved = threshold.moved_to(float(x))
        verdict, statistic, null_statistic = decide(real, null, moved, trivial_if_null_passes)
        points.append({"x": float(x), "statistic": statistic, "null_statistic": null_statistic, "verdict": verdict.value,
                       "interval": moved.interval_of(real), "null_interval": moved.interval_of(null)})
    return {"axis": "at" if threshold.at is not None else "value", "points": points}


def param_sweep(real: Measurement, null: Measurement | None, threshold: Threshold, grid: Sequence[float],
                param: str, param_grid: Sequence[float] | None, trivial_if_null_passes: bool) -> dict[str, Any]:
    """The fraction statistic and verdict on the grid (cut-off x `param`), real and null.

    `param_grid` None means every value the measurement kept. Rows follow `param`, columns the cut-off:
    statistic[i][j] is the statistic at param = y[i], cut-off = x[j].
    """
    if threshold.at is None:
        raise MechclaimsError(f"a sweep over {param!r} needs a fraction statistic; {threshold.statistic!r} is a "
                              "single number: sweep its threshold alone")
    values = real.param_values(param) if param_grid is None else [float(v) for v in param_grid]
    rows = []
    for value in values:
        at_value = real.at_param(param, value)
        null_at_value = None if null is None or param not in null.by_param else null.at_param(param, value)
        rows.append(threshold_sweep(at_value, null_at_value, threshold, grid, trivial_if_null_passes)["points"])
    return {
        "axis": "at",
        "param": param,
        "x": [float(x) for x in grid],
        "y": values,
        **{key: [[point[key] for point in row] for row in rows] for key in ("statistic", "null_statistic", "verdict")},
    }


def resweep(results: dict[str, Any], sweeps: dict[str, Grid], param_sweeps: dict[str, tuple[str, Grid]]) -> dict[str, Any]:
    """Saved results with the named claims swept again from their saved distributions (no model loads).

    A claim given only a parameter sweep keeps the threshold grid it was saved with. Rows without a
    measurement (N/A, ERROR) are left as they are.
    """
    unknown = sorted((set(sweeps) | set(param_sweeps)) - set(results["claims"]))
    if unknown:
        raise MechclaimsError(f"--sweep names claim {unknown[0]!r}, which these results do not hold: choose from "
                              f"{', '.join(sorted(results['claims']))}")
    rows = []
    for row in results["results"]:
        claim_id = row["claim"]
        if row.get("measurement") is None or claim_id not in {*sweeps, *param_sweeps}:
            rows.append(row)
            continue
        trivial = results["claims"][claim_id]["trivial_if_null_passes"]
        threshold = threshold_from_json(row["threshold"])
        real, null = measurement_from_json(row["measurement"]), measurement_from_json(row["null"])
        if claim_id in sweeps:
            grid = [float(x) for x in sweep_grid(*sweeps[claim_id])]
        elif row.get("sweep"):
            grid = [point["x"] for point in row["sweep"]["points"]]
        else:
            grid = [float(x) for x in threshold.sweep_grid()]
        updated = {**row, "sweep": threshold_sweep(real, null, threshold, grid, trivial)}
        if claim_id in param_sweeps:
            param, param_grid = param_sweeps[claim_id]
            try:
                updated["param_sweep"] = param_sweep(real, null, threshold, grid, param,
                                                     list(sweep_grid(*param_grid)), trivial)
            except MechclaimsError as exc:
                raise MechclaimsError(f"{claim_id} on {row['model']}: {exc}") from None
        rows.append(updated)
    return {**results, "results": rows}
