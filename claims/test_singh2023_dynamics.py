"""Singh 2023, "Analyzing Transformer Dynamics as Movement through Embedding Space" (docs/claims_catalogue.md,
section 3; measurements in mechclaims/metrics/transformer_dynamics.py, arithmetic in embedding_space.py).

The paper states its theory in its abstract and gives no experiment with numbers, so every procedure here is
our operationalisation (the catalogue's) and every threshold is `suite` origin, fixed before measuring any
model. Its claims (1) and (2), that inference is a random walk over paths and that no learning happens in
context, are not falsifiable as stated, so they are not tested.

Data: the token categories of fixtures/token_categories (13 categories of 12-18 words written for this
project; per model, a word is kept when it is one token with its leading space, or bare for the bare-word
variant, and a category left with fewer than 5 words is dropped; the report lists both), and 128 paragraphs
of standard-library prose (the `generic_text` data set the sparse-attention claims also read), cut to 64
tokens.

Thresholds and their reasons:
- SINGH-1 (concept space): within-category pair cosines rank above between-category ones with AUROC >= 0.8
  (the catalogue's proposal: four in five comparisons, far from chance 0.5), on W_E raw and mean-centred (the
  vocabulary mean removed: the common direction of anisotropic embeddings adds to every cosine), on bare words,
  on W_U where it is not tied to W_E, and on the last block's output at the word in "The word is <word>"
  (centred over the words, which removes what the shared carrier adds). Nulls: the 95th percentile of 1000
  label permutations (the dependence between pairs that share a word is kept, which a binomial test would
  ignore), and the `random:` model for the raw embeddings and the residuals. A pass whose null passes too is
  TRIVIAL.
- SINGH-2 (context vector and token vectors): the cosine, not the dot product (the logit, for which the claim is
  a tautology), between the vector the unembedding reads at the last position and each token's unembedding
  vector ranks the top 1000 tokens as the model's log-probability does, with mean Spearman rho >= 0.7 (the
  catalogue's proposal: a strong monotone relation); and argmax cosine = argmax probability on at least half
  the texts (our reading of "reflects"). Null: W_U's token columns shuffled.
- SINGH-3 (encoding walk): the residual at the last position is closer to the tokens of its context than to
  absent tokens of the same document frequency, AUROC >= 0.7 (the catalogue's) averaged over the outputs of
  blocks 0-2 (the catalogue's "layers <= 2"; the claim is on early layers, and the report draws every layer).
  The last token itself is not counted. Null: the `random:` model.
- SINGH-4 (filtering and aggregation): exact by construction. The norms and MLPs have a zero Jacobian across
  positions: the cross-position share of their Jacobian norm is <= 0, exactly (autograd gives exact zeros
  where no path crosses positions, so any non-zero is a component that mixes). Attention aggregates: in every
  layer at least 1% of its Jacobian norm crosses positions (any value a trained or random head reaches; 0 only
  when the values carry nothing). No null: an architectural fact has no chance level.
- SINGH-5 (association bias): report-only. The paper hedges ("potentially redundant") and gives no number,
  so the claim records the loss change when every attention pattern is uniform causal averaging and when
  each text's patterns come from another text; its only verdict is that the measurement ran and the losses
  are finite.

Encoders (minilm-l6): SINGH-1 on W_E and on the residual at the word (bidirectional context changes nothing in
the procedure), and SINGH-4 (attention then crosses positions both ways). SINGH-2, SINGH-3 and SINGH-5 are about
next-token prediction from a causal context, so they need a decoder.

Regression tolerances: 0.01 for AUROCs, fractions and rho; 0 for SINGH-4's exact zero.
"""

from mechclaims.claim import Claim, Inputs, Threshold
from mechclaims.metrics import transformer_dynamics
from mechclaims.nulls import MeasurementNull

PAPER = "singh2023"
CATEGORIES = Inputs("token_categories")
TEXT = Inputs("generic_text", {"n": 128})
SHORT_TEXT = Inputs("forward_check")
PERMUTED_LABELS = MeasurementNull("labels", "permuted")
CLUSTERED = Threshold(statistic="auroc", op=">=", value=0.8, origin="suite", sweep=(0.5, 1.0, 0.05))


def _concept_claim(measured: str, statement: str, params: dict, null: object, rationale: str,
                   needs: frozenset = frozenset()) -> Claim:
    """One SINGH-1 claim: category AUROC >= 0.8 on the vectors `params` choose."""
    return Claim(
        id=f"{PAPER}.{measured}",
        paper=PAPER,
        section="SINGH-1 (concept space)",
        statement=statement,
        measure=transformer_dynamics.category_clustering,
        params=params,
        inputs=CATEGORIES,
        needs=needs,
        threshold=CLUSTERED,
        null=null,
        rationale=rationale,
    )


def _context_vector_claim(measured: str, statement: str, statistic: str, value: float, rationale: str) -> Claim:
    """One SINGH-2 claim on the context vector at the last position; null: W_U's token columns shuffled."""
    return Claim(
        id=f"{PAPER}.{measured}",
        paper=PAPER,
        section="SINGH-2 (context vector)",
        statement=statement,
        measure=transformer_dynamics.context_vector_proximity,
        inputs=TEXT,
        needs=frozenset({"decoder"}),
        threshold=Threshold(statistic=statistic, op=">=", value=value, origin="suite", sweep=(0.0, 1.0, 0.1)),
        null=MeasurementNull("unembedding", "shuffled"),
        rationale=rationale + " Null: W_U's columns shuffled.",
    )


