"""The measurement cache: keys follow every input of a measurement, entries round-trip whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mechclaims import cache
from mechclaims.cache import MeasurementCache, cache_key
from mechclaims.metrics import bundling
from mechclaims.registry import Measurement

MEASURE = bundling.layer_bundle_cosines


def test_keys_change_with_fingerprint_parameters_role_and_code(monkeypatch: pytest.MonkeyPatch) -> None:
    key = cache_key("f" * 64, MEASURE, {"layer": 0}, "real")
    assert key == cache_key("f" * 64, MEASURE, {"layer": 0}, "real")
    others = {cache_key("e" * 64, MEASURE, {"layer": 0}, "real"), cache_key("f" * 64, MEASURE, {"layer": 1}, "real"),
              cache_key("f" * 64, MEASURE, {"layer": 0}, "gaussian:0")}
    assert key not in others and len(others) == 3
    for module in ("mechclaims.metrics.orthogonality", "mechclaims.models.model"):
        edited = cache._source_hash.__wrapped__
        monkeypatch.setattr(cache, "_source_hash",
                            lambda name, module=module: "edited" if name == module else edited(name))
        assert cache_key("f" * 64, MEASURE, {"layer": 0}, "real") != key, module
        monkeypatch.undo()


def test_entries_round_trip_with_their_kept_distributions(tmp_path: Path) -> None:
    store = MeasurementCache(tmp_path)
    measurement = Measurement(statistics={"s": 1.0}, distribution=np.arange(4.0), distribution_label="x",
                              details={"rows": [{"a": "<b>"}]}, curves={"c": {"x": [1], "y": [2]}},
                              by_param={"max_tokens": {"values": [1, 2], "distributions": np.ones((2, 4))}})
    store.put("ab" * 32, measurement)
    got = store.get("ab" * 32)
    assert got is not None and got.statistics == {"s": 1.0} and got.details == measurement.details
    np.testing.assert_array_equal(got.distribution, measurement.distribution)
    assert got.by_param["max_tokens"]["values"] == [1, 2]
    np.testing.assert_array_equal(got.by_param["max_tokens"]["distributions"], np.ones((2, 4)))
    assert MeasurementCache(tmp_path, enabled=False).get("ab" * 32) is None


def test_a_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    store = MeasurementCache(tmp_path)
    store.put("cd" * 32, Measurement(statistics={"s": 1.0}))
    (tmp_path / "cd" / f"{'cd' * 32}.npz").write_bytes(b"not an npz")
    assert store.get("cd" * 32) is None
