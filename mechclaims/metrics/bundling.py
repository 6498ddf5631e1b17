"""Greedy bundles of token vectors that explain a target vector (Knittel et al. 2024, VSA-4 to VSA-6).

For a target w and candidates e_1..e_V, the bundle b = e_t1 + e_t2 + ... grows one token at a
time, each step adding the token that maximises cos(b + e_t, w), and stops at `max_tokens` or
when no token raises the cosine. Exact and batched over targets: with

    num_t = w.(b + e_t)   and   sq_t = ||b + e_t||^2,   cos(b + e_t, w) = num_t / (||w|| sqrt(sq_t)),

E.w is computed once per target, and adding token s updates every token's terms by
num_t += w.e_s and sq_t += 2 e_t.e_s + (2 b.e_s + ||e_s||^2): one (V x d) @ (d x n) product per
step, into preallocated (vocabulary x targets) buffers. The scalar increments are exact float64;
float32 scores rank the vocabulary and the near-best tokens are re-scored in float64.

FAISS is not used here. Its exact top-1 search (IndexFlatIP) finds the first token about twice as
fast as the first step below run alone (benchmarks/test_bundling_bench.py), but no later step's
cosine is an inner product with a fixed query, and every later step needs the first step's E.w
for every token, so a search would add to that product, not replace it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mechclaims.errors import MechclaimsError
from mechclaims.metrics.orthogonality import divide_rows, embedding_variant
from mechclaims.measurement import Curve, Measurement, ParamAxis, Source

TIE = 1e-12
FLOAT32_SLACK = 1e-5
CANDIDATE_VARIANTS = ("raw", "centred", "ln")
TARGET_SCALES = ("raw", "norm_gain")


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

    def best_by_size(self) -> np.ndarray:
        """(K x n): row k-1 holds each target's best cosine with a bundle of at most k tokens, which is
        the greedy bundle with `max_tokens = k` (greedy is a prefix of itself)."""
        return np.fmax.accumulate(np.nan_to_num(self.cosines, nan=-np.inf), axis=1).T

    def fraction_at_least_by_size(self, cutoff: float) -> np.ndarray:
        """Fraction of targets whose bundle of at most k tokens reaches `cutoff`, for k = 1..K."""
        return (self.best_by_size() >= cutoff).mean(axis=1)


class _Workspace:
    """The (vocabulary x targets) float32 buffers of one chunk, allocated once and reused, so the
    per-step passes run in place instead of faulting in fresh pages."""

    def __init__(self, vocab: int, width: int) -> None:
        self.vocab = vocab
        self.num = torch.empty(vocab * width)
        self.sq = torch.empty(vocab * width)
        self.score = torch.empty(vocab * width)
        self.near = torch.empty(vocab * width, dtype=torch.bool)

    def views(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        size = self.vocab * n
        return tuple(buffer[:size].view(self.vocab, n) for buffer in (self.num, self.sq, self.score, self.near))


def greedy_bundles(
    candidates: np.ndarray,
    targets: np.ndarray,
    max_tokens: int = 10,
    allow_repeats: bool = False,
    chunk: int = 1024,
    progress: str | None = None,
) -> Bundles:
    """Exact greedy bundles of `candidates` rows (V x d) for each row of `targets` (n x d).

    Inputs are rounded to float32 once; "exact" means exact for those values. Cosines within TIE of
    each other tie, a tie goes to the lowest token id, a step must raise the cosine by more than
    TIE, and zero candidates (no cosine) are never chosen. Float32 scores rank the vocabulary; the
    tokens within FLOAT32_SLACK of the best are re-scored in float64, and a target whose float32
    best is not confirmed in float64 is re-scored over the whole vocabulary. Targets go in chunks
    of `chunk` (peak memory about 13 V x chunk bytes); `progress` names a tqdm bar on stderr.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    e = torch.as_tensor(np.ascontiguousarray(candidates, dtype=np.float32))
    w_all = torch.as_tensor(np.ascontiguousarray(targets, dtype=np.float32))
    e_sq = torch.linalg.vector_norm(e, dim=1, dtype=torch.float64).square()
    n = w_all.shape[0]
    width = max(1, min(chunk, n))
    workspace = _Workspace(e.shape[0], width)
    tokens = np.full((n, max_tokens), -1, dtype=np.int64)
    cosines = np.full((n, max_tokens), np.nan)
    with tqdm(total=math.ceil(n / width) * max_tokens, desc=progress, unit="step", disable=progress is None) as bar:
        for start in range(0, n, width):
            stop = min(start + width, n)
            tokens[start:stop], cosines[start:stop] = _bundle_chunk(
                e, e_sq, w_all[start:stop], max_tokens, allow_repeats, workspace, bar
            )
    final = np.max(np.where(np.isnan(cosines), -np.inf, cosines), axis=1)
    return Bundles(tokens=tokens, cosines=cosines, final=final)


