"""Blocked upper-triangle cosine statistics vs a straightforward full-Gram reference, same run.

The reference computes every block against all n vectors (both triangles) and takes the
percentile with torch.quantile per block; the ratio of the two medians is recorded in
extra_info so runs on different machines compare by ratio, not by seconds.
"""

from __future__ import annotations

import math
import time

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


def expected_mean_abs_cosine(d: int) -> float:
    """E|cos| of two independent Gaussian vectors in d dimensions: Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2))."""
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)


def timed_reference(vectors: np.ndarray, rounds: int) -> tuple[tuple[float, float], float]:
    """The reference's (mean, max) and its median seconds over `rounds` calls, timed in this process."""
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = full_gram_reference(vectors)
        seconds.append(time.perf_counter() - start)
    return result, float(np.median(seconds))


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)


def test_reference_full_gram(benchmark: BenchmarkFixture, vectors: np.ndarray) -> None:
    """Over 33M pairs of Gaussian vectors the reference's mean |cos| is the exact expectation to 0.1%, and the
    diagonal is masked (max < 1)."""
    mean_abs, max_abs = benchmark.pedantic(full_gram_reference, args=(vectors,), rounds=3, iterations=1)
    assert mean_abs == pytest.approx(expected_mean_abs_cosine(SHAPE[1]), rel=1e-3)
    assert mean_abs < max_abs < 1


def test_blocked_upper_triangle(benchmark: BenchmarkFixture, vectors: np.ndarray) -> None:
    """The blocked statistics equal the reference's, computed and timed in this test."""
    stats = benchmark.pedantic(offdiag_cosine_stats, args=(vectors,), rounds=3, iterations=1)
    (reference_mean, reference_max), reference_seconds = timed_reference(vectors, rounds=3)
    benchmark.extra_info["speedup_vs_full_gram"] = reference_seconds / benchmark.stats.stats.median
    assert stats.mean_abs == pytest.approx(reference_mean, rel=1e-4)
    assert stats.max_abs == pytest.approx(reference_max, rel=1e-5)
