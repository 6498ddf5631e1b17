"""Blocked upper-triangle cosine statistics vs a straightforward full-Gram reference, same run.

The reference computes every block against all n vectors (both triangles) and takes the
percentile with torch.quantile per block; the ratio of the two medians is recorded in
extra_info so runs on different machines compare by ratio, not by seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from mechclaims.metrics.orthogonality import offdiag_cosine_stats, unit_rows

SHAPE = (8192, 256)


def full_gram_reference(vectors: np.ndarray, block: int = 1024) -> tuple[float, float]:
    """Mean and max |off-diagonal cos| from every (block x n) slab, diagonal masked."""
    x = unit_rows(vectors)
    n = x.shape[0]
    total, largest = 0.0, 0.0
    for start in range(0, n, block):
        gram = (x[start : start + block] @ x.T).abs()
        rows = torch.arange(gram.shape[0])
        gram[rows, rows + start] = 0.0
        total += float(gram.sum(dtype=torch.float64))
        largest = max(largest, float(gram.max()))
    return total / (n * (n - 1)), largest


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)


@pytest.fixture(scope="module")
def timings() -> dict[str, float]:
    return {}


def test_reference_full_gram(benchmark: BenchmarkFixture, vectors: np.ndarray, timings: dict[str, float]) -> None:
    mean_abs, _ = benchmark.pedantic(full_gram_reference, args=(vectors,), rounds=3, iterations=1)
    timings["reference"] = benchmark.stats.stats.median
    assert mean_abs > 0


def test_blocked_upper_triangle(benchmark: BenchmarkFixture, vectors: np.ndarray, timings: dict[str, float]) -> None:
    stats = benchmark.pedantic(offdiag_cosine_stats, args=(vectors,), rounds=3, iterations=1)
    reference_mean, reference_max = full_gram_reference(vectors)
    assert stats.mean_abs == pytest.approx(reference_mean, rel=1e-4)
    assert stats.max_abs == pytest.approx(reference_max, rel=1e-5)
    if "reference" in timings:
        benchmark.extra_info["speedup_vs_full_gram"] = timings["reference"] / benchmark.stats.stats.median
