"""Near-orthogonality of weight vectors (Knittel et al. 2024, VSA-1/2/3 in docs/claims_catalogue.md).

For unit vectors x_i, the cosine Gram matrix C = X X^T is computed in row blocks of its upper
triangle, so a vocabulary of 50k tokens never materialises a 50k x 50k matrix. The null is
i.i.d. Gaussian vectors in the same dimension d, whose cosines have E|cos| =
Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)) ~ sqrt(2 / (pi d)) and sd ~ 1/sqrt(d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch
from tqdm import tqdm

from mechclaims.measurement import Measurement, Source
from mechclaims.metrics import scans

HISTOGRAM_BINS = 4096
TOP_PAIRS = 10
NORMAL_Z_995 = 2.5758293035489


@dataclass(frozen=True)
class CosineStats:
    """Off-diagonal |cosine| statistics of a set of vectors.

    `p99_abs` is the upper edge of the histogram bin holding the 99th percentile (resolution
    1/HISTOGRAM_BINS, never below the exact value); `row_max_abs[i]` is max_{j != i} |cos_ij|;
    `top_pairs` are the most similar pairs (i, j, cos_ij), largest |cos| first.
    """

    n_vectors: int
    dim: int
    mean_abs: float
    p99_abs: float
    max_abs: float
    mean_signed: float
    row_max_abs: np.ndarray
    top_pairs: tuple[tuple[int, int, float], ...]

    def diagonal_dominance(self, bound: float) -> float:
        """Fraction of rows whose largest off-diagonal |cosine| is below `bound`."""
        return float(np.mean(self.row_max_abs < bound))


def gaussian_abs_cosine_mean(dim: int) -> float:
    """E|cos| of two independent isotropic Gaussian vectors in `dim` dimensions (exact)."""
    return math.exp(math.lgamma(dim / 2) - math.lgamma((dim + 1) / 2)) / math.sqrt(math.pi)


def gaussian_abs_cosine_p99(dim: int) -> float:
    """99th percentile of |cos| for isotropic Gaussian vectors, normal approximation z_0.995 / sqrt(d)."""
    return NORMAL_Z_995 / math.sqrt(dim)


def unit_rows(vectors: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, float32 (zero rows stay zero: cosine 0 with everything)."""
    x = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
    return torch.nn.functional.normalize(x, dim=1)


def offdiag_cosine_stats(vectors: np.ndarray, block: int = 1024) -> CosineStats:
    """|cos_ij| over all pairs i < j, in row blocks of the upper triangle (float32, O(block * n) memory).

    Each block's products are one float32 matmul against the columns from its first row on (symmetry
    halves the products); one fused pass (`scans.gram_block_stats`) then reads the block once for the
    sum, the row and column maxima and the histogram. The most similar pairs come from the rows whose
    largest |cos| reaches the running TOP_PAIRS-th value: only those rows can hold a top pair.
    """
    x = unit_rows(vectors)
    n, dim = x.shape
    if n < 2:
        raise ValueError("near-orthogonality needs at least two vectors")
    histogram = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    row_max = np.zeros(n, dtype=np.float32)
    total_abs = 0.0
    best: list[tuple[float, int, int]] = []
    starts = range(0, n, block)
    for start in tqdm(starts, desc=f"cosines of {n} vectors", unit="block", leave=False, disable=len(starts) < 8):
        stop = min(start + block, n)
        gram = (x[start:stop] @ x[start:].T).numpy()
        sums, largest, _, columns, counts = scans.gram_block_stats(gram, 0, HISTOGRAM_BINS, numba.get_num_threads())
        total_abs += float(sums.sum())
        histogram += counts
        np.maximum(row_max[start:stop], largest, out=row_max[start:stop])
        np.maximum(row_max[start:], columns, out=row_max[start:])
        floor = best[-1][0] if len(best) == TOP_PAIRS else -1.0
        for r in np.flatnonzero(largest >= max(floor, np.sort(largest)[-min(TOP_PAIRS, len(largest))])):
            values = np.minimum(np.abs(gram[r, r + 1 :]), 1.0)
            for c in np.argsort(-values, kind="stable")[:TOP_PAIRS]:
                best.append((float(values[c]), start + int(r), start + int(r) + 1 + int(c)))
        best = sorted(best, reverse=True)[:TOP_PAIRS]
    pairs = n * (n - 1) / 2
    cumulative = np.cumsum(histogram)
    p99_bin = int(np.searchsorted(cumulative, 0.99 * pairs))
    signs = {(i, j): float(x[i] @ x[j]) for _, i, j in best}
    return CosineStats(
        n_vectors=n,
        dim=dim,
        mean_abs=total_abs / pairs,
        p99_abs=min(p99_bin + 1, HISTOGRAM_BINS) / HISTOGRAM_BINS,
        max_abs=float(row_max.max()),
        mean_signed=mean_offdiag_cosine(x.numpy()),
        row_max_abs=row_max.astype(np.float64),
        top_pairs=tuple((i, j, signs[(i, j)]) for _, i, j in best),
    )


