"""Greedy bundles of token vectors that explain a target vector (Knittel et al. 2024, VSA-4 to VSA-6).

For a target w and candidates e_1..e_V, the bundle b = e_t1 + e_t2 + ... grows one token at a
time, each step adding the token that maximises cos(b + e_t, w), and stops at `max_tokens` or
when no token raises the cosine. Exact and batched over targets: with

    num_t = w.(b + e_t)   and   sq_t = ||b + e_t||^2,   cos(b + e_t, w) = num_t / (||w|| sqrt(sq_t)),

E.w is computed once per target (float32), and adding token s updates every token's terms by
num_t += w.e_s and sq_t += 2 e_t.e_s + (2 b.e_s + ||e_s||^2): one product of the vocabulary with
the chosen tokens per step, in float32 or, where the probe in `mechclaims/kernels.py` finds bfloat16
units faster, in bfloat16. The scalar increments are exact float64, and low precision only ranks.
The float32 search keeps vocabulary-major buffers and re-scores in float64 the tokens within
FLOAT32_SLACK of its best (`_Float32Search`). The bfloat16 search keeps target-major buffers, computes
one product row per chosen token (targets that chose the same token share it, in one step or across steps,
chunks, layers and calls over the same candidates, while the rows fit in ROW_CACHE_BYTES), and runs one
fused numba pass per step (`scans.bundle_scan`) with rigorous bounds on each term's error (below): it
shortlists every token whose upper bound on the cosine reaches the exact float64 cosine of the
best-looking token, and re-scores the shortlist in float64. Both give the exact greedy bundles
(tests/test_metrics_bundling.py).

Error bounds per target (u = 2^-24, gamma = d u / (1 - d u), the float32 accumulation bound
|fl(a.b) - a.b| <= gamma sum |a_i b_i| <= gamma ||a|| ||b||; r = e - bf16(e), rho = max ||r||,
beta = max ||bf16(e)||): E.w is off by at most 2 gamma max||e|| ||w||; each step's float32 product
adds at most 2 (2 gamma max||e|| ||e_s||) to the error of sq, a bfloat16 product at most
2 (rho ||e_s|| + beta ||r_s|| + 2 gamma beta ||bf16(e_s)||) plus its output rounding, at most
2^-7 |p|, charged element by element; storing sq in float32 adds 2u (size max||e||)^2 per step.

FAISS is not used in the exact search. Its exact top-1 search (IndexFlatIP) finds the first token
faster than the first step alone (benchmarks/test_bundling_bench.py), but no later step's cosine is
an inner product with a fixed query. The paper's own search, FAISS candidates of the residual (the
part of w the bundle does not yet explain), is `search="faiss"` (`faiss_bundles`), reported beside its
agreement with the exact search.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import torch
from tqdm import tqdm

from mechclaims.errors import MechclaimsError
from mechclaims.kernels import KERNELS, product_kernel
from mechclaims.memo import remembered
from mechclaims.metrics import scans
from mechclaims.metrics.orthogonality import divide_rows, embedding_variant
from mechclaims.measurement import Curve, Measurement, ParamAxis, Source

TIE = 1e-12
SHORTLIST = 64
"""Tokens re-scored in float64 per target and step; a target with more is re-scored over the vocabulary."""
ROW_CACHE_BYTES = 2 * 2**30
"""Memory for the bfloat16 search's kept product rows (`_ProductRows`): 21 845 rows of a 49 152-token vocabulary."""
FLOAT32_SLACK = 1e-5
"""The float32 search's margin: tokens within FLOAT32_SLACK (|best| + ||w||) of the float32 best are re-scored."""
UNIT_ROUNDOFF = 2.0**-24
BF16_OUTPUT_ROUNDING = 2.0**-7
"""Relative error of a product rounded to bfloat16: one unit in its last place, whether rounded or truncated."""
SAFETY = 1 + 1e-6
CANDIDATE_VARIANTS = ("raw", "centred", "ln")
TARGET_SCALES = ("raw", "norm_gain")
SEARCHES = ("exact", "faiss")
FAISS_CHUNK = 256
AGREEMENT_SAMPLE = 256
"""Targets (seeded sample) on which search="faiss" is compared with the exact search."""


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