def _cosines_of(trial: torch.Tensor, w64: torch.Tensor) -> torch.Tensor:
    """cos(trial_r, w_r) per row in float64, 0 for a zero trial vector."""
    return (trial * w64).sum(-1) / (trial.norm(dim=-1).clamp(min=1e-300) * w64.norm(dim=-1))


def _exact_choice(
    near: torch.Tensor, b64: torch.Tensor, e: torch.Tensor, w64: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target column, the exact float64 winner among the tokens marked in `near` (V x n).

    Returns (token, cosine) per target (cosine -inf where no token is marked); cosines within TIE
    of the maximum tie, and a tie goes to the lowest token id.
    """
    t, cols = near.nonzero(as_tuple=True)
    exact = _cosines_of(b64[cols] + e[t].double(), w64[cols])
    n = near.shape[1]
    top = torch.full((n,), -torch.inf, dtype=torch.float64).scatter_reduce(0, cols, exact, "amax")
    winners = exact >= top[cols] - TIE
    token = torch.full((n,), torch.iinfo(torch.int64).max).scatter_reduce(0, cols[winners], t[winners], "amin")
    return token, top


def _full_choice(
    b: torch.Tensor, e: torch.Tensor, w: torch.Tensor, excluded: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact float64 winner over the whole vocabulary for one target (the fallback)."""
    exact = _cosines_of(b[None, :] + e.double(), w[None, :]).masked_fill_(excluded, -torch.inf)
    top = exact.max()
    return (exact >= top - TIE).nonzero()[0, 0], top


def _bundle_chunk(
    e: torch.Tensor,
    e_sq: torch.Tensor,
    w: torch.Tensor,
    max_tokens: int,
    allow_repeats: bool,
    workspace: _Workspace,
    bar: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, exact float64 cosines) for one chunk of targets."""
    n = w.shape[0]
    num, sq, score, near = workspace.views(n)
    w64 = w.double()
    w_norm = w.norm(dim=1)
    zero = e_sq == 0
    torch.mm(e, w.T, out=num)
    num[zero] = -torch.inf
    sq.copy_(e_sq.float()[:, None].expand_as(sq))
    b64 = torch.zeros_like(w64)
    current = torch.full((n,), -torch.inf, dtype=torch.float64)
    active = torch.ones(n, dtype=torch.bool)
    tokens = torch.full((n, max_tokens), -1, dtype=torch.int64)
    cosines = torch.full((n, max_tokens), torch.nan, dtype=torch.float64)
    for step in range(max_tokens):
        bar.update(1)
        torch.rsqrt(sq, out=score).mul_(num)
        best = score.amax(dim=0)
        searching = active & best.isfinite()
        if not bool(searching.any()):
            break
        slack = FLOAT32_SLACK * (best.abs() + w_norm)
        torch.ge(score, torch.where(searching, best - slack, torch.inf)[None, :], out=near)
        chosen, cosine = _exact_choice(near, b64, e, w64)
        for i in (searching & (cosine * w_norm < best - 2 * slack)).nonzero(as_tuple=True)[0]:
            used = zero.clone()
            used[tokens[i, :step]] = not allow_repeats
            chosen[i], cosine[i] = _full_choice(b64[i], e, w64[i], used)
        improves = searching & (cosine > current + TIE)
        idx = improves.nonzero(as_tuple=True)[0]
        s = chosen[idx]
        active = improves
        tokens[idx, step] = s
        cosines[idx, step] = cosine[idx]
        current[idx] = cosine[idx]
        if step == max_tokens - 1 or len(idx) == 0:
            break
        _add_token(e, e_sq, w64, b64, idx, s, num, sq)
        if not allow_repeats:
            num[s, idx] = -torch.inf
    bar.update(max_tokens - 1 - step)
    return tokens.numpy(), cosines.numpy()


def _add_token(
    e: torch.Tensor, e_sq: torch.Tensor, w64: torch.Tensor, b64: torch.Tensor,
    idx: torch.Tensor, s: torch.Tensor, num: torch.Tensor, sq: torch.Tensor,
) -> None:
    """Add token s[j] to the bundle of target idx[j]: num += w.e_s, sq += 2 E.e_s + 2 b.e_s + ||e_s||^2."""
    n = num.shape[1]
    es64 = e[s].double()
    num_step = torch.zeros(n, dtype=torch.float64)
    num_step[idx] = (w64[idx] * es64).sum(1)
    sq_step = torch.zeros(n, dtype=torch.float64)
    sq_step[idx] = 2 * (b64[idx] * es64).sum(1) + e_sq[s]
    chosen = torch.zeros(e.shape[1], n)
    chosen[:, idx] = e[s].T
    num.add_(num_step.float()[None, :])
    sq.addmm_(e, chosen, alpha=2).add_(sq_step.float()[None, :]).clamp_(min=1e-30)
    b64[idx] += es64


def token_candidates(
    vectors: np.ndarray, variant: str = "raw", normalise: bool = True, norm: str = "layernorm",
    offset: np.ndarray | None = None,
) -> np.ndarray:
    """Candidate token vectors: rows of `vectors` plus `offset` (e.g. the mean positional embedding),
    read as `variant` (raw, centred: minus the mean row, ln: through the model's `norm` without its
    gain; see orthogonality.embedding_variant), then optionally scaled to unit length."""
    if variant not in CANDIDATE_VARIANTS:
        raise MechclaimsError(f"unknown bundle candidates {variant!r}: use {', '.join(CANDIDATE_VARIANTS)}")
    e = np.asarray(vectors, dtype=np.float32)
    if offset is not None:
        e = e + offset
    e, _ = embedding_variant(e, variant, norm)
    if normalise:
        e = divide_rows(e, np.linalg.norm(e, axis=1, keepdims=True))
    return np.asarray(e, dtype=np.float32)


def bundle_problem(
    source: Source, target: str, candidates: str, normalise: bool, mean_position: bool, target_scale: str
) -> tuple[np.ndarray, np.ndarray]:
    """(candidates [V, d], targets [L, n, d]) for a bundle target, from the raw weights.

    "in": W_in columns (the up projection of a gated MLP) against W_E rows; "gate": W_gate columns
    against W_E rows; "out" (VSA-6, the read-out side): W_out rows against W_U columns.
    `mean_position` adds the mean positional embedding to every W_E row. `target_scale`
    "norm_gain" reads each side through the norm between it and the other: W_in / W_gate columns
    times the gain of the norm the MLP reads, W_U columns times the final norm's gain.
    """
    weights = source.weights("raw")
    norm = source.capabilities.norm
    if target_scale not in TARGET_SCALES:
        raise MechclaimsError(f"unknown bundle target_scale {target_scale!r}: use {', '.join(TARGET_SCALES)}")
    scaled = target_scale == "norm_gain"
    if target == "out":
        if mean_position:
            raise MechclaimsError("mean_position applies to token embeddings, not to the unembedding: drop it for target out")
        unembed = weights.W_U.T
        if scaled and weights.unembed_gain is not None:
            unembed = unembed * weights.unembed_gain
        return token_candidates(unembed, candidates, normalise, norm), weights.W_out
    matrix = {"in": weights.W_in, "gate": weights.W_gate}.get(target)
    if matrix is None:
        raise MechclaimsError(f"bundle target {target!r} does not exist for this model: use in, out (or gate when gated)")
    offset = None
    if mean_position:
        if weights.W_pos is None:
            raise MechclaimsError("mean_position needs learned absolute positions, which this model lacks: drop it")
        offset = weights.W_pos.mean(axis=0)
    targets = matrix.transpose(0, 2, 1)
    if scaled:
        targets = targets * weights.mlp_in_gain[:, None, :]
    return token_candidates(weights.W_E, candidates, normalise, norm, offset), targets


def layer_bundle_cosines(
    source: Source,
    layer: int = 0,
    max_tokens: int = 10,
    target: str = "in",
    candidates: str = "raw",
    normalise: bool = True,
    mean_position: bool = False,
    target_scale: str = "raw",
    allow_repeats: bool = False,
    cutoff: float = 0.5,
) -> Measurement:
    """VSA-4 (and VSA-6 with target="out"): greedy token bundles for every neuron of one MLP layer.

    Candidates and targets as in `bundle_problem`; `layer` may be negative (-1: the last layer).
    The distribution is each neuron's final cosine; `fraction_at_{cutoff}_within_{k}` is the
    fraction of neurons whose bundle of at most k tokens reaches `cutoff`, for k = 1..max_tokens,
    also drawn as a curve against k (read real beside null in the report). `by_param["max_tokens"]`
    holds every neuron's cosine at each k, so cut-off x bundle-size sweeps need no re-measurement.
    """
    vectors, targets = bundle_problem(source, target, candidates, normalise, mean_position, target_scale)
    layer = range(len(targets))[layer]
    bundles = greedy_bundles(vectors, targets[layer], max_tokens=max_tokens, allow_repeats=allow_repeats,
                             progress=f"layer {layer} bundles")
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
        by_param={"max_tokens": ParamAxis(values=list(range(1, max_tokens + 1)), distributions=bundles.best_by_size())},
        curves={
            "by_bundle_size": Curve(
                x=list(range(1, max_tokens + 1)),
                y=[float(f) for f in by_size],
                x_label="bundle size (at most k tokens)",
                y_label=f"fraction of neurons at cosine >= {cutoff:g}",
            )
        },
        details={
            "bundles": [
                {
                    "neuron": int(i),
                    "cosine": float(bundles.final[i]),
                    "tokens": " | ".join(strings[int(t)] for t in bundles.tokens[i] if t >= 0),
                    "token_ids": " ".join(str(int(t)) for t in bundles.tokens[i] if t >= 0),
                    "cosine_by_step": " ".join(f"{c:.4f}" for c in bundles.cosines[i] if not np.isnan(c)),
                }
                for i in order
            ],
        },
    )


def depth_bundle_fractions(
    source: Source,
    max_tokens: int = 10,
    target: str = "in",
    candidates: str = "raw",
    normalise: bool = True,
    mean_position: bool = False,
    target_scale: str = "raw",
    allow_repeats: bool = False,
    cutoff: float = 0.5,
) -> Measurement:
    """VSA-5: the layer-0 measurement repeated for every MLP layer, with the same token candidates.

    `fraction_layer_{l}` is the fraction of layer l's neurons whose bundle reaches `cutoff`;
    `decline` = fraction at layer 0 minus the median fraction over the later layers.
    """
    vectors, targets = bundle_problem(source, target, candidates, normalise, mean_position, target_scale)
    fractions = []
    for layer in range(len(targets)):
        bundles = greedy_bundles(vectors, targets[layer], max_tokens=max_tokens, allow_repeats=allow_repeats,
                                 progress=f"layer {layer} bundles")
        fractions.append(float(np.mean(bundles.final >= cutoff)))
    later = fractions[1:] or fractions
    return Measurement(
        statistics={
            "decline": fractions[0] - float(np.median(later)),
            **{f"fraction_layer_{layer}": f for layer, f in enumerate(fractions)},
        },
        curves={
            "by_layer": Curve(
                x=list(range(len(fractions))),
                y=fractions,
                x_label="MLP layer",
                y_label=f"fraction of neurons at cosine >= {cutoff:g}",
            )
        },
    )