def mean_offdiag_cosine(vectors: np.ndarray) -> float:
    """Signed mean of cos_ij over i != j in O(n d): (||sum x_i||^2 - sum ||x_i||^2) / (n (n - 1))."""
    x = np.asarray(vectors, dtype=np.float64)
    x = divide_rows(x, np.linalg.norm(x, axis=1, keepdims=True))
    n = x.shape[0]
    summed = x.sum(axis=0)
    return (float(summed @ summed) - float((x**2).sum())) / (n * (n - 1))


def embedding_variant(embeddings: np.ndarray, variant: str, norm: str) -> tuple[np.ndarray, str]:
    """Token embeddings as a claim reads them, with a note on what the variant did.

    raw: W_E rows; centred: rows minus the mean embedding; ln: what the model's first norm does
    before its gain: LayerNorm maps x to (x - mean(x)) / std(x), RMSNorm to x / rms(x), which
    leaves cosines unchanged.
    """
    if variant == "raw":
        return embeddings, "raw W_E rows"
    if variant == "centred":
        return embeddings - embeddings.mean(axis=0, keepdims=True), "W_E rows minus the mean embedding"
    if variant == "ln":
        if norm == "rmsnorm":
            rms = np.sqrt(np.mean(np.square(embeddings), axis=1, keepdims=True))
            return divide_rows(embeddings, rms), "RMSNorm-normalised rows (no gain): cosines equal the raw variant's"
        centred = embeddings - embeddings.mean(axis=1, keepdims=True)
        return divide_rows(centred, centred.std(axis=1, keepdims=True)), "LayerNorm-normalised rows (no gain)"
    raise ValueError(f"unknown embedding variant {variant!r}: use raw, centred or ln")


