"""report.html: one self-contained page rendered from a results dict (jinja2, autoescaped). Models that are steps
of a training run (`trajectories`) also get each claim drawn against the step."""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2

from mechclaims.atomic import atomic_write_text
from mechclaims.report import figures
from mechclaims.results_schema import FINDING_STATUSES
from mechclaims.trajectories import Trajectory, trajectories

CHANGED = ("regression", "different weights")
"""Baseline statuses the matrix marks as changed since the baseline."""
FIGURE_DETAILS = ("sv_use", "head_distributions", "category_cosines", "ov_advantages", "loss_curves", "steps",
                  "llc_curves")
"""Measurement details drawn as figures rather than printed."""
VERDICT_CLASSES = {"PASS": "PASS", "FAIL": "FAIL", "TRIVIAL": "TRIVIAL", "N/A": "NA", "ERROR": "ERROR"}

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("mechclaims.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _number(value: Any) -> str:
    """Integers (token ids, counts) in full, other numbers to four significant figures; an en dash for
    missing values."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _interval(value: Any) -> str:
    """ " (95% CI [low, high])" for a Wilson interval; nothing where there is none."""
    if not value:
        return ""
    return f" (95% CI [{_number(value[0])}, {_number(value[1])}])"


_ENVIRONMENT.filters["num"] = _number
_ENVIRONMENT.filters["interval"] = _interval


def _ratio(real: Any, null: Any) -> float | None:
    if real is None or null is None or null == 0:
        return None
    return float(real) / float(null)


def _figures(result: dict[str, Any]) -> list[dict[str, str]]:
    """Histogram of the distribution (real vs null), the measurement's curves (real vs null) and the
    sweep curve, where the result has them: [{alt, uri}]."""
    out: list[dict[str, str]] = []
    measurement, null = result.get("measurement") or {}, result.get("null") or {}
    threshold = result["threshold"]
    if measurement.get("distribution"):
        label = measurement["distribution_label"]
        out.append({"alt": f"distribution of {label}, model vs null", "uri": figures.distribution_histogram(
            measurement["distribution"], null.get("distribution"), label, threshold.get("at"))})
    for name, curve in measurement.get("curves", {}).items():
        out.append({"alt": f"{curve['y_label']} against {curve['x_label']}, model vs null",
                    "uri": figures.measurement_curve(curve, null.get("curves", {}).get(name))})
    sweep = result.get("sweep")
    if sweep:
        out.append({"alt": "sweep of the threshold",
                    "uri": figures.sweep_curve(sweep["points"], _threshold_marks(threshold, sweep["axis"]))})
    out += _detail_figures(measurement.get("details") or {}, null.get("distribution"), result["model"])
    grid = result.get("param_sweep")
    if grid:
        param_value = (result.get("params") or {}).get(grid["param"])
        out.append({"alt": f"sweep of the cut-off and {grid['param']}", "uri": figures.sweep_heatmap(
            grid, threshold["at"], param_value, threshold["value"])})
    return out


def _detail_figures(details: dict[str, Any], null: list[float] | None, model: str) -> list[dict[str, str]]:
    """Figures a measurement's details call for: a traced circuit (`circuit_edges`), singular-vector use per
    firing (`sv_use`), per-head distributions (`head_distributions`), mean cosines between word categories
    (`category_cosines`)."""
    out = []
    if details.get("circuit_edges"):
        title = f"traced circuit on {model} (dashed: through the key)"
        out.append({"alt": "traced circuit graph", "uri": figures.circuit_graph(details["circuit_edges"], title)})
    use = details.get("sv_use")
    if use and use.get("rows"):
        title = f"singular vectors selected by head {use['head']}'s end -> IO firings"
        out.append({"alt": f"singular-vector use of head {use['head']}",
                    "uri": figures.usage_heatmap(use["rows"], use["rank"], title)})
    if details.get("head_distributions"):
        out.append({"alt": "per-head distributions, model vs null", "uri": figures.head_histograms(
            details["head_distributions"], null, "selected-set size / d_head")})
    grid = details.get("category_cosines")
    if grid and grid.get("categories"):
        out.append({"alt": "mean cosine between token categories", "uri": figures.category_heatmap(
            grid["categories"], grid["matrix"], f"mean cosine between token categories on {model}")})
    if details.get("ov_advantages"):
        out.append({"alt": "OV diagonal advantage of each head over the numbers, per run",
                    "uri": figures.head_diagonals(details["ov_advantages"],
                                                  f"OV diagonal advantage (logits) per head on {model}")})
    if details.get("loss_curves"):
        out.append({"alt": "training loss of each run", "uri": figures.loss_curves(
            details["loss_curves"], details.get("steps") or {}, f"training loss of the runs of {model}")})
    if details.get("llc_curves"):
        out.append({"alt": "Local Learning Coefficient of each run over training", "uri": figures.llc_curves(
            details["llc_curves"], f"LLC over training of the runs of {model}")})
    runs = details.get("runs")
    if runs and all("mode" in run for run in runs):
        out.append({"alt": "fraction of runs in each head mode per weight decay and mean gap",
                    "uri": figures.mode_fractions(_mode_groups(runs), f"head modes on {model}")})
    if runs and any(run.get("checkpoint_modes") for run in runs):
        out.append({"alt": "each run's head mode at every checkpoint, with the step it settled at",
                    "uri": figures.mode_strips(runs, f"head modes along training on {model}")})
    return out


def _mode_groups(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{"wd W, gap G": {mode: fraction of those runs}} from a measurement's per-run table."""
    groups: dict[str, list[str]] = {}
    for run in runs:
        groups.setdefault(f"wd {run['weight_decay']:g}\ngap {run['mean_gap']:g}", []).append(run["mode"])
    return {name: {mode: modes.count(mode) / len(modes) for mode in set(modes)} for name, modes in groups.items()}


def _threshold_marks(threshold: dict[str, Any], axis: str) -> figures.ThresholdMarks:
    """The claim's threshold on a sweep's axis: its cut-off and value for fractions, else its value."""
    whose = "overridden" if threshold.get("overridden") else threshold["origin"]
    if axis == "at":
        return figures.ThresholdMarks(threshold["at"], threshold["value"], f"{threshold['statistic']} cut-off", whose)
    return figures.ThresholdMarks(threshold["value"], None, "threshold value", whose)


def _sweep_comparison(rows: list[dict[str, Any]]) -> dict[str, str] | None:
    """One figure with every model's sweep of a claim, where two or more models have one on the same axis."""
    swept = [row for row in rows if row["result"].get("sweep")]
    axes = {row["result"]["sweep"]["axis"] for row in swept}
    if len(swept) < 2 or len(axes) != 1:
        return None
    marks = _threshold_marks(swept[0]["result"]["threshold"], axes.pop())
    curves = {row["model"]: row["result"]["sweep"]["points"] for row in swept}
    return {"alt": f"sweep of the threshold on {len(curves)} models", "uri": figures.sweep_comparison(curves, marks)}


def _statistics_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    real = (result.get("measurement") or {}).get("statistics", {})
    null = (result.get("null") or {}).get("statistics", {})
    return [{"name": k, "real": v, "null": null.get(k), "ratio": _ratio(v, null.get(k))} for k, v in real.items()]


def _trajectory(trajectory: Trajectory) -> dict[str, Any]:
    """A claim along one training run: its figure and its points (step, model, verdict, statistics) for the table."""
    points = [asdict(point) for point in trajectory.points]
    title = f"{trajectory.claim} along {trajectory.name}"
    return {"name": trajectory.name, "points": points, "alt": f"{trajectory.claim} against training step",
            "uri": figures.trajectory_curve(points, trajectory.threshold["value"], trajectory.threshold["statistic"],
                                            title)}


def render_html(results: dict[str, Any]) -> str:
    """The report page for a results dict (schema mechclaims.results/1)."""
    models = list(results["models"]) or sorted({r["model"] for r in results["results"]})
    for result in results["results"]:
        if result["model"] not in models:
            models.append(result["model"])
    cells = {(r["claim"], r["model"]): r for r in results["results"]}
    along_training = trajectories(results)
    sections = []
    for claim_id, claim in results["claims"].items():
        rows = []
        for model in models:
            result = cells.get((claim_id, model))
            if result is None:
                continue
            rows.append({
                "model": model,
                "result": result,
                "ratio": _ratio(result.get("statistic"), result.get("null_statistic")),
                "statistics": _statistics_rows(result),
                "figures": _figures(result),
                "details": {key: value for key, value in ((result.get("measurement") or {}).get("details") or {}).items()
                            if key not in FIGURE_DETAILS},
            })
        sections.append({"id": claim_id, "claim": claim, "rows": rows, "comparison": _sweep_comparison(rows),
                         "trajectories": [_trajectory(t) for t in along_training if t.claim == claim_id]})
    run = results["run"]
    return _ENVIRONMENT.get_template("report.html.j2").render(
        run=run,
        started=datetime.datetime.fromtimestamp(run["started"], datetime.timezone.utc).isoformat(timespec="seconds"),
        models=models,
        model_info=results["models"],
        claims=results["claims"],
        cells=cells,
        sections=sections,
        changed_statuses=CHANGED,
        changed=[change for r in results["results"] if (change := _change(r))],
        findings=Counter(r["finding"]["status"] for r in results["results"] if r.get("finding")),
        finding_statuses=dict(zip(("known", "changed", "new"), FINDING_STATUSES)),
        verdict_class=VERDICT_CLASSES,
    )


def _change(result: dict[str, Any]) -> tuple[str, str] | None:
    """(status, message) of a result that changed since its baseline: a regression or new weights, or a known finding
    that no longer fails; None for any other."""
    baseline, finding = result.get("baseline") or {}, result.get("finding") or {}
    if finding.get("status") == FINDING_STATUSES[1]:
        return finding["status"], finding["message"]
    if baseline.get("status") in CHANGED:
        return baseline["status"], baseline["message"]
    return None


def render_report(results: dict[str, Any], out_path: Path) -> None:
    """Write report.html atomically."""
    atomic_write_text(Path(out_path), render_html(results))
