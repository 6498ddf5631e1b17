"""Pure measurements of the list-sorting heads (Urdshals & Urdshals 2025, CLAIMS_CATALOGUE.md section 4): arrays
in, dataclasses out.

A head's OV circuit over the numbers, OV_h = W_E[n] W_V^h W_O^h W_U[:, n] (numbers x numbers; row: the number
attended to, column: the logit it writes), says which numbers it copies (its row's own entry stands out above
the row) and which it suppresses (stands out below). The catalogue's modes, from the heads' copied and
suppressed ranges:
- vocabulary-splitting: every head copies a range, the ranges barely overlap (Jaccard <= 0.1 for every pair)
  and together cover >= 90% of the numbers;
- copy-suppression: one head copies a range and another suppresses a range overlapping it (Jaccard >= 0.5);
- overlapping ranges: two heads copy ranges with Jaccard > 0.5 (the non-simple mode);
- none: anything else (e.g. an untrained model).
The biases are left out (they add the same logit vector to every row) and so are positions: the numbers'
identity is in the token embeddings. `calibration` gives accuracy, confidence, entropy and expected calibration
error of predictions, for head ablations (SORT-5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Mode = Literal["vocabulary-splitting", "copy-suppression", "overlapping", "none"]
STANDS_OUT = 2.0
"""A diagonal entry at least this many row standard deviations above (below) its row's mean is copied
(suppressed)."""
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


def diagonal_scores(circuits: np.ndarray) -> np.ndarray:
    """[H, n]: each row's own entry in standard deviations from the row's mean, (OV[i, i] - mean_j) / std_j."""
    circuits = np.asarray(circuits, dtype=np.float64)
    diagonal = np.diagonal(circuits, axis1=1, axis2=2)
    spread = circuits.std(axis=2)
    return np.divide(diagonal - circuits.mean(axis=2), spread, out=np.zeros_like(diagonal), where=spread > 0)


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """|A and B| / |A or B| of two boolean masks; 0 when both are empty."""
    union = np.logical_or(first, second).sum()
    return float(np.logical_and(first, second).sum() / union) if union else 0.0


@dataclass(frozen=True)
class HeadModes:
    """The heads' copied and suppressed numbers (boolean [H, n]), the largest Jaccard overlap between two copied
    ranges, the share of numbers some head copies, the best copy/suppress overlap, and the mode."""

    copied: np.ndarray
    suppressed: np.ndarray
    copy_overlap: float
    coverage: float
    suppression_overlap: float
    mode: Mode


def classify_heads(circuits: np.ndarray, stands_out: float = STANDS_OUT) -> HeadModes:
    """The mode of a model's heads from their OV circuits [H, n, n] (module docstring)."""
    scores = diagonal_scores(circuits)
    copied, suppressed = scores >= stands_out, scores <= -stands_out
    heads = range(len(circuits))
    pairs = [(a, b) for a in heads for b in heads if a < b]
    copy_overlap = max((jaccard(copied[a], copied[b]) for a, b in pairs), default=0.0)
    suppression_overlap = max((jaccard(copied[a], suppressed[b]) for a in heads for b in heads if a != b), default=0.0)
    coverage = float(copied.any(axis=0).mean())
    mode: Mode = "none"
    if suppression_overlap >= SHARED_RANGE:
        mode = "copy-suppression"
    elif copy_overlap > SHARED_RANGE:
        mode = "overlapping"
    elif copied.any(axis=1).all() and copy_overlap <= SPLIT_OVERLAP and coverage >= SPLIT_COVERAGE:
        mode = "vocabulary-splitting"
    return HeadModes(copied, suppressed, copy_overlap, coverage, suppression_overlap, mode)


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
