"""Controls: every near-orthogonality claim passes where it must and fails where it must.

Known verdicts: i.i.d. Gaussian weights are the ideal random codebook (orthogonality claims
PASS); a deliberately correlated model (every vector near one of four directions) and a
planted rank-3 embedding FAIL them. The LayerNorm claim FAILS on Gaussian embeddings (no shared
direction) and PASSES when a constant vector, which LayerNorm's centring removes, is added.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pytest

from mechclaims.models.model import Capabilities, Weights
from mechclaims.claim import Claim, Threshold, Verdict, not_applicable
from mechclaims.nulls import NULLS

from helpers import claims_by_id

VOCAB, D, LAYERS, HEADS, D_HEAD, D_MLP = 400, 64, 2, 4, 16, 128
BY_ID = {claim_id: claim for claim_id, claim in claims_by_id().items()
         if claim.paper == "knittel2024" and claim.measure.__module__.endswith(".orthogonality")}
ORTHOGONALITY = [c for c in BY_ID if c != "knittel2024.ln_removes_shared_direction"]
EMBEDDING = [c for c in BY_ID if c.startswith("knittel2024.embed_")]
LAYERNORM = Capabilities(
    architecture="Fake", kind="decoder", positions="absolute", norm="layernorm", gated_mlp=False,
    tied_embeddings=True, d_model=D, d_head=D_HEAD, d_mlp=D_MLP, d_vocab=VOCAB, n_layers=LAYERS,
    n_heads=HEADS, n_kv_heads=HEADS,
)


@dataclass
class FakeSource:
    """An in-memory WeightSource."""

    w: Weights
    capabilities: Capabilities = LAYERNORM

    def weights(self, processing: str = "raw") -> Weights:
        return self.w

    def token_strings(self, ids: list[int]) -> list[str]:
        return [f"tok{int(i)}" for i in ids]


def gaussian_weights(seed: int = 0) -> Weights:
    rng = np.random.default_rng(seed)

    def draw(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return Weights(
        W_E=draw(VOCAB, D), W_pos=draw(32, D), W_Q=draw(LAYERS, HEADS, D, D_HEAD), W_K=draw(LAYERS, HEADS, D, D_HEAD),
        W_V=draw(LAYERS, HEADS, D, D_HEAD), W_O=draw(LAYERS, HEADS, D_HEAD, D), W_in=draw(LAYERS, D, D_MLP),
        W_gate=None, W_out=draw(LAYERS, D_MLP, D), W_U=draw(D, VOCAB), mlp_in_gain=np.ones((LAYERS, D), np.float32),
        unembed_gain=np.ones(D, np.float32),
    )


def correlated_weights(seed: int = 0) -> Weights:
    """Every vector a claim reads is 3 * (one of four cluster directions) + small noise.

    Clusters, unlike one shared direction, survive mean-centring.
    """
    rng = np.random.default_rng(seed)
    clusters = rng.standard_normal((4, D))

    def rows(*lead: int) -> np.ndarray:
        picks = clusters[rng.integers(0, len(clusters), size=lead)]
        return (3 * picks + 0.3 * rng.standard_normal((*lead, D))).astype(np.float32)

    return replace(
        gaussian_weights(seed),
        W_E=rows(VOCAB),
        W_Q=np.swapaxes(rows(LAYERS, HEADS, D_HEAD), -1, -2),
        W_K=np.swapaxes(rows(LAYERS, HEADS, D_HEAD), -1, -2),
        W_V=np.swapaxes(rows(LAYERS, HEADS, D_HEAD), -1, -2),
        W_O=rows(LAYERS, HEADS, D_HEAD),
        W_out=rows(LAYERS, D_MLP),
    )


def low_rank_embedding(seed: int = 0) -> Weights:
    """A planted rank-3 embedding: every token a combination of three directions."""
    rng = np.random.default_rng(seed)
    embedding = (rng.standard_normal((VOCAB, 3)) @ rng.standard_normal((3, D))).astype(np.float32)
    return replace(gaussian_weights(seed), W_E=embedding)


def verdict(claim: Claim, weights: Weights, threshold: Threshold | None = None) -> Verdict:
    source = FakeSource(weights)
    assert not_applicable(claim, source.capabilities) is None
    return claim.decide(claim.measure(source, **claim.params), None, threshold)[0]


@pytest.mark.parametrize("claim_id", ORTHOGONALITY)
def test_orthogonality_claims_pass_on_a_random_codebook(claim_id: str) -> None:
    assert verdict(BY_ID[claim_id], gaussian_weights()) is Verdict.PASS


@pytest.mark.parametrize("claim_id", ORTHOGONALITY)
def test_orthogonality_claims_fail_on_correlated_vectors(claim_id: str) -> None:
    assert verdict(BY_ID[claim_id], correlated_weights()) is Verdict.FAIL


@pytest.mark.parametrize("claim_id", EMBEDDING)
def test_embedding_claims_fail_on_a_planted_low_rank_embedding(claim_id: str) -> None:
    assert verdict(BY_ID[claim_id], low_rank_embedding()) is Verdict.FAIL


def test_ln_claim_fails_without_a_shared_direction_and_passes_with_one() -> None:
    claim = BY_ID["knittel2024.ln_removes_shared_direction"]
    assert verdict(claim, gaussian_weights()) is Verdict.FAIL
    shifted = gaussian_weights()
    planted = replace(shifted, W_E=shifted.W_E + 2.0 * np.ones(D, dtype=np.float32))
    assert verdict(claim, planted) is Verdict.PASS


def _with_null(claim: Claim, weights: Weights, null: str) -> Verdict:
    """The claim's verdict on `weights` against the null named `null` drawn from them, as a run draws it."""
    real = claim.measure(FakeSource(weights), **claim.params)
    return claim.decide(real, claim.measure(FakeSource(weights.gaussian_like(0, NULLS[null].keep)), **claim.params))[0]


