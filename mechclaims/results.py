"""results.json: the typed Result and Comparison, run provenance, and loading saved runs.

Schema "mechclaims.results/1":
  run:     id, started, finished, versions{...}, git_revision, machine, threads, argv
  models:  {name: {resolved_from, fingerprint, capabilities, initialised_at_load (parameters the
            checkpoint lacked)}}
  claims:  {id: Claim.to_json(): paper, section, statement, rationale, params, threshold{statistic, op,
            value, at, origin, sweep, describe}, trivial_if_null_passes, null, tolerance, inputs[{dataset,
            options}] | null, gate{statistic, op, value, reason} | null}
  results: [Result.to_json(): {model, claim, verdict, reason, statistic, null_statistic, interval,
            null_interval (Wilson 95% [low, high] of fraction statistics, else null), threshold{...,
            overridden}, params, params_overridden (names set by --param), seconds, cache_hit,
            measurement{statistics, distribution, distribution_label, details, curves{name: {x, y,
            x_label, y_label}}, by_param{name: {values, distributions}}}, null{...} | null,
            sweep{axis, points[{x, statistic, null_statistic, verdict, interval, null_interval}]} | null,
            param_sweep{axis, param, x, y, statistic, null_statistic, verdict (y x x grids)} | null,
            baseline{status, message, old_statistic, new_statistic, old_verdict, new_verdict, tolerance}
            | null, traceback, finding{status (known finding, changed since baseline, new finding), message} | null}]
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mechclaims.atomic import atomic_write_text
from mechclaims.claim import Threshold, Verdict
from mechclaims.errors import MechclaimsError
from mechclaims.kernels import product_kernel
from mechclaims.results_schema import FINDING_STATUSES, check_results
from mechclaims.measurement import Measurement
from mechclaims.sweeps import ParamSweep, ThresholdSweep

SCHEMA = "mechclaims.results/1"
RESULTS_INDENT = None
"""Compact JSON: the standard library writes it with its C encoder (an indented 33 MB results.json took 5 s)."""
RESULTS_DECIMALS = 6
"""Distributions in results.json are rounded to this many decimals (the cache keeps them exact)."""
VERSIONED_PACKAGES = ("mechclaims", "torch", "transformers", "transformer-lens", "numpy", "pytest")
UNCHANGED, REGRESSION, DIFFERENT_WEIGHTS, NOT_RECORDED = "unchanged", "regression", "different weights", "not recorded"
KNOWN, CHANGED, NEW = FINDING_STATUSES


@dataclass(frozen=True)
class Comparison:
    """One result against its baseline: `status` is one of UNCHANGED, REGRESSION, DIFFERENT_WEIGHTS,
    NOT_RECORDED; `message` says why, with old, new and tolerance."""

    status: str
    message: str
    old_statistic: float | None = None
    new_statistic: float | None = None
    old_verdict: str | None = None
    new_verdict: str | None = None
    tolerance: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Comparison:
        return cls(**data)


@dataclass(frozen=True)
class Finding:
    """A claim that fails on a model (FAIL, or TRIVIAL under --strict-null) set against the model's baseline:
    `status` KNOWN (the baseline records that failure under the same threshold and parameters: an expected failure),
    CHANGED (the baseline records a failure that no longer fails) or NEW (no baseline records it); `message` says
    which baseline, at which git revision."""

    status: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        return cls(**data)


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


def _optional(data: dict[str, Any] | None, kind: Any) -> Any:
    return None if data is None else kind.from_json(data)


@dataclass(frozen=True)
class Result:
    """One claim on one model: the verdict under `threshold`, the statistic and its null, what was
    measured, the sweeps and the comparison with the model's baseline."""

    model: str
    claim: str
    verdict: Verdict
    threshold: Threshold
    params: dict[str, Any]
    threshold_overridden: bool = False
    params_overridden: tuple[str, ...] = ()
    reason: str | None = None
    statistic: float | None = None
    null_statistic: float | None = None
    interval: tuple[float, float] | None = None
    null_interval: tuple[float, float] | None = None
    seconds: float | None = None
    cache_hit: bool | None = None
    measurement: Measurement | None = None
    null: Measurement | None = None
    sweep: ThresholdSweep | None = None
    param_sweep: ParamSweep | None = None
    baseline: Comparison | None = None
    traceback: str | None = None
    finding: Finding | None = None

    def summary(self) -> str:
        """One line: the claim on the model, its statistic against the threshold, and the null."""
        value = "n/a" if self.statistic is None else f"{self.statistic:.4g}"
        null = "n/a" if self.null_statistic is None else f"{self.null_statistic:.4g}"
        return (f"{self.claim} on {self.model}: {self.threshold.statistic} = {value}, threshold "
                f"{self.threshold.describe()} ({self.threshold.origin}); null = {null}")

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "claim": self.claim,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "statistic": self.statistic,
            "null_statistic": self.null_statistic,
            "interval": self.interval,
            "null_interval": self.null_interval,
            "threshold": {**self.threshold.to_json(), "overridden": self.threshold_overridden},
            "params": self.params,
            "params_overridden": list(self.params_overridden),
            "seconds": self.seconds,
            "cache_hit": self.cache_hit,
            "measurement": None if self.measurement is None else self.measurement.to_json(RESULTS_DECIMALS),
            "null": None if self.null is None else self.null.to_json(RESULTS_DECIMALS),
            "sweep": None if self.sweep is None else self.sweep.to_json(),
            "param_sweep": None if self.param_sweep is None else self.param_sweep.to_json(),
            "baseline": None if self.baseline is None else self.baseline.to_json(),
            "traceback": self.traceback,
            "finding": None if self.finding is None else self.finding.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        return cls(
            model=data["model"],
            claim=data["claim"],
            verdict=Verdict(data["verdict"]),
            threshold=Threshold.from_json(data["threshold"]),
            params=data.get("params") or {},
            threshold_overridden=bool(data["threshold"].get("overridden")),
            params_overridden=tuple(data.get("params_overridden") or ()),
            reason=data.get("reason"),
            statistic=data.get("statistic"),
            null_statistic=data.get("null_statistic"),
            interval=_pair(data.get("interval")),
            null_interval=_pair(data.get("null_interval")),
            seconds=data.get("seconds"),
            cache_hit=data.get("cache_hit"),
            measurement=_optional(data.get("measurement"), Measurement),
            null=_optional(data.get("null"), Measurement),
            sweep=_optional(data.get("sweep"), ThresholdSweep),
            param_sweep=_optional(data.get("param_sweep"), ParamSweep),
            baseline=_optional(data.get("baseline"), Comparison),
            traceback=data.get("traceback"),
            finding=_optional(data.get("finding"), Finding),
        )


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
    """Everything one run measured: provenance (`run`, filled when serialised unless loaded), the
    models' provenance, the claims as data, and the results; `interrupted` marks a run stopped before its end
    (Ctrl-C), whose results are partial; `cluster` says where a cluster run's tasks ran and which were retried
    (`cluster.Cluster.describe`)."""

    argv: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    run: dict[str, Any] | None = None
    interrupted: bool = False
    cluster: dict[str, Any] | None = None

    def provenance(self) -> dict[str, Any]:
        """The `run` block: as loaded, or this process's versions, revision and machine now."""
        if self.run is not None:
            return self.run
        return {
            "id": self.run_id,
            "started": self.started,
            "finished": time.time(),
            "versions": _versions(),
            "git_revision": _git_revision(),
            "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()},
            "threads": torch.get_num_threads(),
            "product_kernel": product_kernel().to_json(),
            "argv": self.argv,
            "interrupted": self.interrupted,
            **({} if self.cluster is None else {"cluster": self.cluster}),
        }

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "run": self.provenance(), "models": self.models, "claims": self.claims,
                "results": [result.to_json() for result in self.results]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        run = data["run"]
        return cls(argv=run.get("argv") or [], started=run["started"], run_id=run["id"], models=data["models"],
                   claims=data["claims"], results=[Result.from_json(row) for row in data["results"]], run=run)

    def write(self, path: Path) -> dict[str, Any]:
        """Write results.json atomically; returns what was written."""
        data = self.to_json()
        atomic_write_text(path, json.dumps(data, indent=RESULTS_INDENT, default=json_default))
        return data


