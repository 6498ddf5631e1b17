"""Nearest tokens of directions (readouts): FAISS against torch, exact at a 50k vocabulary and approximate (HNSW)
at a 128k vocabulary.

Exact: 1024 directions against 50257 x 768 unit token vectors (GPT-2 small's shape), top 10 by cosine; FAISS
IndexFlatIP vs torch (one matmul and topk), same ids asserted (rows whose 10th and 11th cosines tie to float32
rounding excepted), the ratio recorded. Approximate: 1024 directions against a `random:`-style 128256 x 576
Gaussian vocabulary (Llama 3's vocabulary at SmolLM2's width); `nearest_tokens` builds an HNSW graph and widens
its search until the recall measured on a sample reaches 0.99. Asserted: the recall over all 1024 queries,
computed here against the exact search, is >= 0.99 whenever HNSW answered; recorded: build and search seconds,
efSearch, recall, and the search's ratio to the exact search.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from mechclaims.metrics import neighbours

from timing import Timed, timed

DIRECTIONS, K = 1024, 10
EXACT_SHAPE = (50257, 768)
LARGE_SHAPE = (128256, 576)


def torch_nearest(tokens: np.ndarray, directions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-k cosines by one float32 matmul of unit rows and torch.topk."""
    rows = torch.as_tensor(neighbours.unit_float32(tokens))
    queries = torch.as_tensor(neighbours.unit_float32(directions))
    values, ids = torch.topk(queries @ rows.T, k, dim=1)
    return ids.numpy(), values.numpy()


def gaussian(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


@pytest.fixture(scope="module")
def exact_problem() -> tuple[np.ndarray, np.ndarray]:
    return gaussian(EXACT_SHAPE, 0), gaussian((DIRECTIONS, EXACT_SHAPE[1]), 1)


@pytest.fixture(scope="module")
def torch_exact(exact_problem: tuple[np.ndarray, np.ndarray]) -> Timed:
    return timed(torch_nearest, *exact_problem, K + 1, rounds=3)


def test_nearest_tokens_exact_faiss(benchmark: BenchmarkFixture, exact_problem: tuple[np.ndarray, np.ndarray],
                                    torch_exact: Timed) -> None:
    found = benchmark.pedantic(neighbours.nearest_tokens, args=exact_problem, kwargs={"k": K}, rounds=3, iterations=1)
    benchmark.extra_info["speedup_vs_torch"] = torch_exact.seconds / benchmark.stats.stats.median
    ids, values = torch_exact.value
    clear = values[:, K - 1] - values[:, K] > 1e-6
    assert found.index == "exact"
    np.testing.assert_array_equal(np.sort(found.ids[clear], axis=1), np.sort(ids[clear, :K], axis=1))
    assert clear.mean() > 0.9


@pytest.fixture(scope="module")
def large_problem() -> tuple[np.ndarray, np.ndarray]:
    return gaussian(LARGE_SHAPE, 2), gaussian((DIRECTIONS, LARGE_SHAPE[1]), 3)


@pytest.fixture(scope="module")
def large_exact(large_problem: tuple[np.ndarray, np.ndarray]) -> Timed:
    return timed(neighbours.nearest_tokens, *large_problem, k=K, index="exact")


def test_nearest_tokens_hnsw_at_128k(benchmark: BenchmarkFixture, large_problem: tuple[np.ndarray, np.ndarray],
                                     large_exact: Timed) -> None:
    found = benchmark.pedantic(neighbours.nearest_tokens, args=large_problem, kwargs={"k": K}, rounds=1, iterations=1)
    seconds = benchmark.stats.stats.median
    recall = neighbours.recall_at_k(found.ids, large_exact.value.ids)
    benchmark.extra_info.update(index=found.index, sampled_recall=found.recall, recall=recall, seconds=seconds,
                                speedup_vs_exact_faiss=large_exact.seconds / seconds)
    if found.index.startswith("hnsw"):
        assert recall >= neighbours.MIN_RECALL
    else:
        np.testing.assert_array_equal(found.ids, large_exact.value.ids)
