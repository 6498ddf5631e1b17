"""Sparse attention decomposition at GPT-2-small shapes: the vectorised decompose_layer vs a pair-loop reference.

Synthetic, seeded arrays (no model: the metric is pure math): 12 layers x 12 heads, d_model 768, d_head 64,
256 prompts of 20 tokens, every position real, end = 19. Per layer the residual x ~ N(0, 1), W_Q, W_K
~ N(0, 1) * 4 / sqrt(768) and biases ~ N(0, 0.1^2); the pattern is the causal softmax of the same scores
(x~ A)(x~ B)^T / 8, peaked enough that tens of thousands of pairs fire per layer (checked: > 0). The inputs and
each layer's OmegaSVD are built once, on one thread, outside the timed region (setup; the SVDs' seconds are
recorded).

Timed: the decomposition, the selected sets and the firing statistics (firings and summed selected-set size per
head). The reference computes the same numbers with Python loops over heads, prompts and (destination, source)
pairs i >= j: the 64 terms sigma_k (x~_i . u_k)(v_k . x~_j) from the dense U, V (OmegaSVD.left/right, float64,
both projections taken per pair), their sum (the score), the firing rule and, for a firing pair, `selected_sets`
on that single row. It is timed on a subset (layer 0, the first 16 prompts) and the vectorised path on the same
subset; both must give the same firings, sizes and selected vectors (up to float32 rounding ties, counted), and
the vectorised path must be >= 10x the reference. The reference is single-threaded Python, so the asserted ratio
is taken with torch on one thread: the algorithm against the loops, not against a second core (and on a shared
machine torch's default threads can run tens of times slower when the cores are oversubscribed); the subset's
seconds at torch's default thread count are recorded beside it. A second reference that projects each
(head, prompt) once and loops only over the pairs is timed too and its ratio recorded, not asserted. The full
problem (12 layers, 256 prompts) is timed once at torch's default thread count, its seconds recorded in
extra_info and its scores checked against the direct ones, with no wall-clock assert.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from mechclaims.metrics.attention_decomposition import (
    FIRING_ATTENTION,
    Firings,
    OmegaSVD,
    augmented,
    decompose_layer,
    identity_error,
    omega_svd,
    selected_sets,
)

from timing import Timed, timed

LAYERS, HEADS, D_MODEL, D_HEAD, PROMPTS, LENGTH = 12, 12, 768, 64, 256, 20
END = LENGTH - 1
WEIGHT_SCALE = 4 / np.sqrt(D_MODEL)
BIAS_SCALE = 0.1
SUBSET_LAYER, SUBSET_PROMPTS = 0, 16
"""The reference's share of the problem: one layer, 16 prompts (1/192 of the full problem)."""
TIE_TOLERANCE = 1e-5
"""Relative to a pair's sum |terms|: a decision (score sign, a prefix against the score, two terms' order) this
close is a float32 rounding tie, where the float32 fast path and the float64 reference may differ (the two paths'
terms differ by at most 2.2e-7 of sum |terms| on this problem)."""
MAX_TIE_SHARE = 0.01
SPEEDUP_TARGET = 10.0


@dataclass(frozen=True)
class Layer:
    """One layer's inputs: residual x [n, T, d] (float32), pattern [n, H, T, T] (float32), the direct scores
    (x~ A)(x~ B)^T [n, H, T, T] (float64, zero above the diagonal) and the layer's OmegaSVD."""

    x: np.ndarray
    pattern: np.ndarray
    scores: np.ndarray
    svd: OmegaSVD


@dataclass(frozen=True)
class Problem:
    layers: tuple[Layer, ...]
    svd_seconds: float


