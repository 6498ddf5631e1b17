"""Sparse attention decomposition (Franco & Crovella 2024; SAD-1 to SAD-6 in docs/claims_catalogue.md, section 2).

For a head with query and key weights W_Q, W_K [d, r] and biases b_Q, b_K [r], the pre-softmax score of
destination i and source j is (section 2.0, bias-augmented with x~ = [x; 1])

    s_ij = x~_i^T Omega x~_j,   Omega = A B^T,   A = [W_Q; b_Q], B = [W_K; b_K]   ((d+1) x r each),

on the residual the head reads (folded LayerNorm: `ln1.hook_normalized` with LN-folded weights, as the
authors). The SVD Omega = U diag(sigma) V^T splits the score into r rank-one terms
sigma_k (x~_i . u_k)(v_k . x~_j). It is taken through the thin factors (A = Q_a R_a, B = Q_b R_b, then the
r x r SVD of R_a R_b^T), never as a dense (d+1)^2 SVD.

Rotary positions (beyond the paper): the score is x~_i^T A R_i^T R_j B^T x~_j and R_i^T R_j depends only on
the offset j - i, so there is one Omega per offset, Omega_(j-i) = A R_i^T R_j B^T, decomposed exactly the
same way. Grouped KV heads use their shared key head.

The selected set of a pair is the shortest prefix of its terms, largest first, whose sum exceeds
`threshold` times the score (the paper uses threshold 1.0), up to float32 rounding (ROUNDING), so a term
below rounding never joins a set. Edge cases: a negative score mirrors the rule (most negative first, against
|score|); when no prefix exceeds (threshold > 1 with all terms positive) the set is every positive term; a
zero score has no set (size 0) and is counted apart. A pair fires when its attention
is >= 0.5, its source is not position 0, its score is >= 0 and both positions are <= 'end'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FIRING_ATTENTION = 0.5
ROUNDING = 1e-5
"""Relative rounding of float32 terms: a prefix within ROUNDING * sum |t_k| of exceeding counts as exceeding."""


@dataclass(frozen=True)
class OmegaSVD:
    """Singular triplets of every head's bias-augmented Omega in thin form, per offset under rotary positions.

    Omega_h(offset) = query_basis[h] u[h, o] diag(s[h, o]) v[h, o]^T key_basis[h]^T with o = index(offset);
    query_basis, key_basis [H, d+1, r] have orthonormal columns; u, v [H, O, r, r]; s [H, O, r] descending.
    `offsets` lists the offset (source - destination) of each o; None when Omega is the same at every offset.
    """

    query_basis: np.ndarray
    key_basis: np.ndarray
    u: np.ndarray
    s: np.ndarray
    v: np.ndarray
    offsets: tuple[int, ...] | None

    def index(self, offset: int) -> int:
        """The o of `offset` (0 when position-free)."""
        return 0 if self.offsets is None else self.offsets.index(offset)

    def left(self, head: int, offset: int = 0) -> np.ndarray:
        """U [(d+1), r]: the left singular vectors of head `head` at `offset`."""
        return self.query_basis[head] @ self.u[head, self.index(offset)]

    def right(self, head: int, offset: int = 0) -> np.ndarray:
        """V [(d+1), r]: the right singular vectors."""
        return self.key_basis[head] @ self.v[head, self.index(offset)]

    def dense(self, head: int, offset: int = 0) -> np.ndarray:
        """Omega itself [(d+1), (d+1)] (tests and small models only)."""
        o = self.index(offset)
        return (self.left(head, offset) * self.s[head, o]) @ self.right(head, offset).T


def augmented(weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """[W; b]: [H, d, r] and [H, r] -> [H, d+1, r]."""
    return np.concatenate([weights, bias[:, None, :]], axis=1)


def key_heads(n_heads: int, n_kv_heads: int) -> np.ndarray:
    """The key head each query head reads (grouped KV: consecutive query heads share one)."""
    return np.arange(n_heads) // (n_heads // n_kv_heads)


def rotary_offset_matrices(cos: np.ndarray, sin: np.ndarray, offsets: tuple[int, ...]) -> np.ndarray:
    """R_i^T R_j for each offset j - i, with R_p the model's rotation at position p in the rotate-half layout
    (q' = q cos + rotate_half(q) sin): R_p = [[C, -S], [S, C]]; i = max(0, -offset), j = max(0, offset).
    cos, sin [n_positions, r] -> [len(offsets), r, r]."""
    half = cos.shape[1] // 2

    def rotation(p: int) -> np.ndarray:
        c, s = np.diag(cos[p, :half]), np.diag(sin[p, :half])
        return np.block([[c, -s], [s, c]])

    return np.stack([rotation(max(0, -o)).T @ rotation(max(0, o)) for o in offsets])


def omega_svd(query: np.ndarray, key: np.ndarray, offset_matrices: np.ndarray | None = None,
              offsets: tuple[int, ...] | None = None) -> OmegaSVD:
    """The SVD of every head's Omega = A M B^T through its thin factors (float64). query, key: the augmented
    factors A, B [H, d+1, r] (key already mapped to each query head); offset_matrices [O, r, r] the M of each
    offset (rotary), or None for M = I."""
    a = torch.as_tensor(query, dtype=torch.float64)
    b = torch.as_tensor(key, dtype=torch.float64)
    qa, ra = torch.linalg.qr(a)
    qb, rb = torch.linalg.qr(b)
    if offset_matrices is None:
        core = (ra @ rb.transpose(-1, -2))[:, None]
    else:
        m = torch.as_tensor(offset_matrices, dtype=torch.float64)
        core = ra[:, None] @ m[None] @ rb[:, None].transpose(-1, -2)
    u, s, vh = torch.linalg.svd(core)
    return OmegaSVD(qa.numpy(), qb.numpy(), u.numpy(), s.numpy(), vh.transpose(-1, -2).numpy(),
                    None if offset_matrices is None else tuple(offsets or ()))


def selected_sets(terms: np.ndarray, threshold: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(sizes [F], selected [F, r] bool) of the selected set of each row of terms [F, r] (module docstring)."""
    terms = np.asarray(terms, dtype=np.float64)
    score = terms.sum(axis=1)
    signed = terms * np.where(score < 0, -1.0, 1.0)[:, None]
    order = np.argsort(-signed, axis=1, kind="stable")
    running = np.cumsum(np.take_along_axis(signed, order, axis=1), axis=1)
    rounding = ROUNDING * np.abs(terms).sum(axis=1)
    exceeds = running > (threshold * np.abs(score) - rounding)[:, None]
    sizes = np.where(exceeds.any(axis=1), exceeds.argmax(axis=1) + 1, (signed > 0).sum(axis=1))
    sizes = np.where(score == 0, 0, sizes)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(terms.shape[1])[None].repeat(len(terms), 0), axis=1)
    return sizes, ranks < sizes[:, None]


