"""The command-line parsers (--threshold, --sweep, --param, --models-file) under arbitrary input: each gives a value
that satisfies its contract or a one-line MechclaimsError, never another exception."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mechclaims.arguments import parse_params, parse_sweeps, parse_thresholds
from mechclaims.errors import MechclaimsError
from mechclaims.plugin.options import read_models_file

PIECES = st.sampled_from(["=", ":", "1", "0.5", "-2", "1e999", "nan", "inf", "claim.id", "x", " ", "[", "{", '"',
                          "\x00", "é", "1" * 400])
TEXTS = st.one_of(st.text(max_size=30), st.lists(PIECES, max_size=8).map("".join))
DEEP = "knittel2024.x:p=" + "[" * 50_000
"""A JSON value nested beyond Python's recursion limit."""


def _parsed_or_one_line(parse: Callable[[list[str]], Any], texts: list[str]) -> Any:
    """What `parse` returns, or None after checking that it raised one MechclaimsError line."""
    try:
        return parse(texts)
    except MechclaimsError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


@given(st.lists(TEXTS, max_size=3))
def test_any_threshold_text_is_a_finite_value_or_one_line(texts: list[str]) -> None:
    parsed = _parsed_or_one_line(parse_thresholds, texts)
    if parsed is not None:
        assert all(claim and math.isfinite(value) for claim, value in parsed.items())


@given(st.lists(TEXTS, max_size=3))
def test_any_sweep_text_is_a_valid_grid_or_one_line(texts: list[str]) -> None:
    parsed = _parsed_or_one_line(parse_sweeps, texts)
    if parsed is not None:
        sweeps, param_sweeps = parsed
        grids = [*sweeps.values(), *(grid for _, grid in param_sweeps.values())]
        assert all(claim for claim in [*sweeps, *param_sweeps]) and all(param for param, _ in param_sweeps.values())
        for start, stop, step in grids:
            assert math.isfinite(start) and start <= stop and step > 0 and (stop - start) / step <= 10_000


@example([DEEP])
@given(st.lists(TEXTS, max_size=3))
def test_any_param_text_is_a_named_value_or_one_line(texts: list[str]) -> None:
    parsed = _parsed_or_one_line(parse_params, texts)
    if parsed is not None:
        assert all(claim and all(name.strip() == name and name for name in names) for claim, names in parsed.items())


def test_a_param_value_nested_too_deep_for_json_is_one_line() -> None:
    with pytest.raises(MechclaimsError, match=r"--param knittel2024\.x:p is nested too deeply"):
        parse_params([DEEP])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode)))
def test_any_models_file_is_specs_or_one_line(tmp_path: Path, content: bytes) -> None:
    listing = tmp_path / "models.txt"
    listing.write_bytes(content)
    specs = _parsed_or_one_line(lambda _: read_models_file(str(listing)), [])
    if specs is not None:
        assert specs and all(spec == spec.strip() and spec and "#" not in spec and "\n" not in spec for spec in specs)