@dataclass(frozen=True)
class Statistics:
    """A layer's firing statistics: firings [H] and summed selected-set size [H] per head."""

    firings: np.ndarray
    size_sum: np.ndarray


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch on `threads` threads inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synthetic_layer(rng: np.random.Generator) -> tuple[Layer, float]:
    """A seeded layer at GPT-2-small shapes and the seconds its OmegaSVD took."""
    w_q, w_k = (rng.standard_normal((HEADS, D_MODEL, D_HEAD)) * WEIGHT_SCALE for _ in range(2))
    b_q, b_k = (rng.standard_normal((HEADS, D_HEAD)) * BIAS_SCALE for _ in range(2))
    x = rng.standard_normal((PROMPTS, LENGTH, D_MODEL), dtype=np.float32)
    x64 = torch.as_tensor(x, dtype=torch.float64)
    q = torch.einsum("ntd,hdr->nhtr", x64, torch.as_tensor(w_q)) + torch.as_tensor(b_q)[None, :, None]
    k = torch.einsum("ntd,hdr->nhtr", x64, torch.as_tensor(w_k)) + torch.as_tensor(b_k)[None, :, None]
    causal = torch.tril(torch.ones(LENGTH, LENGTH, dtype=torch.bool))
    scores = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0.0)
    pattern = torch.softmax(scores.masked_fill(~causal, -torch.inf) / np.sqrt(D_HEAD), dim=-1).float()
    start = time.perf_counter()
    svd = omega_svd(augmented(w_q, b_q), augmented(w_k, b_k))
    return Layer(x, pattern.numpy(), scores.numpy(), svd), time.perf_counter() - start


def layer_inputs(layer: Layer, prompts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, pattern, real, end) of the first `prompts` prompts: every position real, end = 19."""
    return (layer.x[:prompts], layer.pattern[:prompts], np.ones((prompts, LENGTH), dtype=bool),
            np.full(prompts, END, dtype=np.int64))


def statistics(firings: Firings) -> Statistics:
    return Statistics(np.bincount(firings.head, minlength=HEADS),
                      np.bincount(firings.head, weights=firings.size, minlength=HEADS).astype(np.int64))


def vectorised(layers: tuple[Layer, ...], prompts: int) -> list[tuple[Firings, Statistics, np.ndarray]]:
    """decompose_layer on each layer (the path under test), then its firing statistics."""
    out = []
    for layer in layers:
        x, pattern, real, end = layer_inputs(layer, prompts)
        decomposed = decompose_layer(x, layer.svd, pattern, real, end, causal=True)
        out.append((decomposed.firings, statistics(decomposed.firings), decomposed.scores))
    return out


@dataclass(frozen=True)
class ReferenceLayer:
    """The reference's scores [n, H, T, T]; its firings as (prompt, head, dest, source) keys [F, 4], sizes [F],
    selected [F, r] and tie flags [F]; the near-zero-score pairs [*, 4] whose firing is a rounding tie."""

    scores: np.ndarray
    keys: np.ndarray
    sizes: np.ndarray
    selected: np.ndarray
    ties: np.ndarray
    sign_ties: np.ndarray
    statistics: Statistics


def is_tie(terms: np.ndarray, size: int, scale: float) -> bool:
    """Whether the selected set of `terms` sits on a rounding tie: a proper prefix's sum within tolerance of the
    score, or the last selected and the first unselected term within tolerance of each other."""
    signed = np.sort(terms * (-1.0 if terms.sum() < 0 else 1.0))[::-1]
    running = np.cumsum(signed)[:-1]
    tolerance = TIE_TOLERANCE * scale
    near_prefix = np.abs(running - abs(terms.sum())).min() < tolerance
    near_order = 0 < size < len(signed) and signed[size - 1] - signed[size] < tolerance
    return bool(near_prefix or near_order)


def reference_layer(layer: Layer, prompts: int, hoisted: bool = False) -> ReferenceLayer:
    """The same numbers as decompose_layer from Python loops over heads, prompts and pairs i >= j (float64); the
    projections x~ . u_k, v_k . x~ per pair, or once per (head, prompt) when `hoisted`."""
    x, pattern, real, end = layer_inputs(layer, prompts)
    xt = np.concatenate([x.astype(np.float64), np.ones((prompts, LENGTH, 1))], axis=2)
    scores = np.zeros((prompts, HEADS, LENGTH, LENGTH))
    keys, sizes, chosen, ties, sign_ties = [], [], [], [], []
    for head in range(HEADS):
        u, v, sigma = layer.svd.left(head), layer.svd.right(head), layer.svd.s[head, 0]
        for p in range(prompts):
            left = xt[p] @ u if hoisted else None
            right = (xt[p] @ v) * sigma if hoisted else None
            for i in range(LENGTH):
                for j in range(i + 1):
                    if hoisted:
                        terms = left[i] * right[j]
                    else:
                        terms = sigma * (xt[p, i] @ u) * (v.T @ xt[p, j])
                    score = terms.sum()
                    scores[p, head, i, j] = score
                    if not (pattern[p, head, i, j] >= FIRING_ATTENTION and j != 0 and real[p, i] and real[p, j]
                            and i <= end[p] and j <= end[p]):
                        continue
                    scale = np.abs(terms).sum()
                    if abs(score) < TIE_TOLERANCE * scale:
                        sign_ties.append((p, head, i, j))
                    if score < 0:
                        continue
                    size, selected = selected_sets(terms[None])
                    keys.append((p, head, i, j))
                    sizes.append(int(size[0]))
                    chosen.append(selected[0])
                    ties.append(is_tie(terms, int(size[0]), scale))
    keys_array = np.array(keys, dtype=np.int64).reshape(-1, 4)
    sizes_array = np.array(sizes, dtype=np.int64)
    stats = Statistics(np.bincount(keys_array[:, 1], minlength=HEADS),
                       np.bincount(keys_array[:, 1], weights=sizes_array, minlength=HEADS).astype(np.int64))
    return ReferenceLayer(scores, keys_array, sizes_array, np.array(chosen, dtype=bool).reshape(-1, D_HEAD),
                          np.array(ties, dtype=bool), np.array(sign_ties, dtype=np.int64).reshape(-1, 4), stats)


def sorted_firings(firings: Firings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys [F, 4], sizes, selected) of decompose_layer's firings in (prompt, head, dest, source) order."""
    keys = np.stack([firings.prompt, firings.head, firings.dest, firings.source], axis=1).astype(np.int64)
    order = np.lexsort(keys.T[::-1])
    return keys[order], firings.size[order], firings.selected[order]


