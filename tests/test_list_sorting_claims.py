"""The list-sorting claims through the engine, on families of hand-built sorters whose head mode is known (the
issue's controls), and the family specs, the untrained and shuffled-target nulls and the claim-owned subjects they
rest on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mechclaims.cache import MeasurementCache
from mechclaims.catalogue import find_claim
from mechclaims.claim import Claim, Threshold, Verdict
from mechclaims.engine import Settings, evaluate
from mechclaims.errors import MechclaimsError
from mechclaims.metrics import copy_suppression, sorting_heads
from mechclaims.models.controls import planted_sorter
from mechclaims.models.family import Family
from mechclaims.models.kinds.sorting import members
from mechclaims.models.model import Model
from mechclaims.models.specs import parse
from mechclaims.training.sorting import load_config

SEEDS = range(3)


def _family(mode: str, config: str = "ci") -> Family:
    """Hand-built sorters of `config` in `mode`, one per seed, as the family sorting:<config>@0-2 (its untrained
    null: the real initialisations, which load without training)."""
    built = tuple(Model.from_bridge(planted_sorter(load_config(config, seed), mode), f"sorting:{config}@{seed}")
                  for seed in SEEDS)
    return Family(f"sorting:{config}@0-{len(SEEDS) - 1}", built)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path))
    return Settings(cache=MeasurementCache(tmp_path, enabled=False))


def test_family_specs_name_every_configuration_and_seed_and_checkpoint_steps_are_checked() -> None:
    assert members(parse("sorting:ci+ci-wd0@3-4")) == ["sorting:ci@3", "sorting:ci@4", "sorting:ci-wd0@3",
                                                       "sorting:ci-wd0@4"]
    assert members(parse("sorting:ci@0-1/0")) == ["sorting:ci@0/0", "sorting:ci@1/0"]
    assert members(parse("sorting:ci@0-1/shuffled")) == ["sorting:ci@0/shuffled", "sorting:ci@1/shuffled"]
    assert members(parse("sorting:ci@2")) == [] and members(parse("sorting:ci@2/250")) == []
    from mechclaims.models import check_spec
    from mechclaims.models.kinds.sorting import config_of

    assert config_of(parse("sorting:ci@2/shuffled")) == replace(load_config("ci", 2), targets="shuffled")
    assert members(parse("sorting:ci@0-1/000")) == ["sorting:ci@0/0", "sorting:ci@1/0"]

    for spec, message in (("sorting:ci@4-2", "seed range 4-2 is empty"), ("sorting:ci@0/7", "no checkpoint at step 7"),
                          ("sorting:ci+nope@0-1", "unknown sorting configuration 'nope'"),
                          ("sorting:ci@0/sorted", r"write sorting:<configuration>\[@<seed>\]")):
        with pytest.raises(MechclaimsError, match=message):
            check_spec(spec)


def test_a_family_measured_by_a_claim_about_one_model_is_a_one_line_error(settings: Settings) -> None:
    result = evaluate("knittel2024.embed_raw_orthogonal", _family("overlapping"), settings)
    assert result.verdict is Verdict.ERROR
    assert result.reason == ("'sorting:ci@0-2' is a family of 3 models, which only the claims about training runs "
                             "measure: name one member, e.g. --model sorting:ci@0")


def test_a_family_refuses_members_of_different_architectures() -> None:
    small = Model.from_bridge(planted_sorter(load_config("ci"), "overlapping"), "sorting:ci@0")
    wide = Model.from_bridge(planted_sorter(load_config("paper"), "vocabulary-splitting"), "sorting:paper@0")
    with pytest.raises(MechclaimsError, match="mixes architectures"):
        Family("sorting:ci+paper@0", (small, wide))


@pytest.mark.parametrize(("mode", "verdict"), [("vocabulary-splitting", Verdict.PASS),
                                               ("copy-suppression", Verdict.PASS),
                                               ("overlapping", Verdict.FAIL)])
def test_simple_head_modes_pass_on_split_and_suppressing_sorters_and_fail_on_overlapping_ones(
        mode: str, verdict: Verdict, settings: Settings) -> None:
    """Against the untrained null, whose verdict is known (the claim's own null, shuffled-target training, trains
    runs; its test is below)."""
    claim = replace(find_claim("urdshals2025.simple_head_modes"), null="untrained")
    result = evaluate(claim, _family(mode), settings)
    assert result.verdict is verdict, result.reason
    assert result.statistic == (1.0 if verdict is Verdict.PASS else 0.0)
    assert result.null_statistic == 0.0, "the untrained initialisations are in no simple mode"
    runs = result.measurement.details["runs"]
    assert [run["mode"] for run in runs] == [mode] * len(SEEDS)
    assert all(run["held_out_accuracy"] == 1.0 for run in runs)


def test_the_shuffled_target_null_is_trained_on_shuffled_lists_and_cannot_sort(settings: Settings) -> None:
    from mechclaims.metrics.sorting_heads import head_modes
    from mechclaims.training.sorting import SPECIALS, batch_at

    family = settings.models.get("sorting:ci@0-1/shuffled")
    assert [member.name for member in family.members] == ["sorting:ci@0/shuffled", "sorting:ci@1/shuffled"]
    shuffled = replace(load_config("ci"), targets="shuffled")
    tokens = batch_at(shuffled, 7)
    lists, seconds = tokens[:, :shuffled.list_length], tokens[:, shuffled.list_length + 1:]
    assert (np.sort(lists, axis=1) == np.sort(seconds, axis=1)).all()
    assert np.mean((seconds == np.sort(seconds, axis=1)).all(axis=1)) < 0.05
    assert (tokens[:, :shuffled.list_length] == batch_at(load_config("ci"), 7)[:, :shuffled.list_length]).all()
    assert (seconds >= SPECIALS).all()
    found = head_modes(family)
    assert found.statistics["min_accuracy"] < 0.5 and found.statistics["runs"] == 2.0
    assert found.statistics["none"] == 1.0, "copying without sorting is no mode"


def test_a_family_with_a_run_that_had_not_settled_is_not_applicable_naming_that_run(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two short runs that learn to sort; one's record is edited so that its mode changes at its last checkpoint
    (after the 75% it had to settle by): the claim says N/A and names that run and the change, not the other."""
    import json

    from mechclaims.models.kinds.sorting import run_folder
    from mechclaims.training.sorting import RECORD_FILE

    short = replace(load_config("ci"), steps=400, checkpoint_every=100)
    monkeypatch.setattr("mechclaims.training.sorting.load_config", lambda name, seed=0: replace(short, seed=seed))
    family = settings.models.get("sorting:ci@0-1")
    settled = evaluate("urdshals2025.simple_head_modes", family, settings)
    assert settled.verdict is not Verdict.NA, settled.reason
    assert all(run["settled"] and run["settled_step"] <= 300 for run in settled.measurement.details["runs"])
    path = run_folder(short.with_seed(1)) / RECORD_FILE
    record = json.loads(path.read_text(encoding="utf-8"))
    last = record["checkpoints"][-1]["mode"]
    earlier = "overlapping" if last != "overlapping" else "none"
    for checkpoint in record["checkpoints"][:-1]:
        checkpoint["mode"] = earlier
    path.write_text(json.dumps(record), encoding="utf-8")
    result = evaluate("urdshals2025.simple_head_modes", family, settings)
    assert result.verdict is Verdict.NA
    assert "had not settled into their final mode" in result.reason
    assert (f"sorting:ci@1 (settled_step 400, needs <= 300; last mode change step 400: {earlier} -> {last}"
            in result.reason)
    assert "sorting:ci@0 (" not in result.reason


