"""The measurement cache: keys follow every input of a measurement, entries round-trip whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mechclaims import cache
from mechclaims.cache import MeasurementCache, cache_key
from mechclaims.errors import MechclaimsWarning
from mechclaims.metrics import bundling
from mechclaims.models import Model
from mechclaims.measurement import Curve, Measurement, ParamAxis

MEASURE = bundling.layer_bundle_cosines


SOURCE = Model.__new__(Model)
"""A Model, uninitialised: only its class matters to the key (weight extraction and forward passes)."""


def test_keys_change_with_fingerprint_parameters_role_inputs_and_code(monkeypatch: pytest.MonkeyPatch) -> None:
    key = cache_key("f" * 64, MEASURE, {"layer": 0}, "real", SOURCE)
    assert key == cache_key("f" * 64, MEASURE, {"layer": 0}, "real", SOURCE)
    others = {cache_key("e" * 64, MEASURE, {"layer": 0}, "real", SOURCE),
              cache_key("f" * 64, MEASURE, {"layer": 1}, "real", SOURCE),
              cache_key("f" * 64, MEASURE, {"layer": 0}, "gaussian:0", SOURCE),
              cache_key("f" * 64, MEASURE, {"layer": 0}, "real", SOURCE, inputs="d" * 64)}
    assert key not in others and len(others) == 4
    for module in ("mechclaims.metrics.orthogonality", "mechclaims.measurement", "mechclaims.models.model"):
        edited = cache.source_hash.__wrapped__
        monkeypatch.setattr(cache, "source_hash",
                            lambda name, module=module: "edited" if name == module else edited(name))
        assert cache_key("f" * 64, MEASURE, {"layer": 0}, "real", SOURCE) != key, module
        monkeypatch.undo()


def test_the_modules_a_measurement_reads_are_found_by_following_imports() -> None:
    """bundling imports orthogonality (divide_rows) and measurement; nothing imports the report."""
    closure = cache.module_closure("mechclaims.metrics.bundling")
    assert {"mechclaims.metrics.orthogonality", "mechclaims.measurement", "mechclaims.errors"} <= set(closure)
    assert not any(name.startswith("mechclaims.report") or name.startswith("mechclaims.plugin") for name in closure)


def test_entries_round_trip_with_their_kept_distributions(tmp_path: Path) -> None:
    store = MeasurementCache(tmp_path)
    measurement = Measurement(statistics={"s": 1.0}, distribution=np.arange(4.0), distribution_label="x",
                              details={"rows": [{"a": "<b>"}]}, curves={"c": Curve([1.0], [2.0], "k", "f")},
                              by_param={"max_tokens": ParamAxis([1.0, 2.0], np.ones((2, 4)))})
    store.put("ab" * 32, measurement)
    got = store.get("ab" * 32)
    assert got is not None and got.statistics == {"s": 1.0} and got.details == measurement.details
    np.testing.assert_array_equal(got.distribution, measurement.distribution)
    assert got.curves == measurement.curves and got.by_param["max_tokens"].values == [1.0, 2.0]
    np.testing.assert_array_equal(got.by_param["max_tokens"].distributions, np.ones((2, 4)))
    assert MeasurementCache(tmp_path, enabled=False).get("ab" * 32) is None


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped"])
def test_a_damaged_entry_is_discarded_with_a_one_line_note_and_rewritten(tmp_path: Path, damage: str) -> None:
    """A truncated, zero-byte or bit-flipped entry is a miss: deleted, with one line saying so, and the next put
    writes a good one."""
    store = MeasurementCache(tmp_path)
    entry = tmp_path / "cd" / f"{'cd' * 32}.json"
    store.put("cd" * 32, Measurement(statistics={"s": 1.0}))
    good = entry.read_bytes()
    damaged = {"truncated": good[: len(good) // 2], "empty": b"", "flipped": bytes(b ^ 0xFF for b in good)}[damage]
    entry.write_bytes(damaged)
    with pytest.warns(MechclaimsWarning, match="discarded the unusable cache entry .*computed again") as noted:
        assert store.get("cd" * 32) is None
    assert len(noted) == 1 and "\n" not in str(noted[0].message)
    assert not entry.exists()
    store.put("cd" * 32, Measurement(statistics={"s": 1.0}))
    assert store.get("cd" * 32).statistics == {"s": 1.0}