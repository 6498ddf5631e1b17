"""Property tests for the near-orthogonality metrics (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mechclaims.metrics.orthogonality import (
    HISTOGRAM_BINS,
    embedding_variant,
    gaussian_abs_cosine_mean,
    mean_offdiag_cosine,
    offdiag_cosine_stats,
    unit_rows,
)

BIN = 1.0 / HISTOGRAM_BINS
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def vector_sets(draw: st.DrawFn, min_n: int = 2, max_n: int = 40) -> np.ndarray:
    """Small sets of vectors with no near-zero row (cosine is undefined there)."""
    n = draw(st.integers(min_n, max_n))
    dim = draw(st.integers(2, 16))
    vectors = draw(arrays(np.float64, (n, dim), elements=finite))
    norms = np.linalg.norm(vectors, axis=1)
    assume(bool(np.all(norms > 1e-2)))
    return vectors


def dense_abs_cosines(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(upper-triangle |cos|, per-row max off-diagonal |cos|) from a float64 dense Gram matrix."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    gram = unit @ unit.T
    upper = np.abs(gram[np.triu_indices(len(vectors), 1)])
    off = np.abs(gram)
    np.fill_diagonal(off, -1.0)
    return upper, off.max(axis=1)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 16), st.data())
def test_orthonormal_sets_have_zero_offdiagonal(dim: int, data: st.DataObject) -> None:
    """Rows of an orthogonal matrix: every off-diagonal cosine is 0 and every row is dominant."""
    n = data.draw(st.integers(2, dim))
    seed = data.draw(st.integers(0, 2**31 - 1))
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    stats = offdiag_cosine_stats(q[:n])
    assert stats.mean_abs == pytest.approx(0.0, abs=1e-5)
    assert stats.max_abs == pytest.approx(0.0, abs=1e-5)
    assert stats.p99_abs <= BIN
    assert stats.diagonal_dominance(1e-4) == 1.0


@settings(max_examples=40, deadline=None)
@given(vector_sets(), st.data())
def test_invariant_to_row_scaling_and_permutation(vectors: np.ndarray, data: st.DataObject) -> None:
    """Cosines ignore each row's length and the order of rows."""
    n = len(vectors)
    scales = data.draw(arrays(np.float64, (n, 1), elements=st.floats(0.1, 10)))
    order = np.array(data.draw(st.permutations(range(n))))
    base = offdiag_cosine_stats(vectors)
    moved = offdiag_cosine_stats((vectors * scales)[order])
    assert moved.mean_abs == pytest.approx(base.mean_abs, abs=1e-5)
    assert moved.max_abs == pytest.approx(base.max_abs, abs=1e-5)
    assert moved.mean_signed == pytest.approx(base.mean_signed, abs=1e-5)
    assert abs(moved.p99_abs - base.p99_abs) <= BIN + 1e-9
    np.testing.assert_allclose(moved.row_max_abs, base.row_max_abs[order], atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(vector_sets(), st.sampled_from([1, 3, 7, None]))
def test_blocked_equals_dense(vectors: np.ndarray, block: int | None) -> None:
    """Row blocks of the upper triangle give the dense statistics; p99 lies within one bin above."""
    upper, row_max = dense_abs_cosines(vectors)
    stats = offdiag_cosine_stats(vectors, block=block or len(vectors))
    assert stats.mean_abs == pytest.approx(upper.mean(), abs=1e-5)
    assert stats.max_abs == pytest.approx(upper.max(), abs=1e-5)
    np.testing.assert_allclose(stats.row_max_abs, row_max, atol=1e-5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    signed = unit @ unit.T
    assert stats.mean_signed == pytest.approx(signed[np.triu_indices(len(vectors), 1)].mean(), abs=1e-5)
    q = float(np.quantile(upper, 0.99, method="inverted_cdf"))
    assert q - 1e-5 <= stats.p99_abs <= q + BIN + 1e-5


@settings(max_examples=40, deadline=None)
@given(vector_sets(max_n=30), st.data())
def test_duplicated_rows_are_detected(vectors: np.ndarray, data: st.DataObject) -> None:
    """A row copied (scaled) elsewhere: max |cos| is 1, the top pair names it, dominance drops."""
    source = data.draw(st.integers(0, len(vectors) - 1))
    scale = data.draw(st.floats(0.1, 10))
    with_copy = np.vstack([vectors, vectors[source] * scale])
    stats = offdiag_cosine_stats(with_copy, block=data.draw(st.integers(1, 8)))
    assert stats.max_abs == pytest.approx(1.0, abs=1e-5)
    top_i, top_j, top_cos = stats.top_pairs[0]
    unit = with_copy / np.linalg.norm(with_copy, axis=1, keepdims=True)
    assert abs(unit[top_i] @ unit[top_j]) == pytest.approx(1.0, abs=1e-5)
    assert abs(top_cos) == pytest.approx(1.0, abs=1e-5)
    assert stats.diagonal_dominance(0.99) < 1.0


@settings(max_examples=40, deadline=None)
@given(vector_sets())
def test_mean_offdiag_cosine_matches_dense(vectors: np.ndarray) -> None:
    """The O(n d) signed mean equals the mean over the dense Gram matrix's off-diagonal."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    gram = unit @ unit.T
    off = ~np.eye(len(vectors), dtype=bool)
    assert mean_offdiag_cosine(vectors) == pytest.approx(gram[off].mean(), abs=1e-9)


@pytest.mark.parametrize("dim", [16, 64, 384])
def test_gaussian_abs_cosine_mean_matches_monte_carlo(dim: int) -> None:
    """E|cos| of Gaussian pairs: the closed form agrees with 20000 sampled pairs within 3%."""
    rng = np.random.default_rng(dim)
    a, b = rng.standard_normal((2, 20000, dim))
    sampled = np.abs((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean()
    assert gaussian_abs_cosine_mean(dim) == pytest.approx(sampled, rel=0.03)


def test_gaussian_abs_cosine_mean_approaches_normal_limit() -> None:
    """For large d, E|cos| -> sqrt(2 / (pi d))."""
    assert gaussian_abs_cosine_mean(100_000) == pytest.approx(math.sqrt(2 / (math.pi * 100_000)), rel=1e-4)


def test_embedding_variants() -> None:
    """centred: zero column mean; ln: zero row mean and unit row std for LayerNorm, unit row rms for RMSNorm."""
    embeddings = np.random.default_rng(0).standard_normal((50, 8)) + 3.0
    centred, _ = embedding_variant(embeddings, "centred", "layernorm")
    np.testing.assert_allclose(centred.mean(axis=0), 0.0, atol=1e-12)
    ln, _ = embedding_variant(embeddings, "ln", "layernorm")
    np.testing.assert_allclose(ln.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(ln.std(axis=1), 1.0)
    rms, note = embedding_variant(embeddings, "ln", "rmsnorm")
    np.testing.assert_allclose(np.sqrt(np.mean(rms**2, axis=1)), 1.0)
    np.testing.assert_allclose(unit_rows(rms).numpy(), unit_rows(embeddings).numpy(), atol=1e-6)
    assert "RMSNorm" in note
    with pytest.raises(ValueError, match="unknown embedding variant"):
        embedding_variant(embeddings, "whitened", "layernorm")
