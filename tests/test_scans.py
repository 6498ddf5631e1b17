"""The fused numba passes against plain numpy (bundle_scan is checked end to end by the bundling property tests,
whose brute-force oracle it must match under both kernels)."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechclaims.metrics import scans

BINS = 64


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(0, 20), st.integers(1, 3))
def test_gram_block_statistics_equal_numpy(seed: int, rows: int, extra: int, threads: int) -> None:
    """Upper-triangle pairs of a block (rows x rows + extra), some entries above 1 and exactly 1: sums of
    min(|g|, 1), row maxima and where, column maxima, and histc-style counts."""
    rng = np.random.default_rng(seed)
    gram = rng.uniform(-1.2, 1.2, (rows, rows + extra)).astype(np.float32)
    gram[0, -1] = 1.0
    sums, row_max, row_arg, column_max, counts = scans.gram_block_stats(gram, 0, BINS, threads)
    pairs = np.arange(rows + extra)[None, :] > np.arange(rows)[:, None]
    values = np.minimum(np.abs(gram), 1.0)
    kept = np.where(pairs, values, -1.0)
    np.testing.assert_allclose(sums, np.where(pairs, values, 0.0).sum(1, dtype=np.float64), rtol=1e-12)
    np.testing.assert_array_equal(row_max, np.maximum(kept.max(1), 0.0))
    has_pair = pairs.any(1)
    np.testing.assert_array_equal(row_arg[has_pair], kept.argmax(1)[has_pair])
    assert np.all(row_arg[~has_pair] == -1)
    np.testing.assert_array_equal(column_max, np.maximum(kept.max(0), 0.0))
    expected = np.bincount(np.minimum((values[pairs] * BINS).astype(int), BINS - 1), minlength=BINS)
    np.testing.assert_array_equal(counts, expected)


def test_gram_block_statistics_do_not_depend_on_the_thread_split() -> None:
    gram = np.random.default_rng(0).standard_normal((37, 200)).astype(np.float32) / 4
    results = [scans.gram_block_stats(gram, 0, BINS, threads) for threads in (1, 2, numba.get_num_threads())]
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("offset", [0, 5])
def test_the_offset_places_the_diagonal(offset: int) -> None:
    """Row r of the block is the vector of column offset + r: its own and earlier columns are not pairs."""
    gram = np.full((3, 10), 0.5, dtype=np.float32)
    sums, *_ = scans.gram_block_stats(gram, offset, BINS, 1)
    np.testing.assert_allclose(sums, [0.5 * (10 - offset - 1 - r) for r in range(3)])
