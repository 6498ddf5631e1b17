"""Controls for the token-bundle claim: the planted model passes, its random-neuron twin fails."""

from __future__ import annotations

import numpy as np
import pytest

from claims import test_knittel2024_vsa as vsa
from mechclaims.metrics.bundling import greedy_bundles, token_candidates
from mechclaims.models import GaussianNull, Model, load_model
from mechclaims.models.controls import PLANTED_K, planted_bundles
from mechclaims.registry import NULLS, Verdict, decide

CLAIMS = {c.id: c for c in vsa.CLAIMS}
CLAIM = CLAIMS["knittel2024.mlp0_token_bundles"]
CONTROLLED = ["knittel2024.mlp0_token_bundles", "knittel2024.bundles_by_depth", "knittel2024.wout_unembed_bundles"]


@pytest.fixture(scope="module")
def planted() -> Model:
    return load_model("planted:bundles")


@pytest.fixture(scope="module")
def random_twin() -> Model:
    return load_model("planted:random-neurons")


def _verdict(claim_id: str, model: Model) -> Verdict:
    claim = CLAIMS[claim_id]
    real = claim.measure(model, **claim.params)
    null = claim.measure(GaussianNull(model, 0, NULLS[claim.null]), **claim.params)
    return decide(claim, real, null, claim.threshold)[0]


def test_greedy_search_recovers_the_planted_tokens(planted: Model) -> None:
    """At SNR 10, at least 95% of the planted tokens are among each bundle's first K tokens."""
    _, planted_ids = planted_bundles(random_neurons=False)
    weights = planted.weights("raw")
    bundles = greedy_bundles(token_candidates(weights.W_E, normalise=True, centre=False), weights.W_in[0].T)
    found = [len(set(planted_ids[i]) & set(bundles.tokens[i, :PLANTED_K])) for i in range(len(planted_ids))]
    assert np.sum(found) / planted_ids.size >= 0.95


@pytest.mark.parametrize("claim_id", CONTROLLED)
def test_claim_passes_on_the_planted_model_and_not_trivially(planted: Model, claim_id: str) -> None:
    """Planted layer-0 reads and last-layer writes (layer-1 reads random): the claims PASS, their nulls do not."""
    assert _verdict(claim_id, planted) is Verdict.PASS


@pytest.mark.parametrize("claim_id", CONTROLLED)
def test_claim_fails_on_the_random_neuron_twin(random_twin: Model, claim_id: str) -> None:
    assert _verdict(claim_id, random_twin) is Verdict.FAIL


def test_paper_threshold_is_the_quoted_number() -> None:
    threshold = CLAIM.threshold
    assert (threshold.statistic, threshold.at, threshold.op, threshold.value, threshold.origin) == (
        "fraction_at_least", 0.5, ">", 0.80, "paper")
