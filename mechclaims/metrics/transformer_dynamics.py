"""The transformer-dynamics claims' measurements (Singh 2023, docs/claims_catalogue.md section 3): a Source's weights
and forward passes in, one Measurement per claim out; the arithmetic is in embedding_space.

The natural-text claims (SINGH-2, SINGH-3) read one forward pass per model and data set, shared within the
process (`_text_pass`): the residual at each text's last position after every block, and the vector the
unembedding reads there with the logits it gives.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mechclaims.datasets.base import Dataset
from mechclaims.errors import MechclaimsError
from mechclaims.measurement import Curve, Measurement, Source
from mechclaims.memo import remembered, source_key
from mechclaims.metrics.embedding_space import (
    category_separation,
    context_token_auroc,
    cosine_probability_agreement,
    frequency_matched_absent,
    position_mixing,
    uniform_causal_patterns,
)

MIN_CATEGORY_WORDS = 5
"""A category left with fewer single-token words on a model is dropped from SINGH-1 there (with a note)."""
PASSES_KEPT = 2
SHUFFLE_SEED = 0
CONTEXT_HOOK = "unembed.hook_in"
PER_POSITION = ("ln1", "ln2", "mlp", "ln_final")

Vectors = Literal["embedding", "unembedding", "final_residual"]


@dataclass(frozen=True)
class _KeptWords:
    """The words of the token-category data set kept on one model: their rows in the data set, token ids and
    category indices (into `categories`), and a table of what was dropped per category."""

    rows: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    categories: tuple[str, ...]
    table: list[dict[str, Any]]


def _kept_words(source: Source, dataset: Dataset, variant: Literal["space", "bare"]) -> _KeptWords:
    """Words that are one token on this model (with a leading space, or bare); categories with fewer than
    MIN_CATEGORY_WORDS such words are dropped."""
    prefix = " " if variant == "space" else ""
    by_category: dict[str, list[tuple[int, int]]] = {}
    dropped: dict[str, list[str]] = {}
    for row, meta in enumerate(dataset.metadata):
        token = source.single_token_id(prefix + str(meta["word"]))
        by_category.setdefault(str(meta["category"]), [])
        if token is None:
            dropped.setdefault(str(meta["category"]), []).append(str(meta["word"]))
        else:
            by_category[str(meta["category"])].append((row, token))
    kept = {c: found for c, found in by_category.items() if len(found) >= MIN_CATEGORY_WORDS}
    table = [{"category": c, "kept": len(found), "dropped words": ", ".join(dropped.get(c, [])) or "none",
              "note": "" if c in kept else f"category dropped: fewer than {MIN_CATEGORY_WORDS} single-token words"}
             for c, found in by_category.items()]
    if len(kept) < 2:
        raise MechclaimsError(f"only {len(kept)} token categories keep {MIN_CATEGORY_WORDS} or more single-token "
                              "words on this model: the concept-space claim needs two")
    categories = tuple(kept)
    pairs = [(row, token, k) for k, c in enumerate(categories) for row, token in kept[c]]
    rows, ids, labels = (np.asarray(column) for column in zip(*pairs))
    return _KeptWords(rows, ids, labels, categories, table)


def _final_residuals(source: Source, dataset: Dataset, words: _KeptWords) -> np.ndarray:
    """The last block's output at each kept word's token in its carrier sentence: [n_words, d]."""
    hook = f"blocks.{source.capabilities.n_layers - 1}.hook_resid_post"
    acts = source.activations([dataset.texts[r] for r in words.rows], [hook], progress=False)
    out = []
    for line, real, token, row in zip(acts.tokens, acts.mask, words.ids, words.rows):
        where = np.flatnonzero((line == token) & real)
        if len(where) == 0:
            raise MechclaimsError(f"carrier sentence {dataset.texts[row]!r} does not hold its word as one token "
                                  "on this model: the word filter and the tokenizer disagree")
        out.append(where[-1])
    return acts.arrays[hook][np.arange(len(out)), np.asarray(out)]


def category_clustering(source: Source, inputs: Dataset, vectors: Vectors = "embedding", centred: bool = False,
                        variant: Literal["space", "bare"] = "space", labels: Literal["true", "permuted"] = "true",
                        permutations: int = 1000) -> Measurement:
    """SINGH-1: AUROC of within- vs between-category cosines of the kept words' vectors: embedding rows (W_E),
    unembedding columns (W_U), or the last block's output at the word in "The word is <word>". `centred`
    subtracts the mean over the whole vocabulary (W_E, W_U) or over the kept words (residuals) first.

    labels="permuted" is the null: its `auroc` is the 95th percentile of the AUROC under `permutations` random
    permutations of the category labels, so a real AUROC that the shuffled labels also reach is TRIVIAL."""
    if vectors == "final_residual" and variant != "space":
        raise MechclaimsError("the carrier sentence holds the word with its leading space: use variant='space'")
    words = _kept_words(source, inputs, variant)
    if vectors == "final_residual":
        matrix = _final_residuals(source, inputs, words).astype(np.float64)
        chosen = matrix - matrix.mean(axis=0) if centred else matrix
    else:
        weights = source.weights("raw")
        table = np.asarray(weights.W_E if vectors == "embedding" else weights.W_U.T, dtype=np.float64)
        chosen = (table - table.mean(axis=0) if centred else table)[words.ids]
    separation = category_separation(chosen, words.labels, permutations)
    q95 = float(np.quantile(separation.permuted, 0.95))
    statistics = {"auroc": separation.auroc, "mean_within": separation.mean_within,
                  "mean_between": separation.mean_between, "permutation_q95": q95,
                  "permutation_p": separation.permutation_p, "words": float(len(words.ids)),
                  "categories": float(len(words.categories))}
    if labels == "permuted":
        statistics = {"auroc": q95, "permutation_mean": float(separation.permuted.mean())}
    details = {"words_per_category": words.table,
               "category_cosines": {"categories": list(words.categories),
                                    "matrix": np.round(separation.category_cosines, 4).tolist()}}
    return Measurement(statistics=statistics, details=details)


@dataclass(frozen=True)
class _TextPass:
    """One forward pass of natural text: residuals at each text's last position ([n, d] per stage; stage 0 the
    embeddings, stage l the output of block l - 1), the vector the unembedding reads there [n, d], its
    logits [n, V], and the token ids and mask [n, T]."""

    residuals: list[np.ndarray]
    contexts: np.ndarray
    logits: np.ndarray
    tokens: np.ndarray
    mask: np.ndarray


_PASSES: OrderedDict[tuple[Any, ...], _TextPass] = OrderedDict()


def _text_pass(source: Source, dataset: Dataset, max_length: int) -> _TextPass:
    """The data set through the source once per process (SINGH-2's model and null, and SINGH-3, read it)."""
    def run() -> _TextPass:
        layers = source.capabilities.n_layers
        stages = ["blocks.0.hook_resid_pre", *(f"blocks.{layer}.hook_resid_post" for layer in range(layers))]
        acts = source.activations(list(dataset.texts), [*stages, CONTEXT_HOOK], max_length=max_length,
                                  last_logits=True, progress=False)
        return _TextPass([acts.last(name) for name in stages], acts.last(CONTEXT_HOOK), acts.last_logits,
                         acts.tokens, acts.mask)

    return remembered(_PASSES, source_key(source, dataset, max_length), run, PASSES_KEPT)


def context_vector_proximity(source: Source, inputs: Dataset, top_k: int = 1000,
                             unembedding: Literal["model", "shuffled"] = "model", max_length: int = 64) -> Measurement:
    """SINGH-2: at each text's last position, Spearman's rho between cos(h, W_U[:, t]) and the model's
    log-probability of t over its top_k tokens (h: what the unembedding reads, the final normalised residual),
    and whether argmax cosine = argmax probability. unembedding="shuffled" is the null: W_U's token columns
    permuted (seeded), the probabilities still the model's."""
    run = _text_pass(source, inputs, max_length)
    table = np.asarray(source.weights("raw").W_U)
    if unembedding == "shuffled":
        table = table[:, np.random.default_rng(SHUFFLE_SEED).permutation(table.shape[1])]
    agreement = cosine_probability_agreement(run.contexts, table, run.logits, top_k)
    return Measurement(
        statistics={"spearman_mean": float(agreement.spearman.mean()),
                    "spearman_median": float(np.median(agreement.spearman)),
                    "argmax_agreement": float(agreement.argmax_agrees.mean()), "texts": float(len(run.contexts))},
        distribution=agreement.spearman,
        distribution_label=f"Spearman rho, cosine vs log-probability over the top {top_k} tokens (per text)",
    )


def context_token_proximity(source: Source, inputs: Dataset, early_layers: int = 3, seed: int = 0,
                            max_length: int = 64) -> Measurement:
    """SINGH-3: per stage (0 = embeddings, l = after block l - 1), the AUROC of cos(residual at the last position,
    E[t]) for the text's tokens against frequency-matched absent tokens (document frequency over the data set's
    own tokens). The last token itself, and special tokens, are not counted as present: the last position holds
    the last token's own embedding, which says nothing of aggregation. Residuals are LN-normalised (the
    catalogue's procedure): centred over d_model in a LayerNorm model, as the cosine is blind to scale (so an
    RMSNorm model's residuals are read as they are). `early_auroc` is the mean over the outputs of the first
    `early_layers` blocks."""
    run = _text_pass(source, inputs, max_length)
    specials = np.asarray(getattr(getattr(source, "tokenizer", None), "all_special_ids", []) or [], dtype=np.int64)
    contexts = [line[real] for line, real in zip(run.tokens, run.mask)]
    present = [np.setdiff1d(np.unique(line[:-1]), np.append(specials, line[-1])) for line in contexts]
    if not any(len(p) for p in present):
        raise MechclaimsError("the texts hold no tokens but special ones on this model (its tokenizer does not cover "
                              "their words), so there is no context to be near")
    absent = frequency_matched_absent(present, contexts, seed)
    embeddings = np.asarray(source.weights("raw").W_E)
    centre = source.capabilities.norm == "layernorm"
    curve = [context_token_auroc(stage - stage.mean(axis=1, keepdims=True) if centre else stage, embeddings, present,
                                 absent) for stage in run.residuals]
    stages = list(range(len(curve)))
    return Measurement(
        statistics={"early_auroc": float(np.mean(curve[1 : early_layers + 1])), "embedding_auroc": curve[0],
                    "final_auroc": curve[-1], "pairs": float(sum(len(p) for p in present))},
        curves={"auroc_by_layer": Curve(x=stages, y=curve, x_label="layer (0 = embeddings; l = after block l - 1)",
                                        y_label="AUROC, context vs absent tokens")},
    )


def cross_position_jacobians(source: Source, inputs: Dataset, probes: int = 2) -> Measurement:
    """SINGH-4 on the data set's first text: per component and layer, the share of its Jacobian norm that crosses
    positions (embedding_space.position_mixing). `per_position_max_share`: the largest share over the norms and
    MLPs; `attention_min_share`: the smallest over the layers' attention."""
    norms = source.position_jacobians(inputs.texts[0], probes=probes)
    rows, shares = [], {}
    for component, by_layer in norms.items():
        mixing = position_mixing(by_layer)
        shares[component] = mixing.share
        rows += [{"component": component, "layer": layer, "same-position norm": float(mixing.same[layer]),
                  "cross-position norm": float(mixing.cross[layer]), "cross share": float(mixing.share[layer])}
                 for layer in range(len(by_layer))]
    per_position = [shares[c] for c in PER_POSITION if c in shares]
    if "attn" not in shares or not per_position:
        raise MechclaimsError("this bridge exposes no attention or no per-position component to read the Jacobian of")
    return Measurement(
        statistics={"per_position_max_share": float(np.max(np.concatenate(per_position))),
                    "attention_min_share": float(shares["attn"].min()),
                    "attention_mean_share": float(shares["attn"].mean()),
                    "positions": float(norms["attn"].shape[1])},
        details={"jacobian_norms": rows},
    )


def attention_pattern_replacement(source: Source, inputs: Dataset, length: int = 32) -> Measurement:
    """SINGH-5 (report-only): the mean next-token loss of the texts cut to `length` tokens (shorter ones are
    left out), as the model runs, with every attention pattern replaced by uniform causal averaging, and with
    each text's patterns taken from the text before it ("frozen from another context")."""
    caps = source.capabilities
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(caps.n_layers)]
    first = source.activations(list(inputs.texts), hooks, max_length=length, next_token_losses=True, progress=False)
    keep = np.flatnonzero(first.lengths == length)
    if len(keep) < 2:
        raise MechclaimsError(f"fewer than two texts reach {length} tokens on this model: lower `length`")
    texts = [inputs.texts[i] for i in keep]
    predicted = first.predicted[keep]
    loss = float(first.losses[keep][predicted].mean())
    uniform = uniform_causal_patterns(first.mask[keep], first.arrays[hooks[0]].shape[1])
    edited = {}
    for name, replacements in (("uniform", {h: uniform for h in hooks}),
                               ("frozen", {h: np.roll(first.arrays[h][keep], 1, axis=0) for h in hooks})):
        run = source.activations(texts, [], max_length=length, next_token_losses=True, replacements=replacements,
                                 progress=False)
        edited[name] = float(run.losses[predicted].mean())
    if edited["uniform"] == loss:
        raise MechclaimsError("replacing every attention pattern left the loss exactly unchanged: this bridge "
                              "discards pattern edits, or no head writes anything that depends on its pattern")
    finite = all(np.isfinite(v) for v in (loss, *edited.values()))
    return Measurement(statistics={
        "losses_finite": float(finite), "loss": loss, "loss_uniform": edited["uniform"],
        "loss_frozen": edited["frozen"], "delta_uniform": edited["uniform"] - loss,
        "delta_frozen": edited["frozen"] - loss, "texts": float(len(keep))})
