"""Claim arithmetic: the Wilson interval on fraction statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mechclaims.claim import Threshold
from mechclaims.errors import MechclaimsError
from mechclaims.measurement import Measurement
from mechclaims.stats import wilson_interval


def test_wilson_interval_matches_the_textbook_value() -> None:
    """p = 0.5 over 100 trials: [0.4038, 0.5962]; p = 0 over 10: [0, 0.2775]."""
    assert wilson_interval(0.5, 100) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)


@given(st.integers(1, 10_000), st.data())
def test_wilson_interval_holds_the_fraction_inside_the_unit_interval(n: int, data: st.DataObject) -> None:
    fraction = data.draw(st.integers(0, n)) / n
    low, high = wilson_interval(fraction, n)
    assert 0.0 <= low <= fraction <= high <= 1.0
    wider_low, wider_high = wilson_interval(fraction, max(1, n // 4))
    assert high - low <= wider_high - wider_low + 1e-12


def test_only_fraction_statistics_have_an_interval() -> None:
    measurement = Measurement(statistics={"decline": 0.2}, distribution=np.linspace(0.0, 1.0, 200))
    fraction = Threshold(statistic="fraction_at_least", at=0.5, op=">", value=0.8, origin="paper")
    low, high = fraction.interval_of(measurement)
    assert low < fraction.statistic_of(measurement) < high
    assert Threshold(statistic="decline", op=">", value=0.05, origin="suite").interval_of(measurement) is None
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0.5, 0)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("inf")])
def test_a_fraction_threshold_outside_the_unit_interval_is_a_one_line_error(value: float) -> None:
    with pytest.raises(MechclaimsError, match=r"outside \[0, 1\]: give a fraction between 0 and 1"):
        Threshold(statistic="fraction_at_least", at=0.5, op=">", value=value, origin="suite")
    assert Threshold(statistic="decline", op=">", value=value, origin="suite").value == value
