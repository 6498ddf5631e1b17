"""Greedy bundling: the incremental algorithm vs a straightforward batched reference, same run.

The reference scores every token at every step from scratch (E.w and E.b recomputed from the
current bundles, two (V x d) @ (d x n) products per step); the incremental algorithm computes
E.w once and adds one Gram column product per step. Both must give the same bundles; the ratio
of their medians is recorded in extra_info.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from mechclaims.metrics.bundling import greedy_bundles

VOCAB, DIM, NEURONS, MAX_TOKENS = 8192, 256, 256, 10


def reference_bundles(candidates: np.ndarray, targets: np.ndarray, max_tokens: int) -> np.ndarray:
    """Every step: cos(b + e_t, w) for all t from the explicit bundles; first maximum wins."""
    e = torch.as_tensor(candidates)
    w = torch.as_tensor(targets)
    n = w.shape[0]
    bundles = torch.zeros_like(w)
    used = torch.zeros(e.shape[0], n, dtype=torch.bool)
    current = torch.full((n,), -torch.inf)
    tokens = torch.full((n, max_tokens), -1, dtype=torch.int64)
    active = torch.ones(n, dtype=torch.bool)
    e_sq = (e * e).sum(1)
    for step in range(max_tokens):
        numerator = e @ w.T + (bundles * w).sum(1)
        norm_sq = (bundles * bundles).sum(1) + 2 * (e @ bundles.T) + e_sq[:, None]
        score = (numerator / (w.norm(dim=1) * norm_sq.clamp(min=1e-30).sqrt())).masked_fill(used, -torch.inf)
        best, pick = score.max(dim=0)
        improves = active & (best > current)
        idx = improves.nonzero(as_tuple=True)[0]
        tokens[idx, step] = pick[idx]
        bundles[idx] += e[pick[idx]]
        used[pick[idx], idx] = True
        current[idx] = best[idx]
        active = improves
    return tokens.numpy()


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    candidates = rng.standard_normal((VOCAB, DIM)).astype(np.float32)
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    return candidates, rng.standard_normal((NEURONS, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def timings() -> dict[str, float]:
    return {}


def test_reference_scores_every_token(benchmark: BenchmarkFixture, problem: tuple[np.ndarray, np.ndarray],
                                      timings: dict[str, float]) -> None:
    benchmark.pedantic(reference_bundles, args=(*problem, MAX_TOKENS), rounds=3, iterations=1)
    timings["reference"] = benchmark.stats.stats.median


def test_incremental_greedy_bundles(benchmark: BenchmarkFixture, problem: tuple[np.ndarray, np.ndarray],
                                    timings: dict[str, float]) -> None:
    bundles = benchmark.pedantic(greedy_bundles, args=problem, kwargs={"max_tokens": MAX_TOKENS}, rounds=3,
                                 iterations=1)
    np.testing.assert_array_equal(bundles.tokens, reference_bundles(*problem, MAX_TOKENS))
    if "reference" in timings:
        benchmark.extra_info["speedup_vs_reference"] = timings["reference"] / benchmark.stats.stats.median
