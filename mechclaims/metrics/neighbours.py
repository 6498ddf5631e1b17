"""Nearest neighbours by cosine, with FAISS: the nearest tokens of directions (readouts) and each vector's
most similar other vector.

Exact search is `faiss.IndexFlatIP` over unit rows. For vocabularies of APPROXIMATE_FROM rows or more,
`index="auto"` builds an HNSW graph (`faiss.IndexHNSWFlat`, inner product) and widens its search
(efSearch doubled from 64) until the recall@k against the exact search, measured on a seeded sample of
the queries, reaches MIN_RECALL; the recall reached is returned, never assumed. Where HNSW cannot reach
it within MAX_EF_SEARCH the exact result is returned and says so. Benchmarks against torch are in
benchmarks/test_neighbours_bench.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch

from mechclaims.errors import MechclaimsError

APPROXIMATE_FROM = 100_000
MIN_RECALL = 0.99
RECALL_SAMPLE = 256
HNSW_LINKS = 32
MAX_EF_SEARCH = 4096
INDEXES = ("auto", "exact", "hnsw")


@dataclass(frozen=True)
class Neighbours:
    """ids[q, r] is query q's r-th nearest row by cosine, cosines[q, r] its cosine; `index` says which search
    answered ("exact" or "hnsw efSearch=N") and `recall` its measured recall@k (1.0 for exact search)."""

    ids: np.ndarray
    cosines: np.ndarray
    index: str
    recall: float


def unit_float32(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32 and C-contiguous as FAISS needs (zero rows stay zero)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(np.divide(x, norms, out=np.zeros_like(x), where=norms > 0))


def _exact(rows: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexFlatIP(rows.shape[1])
    index.add(rows)
    cosines, ids = index.search(queries, k)
    return ids, cosines


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found_q & truth_q| / k."""
    return float(np.mean([len(np.intersect1d(f, t)) / truth.shape[1] for f, t in zip(found, truth)]))


def nearest_tokens(tokens: np.ndarray, directions: np.ndarray, k: int = 10, index: str = "auto",
                   seed: int = 0) -> Neighbours:
    """The k rows of `tokens` (V x d) nearest by cosine to each row of `directions` (q x d)."""
    if index not in INDEXES:
        raise MechclaimsError(f"unknown neighbour index {index!r}: use {', '.join(INDEXES)}")
    rows, queries = unit_float32(tokens), unit_float32(directions)
    k = min(k, len(rows))
    if index == "exact" or (index == "auto" and len(rows) < APPROXIMATE_FROM):
        ids, cosines = _exact(rows, queries, k)
        return Neighbours(ids, cosines, "exact", 1.0)
    sample = np.random.default_rng(seed).choice(len(queries), size=min(RECALL_SAMPLE, len(queries)), replace=False)
    truth, _ = _exact(rows, queries[sample], k)
    graph = faiss.IndexHNSWFlat(rows.shape[1], HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    graph.add(rows)
    ef = 64
    while True:
        graph.hnsw.efSearch = ef
        cosines, ids = graph.search(queries, k)
        recall = recall_at_k(ids[sample], truth)
        if recall >= MIN_RECALL or ef >= MAX_EF_SEARCH:
            break
        ef *= 2
    if recall < MIN_RECALL:
        ids, cosines = _exact(rows, queries, k)
        return Neighbours(ids, cosines, f"exact (hnsw reached recall {recall:.3f} at efSearch={ef})", 1.0)
    return Neighbours(ids, cosines, f"hnsw efSearch={ef}", recall)


def most_similar_other(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row i: max_{j != i} |cos_ij| and that j (exact FlatIP search of x and of -x, self excluded)."""
    rows = unit_float32(vectors)
    n = len(rows)
    if n < 2:
        raise ValueError("a most similar other vector needs at least two vectors")
    best = np.full(n, -np.inf, dtype=np.float32)
    where = np.full(n, -1, dtype=np.int64)
    for sign in (1.0, -1.0):
        ids, cosines = _exact(rows, np.ascontiguousarray(sign * rows), min(2, n))
        values = np.where(ids == np.arange(n)[:, None], -np.inf, cosines)
        pick = np.argmax(values, axis=1)
        value = values[np.arange(n), pick]
        better = value > best
        best[better], where[better] = value[better], ids[np.arange(n), pick][better]
    return np.clip(best, 0.0, 1.0), where
