"""CS-GPT2 (docs/claims_catalogue.md section 4; McDougall et al. 2023, "Copy Suppression"): from the weights alone, how
often each head's OV circuit suppresses the token it attends to. For a seeded sample S of tokens,
OV_h = W_E[S] W_V^h W_O^h W_U[:, S]; a token is self-suppressed when its own logit is among the `bottom` smallest
of its row (list_sorting.self_suppressed). Raw weights, no effective embedding: the catalogue's weights-only test.
"""

from __future__ import annotations

import numpy as np

from mechclaims.errors import MechclaimsError
from mechclaims.measurement import Measurement, Source
from mechclaims.metrics.list_sorting import self_suppressed

SAMPLE_SEED = 0
TOP_HEADS = 10


def copy_suppression_heads(source: Source, sample: int = 2000, bottom: int = 10, head: str = "") -> Measurement:
    """Every head's fraction of sampled tokens it self-suppresses (distribution, one per head, named `layer.head`).
    Statistics: the largest fraction and, when `head` names one ("10.7"), that head's fraction and its rank among
    the heads (1: the most copy-suppressing). Chance level: bottom / sample."""
    weights = source.weights("raw")
    vocabulary = weights.W_E.shape[0]
    tokens = np.sort(np.random.default_rng(SAMPLE_SEED).choice(vocabulary, size=min(sample, vocabulary), replace=False))
    embedded, unembedded = weights.W_E[tokens], weights.W_U[:, tokens]
    layers, heads = weights.W_Q.shape[:2]
    group = heads // weights.W_V.shape[1]
    fractions = {}
    for layer in range(layers):
        for h in range(heads):
            rows = embedded @ weights.W_V[layer, h // group]
            columns = weights.W_O[layer, h] @ unembedded
            fractions[f"{layer}.{h}"] = float(np.mean(self_suppressed(rows, columns, bottom)))
    if head and head not in fractions:
        raise MechclaimsError(f"head {head!r} is not one of this model's {layers} x {heads} heads: write it "
                              f"<layer>.<head>, e.g. {layers - 1}.0")
    ranked = sorted(fractions, key=lambda name: -fractions[name])
    statistics = {"max_fraction": fractions[ranked[0]], "chance": bottom / len(tokens)}
    if head:
        statistics |= {"head_fraction": fractions[head], "head_rank": float(ranked.index(head) + 1)}
    return Measurement(
        distribution=np.array(list(fractions.values())),
        distribution_label=f"fraction of {len(tokens)} sampled tokens a head ranks in the bottom {bottom} of its "
                           "own row",
        statistics=statistics,
        details={"most_copy_suppressing_heads": [{"head": name, "fraction": round(fractions[name], 4)}
                                                 for name in ranked[:TOP_HEADS]]},
    )
