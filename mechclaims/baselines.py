"""Baselines: each model's recorded results, and the comparison that turns a moved measurement into a regression.

`reports/baselines/<model>.json`, schema "mechclaims.baseline/1":
  model, fingerprint, recipe (optional), recorded{run, started, git_revision, versions}
  claims: {claim id: {statistic, null_statistic, verdict, threshold (its description), params, tolerance,
           outcomes (optional: each unit's categorical result, e.g. each training run's head mode)}}

A result regresses when its verdict changed under the same threshold, its statistic moved by more than the
claim's tolerance (absolute), or one of its recorded outcomes changed. A model whose fingerprint differs from the
baseline's has different weights: it is reported as such, not compared, unless it is a model the suite trains
itself with the baseline's recipe (the same configurations, seeds and training code, retrained on another CPU or
torch): its statistics and outcomes are then compared as usual, and the comparison says "retrained: weights
differ, statistics compared". A failing claim the baseline records failing under the same
threshold and parameters is a known finding (`Baselines.finding`), which the plugin runs as a strict expected failure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mechclaims.atomic import atomic_write_text
from mechclaims.claim import Verdict
from mechclaims.errors import MechclaimsError
from mechclaims.results import (
    CHANGED,
    DIFFERENT_WEIGHTS,
    KNOWN,
    NEW,
    NOT_RECORDED,
    REGRESSION,
    UNCHANGED,
    Comparison,
    Finding,
    Result,
    RunRecord,
)

SCHEMA = "mechclaims.baseline/1"
DEFAULT_DIR = Path("reports") / "baselines"


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
    broken = _broken(data)
    if broken is not None:
        raise MechclaimsError(f"baseline {path} is broken ({broken}): restore it from git or re-record it with "
                              "--update-baselines")
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _broken(data: dict[str, Any]) -> str | None:
    """The first place where a baseline's body departs from the schema (module docstring), or None."""
    if not isinstance(data.get("fingerprint"), str):
        return "fingerprint is not a string"
    recorded = data.get("recorded")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("git_revision", 0), (str, type(None))):
        return "recorded.git_revision is missing"
    claims = data.get("claims")
    if not isinstance(claims, dict):
        return "claims is not an object"
    verdicts = {verdict.value for verdict in Verdict}
    for claim, entry in claims.items():
        where = f"claims[{claim!r}]"
        if not isinstance(entry, dict):
            return f"{where} is not an object"
        for key in ("statistic", "null_statistic"):
            if key not in entry or not (entry[key] is None or _is_number(entry[key])):
                return f"{where}.{key} is {entry.get(key, 'missing')!r}, not a number or null"
        if not isinstance(entry.get("verdict"), str) or entry["verdict"] not in verdicts:
            return f"{where}.verdict is {entry.get('verdict', 'missing')!r}, not one of {', '.join(sorted(verdicts))}"
        if not isinstance(entry.get("threshold"), str) or not isinstance(entry.get("params"), dict):
            return f"{where} lacks its threshold text or params object"
        if not _is_number(entry.get("tolerance")):
            return f"{where}.tolerance is {entry.get('tolerance', 'missing')!r}, not a number"
    return None


def _outcomes(result: Result) -> dict[str, str] | None:
    """The measurement's categorical outcomes per unit (`details["outcomes"]`), when it has them."""
    found = None if result.measurement is None else result.measurement.details.get("outcomes")
    return {str(unit): str(value) for unit, value in found.items()} if isinstance(found, dict) else None


def _entry(result: Result, tolerance: float) -> dict[str, Any]:
    entry = {"statistic": result.statistic, "null_statistic": result.null_statistic, "verdict": result.verdict.value,
             "threshold": result.threshold.describe(), "params": result.params, "tolerance": tolerance}
    outcomes = _outcomes(result)
    return entry if outcomes is None else {**entry, "outcomes": outcomes}


def update_baselines(directory: Path, record: RunRecord) -> list[Path]:
    """Record every loaded model's results as its baseline (atomically, one file per model).

    Claims this run did not measure keep their recorded entries while the weights are the same;
    a model with new weights starts a fresh baseline.
    """
    written = []
    run = record.provenance()
    for model, info in record.models.items():
        try:
            previous = load_baseline(directory, model)
        except MechclaimsError:
            previous = None
        recipe = info.get("recipe")
        same = previous is not None and (previous["fingerprint"] == info["fingerprint"] or
                                         (recipe is not None and previous.get("recipe") == recipe))
        claims = previous["claims"] if same else {}
        claims.update({result.claim: _entry(result, record.claims[result.claim]["tolerance"])
                       for result in record.results if result.model == model})
        baseline = {
            "schema": SCHEMA,
            "model": model,
            "fingerprint": info["fingerprint"],
            **({"recipe": recipe} if recipe is not None else {}),
            "recorded": {"run": run["id"], "started": run["started"], "git_revision": run["git_revision"],
                         "versions": run["versions"]},
            "claims": dict(sorted(claims.items())),
        }
        path = baseline_file(directory, model)
        atomic_write_text(path, json.dumps(baseline, indent=1) + "\n")
        written.append(path)
    return written