@dataclass(frozen=True)
class _Candidates:
    """The candidate rows in float32 (e) and float64 (e64), and their squared norms (float64)."""

    e: torch.Tensor
    e64: torch.Tensor
    e_sq: torch.Tensor

    @classmethod
    def of(cls, e: torch.Tensor) -> _Candidates:
        e64 = e.double()
        return cls(e, e64, e64.square().sum(1))


@dataclass(frozen=True)
class _Bounds:
    """The bfloat16 copy of the candidates for the products, and the constants of the error bounds (see the
    module docstring): gamma_d, max ||e||, and per token s the most that adding s's product can move any
    token's sq before the output rounding, which `product_rel` charges element by element."""

    ranked: torch.Tensor
    gamma: float
    e_max: float
    step_error: torch.Tensor
    product_rel: float

    @classmethod
    def of(cls, pool: _Candidates) -> _Bounds:
        e_norm = pool.e_sq.sqrt()
        gamma = pool.e.shape[1] * UNIT_ROUNDOFF / (1 - pool.e.shape[1] * UNIT_ROUNDOFF)
        ranked = pool.e.bfloat16()
        low = ranked.double()
        residual = (pool.e64 - low).norm(dim=1)
        low_norm = low.norm(dim=1)
        rho, beta, e_max = (float(x.max()) if len(x) else 0.0 for x in (residual, low_norm, e_norm))
        accumulation = 2 * gamma * beta * low_norm * (1 + BF16_OUTPUT_ROUNDING)
        step_error = 2 * (rho * e_norm + beta * residual + accumulation) * SAFETY
        return cls(ranked, gamma, e_max, step_error,
                   BF16_OUTPUT_ROUNDING / (1 - BF16_OUTPUT_ROUNDING) * SAFETY)


def greedy_bundles(
    candidates: np.ndarray,
    targets: np.ndarray,
    max_tokens: int = 10,
    allow_repeats: bool = False,
    chunk: int = 1024,
    progress: str | None = None,
    kernel: str | None = None,
) -> Bundles:
    """Exact greedy bundles of `candidates` rows (V x d) for each row of `targets` (n x d).

    Inputs are rounded to float32 once; "exact" means exact for those values. Cosines within TIE of
    each other tie, a tie goes to the lowest token id, a step must raise the cosine by more than
    TIE, and zero candidates (no cosine) are never chosen. `kernel` ("float32" or "bfloat16") is the
    precision of the ranking products, by default the probe's choice (`kernels.product_kernel`); the
    bundles do not depend on it. Targets go in chunks of `chunk` (peak memory about 13 V x chunk
    bytes); `progress` names a tqdm bar on stderr.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    e = torch.as_tensor(np.ascontiguousarray(candidates, dtype=np.float32))
    w_all = torch.as_tensor(np.ascontiguousarray(targets, dtype=np.float32))
    name = kernel or product_kernel().name
    if name not in KERNELS:
        raise MechclaimsError(f"unknown product kernel {name!r}: use {' or '.join(KERNELS)}")
    pool = _Candidates.of(e)
    n = w_all.shape[0]
    width = max(1, min(chunk, n))
    search = _Float32Search(pool, width) if name == "float32" else _Bfloat16Search(pool, width)
    tokens = np.full((n, max_tokens), -1, dtype=np.int64)
    cosines = np.full((n, max_tokens), np.nan)
    with tqdm(total=math.ceil(n / width) * max_tokens, desc=progress, unit="step", disable=progress is None) as bar:
        for start in range(0, n, width):
            stop = min(start + width, n)
            tokens[start:stop], cosines[start:stop] = search.chunk(w_all[start:stop], max_tokens, allow_repeats, bar)
    final = np.max(np.where(np.isnan(cosines), -np.inf, cosines), axis=1)
    return Bundles(tokens=tokens, cosines=cosines, final=final)


def _cosines_of(trial: torch.Tensor, w64: torch.Tensor) -> torch.Tensor:
    """cos(trial_r, w_r) per row in float64, 0 for a zero trial vector."""
    return (trial * w64).sum(-1) / (trial.norm(dim=-1).clamp(min=1e-300) * w64.norm(dim=-1))


def _exact_choice(
    rows: torch.Tensor, tokens: torch.Tensor, b64: torch.Tensor, e64: torch.Tensor, w64: torch.Tensor, n: int,
    pairs_per_pass: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target, the exact float64 winner among its shortlisted (row, token) pairs.

    Returns (token, cosine) per target (cosine -inf where none is listed); cosines within TIE of the
    maximum tie, and a tie goes to the lowest token id.
    """
    parts = [(rows[i:i + pairs_per_pass], tokens[i:i + pairs_per_pass]) for i in range(0, len(rows), pairs_per_pass)]
    exact = torch.cat([_cosines_of(b64[r] + e64[t], w64[r]) for r, t in parts] or [torch.zeros(0, dtype=torch.float64)])
    top = torch.full((n,), -torch.inf, dtype=torch.float64).scatter_reduce(0, rows, exact, "amax")
    winners = exact >= top[rows] - TIE
    token = torch.full((n,), torch.iinfo(torch.int64).max).scatter_reduce(0, rows[winners], tokens[winners], "amin")
    return token, top