def test_splitting_without_weight_decay_needs_a_splitting_run(settings: Settings) -> None:
    claim = "urdshals2025.vocabulary_splitting_without_weight_decay"
    assert evaluate(claim, _family("vocabulary-splitting", "ci-wd0"), settings).verdict is Verdict.PASS
    assert evaluate(claim, _family("copy-suppression", "ci-wd0"), settings).verdict is Verdict.FAIL


def test_a_family_that_cannot_sort_is_not_applicable(settings: Settings) -> None:
    untrained = Family("sorting:ci@0-1", tuple(Model.from_bridge(planted_sorter(load_config("ci", s), "overlapping"),
                                                                 f"sorting:ci@{s}") for s in range(2)))
    for member in untrained.members:
        member.bridge.original_model.head.weight.data.neg_()
    result = evaluate("urdshals2025.simple_head_modes", untrained, settings)
    assert result.verdict is Verdict.NA and "did not learn to sort" in result.reason


def test_mode_by_gap_sees_a_change_only_where_the_modes_differ() -> None:
    mixed = Family("sorting:ci-window10+ci@0-2", (*_family("vocabulary-splitting", "ci-window10").members,
                                                  *_family("overlapping").members))
    changed = sorting_heads.mode_by_gap(mixed)
    assert changed.statistics["largest_change"] == 1.0 and changed.statistics["gaps"] == 2.0
    assert [row["mean_gap"] for row in changed.details["by_gap"]] == [round(11 / 6, 3), round(25 / 6, 3)]
    same = Family("sorting:ci-window10+ci@0-2", (*_family("overlapping", "ci-window10").members,
                                                 *_family("overlapping").members))
    assert sorting_heads.mode_by_gap(same).statistics["largest_change"] == 0.0


