"""Greedy bundles of token vectors that explain a target vector (Knittel et al. 2024, VSA-4).

For a target w and candidates e_1..e_V, the bundle b = e_t1 + e_t2 + ... grows one token at a
time, each step adding the token that maximises cos(b + e_t, w), and stops at `max_tokens` or
when no token raises the cosine. Exact and batched over targets, using

    cos(b + e_t, w) = (b.w + e_t.w) / (||w|| sqrt(||b||^2 + 2 b.e_t + ||e_t||^2)),

so E.w is computed once per target and E.b is updated from the chosen token's Gram column
E.e_s, one (V x d) @ (d x n) product per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mechclaims.errors import MechclaimsError
from mechclaims.registry import Measurement, WeightSource


TIE = 1e-12
FLOAT32_SLACK = 1e-5


@dataclass(frozen=True)
class Bundles:
    """Greedy bundles for n targets.

    tokens[i, k]: the k-th token added for target i (-1 after the bundle stopped);
    cosines[i, k]: cos(bundle after k + 1 tokens, w_i) (NaN after it stopped);
    final[i]: the bundle's final cosine.
    """

    tokens: np.ndarray
    cosines: np.ndarray
    final: np.ndarray

    def fraction_at_least_by_size(self, cutoff: float) -> np.ndarray:
        """Fraction of targets whose bundle of at most k tokens reaches `cutoff`, for k = 1..K."""
        reached = np.fmax.accumulate(np.nan_to_num(self.cosines, nan=-np.inf), axis=1) >= cutoff
        return reached.mean(axis=0)


def greedy_bundles(
    candidates: np.ndarray,
    targets: np.ndarray,
    max_tokens: int = 10,
    allow_repeats: bool = False,
    chunk: int = 512,
) -> Bundles:
    """Exact greedy bundles of `candidates` rows (V x d) for each row of `targets` (n x d).

    Cosines within TIE of each other tie, and a tie goes to the lowest token id; a step must raise
    the cosine by more than TIE. Float32 scores rank the vocabulary, and the near-best tokens are
    re-scored in float64, so the bundles, and the cosines reported for them, are those of the exact
    definition. Targets are processed in chunks of `chunk` to bound memory at about 4 (V x chunk)
    float32 matrices.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    e = torch.as_tensor(np.ascontiguousarray(candidates, dtype=np.float32))
    w_all = torch.as_tensor(np.ascontiguousarray(targets, dtype=np.float32))
    e64 = e.double()
    e_sq = (e64**2).sum(1).float()
    n = w_all.shape[0]
    tokens = np.full((n, max_tokens), -1, dtype=np.int64)
    cosines = np.full((n, max_tokens), np.nan)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        tokens[start:stop], cosines[start:stop] = _bundle_chunk(e, e64, e_sq, w_all[start:stop], max_tokens, allow_repeats)
    final = np.max(np.where(np.isnan(cosines), -np.inf, cosines), axis=1)
    return Bundles(tokens=tokens, cosines=cosines, final=final)