def _full_choice(
    b: torch.Tensor, e64: torch.Tensor, w: torch.Tensor, excluded: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact float64 winner over the whole vocabulary for one target (a shortlist that overflowed)."""
    exact = _cosines_of(b[None, :] + e64, w[None, :]).masked_fill_(excluded, -torch.inf)
    top = exact.max()
    return (exact >= top - TIE).nonzero()[0, 0], top


def _keep_improving(rows: torch.Tensor, chosen: torch.Tensor, cosine: torch.Tensor, current: torch.Tensor,
                    tokens: torch.Tensor, cosines: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets `rows` whose exact best cosine (-inf: none found) beats their current one by more than TIE
    take their chosen token at `step`; returns (those targets, their tokens)."""
    improves = cosine > current[rows] + TIE
    kept, s = rows[improves], chosen[improves]
    tokens[kept, step] = s
    cosines[kept, step] = cosine[improves]
    current[kept] = cosine[improves]
    return kept, s


class _Float32Search:
    """The search with float32 products: vocabulary-major (V x n) buffers, allocated once and reused, and
    torch passes per step. The float32 scores' rounding is covered by FLOAT32_SLACK (the near-best tokens
    are re-scored in float64, and a target whose float32 best is not confirmed there is re-scored over the
    whole vocabulary); on CPUs without bfloat16 units this is the faster layout (MKL's float32 product runs
    at about 1.3x in it)."""

    def __init__(self, pool: _Candidates, width: int) -> None:
        vocab = pool.e.shape[0]
        self.pool = pool
        self.num, self.sq, self.score = (torch.empty(vocab * width) for _ in range(3))
        self.near = torch.empty(vocab * width, dtype=torch.bool)

    def chunk(self, w: torch.Tensor, max_tokens: int, allow_repeats: bool, bar: Any) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, exact float64 cosines) for one chunk of targets."""
        pool = self.pool
        n = w.shape[0]
        num, sq, score, near = (buffer[: pool.e.shape[0] * n].view(-1, n)
                                for buffer in (self.num, self.sq, self.score, self.near))
        w64 = w.double()
        w_norm = w.norm(dim=1)
        zero = pool.e_sq == 0
        torch.mm(pool.e, w.T, out=num)
        num[zero] = -torch.inf
        sq.copy_(pool.e_sq.float()[:, None].expand_as(sq))
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
            listed, columns = near.nonzero(as_tuple=True)
            chosen, cosine = _exact_choice(columns, listed, b64, pool.e64, w64, n)
            for i in (searching & (cosine * w_norm < best - 2 * slack)).nonzero(as_tuple=True)[0]:
                used = zero.clone()
                used[tokens[i, :step]] = not allow_repeats
                chosen[i], cosine[i] = _full_choice(b64[i], pool.e64, w64[i], used)
            idx, s = _keep_improving(torch.arange(n), chosen, cosine, current, tokens, cosines, step)
            active = torch.zeros(n, dtype=torch.bool)
            active[idx] = True
            if step == max_tokens - 1 or len(idx) == 0:
                break
            es64 = pool.e64[s]
            step_num = torch.zeros(n, dtype=torch.float64)
            step_num[idx] = (w64[idx] * es64).sum(1)
            step_sq = torch.zeros(n, dtype=torch.float64)
            step_sq[idx] = 2 * (b64[idx] * es64).sum(1) + pool.e_sq[s]
            added = torch.zeros(pool.e.shape[1], n)
            added[:, idx] = pool.e[s].T
            num.add_(step_num.float()[None, :])
            sq.addmm_(pool.e, added, alpha=2).add_(step_sq.float()[None, :]).clamp_(min=1e-30)
            b64[idx] += es64
            if not allow_repeats:
                num[s, idx] = -torch.inf
        bar.update(max_tokens - 1 - step)
        return tokens.numpy(), cosines.numpy()


class _ProductRows:
    """bfloat16 product rows E.e_s of the candidates, one per token, computed when first needed and kept (across
    steps, chunks and calls over the same candidates, `_kept_rows`) in ROW_CACHE_BYTES; when full, the rows used
    least recently make room. Any row's rounding is within the search's bounds, so the bundles do not depend on
    which call computed it."""

    def __init__(self, ranked: torch.Tensor, least: int) -> None:
        vocab = ranked.shape[0]
        self.ranked = ranked
        self.rows = torch.empty(max(least, min(vocab, ROW_CACHE_BYTES // (2 * vocab))), vocab, dtype=torch.bfloat16)
        self.bits = self.rows.view(torch.uint16).numpy()
        self.slot = torch.full((vocab,), -1, dtype=torch.int64)
        self.owner = torch.full((len(self.rows),), -1, dtype=torch.int64)
        self.used = torch.zeros(len(self.rows), dtype=torch.int64)
        self.filled = 0
        self.computed = 0
        self.calls = 0

    def slots(self, tokens: torch.Tensor) -> torch.Tensor:
        """The row of each token's product in `rows`, computing those not kept (at most `least` distinct tokens)."""
        self.calls += 1
        needed = torch.unique(tokens)
        missing = needed[self.slot[needed] < 0]
        if len(missing):
            places = self._places(len(missing), needed)
            self.rows.index_copy_(0, places, torch.mm(self.ranked[missing], self.ranked.T))
            self.slot[missing] = places
            self.owner[places] = missing
            self.computed += len(missing)
        self.used[self.slot[needed]] = self.calls
        return self.slot[tokens]

    def _places(self, count: int, needed: torch.Tensor) -> torch.Tensor:
        """`count` free rows: unfilled ones first, then those of the least recently used tokens not `needed` now (never
        a row just handed out as unfilled, which would then hold two tokens' products)."""
        fresh = torch.arange(self.filled, min(self.filled + count, len(self.rows)))
        self.filled += len(fresh)
        if len(fresh) == count:
            return fresh
        age = self.used.clone()
        kept = self.slot[needed]
        age[kept[kept >= 0]] = self.calls
        age[fresh] = self.calls
        victims = torch.argsort(age, stable=True)[: count - len(fresh)]
        self.slot[self.owner[victims]] = -1
        return torch.cat([fresh, victims])