def json_default(value: Any) -> Any:
    """numpy scalars and arrays as plain JSON; anything else by its text."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def model_entry(model: Any, resolved_from: str | None = None) -> dict[str, Any]:
    """A loaded model's (or family's) entry under `models` in results.json; `resolved_from` where the model does not
    say (`auto`); `recipe` for a model the suite trains itself (models.specs.recipe)."""
    return {
        "resolved_from": model.resolved_from or resolved_from,
        "fingerprint": model.fingerprint,
        "recipe": model_recipe(model.name),
        "capabilities": model.capabilities.to_json(),
        "initialised_at_load": list(model.initialised_at_load),
    }


def model_recipe(name: str) -> str | None:
    """models.specs.recipe of the model named `name`; None where its kind has none (or the name is no spec)."""
    from mechclaims.models import specs

    try:
        return specs.recipe(specs.parse(name))
    except MechclaimsError:
        return None


def load_results(path: Path) -> RunRecord:
    """A saved results.json, checked against its JSON Schema (`results_schema`; one-line error otherwise)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MechclaimsError(f"cannot read results file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise MechclaimsError(f"{path} is not a mechclaims results file (schema {SCHEMA}): re-run the claims")
    check_results(data, str(path))
    try:
        return RunRecord.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise MechclaimsError(f"{path} is a damaged results file ({type(exc).__name__}: {exc}): re-run the claims") from None


def merge_results(runs: list[RunRecord]) -> RunRecord:
    """Several saved runs as one comparison: models side by side, claims united, results concatenated.

    The first run's provenance heads the merge and `run.merged` lists every run. A model that an
    earlier run already holds gets the suffix ` @ <run id>`, so both columns stay visible.
    """
    if len(runs) == 1:
        return runs[0]
    first = runs[0].provenance()
    merged = RunRecord(argv=first.get("argv") or [], started=first["started"], run_id=first["id"],
                       run={**first, "merged": []})
    for record in runs:
        run = record.provenance()
        merged.run["merged"].append({key: run.get(key) for key in ("id", "started", "git_revision", "argv")})
        names = {name: name if name not in merged.models else f"{name} @ {run['id']}" for name in record.models}
        merged.models.update({names[name]: info for name, info in record.models.items()})
        for claim_id, claim in record.claims.items():
            merged.claims.setdefault(claim_id, claim)
        merged.results.extend(replace(result, model=names.get(result.model, result.model)) for result in record.results)
    return merged
