"""Baselines: recording, reading, and the comparison that decides what is a regression."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataclasses import replace

from mechclaims.baselines import Baselines, baseline_file, compare, load_baseline, update_baselines
from mechclaims.claim import Threshold, Verdict
from mechclaims.errors import MechclaimsError
from mechclaims.results import (CHANGED, DIFFERENT_WEIGHTS, KNOWN, NEW, NOT_RECORDED, REGRESSION, UNCHANGED, Result,
                                RunRecord)

CLAIM = "paper.fraction_claim"
FINGERPRINT = "f" * 64


def _row(statistic: float | None = 0.5, verdict: str = "FAIL", value: float = 0.8,
         params: dict[str, Any] | None = None, model: str = "org/model") -> Result:
    threshold = Threshold(statistic="fraction_at_least", at=0.5, op=">", value=value, origin="paper")
    return Result(model=model, claim=CLAIM, statistic=statistic, null_statistic=0.1, verdict=Verdict(verdict),
                  threshold=threshold, params=params or {"layer": 0})


def _results(*rows: Result, fingerprint: str = FINGERPRINT) -> RunRecord:
    return RunRecord(
        run={"id": "run1", "started": 0.0, "git_revision": "abc", "versions": {}},
        models={row.model: {"fingerprint": fingerprint} for row in rows},
        claims={CLAIM: {"tolerance": 0.01}, "paper.other": {"tolerance": 0.01}},
        results=list(rows),
    )


def _baseline(tmp_path: Path, row: Result, fingerprint: str = FINGERPRINT) -> dict[str, Any]:
    update_baselines(tmp_path, _results(row, fingerprint=fingerprint))
    baseline = load_baseline(tmp_path, row.model)
    assert baseline is not None
    return baseline


def test_file_names_are_safe_for_any_model_name(tmp_path: Path) -> None:
    assert baseline_file(tmp_path, "smollm2-135m").name == "smollm2-135m.json"
    assert baseline_file(tmp_path, "EleutherAI/pythia-70m").name == "EleutherAI_pythia-70m.json"
    assert baseline_file(tmp_path, "random:/tmp/x y").parent == tmp_path


def test_recorded_values_compare_unchanged(tmp_path: Path) -> None:
    row = _row()
    comparison = compare(row, FINGERPRINT, _baseline(tmp_path, row), tmp_path, 0.01)
    assert comparison.status == UNCHANGED
    assert "old 0.5 (FAIL), new 0.5 (FAIL), tolerance ±0.01" in comparison.message


def test_a_moved_statistic_is_a_regression_showing_old_new_and_tolerance(tmp_path: Path) -> None:
    baseline = _baseline(tmp_path, _row(statistic=0.5))
    comparison = compare(_row(statistic=0.53), FINGERPRINT, baseline, tmp_path, 0.01)
    assert comparison.status == REGRESSION
    assert "statistic 0.5 -> 0.53, moved +0.03" in comparison.message
    assert "tolerance ±0.01" in comparison.message
    assert (comparison.old_statistic, comparison.new_statistic, comparison.tolerance) == (0.5, 0.53, 0.01)


def test_a_changed_verdict_is_a_regression_even_within_tolerance(tmp_path: Path) -> None:
    baseline = _baseline(tmp_path, _row(statistic=0.8, verdict="FAIL"))
    comparison = compare(_row(statistic=0.805, verdict="PASS"), FINGERPRINT, baseline, tmp_path, 0.01)
    assert comparison.status == REGRESSION and "verdict FAIL -> PASS" in comparison.message


def test_other_thresholds_compare_statistics_not_verdicts(tmp_path: Path) -> None:
    baseline = _baseline(tmp_path, _row(verdict="FAIL"))
    comparison = compare(_row(verdict="PASS", value=0.4), FINGERPRINT, baseline,
                         tmp_path, 0.01)
    assert comparison.status == UNCHANGED and "verdicts not compared" in comparison.message


def test_different_weights_are_reported_not_compared(tmp_path: Path) -> None:
    baseline = _baseline(tmp_path, _row(statistic=0.5))
    comparison = compare(_row(statistic=0.9), "e" * 64, baseline, tmp_path, 0.01)
    assert comparison.status == DIFFERENT_WEIGHTS and comparison.message.startswith("different weights")


def _with_outcomes(row: Result, outcomes: dict[str, str]) -> Result:
    from mechclaims.measurement import Measurement

    return replace(row, measurement=Measurement(distribution=np.array([0.0]), statistics={},
                                                details={"outcomes": outcomes}))


def test_a_retrained_model_of_the_same_recipe_is_compared_statistics_and_outcomes_included(tmp_path: Path) -> None:
    """A suite-trained family retrained on another CPU (other weight bits, the same recipe) is compared as if its
    weights were the same; a run whose mode changed is a regression even when the fractions stay put; another
    recipe is different weights, not compared."""
    modes = {"sorting:ci@0": "vocabulary-splitting", "sorting:ci@1": "none"}
    recorded = _with_outcomes(_row(statistic=0.5), modes)
    record = _results(recorded)
    record.models[recorded.model]["recipe"] = "r" * 64
    update_baselines(tmp_path, record)
    baseline = load_baseline(tmp_path, recorded.model)
    assert baseline["recipe"] == "r" * 64 and baseline["claims"][CLAIM]["outcomes"] == modes
    same = compare(_with_outcomes(_row(statistic=0.5), modes), "e" * 64, baseline, tmp_path, 0.0, "r" * 64)
    assert same.status == UNCHANGED and "retrained: weights differ" in same.message
    assert "statistics compared" in same.message
    swapped = compare(_with_outcomes(_row(statistic=0.5), {"sorting:ci@0": "none", "sorting:ci@1": "overlapping"}),
                      "e" * 64, baseline, tmp_path, 0.0, "r" * 64)
    assert swapped.status == REGRESSION
    assert "sorting:ci@0: vocabulary-splitting -> none" in swapped.message
    assert "sorting:ci@1: none -> overlapping" in swapped.message
    moved = compare(_with_outcomes(_row(statistic=0.7), modes), "e" * 64, baseline, tmp_path, 0.0, "r" * 64)
    assert moved.status == REGRESSION and "statistic 0.5 -> 0.7" in moved.message
    other = compare(_with_outcomes(_row(statistic=0.5), modes), "e" * 64, baseline, tmp_path, 0.0, "s" * 64)
    assert other.status == DIFFERENT_WEIGHTS
    assert compare(recorded, "e" * 64, baseline, tmp_path, 0.0).status == DIFFERENT_WEIGHTS


def test_a_claim_missing_from_the_baseline_is_not_recorded(tmp_path: Path) -> None:
    baseline = _baseline(tmp_path, _row())
    comparison = compare(replace(_row(), claim="paper.other"), FINGERPRINT, baseline, tmp_path, 0.01)
    assert comparison.status == NOT_RECORDED and "--update-baselines" in comparison.message


def test_update_keeps_unmeasured_claims_of_the_same_weights_only(tmp_path: Path) -> None:
    first = _row()
    update_baselines(tmp_path, _results(first, replace(_row(), claim="paper.other")))
    update_baselines(tmp_path, _results(_row(statistic=0.6)))
    assert set(load_baseline(tmp_path, first.model)["claims"]) == {CLAIM, "paper.other"}
    update_baselines(tmp_path, _results(_row(statistic=0.6), fingerprint="e" * 64))
    assert set(load_baseline(tmp_path, first.model)["claims"]) == {CLAIM}


@pytest.mark.parametrize("content", ["{not json", json.dumps({"schema": "other"}), json.dumps([1, 2])])
def test_an_unusable_baseline_is_a_one_line_error(tmp_path: Path, content: str) -> None:
    baseline_file(tmp_path, "org/model").write_text(content)
    with pytest.raises(MechclaimsError, match="--update-baselines") as error:
        load_baseline(tmp_path, "org/model")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("break_body", "found"),
    [
        (lambda b: b["claims"][CLAIM].pop("verdict"), f"claims[{CLAIM!r}].verdict is 'missing'"),
        (lambda b: b["claims"][CLAIM].update(statistic="0.5"), f"claims[{CLAIM!r}].statistic is '0.5', not a number"),
        (lambda b: b["claims"][CLAIM].update(null_statistic=True), "null_statistic is True, not a number"),
        (lambda b: b["claims"][CLAIM].update(tolerance=None), "tolerance is None, not a number"),
        (lambda b: b["claims"][CLAIM].pop("params"), "lacks its threshold text or params object"),
        (lambda b: b["claims"].update({CLAIM: [1]}), "is not an object"),
        (lambda b: b.update(claims=[]), "claims is not an object"),
        (lambda b: b.pop("fingerprint"), "fingerprint is not a string"),
        (lambda b: b.update(recorded=None), "recorded.git_revision is missing"),
    ],
)
def test_a_baseline_with_a_broken_body_is_one_regression_naming_the_fault(tmp_path: Path, break_body: Any,
                                                                          found: str) -> None:
    """The right schema and model but a broken body: reading it is a one-line error naming the first fault, and
    every comparison with it is that regression (never a KeyError from inside the comparison)."""
    baseline = _baseline(tmp_path, _row())
    break_body(baseline)
    baseline_file(tmp_path, "org/model").write_text(json.dumps(baseline))
    with pytest.raises(MechclaimsError, match="is broken") as error:
        load_baseline(tmp_path, "org/model")
    assert found in str(error.value) and "\n" not in str(error.value)
    comparison = Baselines(tmp_path).compare(_row(), FINGERPRINT, 0.01)
    assert comparison is not None and comparison.status == REGRESSION and found in comparison.message


def test_no_baseline_file_means_none(tmp_path: Path) -> None:
    assert load_baseline(tmp_path, "org/model") is None


@given(old=st.integers(0, 1024), steps=st.integers(-50, 50), tolerance_steps=st.sampled_from([0, 1, 10, 20]))
def test_regression_exactly_when_the_move_exceeds_the_tolerance(old: int, steps: int, tolerance_steps: int) -> None:
    """Same verdict and threshold: a regression if and only if the move exceeds the tolerance. Values are
    multiples of 1/1024 (exact in binary), so the oracle compares whole numbers of steps."""
    unit = 1 / 1024
    baseline = {"fingerprint": FINGERPRINT, "recorded": {"git_revision": None},
                "claims": {CLAIM: {"statistic": old * unit, "verdict": "FAIL", "threshold": _row().threshold.describe(),
                                   "params": {"layer": 0}}}}
    row = _row(statistic=(old + steps) * unit)
    status = compare(row, FINGERPRINT, baseline, Path("b.json"), tolerance_steps * unit).status
    assert (status == REGRESSION) == (abs(steps) > tolerance_steps)


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every value in a JSON document (the root excluded)."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return [place for key, child in children for place in [(*path, key), *_places(child, (*path, key))]]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_edit_of_a_baseline_reads_and_compares_or_is_one_line(tmp_path: Path, data: st.DataObject) -> None:
    """Hypothesis replaces any value of a recorded baseline (or drops its key): reading it gives a baseline that every
    comparison can use, or one line naming the fault, never another exception."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    baseline = json.loads(json.dumps(_baseline(folder, _row())))
    path = data.draw(st.sampled_from(_places(baseline)))
    parent = baseline
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_VALUES)
    baseline_file(folder, "org/model").write_text(json.dumps(baseline))
    try:
        read = load_baseline(folder, "org/model")
    except MechclaimsError as error:
        assert "\n" not in str(error) and "--update-baselines" in str(error)
        return
    assert read is not None
    for row in (_row(), _row(statistic=None, verdict="ERROR")):
        assert compare(row, FINGERPRINT, read, folder, 0.01).status in {UNCHANGED, REGRESSION, DIFFERENT_WEIGHTS,
                                                                           NOT_RECORDED}