class Baselines:
    """The baselines in one folder, each model's file read once, on first use."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._read: dict[str, dict[str, Any] | str | None] = {}

    def has(self, model: str) -> bool:
        return baseline_file(self.directory, model).is_file()

    def _baseline(self, model: str) -> dict[str, Any] | str | None:
        """The model's baseline, None without one, or why it cannot be read."""
        if model not in self._read:
            try:
                self._read[model] = load_baseline(self.directory, model)
            except MechclaimsError as exc:
                self._read[model] = str(exc)
        return self._read[model]

    def finding(self, result: Result, fails: bool, strict_null: bool) -> Finding | None:
        """A result that fails (`fails`: FAIL, or TRIVIAL under --strict-null), or that its baseline records failing,
        set against that baseline: KNOWN where the baseline records the claim failing on the model under the same
        threshold and parameters (whatever the weights), CHANGED where it records such a failure and the result no
        longer fails, NEW where the result fails and the baseline does not record it; None otherwise."""
        baseline = self._baseline(result.model)
        entry = baseline["claims"].get(result.claim) if isinstance(baseline, dict) else None
        failing = {Verdict.FAIL.value} | ({Verdict.TRIVIAL.value} if strict_null else set())
        if (entry is None or entry["verdict"] not in failing or entry["threshold"] != result.threshold.describe()
                or entry["params"] != _as_json(result.params)):
            return new_finding(result, self.directory) if fails else None
        assert isinstance(baseline, dict), "an entry comes from a readable baseline"
        git = (baseline["recorded"].get("git_revision") or "?")[:10]
        recorded = (f"{entry['verdict']} of {result.claim} on {result.model} (statistic {_number(entry['statistic'])}, "
                    f"threshold {entry['threshold']}) recorded in {baseline_file(self.directory, result.model)} (git "
                    f"{git})")
        if fails:
            return Finding(KNOWN, f"known finding: {recorded}")
        return Finding(CHANGED, f"changed since baseline: {recorded} is now {result.verdict.value} (statistic "
                                f"{_number(result.statistic)})")

    def compare(self, result: Result, fingerprint: str, tolerance: float,
                recipe: str | None = None) -> Comparison | None:
        """The result against its model's baseline (None without one); an unreadable baseline is a regression."""
        baseline = self._baseline(result.model)
        if isinstance(baseline, str):
            return Comparison(REGRESSION, baseline)
        if baseline is None:
            return None
        return compare(result, fingerprint, baseline, baseline_file(self.directory, result.model), tolerance, recipe)


def new_finding(result: Result, directory: Path | None) -> Finding:
    """A failing result that no baseline records as a failure (in `directory`; None: this run compares none)."""
    where = "no baselines are compared" if directory is None else f"{baseline_file(directory, result.model)} does not record it"
    return Finding(NEW, f"new finding: {result.verdict.value} of {result.claim} on {result.model} ({where}; record it "
                        "with --update-baselines once it is understood)")


def _as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples as lists), to compare parameters with a baseline's."""
    return json.loads(json.dumps(value, default=str))


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def compare(result: Result, fingerprint: str, baseline: dict[str, Any], source: Path, tolerance: float,
            recipe: str | None = None) -> Comparison:
    """Compare one result (this run, the model with `fingerprint` made by `recipe`) with `baseline` (read from
    `source`)."""
    claim, model = result.claim, result.model
    entry = baseline["claims"].get(claim)
    if entry is None:
        return Comparison(NOT_RECORDED, f"{source} has no entry for {claim}: record one with --update-baselines")
    old, new, verdict, threshold = entry["statistic"], result.statistic, result.verdict.value, result.threshold.describe()
    numbers = {"old_statistic": old, "new_statistic": new, "old_verdict": entry["verdict"],
               "new_verdict": verdict, "tolerance": tolerance}
    retrained = baseline["fingerprint"] != fingerprint and recipe is not None and baseline.get("recipe") == recipe
    if baseline["fingerprint"] != fingerprint and not retrained:
        return Comparison(DIFFERENT_WEIGHTS, f"different weights: {model} now has fingerprint {fingerprint[:12]}, its "
                          f"baseline {source} was recorded on {baseline['fingerprint'][:12]}; not compared (re-record "
                          "with --update-baselines if the new weights are intended)", **numbers)
    reasons = []
    same_threshold = entry["threshold"] == threshold
    if same_threshold and entry["verdict"] != verdict:
        reasons.append(f"verdict {entry['verdict']} -> {verdict}")
    if (old is None) != (new is None) or (old is not None and abs(new - old) > tolerance):
        moved = "" if old is None or new is None else f", moved {new - old:+.3g}"
        reasons.append(f"statistic {_number(old)} -> {_number(new)}{moved}")
    before, after = entry.get("outcomes"), _outcomes(result)
    if isinstance(before, dict) and after is not None:
        reasons += [f"{unit}: {before.get(unit, 'absent')} -> {after.get(unit, 'absent')}"
                    for unit in sorted(set(before) | set(after)) if before.get(unit) != after.get(unit)]
    summary = f"old {_number(old)} ({entry['verdict']}), new {_number(new)} ({verdict}), tolerance ±{tolerance:g}"
    notes = [] if same_threshold else [f"threshold {entry['threshold']} -> {threshold}, verdicts not compared"]
    if retrained:
        notes.append(f"retrained: weights differ ({baseline['fingerprint'][:12]} -> {fingerprint[:12]}), statistics "
                     "compared")
    if entry["params"] != _as_json(result.params):
        notes.append(f"parameters {entry['params']} -> {result.params}")
    detail = "".join(f"; {note}" for note in notes) + f" (baseline {source}, git {(baseline['recorded']['git_revision'] or '?')[:10]})"
    if reasons:
        return Comparison(REGRESSION, f"regression of {claim} on {model}: {'; '.join(reasons)}: {summary}{detail}", **numbers)
    return Comparison(UNCHANGED, f"{claim} on {model} unchanged: {summary}{detail}", **numbers)