def test_ablating_the_suppressor_of_an_accurate_sorter_raises_confidence_but_improves_calibration(
        settings: Settings) -> None:
    """A sorter that is always right is calibrated best when most confident, so SORT-5 fails on it (its claim needs
    both); ablating the copying head (the null) lowers confidence. The final LayerNorm rescales each residual, so
    the suppressor's damping shows only in the spread of the other logits: confidence rises by a little."""
    result = evaluate("urdshals2025.suppressor_ablation_raises_confidence", _family("copy-suppression"), settings)
    assert result.verdict is Verdict.FAIL
    statistics = result.measurement.statistics
    assert statistics["suppression_runs"] == len(SEEDS)
    assert statistics["mean_delta_confidence"] > 0.001 and statistics["mean_delta_calibration_error"] < 0
    assert statistics["mean_delta_accuracy"] == 0.0
    assert result.null.statistics["mean_delta_confidence"] < 0
    rows = result.measurement.details["ablations"]
    assert {(row["copying_head"], row["suppressing_head"], row["ablated"]) for row in rows} == {(0, 1, 1)}
    split = evaluate("urdshals2025.suppressor_ablation_raises_confidence", _family("vocabulary-splitting"), settings)
    assert split.verdict is Verdict.NA


def test_copy_suppression_heads_rank_the_negated_head_first_against_a_loop_oracle() -> None:
    model = Model.from_bridge(planted_sorter(load_config("ci"), "copy-suppression"), "sorting:ci@0")
    found = copy_suppression.copy_suppression_heads(model, bottom=1, head="0.1")
    assert found.statistics["head_rank"] == 1.0
    assert found.details["most_copy_suppressing_heads"][0]["head"] == "0.1"
    weights = model.weights()
    vocabulary = weights.W_E.shape[0]
    for head, expected in enumerate(found.distribution):
        suppressed = 0
        for token in range(vocabulary):
            row = [float(weights.W_E[token] @ weights.W_V[0, head] @ weights.W_O[0, head] @ weights.W_U[:, other])
                   for other in range(vocabulary)]
            suppressed += sum(value <= row[token] for other, value in enumerate(row) if other != token) < 1
        assert expected == pytest.approx(suppressed / vocabulary)
    assert found.distribution[1] == pytest.approx(24 / 27) and found.distribution[0] == 0.0
    with pytest.raises(MechclaimsError, match="'10.7' is not one of this model's 1 x 2 heads"):
        copy_suppression.copy_suppression_heads(model, head="10.7")


def test_claims_with_their_own_subjects_are_checked_at_import() -> None:
    with pytest.raises(MechclaimsError, match="subject: unknown sorting configuration 'nope'"):
        Claim(id="x.y", paper="x", section="s", statement="s", measure=sorting_heads.head_modes,
              threshold=Threshold(statistic="mode_fraction", op=">=", value=0.5, origin="suite"),
              subjects=("sorting:nope@0-1",), null=None)
    with pytest.raises(MechclaimsError, match="give a tuple"):
        Claim(id="x.y", paper="x", section="s", statement="s", measure=sorting_heads.head_modes,
              threshold=Threshold(statistic="mode_fraction", op=">=", value=0.5, origin="suite"),
              subjects="sorting:ci@0-1", null=None)
    assert find_claim("urdshals2025.head_mode_depends_on_mean_gap").slow


def test_the_claims_module_collects_sorting_items_once_whatever_the_models_and_slow_ones_on_request(
        pytester: pytest.Pytester) -> None:
    claims = Path(__file__).parent.parent / "claims" / "test_urdshals2025_list_sorting.py"
    pytester.makepyfile(test_sorting=claims.read_text(encoding="utf-8"))
    listed = pytester.runpytest("--collect-only", "-q", "--model", "minilm-l6", "--model", "random:minilm-l6",
                                "-p", "no:cacheprovider")
    items = [line.split("::")[1] for line in listed.outlines if "::" in line]
    assert items.count("urdshals2025.simple_head_modes[sorting:ci@0-4]") == 1
    assert "urdshals2025.simple_head_modes[sorting:ci-wd0@0-4]" in items
    assert "urdshals2025.gpt2_head_10_7_suppresses_copies[random:minilm-l6]" in items
    slow_ids = ("mean_gap", "learning_coefficient", "paper_configuration")
    assert not any(slow in item for item in items for slow in slow_ids)
    assert "(4 deselected)" in listed.outlines[-1]
    slow = pytester.runpytest("--collect-only", "-q", "--model", "minilm-l6", "--slow-claims", "-p", "no:cacheprovider")
    gaps = "head_mode_depends_on_mean_gap[sorting:ci-window10+ci-window16+ci@0-4]"
    assert any(gaps in line for line in slow.outlines)
    assert any("learning_coefficient_falls_after_overlap[sorting:ci@0-4]" in line for line in slow.outlines)
