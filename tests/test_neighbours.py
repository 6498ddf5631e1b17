"""FAISS nearest neighbours against numpy's full cosine matrices."""

from __future__ import annotations

import numpy as np
import pytest

from mechclaims.errors import MechclaimsError
from mechclaims.metrics import neighbours


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a.astype(np.float64) @ b.astype(np.float64).T


def test_exact_nearest_tokens_are_the_largest_cosines() -> None:
    rng = np.random.default_rng(0)
    tokens, directions = rng.standard_normal((3000, 24)), rng.standard_normal((40, 24))
    found = neighbours.nearest_tokens(tokens, directions, k=5)
    expected = np.argsort(-cosine_matrix(directions, tokens), axis=1)[:, :5]
    assert (found.index, found.recall) == ("exact", 1.0)
    np.testing.assert_array_equal(found.ids, expected)
    np.testing.assert_allclose(found.cosines, np.take_along_axis(cosine_matrix(directions, tokens), expected, 1),
                               atol=1e-5)


def test_large_vocabularies_use_hnsw_with_measured_recall(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the size limit (lowered here) the graph answers; the recall it reports was measured on its sample
    and the recall over every query, computed here from numpy, is as high."""
    monkeypatch.setattr(neighbours, "APPROXIMATE_FROM", 1000)
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((50, 16))
    tokens = np.repeat(centres, 80, axis=0) + 0.3 * rng.standard_normal((4000, 16))
    directions = centres[rng.integers(0, 50, 300)] + 0.3 * rng.standard_normal((300, 16))
    found = neighbours.nearest_tokens(tokens, directions, k=10)
    truth = np.argsort(-cosine_matrix(directions, tokens), axis=1)[:, :10]
    assert found.index.startswith("hnsw efSearch=")
    assert found.recall >= neighbours.MIN_RECALL
    assert neighbours.recall_at_k(found.ids, truth) >= 0.98


def test_hnsw_that_cannot_reach_the_recall_falls_back_to_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(neighbours, "APPROXIMATE_FROM", 100)
    monkeypatch.setattr(neighbours, "MIN_RECALL", 1.01)
    rng = np.random.default_rng(2)
    tokens, directions = rng.standard_normal((500, 8)), rng.standard_normal((20, 8))
    found = neighbours.nearest_tokens(tokens, directions, k=3)
    assert found.index.startswith("exact (hnsw reached recall")
    np.testing.assert_array_equal(found.ids, np.argsort(-cosine_matrix(directions, tokens), axis=1)[:, :3])


def test_recall_counts_shared_ids() -> None:
    assert neighbours.recall_at_k(np.array([[1, 2], [3, 4]]), np.array([[2, 9], [4, 3]])) == 0.75


def test_an_unknown_index_is_a_one_line_error() -> None:
    with pytest.raises(MechclaimsError, match="unknown neighbour index 'ivf': use auto, exact, hnsw"):
        neighbours.nearest_tokens(np.eye(3), np.eye(3), index="ivf")


def test_most_similar_other_is_the_largest_absolute_cosine_excluding_itself() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((400, 12))
    vectors[7] = vectors[100]
    vectors[9] = -2 * vectors[200]
    largest, where = neighbours.most_similar_other(vectors)
    full = np.abs(cosine_matrix(vectors, vectors))
    np.fill_diagonal(full, -1)
    np.testing.assert_allclose(largest, full.max(axis=1), atol=1e-5)
    assert (where[7], where[9]) == (100, 200)
    np.testing.assert_allclose(full[np.arange(400), where], full.max(axis=1), atol=1e-5)
