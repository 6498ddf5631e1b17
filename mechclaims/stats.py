"""Statistics shared by measurements and verdicts: confidence intervals of fractions, AUROC."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

Z_95 = 1.959963984540054


def wilson_interval(fraction: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion p = fraction over n trials:
    (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), which always holds p (rounding aside,
    so it is clamped to hold it)."""
    if n <= 0:
        raise ValueError("a proportion needs at least one trial")
    centre = fraction + z * z / (2 * n)
    spread = z * np.sqrt(fraction * (1 - fraction) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    low, high = (centre - spread) / scale, (centre + spread) / scale
    return float(min(fraction, max(0.0, low))), float(max(fraction, min(1.0, high)))


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half: the Mann-Whitney U over n_pos n_neg, from
    mid-ranks of the pooled values."""
    if len(positive) == 0 or len(negative) == 0:
        raise ValueError("AUROC needs at least one positive and one negative")
    ranks = rankdata(np.concatenate([positive, negative]))
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))
