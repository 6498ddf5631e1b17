"""The pytest-free engine: `mechclaims.evaluate` from Python, claims validated when built, --param,
the typed Result's JSON form, and claims modules that must hold only Claims."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mechclaims
from mechclaims.cache import MeasurementCache
from mechclaims.catalogue import claims_of, find_claim
from mechclaims.claim import Claim, Inputs, Threshold, Verdict
from mechclaims.engine import Settings, evaluate
from mechclaims.errors import MechclaimsError
from mechclaims.measurement import Curve, Measurement, ParamAxis
from mechclaims.metrics import orthogonality
from mechclaims.nulls import MeasurementNull
from mechclaims.results import Result

from helpers import CLAIMS_DIR

RATIO = Threshold(statistic="mean_abs_ratio", op="<=", value=2.0, origin="suite")


def _settings(tmp_path: Path, **more: object) -> Settings:
    return Settings(cache=MeasurementCache(tmp_path / "cache"), claims_dir=CLAIMS_DIR, **more)


def _brute_force_ratio(embeddings: np.ndarray) -> float:
    """Mean |cos| over token pairs (the full Gram matrix in float64) over the Gaussian E|cos| in d dims."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    gram = np.abs(unit @ unit.T)
    n, d = embeddings.shape
    mean_abs = (gram.sum() - np.trace(gram)) / (n * (n - 1))
    return float(mean_abs / orthogonality.gaussian_abs_cosine_mean(d))