@dataclass(frozen=True)
class Firings:
    """Firing pairs of one layer: prompt, head, destination, source, offset index [F]; size of each selected
    set [F]; which singular vectors it selected [F, r]; its attention [F]."""

    prompt: np.ndarray
    head: np.ndarray
    dest: np.ndarray
    source: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    selected: np.ndarray
    attention: np.ndarray

    def take(self, rows: np.ndarray) -> Firings:
        """The firings at `rows`."""
        return Firings(*(getattr(self, name)[rows] for name in self.__dataclass_fields__))


@dataclass(frozen=True)
class LayerDecomposition:
    """The decomposed scores of every (prompt, head, destination, source) [n, H, T, T] (zero where not
    computed: future sources of a causal model) and the layer's firings."""

    scores: np.ndarray
    firings: Firings


def decompose_layer(x: np.ndarray, svd: OmegaSVD, pattern: np.ndarray, real: np.ndarray, end: np.ndarray,
                    causal: bool, threshold: float = 1.0, basis: np.ndarray | None = None) -> LayerDecomposition:
    """Decompose every score of one layer: x [n, T, d] the residual the heads read, pattern [n, H, T, T] their
    attention, real [n, T] the real positions, end [n] the last position a firing may use. `basis` [H, r, r]
    (orthogonal) re-expresses each head's terms in a rotated basis of the same singular spaces (the
    random-basis null): t = (p O) * ((sigma q) O), whose sum is unchanged. Vectorised over prompts, heads and
    positions; the only loop is over the offsets j - i."""
    n, length, _ = x.shape
    heads, rank = svd.s.shape[0], svd.s.shape[2]
    xt = torch.cat([torch.as_tensor(x, dtype=torch.float32), torch.ones(n, length, 1)], dim=2)
    a = torch.einsum("ntd,hdr->nhtr", xt, torch.as_tensor(svd.query_basis, dtype=torch.float32))
    b = torch.einsum("ntd,hdr->nhtr", xt, torch.as_tensor(svd.key_basis, dtype=torch.float32))
    u = torch.as_tensor(svd.u, dtype=torch.float32)
    v = torch.as_tensor(svd.v, dtype=torch.float32)
    s = torch.as_tensor(svd.s, dtype=torch.float32)
    rotate = None if basis is None else torch.as_tensor(basis, dtype=torch.float32)
    attention = torch.as_tensor(pattern)
    scores = torch.zeros(n, heads, length, length, dtype=torch.float64)
    real_t = torch.as_tensor(real)
    end_t = torch.as_tensor(end)
    parts: list[dict[str, np.ndarray]] = []
    offsets = range(-(length - 1), 1 if causal else length)
    for offset in offsets:
        if svd.offsets is not None and offset not in svd.offsets:
            continue
        o = svd.index(offset)
        dest = torch.arange(max(0, -offset), min(length, length - offset))
        src = dest + offset
        left = torch.einsum("nhmr,hrk->nhmk", a[:, :, dest], u[:, o])
        right = torch.einsum("nhmr,hrk->nhmk", b[:, :, src], v[:, o]) * s[None, :, None, o]
        if rotate is not None:
            left = torch.einsum("nhmk,hkl->nhml", left, rotate)
            right = torch.einsum("nhmk,hkl->nhml", right, rotate)
        score = (left.double() * right.double()).sum(-1)
        scores[:, :, dest, src] = score
        both_real = real_t[:, dest] & real_t[:, src]
        attend = attention[:, :, dest, src]
        fire = ((attend >= FIRING_ATTENTION) & (score >= 0) & (src != 0)[None, None]
                & both_real[:, None] & (dest[None] <= end_t[:, None])[:, None] & (src[None] <= end_t[:, None])[:, None])
        p, h, m = torch.nonzero(fire, as_tuple=True)
        if len(p) == 0:
            continue
        terms = (left[p, h, m].double() * right[p, h, m].double()).numpy()
        size, chosen = selected_sets(terms, threshold)
        parts.append({"prompt": p.numpy(), "head": h.numpy(), "dest": dest[m].numpy(), "source": src[m].numpy(),
                      "offset": np.full(len(p), o), "size": size, "selected": chosen,
                      "attention": attend[p, h, m].numpy()})
    keys = ("prompt", "head", "dest", "source", "offset", "size", "selected", "attention")
    if parts:
        firings = Firings(**{k: np.concatenate([part[k] for part in parts]) for k in keys})
    else:
        empty = np.zeros(0, dtype=np.int64)
        firings = Firings(empty, empty, empty, empty, empty, empty, np.zeros((0, rank), bool), np.zeros(0))
    return LayerDecomposition(scores.numpy(), firings)


