"""The sorting heads' OV circuits and modes on hand-built heads whose mode is known (the issue's controls)."""

from __future__ import annotations

import numpy as np
import pytest

from mechclaims.metrics.list_sorting import (
    classify_heads,
    diagonal_scores,
    jaccard,
    ov_circuits,
    qk_circuits,
    settled_index,
    sorted_order,
)

N = 24
NUMBERS = np.arange(N)
SORTING_QK = np.where(NUMBERS[None] > NUMBERS[:, None], -(NUMBERS[None] - NUMBERS[:, None]), -100.0)
"""A QK circuit that attends to the smallest number above the query: keys above it, nearest first."""


def _heads(*diagonals: np.ndarray) -> np.ndarray:
    """OV circuits of one-hot numbers (W_E = W_U = identity) whose heads write diag(d) through W_V W_O."""
    eye = np.eye(N)
    W_V = np.stack([np.diag(d) for d in diagonals])
    W_O = np.stack([eye for _ in diagonals])
    return ov_circuits(eye, W_V, W_O, eye, np.arange(N))


def _range(start: int, stop: int, sign: float = 1.0) -> np.ndarray:
    values = np.zeros(N)
    values[start:stop] = sign
    return values


def test_ov_circuits_and_scores_match_einsum_and_loops() -> None:
    rng = np.random.default_rng(0)
    W_E, W_U = rng.standard_normal((30, 8)), rng.standard_normal((8, 30))
    W_V, W_O = rng.standard_normal((2, 8, 4)), rng.standard_normal((2, 4, 8))
    tokens = np.array([3, 5, 7, 11])
    circuits = ov_circuits(W_E, W_V, W_O, W_U, tokens)
    np.testing.assert_allclose(circuits, np.einsum("id,hde,hef,fj->hij", W_E[tokens], W_V, W_O, W_U[:, tokens]))
    scores = diagonal_scores(circuits)
    for h in range(2):
        for i in range(4):
            row = circuits[h, i]
            assert scores[h, i] == pytest.approx((row[i] - row.mean()) / row.std())
    assert jaccard(np.array([1, 1, 0], bool), np.array([0, 1, 1], bool)) == pytest.approx(1 / 3)
    assert jaccard(np.zeros(3, bool), np.zeros(3, bool)) == 0.0


@pytest.mark.parametrize(("diagonals", "mode"), [
    ((_range(0, 12), _range(12, 24)), "vocabulary-splitting"),
    ((_range(0, 24), _range(0, 24, -1.0)), "copy-suppression"),
    ((_range(0, 18), _range(2, 20)), "overlapping"),
    ((_range(0, 6), _range(12, 18)), "none"),
    ((_range(3, 5), _range(3, 5, -1.0)), "none"),
    ((_range(3, 5), _range(3, 5)), "none"),
    ((_range(0, 6), _range(0, 6, -1.0)), "copy-suppression"),
])
def test_hand_built_heads_are_classified_by_their_known_mode(diagonals: tuple, mode: str) -> None:
    modes = classify_heads(_heads(*diagonals), np.stack([SORTING_QK] * len(diagonals)))
    assert modes.mode == mode


@pytest.mark.parametrize("diagonals", [(_range(0, 12), _range(12, 24)), (_range(0, 24), _range(0, 24, -1.0)),
                                       (_range(0, 18), _range(2, 20))])
def test_heads_that_copy_without_attending_in_sorted_order_have_no_mode(diagonals: tuple) -> None:
    """The shuffled-target null's case: the same OV circuits with a QK circuit blind to order (random, or one
    that prefers the numbers below the query) are no mode; without a QK circuit nothing can be said either."""
    rng = np.random.default_rng(3)
    for qk in (rng.standard_normal((2, N, N)), np.stack([SORTING_QK.T] * 2)):
        found = classify_heads(_heads(*diagonals), qk)
        assert found.mode == "none" and (found.sorted_order < 0.75).any()
    assert classify_heads(_heads(*diagonals)).mode == "none"


