"""Controls of the sparse-attention task claims (franco2024 SAD-2 to SAD-6): a hand-built IOI circuit with known
edges, on which the claims PASS and tracing recovers the planted edges, and its twin, which cannot do the task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mechclaims.cache import MeasurementCache
from mechclaims.claim import REQUIREMENTS, Verdict, not_applicable
from mechclaims.engine import Settings, evaluate
from mechclaims.errors import MechclaimsError
from mechclaims.models import published
from mechclaims.models.ioi_circuit import PLANTED_EDGES
from mechclaims.results import Result

from helpers import CLAIMS_DIR, claim_by_id

PLANTED, TWIN = "planted:ioi-circuit", "planted:ioi-circuit-shuffled"
TASK_CLAIMS = ("traced_circuit_is_sparse", "ablating_traced_signals_lowers_logit_difference", "traced_signals_are_low_norm",
               "ioi_heads_fire_more_on_ioi", "name_mover_signal_identifies_names")
GPT2_NUMBERS = ("gpt2_name_mover_firings", "gpt2_name_mover_selected_sets", "gpt2_studied_heads_firings",
                "gpt2_tracing_recovers_s_inhibition")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Result]:
    settings = Settings(cache=MeasurementCache(tmp_path_factory.mktemp("cache")), claims_dir=CLAIMS_DIR)
    names = ("decomposition_reproduces_scores", "heads_reuse_singular_vectors", *TASK_CLAIMS, *GPT2_NUMBERS)
    return {(name, spec): evaluate(claim_by_id(f"franco2024.{name}"), spec, settings)
            for spec in (PLANTED, TWIN) for name in names}


@pytest.mark.parametrize("name", ["decomposition_reproduces_scores", *TASK_CLAIMS])
def test_every_task_claim_passes_on_the_planted_circuit(results: dict[tuple[str, str], Result], name: str) -> None:
    result = results[name, PLANTED]
    assert result.verdict is Verdict.PASS, result.summary()
    if name in TASK_CLAIMS:
        assert result.measurement.statistics["ioi_logit_diff"] > 3.0


def test_tracing_recovers_every_planted_edge_and_no_other(results: dict[tuple[str, str], Result]) -> None:
    measurement = results["traced_circuit_is_sparse", PLANTED].measurement
    assert measurement.statistics["planted_edge_recall"] >= 0.9
    assert measurement.statistics["planted_edge_precision"] >= 0.9
    found = {(e["from"], e["to"]) for e in measurement.details["circuit_edges"]}
    assert found == set(PLANTED_EDGES)
    assert all(e["planted"] for e in measurement.details["circuit_edges"])
    assert measurement.details["embedding_only_sides"] > 0, "the duplicate-token head reads only the embeddings"


def test_removing_the_traced_signals_destroys_the_logit_difference_and_random_directions_do_not(
        results: dict[tuple[str, str], Result]) -> None:
    result = results["ablating_traced_signals_lowers_logit_difference", PLANTED]
    assert result.measurement.statistics["relative_change"] < -0.9
    assert abs(result.null.statistics["relative_change"]) < 0.05
    removed = {row["upstream"] for row in result.measurement.details["edges_removed"]}
    assert removed == {"0.0", "0.1"}


def test_the_local_intervention_agrees_with_the_global_one_where_only_the_name_mover_reads_the_signal(
        results: dict[tuple[str, str], Result]) -> None:
    """Type B (the name mover's key input alone, attention renormalised by hand) against type A (a forward pass
    with the upstream output changed): in the planted circuit no other head reads phi at IO, so they agree."""
    statistics = results["ablating_traced_signals_lowers_logit_difference", PLANTED].measurement.statistics
    assert statistics["local_relative_change"] == pytest.approx(statistics["relative_change"], abs=0.02)
    assert statistics["local_share_lowered"] == 1.0
    assert statistics["name_mover_direct_effect"] > 0, "the planted name mover writes IO's name"


def test_the_planted_directions_are_among_the_selected_singular_vectors(results: dict[tuple[str, str], Result]) -> None:
    planted = results["heads_reuse_singular_vectors", PLANTED].measurement.details["planted_directions_in_top"]
    assert planted["3.0"] == {"query": True, "key": True} and planted["2.0"] == {"key": True}
    assert results["name_mover_signal_identifies_names", PLANTED].measurement.details["planted_key_direction_selected"]
    twin = results["heads_reuse_singular_vectors", TWIN].measurement.details["planted_directions_in_top"]
    assert twin["3.0"] == {"query": False, "key": False}


@pytest.mark.parametrize("name", TASK_CLAIMS)
def test_the_twin_cannot_do_the_task_so_no_task_claim_passes(results: dict[tuple[str, str], Result], name: str) -> None:
    result = results[name, TWIN]
    assert result.verdict is Verdict.NA, result.summary()
    assert "cannot do the IOI task" in result.reason and "ioi_logit_diff = -" in result.reason


@pytest.mark.parametrize("name", GPT2_NUMBERS)
@pytest.mark.parametrize("spec", [PLANTED, TWIN])
def test_the_gpt2_numbers_are_na_off_openais_weights(results: dict[tuple[str, str], Result], name: str,
                                                     spec: str) -> None:
    result = results[name, spec]
    assert result.verdict is Verdict.NA and "OpenAI's GPT-2 small weights only" in result.reason


def test_the_twin_keeps_each_matrix_but_loses_the_planted_edges(results: dict[tuple[str, str], Result]) -> None:
    from mechclaims.models import load_model

    planted, twin = (load_model(spec, remember=False).bridge.original_model.state_dict() for spec in (PLANTED, TWIN))
    for name, tensor in planted.items():
        assert np.isclose(float(tensor.norm()), float(twin[name].norm())), name
    measurement = results["traced_circuit_is_sparse", TWIN].measurement
    assert measurement.statistics["planted_edge_recall"] <= 0.25
    assert "0.0@IO -> 3.0@end" in measurement.details["planted_edges_missed"]
    assert "3.1" in measurement.details["planted_twin"]
    ablation = results["ablating_traced_signals_lowers_logit_difference", TWIN].measurement
    assert ablation.statistics["relative_change"] > -0.3, "ablating edges into a head that writes nothing"


def test_a_mistyped_planted_spec_gets_a_did_you_mean() -> None:
    from mechclaims.models import load_model

    with pytest.raises(MechclaimsError, match="did you mean 'ioi-circuit'"):
        load_model("planted:ioi-circuits", remember=False)


def _gpt2_small_shape(published_as: str) -> object:
    from mechclaims.models.model import Capabilities

    return Capabilities(architecture="GPT2LMHeadModel", kind="decoder", positions="absolute", norm="layernorm",
                        gated_mlp=False, tied_embeddings=True, d_model=768, d_head=64, d_mlp=3072, d_vocab=50257,
                        n_layers=12, n_heads=12, n_kv_heads=12, published=published_as)


def test_the_gpt2_numbers_apply_only_to_openais_published_weights() -> None:
    claim = claim_by_id("franco2024.gpt2_name_mover_firings")
    assert "OpenAI's GPT-2 small weights only" in not_applicable(claim, _gpt2_small_shape(""))
    assert not_applicable(claim, _gpt2_small_shape("openai-community/gpt2")) is None
    assert REQUIREMENTS["gpt2_small"][0](_gpt2_small_shape("")) is False


def test_a_checkpoint_is_recognised_by_its_bytes_not_its_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    data = b"weights" * 100
    (tmp_path / "model.safetensors").write_bytes(data)
    monkeypatch.setattr(published, "PUBLISHED", {(len(data), hashlib.sha256(data).hexdigest()): "someone/model"})
    assert published.published_name(tmp_path) == "someone/model"
    (tmp_path / "model.safetensors").write_bytes(data[:-1] + b"x")
    assert published.published_name(tmp_path) == ""


def test_a_gpt2_number_on_a_model_that_cannot_do_ioi_is_na_with_the_gates_number() -> None:
    from mechclaims.measurement import Measurement

    claim = claim_by_id("franco2024.gpt2_studied_heads_firings")
    reason = claim.not_met(Measurement(statistics={"ioi_logit_diff": -0.08, "max_deviation": 0.1}))
    assert reason and "cannot do the IOI task" in reason and "-0.08" in reason


def test_the_planted_heads_reuse_their_singular_vectors(results: dict[tuple[str, str], Result]) -> None:
    """Met on the planted circuit; TRIVIAL, as the random basis meets it too (the claims module says why)."""
    result = results["heads_reuse_singular_vectors", PLANTED]
    assert result.verdict is Verdict.TRIVIAL and result.statistic == 1.0, result.summary()


@pytest.mark.parametrize("name", ["heads_reuse_singular_vectors", "firing_scores_sparse", "ioi_heads_fire_more_on_ioi"])
def test_a_head_with_equal_singular_values_fails_reuse_sparsity_and_task_firing(name: str, tmp_path: Path) -> None:
    settings = Settings(cache=MeasurementCache(tmp_path), claims_dir=CLAIMS_DIR)
    result = evaluate(claim_by_id(f"franco2024.{name}"), "planted:isotropic-head", settings)
    assert result.verdict is Verdict.FAIL, result.summary()
    assert result.statistic == 0.0