def _exact_choice(
    score: torch.Tensor, cutoff: torch.Tensor, b64: torch.Tensor, e64: torch.Tensor, w64: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target row, the exact float64 winner among tokens whose float32 score reaches `cutoff`.

    Returns (token, cosine) per row (cosine -inf where no token reaches the cutoff); cosines
    within TIE of the maximum tie, and a tie goes to the lowest token id.
    """
    rows, t = (score >= cutoff[:, None]).nonzero(as_tuple=True)
    trial = b64[rows] + e64[t]
    exact = (trial * w64[rows]).sum(1) / (trial.norm(dim=1).clamp(min=1e-300) * w64[rows].norm(dim=1))
    n = score.shape[0]
    top = torch.full((n,), -torch.inf, dtype=torch.float64).scatter_reduce(0, rows, exact, "amax")
    winners = exact >= top[rows] - TIE
    token = torch.full((n,), torch.iinfo(torch.int64).max).scatter_reduce(0, rows[winners], t[winners], "amin")
    return token, top


def _bundle_chunk(
    e: torch.Tensor, e64: torch.Tensor, e_sq: torch.Tensor, w: torch.Tensor, max_tokens: int, allow_repeats: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, exact float64 cosines) for one chunk of targets; matrices are (targets x vocabulary)."""
    n = w.shape[0]
    w64 = w.double()
    w_norm = w.norm(dim=1)
    ew = w @ e.T
    eb = torch.zeros_like(ew)
    bw = torch.zeros(n, 1)
    bb = torch.zeros(n, 1)
    b64 = torch.zeros_like(w64)
    current = torch.full((n,), -torch.inf, dtype=torch.float64)
    active = torch.ones(n, dtype=torch.bool)
    used = torch.zeros_like(ew, dtype=torch.bool)
    tokens = torch.full((n, max_tokens), -1, dtype=torch.int64)
    cosines = torch.full((n, max_tokens), torch.nan, dtype=torch.float64)
    for step in range(max_tokens):
        score = torch.add(bb, e_sq, alpha=1.0).add_(eb, alpha=2.0).clamp_(min=1e-30).rsqrt_().mul_(ew.add(bw))
        if not allow_repeats:
            score.masked_fill_(used, -torch.inf)
        best = score.max(dim=1).values
        searching = active & best.isfinite()
        if not bool(searching.any()):
            break
        cutoff = torch.where(searching, best - FLOAT32_SLACK * (best.abs() + w_norm), torch.inf)
        chosen, cosine = _exact_choice(score, cutoff, b64, e64, w64)
        improves = searching & (cosine > current + TIE)
        idx = improves.nonzero(as_tuple=True)[0]
        chosen = chosen[idx]
        active[:] = False
        active[idx] = True
        tokens[idx, step] = chosen
        current[idx] = cosine[idx]
        cosines[idx, step] = cosine[idx]
        bw[idx, 0] += ew[idx, chosen]
        bb[idx, 0] += 2 * eb[idx, chosen] + e_sq[chosen]
        eb.index_add_(0, idx, e[chosen] @ e.T)
        b64[idx] += e64[chosen]
        used[idx, chosen] = True
    return tokens.numpy(), cosines.numpy()


def token_candidates(embeddings: np.ndarray, normalise: bool, centre: bool) -> np.ndarray:
    """Candidate token vectors: W_E rows, optionally minus the mean embedding, optionally unit length."""
    e = np.asarray(embeddings, dtype=np.float32)
    if centre:
        e = e - e.mean(axis=0, keepdims=True)
    if normalise:
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        e = np.divide(e, norms, out=np.zeros_like(e), where=norms > 0)
    return e


def bundle_problem(weights: Any, target: str, normalise: bool, centre: bool) -> tuple[np.ndarray, np.ndarray]:
    """(candidates [V, d], targets [L, n, d]) for a bundle target.

    "in": W_in columns (the up projection of a gated MLP) against W_E rows; "gate": W_gate columns
    against W_E rows; "out" (VSA-6, the read-out side): W_out rows against unembedding columns.
    """
    if target == "out":
        return token_candidates(weights.W_U.T, normalise, centre), weights.W_out
    matrix = {"in": weights.W_in, "gate": weights.W_gate}.get(target)
    if matrix is None:
        raise MechclaimsError(f"bundle target {target!r} does not exist for this model: use in, out (or gate when gated)")
    return token_candidates(weights.W_E, normalise, centre), matrix.transpose(0, 2, 1)


def layer_bundle_cosines(
    source: WeightSource,
    layer: int = 0,
    max_tokens: int = 10,
    target: str = "in",
    normalise: bool = True,
    centre: bool = False,
    allow_repeats: bool = False,
    cutoff: float = 0.5,
) -> Measurement:
    """VSA-4 (and VSA-6 with target="out"): greedy token bundles for every neuron of one MLP layer.

    Targets and candidates as in `bundle_problem`, raw (no LayerNorm gain); `layer` may be
    negative (-1: the last layer). The distribution is each neuron's final
    cosine; `fraction_at_{cutoff}_within_{k}` is the fraction of neurons whose bundle of at most k
    tokens reaches `cutoff`, for k = 1..max_tokens (read real beside null in the report).
    """
    candidates, targets = bundle_problem(source.weights("raw"), target, normalise, centre)
    layer = range(len(targets))[layer]
    bundles = greedy_bundles(candidates, targets[layer], max_tokens=max_tokens, allow_repeats=allow_repeats)
    by_size = bundles.fraction_at_least_by_size(cutoff)
    order = np.argsort(-bundles.final, kind="stable")
    ids = sorted({int(t) for t in bundles.tokens.ravel() if t >= 0})
    strings = dict(zip(ids, source.token_strings(ids)))
    return Measurement(
        statistics={
            "neurons": float(len(bundles.final)),
            "mean_final_cosine": float(bundles.final.mean()),
            "median_final_cosine": float(np.median(bundles.final)),
            "mean_bundle_size": float((bundles.tokens >= 0).sum(1).mean()),
            **{f"fraction_at_{cutoff:g}_within_{k + 1}": float(f) for k, f in enumerate(by_size)},
        },
        distribution=bundles.final,
        distribution_label=f"final cosine of each layer-{layer} neuron's greedy bundle",
        details={
            "bundles": [
                {
                    "neuron": int(i),
                    "cosine": float(bundles.final[i]),
                    "tokens": " | ".join(strings[int(t)] for t in bundles.tokens[i] if t >= 0),
                }
                for i in order
            ],
        },
    )


def depth_bundle_fractions(
    source: WeightSource,
    max_tokens: int = 10,
    target: str = "in",
    normalise: bool = True,
    centre: bool = False,
    allow_repeats: bool = False,
    cutoff: float = 0.5,
) -> Measurement:
    """VSA-5: the layer-0 measurement repeated for every MLP layer, with the same token candidates.

    `fraction_layer_{l}` is the fraction of layer l's neurons whose bundle reaches `cutoff`;
    `decline` = fraction at layer 0 minus the median fraction over the later layers.
    """
    candidates, targets = bundle_problem(source.weights("raw"), target, normalise, centre)
    fractions = []
    for layer in tqdm(range(len(targets)), desc="bundles per layer", unit="layer"):
        bundles = greedy_bundles(candidates, targets[layer], max_tokens=max_tokens, allow_repeats=allow_repeats)
        fractions.append(float(np.mean(bundles.final >= cutoff)))
    later = fractions[1:] or fractions
    return Measurement(
        statistics={
            "decline": fractions[0] - float(np.median(later)),
            **{f"fraction_layer_{layer}": f for layer, f in enumerate(fractions)},
        },
        details={"layers": [{"layer": layer, f"fraction_at_{cutoff:g}": f} for layer, f in enumerate(fractions)]},
    )