_KEPT_ROWS: OrderedDict = OrderedDict()


def _kept_rows(ranked: torch.Tensor, least: int) -> _ProductRows:
    """The product rows of these bfloat16 candidates (by content), kept for the last candidate set searched."""
    key = (hashlib.blake2b(ranked.view(torch.uint16).numpy().tobytes(), digest_size=16).hexdigest(), least)
    return remembered(_KEPT_ROWS, key, lambda: _ProductRows(ranked, least), kept=1)


class _Bfloat16Search:
    """The search with bfloat16 products: target-major (n x V) buffers, one fused scan per step
    (`scans.bundle_scan`) with rigorous error bounds, and product rows shared by every target that chose the same
    token, in this step or any earlier one (`_ProductRows`)."""

    def __init__(self, pool: _Candidates, width: int) -> None:
        vocab = pool.e.shape[0]
        self.pool = pool
        self.bounds = _Bounds.of(pool)
        self.num, self.sq = torch.empty(width, vocab), torch.empty(width, vocab)
        self.products = _kept_rows(self.bounds.ranked, width)

    def chunk(self, w: torch.Tensor, max_tokens: int, allow_repeats: bool, bar: Any) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, exact float64 cosines) for one chunk of targets."""
        pool, bounds, products = self.pool, self.bounds, self.products
        n = w.shape[0]
        num, sq = self.num[:n], self.sq[:n]
        w64 = w.double()
        w_norm = w64.norm(dim=1)
        zero = pool.e_sq == 0
        torch.mm(w, pool.e.T, out=num)
        num[:, zero] = -torch.inf
        sq.copy_(pool.e_sq.float()[None, :].expand_as(sq))
        num_err = (2 * bounds.gamma * bounds.e_max * w_norm + 1e-30) * SAFETY
        sq_err = torch.full((n,), 2 * UNIT_ROUNDOFF * bounds.e_max**2 + 1e-30, dtype=torch.float64)
        b64 = torch.zeros_like(w64)
        current = torch.full((n,), -torch.inf, dtype=torch.float64)
        rows = torch.arange(n)
        num_offset = torch.zeros(n, dtype=torch.float64)
        slot = torch.zeros(0, dtype=torch.int64)
        step_sq = torch.zeros(0, dtype=torch.float64)
        tokens = torch.full((n, max_tokens), -1, dtype=torch.int64)
        cosines = torch.full((n, max_tokens), torch.nan, dtype=torch.float64)
        shortlist = np.empty((n, SHORTLIST), dtype=np.int64)
        counts = np.empty(n, dtype=np.int64)
        for step in range(max_tokens):
            bar.update(1)
            m = len(rows)
            scans.bundle_scan(num.numpy(), sq.numpy(), rows.numpy(), products.bits if step else scans.NO_BITS,
                              slot.numpy(), num_offset[rows].numpy(), step_sq.numpy(), bounds.product_rel,
                              num_err[rows].numpy(), sq_err[rows].numpy(), pool.e.numpy(), b64.numpy(), w64.numpy(),
                              w_norm.numpy(), TIE, shortlist[:m], counts[:m])
            listed = torch.from_numpy(counts[:m].copy())
            searching = listed > 0
            if not bool(searching.any()):
                break
            fits = searching & (listed <= SHORTLIST)
            slots = torch.arange(SHORTLIST)[None, :] < listed[:, None]
            pair_rows, pair_slots = (slots & fits[:, None]).nonzero(as_tuple=True)
            pair_tokens = torch.from_numpy(shortlist[:m])[pair_rows, pair_slots]
            chosen, cosine = _exact_choice(pair_rows, pair_tokens, b64[rows], pool.e64, w64[rows], m)
            for i in (searching & ~fits).nonzero(as_tuple=True)[0]:
                used = zero.clone()
                used[tokens[rows[i], :step]] = not allow_repeats
                chosen[i], cosine[i] = _full_choice(b64[rows[i]], pool.e64, w64[rows[i]], used)
            target_rows, s = _keep_improving(rows, chosen, cosine, current, tokens, cosines, step)
            if step == max_tokens - 1 or len(target_rows) == 0:
                break
            es64 = pool.e64[s]
            num_offset[target_rows] += (w64[target_rows] * es64).sum(1)
            step_sq = 2 * (b64[target_rows] * es64).sum(1) + pool.e_sq[s]
            b64[target_rows] += es64
            bundle_size = float(step + 2)
            sq_err[target_rows] += bounds.step_error[s] + 2 * UNIT_ROUNDOFF * (bundle_size * bounds.e_max) ** 2 * SAFETY
            slot = products.slots(s)
            if not allow_repeats:
                num[target_rows, s] = -torch.inf
            rows = target_rows
        bar.update(max_tokens - 1 - step)
        return tokens.numpy(), cosines.numpy()


def faiss_bundles(
    candidates: np.ndarray, targets: np.ndarray, max_tokens: int = 10, allow_repeats: bool = False,
    shortlist: int = 32,
) -> Bundles:
    """The paper's search (section 3.2: greedy bundles with FAISS nearest-neighbour search): at each step,
    the `shortlist` tokens nearest by inner product (faiss.IndexFlatIP) to the target's residual

        r = w/||w|| - (b^.w/||w||) b^     (b^ = b/||b||; r = w/||w|| before the first token),

    the part of the target the bundle does not yet explain (the direction in which cos(b + e, w) rises
    fastest), are scored exactly in float64 and the best is added, with the exact search's tie and
    stopping rules. Approximate: the exact best token need not be among the shortlist.
    """
    e = np.ascontiguousarray(candidates, dtype=np.float32)
    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexFlatIP(e.shape[1])
    index.add(e)
    e64 = torch.as_tensor(e).double()
    zero = torch.as_tensor(~np.any(e != 0, axis=1))
    w = np.asarray(targets, dtype=np.float32)
    parts = [_faiss_chunk(index, e64, zero, torch.as_tensor(w[start:start + FAISS_CHUNK]).double(), max_tokens,
                          allow_repeats, shortlist) for start in range(0, len(w), FAISS_CHUNK)]
    tokens, cosines = (np.concatenate(values) for values in zip(*parts))
    final = np.max(np.where(np.isnan(cosines), -np.inf, cosines), axis=1)
    return Bundles(tokens=tokens, cosines=cosines, final=final)


def _faiss_chunk(index: Any, e64: torch.Tensor, zero: torch.Tensor, w64: torch.Tensor, max_tokens: int,
                 allow_repeats: bool, shortlist: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, cosines) of `faiss_bundles` for one chunk of targets."""
    n = len(w64)
    unit_w = w64 / w64.norm(dim=1, keepdim=True).clamp(min=1e-300)
    b64 = torch.zeros_like(w64)
    current = torch.full((n,), -torch.inf, dtype=torch.float64)
    tokens = torch.full((n, max_tokens), -1, dtype=torch.int64)
    cosines = torch.full((n, max_tokens), torch.nan, dtype=torch.float64)
    rows = torch.arange(n)
    for step in range(max_tokens):
        unit_b = b64[rows] / b64[rows].norm(dim=1, keepdim=True).clamp(min=1e-300)
        residual = unit_w[rows] - (unit_b * unit_w[rows]).sum(1, keepdim=True) * unit_b
        _, found = index.search(np.ascontiguousarray(residual.float().numpy()), min(shortlist + step, index.ntotal))
        found = torch.as_tensor(found)
        listed = found >= 0
        safe = found.clamp(min=0)
        excluded = ~listed | zero[safe]
        if not allow_repeats:
            excluded |= (safe[:, :, None] == tokens[rows, None, :step]).any(-1)
        exact = _cosines_of(b64[rows, None, :] + e64[safe], w64[rows, None, :]).masked_fill_(excluded, -torch.inf)
        top = exact.max(dim=1).values
        tied = (exact >= top[:, None] - TIE) & ~excluded
        chosen = torch.where(tied, safe, torch.iinfo(torch.int64).max).min(dim=1).values
        improves = top.isfinite() & (top > current[rows] + TIE)
        target_rows, s = rows[improves], chosen[improves]
        tokens[target_rows, step] = s
        cosines[target_rows, step] = top[improves]
        current[target_rows] = top[improves]
        b64[target_rows] += e64[s]
        rows = target_rows
        if len(rows) == 0:
            break
    return tokens.numpy(), cosines.numpy()


