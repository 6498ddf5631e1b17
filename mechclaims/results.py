"""results.json: versioned schema, run provenance, and loading saved runs.

Schema "mechclaims.results/1":
  run:     id, started, finished, versions{...}, git_revision, machine, threads, argv
  models:  {name: {resolved_from, fingerprint, capabilities, initialised_at_load (parameters the
            checkpoint lacked)}}
  claims:  {id: {paper, section, statement, rationale, params, threshold{statistic, op, value, at,
            origin}, trivial_if_null_passes, null, tolerance}}
  results: [{model, claim, verdict, reason, statistic, null_statistic, interval, null_interval (Wilson 95%
            [low, high] of fraction statistics, else null), threshold{..., overridden},
            params, seconds, cache_hit, measurement{statistics, distribution, distribution_label,
            details, curves{name: {x, y, x_label, y_label}}, by_param{name: {values, distributions}}},
            null{...} | null, sweep{axis, points[{x, statistic, null_statistic, verdict, interval,
            null_interval}]} | null, param_sweep{axis, param, x, y, statistic, null_statistic, verdict
            (y x x grids)} | null, baseline{status, message, old_statistic, new_statistic, old_verdict,
            new_verdict, tolerance} | null}]
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mechclaims.atomic import atomic_write_text
from mechclaims.errors import MechclaimsError
from mechclaims.registry import Claim, Measurement, Threshold

SCHEMA = "mechclaims.results/1"
RESULTS_INDENT = 1
ROW_DEFAULTS: dict[str, Any] = dict.fromkeys(
    ("reason", "statistic", "null_statistic", "interval", "null_interval", "seconds", "cache_hit", "measurement", "null",
     "sweep", "param_sweep", "baseline")
)
"""Every results row has these keys; None where they do not apply."""
VERSIONED_PACKAGES = ("mechclaims", "torch", "transformers", "transformer-lens", "numpy", "pytest")


def _rounded(values: Any) -> list[Any]:
    return np.round(np.asarray(values, dtype=float), 6).tolist()


def measurement_json(measurement: Measurement | None) -> dict[str, Any] | None:
    if measurement is None:
        return None
    distribution = measurement.distribution
    return {
        "statistics": {k: float(v) for k, v in measurement.statistics.items()},
        "distribution": None if distribution is None else _rounded(distribution),
        "distribution_label": measurement.distribution_label,
        "details": measurement.details,
        "curves": measurement.curves,
        "by_param": {name: {"values": list(axis["values"]), "distributions": _rounded(axis["distributions"])}
                     for name, axis in measurement.by_param.items()},
    }


def measurement_from_json(data: dict[str, Any] | None) -> Measurement | None:
    """The Measurement a results row saved (distributions as rounded to 6 decimals there)."""
    if data is None:
        return None
    distribution = data.get("distribution")
    return Measurement(
        statistics=data["statistics"],
        distribution=None if distribution is None else np.asarray(distribution, dtype=np.float64),
        distribution_label=data.get("distribution_label", ""),
        details=data.get("details", {}),
        curves=data.get("curves", {}),
        by_param={name: {"values": axis["values"], "distributions": np.asarray(axis["distributions"], dtype=np.float64)}
                  for name, axis in (data.get("by_param") or {}).items()},
    )


def threshold_from_json(data: dict[str, Any]) -> Threshold:
    return Threshold(statistic=data["statistic"], op=data["op"], value=data["value"], origin=data["origin"],
                     at=data["at"])


def threshold_json(threshold: Threshold, overridden: bool = False) -> dict[str, Any]:
    return {
        "statistic": threshold.statistic,
        "op": threshold.op,
        "value": threshold.value,
        "at": threshold.at,
        "origin": threshold.origin,
        "describe": threshold.describe(),
        "overridden": overridden,
    }


def claim_json(claim: Claim) -> dict[str, Any]:
    return {
        "paper": claim.paper,
        "section": claim.section,
        "statement": claim.statement,
        "rationale": claim.rationale,
        "params": claim.params,
        "threshold": threshold_json(claim.threshold),
        "null": claim.null,
        "trivial_if_null_passes": claim.trivial_if_null_passes,
        "tolerance": claim.tolerance,
    }


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


@dataclass
class RunRecord:
    """Everything one run measured, ready to serialise."""

    argv: list[str]
    started: float = field(default_factory=time.time)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "run": {
                "id": self.run_id,
                "started": self.started,
                "finished": time.time(),
                "versions": _versions(),
                "git_revision": _git_revision(),
                "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()},
                "threads": torch.get_num_threads(),
                "argv": self.argv,
            },
            "models": self.models,
            "claims": self.claims,
            "results": self.results,
        }

    def write(self, path: Path) -> dict[str, Any]:
        """Write results.json atomically; returns what was written."""
        data = self.to_json()
        atomic_write_text(path, json.dumps(data, indent=RESULTS_INDENT, default=json_default))
        return data


def json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)


def load_results(path: Path) -> dict[str, Any]:
    """A saved results.json, schema-checked (one-line error otherwise)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MechclaimsError(f"cannot read results file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise MechclaimsError(f"{path} is not a mechclaims results file (schema {SCHEMA}): re-run the claims")
    return data


def merge_results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several saved runs as one comparison: models side by side, claims united, rows concatenated.

    The first run's provenance heads the merge and `run.merged` lists every run. A model that an
    earlier run already holds gets the suffix ` @ <run id>`, so both columns stay visible.
    """
    if len(runs) == 1:
        return runs[0]
    merged: dict[str, Any] = {"schema": SCHEMA, "run": {**runs[0]["run"], "merged": []}, "models": {}, "claims": {},
                              "results": []}
    for data in runs:
        run = data["run"]
        merged["run"]["merged"].append({key: run.get(key) for key in ("id", "started", "git_revision", "argv")})
        names = {name: name if name not in merged["models"] else f"{name} @ {run['id']}" for name in data["models"]}
        merged["models"].update({names[name]: info for name, info in data["models"].items()})
        for claim_id, claim in data["claims"].items():
            merged["claims"].setdefault(claim_id, claim)
        merged["results"].extend({**row, "model": names.get(row["model"], row["model"])} for row in data["results"])
    return merged