def assert_same_firings(firings: Firings, reference: ReferenceLayer) -> int:
    """The oracle check: the same firing pairs, sizes and selected vectors as the reference, except at rounding
    ties (a near-zero score, a near-tied selected set), which are few. Returns how many ties differed."""
    keys, sizes, selected = sorted_firings(firings)
    fast = {tuple(k) for k in keys}
    slow = {tuple(k) for k in reference.keys}
    sign_ties = {tuple(k) for k in reference.sign_ties}
    assert (fast ^ slow) <= sign_ties, f"{len((fast ^ slow) - sign_ties)} firing pairs differ off rounding ties"
    common = np.array(sorted(fast & slow), dtype=np.int64).reshape(-1, 4)
    fast_rows = {tuple(k): n for n, k in enumerate(keys)}
    slow_rows = {tuple(k): n for n, k in enumerate(reference.keys)}
    f = np.array([fast_rows[tuple(k)] for k in common], dtype=np.int64)
    s = np.array([slow_rows[tuple(k)] for k in common], dtype=np.int64)
    differs = (sizes[f] != reference.sizes[s]) | (selected[f] != reference.selected[s]).any(axis=1)
    assert not (differs & ~reference.ties[s]).any(), f"{int((differs & ~reference.ties[s]).sum())} selected sets differ"
    assert reference.ties.sum() <= MAX_TIE_SHARE * len(reference.ties), "too many rounding ties for a fair check"
    return int(differs.sum() + len(fast ^ slow))


@pytest.fixture(scope="module")
def problem() -> Problem:
    rng = np.random.default_rng(0)
    with torch_threads(1):
        built = [synthetic_layer(rng) for _ in range(LAYERS)]
    return Problem(tuple(layer for layer, _ in built), sum(seconds for _, seconds in built))


@pytest.fixture(scope="module")
def subset(problem: Problem) -> tuple[Layer, ...]:
    return (problem.layers[SUBSET_LAYER],)


@pytest.fixture(scope="module")
def reference(subset: tuple[Layer, ...]) -> Timed:
    """The reference on the subset and its seconds, computed when a test first asks for them."""
    return timed(reference_layer, subset[0], SUBSET_PROMPTS)