@dataclass(frozen=True)
class SearchAgreement:
    """How the FAISS search's bundles compare with the exact search's on the same targets: the fraction of
    identical bundles and the mean and largest final-cosine gap (exact minus FAISS; >= 0 up to TIE where
    the exact search is greedy-optimal at every step, which it need not be overall)."""

    identical: float
    mean_gap: float
    max_gap: float

    @classmethod
    def of(cls, exact: Bundles, approximate: Bundles) -> SearchAgreement:
        gap = exact.final - approximate.final
        same = np.all(exact.tokens == approximate.tokens, axis=1)
        return cls(float(same.mean()), float(gap.mean()), float(gap.max()))


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


def searched_bundles(vectors: np.ndarray, targets: np.ndarray, search: str, max_tokens: int, allow_repeats: bool,
                     progress: str, compare: bool = True) -> tuple[Bundles, SearchAgreement | None]:
    """Bundles by the exact search, or by FAISS (`faiss_bundles`) with, when `compare`, its agreement with the
    exact search on a seeded sample of AGREEMENT_SAMPLE targets."""
    if search not in SEARCHES:
        raise MechclaimsError(f"unknown bundle search {search!r}: use {', '.join(SEARCHES)}")
    if search == "exact":
        return greedy_bundles(vectors, targets, max_tokens=max_tokens, allow_repeats=allow_repeats,
                              progress=progress), None
    bundles = faiss_bundles(vectors, targets, max_tokens=max_tokens, allow_repeats=allow_repeats)
    if not compare:
        return bundles, None
    sample = np.sort(np.random.default_rng(0).permutation(len(targets))[:AGREEMENT_SAMPLE])
    exact = greedy_bundles(vectors, targets[sample], max_tokens=max_tokens, allow_repeats=allow_repeats)
    subset = Bundles(bundles.tokens[sample], bundles.cosines[sample], bundles.final[sample])
    return bundles, SearchAgreement.of(exact, subset)