@pytest.mark.parametrize(
    ("recorded", "now", "strict_null", "changes", "status"),
    [
        ("FAIL", "FAIL", False, {}, KNOWN),
        ("FAIL", "PASS", False, {}, CHANGED),
        ("FAIL", "TRIVIAL", False, {}, CHANGED),
        ("TRIVIAL", "TRIVIAL", True, {}, KNOWN),
        ("TRIVIAL", "TRIVIAL", False, {}, None),
        ("PASS", "FAIL", False, {}, NEW),
        ("PASS", "PASS", False, {}, None),
        ("FAIL", "FAIL", False, {"value": 0.7}, NEW),
        ("FAIL", "PASS", False, {"value": 0.7}, None),
        ("FAIL", "FAIL", False, {"params": {"layer": 1}}, NEW),
        ("FAIL", "FAIL", False, {"model": "org/other"}, NEW),
    ],
)
def test_a_failure_is_known_only_where_the_baseline_records_it_under_the_same_threshold_and_parameters(
    tmp_path: Path, recorded: str, now: str, strict_null: bool, changes: dict[str, Any], status: str | None
) -> None:
    """The finding of a result against a baseline recorded with verdict `recorded`: failing now means FAIL, or
    TRIVIAL under --strict-null; a recorded failure is one under the result's own threshold and parameters, on
    weights old or new."""
    _baseline(tmp_path, _row(verdict=recorded), fingerprint="0" * 64)
    result = _row(verdict=now, **changes)
    fails = now == "FAIL" or (now == "TRIVIAL" and strict_null)
    finding = Baselines(tmp_path).finding(result, fails, strict_null)
    assert (finding and finding.status) == status
    if status in (KNOWN, CHANGED):
        assert f"{recorded} of {CLAIM} on org/model (statistic 0.5, threshold" in finding.message
        assert str(baseline_file(tmp_path, "org/model")) in finding.message and "(git abc)" in finding.message
