"""report.html: one self-contained page rendered from a results dict (jinja2, autoescaped)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import jinja2

from mechclaims.atomic import atomic_write_text
from mechclaims.report import figures

VERDICT_CLASSES = {"PASS": "PASS", "FAIL": "FAIL", "TRIVIAL": "TRIVIAL", "N/A": "NA", "ERROR": "ERROR"}

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("mechclaims.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _number(value: Any) -> str:
    """Four significant figures for numbers; an en dash for missing values."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
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
        x = threshold["at"] if sweep["axis"] == "at" else threshold["value"]
        axis = f"{threshold['statistic']} cut-off" if sweep["axis"] == "at" else "threshold value"
        out.append({"alt": "sweep of the threshold", "uri": figures.sweep_curve(sweep["points"], x, axis)})
    return out


def _statistics_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    real = (result.get("measurement") or {}).get("statistics", {})
    null = (result.get("null") or {}).get("statistics", {})
    return [{"name": k, "real": v, "null": null.get(k), "ratio": _ratio(v, null.get(k))} for k, v in real.items()]


def render_html(results: dict[str, Any]) -> str:
    """The report page for a results dict (schema mechclaims.results/1)."""
    models = list(results["models"]) or sorted({r["model"] for r in results["results"]})
    for result in results["results"]:
        if result["model"] not in models:
            models.append(result["model"])
    cells = {(r["claim"], r["model"]): r for r in results["results"]}
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
                "details": (result.get("measurement") or {}).get("details", {}),
            })
        sections.append({"id": claim_id, "claim": claim, "rows": rows})
    run = results["run"]
    return _ENVIRONMENT.get_template("report.html.j2").render(
        run=run,
        started=datetime.datetime.fromtimestamp(run["started"], datetime.timezone.utc).isoformat(timespec="seconds"),
        models=models,
        model_info=results["models"],
        claims=results["claims"],
        cells=cells,
        sections=sections,
        verdict_class=VERDICT_CLASSES,
    )


def render_report(results: dict[str, Any], out_path: Path) -> None:
    """Write report.html atomically."""
    atomic_write_text(Path(out_path), render_html(results))
