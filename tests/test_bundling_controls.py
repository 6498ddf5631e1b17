"""Controls for the token-bundle claim: the planted model passes, its random-neuron twin fails."""

from __future__ import annotations

import numpy as np
import pytest

from claims import test_knittel2024_vsa as vsa
from mechclaims.metrics.bundling import greedy_bundles, token_candidates
from mechclaims.models import GaussianNull, Model, load_model
from mechclaims.models.controls import PLANTED_K, planted_bundles
from mechclaims.registry import NULLS, Verdict, decide

CLAIM = next(c for c in vsa.CLAIMS if c.id == "knittel2024.mlp0_token_bundles")


@pytest.fixture(scope="module")
def planted() -> Model:
    return load_model("planted:bundles")


@pytest.fixture(scope="module")
def random_twin() -> Model:
    return load_model("planted:random-neurons")


def _verdict(model: Model) -> Verdict:
    real = CLAIM.measure(model, **CLAIM.params)
    null = CLAIM.measure(GaussianNull(model, 0, NULLS[CLAIM.null]), **CLAIM.params)
    return decide(CLAIM, real, null, CLAIM.threshold)[0]


def test_greedy_search_recovers_the_planted_tokens(planted: Model) -> None:
    """At SNR 10, at least 95% of the planted tokens are among each bundle's first K tokens."""
    _, planted_ids = planted_bundles(random_neurons=False)
    weights = planted.weights("raw")
    bundles = greedy_bundles(token_candidates(weights.W_E, normalise=True, centre=False), weights.W_in[0].T)
    found = [len(set(planted_ids[i]) & set(bundles.tokens[i, :PLANTED_K])) for i in range(len(planted_ids))]
    assert np.sum(found) / planted_ids.size >= 0.95


def test_claim_passes_on_the_planted_model_and_not_trivially(planted: Model) -> None:
    assert _verdict(planted) is Verdict.PASS


def test_claim_fails_on_the_random_neuron_twin(random_twin: Model) -> None:
    assert _verdict(random_twin) is Verdict.FAIL


def test_paper_threshold_is_the_quoted_number() -> None:
    threshold = CLAIM.threshold
    assert (threshold.statistic, threshold.at, threshold.op, threshold.value, threshold.origin) == (
        "fraction_at_least", 0.5, ">", 0.80, "paper")
