"""The sparse-attention claims' measurements (Franco & Crovella 2024, docs/claims_catalogue.md section 2): prompts
through a Source's forward pass, every head's scores decomposed (attention_decomposition), then one
Measurement per claim.

The residual each head reads and the weights it is decomposed with follow the authors (section 2.0): in a
normalised decoder, `ln1.hook_normalized` with TransformerLens-folded (`compat`) weights; elsewhere (an encoder,
whose attention reads the post-norm residual, or a model without norms) the input of the query projection with
the raw weights. The self-check claim compares the decomposed scores with the model's own.

IOI positions come from the model's own tokens: IO is the IO name's token, S1 and S2 the S name's first two,
'end' the last token (our prompts end before the IO name). Prompts run without a prepended BOS, as the
authors'. One forward pass and decomposition per (model, data set, parameters) is shared by every claim in
the process (`_analysis`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import networkx as nx
import numpy as np

from mechclaims.datasets.base import Dataset
from mechclaims.errors import MechclaimsError, NotApplicable
from mechclaims.measurement import KnownCircuit, Measurement, Source
from mechclaims.memo import remembered, source_key
from mechclaims.metrics.attention_decomposition import (
    Firings,
    OmegaSVD,
    augmented,
    decompose_layer,
    identity_error,
    key_heads,
    omega_svd,
    random_bases,
    rotary_offset_matrices,
    selected_sets,
    signal_vectors,
    softmax_rows,
    upstream_contributions,
    usage_share,
)
from mechclaims.stats import auroc

Basis = Literal["singular", "random"]
RANDOM_BASIS_SEED = 0
PASSES_KEPT = 4
"""Forward passes kept per process (about 0.3 GB each for smollm2-135m on the IOI prompts): a model and its null
on the IOI and the generic data sets."""
ANALYSES_KEPT = 8
"""Decompositions kept per process: each basis of each kept pass, so no claim of the paper decomposes a pass again."""
ROLES = ("IO", "S1", "S2", "end")
TRACING_SHARE = 0.7
"""Upstream heads kept per traced firing: the fewest whose contributions exceed 70% of the total (section 2.0)."""
GRAPH_EDGES_KEPT = 2000
"""Edges of the traced graph the details keep, strongest first (the report draws the strongest and lists them all)."""
UPSTREAM_FLOOR = 1e-4
"""A side of a traced firing whose upstream heads together write less than this share of its signal (x~ . w) is
carried by the embeddings and biases alone: it has no upstream head to keep and is left out of the kept fractions."""


@dataclass(frozen=True)
class LayerView:
    """One layer as the claims read it: its SVDs, the residual it read [n, T, d], its firings, each head's
    attention from 'end' to IO averaged over prompts [H] (NaN without IOI positions), and in a decoder what
    tracing reads: each head's z [n, T, H, d_head] and the norm's scale before this layer's attention [n, T]."""

    svd: OmegaSVD
    residual: np.ndarray
    firings: Firings
    end_to_io: np.ndarray
    z: np.ndarray | None = None
    scale: np.ndarray | None = None


@dataclass(frozen=True)
class Analysis:
    """Every layer of one model on one data set: the decomposition's self-check per layer, the reference it
    was checked against, the layers, positions (role -> [n]; only `end` on a data set without IOI roles),
    token ids and mask [n, T], the logit difference IO - S at end per prompt (None off IOI), and the words the
    IOI data set dropped for this tokenizer."""

    identity: np.ndarray
    reference: str
    layers: tuple[LayerView, ...]
    positions: dict[str, np.ndarray]
    tokens: np.ndarray
    mask: np.ndarray
    logit_diff: np.ndarray | None
    dropped: tuple[str, ...]
    rank: int
    texts: tuple[str, ...] = ()

    def firings(self) -> list[tuple[int, Firings]]:
        return [(layer, view.firings) for layer, view in enumerate(self.layers)]


_ANALYSES: OrderedDict[tuple[Any, ...], Analysis] = OrderedDict()


def _reading(source: Source) -> tuple[str, str]:
    """(weight processing, residual hook pattern) the decomposition uses on this model (module docstring)."""
    caps = source.capabilities
    if caps.kind == "decoder" and caps.norm != "none":
        return "compat", "blocks.{}.ln1.hook_normalized"
    return "raw", "blocks.{}.attn.q.hook_in"


def _svds(source: Source, processing: str, length: int) -> list[OmegaSVD]:
    """Every layer's OmegaSVD; under rotary positions one per offset j - i a pair can have: 1 - length .. 0 in a
    decoder (causal: no source after its destination), 1 - length .. length - 1 in an encoder."""
    caps = source.capabilities
    weights = source.weights(processing)
    groups = key_heads(caps.n_heads, caps.n_kv_heads)
    tables = source.rotary_tables(length)
    offsets = tuple(range(-(length - 1), 1 if caps.kind == "decoder" else length))
    matrices = None if tables is None else rotary_offset_matrices(*tables, offsets)
    svds = []
    for layer in range(caps.n_layers):
        query = augmented(weights.W_Q[layer], weights.b_Q[layer])
        key = augmented(weights.W_K[layer], weights.b_K[layer])[groups]
        svds.append(omega_svd(query, key, matrices, None if matrices is None else offsets))
    return svds


