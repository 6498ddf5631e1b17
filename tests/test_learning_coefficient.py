"""SORT-4's parts: the plain-torch sorter devinterp samples (against the bridge's logits), the LLC estimate, the
stage decision, and the measurement over a short run's checkpoints."""

from __future__ import annotations

import builtins
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mechclaims.errors import MechclaimsError
from mechclaims.metrics.list_sorting import llc_change_after_overlap
from mechclaims.training.learning_coefficient import SamplerSettings, learning_coefficient
from mechclaims.training.sorting import _weights, batch_at, boot, load_config
from mechclaims.training.sorting_model import SortingLogits, SortingStack

FEW_DRAWS = SamplerSettings(chains=2, draws=20)


@pytest.fixture
def short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """The CI configuration cut to 300 steps with a checkpoint every 100, trained into a private cache by its spec."""
    config = replace(load_config("ci"), steps=300, checkpoint_every=100)
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("mechclaims.training.sorting.load_config", lambda name, seed=0: replace(config, seed=seed))
    return config


@pytest.mark.parametrize("layernorm", [True, False])
def test_the_plain_sorter_computes_the_bridges_logits_and_a_stack_keeps_its_runs_apart(layernorm: bool) -> None:
    """SortingLogits against the native bridge (LayerNorm on and off); a SortingStack of two runs gives each run its
    own logits, and from a first position the logits the full pass gives there."""
    config = replace(load_config("ci", 3), layernorm=layernorm)
    bridge = boot(config)
    with torch.no_grad():
        weights = _weights(bridge.original_model)
        tensors = {name: value + 0.01 * torch.randn_like(value) for name, value in weights.items()}
        bridge.original_model.load_state_dict({key: tensors[key.replace("._original_component", "").replace(
            "_original_component.", "")] for key in bridge.original_model.state_dict()})
        tokens = torch.from_numpy(batch_at(config, 5))
        expected = bridge.original_model(tokens).numpy()
        np.testing.assert_allclose(SortingLogits(tensors, config.heads, layernorm)(tokens).numpy(), expected,
                                   rtol=1e-5, atol=1e-5)
        other = {name: value + 0.05 * torch.randn_like(value) for name, value in tensors.items()}
        stack = SortingStack([other, tensors], config.heads, layernorm)
        both = stack(torch.stack([torch.from_numpy(batch_at(config, 6)), tokens]))
        np.testing.assert_allclose(both[1].numpy(), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(both[0].numpy(), SortingLogits(other, config.heads, layernorm)(
            torch.from_numpy(batch_at(config, 6))).numpy(), rtol=1e-5, atol=1e-5)
        tail = stack(torch.stack([tokens, tokens]), first=config.list_length)
        np.testing.assert_allclose(tail[1].numpy(), expected[:, config.list_length:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("modes", "llcs", "change"), [
    (["overlapping", "overlapping", "none", "vocabulary-splitting"], [5.0, 9.0, 7.0, 4.0], -5.0),
    (["none", "overlapping", "none", "none"], [1.0, 2.0, 3.0, 6.0], 4.0),
    (["none", "none", "overlapping"], [1.0, 2.0, 3.0], None),
    (["vocabulary-splitting"], [2.0], None),
])
def test_the_llc_change_is_taken_from_the_last_overlapping_checkpoint_before_the_final_one(
        modes: list[str], llcs: list[float], change: float | None) -> None:
    assert llc_change_after_overlap(modes, llcs) == change


def test_the_llc_is_positive_at_a_trained_minimum_and_repeatable(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """At the end of the CI configuration's training (a minimum: the loss has stopped falling) the estimate is
    positive; it is repeatable under the run's seed. A checkpoint still descending can give a negative estimate, as
    SGLD then finds lower loss nearby."""
    from mechclaims.models import load_model

    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path))
    config = load_config("ci")
    tensors = _weights(load_model("sorting:ci@0").bridge.original_model)
    first = learning_coefficient(config, tensors, FEW_DRAWS)
    assert first[0] > 0 and np.isfinite(first[1])
    assert learning_coefficient(config, tensors, FEW_DRAWS) == pytest.approx(first, rel=1e-6)


def test_without_devinterp_the_llc_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def refuse(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("devinterp"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    config = load_config("ci")
    with pytest.raises(MechclaimsError, match=r"needs devinterp: pip install 'mechclaims\[llc\]'"):
        learning_coefficient(config, _weights(boot(config).original_model), FEW_DRAWS)


def test_the_stages_measurement_reads_every_checkpoint_of_every_run(short: object) -> None:
    from mechclaims.metrics.sorting_heads import learning_coefficient_stages
    from mechclaims.pool import ModelPool

    family = ModelPool().get("sorting:ci@0-1")
    found = learning_coefficient_stages(family, draws=20)
    curves = found.details["llc_curves"]
    assert list(curves) == ["sorting:ci@0", "sorting:ci@1"]
    assert all(curve["steps"] == [100, 200, 300] and len(curve["llc"]) == 3 for curve in curves.values())
    rows = found.details["llc_runs"]
    expected = [llc_change_after_overlap(curve["modes"], curve["llc"]) for curve in curves.values()]
    assert [row["change"] for row in rows] == [None if e is None else round(e, 4) for e in expected]
    assert found.statistics["overlap_runs"] == sum(e is not None for e in expected) == len(found.distribution)