def _jacobian_claim(measured: str, section: str, statement: str, threshold: Threshold, rationale: str) -> Claim:
    """One SINGH-4 claim on the cross-position Jacobians; exact, so no null and no tolerance for the zero."""
    return Claim(
        id=f"{PAPER}.{measured}",
        paper=PAPER,
        section=section,
        statement=statement,
        measure=transformer_dynamics.cross_position_jacobians,
        inputs=SHORT_TEXT,
        threshold=threshold,
        null=None,
        tolerance=0.0 if threshold.value == 0.0 else 0.01,
        rationale=rationale,
    )


CLAIMS = [
    _concept_claim("embeddings_cluster_by_category", "Token embeddings of semantically related words are closer "
                   "than those of unrelated words: W_E rows cluster by category.", {}, "random_model",
                   "AUROC of within- vs between-category cosines of W_E rows (words with a leading space). Null: "
                   "the random: model."),
    _concept_claim("embeddings_beat_permuted_categories", "The category clustering of W_E is beyond what the same "
                   "cosines give under shuffled category labels.", {}, PERMUTED_LABELS,
                   "The same AUROC; null: the 95th percentile over 1000 label permutations."),
    _concept_claim("centred_embeddings_cluster_by_category", "The clustering survives removing the vocabulary's "
                   "mean embedding.", {"centred": True}, PERMUTED_LABELS,
                   "AUROC on W_E rows less the vocabulary mean; null: label permutations."),
    _concept_claim("bare_word_embeddings_cluster_by_category", "Words without a leading space cluster by category "
                   "too.", {"variant": "bare"}, PERMUTED_LABELS,
                   "AUROC on the W_E rows of the words' bare tokens (often fewer words); null: label permutations."),
    _concept_claim("unembeddings_cluster_by_category", "Unembedding vectors of related words are closer than those "
                   "of unrelated words.", {"vectors": "unembedding"}, PERMUTED_LABELS,
                   "AUROC on W_U columns; N/A where W_U is tied to W_E. Null: label permutations.",
                   needs=frozenset({"untied"})),
    _concept_claim("final_residuals_cluster_by_category", "In context, the model's last residual at a word keeps "
                   "its category: 'The word is X' ends closer for related X.", {"vectors": "final_residual",
                   "centred": True}, "random_model",
                   "AUROC on the last block's output at X, centred over the words; null: the random: model."),
    _context_vector_claim("context_vector_cosine_tracks_probability", "The context vector's proximity (cosine) to "
                          "a token's vector reflects the token's conditional probability.", "spearman_mean", 0.7,
                          "Mean over 128 texts of Spearman's rho between cos(h, W_U[:, t]) and log p(t) over the top "
                          "1000 tokens at the last position."),
    _context_vector_claim("context_vector_nearest_token_is_most_probable", "The token vector nearest (by cosine) to "
                          "the context vector is the most probable next token.", "argmax_agreement", 0.5,
                          "Fraction of texts whose argmax-cosine token is the argmax-probability token."),
    Claim(
        id=f"{PAPER}.early_residual_near_context_tokens",
        paper=PAPER,
        section="SINGH-3 (encoding walk)",
        statement="Context vectors are composed by aggregating the features of the sequence's tokens: early "
        "residuals lie closer to the context's tokens than to absent tokens.",
        measure=transformer_dynamics.context_token_proximity,
        inputs=TEXT,
        needs=frozenset({"decoder"}),
        threshold=Threshold(statistic="early_auroc", op=">=", value=0.7, origin="suite", sweep=(0.5, 1.0, 0.05)),
        null="random_model",
        rationale="AUROC of cos(last residual, E[t]), context tokens vs frequency-matched absent ones, mean over "
        "the outputs of blocks 0-2 (curve: every layer). Null: the random: model.",
    ),
    _jacobian_claim("norms_and_mlps_filter_per_position", "SINGH-4 (filtering)", "Filtering is data-independent "
                    "and per position: the norms and MLPs have a zero Jacobian across positions.",
                    Threshold(statistic="per_position_max_share", op="<=", value=0.0, origin="suite"),
                    "Largest share of a norm's or MLP's Jacobian norm that crosses positions, by autograd on the "
                    "first forward-check sentence; exactly 0 for a per-position map."),
    _jacobian_claim("attention_aggregates_across_positions", "SINGH-4 (aggregation)", "Aggregation is "
                    "data-dependent mixing across positions: every layer's attention has a non-zero Jacobian "
                    "across positions.", Threshold(statistic="attention_min_share", op=">=", value=0.01, origin="suite"),
                    "Smallest share, over layers, of attention's Jacobian norm (from the block input) that crosses "
                    "positions; the table lists every component and layer."),
    Claim(
        id=f"{PAPER}.attention_pattern_replacement_loss",
        paper=PAPER,
        section="SINGH-5 (association bias, report-only)",
        statement="Attention contributes a potentially redundant association bias: the report shows the loss "
        "change when attention patterns are made uniform or taken from another context.",
        measure=transformer_dynamics.attention_pattern_replacement,
        inputs=TEXT,
        needs=frozenset({"decoder"}),
        threshold=Threshold(statistic="losses_finite", op=">=", value=1.0, origin="suite"),
        null=None,
        rationale="Report-only: the verdict says only that the three losses were measured and are finite; "
        "read delta_uniform and delta_frozen (nats per token) in the statistics.",
    ),
]
