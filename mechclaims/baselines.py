"""Baselines: each model's recorded results, and the comparison that turns a moved measurement into a regression.

`reports/baselines/<model>.json`, schema "mechclaims.baseline/1":
  model, fingerprint, recorded{run, started, git_revision, versions}
  claims: {claim id: {statistic, null_statistic, verdict, threshold (its description), params, tolerance}}

A result regresses when its verdict changed under the same threshold, or its statistic moved by more
than the claim's tolerance (absolute). A model whose fingerprint differs from the baseline's has
different weights: it is reported as such, not compared.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mechclaims.atomic import atomic_write_text
from mechclaims.errors import MechclaimsError

SCHEMA = "mechclaims.baseline/1"
DEFAULT_DIR = Path("reports") / "baselines"
UNCHANGED, REGRESSION, DIFFERENT_WEIGHTS, NOT_RECORDED = "unchanged", "regression", "different weights", "not recorded"


def baseline_file(directory: Path, model: str) -> Path:
    """`<directory>/<model>.json`, the model name reduced to file-name characters."""
    return Path(directory) / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', model).strip('._') or 'model'}.json"


def load_baseline(directory: Path, model: str) -> dict[str, Any] | None:
    """The model's baseline, None when none was recorded; a one-line error when it cannot be used."""
    path = baseline_file(directory, model)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MechclaimsError(f"baseline {path} cannot be read ({exc}): restore it from git or re-record it with "
                              "--update-baselines") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or data.get("model") != model:
        raise MechclaimsError(f"{path} is not a {SCHEMA} baseline of {model!r}: re-record it with --update-baselines")
    return data


def _entry(row: dict[str, Any], tolerance: float) -> dict[str, Any]:
    return {"statistic": row["statistic"], "null_statistic": row["null_statistic"], "verdict": row["verdict"],
            "threshold": row["threshold"]["describe"], "params": row["params"], "tolerance": tolerance}


def update_baselines(directory: Path, results: dict[str, Any]) -> list[Path]:
    """Record every loaded model's results as its baseline (atomically, one file per model).

    Claims this run did not measure keep their recorded entries while the weights are the same;
    a model with new weights starts a fresh baseline.
    """
    written = []
    for model, info in results["models"].items():
        rows = [row for row in results["results"] if row["model"] == model]
        try:
            previous = load_baseline(directory, model)
        except MechclaimsError:
            previous = None
        claims = previous["claims"] if previous and previous["fingerprint"] == info["fingerprint"] else {}
        claims.update({row["claim"]: _entry(row, results["claims"][row["claim"]]["tolerance"]) for row in rows})
        run = results["run"]
        baseline = {
            "schema": SCHEMA,
            "model": model,
            "fingerprint": info["fingerprint"],
            "recorded": {"run": run["id"], "started": run["started"], "git_revision": run["git_revision"],
                         "versions": run["versions"]},
            "claims": dict(sorted(claims.items())),
        }
        path = baseline_file(directory, model)
        atomic_write_text(path, json.dumps(baseline, indent=1) + "\n")
        written.append(path)
    return written


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


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def compare(row: dict[str, Any], fingerprint: str, baseline: dict[str, Any], source: Path, tolerance: float) -> Comparison:
    """Compare one results row (this run, the model with `fingerprint`) with `baseline` (read from `source`)."""
    claim, model = row["claim"], row["model"]
    entry = baseline["claims"].get(claim)
    if entry is None:
        return Comparison(NOT_RECORDED, f"{source} has no entry for {claim}: record one with --update-baselines")
    old, new = entry["statistic"], row["statistic"]
    numbers = {"old_statistic": old, "new_statistic": new, "old_verdict": entry["verdict"],
               "new_verdict": row["verdict"], "tolerance": tolerance}
    if baseline["fingerprint"] != fingerprint:
        return Comparison(DIFFERENT_WEIGHTS, f"different weights: {model} now has fingerprint {fingerprint[:12]}, its "
                          f"baseline {source} was recorded on {baseline['fingerprint'][:12]}; not compared (re-record "
                          "with --update-baselines if the new weights are intended)", **numbers)
    reasons = []
    same_threshold = entry["threshold"] == row["threshold"]["describe"]
    if same_threshold and entry["verdict"] != row["verdict"]:
        reasons.append(f"verdict {entry['verdict']} -> {row['verdict']}")
    if (old is None) != (new is None) or (old is not None and abs(new - old) > tolerance):
        moved = "" if old is None or new is None else f", moved {new - old:+.3g}"
        reasons.append(f"statistic {_number(old)} -> {_number(new)}{moved}")
    summary = f"old {_number(old)} ({entry['verdict']}), new {_number(new)} ({row['verdict']}), tolerance ±{tolerance:g}"
    notes = [] if same_threshold else [f"threshold {entry['threshold']} -> {row['threshold']['describe']}, verdicts not compared"]
    if entry["params"] != row["params"]:
        notes.append(f"parameters {entry['params']} -> {row['params']}")
    detail = "".join(f"; {note}" for note in notes) + f" (baseline {source}, git {(baseline['recorded']['git_revision'] or '?')[:10]})"
    if reasons:
        return Comparison(REGRESSION, f"regression of {claim} on {model}: {'; '.join(reasons)}: {summary}{detail}", **numbers)
    return Comparison(UNCHANGED, f"{claim} on {model} unchanged: {summary}{detail}", **numbers)
