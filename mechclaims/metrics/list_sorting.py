"""Pure measurements of the list-sorting heads (Urdshals & Urdshals 2025): arrays in, dataclasses out.

A head's OV circuit over the numbers, OV_h = W_E[n] W_V^h W_O^h W_U[:, n] (numbers x numbers; row: the number
attended to, column: the logit it writes), says which numbers it copies and which it suppresses. Its advantage
on number n is A_h(n) = OV_h[n, n] - mean_{j != n} OV_h[n, j], in logits. Head h copies n when A_h(n) stands out of
its row (>= STANDS_OUT row standard deviations above the row's mean) and is at least COPY_SHARE of the largest
advantage any head has on n; it suppresses n when A_h(n) stands out below the row by as much and its size is at
least COPY_SHARE of that largest advantage.

A head that copies numbers does not yet sort them: a model trained on shuffled targets copies too. Sorting needs
the head's QK circuit over the numbers, QK_h[q, m] = W_E[q] W_Q^h (W_K^h)^T W_E[m]^T (query: the number just
written; key: a number of the list), to prefer the numbers above the query among those it copies. Its sorted-order
score is S_h = P(QK_h[q, a] > QK_h[q, b]) over every query number q and pair of numbers a, b the head copies with
b <= q < a (0.5 for a QK circuit that ignores order, 1 for one that always ranks its numbers above the query
first); the head *attends in sorted order* when S_h >= SORTED_ATTENTION. The modes, from the copied and
suppressed sets and the scores:
- copy-suppression: a head that attends in sorted order copies a range and another head suppresses a range
  overlapping it (Jaccard >= 0.5), and the two attend alike: their QK circuits correlate at >= 0.8;
- overlapping ranges: two heads that attend in sorted order copy ranges with Jaccard > 0.5 (the non-simple mode);
  both need the shared numbers to be at least MIN_RANGE of all numbers: an untrained model's few standing-out
  entries (2 or 3 of 24) overlap by chance, and two shared numbers are no range (seen on an initialisation);
- vocabulary-splitting: every head copies some numbers and attends in sorted order, the copied sets barely overlap
  (Jaccard <= 0.1 for every pair) and together cover >= 90% of the numbers (the sets need not be contiguous:
  `runs` counts their pieces);
- none: anything else (an untrained model, a model trained on shuffled targets, or heads part-way between overlap
  and a split).
The biases are left out (they add the same logit vector to every row) and so are positions: the numbers'
identity is in the token embeddings. `calibration` gives accuracy, confidence, entropy and expected calibration
error of predictions, for head ablations (SORT-5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Mode = Literal["vocabulary-splitting", "copy-suppression", "overlapping", "none"]
STANDS_OUT = 1.0
"""A copied (suppressed) number's diagonal entry is at least this many row standard deviations above (below) its
row's mean."""
COPY_SHARE = 0.5
"""... and its advantage is at least this share of the largest advantage any head has on that number."""
MIN_RANGE = 0.25
"""The share of the numbers two heads must share for copy-suppression or overlapping ranges."""
SAME_ATTENTION = 0.8
"""Copy-suppression's two heads attend alike: the Pearson correlation of their QK circuits is at least this."""
SORTED_ATTENTION = 0.75
"""A head attends in sorted order when its sorted-order score S_h is at least this: halfway between a QK circuit
that ignores order (0.5) and one that always ranks the numbers above the query first (1.0), fixed before any
trained run was scored."""
SPLIT_OVERLAP = 0.1
SPLIT_COVERAGE = 0.9
SHARED_RANGE = 0.5


def ov_circuits(W_E: np.ndarray, W_V: np.ndarray, W_O: np.ndarray, W_U: np.ndarray,
                tokens: np.ndarray) -> np.ndarray:
    """[H, n, n]: W_E[tokens] W_V[h] W_O[h] W_U[:, tokens] for each head h (W_V [H, d, d_head], W_O [H, d_head, d])."""
    rows = np.asarray(W_E, dtype=np.float64)[tokens]
    columns = np.asarray(W_U, dtype=np.float64)[:, tokens]
    return np.stack([rows @ np.asarray(v, dtype=np.float64) @ np.asarray(o, dtype=np.float64) @ columns
                     for v, o in zip(W_V, W_O)])