def test_a_pass_whose_chance_level_null_passes_too_is_trivial() -> None:
    """The LN claim's null is a chance level: a null that keeps the shifted embeddings keeps their shared
    direction and passes too (TRIVIAL); its own Gaussian null has none and fails (PASS)."""
    claim = BY_ID["knittel2024.ln_removes_shared_direction"]
    assert claim.trivial_if_null_passes and claim.null == "gaussian"
    weights = gaussian_weights()
    shifted = replace(weights, W_E=weights.W_E + 2.0 * np.ones(D, dtype=np.float32))
    assert _with_null(claim, shifted, "random_targets") is Verdict.TRIVIAL
    assert _with_null(claim, shifted, claim.null) is Verdict.PASS


@pytest.mark.parametrize("claim_id", ORTHOGONALITY)
def test_a_pass_whose_ideal_null_passes_too_is_not_trivial(claim_id: str) -> None:
    """For a claim whose null is the ideal, a random codebook and its Gaussian null both pass: PASS; read as a
    chance level, the same pair would be TRIVIAL."""
    claim = BY_ID[claim_id]
    assert not claim.trivial_if_null_passes
    assert _with_null(claim, gaussian_weights(), claim.null) is Verdict.PASS
    assert _with_null(replace(claim, trivial_if_null_passes=True), gaussian_weights(), claim.null) is Verdict.TRIVIAL


def test_ln_claim_is_not_applicable_to_rmsnorm_models() -> None:
    claim = BY_ID["knittel2024.ln_removes_shared_direction"]
    assert "RMSNorm" in (not_applicable(claim, replace(LAYERNORM, norm="rmsnorm")) or "")


@pytest.mark.parametrize("claim_id", list(BY_ID))
@pytest.mark.parametrize("weights", [gaussian_weights, correlated_weights], ids=["gaussian", "correlated"])
def test_verdict_flips_when_the_threshold_crosses_the_statistic(claim_id: str, weights: Callable[[], Weights]) -> None:
    """The same measurement passes on one side of its statistic and fails on the other (a fraction at 0 or 1 has no
    valid value on its far side: a fraction threshold lies in [0, 1], so that side is not tried)."""
    claim = BY_ID[claim_id]
    measurement = claim.measure(FakeSource(weights()), **claim.params)
    statistic = claim.threshold.statistic_of(measurement)
    margin = max(abs(statistic) * 0.1, 1e-3)
    lenient = statistic - margin if claim.threshold.op.startswith(">") else statistic + margin
    strict = statistic + margin if claim.threshold.op.startswith(">") else statistic - margin
    valid = (lambda value: 0.0 <= value <= 1.0) if claim.threshold.at is not None else (lambda value: True)
    assert valid(lenient) or valid(strict)
    if valid(lenient):
        assert claim.decide(measurement, None, replace(claim.threshold, value=lenient))[0] is Verdict.PASS
    if valid(strict):
        assert claim.decide(measurement, None, replace(claim.threshold, value=strict))[0] is Verdict.FAIL
