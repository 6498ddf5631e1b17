"""Greedy bundling: the batched incremental algorithm equals the brute-force definition."""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import torch
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mechclaims.metrics import bundling
from mechclaims.kernels import KERNELS
from mechclaims.errors import MechclaimsError
from mechclaims.metrics.bundling import TIE, faiss_bundles, greedy_bundles


def brute_force_bundle(candidates: np.ndarray, target: np.ndarray, max_tokens: int, allow_repeats: bool) -> list[int]:
    """The definition: at each step try every token and keep the lowest id among those within TIE of
    the best cos(b + e_t, w); stop when the best does not beat the current cosine by more than TIE."""
    e = candidates.astype(np.float64)
    w = target.astype(np.float64)
    bundle, chosen, current = np.zeros_like(w), [], -np.inf
    for _ in range(max_tokens):
        trial = bundle[None, :] + e
        scores = trial @ w / (np.maximum(np.linalg.norm(trial, axis=1), 1e-300) * np.linalg.norm(w))
        if not allow_repeats:
            scores[chosen] = -np.inf
        best = int(np.flatnonzero(scores >= scores.max() - TIE)[0])
        if not scores[best] > current + TIE:
            break
        chosen.append(best)
        bundle, current = bundle + e[best], scores[best]
    return chosen


@st.composite
def dictionaries(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Small integer-valued dictionaries (exact ties are exact) with duplicated rows, and targets."""
    vocab = draw(st.integers(2, 30))
    dim = draw(st.integers(2, 8))
    values = st.integers(-3, 3).map(float)
    candidates = draw(arrays(np.float64, (vocab, dim), elements=values))
    assume(bool(np.all(np.abs(candidates).sum(1) > 0)))
    copies = draw(st.lists(st.integers(0, vocab - 1), max_size=4))
    candidates = np.vstack([candidates, candidates[copies]]) if copies else candidates
    targets = draw(arrays(np.float64, (draw(st.integers(1, 6)), dim), elements=values))
    assume(bool(np.all(np.abs(targets).sum(1) > 0)))
    return candidates, targets


@settings(max_examples=150, deadline=None)
@given(dictionaries(), st.integers(1, 6), st.booleans(), st.integers(1, 4), st.sampled_from(KERNELS))
def test_greedy_bundles_equal_brute_force(
    dictionary: tuple[np.ndarray, np.ndarray], max_tokens: int, allow_repeats: bool, chunk: int, kernel: str
) -> None:
    candidates, targets = dictionary
    bundles = greedy_bundles(candidates, targets, max_tokens=max_tokens, allow_repeats=allow_repeats, chunk=chunk,
                             kernel=kernel)
    for i, target in enumerate(targets):
        expected = brute_force_bundle(candidates, target, max_tokens, allow_repeats)
        got = [int(t) for t in bundles.tokens[i] if t >= 0]
        assert got == expected
        e, w = candidates[expected].sum(0), target
        assert bundles.final[i] == pytest.approx(e @ w / np.linalg.norm(e) / np.linalg.norm(w), abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(dictionaries(), st.integers(1, 5), st.booleans(), st.sampled_from(KERNELS))
def test_whole_vocabulary_fallback_equals_brute_force(
    dictionary: tuple[np.ndarray, np.ndarray], max_tokens: int, allow_repeats: bool, kernel: str
) -> None:
    """A target whose shortlist overflows is re-scored over the whole vocabulary; forcing that at every step
    (a shortlist of width 0) still gives the definition's bundles and per-step cosines."""
    candidates, targets = dictionary
    with patch.object(bundling, "SHORTLIST", 0):
        bundles = greedy_bundles(candidates, targets, max_tokens=max_tokens, allow_repeats=allow_repeats, kernel=kernel)
    for i, target in enumerate(targets):
        expected = brute_force_bundle(candidates, target, max_tokens, allow_repeats)
        assert [int(t) for t in bundles.tokens[i] if t >= 0] == expected
        for k in range(len(expected)):
            e = candidates[expected[: k + 1]].sum(0)
            assert bundles.cosines[i, k] == pytest.approx(e @ target / np.linalg.norm(e) / np.linalg.norm(target),
                                                          abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 400), st.integers(2, 48), st.booleans())