def qk_circuits(W_E: np.ndarray, W_Q: np.ndarray, W_K: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """[H, n, n]: W_E[tokens] W_Q[h] W_K[h]^T W_E[tokens]^T for each head h (row: the query's number, column: the
    key's); W_K may have fewer (grouped) heads than W_Q."""
    embedded = np.asarray(W_E, dtype=np.float64)[tokens]
    group = len(W_Q) // len(W_K)
    return np.stack([embedded @ np.asarray(q, dtype=np.float64) @ np.asarray(W_K[h // group], dtype=np.float64).T
                     @ embedded.T for h, q in enumerate(W_Q)])


def diagonal_scores(circuits: np.ndarray) -> np.ndarray:
    """[H, n]: each row's own entry in standard deviations from the row's mean, (OV[i, i] - mean_j) / std_j."""
    circuits = np.asarray(circuits, dtype=np.float64)
    diagonal = np.diagonal(circuits, axis1=1, axis2=2)
    spread = circuits.std(axis=2)
    return np.divide(diagonal - circuits.mean(axis=2), spread, out=np.zeros_like(diagonal), where=spread > 0)


def diagonal_advantages(circuits: np.ndarray) -> np.ndarray:
    """[H, n]: A_h(n) = OV_h[n, n] - mean_{j != n} OV_h[n, j], the logit a head adds to the number it attends to
    over the other numbers."""
    circuits = np.asarray(circuits, dtype=np.float64)
    n = circuits.shape[-1]
    diagonal = np.diagonal(circuits, axis1=1, axis2=2)
    return diagonal - (circuits.sum(axis=2) - diagonal) / (n - 1)


def sorted_order(qk: np.ndarray, keys: np.ndarray) -> float:
    """S = P(QK[q, a] > QK[q, b]) over every query q and pair of `keys` (a boolean mask over the numbers) with
    b <= q < a; 0.5 when there is no such pair (nothing to order)."""
    qk = np.asarray(qk, dtype=np.float64)
    n = qk.shape[0]
    numbers = np.arange(n)
    wins = pairs = 0.0
    for q in range(n):
        above = qk[q, keys & (numbers > q)]
        below = qk[q, keys & (numbers <= q)]
        if len(above) and len(below):
            wins += float(np.sum(above[:, None] > below[None, :]))
            pairs += len(above) * len(below)
    return wins / pairs if pairs else 0.5


def runs(mask: np.ndarray) -> int:
    """The number of contiguous pieces of a boolean mask over the numbers."""
    mask = np.asarray(mask, dtype=bool)
    return int(mask[0]) + int(np.sum(mask[1:] & ~mask[:-1])) if len(mask) else 0


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """|A and B| / |A or B| of two boolean masks; 0 when both are empty."""
    union = np.logical_or(first, second).sum()
    return float(np.logical_and(first, second).sum() / union) if union else 0.0


@dataclass(frozen=True)
class HeadModes:
    """The heads' advantages A (float [H, n]), copied and suppressed numbers (boolean [H, n]), the largest Jaccard
    overlap between two copied sets, the share of numbers some head copies, the best copy/suppress overlap, the
    pieces of each head's copied set, each head's sorted-order score S_h ([H]; 0.5 each when no QK circuits are
    given), the correlation of the heads' QK circuits ([H, H], None when not given), the (copying, suppressing) heads
    of a copy-suppression (else None), and the mode."""

    advantages: np.ndarray
    copied: np.ndarray
    suppressed: np.ndarray
    copy_overlap: float
    coverage: float
    suppression_overlap: float
    pieces: tuple[int, ...]
    sorted_order: np.ndarray
    qk_correlation: np.ndarray | None
    suppression_pair: tuple[int, int] | None
    mode: Mode


def classify_heads(circuits: np.ndarray, qk: np.ndarray | None = None, stands_out: float = STANDS_OUT,
                   share: float = COPY_SHARE) -> HeadModes:
    """The mode of a model's heads from their OV circuits [H, n, n] and QK circuits [H, n, n] (module docstring).
    Without `qk` neither the sorted order nor the attention of copy-suppression can be checked, and every mode
    but none needs them: the mode is then none."""
    scores, advantages = diagonal_scores(circuits), diagonal_advantages(circuits)
    largest = np.maximum(advantages.max(axis=0), 0.0)
    copied = (scores >= stands_out) & (advantages > 0) & (advantages >= share * largest)
    suppressed = (scores <= -stands_out) & (advantages < 0) & (-advantages >= share * largest) & (largest > 0)
    heads = range(len(circuits))
    pairs = [(a, b) for a in heads for b in heads if a < b]
    least = MIN_RANGE * copied.shape[1]
    order = (np.full(len(circuits), 0.5) if qk is None else
             np.array([sorted_order(qk[h], copied[h]) for h in heads]))
    sorting = order >= SORTED_ATTENTION
    copy_overlap = max((jaccard(copied[a], copied[b]) for a, b in pairs), default=0.0)
    suppression_overlap = max((jaccard(copied[a], suppressed[b]) for a in heads for b in heads if a != b), default=0.0)
    shared_copies = any(jaccard(copied[a], copied[b]) > SHARED_RANGE and np.sum(copied[a] & copied[b]) >= least
                        and sorting[a] and sorting[b] for a, b in pairs)
    correlation = None if qk is None else np.corrcoef(np.asarray(qk, dtype=np.float64).reshape(len(qk), -1))
    suppressing = [(a, b) for a in heads for b in heads if a != b and correlation is not None and sorting[a] and
                   jaccard(copied[a], suppressed[b]) >= SHARED_RANGE and np.sum(copied[a] & suppressed[b]) >= least
                   and correlation[a, b] >= SAME_ATTENTION]
    pair = max(suppressing, key=lambda ab: jaccard(copied[ab[0]], suppressed[ab[1]]), default=None)
    coverage = float(copied.any(axis=0).mean())
    mode: Mode = "none"
    if pair is not None:
        mode = "copy-suppression"
    elif shared_copies:
        mode = "overlapping"
    elif (copied.any(axis=1).all() and sorting.all() and copy_overlap <= SPLIT_OVERLAP
          and coverage >= SPLIT_COVERAGE):
        mode = "vocabulary-splitting"
    return HeadModes(advantages, copied, suppressed, copy_overlap, coverage, suppression_overlap,
                     tuple(runs(row) for row in copied), order, correlation, pair, mode)


ECE_BINS = 10


@dataclass(frozen=True)
class Calibration:
    """Of a model's predictions on held-out lists: accuracy (argmax = target), confidence (mean max
    probability), entropy (mean, nats) and the expected calibration error over ECE_BINS equal-width confidence
    bins, sum_b (|b| / N) |accuracy_b - confidence_b|."""

    accuracy: float
    confidence: float
    entropy: float
    calibration_error: float


def calibration(logits: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> Calibration:
    """SORT-5's numbers from logits [N, V] and target ids [N] (one prediction per row)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(targets)
    entropy = -(probabilities * np.log(np.clip(probabilities, 1e-300, None))).sum(axis=1)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    error = sum(abs(correct[which == b].mean() - confidence[which == b].mean()) * np.mean(which == b)
                for b in range(bins) if np.any(which == b))
    return Calibration(float(correct.mean()), float(confidence.mean()), float(entropy.mean()), float(error))


def self_suppressed(rows: np.ndarray, columns: np.ndarray, bottom: int) -> np.ndarray:
    """[n] booleans for the OV circuit OV = rows @ columns over n sampled tokens (rows [n, r], columns [r, n]):
    whether token i's own logit OV[i, i] is among the `bottom` smallest of its row (the head suppresses the token
    it attends to; McDougall et al. 2023, docs/claims_catalogue.md CS-GPT2). Ties count against: a row of equal entries
    suppresses nothing."""
    circuit = np.asarray(rows, dtype=np.float64) @ np.asarray(columns, dtype=np.float64)
    own = np.diagonal(circuit)
    return (circuit <= own[:, None]).sum(axis=1) - 1 < bottom


def llc_change_after_overlap(modes: list[str], llcs: list[float]) -> float | None:
    """SORT-4 for one run, from its checkpoints' head modes and LLC estimates in training order: the final LLC minus
    the LLC at the end of the overlapping-ranges stage (the last checkpoint before the final one whose heads
    overlap). Negative: the LLC fell as the heads left the overlap. None when no checkpoint before the final one
    overlaps (the run shows no such stage)."""
    if len(modes) != len(llcs):
        raise ValueError(f"{len(modes)} modes for {len(llcs)} LLC estimates")
    end = overlap_end(modes)
    return None if end is None else float(llcs[-1] - llcs[end])


def overlap_end(modes: list[str]) -> int | None:
    """The index of the overlapping-ranges stage's end: the last checkpoint before the final one whose heads
    overlap; None when there is none."""
    return max((index for index, mode in enumerate(modes[:-1]) if mode == "overlapping"), default=None)


def settled_index(modes: list[str], good: list[bool]) -> int | None:
    """The first index from which `modes` never changes and `good` (e.g. held-out accuracy >= 0.95) always holds;
    None when the last entry is not good (or there is none)."""
    if len(modes) != len(good):
        raise ValueError(f"{len(modes)} modes for {len(good)} accuracy flags")
    if not good or not good[-1]:
        return None
    index = len(modes) - 1
    while index > 0 and modes[index - 1] == modes[-1] and good[index - 1]:
        index -= 1
    return index
