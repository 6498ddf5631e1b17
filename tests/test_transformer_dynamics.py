"""Singh 2023's dynamics claims: the token-category data, the pure arithmetic against brute-force oracles, the
forward-pass tools they add (pattern replacement, next-token losses, position Jacobians), and every claim's
control through the engine."""

from __future__ import annotations

import itertools
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mechclaims.cache import MeasurementCache
from mechclaims.claim import Verdict
from mechclaims.datasets import FIXTURES_ENV, load_dataset
from mechclaims.engine import Settings, evaluate
from mechclaims.errors import MechclaimsError
from mechclaims.metrics.embedding_space import (
    category_separation,
    context_token_auroc,
    cosine_probability_agreement,
    frequency_matched_absent,
    position_mixing,
    uniform_causal_patterns,
)
from mechclaims.models import Model

from helpers import CLAIMS_DIR, claim_by_id

REPO_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _brute_auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(positive > negative) + P(tie) / 2 over every pair, by counting."""
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positive, negative)]
    return float(np.mean(wins))


def test_token_categories_hold_ten_categories_of_twelve_words_in_carrier_sentences() -> None:
    dataset = load_dataset("token_categories")
    categories = {row["category"] for row in dataset.metadata}
    assert len(categories) >= 10
    for category in categories:
        assert sum(row["category"] == category for row in dataset.metadata) >= 12
    assert all(text == f"The word is {row['word']}" for text, row in zip(dataset.texts, dataset.metadata))
    assert len({row["word"] for row in dataset.metadata}) == len(dataset)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda folder: (folder / "animals.txt").write_text("dog\nJanuary\n" + "\n".join(f"w{i}" for i in range(12))),
     "'January' is in both"),
    (lambda folder: (folder / "animals.txt").write_text("dog\ncat\ndog\n"), "fewer than 12"),
    (lambda folder: [path.unlink() for path in sorted(folder.glob("*.txt"))[:4]], "fewer than 10"),
])
def test_token_category_mistakes_are_one_line_errors(edit, message: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "fixtures"
    shutil.copytree(REPO_FIXTURES, copy)
    monkeypatch.setenv(FIXTURES_ENV, str(copy))
    edit(copy / "token_categories")
    with pytest.raises(MechclaimsError, match=message):
        load_dataset("token_categories")


def test_category_separation_matches_counting_every_pair() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), [3, 5, 4, 6])
    vectors = rng.standard_normal((len(labels), 8)) + 0.8 * rng.standard_normal((4, 8))[labels]
    found = category_separation(vectors, labels, permutations=50, seed=1)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    within, between = [], []
    for i, j in itertools.combinations(range(len(labels)), 2):
        (within if labels[i] == labels[j] else between).append(float(unit[i] @ unit[j]))
    assert found.auroc == pytest.approx(_brute_auroc(np.array(within), np.array(between)))
    assert found.mean_within == pytest.approx(np.mean(within))
    expected = np.array([[np.mean([unit[i] @ unit[j] for i in np.flatnonzero(labels == a) for j in np.flatnonzero(labels == b)
                                   if i != j]) for b in range(4)] for a in range(4)])
    np.testing.assert_allclose(found.category_cosines, expected, atol=1e-12)


def test_each_permuted_auroc_is_the_auroc_of_some_relabelling() -> None:
    """The rank-sum shortcut gives what counting gives for the same permuted labels (seeded: replayed here)."""
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(3), 4)
    vectors = rng.standard_normal((12, 5))
    found = category_separation(vectors, labels, permutations=5, seed=7)
    replay = np.random.default_rng(7)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for k in range(5):
        permuted = labels[replay.permutation(12)]
        within, between = [], []
        for i, j in itertools.combinations(range(12), 2):
            (within if permuted[i] == permuted[j] else between).append(float(unit[i] @ unit[j]))
        assert found.permuted[k] == pytest.approx(_brute_auroc(np.array(within), np.array(between)))


def test_tight_clusters_separate_and_beat_every_permutation() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 6)
    vectors = rng.standard_normal((5, 16))[labels] + 0.05 * rng.standard_normal((30, 16))
    found = category_separation(vectors, labels, permutations=200)
    assert found.auroc == 1.0 and found.permuted.max() < 0.8 and found.permutation_p == pytest.approx(1 / 201)


def test_cosine_probability_agreement_matches_scipy_and_is_exact_for_equal_norms() -> None:
    rng = np.random.default_rng(0)
    contexts, unembedding = rng.standard_normal((6, 8)), rng.standard_normal((8, 50)) * rng.lognormal(size=50)
    logits = contexts @ unembedding + rng.standard_normal(50)
    found = cosine_probability_agreement(contexts, unembedding, logits, top_k=20)
    cosines = (contexts / np.linalg.norm(contexts, axis=1, keepdims=True)) @ (unembedding / np.linalg.norm(unembedding, axis=0))
    for i in range(6):
        top = np.argsort(-logits[i])[:20]
        assert found.spearman[i] == pytest.approx(spearmanr(cosines[i, top], logits[i, top]).statistic)
        assert found.argmax_agrees[i] == (np.argmax(cosines[i]) == np.argmax(logits[i]))
    equal = unembedding / np.linalg.norm(unembedding, axis=0)
    exact = cosine_probability_agreement(contexts, equal, contexts @ equal, top_k=20)
    np.testing.assert_allclose(exact.spearman, 1.0)
    assert exact.argmax_agrees.all()


def test_absent_tokens_are_absent_and_the_nearest_in_frequency() -> None:
    contexts = [np.array([1, 2, 3, 4]), np.array([1, 2, 5]), np.array([1, 6, 7, 3]), np.array([8, 2, 9])]
    present = [c[:-1] for c in contexts]
    chosen = frequency_matched_absent(present, contexts, seed=3)
    frequency = {t: sum(t in c for c in contexts) for t in range(1, 10)}
    for tokens, context, picks in zip(present, contexts, chosen):
        candidates = [t for t in frequency if t not in context]
        for token, pick in zip(tokens, picks):
            assert pick not in context
            assert abs(frequency[pick] - frequency[token]) == min(abs(frequency[c] - frequency[token]) for c in candidates)


def test_context_token_auroc_pools_over_texts() -> None:
    embeddings = np.eye(4)
    residuals = np.array([[1.0, 0.2, 0, 0], [0, 0, 1.0, 0.1]])
    present, absent = [np.array([0]), np.array([2])], [np.array([1]), np.array([3])]
    assert context_token_auroc(residuals, embeddings, present, absent) == 1.0
    assert context_token_auroc(residuals, embeddings, absent, present) == 0.0


def test_position_mixing_and_uniform_patterns_against_loops() -> None:
    norms = np.arange(2 * 3 * 3, dtype=float).reshape(2, 3, 3)
    mixing = position_mixing(norms)
    for layer in range(2):
        same = np.sqrt(sum(norms[layer, i, i] ** 2 for i in range(3)))
        cross = np.sqrt(sum(norms[layer, i, j] ** 2 for i in range(3) for j in range(3) if i != j))
        assert mixing.same[layer] == pytest.approx(same) and mixing.cross[layer] == pytest.approx(cross)
    assert position_mixing(np.zeros((1, 2, 2))).share[0] == 0.0
    mask = np.array([[True, True, True], [True, True, False]])
    patterns = uniform_causal_patterns(mask, heads=2)
    assert patterns.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(patterns[0, 1], [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(patterns[1, 0], [[1, 0, 0], [0.5, 0.5, 0], [0, 0, 0]])


def test_next_token_losses_match_the_logits_of_each_text_run_alone(tiny_gpt2_model: Model) -> None:
    texts = ["word3 word9 word4 word4 word12", "word7 word2"]
    acts = tiny_gpt2_model.activations(texts, [], next_token_losses=True, progress=False)
    for i, text in enumerate(texts):
        tokens = tiny_gpt2_model.bridge.to_tokens(text, move_to_device=False)
        with torch.no_grad():
            logprobs = torch.log_softmax(tiny_gpt2_model.bridge(tokens)[0].double(), dim=-1)
        expected = [-float(logprobs[t, tokens[0, t + 1]]) for t in range(tokens.shape[1] - 1)]
        np.testing.assert_allclose(acts.losses[i][acts.predicted[i]], expected, rtol=1e-4)
    assert not acts.predicted[1, acts.lengths[1] - 1:].any() and (acts.losses[1, acts.lengths[1] - 1:] == 0).all()


def test_replacing_patterns_with_their_own_values_changes_nothing_and_uniform_ones_do(tiny_gpt2_model: Model) -> None:
    texts = ["word3 word9 word4 word4 word12", "word7 word2 word5"]
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(2)]
    first = tiny_gpt2_model.activations(texts, hooks, next_token_losses=True, progress=False)
    same = tiny_gpt2_model.activations(texts, [], next_token_losses=True, progress=False,
                                       replacements={h: first.arrays[h] for h in hooks})
    np.testing.assert_allclose(same.losses, first.losses, atol=1e-5)
    uniform = uniform_causal_patterns(first.mask, first.arrays[hooks[0]].shape[1])
    edited = tiny_gpt2_model.activations(texts, [], next_token_losses=True, progress=False,
                                         replacements={h: uniform for h in hooks})
    assert np.abs(edited.losses - first.losses)[first.predicted].max() > 1e-3
    with pytest.raises(MechclaimsError, match="replacement for hook"):
        tiny_gpt2_model.activations(texts, [], progress=False, replacements={hooks[0]: uniform[:, :, :2, :2]})


def test_position_jacobians_are_zero_across_positions_except_causal_attention(tiny_gpt2_model: Model) -> None:
    norms = tiny_gpt2_model.position_jacobians("word3 word9 word4 word4 word12", probes=2)
    assert set(norms) == {"ln1", "ln2", "mlp", "ln_final", "attn"}
    for component in ("ln1", "ln2", "mlp", "ln_final"):
        off_diagonal = norms[component] * (1 - np.eye(norms[component].shape[1]))
        assert (off_diagonal == 0).all() and (np.diagonal(norms[component], axis1=1, axis2=2) > 0).all()
    attention = norms["attn"]
    assert (np.triu(attention, k=1) == 0).all()
    assert (np.tril(attention, k=-1)[:, 1:, :].sum(axis=2) > 0).all()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(cache=MeasurementCache(tmp_path_factory.mktemp("cache")), claims_dir=CLAIMS_DIR)


@pytest.mark.parametrize(("claim", "spec", "verdict"), [
    ("singh2023.embeddings_cluster_by_category", "planted:concept-clusters", Verdict.PASS),
    ("singh2023.embeddings_cluster_by_category", "planted:concept-clusters-shuffled", Verdict.FAIL),
    ("singh2023.embeddings_beat_permuted_categories", "planted:concept-clusters", Verdict.PASS),
    ("singh2023.embeddings_beat_permuted_categories", "planted:concept-clusters-shuffled", Verdict.FAIL),
    ("singh2023.centred_embeddings_cluster_by_category", "planted:concept-clusters", Verdict.PASS),
    ("singh2023.centred_embeddings_cluster_by_category", "planted:concept-clusters-shuffled", Verdict.FAIL),
    ("singh2023.bare_word_embeddings_cluster_by_category", "planted:concept-clusters", Verdict.PASS),
    ("singh2023.bare_word_embeddings_cluster_by_category", "planted:concept-clusters-shuffled", Verdict.FAIL),
    ("singh2023.final_residuals_cluster_by_category", "planted:concept-clusters", Verdict.PASS),
    ("singh2023.final_residuals_cluster_by_category", "planted:concept-clusters-shuffled", Verdict.FAIL),
    ("singh2023.unembeddings_cluster_by_category", "planted:concept-clusters", Verdict.PASS),
    ("singh2023.unembeddings_cluster_by_category", "planted:concept-clusters-shuffled", Verdict.FAIL),
    ("singh2023.unembeddings_cluster_by_category", "planted:swapped-roles", Verdict.NA),
    ("singh2023.context_vector_cosine_tracks_probability", "planted:unit-unembedding", Verdict.PASS),
    ("singh2023.context_vector_cosine_tracks_probability", "planted:random-unembedding", Verdict.FAIL),
    ("singh2023.context_vector_nearest_token_is_most_probable", "planted:unit-unembedding", Verdict.PASS),
    ("singh2023.context_vector_nearest_token_is_most_probable", "planted:random-unembedding", Verdict.FAIL),
    ("singh2023.early_residual_near_context_tokens", "planted:averaging-attention", Verdict.PASS),
    ("singh2023.early_residual_near_context_tokens", "random:planted:averaging-attention", Verdict.FAIL),
    ("singh2023.norms_and_mlps_filter_per_position", "planted:bundles", Verdict.PASS),
    ("singh2023.norms_and_mlps_filter_per_position", "planted:swapped-roles", Verdict.FAIL),
    ("singh2023.attention_aggregates_across_positions", "planted:bundles", Verdict.PASS),
    ("singh2023.attention_aggregates_across_positions", "planted:swapped-roles", Verdict.FAIL),
])
def test_each_claim_passes_its_planted_control_and_fails_its_twin(claim: str, spec: str, verdict: Verdict,
                                                                 settings: Settings) -> None:
    chosen = claim_by_id(claim)
    if spec.startswith("random:"):
        chosen = replace(chosen, null=None)  # the twin is the claim's null
    result = evaluate(chosen, spec, settings)
    assert result.verdict is verdict, result.summary()


def test_the_permutation_null_makes_a_chance_clustering_trivial(settings: Settings) -> None:
    """Lowered to 0.4, the threshold is met by the shuffled twin and by its label permutations alike: TRIVIAL."""
    claim = claim_by_id("singh2023.embeddings_beat_permuted_categories")
    lowered = replace(claim, threshold=replace(claim.threshold, value=0.4))
    result = evaluate(lowered, "planted:concept-clusters-shuffled", settings)
    assert result.verdict is Verdict.TRIVIAL, result.summary()
    assert 0.45 < result.null_statistic < 0.6


def test_the_report_lists_dropped_words_and_drops_thin_categories(settings: Settings) -> None:
    """The planted vocabulary splits no word, so its bare variant keeps all; a word it lacks is dropped and
    listed, and a category left with fewer than 5 words is dropped with a note."""
    from mechclaims.metrics.transformer_dynamics import category_clustering

    model = settings.models.get("planted:concept-clusters")
    dataset = load_dataset("token_categories")
    rows = [dict(row) for row in dataset.metadata]
    months = [row for row in rows if row["category"] == "months"]
    for row in months[:-4]:
        row["word"] = row["word"] + "zz"
    thinned = replace(dataset, texts=tuple(f"The word is {row['word']}" for row in rows), metadata=tuple(rows))
    measurement = category_clustering(model, thinned, permutations=10)
    table = {row["category"]: row for row in measurement.details["words_per_category"]}
    assert table["months"]["kept"] == 4 and "Januaryzz" in table["months"]["dropped words"]
    assert "category dropped" in table["months"]["note"] and table["animals"]["dropped words"] == "none"
    assert "months" not in measurement.details["category_cosines"]["categories"]
    assert measurement.statistics["categories"] == len(table) - 1


def test_pattern_replacement_reports_loss_changes_and_refuses_a_model_where_edits_do_nothing(
        settings: Settings) -> None:
    claim = claim_by_id("singh2023.attention_pattern_replacement_loss")
    measured = evaluate(claim, "planted:unit-unembedding", settings)
    assert measured.verdict is Verdict.PASS, measured.summary()
    statistics = measured.measurement.statistics
    assert statistics["delta_uniform"] != 0 and statistics["delta_frozen"] != 0
    assert statistics["loss_uniform"] == pytest.approx(statistics["loss"] + statistics["delta_uniform"])
    refused = evaluate(claim, "planted:swapped-roles", settings)
    assert refused.verdict is Verdict.ERROR and "left the loss exactly unchanged" in refused.reason