def test_sorted_order_counts_keys_above_the_query_ranked_first_against_a_loop_oracle() -> None:
    rng = np.random.default_rng(4)
    qk, keys = rng.standard_normal((9, 9)), rng.random(9) < 0.6
    wins = pairs = 0
    for query in range(9):
        for above in range(9):
            for below in range(9):
                if keys[above] and keys[below] and below <= query < above:
                    pairs += 1
                    wins += qk[query, above] > qk[query, below]
    assert sorted_order(qk, keys) == pytest.approx(wins / pairs)
    assert sorted_order(SORTING_QK, np.ones(N, bool)) == 1.0 and sorted_order(SORTING_QK.T, np.ones(N, bool)) == 0.0
    assert sorted_order(qk, np.zeros(9, bool)) == 0.5


@pytest.mark.parametrize(("modes", "good", "expected"), [
    (["overlapping", "none", "vocabulary-splitting", "vocabulary-splitting"], [True] * 4, 2),
    (["none", "none", "none"], [False, True, True], 1),
    (["vocabulary-splitting", "none", "vocabulary-splitting"], [True] * 3, 2),
    (["none", "none"], [True, False], None),
    (["none"], [True], 0),
])
def test_a_run_settles_at_the_first_checkpoint_after_which_nothing_changes(modes: list, good: list,
                                                                           expected: int | None) -> None:
    assert settled_index(modes, good) == expected


def test_splitting_heads_copy_exactly_their_halves_and_a_random_model_has_no_mode() -> None:
    modes = classify_heads(_heads(_range(0, 12), _range(12, 24)), np.stack([SORTING_QK] * 2))
    assert modes.copied[0, :12].all() and not modes.copied[0, 12:].any() and modes.coverage == 1.0
    assert modes.copy_overlap == 0.0 and not modes.suppressed.any()
    for seed in range(5):
        rng = np.random.default_rng(seed)
        random = ov_circuits(rng.standard_normal((N, 32)), rng.standard_normal((2, 32, 16)),
                             rng.standard_normal((2, 16, 32)), rng.standard_normal((32, N)), np.arange(N))
        assert classify_heads(random, rng.standard_normal((2, N, N))).mode == "none"


def test_calibration_against_hand_computed_cases() -> None:
    from mechclaims.metrics.list_sorting import calibration

    certain = calibration(np.array([[50.0, 0.0], [0.0, 50.0]]), np.array([0, 1]))
    assert certain.accuracy == 1.0 and certain.confidence == pytest.approx(1.0)
    assert certain.entropy == pytest.approx(0.0, abs=1e-12) and certain.calibration_error == pytest.approx(0.0)
    p = 0.8
    logits = np.log(np.array([[p, 1 - p]] * 10))
    targets = np.array([0] * 6 + [1] * 4)
    found = calibration(logits, targets)
    assert found.accuracy == pytest.approx(0.6) and found.confidence == pytest.approx(0.8)
    assert found.calibration_error == pytest.approx(0.2)
    assert found.entropy == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)))
    mixed = calibration(np.log(np.array([[0.95, 0.05], [0.55, 0.45]])), np.array([0, 1]))
    assert mixed.calibration_error == pytest.approx(0.5 * abs(1 - 0.95) + 0.5 * abs(0 - 0.55))


def test_qk_circuits_match_einsum_with_grouped_keys() -> None:
    rng = np.random.default_rng(1)
    W_E, W_Q, W_K = rng.standard_normal((30, 8)), rng.standard_normal((4, 8, 2)), rng.standard_normal((2, 8, 2))
    tokens = np.array([1, 4, 9])
    expected = np.einsum("id,hde,hfe,jf->hij", W_E[tokens], W_Q, np.repeat(W_K, 2, axis=0), W_E[tokens])
    np.testing.assert_allclose(qk_circuits(W_E, W_Q, W_K, tokens), expected)


def test_copy_suppression_needs_the_two_heads_to_attend_alike() -> None:
    circuits = _heads(_range(0, 24), _range(0, 24, -1.0))
    rng = np.random.default_rng(2)
    same = np.stack([SORTING_QK] * 2)
    assert classify_heads(circuits, same).mode == "copy-suppression"
    assert classify_heads(circuits, same).qk_correlation[0, 1] == pytest.approx(1.0)
    assert classify_heads(circuits, same).suppression_pair == (0, 1)
    unrelated = rng.standard_normal((2, N, N))
    found = classify_heads(circuits, unrelated)
    assert abs(found.qk_correlation[0, 1]) < 0.3 and found.mode == "none"
    assert found.suppression_pair is None