def test_a_claim_runs_from_python_by_id_and_returns_the_typed_result(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    """mechclaims.evaluate(claim_id, model_spec): the statistic is the brute-force ratio, the verdict its
    threshold's, and the Gaussian null is measured too."""
    result = mechclaims.evaluate("knittel2024.embed_raw_orthogonal", str(tiny_gpt2_dir), _settings(tmp_path))
    assert isinstance(result, Result) and result.model == str(tiny_gpt2_dir)
    model = _settings(tmp_path).models.get(str(tiny_gpt2_dir))
    expected = _brute_force_ratio(model.weights("raw").W_E.astype(np.float64))
    assert result.statistic == pytest.approx(expected, rel=1e-4)
    assert result.verdict is (Verdict.PASS if expected <= 2.0 else Verdict.FAIL)
    assert result.null_statistic is not None and result.null_statistic == pytest.approx(1.0, abs=0.05)
    assert result.cache_hit is False
    again = mechclaims.evaluate("knittel2024.embed_raw_orthogonal", str(tiny_gpt2_dir), _settings(tmp_path))
    assert again.cache_hit is True and again.statistic == result.statistic


def test_an_unknown_claim_id_names_the_closest(tmp_path: Path) -> None:
    with pytest.raises(MechclaimsError, match="did you mean 'knittel2024.embed_raw_orthogonal'"):
        evaluate("knittel2024.embed_raw_orthogonl", "minilm-l6", _settings(tmp_path))


def test_a_model_that_cannot_load_is_an_error_result_not_an_exception(tmp_path: Path) -> None:
    claim = find_claim("knittel2024.embed_raw_orthogonal", CLAIMS_DIR)
    result = evaluate(claim, str(tmp_path / "missing"), _settings(tmp_path))
    assert result.verdict is Verdict.ERROR and "does not exist" in result.reason


def test_params_from_the_run_replace_the_claims_and_are_recorded(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    claim = find_claim("knittel2024.embed_raw_orthogonal", CLAIMS_DIR)
    default = evaluate(claim, str(tiny_gpt2_dir), _settings(tmp_path))
    centred = evaluate(claim, str(tiny_gpt2_dir), _settings(tmp_path, params={claim.id: {"variant": "centred"}}))
    assert centred.params["variant"] == "centred" and centred.params_overridden == ("variant",)
    assert default.params_overridden == () and centred.statistic != default.statistic
    assert centred.measurement.details["variant"] != default.measurement.details["variant"]
    with pytest.raises(MechclaimsError, match="did you mean 'variant'"):
        evaluate(claim, str(tiny_gpt2_dir), _settings(tmp_path, params={claim.id: {"varient": "raw"}}))


def test_a_measurement_null_measures_the_model_again_with_the_null_setting(tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    """The centred variant as the 'null' of the raw one: the null statistic is the centred claim's statistic."""
    claim = Claim(id="toy.raw_vs_centred", paper="toy", section="1", statement="s",
                  measure=orthogonality.token_embedding_cosines, params={"variant": "raw"}, threshold=RATIO,
                  null=MeasurementNull("variant", "centred"))
    result = evaluate(claim, str(tiny_gpt2_dir), _settings(tmp_path))
    centred = evaluate(replace(claim, params={"variant": "centred"}, null=None), str(tiny_gpt2_dir), _settings(tmp_path))
    assert result.null_statistic == centred.statistic != result.statistic


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"params": {"varaint": "raw"}}, "has no parameter 'varaint' (did you mean 'variant'?)"),
        ({"params": {"bound": "high"}}, "bound='high' does not fit"),
        ({"null": "gausian"}, "unknown null 'gausian' (did you mean 'gaussian'?)"),
        ({"needs": frozenset({"rotary"})}, "needs unknown capabilities"),
        ({"id": "NoDot"}, "must look like paper.measured_thing"),
        ({"null": MeasurementNull("nope", 1)}, "has no parameter 'nope'"),
        ({"inputs": Inputs("forward_chek")}, "did you mean 'forward_check'"),
        ({"inputs": Inputs("forward_check")}, "takes no `inputs` argument"),
    ],
)
def test_a_mistake_in_a_claims_data_fails_when_it_is_built(change: dict, message: str) -> None:
    fields = {"id": "toy.claim", "paper": "toy", "section": "1", "statement": "s",
              "measure": orthogonality.token_embedding_cosines, "threshold": RATIO, **change}
    with pytest.raises(MechclaimsError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        Claim(**fields)


def test_a_claim_that_runs_inputs_cannot_take_a_weight_null() -> None:
    def measure(source: object, inputs: object = None) -> Measurement:
        return Measurement(statistics={})

    fields = {"id": "toy.forward", "paper": "toy", "section": "1", "statement": "s", "measure": measure,
              "threshold": RATIO, "inputs": Inputs("forward_check")}
    with pytest.raises(MechclaimsError, match="weight null"):
        Claim(**fields, null="gaussian")
    assert Claim(**fields, null="random_model").null_baseline.name == "random_model"


def test_claims_lists_hold_only_claims_with_distinct_ids() -> None:
    claim = find_claim("knittel2024.embed_raw_orthogonal", CLAIMS_DIR)
    with pytest.raises(MechclaimsError, match=r"CLAIMS\[1\] is a str, not a Claim"):
        claims_of([claim, "oops"], "m.py")
    with pytest.raises(MechclaimsError, match="appears twice"):
        claims_of([claim, claim], "m.py")
    assert claims_of((claim,), "m.py") == [claim]


FLOATS = st.floats(-10, 10, allow_nan=False)


@given(statistic=FLOATS, values=st.lists(FLOATS, min_size=1, max_size=5), overridden=st.booleans(),
       verdict=st.sampled_from(list(Verdict)))
def test_a_result_survives_its_json_form(statistic: float, values: list[float], overridden: bool, verdict: Verdict) -> None:
    measurement = Measurement(statistics={"s": statistic}, distribution=np.array(values), distribution_label="d",
                              curves={"c": Curve([1.0], [statistic], "x", "y")},
                              by_param={"k": ParamAxis([1.0], np.array([values]))})
    threshold = Threshold(statistic="fraction_at_least", at=0.5, op=">", value=0.8, origin="paper", sweep=(0.1, 0.9, 0.1))
    result = Result(model="m", claim="p.c", verdict=verdict, threshold=threshold, params={"k": 1},
                    threshold_overridden=overridden, params_overridden=("k",), statistic=statistic,
                    interval=(0.0, 1.0), measurement=measurement)
    again = Result.from_json(result.to_json())
    assert again.threshold == threshold and again.threshold.sweep == (0.1, 0.9, 0.1)
    assert again.to_json() == result.to_json()


def final_residual_norm(source: object, inputs: object = None, layer: int = -1) -> Measurement:
    """A toy forward-pass measure: the mean norm of a layer's output over the real tokens of the inputs."""
    name = f"blocks.{range(source.capabilities.n_layers)[layer]}.hook_resid_post"
    acts = source.activations(inputs.texts, [name], progress=False)
    norms = np.linalg.norm(acts.real(name), axis=-1)
    return Measurement(statistics={"mean_norm": float(norms.mean())}, distribution=norms)


FORWARD = Claim(id="toy.resid_norm", paper="toy", section="1", statement="s", measure=final_residual_norm,
                threshold=Threshold(statistic="mean_norm", op=">", value=0.0, origin="suite"),
                inputs=Inputs("forward_check"), null="random_model")


def test_a_forward_pass_claim_reads_its_data_set_and_runs_its_random_model_null(tiny_gpt2_dir: Path,
                                                                                tmp_path: Path) -> None:
    """The statistic equals the transformers model's own last-block output norms (hidden_states before the
    final LayerNorm, captured by a forward hook), text by text; the null runs the random: model."""
    import torch

    from mechclaims.datasets import load_dataset

    settings = _settings(tmp_path)
    result = evaluate(FORWARD, str(tiny_gpt2_dir), settings)
    model = settings.models.get(str(tiny_gpt2_dir))
    hf, tokenizer = model.bridge.original_model, model.tokenizer
    captured: list[torch.Tensor] = []
    handle = hf.transformer.h[-1].register_forward_hook(
        lambda module, args, out: captured.append(out[0] if isinstance(out, tuple) else out))
    norms = []
    with torch.no_grad():
        for text in load_dataset("forward_check").texts:
            hf(torch.tensor([tokenizer(text)["input_ids"]]))
            norms.extend(captured.pop()[0].norm(dim=-1).tolist())
    handle.remove()
    assert result.verdict is Verdict.TRIVIAL  # any model's residual has a norm > 0, its random twin's too
    assert result.statistic == pytest.approx(float(np.mean(norms)), rel=1e-4)
    assert f"random:{tiny_gpt2_dir}" in settings.models.models
    assert result.null_statistic is not None and result.null_statistic != pytest.approx(result.statistic, rel=1e-3)


def test_mlp_claims_do_not_apply_to_attention_only_models(tiny_gpt2_model: object) -> None:
    from mechclaims.claim import not_applicable

    attention_only = replace(tiny_gpt2_model.capabilities, has_mlp=False)
    claim = find_claim("knittel2024.mlp0_token_bundles", CLAIMS_DIR)
    assert not_applicable(claim, attention_only) == "the model has no MLP layers"
    assert not_applicable(claim, tiny_gpt2_model.capabilities) is None


def test_the_evaluate_command_prints_the_verdict_and_writes_the_result(tiny_gpt2_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from mechclaims.__main__ import main

    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "result.json"
    code = main(["evaluate", "knittel2024.embed_raw_orthogonal", str(tiny_gpt2_dir), "--param", "variant=centred",
                 "--threshold", "0.5", "--claims-dir", str(CLAIMS_DIR), "--json", str(out)])
    assert code == 0
    saved = Result.from_json(json.loads(out.read_text()))
    assert saved.params["variant"] == "centred" and saved.threshold.value == 0.5 and saved.threshold_overridden
    assert saved.verdict is (Verdict.PASS if saved.statistic <= 0.5 else Verdict.FAIL)
    assert capsys.readouterr().out.startswith(f"{saved.verdict.value} knittel2024.embed_raw_orthogonal on ")
    assert main(["evaluate", "knittel2024.nothing", str(tiny_gpt2_dir), "--claims-dir", str(CLAIMS_DIR)]) == 2
    assert "unknown claim 'knittel2024.nothing'" in capsys.readouterr().err


def texts_and_norm(source: object, inputs: tuple = (), layer: int = -1) -> Measurement:
    """A toy measure over two data sets: the number of texts in each, and the residual norm on the first."""
    first = final_residual_norm(source, inputs[0], layer)
    return Measurement(statistics={**first.statistics, "texts": float(len(inputs[0]) + len(inputs[1]))})


@pytest.mark.parametrize(("needed", "verdict"), [(1e9, Verdict.NA), (0.0, Verdict.TRIVIAL)])
def test_a_gate_makes_a_claim_not_applicable_with_the_measured_number_and_inputs_may_be_several(
        tiny_gpt2_dir: Path, tmp_path: Path, needed: float, verdict: Verdict) -> None:
    from mechclaims.claim import Gate

    claim = replace(FORWARD, measure=texts_and_norm, inputs=(Inputs("forward_check"), Inputs("generic_text", {"n": 3})),
                    gate=Gate("mean_norm", ">", needed, "the residual is too small"))
    result = evaluate(claim, str(tiny_gpt2_dir), _settings(tmp_path))
    assert result.verdict is verdict, result.summary()
    assert result.measurement.statistics["texts"] == 12 + 3
    if verdict is Verdict.NA:
        assert result.reason.startswith("the residual is too small (mean_norm = ") and result.null is None