def random_bases(heads: int, rank: int, seed: int) -> np.ndarray:
    """[heads, rank, rank] Haar-random orthogonal matrices (QR of a Gaussian, signs fixed), seeded."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((heads, rank, rank)))
    return q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]


def identity_error(decomposed: np.ndarray, reference: np.ndarray, valid: np.ndarray) -> float:
    """max |decomposed - reference| / max |reference| over the valid entries (the self-check's statistic)."""
    scale = float(np.abs(reference[valid]).max()) if valid.any() else 0.0
    gap = float(np.abs(decomposed[valid] - reference[valid]).max()) if valid.any() else 0.0
    return gap / scale if scale > 0 else gap


def softmax_rows(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """softmax over the last axis restricted to `valid` entries (zero elsewhere)."""
    masked = np.where(valid, scores, -np.inf)
    top = masked.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(valid, np.exp(masked - top), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def usage_share(selected: np.ndarray, top: int) -> float:
    """Share of all singular-vector uses (selected [F, r]) taken by the `top` most-used vectors."""
    counts = np.sort(selected.sum(axis=0))[::-1]
    total = counts.sum()
    return float(counts[:top].sum() / total) if total else 0.0



def signal_vectors(svd: OmegaSVD, residual: np.ndarray, firings: Firings) -> tuple[np.ndarray, np.ndarray]:
    """Each firing's destination- and source-side signal directions in the augmented residual space (section
    2.0, tracing): w_dest = sum_{k in S} sign_k sqrt(sigma_k) u_k and w_src = sum_{k in S} sign_k sqrt(sigma_k) v_k,
    sign_k = sign(x~_i . u_k), so that the selected terms are sum_k (w_dest-part . x~_i)(w_src-part . x~_j) per k.
    residual [n, T, d] -> ([F, d+1], [F, d+1]); grouped by (head, offset), vectorised within a group."""
    dest = np.zeros((len(firings.head), residual.shape[2] + 1))
    src = np.zeros_like(dest)
    for head, offset in set(zip(firings.head.tolist(), firings.offset.tolist())):
        rows = np.flatnonzero((firings.head == head) & (firings.offset == offset))
        left = svd.query_basis[head] @ svd.u[head, offset]
        right = svd.key_basis[head] @ svd.v[head, offset]
        x = residual[firings.prompt[rows], firings.dest[rows]].astype(np.float64)
        signs = np.sign(np.concatenate([x, np.ones((len(rows), 1))], axis=1) @ left)
        weights = firings.selected[rows] * signs * np.sqrt(svd.s[head, offset])[None]
        dest[rows] = weights @ left.T
        src[rows] = weights @ right.T
    return dest, src


def upstream_contributions(z: np.ndarray, w_o: np.ndarray, vectors: np.ndarray, prompts: np.ndarray,
                           positions: np.ndarray) -> np.ndarray:
    """contrib[f, h] = (z[p_f, t_f, h] W_O[h]) . vectors[f]: what each head of an upstream layer writes along a
    firing's signal direction at that firing's position. z [n, T, H, d_head], W_O [H, d_head, d],
    vectors [F, d] -> [F, H]."""
    along = torch.einsum("hed,fd->fhe", torch.as_tensor(w_o, dtype=torch.float32),
                         torch.as_tensor(vectors, dtype=torch.float32))
    written = torch.as_tensor(z[prompts, positions], dtype=torch.float32)
    return (written * along).sum(-1).double().numpy()