def _ioi_positions(source: Source, dataset: Dataset, tokens: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """role -> position [n] in each prompt's tokens; a prompt where a name is not found is a one-line error."""
    ids = {word: source.single_token_id(" " + word) for row in dataset.metadata for word in (row["io"], row["s"])}
    found = {role: np.zeros(len(tokens), dtype=np.int64) for role in ROLES}
    for n, (row, line, real) in enumerate(zip(dataset.metadata, tokens, mask)):
        line = line[real]
        io = np.flatnonzero(line == ids[row["io"]])
        s = np.flatnonzero(line == ids[row["s"]])
        if len(io) < 1 or len(s) < 2:
            raise MechclaimsError(f"IOI prompt {n} ({dataset.texts[n]!r}) does not hold its names as single tokens "
                                  "on this model: the IOI data set's word filter and the tokenizer disagree")
        found["IO"][n], found["S1"][n], found["S2"][n], found["end"][n] = io[0], s[0], s[1], len(line) - 1
    return found


def _prompts(source: Source, dataset: Dataset) -> Dataset:
    """The IOI data set restricted to words that are single tokens (with their leading space) on this model."""
    restrict = getattr(dataset, "restricted", None)
    if restrict is None:
        return dataset
    return restrict(lambda word: source.single_token_id(" " + word) is not None)


@dataclass(frozen=True)
class _Pass:
    """One forward pass of a data set through a source, with what every decomposition of it shares: the
    prompts (restricted to the model's single-token words), their activations and IOI positions (only `end`
    off IOI), every layer's OmegaSVD, and the residual hook and whether tracing's hooks were kept."""

    prompts: Dataset
    acts: Any
    positions: dict[str, np.ndarray]
    svds: list[OmegaSVD]
    residual_hook: str
    traceable: bool
    is_ioi: bool


_PASSES: OrderedDict[tuple[Any, ...], _Pass] = OrderedDict()


def _forward_pass(source: Source, dataset: Dataset, max_length: int | None) -> _Pass:
    """Run the data set through the source once (memoised per model and data: every basis and threshold of
    the decomposition reads the same pass)."""
    caps = source.capabilities
    prompts = _prompts(source, dataset)
    processing, residual_hook = _reading(source)
    traceable = processing == "compat"
    names = []
    for layer in range(caps.n_layers):
        names += [residual_hook.format(layer), f"blocks.{layer}.attn.hook_attn_scores", f"blocks.{layer}.attn.hook_pattern"]
        names += [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.ln1.hook_scale"] if traceable else []
    is_ioi = bool(prompts.metadata) and "io" in prompts.metadata[0]
    acts = source.activations(list(prompts.texts), names, prepend_bos=False, max_length=max_length,
                              last_logits=is_ioi, progress=False)
    positions = _ioi_positions(source, prompts, acts.tokens, acts.mask) if is_ioi else {"end": acts.last_positions}
    svds = _svds(source, processing, acts.tokens.shape[1])
    return _Pass(prompts, acts, positions, svds, residual_hook, traceable, is_ioi)


def _analysis(source: Source, dataset: Dataset, threshold: float, basis: Basis, max_length: int | None = None) -> Analysis:
    """Decompose every layer of the data set's forward pass (both memoised per model, data and parameters)."""
    key = (*source_key(source, dataset, max_length), threshold, basis)
    return remembered(_ANALYSES, key, lambda: _decomposed(source, dataset, threshold, basis, max_length), ANALYSES_KEPT)


def _decomposed(source: Source, dataset: Dataset, threshold: float, basis: Basis, max_length: int | None) -> Analysis:
    caps = source.capabilities
    run = remembered(_PASSES, source_key(source, dataset, max_length),
                     lambda: _forward_pass(source, dataset, max_length), PASSES_KEPT)
    acts, positions, residual_hook, traceable = run.acts, run.positions, run.residual_hook, run.traceable
    tokens, mask = acts.tokens, acts.mask
    causal = caps.kind == "decoder"
    length = tokens.shape[1]
    rotations = random_bases(caps.n_heads, caps.d_head, RANDOM_BASIS_SEED) if basis == "random" else None
    n = len(tokens)
    valid = mask[:, None, :, None] & mask[:, None, None, :]
    if causal:
        valid = valid & np.tril(np.ones((length, length), dtype=bool))[None, None]
    identity, layers, reference = [], [], "hook_attn_scores"
    for layer, svd in enumerate(run.svds):
        x = acts.arrays[residual_hook.format(layer)]
        pattern = acts.arrays[f"blocks.{layer}.attn.hook_pattern"]
        hooked = acts.arrays[f"blocks.{layer}.attn.hook_attn_scores"].astype(np.float64)
        valid = np.broadcast_to(valid, hooked.shape)
        decomposed = decompose_layer(x, svd, pattern, mask, positions["end"], causal, threshold, rotations)
        scaled = decomposed.scores / np.sqrt(caps.d_head)
        holds_probabilities = np.allclose(np.where(valid, hooked, 0), np.where(valid, pattern, 0), atol=1e-6)
        if holds_probabilities:
            reference = "hook_pattern (this bridge's hook_attn_scores holds the softmax, not the scores)"
            identity.append(float(np.abs(softmax_rows(scaled, valid) - np.where(valid, pattern, 0)).max()))
        else:
            identity.append(identity_error(scaled, hooked, valid))
        end_to_io = (pattern[np.arange(n), :, positions["end"], positions["IO"]].mean(axis=0) if run.is_ioi
                     else np.full(caps.n_heads, np.nan))
        z = acts.arrays[f"blocks.{layer}.attn.hook_z"] if traceable else None
        scale = acts.arrays[f"blocks.{layer}.ln1.hook_scale"][..., 0] if traceable else None
        layers.append(LayerView(svd, x, decomposed.firings, end_to_io, z, scale))
    logit_diff = None
    if run.is_ioi:
        io_ids, s_ids = _name_ids(tokens, positions, np.arange(n))
        logit_diff = acts.last_logits[np.arange(n), io_ids] - acts.last_logits[np.arange(n), s_ids]
    return Analysis(np.array(identity), reference, tuple(layers), positions, tokens, mask, logit_diff,
                    tuple(getattr(run.prompts, "dropped", ())), caps.d_head, tuple(run.prompts.texts))


def _name_ids(tokens: np.ndarray, positions: dict[str, np.ndarray], prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The token ids of the IO and S names in each of `prompts`."""
    return tokens[prompts, positions["IO"][prompts]], tokens[prompts, positions["S1"][prompts]]


def _task_statistics(analysis: Analysis) -> dict[str, float]:
    """The IOI task statistics every IOI measurement carries (the gate reads `ioi_logit_diff`)."""
    if analysis.logit_diff is None:
        return {}
    return {"ioi_logit_diff": float(analysis.logit_diff.mean()),
            "ioi_accuracy": float(np.mean(analysis.logit_diff > 0))}


def _task_details(analysis: Analysis) -> dict[str, Any]:
    return {"prompts": len(analysis.tokens), "dropped_words": list(analysis.dropped)}


def _label(layer: int, head: int) -> str:
    return f"{layer}.{head}"


def _head_table(analysis: Analysis, top: int = 12) -> list[dict[str, Any]]:
    """The `top` heads by firings: label, firings, mean and median selected-set size."""
    rows = []
    for layer, firings in analysis.firings():
        for head in np.unique(firings.head):
            sizes = firings.size[(firings.head == head) & (firings.size > 0)]
            if len(sizes):
                rows.append({"head": _label(layer, int(head)), "firings": len(sizes),
                             "mean_size": float(sizes.mean()), "median_size": float(np.median(sizes))})
    return sorted(rows, key=lambda row: -row["firings"])[:top]


def _head_distributions(analysis: Analysis, top: int = 6) -> dict[str, list[float]]:
    """|S| / d_head of each of the `top` most-firing heads' firings (the report's per-head histograms)."""
    out = {}
    for row in _head_table(analysis, top):
        layer, head = (int(v) for v in row["head"].split("."))
        sizes = analysis.layers[layer].firings.size[analysis.layers[layer].firings.head == head]
        out[row["head"]] = (sizes[sizes > 0] / analysis.rank).tolist()
    return out


def _sv_use(analysis: Analysis, limit: int = 64) -> dict[str, Any]:
    """The singular vectors each end -> IO firing of the name mover selected (the report's heatmap)."""
    layer, head = _name_mover(analysis)
    chosen = _pair_firings(analysis, layer, head, "end", "IO")[:limit]
    selected = analysis.layers[layer].firings.selected[chosen]
    return {"head": _label(layer, head), "rank": analysis.rank, "rows": [np.flatnonzero(row).tolist() for row in selected]}


def decomposition_identity(source: Source, inputs: Dataset) -> Measurement:
    """Self-check: per layer, max |sum_k sigma_k (x~_i.u_k)(v_k.x~_j) / sqrt(d_head) - the model's score| over
    every real (causal) pair, over max |score| (or, where the bridge's score hook holds probabilities, the
    largest gap between the decomposed scores' softmax and the model's attention pattern)."""
    analysis = _analysis(source, inputs, 1.0, "singular")
    return Measurement(
        statistics={"relative_error": float(analysis.identity.max())},
        distribution=analysis.identity,
        distribution_label="per layer: decomposed vs the model's own scores (relative error)",
        details={"reference": analysis.reference, "layers": len(analysis.identity), **_task_details(analysis)},
    )


def firing_selected_sets(source: Source, inputs: Dataset, threshold: float = 1.0, basis: Basis = "singular") -> Measurement:
    """SAD-1: |S_ij| / d_head for every firing pair of every head (zero-score firings counted apart). `basis`
    "random" decomposes in a Haar-random orthonormal basis of the same singular spaces (the null)."""
    analysis = _analysis(source, inputs, threshold, basis)
    sizes = np.concatenate([f.size for _, f in analysis.firings()])
    scored = sizes[sizes > 0]
    if len(scored) == 0:
        raise NotApplicable("no head fires (attention >= 0.5 off position 0 with a positive score) on these prompts")
    return Measurement(
        statistics={"median_fraction": float(np.median(scored) / analysis.rank), "mean_size": float(scored.mean()),
                    "firings": float(len(scored)), "zero_score_firings": float(np.sum(sizes == 0)),
                    **_task_statistics(analysis)},
        distribution=scored / analysis.rank,
        distribution_label=f"selected-set size / d_head ({analysis.rank}) per firing pair, all heads",
        details={"heads": _head_table(analysis), "basis": basis, "head_distributions": _head_distributions(analysis),
                 **_task_details(analysis)},
    )


def basis_specificity(source: Source, inputs: Dataset, threshold: float = 1.0) -> Measurement:
    """SAD-1, its basis-specific reading: the same firings decomposed in a Haar-random orthonormal basis of the
    same singular spaces need `basis_ratio` = mean |S| (random basis) / mean |S| (singular basis) times as many
    terms; the distribution is each firing's |S| / d_head in the singular basis."""
    singular = _analysis(source, inputs, threshold, "singular")
    rotated = _analysis(source, inputs, threshold, "random")
    sizes = np.concatenate([f.size for _, f in singular.firings()])
    random_sizes = np.concatenate([f.size for _, f in rotated.firings()])
    keep = (sizes > 0) & (random_sizes > 0)
    if not keep.any():
        raise NotApplicable("no head fires (attention >= 0.5 off position 0 with a positive score) on these prompts")
    mean, random_mean = float(sizes[keep].mean()), float(random_sizes[keep].mean())
    return Measurement(
        statistics={"basis_ratio": random_mean / mean, "mean_size": mean, "random_basis_mean_size": random_mean,
                    "firings": float(keep.sum()), **_task_statistics(singular)},
        distribution=sizes[keep] / singular.rank,
        distribution_label=f"selected-set size / d_head ({singular.rank}) per firing pair, singular basis",
        details={"heads": _head_table(singular), **_task_details(singular)},
    )


def singular_vector_reuse(source: Source, inputs: Dataset, threshold: float = 1.0, basis: Basis = "singular",
                          min_firings: int = 20, top_fraction: float = 0.1875) -> Measurement:
    """SAD-2: per head (per head and offset under rotary positions, where the basis differs by offset) with at
    least `min_firings` firings, the share of all singular-vector uses taken by its k = top_fraction * d_head
    most-used vectors, over the uniform share k / d_head (the paper's 12 of 64). On a planted model, whether each
    circuit head's planted query and key directions lie in the span of its k most-used vectors."""
    analysis = _analysis(source, inputs, threshold, basis)
    k = max(1, round(top_fraction * analysis.rank))
    ratios, labels, planted = [], [], {}
    known = getattr(source, "known_circuit", None)
    for layer, firings in analysis.firings():
        for head, offset in sorted(set(zip(firings.head.tolist(), firings.offset.tolist()))):
            chosen = (firings.head == head) & (firings.offset == offset) & (firings.size > 0)
            if chosen.sum() >= min_firings:
                ratios.append(usage_share(firings.selected[chosen], k) / (k / analysis.rank))
                if basis == "singular":
                    top = np.argsort(-firings.selected[chosen].sum(axis=0), kind="stable")[:k]
                    found = _planted_directions(known, analysis, layer, head, top)
                    if found:
                        planted[_label(layer, head)] = found
                labels.append(_label(layer, head) if len(analysis.layers[layer].svd.s[0]) == 1
                              else f"{_label(layer, head)}@{analysis.layers[layer].svd.offsets[offset]}")
    if not ratios:
        raise NotApplicable(f"no head fires {min_firings} times on these prompts: lower min_firings or add prompts")
    return Measurement(
        statistics={"median_ratio": float(np.median(ratios)), "groups": float(len(ratios)), **_task_statistics(analysis)},
        distribution=np.array(ratios),
        distribution_label=f"top-{k} share of singular-vector uses over uniform ({k}/{analysis.rank}), per head",
        details={"groups": labels[:50], "top": k, "basis": basis, "sv_use": _sv_use(analysis),
                 **({"planted_directions_in_top": planted} if planted else {}), **_task_details(analysis)},
    )


PLANTED_SPAN = 0.9
"""A planted direction is among some singular vectors when their span holds at least 90% of its norm."""


def _spans(vectors: np.ndarray, directions: np.ndarray) -> bool:
    """Whether every row of directions [m, d] lies (to PLANTED_SPAN) in the span of the residual parts of
    vectors [d+1, k]."""
    basis, _ = np.linalg.qr(vectors[:-1])
    units = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    return bool(np.all(np.linalg.norm(units @ basis, axis=1) >= PLANTED_SPAN))


def _planted_directions(known: KnownCircuit | None, analysis: Analysis, layer: int, head: int,
                        chosen: np.ndarray) -> dict[str, bool]:
    """For a planted model: whether the directions head `layer.head` was built to read on its query and key sides
    lie in the span of its singular vectors `chosen` (left for the query, right for the key); {} otherwise."""
    label = _label(layer, head)
    if known is None or len(chosen) == 0:
        return {}
    svd = analysis.layers[layer].svd
    out = {}
    if label in known.query_directions:
        out["query"] = _spans(svd.left(head)[:, chosen], known.query_directions[label])
    if label in known.key_directions:
        out["key"] = _spans(svd.right(head)[:, chosen], known.key_directions[label])
    return out


def _end_to_io(analysis: Analysis) -> np.ndarray:
    """[L, H]: each head's attention from end to IO, averaged over prompts."""
    return np.stack([view.end_to_io for view in analysis.layers])


def _roots(analysis: Analysis, heads: int) -> list[tuple[int, int]]:
    """The `heads` (layer, head) attending most from end to IO (the name movers' rule), first index on ties."""
    table = _end_to_io(analysis)
    order = np.argsort(-table, axis=None, kind="stable")[:heads]
    return [(int(layer), int(head)) for layer, head in zip(*np.unravel_index(order, table.shape))]


def _name_mover(analysis: Analysis) -> tuple[int, int]:
    """The head attending most from end to IO (the rule that finds (9,9)-like heads)."""
    return _roots(analysis, 1)[0]


def _pair_firings(analysis: Analysis, layer: int, head: int, dest: str, src: str) -> np.ndarray:
    """Indices into layer's firings of head's firings from role `dest` to role `src` (per prompt)."""
    firings = analysis.layers[layer].firings
    return np.flatnonzero((firings.head == head) & (firings.dest == analysis.positions[dest][firings.prompt])
                          & (firings.source == analysis.positions[src][firings.prompt]) & (firings.size > 0))


def name_signal_auroc(source: Source, inputs: Dataset, threshold: float = 1.0, min_share: float = 0.5) -> Measurement:
    """SAD-3: for the name-mover head (most attention end -> IO), the singular vectors its end -> IO firings use
    in at least `min_share` of them span V_s; each token's mean ||(V_s V_s^T x~)[:d]|| over its occurrences
    (positions <= end) ranks names above the other tokens: AUROC of names vs the rest. `end_to_io_firings` 0 is the
    claim's gate (no V-space signal to read); on a planted model, whether V_s holds the direction the name mover's
    key was built to read."""
    analysis = _analysis(source, inputs, threshold, "singular")
    layer, head = _name_mover(analysis)
    view = analysis.layers[layer]
    chosen = _pair_firings(analysis, layer, head, "end", "IO")
    if len(chosen) == 0:
        return Measurement(statistics={"end_to_io_firings": 0.0, **_task_statistics(analysis)},
                           distribution=np.zeros(0), details={"head": _label(layer, head), **_task_details(analysis)})
    use = view.firings.selected[chosen].mean(axis=0)
    vectors = np.flatnonzero(use >= min_share)
    if len(vectors) == 0:
        vectors = np.argsort(-use)[:1]
    right = view.svd.right(head)[:, vectors]
    x = np.concatenate([view.residual, np.ones((*view.residual.shape[:2], 1), dtype=np.float32)], axis=2)
    projected = (x @ right) @ right.T
    norms = np.linalg.norm(projected[..., :-1], axis=-1)
    upto = np.arange(x.shape[1])[None] <= analysis.positions["end"][:, None]
    keep = upto & analysis.mask
    ids, values = analysis.tokens[keep], norms[keep]
    unique, inverse = np.unique(ids, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    names = {int(t) for role in ("IO", "S1") for t in analysis.tokens[np.arange(len(analysis.tokens)), analysis.positions[role]]}
    is_name = np.array([int(t) in names for t in unique])
    if is_name.all() or not is_name.any():
        raise MechclaimsError("the IOI prompts need both name and non-name tokens for SAD-3")
    strings = source.token_strings(unique[np.argsort(-means)][:15])
    planted = _planted_directions(getattr(source, "known_circuit", None), analysis, layer, head, vectors)
    return Measurement(
        statistics={"auroc": auroc(means[is_name], means[~is_name]), "vectors": float(len(vectors)),
                    "end_to_io_firings": float(len(chosen)), **_task_statistics(analysis)},
        distribution=means,
        distribution_label=f"mean V-space signal norm of head {_label(layer, head)} per distinct token",
        details={"head": _label(layer, head), "singular_vectors": vectors.tolist(), "top_tokens": strings,
                 **({"planted_key_direction_selected": planted["key"]} if "key" in planted else {}),
                 **_task_details(analysis)},
    )


def task_firing_contrast(source: Source, inputs: tuple[Dataset, Dataset], threshold: float = 1.0,
                         heads: int = 3) -> Measurement:
    """SAD-6: the `heads` heads attending most from end to IO fire (source not position 0) more per prompt on
    IOI prompts than on generic text cut to the IOI prompts' length: per head, the IOI rate over the generic
    rate (the generic rate floored at one firing over all its prompts)."""
    ioi, generic = inputs
    task = _analysis(source, ioi, threshold, "singular")
    contrast = _analysis(source, generic, threshold, "singular", max_length=int(task.mask.sum(axis=1).max()))
    table = _end_to_io(task)
    ratios, rows = [], []
    for layer, head in _roots(task, heads):
        on_task = np.sum(task.layers[layer].firings.head == head) / len(task.tokens)
        off_task = max(np.sum(contrast.layers[layer].firings.head == head), 1) / len(contrast.tokens)
        ratios.append(on_task / off_task)
        rows.append({"head": _label(layer, head), "ioi_per_prompt": float(on_task),
                     "generic_per_prompt": float(off_task), "end_to_io": float(table[layer, head])})
    return Measurement(
        statistics={"min_ratio": float(min(ratios)), **_task_statistics(task)},
        distribution=np.array(ratios),
        distribution_label=f"IOI over generic-text firing rate, top {heads} end->IO heads",
        details={"heads": rows, **_task_details(task)},
    )


def named_head_firings(source: Source, inputs: Dataset, head: str, expected_firings: float, expected_mean_size: float,
                       threshold: float = 1.0) -> Measurement:
    """The paper's GPT-2 numbers for one head's end -> IO firings (e.g. (9,9): 201 firings, mean |S| 12.5):
    relative deviations |measured - paper| / paper of the firing count and the mean selected-set size."""
    layer, index = (int(part) for part in head.split("."))
    analysis = _analysis(source, inputs, threshold, "singular")
    if layer >= len(analysis.layers) or index >= source.capabilities.n_heads:
        raise MechclaimsError(f"head {head} does not exist in this model")
    chosen = _pair_firings(analysis, layer, index, "end", "IO")
    sizes = analysis.layers[layer].firings.size[chosen]
    mean_size = float(sizes.mean()) if len(sizes) else 0.0
    return Measurement(
        statistics={"firings_deviation": abs(len(chosen) - expected_firings) / expected_firings,
                    "mean_size_deviation": abs(mean_size - expected_mean_size) / expected_mean_size,
                    "firings": float(len(chosen)), "mean_size": mean_size, **_task_statistics(analysis)},
        details={"head": head, **_task_details(analysis)},
    )


def studied_head_firings(source: Source, inputs: Dataset, heads: str, expected: str, threshold: float = 1.0) -> Measurement:
    """The paper's firing counts (source not position 0, 256 prompts) of its studied heads: per head,
    |measured - paper| / paper, measured rescaled to 256 prompts. `heads` "8.6,4.11,..." and `expected`
    "517,3825,..." are comma-separated and aligned."""
    labels = heads.split(",")
    counts = [float(c) for c in expected.split(",")]
    if len(labels) != len(counts):
        raise MechclaimsError(f"{len(labels)} heads but {len(counts)} expected counts: align them")
    analysis = _analysis(source, inputs, threshold, "singular")
    scale = 256 / len(analysis.tokens)
    deviations, rows = [], []
    for label, paper in zip(labels, counts):
        layer, head = (int(part) for part in label.split("."))
        measured = np.sum(analysis.layers[layer].firings.head == head) * scale
        deviations.append(abs(measured - paper) / paper)
        rows.append({"head": label, "paper": paper, "measured": float(measured)})
    return Measurement(
        statistics={"max_deviation": float(max(deviations)), **_task_statistics(analysis)},
        distribution=np.array(deviations),
        distribution_label="per studied head: |firings - paper's| / paper's",
        details={"heads": rows, **_task_details(analysis)},
    )


@dataclass(frozen=True)
class Trace:
    """The traced circuit: `graph` has nodes "L.H@role" (a head at the destination role of its firing) and
    edges upstream -> downstream with `weight` (mean contribution over the prompts holding the edge), `count`
    (those prompts) and `side` (dest: through the query; src: through the key); `kept_fraction` is, per
    traced firing and side, the upstream heads kept over those available."""

    graph: nx.DiGraph
    kept_fraction: np.ndarray
    roots: tuple[str, ...]
    embedding_only_sides: int = 0


def _role(analysis: Analysis, prompt: int, position: int) -> str:
    return next((role for role in ("end", "IO", "S2", "S1") if analysis.positions[role][prompt] == position), "other")


def _node(analysis: Analysis, layer: int, head: int, prompt: int, position: int) -> str:
    return f"{_label(layer, head)}@{_role(analysis, prompt, position)}"


def _upstream_table(source: Source, analysis: Analysis, layer: int, vectors: np.ndarray, prompts: np.ndarray,
                    positions: np.ndarray) -> np.ndarray:
    """[F, layer * H]: what each head of every layer below `layer` writes along each firing's signal direction
    (augmented, [F, d+1]) at its position. The directions are taken in the residual's own units: the augmented
    coordinate dropped, divided by the norm's scale there, and centred where a LayerNorm centres (so upstream
    outputs need no centring)."""
    w = vectors[:, :-1] / analysis.layers[layer].scale[prompts, positions][:, None]
    if source.capabilities.norm == "layernorm":
        w = w - w.mean(axis=1, keepdims=True)
    w_o = source.weights("compat").W_O
    return np.concatenate([upstream_contributions(analysis.layers[up].z, w_o[up], w, prompts, positions)
                           for up in range(layer)], axis=1)


def _carried(analysis: Analysis, layer: int, table: np.ndarray, vectors: np.ndarray, prompts: np.ndarray,
             positions: np.ndarray) -> np.ndarray:
    """[F] bool: the upstream heads write at least UPSTREAM_FLOOR of each firing's signal x~ . w on this side."""
    x = analysis.layers[layer].residual[prompts, positions].astype(np.float64)
    signal = np.abs(np.einsum("fd,fd->f", x, vectors[:, :-1]) + vectors[:, -1])
    return np.abs(table).sum(axis=1) >= UPSTREAM_FLOOR * signal


def trace(source: Source, analysis: Analysis, roots: list[tuple[int, int]], share: float = TRACING_SHARE) -> Trace:
    """Trace from the roots' end -> IO firings down through every layer: for each traced firing, the upstream
    heads whose writes along its signal directions (signal_vectors) make up `share` of the total, per side;
    an upstream head that itself fires at that position is traced in turn (section 2.0). No bias term is
    credited to upstream heads (the authors' appended 1 credits the destination's own bias to every head)."""
    caps = source.capabilities
    traced: dict[int, set[int]] = {layer: set() for layer in range(caps.n_layers)}
    for layer, head in roots:
        traced[layer].update(_pair_firings(analysis, layer, head, "end", "IO").tolist())
    contributions: dict[tuple[str, str, str], dict[int, float]] = {}
    kept_fractions = []
    embedding_only = 0
    firing_at: list[dict[tuple[int, int, int], list[int]]] = []
    for view in analysis.layers:
        index: dict[tuple[int, int, int], list[int]] = {}
        for f, key in enumerate(zip(view.firings.prompt.tolist(), view.firings.head.tolist(), view.firings.dest.tolist())):
            index.setdefault(key, []).append(f)
        firing_at.append(index)
    for layer in range(caps.n_layers - 1, 0, -1):
        if not traced[layer]:
            continue
        view = analysis.layers[layer]
        rows = np.array(sorted(traced[layer]))
        sub = view.firings.take(rows)
        dest_vectors, src_vectors = signal_vectors(view.svd, view.residual, sub)
        for side, vectors, positions in (("dest", dest_vectors, sub.dest), ("src", src_vectors, sub.source)):
            table = _upstream_table(source, analysis, layer, vectors, sub.prompt, positions)
            carried = _carried(analysis, layer, table, vectors, sub.prompt, positions)
            embedding_only += int((~carried).sum())
            sizes, kept = selected_sets(table, share)
            kept &= carried[:, None]
            kept_fractions.append(sizes[carried] / table.shape[1])
            for f, column in zip(*np.nonzero(kept)):
                up, up_head = divmod(int(column), caps.n_heads)
                prompt, position = int(sub.prompt[f]), int(positions[f])
                key = (_node(analysis, up, up_head, prompt, position),
                       _node(analysis, layer, int(sub.head[f]), prompt, int(sub.dest[f])), side)
                per_prompt = contributions.setdefault(key, {})
                per_prompt[prompt] = per_prompt.get(prompt, 0.0) + float(table[f, column])
                traced[up].update(firing_at[up].get((prompt, up_head, position), ()))
    graph = nx.DiGraph()
    for (upstream, downstream, side), per_prompt in contributions.items():
        weight = float(np.mean(list(per_prompt.values())))
        if graph.has_edge(upstream, downstream):
            weight += graph.edges[upstream, downstream]["weight"]
        graph.add_edge(upstream, downstream, weight=weight, count=len(per_prompt), side=side)
    for node in graph.nodes:
        graph.nodes[node]["layer"] = int(node.split(".")[0])
    fractions = np.concatenate(kept_fractions) if kept_fractions else np.zeros(0)
    return Trace(graph, fractions, tuple(f"{_label(*root)}@end" for root in roots), embedding_only)


def _graph_details(graph: nx.DiGraph, planted: frozenset[tuple[str, str]] = frozenset()) -> dict[str, Any]:
    """The edges, strongest first (by prompts, then weight), as the table the report draws and lists (each marked
    `planted` when it is one of a planted model's known edges), and the graph's size."""
    edges = sorted(graph.edges(data=True), key=lambda e: (-e[2]["count"], -abs(e[2]["weight"])))[:GRAPH_EDGES_KEPT]
    return {"circuit_edges": [{"from": a, "to": b, "weight": d["weight"], "count": d["count"], "side": d["side"],
                               "planted": (a, b) in planted} for a, b, d in edges],
            "graph_size": f"{graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges"}


def _planted_scores(known: KnownCircuit | None, graph: nx.DiGraph) -> tuple[dict[str, float], dict[str, Any]]:
    """Against a planted model's known circuit: (statistics: the share of its edges the tracing found, recall, and of
    the found edges that are planted, precision; details: the planted edges it missed, what a twin broke, and the
    edge table with each edge marked `planted`). For other models, no statistics and the plain edge table."""
    if known is None:
        return {}, _graph_details(graph)
    found = set(graph.edges)
    hits = found & known.edges
    return ({"planted_edge_recall": len(hits) / len(known.edges),
             "planted_edge_precision": len(hits) / len(found) if found else 0.0},
            {"planted_edges_missed": sorted(f"{a} -> {b}" for a, b in known.edges - found),
             **({"planted_twin": known.note} if known.note else {}), **_graph_details(graph, known.edges)})


def traced_circuit_sparsity(source: Source, inputs: Dataset, threshold: float = 1.0, roots: int = 3) -> Measurement:
    """SAD-4 beyond GPT-2: from the `roots` heads attending most from end to IO, the fraction of upstream heads
    each traced firing keeps (per side) to explain 70% of its signal; the traced graph goes to the report. A side
    carried by the embeddings alone (UPSTREAM_FLOOR) is counted apart; `traced_sides` 0 means nothing to trace
    (the claim's gate). On a planted model, the found edges are scored against its known circuit."""
    analysis = _analysis(source, inputs, threshold, "singular")
    traced = trace(source, analysis, _roots(analysis, roots))
    planted_statistics, graph_details = _planted_scores(getattr(source, "known_circuit", None), traced.graph)
    kept = traced.kept_fraction
    return Measurement(
        statistics={**({"median_kept_fraction": float(np.median(kept))} if len(kept) else {}),
                    "traced_sides": float(len(kept)), "nodes": float(traced.graph.number_of_nodes()),
                    "edges": float(traced.graph.number_of_edges()), **_task_statistics(analysis),
                    **planted_statistics},
        distribution=kept,
        distribution_label="upstream heads kept / available, per traced firing and side",
        details={"roots": list(traced.roots), "embedding_only_sides": traced.embedding_only_sides,
                 **graph_details,
                 **_task_details(analysis)},
    )


def _top_incoming(graph: nx.DiGraph, node: str, k: int) -> list[str]:
    """The heads ("L.H") of the k heaviest edges into `node`."""
    edges = sorted(graph.in_edges(node, data=True), key=lambda e: -e[2]["weight"])[:k]
    return [a.split("@")[0] for a, _, _ in edges]


def gpt2_circuit_edges(source: Source, inputs: Dataset, threshold: float = 1.0) -> Measurement:
    """SAD-4 on GPT-2 small: from the name movers (9,6), (9,9), (10,0), three checks of the traced graph:
    (8,6) among the top two heads into (9,9)@end and into (9,6)@end, and at least two S-inhibition heads
    {7.3, 7.9, 8.6, 8.10} among the top five into (9,9)@end. The distribution holds 1 per check met."""
    analysis = _analysis(source, inputs, threshold, "singular")
    traced = trace(source, analysis, [(9, 6), (9, 9), (10, 0)])
    into_99, into_96 = _top_incoming(traced.graph, "9.9@end", 5), _top_incoming(traced.graph, "9.6@end", 2)
    checks = {"8.6 top-2 into 9.9@end": "8.6" in into_99[:2], "8.6 top-2 into 9.6@end": "8.6" in into_96,
              ">= 2 S-inhibition heads top-5 into 9.9@end": len({"7.3", "7.9", "8.6", "8.10"} & set(into_99)) >= 2}
    return Measurement(
        statistics={"checks_met": float(np.mean(list(checks.values()))), **_task_statistics(analysis)},
        distribution=np.array([float(v) for v in checks.values()]),
        distribution_label="catalogue checks of the traced GPT-2 circuit (1 = met)",
        details={"checks": checks, "into_9.9@end": into_99, "into_9.6@end": into_96,
                 **_graph_details(traced.graph), **_task_details(analysis)},
    )


def signal_ablation(source: Source, inputs: Dataset, threshold: float = 1.0,
                    control: Literal["traced", "random"] = "traced", seed: int = 0) -> Measurement:
    """SAD-5, type A (global): for the name mover's end -> IO firings, remove from each traced upstream head's
    output at IO (hook_attn_out of its layer) its projection on span(V[:, S]), the singular vectors the firing
    selected (`control` "random": as many drawn at random from the complement of S), centred where LayerNorm
    centres; statistic: mean change of the logit difference IO - S at end over its mean, on the prompts with an
    edge. Also the cosine of each intervened output with the original, per upstream head the edges removed and
    the mean change on the prompts they were removed from, `local_relative_change`: the same removal as the paper's
    type B (local), from the name mover's key input alone (_local_ablation), and the name mover's direct effect on
    the logit difference (_direct_effect: negative for a head that writes against IO). `edges` 0 (a name mover in
    layer 0, or no traced edge at IO) is the claims' gate: nothing to ablate."""
    analysis = _analysis(source, inputs, threshold, "singular")
    caps = source.capabilities
    layer, head = _name_mover(analysis)
    roots = _pair_firings(analysis, layer, head, "end", "IO")
    traced = _src_edges(source, analysis, layer, roots) if layer > 0 and len(roots) else []
    if not traced:
        why = "it is in layer 0" if layer == 0 else "no upstream head carries its end -> IO firings' key signal"
        return Measurement(statistics={"edges": 0.0, **_task_statistics(analysis)}, distribution=np.zeros(0),
                           details={"head": _label(layer, head), "nothing_to_ablate": why, **_task_details(analysis)})
    w_o = source.weights("compat").W_O
    view = analysis.layers[layer]
    rng = np.random.default_rng(seed)
    n, length = analysis.tokens.shape
    deltas: dict[int, np.ndarray] = {}
    key_deltas: dict[tuple[int, int], np.ndarray] = {}
    cosines, affected = [], set()
    removed_from: dict[str, set[int]] = {}
    for f, up, up_head in traced:
        prompt, io = int(view.firings.prompt[f]), int(view.firings.source[f])
        chosen = np.flatnonzero(view.firings.selected[f])
        if control == "random":
            chosen = rng.choice(np.flatnonzero(~view.firings.selected[f]), size=len(chosen), replace=False)
        basis = view.svd.right(head, view.svd.offsets[view.firings.offset[f]] if view.svd.offsets else 0)[:, chosen]
        output = analysis.layers[up].z[prompt, io, up_head].astype(np.float64) @ w_o[up, up_head]
        projected = (basis @ (basis.T @ np.append(output, 0.0)))[:-1]
        if caps.norm == "layernorm":
            projected -= projected.mean()
        deltas.setdefault(up, np.zeros((n, length, caps.d_model), dtype=np.float32))[prompt, io] -= projected
        key_deltas[prompt, io] = key_deltas.get((prompt, io), 0.0) - projected / view.scale[prompt, io]
        cosines.append(float(np.dot(output - projected, output)
                             / max(np.linalg.norm(output - projected) * np.linalg.norm(output), 1e-12)))
        affected.add(prompt)
        removed_from.setdefault(_label(up, up_head), set()).add(prompt)
    rows = np.array(sorted(affected))
    after = _logit_diff_with(source, analysis, rows, {f"blocks.{up}.hook_attn_out": delta[rows]
                                                      for up, delta in deltas.items()})
    before = analysis.logit_diff[rows]
    change = after - before
    by_prompt = dict(zip(rows.tolist(), change.tolist()))
    local = _local_ablation(source, inputs, analysis, layer, head, key_deltas, rows) - before
    direct = _direct_effect(source, analysis, layer, head)
    removed = [{"upstream": label, "edge": f"{label}@IO -> {_label(layer, head)}@end", "prompts": len(prompts),
                "mean_change": float(np.mean([by_prompt[p] for p in prompts]))}
               for label, prompts in sorted(removed_from.items(), key=lambda item: -len(item[1]))]
    return Measurement(
        statistics={"relative_change": float(change.mean() / before.mean()), "mean_change": float(change.mean()),
                    "median_change": float(np.median(change)), "share_lowered": float(np.mean(change < 0)),
                    "local_relative_change": float(local.mean() / before.mean()),
                    "local_share_lowered": float(np.mean(local < 0)),
                    "name_mover_direct_effect": float(direct.mean()),
                    "mean_cosine": float(np.mean(cosines)), "prompts": float(len(rows)), "edges": float(len(traced)),
                    **_task_statistics(analysis)},
        distribution=change,
        distribution_label=f"change of the logit difference per prompt ({control} singular vectors removed)",
        details={"head": _label(layer, head), "control": control, "edges_removed": removed,
                 "name_mover_writes": ("for IO over S" if direct.mean() > 0 else
                                       "against IO (a negative name mover: less attention to IO raises the difference)"),
                 "upstream_heads": sorted(removed_from), **_task_details(analysis)},
    )


def _direct_effect(source: Source, analysis: Analysis, layer: int, head: int) -> np.ndarray:
    """Per prompt [n]: what head `layer.head` writes at end along W_U[:, IO] - W_U[:, S] (compat weights, the final
    norm's gain applied where it is not folded; before the final norm's scale): positive when it moves IO's logit
    above S's."""
    weights = source.weights("compat")
    rows = np.arange(len(analysis.tokens))
    unembed = weights.W_U if weights.unembed_gain is None else weights.W_U * weights.unembed_gain[:, None]
    io_ids, s_ids = _name_ids(analysis.tokens, analysis.positions, rows)
    direction = (unembed[:, io_ids] - unembed[:, s_ids]).T
    written = analysis.layers[layer].z[rows, analysis.positions["end"], head] @ weights.W_O[layer, head]
    return np.einsum("nd,nd->n", written.astype(np.float64), direction.astype(np.float64))


def _omega_times(svd: OmegaSVD, head: int, offset: int, vector: np.ndarray) -> np.ndarray:
    """Omega_(offset) [vector; 0] for head `head`, through its thin factors."""
    o = svd.index(offset)
    return svd.left(head, offset) @ (svd.s[head, o] * (svd.right(head, offset).T @ np.append(vector, 0.0)))


def _logit_diff_with(source: Source, analysis: Analysis, prompts: np.ndarray,
                     additions: dict[str, np.ndarray]) -> np.ndarray:
    """logit(IO) - logit(S) at end [len(prompts)] on those prompts, with `additions` (hook -> [len(prompts), T, ...])
    added on the way."""
    acts = source.activations([analysis.texts[p] for p in prompts], [], prepend_bos=False, last_logits=True,
                              progress=False, additions=additions)
    io_ids, s_ids = _name_ids(analysis.tokens, analysis.positions, prompts)
    rows = np.arange(len(prompts))
    return acts.last_logits[rows, io_ids] - acts.last_logits[rows, s_ids]


def _local_ablation(source: Source, inputs: Dataset, analysis: Analysis, layer: int, head: int,
                    key_deltas: dict[tuple[int, int], np.ndarray], prompts: np.ndarray) -> np.ndarray:
    """The logit difference IO - S at end on `prompts` after the paper's type B intervention: each (prompt, IO)
    change of the normalised key input, delta~ [d], reaches head `layer.head` only. Its score from every
    destination i >= IO to IO moves by x~_i^T Omega_(IO - i) [delta~; 0] / sqrt(d_head) (the decomposition's own
    Omega), its attention row is renormalised (a'_ij ~ a_ij e^(ds_ij)), and the change of its output,
    sum_j (a'_ij - a_ij) v_j W_O (values from hook_v, raw W_O), is added to the layer's attention output. To first
    order: the norm's scale at IO is held."""
    caps = source.capabilities
    view = analysis.layers[layer]
    run = remembered(_PASSES, source_key(source, inputs, None), lambda: _forward_pass(source, inputs, None), PASSES_KEPT)
    pattern = run.acts.arrays[f"blocks.{layer}.attn.hook_pattern"][prompts, head].astype(np.float64)
    hook = f"blocks.{layer}.attn.hook_v"
    values = source.activations([analysis.texts[p] for p in prompts], [hook], prepend_bos=False,
                                progress=False).arrays[hook]
    values = values[:, :, key_heads(caps.n_heads, values.shape[2])[head]].astype(np.float64)
    w_o = source.weights("raw").W_O[layer, head].astype(np.float64)
    length = analysis.tokens.shape[1]
    added = np.zeros((len(prompts), length, caps.d_model), dtype=np.float32)
    row_of = {int(p): r for r, p in enumerate(prompts)}
    for (prompt, io), delta in key_deltas.items():
        r = row_of[prompt]
        targets = np.arange(io, int(analysis.positions["end"][prompt]) + 1)
        x = np.append(view.residual[prompt, targets].astype(np.float64), np.ones((len(targets), 1)), axis=1)
        offsets = io - targets if view.svd.offsets else np.zeros_like(targets)
        pulled = {int(o): _omega_times(view.svd, head, int(o), delta) for o in np.unique(offsets)}
        moved = np.array([x[t] @ pulled[int(o)] for t, o in enumerate(offsets)]) / np.sqrt(caps.d_head)
        before = pattern[r, targets, :values.shape[1]]
        after = before.copy()
        after[:, io] *= np.exp(moved)
        after /= after.sum(axis=1, keepdims=True)
        added[r, targets] = ((after - before) @ values[r]) @ w_o
    return _logit_diff_with(source, analysis, prompts, {f"blocks.{layer}.hook_attn_out": added})


def _src_edges(source: Source, analysis: Analysis, layer: int, rows: np.ndarray) -> list[tuple[int, int, int]]:
    """(firing, upstream layer, upstream head) of every source-side edge kept into the given firings of `layer`."""
    view = analysis.layers[layer]
    sub = view.firings.take(rows)
    _, src_vectors = signal_vectors(view.svd, view.residual, sub)
    table = _upstream_table(source, analysis, layer, src_vectors, sub.prompt, sub.source)
    _, kept = selected_sets(table, TRACING_SHARE)
    kept &= _carried(analysis, layer, table, src_vectors, sub.prompt, sub.source)[:, None]
    heads = source.capabilities.n_heads
    return [(int(rows[f]), *divmod(int(column), heads)) for f, column in zip(*np.nonzero(kept))]


__all__ = [
    "Analysis",
    "basis_specificity",
    "decomposition_identity",
    "firing_selected_sets",
    "gpt2_circuit_edges",
    "name_signal_auroc",
    "named_head_firings",
    "selected_sets",
    "signal_ablation",
    "singular_vector_reuse",
    "studied_head_firings",
    "task_firing_contrast",
    "trace",
    "traced_circuit_sparsity",
]
