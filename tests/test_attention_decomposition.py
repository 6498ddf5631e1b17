"""Sparse attention decomposition: the selected-set rule against brute force, the thin-factor SVD against a
dense one, rotary offsets, the decomposition against scores computed directly, and the planted control."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mechclaims.cache import MeasurementCache
from mechclaims.claim import Verdict
from mechclaims.engine import Settings, evaluate
from mechclaims.metrics.attention_decomposition import (
    ROUNDING,
    augmented,
    decompose_layer,
    identity_error,
    omega_svd,
    random_bases,
    rotary_offset_matrices,
    selected_sets,
)
from mechclaims.stats import auroc

from helpers import CLAIMS_DIR, claim_by_id

TERMS = arrays(np.float64, st.integers(1, 7), elements=st.floats(-10, 10, allow_nan=False).map(lambda v: round(v, 3)))


def brute_force_size(terms: np.ndarray, threshold: float) -> int:
    """Smallest k such that some k terms (sign-adjusted to the score) sum past threshold * |score| (up to
    rounding), by trying every subset; all positive terms when none does; 0 for a zero score."""
    score = terms.sum()
    if score == 0:
        return 0
    signed = terms * (1 if score > 0 else -1)
    target = threshold * abs(score) - ROUNDING * np.abs(terms).sum()
    for k in range(1, len(terms) + 1):
        if any(sum(c) > target for c in itertools.combinations(signed, k)):
            return k
    return int((signed > 0).sum())


@settings(max_examples=300, deadline=None)
@given(TERMS, st.sampled_from([0.5, 0.7, 1.0, 1.2]))
def test_selected_set_sizes_match_brute_force(terms: np.ndarray, threshold: float) -> None:
    sizes, chosen = selected_sets(terms[None], threshold)
    assert sizes[0] == brute_force_size(terms, threshold)
    assert chosen[0].sum() == sizes[0]


@pytest.mark.parametrize(
    ("terms", "size"),
    [
        ([3.0, 2.0, 1.0], 3),          # all positive: every term is needed to reach the score
        ([5.0, -2.0, 1.0], 1),         # a negative term lets the largest term alone exceed the score
        ([-3.0, -2.0, 1.0], 2),        # a negative score mirrors the rule: 3 + 2 > |-4|
        ([1.0, -1.0, 0.0], 0),         # a zero score has no set
        ([2.0, 1e-9, 1e-9, 0.0], 1),   # terms below rounding never join
    ],
)
def test_selected_set_edge_cases(terms: list[float], size: int) -> None:
    assert selected_sets(np.array([terms]), 1.0)[0][0] == size


def test_selected_vectors_are_the_largest_terms() -> None:
    _, chosen = selected_sets(np.array([[0.1, 4.0, -1.0, 2.0]]), 1.0)
    assert chosen[0].tolist() == [False, True, False, True]  # 4 + 2 > 5.1; 0.1 is not needed


def _factors(rng: np.random.Generator, heads: int = 3, d: int = 10, r: int = 4) -> tuple[np.ndarray, np.ndarray]:
    query = augmented(rng.standard_normal((heads, d, r)), rng.standard_normal((heads, r)))
    key = augmented(rng.standard_normal((heads, d, r)), rng.standard_normal((heads, r)))
    return query, key


def test_thin_svd_is_the_dense_svd_of_omega() -> None:
    rng = np.random.default_rng(0)
    query, key = _factors(rng)
    svd = omega_svd(query, key)
    for head in range(3):
        dense = query[head] @ key[head].T
        np.testing.assert_allclose(svd.dense(head), dense, atol=1e-10)
        np.testing.assert_allclose(svd.s[head, 0], np.linalg.svd(dense, compute_uv=False)[:4], rtol=1e-10)


def _rotation(cos: np.ndarray, sin: np.ndarray, p: int) -> np.ndarray:
    """The rotate-half rotation at position p, applied to a vector as q * cos + rotate_half(q) * sin."""
    half = cos.shape[1] // 2
    eye = np.eye(cos.shape[1])
    return np.stack([col * cos[p] + np.concatenate([-col[half:], col[:half]]) * sin[p] for col in eye], axis=1)


def test_rotary_offset_matrices_are_the_products_of_the_positions_rotations() -> None:
    positions = 6
    angles = np.arange(positions)[:, None] * np.array([1.0, 0.3, 1.0, 0.3])[None]
    cos, sin = np.cos(angles), np.sin(angles)
    offsets = tuple(range(-(positions - 1), positions))
    matrices = rotary_offset_matrices(cos, sin, offsets)
    for i, j in itertools.product(range(positions), repeat=2):
        direct = _rotation(cos, sin, i).T @ _rotation(cos, sin, j)
        np.testing.assert_allclose(matrices[offsets.index(j - i)], direct, atol=1e-12)


def _layer(rng: np.random.Generator, rotary: bool) -> tuple:
    n, length, d, r, heads = 3, 5, 10, 4, 3
    query, key = _factors(rng, heads, d, r)
    x = rng.standard_normal((n, length, d)).astype(np.float32)
    xt = np.concatenate([x, np.ones((n, length, 1), np.float32)], axis=2).astype(np.float64)
    q = np.einsum("ntd,hdr->nhtr", xt, query)
    k = np.einsum("ntd,hdr->nhtr", xt, key)
    if rotary:
        angles = np.arange(length)[:, None] * np.array([0.7, 0.2, 0.7, 0.2])[None]
        cos, sin = np.cos(angles), np.sin(angles)
        q = np.stack([q[:, :, t] @ _rotation(cos, sin, t).T for t in range(length)], axis=2)
        k = np.stack([k[:, :, t] @ _rotation(cos, sin, t).T for t in range(length)], axis=2)
        offsets = tuple(range(-(length - 1), length))
        svd = omega_svd(query, key, rotary_offset_matrices(cos, sin, offsets), offsets)
    else:
        svd = omega_svd(query, key)
    scores = np.einsum("nhir,nhjr->nhij", q, k)
    causal = np.tril(np.ones((length, length), bool))
    pattern = np.where(causal, 1.0, 0.0) / causal.sum(axis=1, keepdims=True)
    pattern = np.broadcast_to(pattern, scores.shape).astype(np.float32)
    return x, svd, scores, pattern, causal


@pytest.mark.parametrize("rotary", [False, True])
def test_decomposed_scores_equal_scores_computed_directly(rotary: bool) -> None:
    x, svd, scores, pattern, causal = _layer(np.random.default_rng(1), rotary)
    real = np.ones(x.shape[:2], bool)
    end = np.full(len(x), x.shape[1] - 1)
    decomposed = decompose_layer(x, svd, pattern, real, end, causal=True)
    valid = np.broadcast_to(causal, scores.shape)
    assert identity_error(decomposed.scores, scores, valid) < 1e-5
    rotated = decompose_layer(x, svd, pattern, real, end, causal=True, basis=random_bases(3, 4, 0))
    assert identity_error(rotated.scores, scores, valid) < 1e-5


def test_a_wrong_omega_fails_the_identity() -> None:
    """The self-check can fail: the biases left out of Omega (the augmentation dropped) move the scores."""
    rng = np.random.default_rng(2)
    x, svd, scores, pattern, causal = _layer(rng, False)
    unbiased = omega_svd(*(np.concatenate([f[:, :-1], np.zeros_like(f[:, -1:])], axis=1)
                           for f in (svd.query_basis @ svd.u[:, 0] * svd.s[:, 0, None, :], svd.key_basis @ svd.v[:, 0])))
    decomposed = decompose_layer(x, unbiased, pattern, np.ones(x.shape[:2], bool), np.full(len(x), 4), causal=True)
    assert identity_error(decomposed.scores, scores, np.broadcast_to(causal, scores.shape)) > 1e-2


def test_firings_follow_the_rule() -> None:
    """Attention >= 0.5, source not 0, score >= 0, both positions <= end: checked pair by pair."""
    x, svd, scores, _, causal = _layer(np.random.default_rng(3), False)
    rng = np.random.default_rng(4)
    pattern = np.where(causal, rng.uniform(0, 1, scores.shape), 0).astype(np.float32)
    end = np.array([4, 3, 2])
    result = decompose_layer(x, svd, pattern, np.ones(x.shape[:2], bool), end, causal=True)
    fired = set(zip(*(getattr(result.firings, k).tolist() for k in ("prompt", "head", "dest", "source"))))
    expected = {(n, h, i, j) for n, h, i, j in itertools.product(*(range(s) for s in scores.shape))
                if j <= i and pattern[n, h, i, j] >= 0.5 and j != 0 and scores[n, h, i, j] >= 0 and i <= end[n]}
    assert fired == expected and fired


def test_auroc_against_pairs() -> None:
    positive, negative = np.array([0.9, 0.4, 0.4]), np.array([0.4, 0.1])
    pairs = [1.0 if p > q else 0.5 if p == q else 0.0 for p in positive for q in negative]
    assert auroc(positive, negative) == pytest.approx(np.mean(pairs))


@pytest.mark.parametrize(("spec", "verdict"), [("planted:low-rank-head", Verdict.PASS),
                                                ("random:planted:low-rank-head", Verdict.FAIL)])
def test_planted_rank_two_head_is_sparse_in_its_singular_basis_and_its_twin_is_not(spec: str, verdict: Verdict,
                                                                                  tmp_path: Path) -> None:
    settings = Settings(cache=MeasurementCache(tmp_path), claims_dir=CLAIMS_DIR)
    claim = replace(claim_by_id("franco2024.sparsity_specific_to_singular_basis"), null=None)  # the twin is the null
    result = evaluate(claim, spec, settings)
    assert result.verdict is verdict, result.summary()
    if verdict is Verdict.PASS:
        assert result.measurement.distribution.max() * 64 <= 2
    identity = evaluate(claim_by_id("franco2024.decomposition_reproduces_scores"), spec, settings)
    assert identity.verdict is Verdict.PASS, identity.summary()


@pytest.mark.parametrize("spec", ["tiny_gpt2_dir", "tiny_llama_dir", "planted:low-rank-head",
                                  "random:planted:low-rank-head", "planted:bundles"])
def test_the_decomposition_reproduces_every_models_own_scores(spec: str, request: pytest.FixtureRequest) -> None:
    """Additive and rotary positions (tiny Llama: one Omega per offset), grouped KV heads, planted and random."""
    from mechclaims.datasets import load_dataset
    from mechclaims.metrics.sparse_attention import decomposition_identity
    from mechclaims.models import load_model

    model = load_model(str(request.getfixturevalue(spec)) if spec.endswith("_dir") else spec)
    measurement = decomposition_identity(model, load_dataset("forward_check"))
    assert measurement.statistics["relative_error"] < 1e-4
    assert measurement.details["reference"] == "hook_attn_scores"


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["smollm2-135m", "minilm-l6"])
def test_the_decomposition_reproduces_the_bundled_models_scores(spec: str) -> None:
    """smollm2: rotary, 3 KV heads for 9 query heads; MiniLM: an encoder whose bridge's score hook holds the
    softmax, so the check is against its attention pattern."""
    from mechclaims.datasets import load_dataset
    from mechclaims.metrics.sparse_attention import decomposition_identity
    from mechclaims.models import load_model

    measurement = decomposition_identity(load_model(spec), load_dataset("ioi", n=16))
    assert measurement.statistics["relative_error"] < 1e-4, measurement.details


def test_tracing_splits_what_attention_wrote_into_its_heads_along_each_signal(tiny_gpt2_model: object) -> None:
    """Oracles for tracing on a real forward pass: (1) x~_i . w_dest = sum_{k in S} sqrt(sigma_k) |x~_i . u_k|
    from the dense U; (2) the heads' contributions along a firing's (centred) signal direction add up to what
    the whole attention layer wrote there, minus its output bias, read from hook_attn_out."""
    from mechclaims.datasets import load_dataset
    from mechclaims.metrics.attention_decomposition import Firings, signal_vectors, upstream_contributions
    from mechclaims.metrics.sparse_attention import _analysis

    model = tiny_gpt2_model
    dataset = load_dataset("forward_check")
    analysis = _analysis(model, dataset, 1.0, "singular")
    layer = 1
    view = analysis.layers[layer]
    firings = view.firings
    assert len(firings.head) > 0
    rows = np.arange(min(len(firings.head), 40))
    sub = Firings(*(getattr(firings, k)[rows] for k in Firings.__dataclass_fields__))
    dest, _ = signal_vectors(view.svd, view.residual, sub)
    x = np.concatenate([view.residual[sub.prompt, sub.dest], np.ones((len(rows), 1))], axis=1).astype(np.float64)
    for f in range(len(rows)):
        left = view.svd.left(int(sub.head[f]))
        chosen = sub.selected[f]
        expected = np.sum(np.sqrt(view.svd.s[sub.head[f], 0][chosen]) * np.abs(x[f] @ left[:, chosen]))
        assert x[f] @ dest[f] == pytest.approx(expected, rel=1e-6)
    w = dest[:, :-1] - dest[:, :-1].mean(axis=1, keepdims=True)
    acts = model.activations(list(dataset.texts), ["blocks.0.hook_attn_out"], prepend_bos=False, progress=False)
    bias = model.bridge.original_model.transformer.h[0].attn.c_proj.bias.detach().double().numpy()
    written = acts.arrays["blocks.0.hook_attn_out"][sub.prompt, sub.dest].astype(np.float64) - bias
    by_head = upstream_contributions(analysis.layers[0].z, model.weights("compat").W_O[0], w, sub.prompt, sub.dest)
    np.testing.assert_allclose(by_head.sum(axis=1), np.einsum("fd,fd->f", written, w), rtol=1e-4, atol=1e-4)