def _agreement_statistics(agreement: SearchAgreement | None) -> dict[str, float]:
    if agreement is None:
        return {}
    return {"search_identical_fraction": agreement.identical, "search_mean_cosine_gap": agreement.mean_gap,
            "search_max_cosine_gap": agreement.max_gap}


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
    search: str = "exact",
) -> Measurement:
    """VSA-4 (and VSA-6 with target="out"): greedy token bundles for every neuron of one MLP layer.

    Candidates and targets as in `bundle_problem`; `layer` may be negative (-1: the last layer).
    The distribution is each neuron's final cosine; `fraction_at_{cutoff}_within_{k}` is the
    fraction of neurons whose bundle of at most k tokens reaches `cutoff`, for k = 1..max_tokens,
    also drawn as a curve against k (read real beside null in the report). `by_param["max_tokens"]`
    holds every neuron's cosine at each k, so cut-off x bundle-size sweeps need no re-measurement.
    search="faiss" runs the paper's FAISS search instead (`faiss_bundles`) and adds its agreement with the
    exact search (`search_identical_fraction`, `search_mean_cosine_gap`, `search_max_cosine_gap`).
    """
    vectors, targets = bundle_problem(source, target, candidates, normalise, mean_position, target_scale)
    layer = range(len(targets))[layer]
    bundles, agreement = searched_bundles(vectors, targets[layer], search, max_tokens, allow_repeats,
                                          f"layer {layer} bundles")
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
            **_agreement_statistics(agreement),
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
    search: str = "exact",
) -> Measurement:
    """VSA-5: the layer-0 measurement repeated for every MLP layer, with the same token candidates.

    `fraction_layer_{l}` is the fraction of layer l's neurons whose bundle reaches `cutoff`;
    `decline` = fraction at layer 0 minus the median fraction over the later layers. search="faiss" as in
    `layer_bundle_cosines`, its agreement with the exact search measured on layer 0.
    """
    vectors, targets = bundle_problem(source, target, candidates, normalise, mean_position, target_scale)
    fractions = []
    agreement = None
    for layer in range(len(targets)):
        bundles, found = searched_bundles(vectors, targets[layer], search, max_tokens, allow_repeats,
                                          f"layer {layer} bundles", compare=layer == 0)
        agreement = agreement or found
        fractions.append(float(np.mean(bundles.final >= cutoff)))
    later = fractions[1:] or fractions
    return Measurement(
        statistics={
            "decline": fractions[0] - float(np.median(later)),
            **{f"fraction_layer_{layer}": f for layer, f in enumerate(fractions)},
            **_agreement_statistics(agreement),
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
