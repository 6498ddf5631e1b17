"""Pure measurements for Singh 2023's view of a transformer as movement through embedding space
(docs/claims_catalogue.md section 3): arrays in, dataclasses out. No model, no forward pass.

- `category_separation` (SINGH-1): do within-category cosines exceed between-category ones (AUROC), and how
  does that compare with the same cosines under permuted category labels?
- `cosine_probability_agreement` (SINGH-2): does the cosine between a context vector and each token's
  unembedding vector rank tokens as the model's probability does?
- `frequency_matched_absent` and `context_token_auroc` (SINGH-3): is the residual closer to the tokens in its
  context than to absent tokens of the same frequency?
- `position_mixing` (SINGH-4): how much of a component's Jacobian crosses positions?
- `uniform_causal_patterns` (SINGH-5): the attention pattern of uniform causal averaging.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from mechclaims.errors import MechclaimsError
from mechclaims.stats import auroc


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row divided by its norm (float64); a zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


@dataclass(frozen=True)
class CategorySeparation:
    """auroc: P(a within-category pair's cosine > a between-category pair's), ties half; mean_within and
    mean_between: the mean cosines of the two kinds of pair; permuted: the AUROC under each random
    permutation of the labels (same category sizes); category_cosines [C, C]: mean cosine between the
    words of two categories (diagonal: distinct pairs within one)."""

    auroc: float
    mean_within: float
    mean_between: float
    permuted: np.ndarray
    category_cosines: np.ndarray

    @property
    def permutation_p(self) -> float:
        """One-sided permutation p-value of `auroc`: (1 + #permuted >= auroc) / (1 + #permutations)."""
        return float((1 + np.sum(self.permuted >= self.auroc)) / (1 + len(self.permuted)))


def category_separation(vectors: np.ndarray, labels: np.ndarray, permutations: int = 1000,
                        seed: int = 0) -> CategorySeparation:
    """SINGH-1 on `vectors` [n, d] with category `labels` [n] (0..C-1, each category at least two words).

    Over the n(n-1)/2 distinct pairs, AUROC = (R_w - n_w (n_w + 1) / 2) / (n_w n_b), with R_w the sum of the
    within pairs' ranks among all pair cosines (Mann-Whitney). A label permutation keeps n_w, so each permuted
    AUROC needs only the new R_w = sum over categories of the ranks inside it: L^T R L with L the permuted
    one-hot labels and R the symmetric rank matrix."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    if len(labels) != len(vectors) or counts.min() < 2:
        raise MechclaimsError("category_separation needs one label per vector and at least two vectors per category")
    cosines = unit_rows(vectors) @ unit_rows(vectors).T
    upper = np.triu_indices(len(labels), k=1)
    pairs = cosines[upper]
    within = labels[upper[0]] == labels[upper[1]]
    ranks = np.zeros_like(cosines)
    ranks[upper] = rankdata(pairs)
    ranks += ranks.T
    n_within, n_between = int(within.sum()), int((~within).sum())
    one_hot = np.eye(len(counts))[labels]
    rng = np.random.default_rng(seed)
    permuted = np.empty(permutations)
    for k in range(permutations):
        shuffled = one_hot[rng.permutation(len(labels))]
        rank_sum = np.einsum("ic,ij,jc->", shuffled, ranks, shuffled) / 2
        permuted[k] = (rank_sum - n_within * (n_within + 1) / 2) / (n_within * n_between)
    sums = one_hot.T @ cosines @ one_hot
    sums[np.diag_indices(len(counts))] -= one_hot.T @ np.diag(cosines)
    by_category = sums / (np.outer(counts, counts) - np.diag(counts))
    return CategorySeparation(auroc=auroc(pairs[within], pairs[~within]), mean_within=float(pairs[within].mean()),
                              mean_between=float(pairs[~within].mean()), permuted=permuted,
                              category_cosines=by_category)


@dataclass(frozen=True)
class ProbabilityAgreement:
    """Per context: Spearman's rho between cosine and log-probability over the top_k most probable tokens,
    and whether the token of largest cosine is the most probable one."""

    spearman: np.ndarray
    argmax_agrees: np.ndarray


def cosine_probability_agreement(contexts: np.ndarray, unembedding: np.ndarray, logits: np.ndarray,
                                 top_k: int = 1000) -> ProbabilityAgreement:
    """SINGH-2: contexts [n, d] (the vectors the unembedding reads), unembedding [d, V], the model's logits
    [n, V]. cos(h, W_U[:, t]) for every token; rho over the top_k tokens by logit (log-probability is the logit
    less a constant per context, so it ranks them alike); argmax over the whole vocabulary."""
    cosines = unit_rows(contexts) @ unit_rows(np.asarray(unembedding).T).T
    logits = np.asarray(logits, dtype=np.float64)
    k = min(top_k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    x = rankdata(np.take_along_axis(cosines, top, axis=1), axis=1)
    y = rankdata(np.take_along_axis(logits, top, axis=1), axis=1)
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    spearman = np.divide((x * y).sum(axis=1), denominator, out=np.zeros(len(x)), where=denominator > 0)
    return ProbabilityAgreement(spearman=spearman, argmax_agrees=cosines.argmax(axis=1) == logits.argmax(axis=1))


def frequency_matched_absent(present: list[np.ndarray], contexts: list[np.ndarray],
                             seed: int = 0) -> list[np.ndarray]:
    """SINGH-3's negatives: for each text i and each token of present[i], a token absent from contexts[i] (the
    text's whole token set) whose document frequency over all texts is closest to that token's (ties drawn at
    random, seeded). Candidates are the tokens of the other texts."""
    vocabulary, frequency = np.unique(np.concatenate([np.unique(c) for c in contexts]), return_counts=True)
    rng = np.random.default_rng(seed)
    chosen = []
    for tokens, context in zip(present, contexts):
        free = ~np.isin(vocabulary, context)
        if not free.any() or len(tokens) == 0:
            chosen.append(np.zeros(0, dtype=np.int64))
            continue
        candidates, candidate_frequency = vocabulary[free], frequency[free]
        wanted = frequency[np.searchsorted(vocabulary, tokens)]
        gaps = np.abs(candidate_frequency[None, :] - wanted[:, None])
        nearest = gaps == gaps.min(axis=1, keepdims=True)
        tie_break = rng.random(nearest.shape)
        chosen.append(candidates[np.argmax(np.where(nearest, tie_break, -1.0), axis=1)])
    return chosen


def context_token_auroc(residuals: np.ndarray, embeddings: np.ndarray, present: list[np.ndarray],
                        absent: list[np.ndarray]) -> float:
    """SINGH-3 at one layer: residuals [n, d] (one per text), embeddings [V, d]; the AUROC of cos(residual_i,
    E[t]) for t in present[i] against t in absent[i], pooled over texts."""
    unit = unit_rows(residuals)
    positives = np.concatenate([unit_rows(embeddings[p]) @ unit[i] for i, p in enumerate(present)])
    negatives = np.concatenate([unit_rows(embeddings[a]) @ unit[i] for i, a in enumerate(absent)])
    return auroc(positives, negatives)


@dataclass(frozen=True)
class PositionMixing:
    """Per layer: the Jacobian norm within positions (same), across positions (cross), and the share of the
    whole that crosses positions, cross / (same + cross) (0 where the Jacobian is zero)."""

    same: np.ndarray
    cross: np.ndarray

    @property
    def share(self) -> np.ndarray:
        total = self.same + self.cross
        return np.divide(self.cross, total, out=np.zeros_like(total), where=total > 0)


def position_mixing(norms: np.ndarray) -> PositionMixing:
    """SINGH-4 from norms [L, T_out, T_in] of d out_i / d in_j: same = sqrt(sum_i norms_ii^2), cross =
    sqrt(sum_{i != j} norms_ij^2), per layer."""
    norms = np.asarray(norms, dtype=np.float64)
    diagonal = np.eye(norms.shape[1], norms.shape[2], dtype=bool)
    squares = norms**2
    return PositionMixing(same=np.sqrt(squares[:, diagonal].sum(axis=1)),
                          cross=np.sqrt(squares[:, ~diagonal].sum(axis=1)))


def uniform_causal_patterns(mask: np.ndarray, heads: int) -> np.ndarray:
    """SINGH-5: [n, heads, T, T] attention patterns in which each real query attends equally to every real key
    at or before it (right padding: those are keys 0..query); zero rows for padded queries."""
    mask = np.asarray(mask, dtype=bool)
    length = mask.shape[1]
    allowed = np.tril(np.ones((length, length), dtype=bool))[None] & mask[:, None, :] & mask[:, :, None]
    counts = allowed.sum(axis=2, keepdims=True)
    patterns = np.divide(allowed, counts, out=np.zeros(allowed.shape), where=counts > 0).astype(np.float32)
    return np.repeat(patterns[:, None], heads, axis=1)
