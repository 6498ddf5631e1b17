"""results.json read back by `report` and `sweep`: a hand-edited or damaged file is one line naming where it breaks
the schema; hypothesis edits one value (or drops one key) anywhere in a valid file, and the commands either
render it or say so in one line, never with a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechclaims.__main__ import main
from mechclaims.errors import MechclaimsError
from mechclaims.results import load_results

from helpers import synthetic_results

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
SWEPT = "knittel2024.embed_raw_orthogonal"
DRAWN_DETAILS = {
    "circuit_edges": [{"from": "0.1@dest", "to": "1.2@dest", "count": 3, "side": "dest"},
                      {"from": "0.3@src", "to": "1.2@dest", "count": 1, "side": "src"}],
    "sv_use": {"head": "1.2", "rank": 4, "rows": [[0, 1], [2]]},
    "head_distributions": {"1.2": [0.1, 0.2], "0.1": [0.3]},
    "category_cosines": {"categories": ["a", "b"], "matrix": [[1.0, 0.2], [0.2, 1.0]]},
    "ov_advantages": {"run0": [[0.1, -0.2, 0.3], [0.0, 0.1, 0.2]]},
    "loss_curves": {"run0": [2.0, 1.0, 0.5]},
    "steps": {"run0": 300},
    "llc_curves": {"run0": {"steps": [0, 100], "llc": [1.0, 2.0], "std": [0.1, 0.2], "modes": ["none", "overlapping"]}},
    "runs": [{"mode": "copy-suppression", "weight_decay": 0.0, "mean_gap": 1.0}],
}
"""One of each detail the report draws as a figure (the IOI circuit, the sorting runs), on the synthetic FAIL row."""


def _document() -> dict[str, Any]:
    """The synthetic results with every drawn detail, as a fresh copy in which no two places share an object."""
    data = json.loads(json.dumps(synthetic_results()))
    data["results"][1]["measurement"]["details"].update(json.loads(json.dumps(DRAWN_DETAILS)))
    return data


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every value in a JSON document (the root excluded)."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    places = []
    for key, child in children:
        places += [(*path, key), *_places(child, (*path, key))]
    return places


PLACES = _places(_document())


def _edited(path: tuple[Any, ...], value: Any, drop: bool) -> dict[str, Any]:
    """`_document()` with the value at `path` replaced by `value`, or its key dropped."""
    data = _document()
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if drop and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return data


@pytest.mark.parametrize(("path", "value", "place"), [
    (("results", 0, "threshold"), "x", "results[0].threshold: 'x' is not of type 'object'"),
    (("results", 1, "verdict"), "MAYBE", "results[1].verdict: 'MAYBE' is not one of"),
    (("results", 0, "statistic"), "abc", "results[0].statistic: 'abc' is not of type 'number', 'null'"),
    (("models",), [], "models: [] is not of type 'object'"),
    (("run", "started"), "yesterday", "run.started: 'yesterday' is not of type 'number'"),
    (("claims", SWEPT), 1, f"claims.{SWEPT}: 1 is not of type 'object'"),
    (("results", 0, "measurement", "curves", "by_bundle_size", "x"), ["a"],
     "results[0].measurement.curves.by_bundle_size.x[0]: 'a' is not of type 'number'"),
])
def test_a_hand_edited_results_file_is_one_line_naming_the_place(tmp_path: Path, path: tuple[Any, ...], value: Any,
                                                                 place: str) -> None:
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(_edited(path, value, drop=False)))
    with pytest.raises(MechclaimsError) as info:
        load_results(saved)
    message = str(info.value)
    assert "\n" not in message and f"{saved} is a damaged results file (at {place}" in message, message
    assert message.endswith("re-run the claims")


def test_the_files_the_suite_writes_fit_the_schema(tmp_path: Path) -> None:
    """The synthetic run with every drawn detail, and the same run merged with itself, load and render."""
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(_document()))
    assert main(["report", str(saved), str(saved), "--out", str(tmp_path / "report.html")]) == 0
    report = (tmp_path / "report.html").read_text()
    for figure in ("traced circuit graph", "singular-vector use of head 1.2", "per-head distributions",
                   "mean cosine between token categories", "OV diagonal advantage", "training loss of each run",
                   "Local Learning Coefficient", "fraction of runs in each head mode"):
        assert f'alt="{figure}' in report, figure
    assert main(["sweep", str(saved), "--sweep", f"{SWEPT}=1:3:1", "--out", str(tmp_path / "sweep.html")]) == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PLACES), value=JSON_VALUES, drop=st.booleans())
def test_any_edit_of_a_results_file_renders_or_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          path: tuple[Any, ...], value: Any, drop: bool) -> None:
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(_edited(path, value, drop)))
    for command in (["report", str(saved)], ["sweep", str(saved), "--sweep", f"{SWEPT}=1:3:1"]):
        code = main([*command, "--out", str(tmp_path / "out.html")])
        errors = capsys.readouterr().err.strip().splitlines()
        assert (code, errors) == (0, []) or (code == 2 and len(errors) == 1 and errors[0].startswith("error: ")), errors


def test_a_row_its_gate_made_na_keeps_its_measurement_and_is_not_swept(tmp_path: Path) -> None:
    """A gated claim that did not apply (N/A) still records what its gate measured, with no distribution to take a
    fraction of (as the list-sorting claims write it): the file loads, a sweep of that claim leaves the row as it
    was, and the command succeeds."""
    data = _document()
    row = data["results"][2]
    row.update(threshold={**row["threshold"], "statistic": "fraction_at_least", "at": 1.0, "op": ">=", "value": 0.8,
                          "describe": "fraction_at_least(1) >= 0.8"},
               measurement={"statistics": {"suppression_runs": 0.0}, "distribution": [], "distribution_label": "",
                            "details": {}, "curves": {}, "by_param": {}})
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(data))
    assert load_results(saved).results[2].verdict.value == "N/A"
    claim = row["claim"]
    swept = tmp_path / "swept.json"
    assert main(["sweep", str(saved), "--sweep", f"{claim}=0.5:1:0.25", "--out", str(tmp_path / "s.html"),
                 "--json", str(swept)]) == 0
    assert json.loads(swept.read_text())["results"][2]["sweep"] is None