def test_bfloat16_ranking_gives_the_float32_bundles_on_unrounded_vectors(
    seed: int, vocab: int, dim: int, near_duplicates: bool
) -> None:
    """Gaussian candidates (most entries not representable in bfloat16), some near-duplicate rows that tie
    in bfloat16 but not in float32: both kernels give the definition's bundles."""
    rng = np.random.default_rng(seed)
    candidates = rng.standard_normal((vocab, dim)).astype(np.float32)
    if near_duplicates:
        copies = rng.integers(0, vocab, size=max(1, vocab // 4))
        candidates[copies] = candidates[rng.integers(0, vocab, size=len(copies))] * (1 + 1e-4)
    targets = rng.standard_normal((5, dim)).astype(np.float32)
    for kernel in KERNELS:
        bundles = greedy_bundles(candidates, targets, max_tokens=6, kernel=kernel)
        for i, target in enumerate(targets):
            assert [int(t) for t in bundles.tokens[i] if t >= 0] == brute_force_bundle(candidates, target, 6, False)


def test_planted_bundles_are_recovered() -> None:
    """Targets that are sums of 4 unit tokens plus small noise: the greedy bundle finds those tokens."""
    rng = np.random.default_rng(0)
    candidates = rng.standard_normal((2000, 128))
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    planted = np.array([rng.choice(2000, 4, replace=False) for _ in range(50)])
    targets = candidates[planted].sum(1) + 0.05 * rng.standard_normal((50, 128))
    bundles = greedy_bundles(candidates, targets, max_tokens=10)
    recovered = [len(set(planted[i]) & set(bundles.tokens[i, :4])) for i in range(50)]
    assert np.mean(recovered) / 4 >= 0.95
    assert np.all(bundles.final > 0.9)


def test_fraction_by_bundle_size_is_monotone() -> None:
    rng = np.random.default_rng(1)
    bundles = greedy_bundles(rng.standard_normal((500, 32)), rng.standard_normal((40, 32)), max_tokens=8)
    fractions = bundles.fraction_at_least_by_size(0.5)
    assert len(fractions) == 8 and np.all(np.diff(fractions) >= 0)
    assert fractions[-1] == pytest.approx(np.mean(bundles.final >= 0.5))


@settings(max_examples=40, deadline=None)
@given(dictionaries(), st.integers(1, 5), st.booleans())
def test_faiss_search_over_the_whole_vocabulary_is_the_exact_search(
    dictionary: tuple[np.ndarray, np.ndarray], max_tokens: int, allow_repeats: bool
) -> None:
    """With a shortlist as long as the vocabulary every token is scored exactly, so the paper's FAISS search
    must give the definition's bundles; this checks its scoring, tie and stopping rules, not its shortlist."""
    candidates, targets = dictionary
    bundles = faiss_bundles(candidates, targets, max_tokens=max_tokens, allow_repeats=allow_repeats,
                            shortlist=len(candidates))
    for i, target in enumerate(targets):
        assert [int(t) for t in bundles.tokens[i] if t >= 0] == brute_force_bundle(candidates, target, max_tokens,
                                                                                   allow_repeats)


def test_faiss_search_finds_planted_bundles_and_reports_its_agreement() -> None:
    """Targets that are sums of 3 unit tokens: the residual's nearest tokens hold the next planted token, so the
    FAISS search agrees with the exact search on every target (gap 0); on Gaussian targets in 8 dimensions
    with 2000 candidates it misses some exact bundles, and the agreement says so."""
    rng = np.random.default_rng(3)
    candidates = rng.standard_normal((2000, 64)).astype(np.float32)
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    planted = rng.choice(2000, size=(30, 3), replace=False)
    targets = candidates[planted].sum(1)
    exact = greedy_bundles(candidates, targets, max_tokens=3)
    agreement = bundling.SearchAgreement.of(exact, faiss_bundles(candidates, targets, max_tokens=3))
    assert (agreement.identical, agreement.max_gap) == (1.0, pytest.approx(0.0, abs=1e-12))
    low = rng.standard_normal((2000, 8)).astype(np.float32)
    noise = rng.standard_normal((50, 8)).astype(np.float32)
    missed = bundling.SearchAgreement.of(greedy_bundles(low, noise), faiss_bundles(low, noise, shortlist=1))
    assert missed.identical < 1.0
    assert missed.mean_gap > 0


def test_an_unknown_search_is_a_one_line_error() -> None:
    with pytest.raises(MechclaimsError, match="unknown bundle search 'annoy': use exact, faiss"):
        bundling.searched_bundles(np.eye(3), np.eye(3), "annoy", 2, False, "")


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_bfloat16_product_rows_kept_across_calls_or_evicted_when_full_give_the_definitions_bundles(
    seed: int, rows_that_fit: int
) -> None:
    """Rows kept from an earlier call over the same candidates are reused (none is computed again), and a row store
    so small that it evicts rows at almost every step still gives the definition's bundles."""
    rng = np.random.default_rng(seed)
    candidates = rng.standard_normal((300, 16)).astype(np.float32)
    targets = rng.standard_normal((12, 16)).astype(np.float32)
    expected = [brute_force_bundle(candidates, target, 6, False) for target in targets]
    bundling._KEPT_ROWS.clear()
    with patch.object(bundling, "ROW_CACHE_BYTES", rows_that_fit * 2 * len(candidates)):
        crowded = greedy_bundles(candidates, targets, max_tokens=6, chunk=4, kernel="bfloat16")
    assert [[int(t) for t in row if t >= 0] for row in crowded.tokens] == expected
    bundling._KEPT_ROWS.clear()
    first = greedy_bundles(candidates, targets, max_tokens=6, chunk=4, kernel="bfloat16")
    kept = next(iter(bundling._KEPT_ROWS.values()))
    computed = kept.computed
    assert 0 < computed == len({t for bundle in expected for t in bundle[:5]})
    again = greedy_bundles(candidates, targets[::-1].copy(), max_tokens=6, chunk=4, kernel="bfloat16")
    assert kept.computed == computed
    assert np.array_equal(again.tokens, first.tokens[::-1])


def test_a_store_that_fills_its_last_row_and_evicts_in_one_call_gives_each_token_its_own_row() -> None:
    """Three rows fit: tokens 0 and 1 take two; tokens 2 and 3 then need the last unfilled row and one evicted row,
    never the unfilled row twice (which would leave two tokens sharing one product row)."""
    ranked = torch.as_tensor(np.random.default_rng(1).standard_normal((8, 4)), dtype=torch.bfloat16)
    with patch.object(bundling, "ROW_CACHE_BYTES", 3 * 2 * len(ranked)):
        store = bundling._ProductRows(ranked, 2)
    store.slots(torch.tensor([0, 1]))
    places = store.slots(torch.tensor([2, 3]))
    assert len(set(places.tolist())) == 2 and store.computed == 4
    kept = [token for token in range(8) if int(store.slot[token]) >= 0]
    assert sorted(kept)[-2:] == [2, 3] and len(kept) == 3 and len({int(store.slot[t]) for t in kept}) == 3
    for token in kept:
        alone = (ranked[token:token + 1].double() @ ranked.double().T).bfloat16()[0]
        assert torch.equal(store.rows[store.slot[token]], alone)


def test_a_full_product_row_store_evicts_the_least_recently_used_token() -> None:
    """Three rows fit: after tokens 0, 1, then 2, then 0 again, token 3 takes token 1's row; every kept row is its
    token's product with the candidates, as one product computed alone gives it."""
    ranked = torch.as_tensor(np.random.default_rng(0).standard_normal((8, 4)), dtype=torch.bfloat16)
    with patch.object(bundling, "ROW_CACHE_BYTES", 3 * 2 * len(ranked)):
        store = bundling._ProductRows(ranked, 1)
    first = store.slots(torch.tensor([0, 1]))
    store.slots(torch.tensor([2]))
    assert int(store.slots(torch.tensor([0]))[0]) == int(first[0])
    assert int(store.slots(torch.tensor([3]))[0]) == int(first[1])
    assert store.computed == 4
    assert [int(store.slot[t]) >= 0 for t in range(4)] == [True, False, True, True]
    for token in (0, 2, 3):
        alone = (ranked[token:token + 1].double() @ ranked.double().T).bfloat16()[0]
        assert torch.equal(store.rows[store.slot[token]], alone)