@pytest.fixture(scope="module")
def hoisted_reference(subset: tuple[Layer, ...]) -> Timed:
    """The reference with the projections taken once per (head, prompt), and its seconds."""
    return timed(reference_layer, subset[0], SUBSET_PROMPTS, hoisted=True)


def test_reference_pair_loops(benchmark: BenchmarkFixture, subset: tuple[Layer, ...]) -> None:
    """The reference on layer 0, 16 prompts: its scores are the direct (x~ A)(x~ B)^T to float64 rounding, and
    pairs fire (the benchmark measures real work)."""
    result = benchmark.pedantic(reference_layer, args=(subset[0], SUBSET_PROMPTS), rounds=1, iterations=1)
    benchmark.extra_info.update(seconds=benchmark.stats.stats.median, firings=int(len(result.keys)),
                                rounding_ties=int(result.ties.sum() + len(result.sign_ties)))
    direct = subset[0].scores[:SUBSET_PROMPTS]
    causal = np.broadcast_to(np.tril(np.ones((LENGTH, LENGTH), dtype=bool)), direct.shape)
    assert identity_error(result.scores, direct, causal) < 1e-10
    assert len(result.keys) > 0


def test_decompose_layer_subset(benchmark: BenchmarkFixture, subset: tuple[Layer, ...], reference: Timed,
                                hoisted_reference: Timed) -> None:
    """decompose_layer on the reference's subset, torch on one thread: the same firings and selected sets as both
    references, >= 10x the per-pair reference's speed (the hoisted reference's ratio recorded, and the seconds at
    torch's default thread count)."""
    with torch_threads(1):
        result = benchmark.pedantic(vectorised, args=(subset, SUBSET_PROMPTS), rounds=5, iterations=1,
                                    warmup_rounds=1)
    seconds = benchmark.stats.stats.median
    default_threads = timed(vectorised, subset, SUBSET_PROMPTS, rounds=3)
    firings, stats, _ = result[0]
    differing_ties = assert_same_firings(firings, reference.value)
    assert_same_firings(firings, hoisted_reference.value)
    if differing_ties == 0:
        np.testing.assert_array_equal(stats.firings, reference.value.statistics.firings)
        np.testing.assert_array_equal(stats.size_sum, reference.value.statistics.size_sum)
    speedup = reference.seconds / seconds
    benchmark.extra_info.update(seconds=seconds, reference_seconds=reference.seconds, speedup_vs_reference=speedup,
                                hoisted_reference_seconds=hoisted_reference.seconds,
                                speedup_vs_hoisted_reference=hoisted_reference.seconds / seconds,
                                seconds_default_threads=default_threads.seconds,
                                default_threads=torch.get_num_threads(),
                                firings=int(len(firings.size)), rounding_ties=int(reference.value.ties.sum()),
                                differing_rounding_ties=differing_ties)
    assert len(firings.size) > 0
    assert speedup >= SPEEDUP_TARGET


def test_decompose_full_gpt2_small(benchmark: BenchmarkFixture, problem: Problem, reference: Timed) -> None:
    """decompose_layer on all 12 layers x 256 prompts, once: seconds, firings and per-unit-of-work speed-up over
    the reference in extra_info (no wall-clock assert); its scores are the direct scores to float32 rounding and
    every layer fires."""
    result = benchmark.pedantic(vectorised, args=(problem.layers, PROMPTS), rounds=1, iterations=1)
    seconds = benchmark.stats.stats.median
    firings = [len(f.size) for f, _, _ in result]
    per_unit = seconds / (LAYERS * PROMPTS)
    benchmark.extra_info.update(
        seconds=seconds, threads=torch.get_num_threads(), omega_svd_seconds_one_thread=problem.svd_seconds,
        firings=int(sum(firings)),
        mean_selected_set_size=float(sum(s.size_sum.sum() for _, s, _ in result) / sum(firings)),
        speedup_per_prompt_layer_vs_reference=reference.seconds / SUBSET_PROMPTS / per_unit)
    causal = np.broadcast_to(np.tril(np.ones((LENGTH, LENGTH), dtype=bool)), result[0][2].shape)
    for layer, (_, _, scores) in zip(problem.layers, result):
        assert identity_error(scores, layer.scores, causal) < 1e-5
    assert min(firings) > 0