def divide_rows(rows: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """rows / scale, leaving rows whose scale is 0 at zero."""
    return np.divide(rows, scale, out=np.zeros_like(rows), where=scale > 0)


def _stats_with_null(stats: CosineStats) -> dict[str, float]:
    null_mean = gaussian_abs_cosine_mean(stats.dim)
    return {
        "n_vectors": float(stats.n_vectors),
        "dim": float(stats.dim),
        "mean_abs": stats.mean_abs,
        "p99_abs": stats.p99_abs,
        "max_abs": stats.max_abs,
        "mean_signed": stats.mean_signed,
        "null_mean_abs_analytic": null_mean,
        "null_p99_abs_analytic": gaussian_abs_cosine_p99(stats.dim),
        "mean_abs_ratio": stats.mean_abs / null_mean,
    }


def token_embedding_cosines(source: Source, variant: str = "raw", bound: float = 0.5) -> Measurement:
    """VSA-1: pairwise cosines of all token embeddings (tokens as columns of M, M^T M = cosine Gram).

    The distribution is each token's largest off-diagonal |cos|; `diagonal_dominance` is the
    fraction of tokens whose closest other token stays below `bound`. `dimension_corr_mean_abs`
    is the other reading of M^T M (W_E^T W_E, correlation between embedding dimensions).
    """
    embeddings = source.weights("raw").W_E
    vectors, note = embedding_variant(embeddings, variant, source.capabilities.norm)
    stats = offdiag_cosine_stats(vectors)
    dims = np.corrcoef(np.asarray(vectors, dtype=np.float64), rowvar=False)
    off = ~np.eye(dims.shape[0], dtype=bool)
    pairs = [i for p in stats.top_pairs for i in p[:2]]
    strings = dict(zip(pairs, source.token_strings(pairs)))
    return Measurement(
        statistics={
            **_stats_with_null(stats),
            "diagonal_dominance": stats.diagonal_dominance(bound),
            "dimension_corr_mean_abs": float(np.nanmean(np.abs(dims[off]))),
        },
        distribution=stats.row_max_abs,
        distribution_label="largest off-diagonal |cos| per token",
        details={
            "variant": note,
            "most_similar_pairs": [
                {"a": strings[i], "b": strings[j], "a_id": i, "b_id": j, "cos": c} for i, j, c in stats.top_pairs
            ],
        },
    )


def _attention_units(source: Source, scope: str) -> list[tuple[str, np.ndarray]]:
    """(label, vectors) per head or per layer: W_Q/W_K/W_V columns, W_O rows; KV heads not repeated."""
    w = source.weights("raw")
    units: list[tuple[str, np.ndarray]] = []
    for layer in range(w.W_Q.shape[0]):
        reads = {"Q": w.W_Q[layer], "K": w.W_K[layer], "V": w.W_V[layer]}
        if scope == "head":
            for name, matrix in reads.items():
                units += [(f"L{layer} {name} h{h}", matrix[h].T) for h in range(matrix.shape[0])]
            units += [(f"L{layer} O h{h}", w.W_O[layer, h]) for h in range(w.W_O.shape[1])]
        elif scope == "layer":
            for name, matrix in reads.items():
                units.append((f"L{layer} {name}", matrix.transpose(0, 2, 1).reshape(-1, matrix.shape[1])))
            units.append((f"L{layer} O", w.W_O[layer].reshape(-1, w.W_O.shape[-1])))
        else:
            raise ValueError(f"unknown attention scope {scope!r}: use head or layer")
    return units


def _mlp_out_units(source: Source) -> list[tuple[str, np.ndarray]]:
    w_out = source.weights("raw").W_out
    return [(f"L{layer} W_out", w_out[layer]) for layer in range(w_out.shape[0])]


def _unit_table(units: list[tuple[str, np.ndarray]], near: float) -> Measurement:
    rows = []
    for label, vectors in units:
        stats = _stats_with_null(offdiag_cosine_stats(vectors))
        rows.append({"unit": label, **{k: stats[k] for k in ("n_vectors", "mean_abs", "p99_abs", "max_abs", "mean_abs_ratio")}})
    ratios = np.array([r["mean_abs_ratio"] for r in rows])
    return Measurement(
        statistics={
            "units": float(len(rows)),
            "median_mean_abs_ratio": float(np.median(ratios)),
            "max_mean_abs_ratio": float(ratios.max()),
            "mean_abs": float(np.mean([r["mean_abs"] for r in rows])),
            "fraction_near_orthogonal": float(np.mean(ratios <= near)),
        },
        distribution=ratios,
        distribution_label="mean |off-diagonal cos| / Gaussian null, per unit",
        details={"units": rows},
    )


def attention_cosines(source: Source, scope: str = "head", near: float = 2.0) -> Measurement:
    """VSA-2: near-orthogonality of attention read (Q/K/V columns) and write (O rows) vectors.

    One unit per head (scope="head") or per layer with heads concatenated (scope="layer"); the
    distribution is each unit's mean |off-diagonal cos| divided by the Gaussian null's.
    """
    measurement = _unit_table(_attention_units(source, scope), near)
    measurement.details["grouped_kv"] = (
        f"K and V have {source.capabilities.n_kv_heads} shared heads for {source.capabilities.n_heads} query "
        "heads; each shared head is one unit"
        if source.capabilities.grouped_kv
        else "one K and V head per query head"
    )
    return measurement


def mlp_out_cosines(source: Source, near: float = 2.0) -> Measurement:
    """VSA-2 for MLPs: near-orthogonality of each layer's W_out rows (one unit per layer)."""
    return _unit_table(_mlp_out_units(source), near)


def embedding_mean_direction(source: Source) -> Measurement:
    """VSA-3: the shared mean direction of W_E, before and after centring and LayerNorm.

    Signed mean off-diagonal cosine (O(V d), see `mean_offdiag_cosine`) for raw, mean-centred and
    LN-normalised rows; `ln_removed` = raw - ln; `mean_norm_ratio` = ||mean_i e_i|| / mean_i ||e_i||.
    """
    embeddings = source.weights("raw").W_E.astype(np.float64)
    norm = source.capabilities.norm
    raw = mean_offdiag_cosine(embeddings)
    centred = mean_offdiag_cosine(embedding_variant(embeddings, "centred", norm)[0])
    ln = mean_offdiag_cosine(embedding_variant(embeddings, "ln", norm)[0])
    mean_norm_ratio = float(np.linalg.norm(embeddings.mean(0)) / np.linalg.norm(embeddings, axis=1).mean())
    return Measurement(
        statistics={
            "raw_mean_cos": raw,
            "centred_mean_cos": centred,
            "ln_mean_cos": ln,
            "ln_removed": raw - ln,
            "centred_removed": raw - centred,
            "mean_norm_ratio": mean_norm_ratio,
        },
        distribution=None,
    )
