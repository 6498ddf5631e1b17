"""The list-sorting models the suite trains: configurations, data, determinism, resuming, caching, the spec."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import claim_by_id

from mechclaims.errors import MechclaimsError, MechclaimsWarning
from mechclaims.models import load_model
from mechclaims.models.kinds.sorting import run_folder
from mechclaims.training.sorting import (
    MODEL_FILE,
    RECORD_FILE,
    SPECIALS,
    SortingConfig,
    batch_at,
    boot,
    checkpoint_steps,
    held_out,
    load_config,
    sample_lists,
    train,
    train_family,
    train_many,
)


@pytest.fixture
def short() -> SortingConfig:
    """The CI configuration cut to 40 steps with a checkpoint every 10: quick, and long enough to resume."""
    return replace(load_config("ci"), steps=40, checkpoint_every=10)


def test_lists_are_distinct_numbers_in_their_window_and_sequences_end_sorted() -> None:
    config = replace(load_config("ci"), window=8)
    lists = sample_lists(config, np.random.default_rng(0), 500)
    assert all(len(set(row)) == config.list_length and row.max() - row.min() < 8 for row in lists)
    assert 0 <= lists.min() and lists.max() < config.numbers
    gaps = np.diff(np.sort(lists, axis=1), axis=1)
    assert abs(gaps.mean() - config.mean_gap) < 0.05 * config.mean_gap
    tokens = batch_at(config, 3)
    half = config.list_length
    assert (tokens[:, half] == config.separator).all()
    assert (np.sort(tokens[:, :half], axis=1) == tokens[:, half + 1:]).all() and tokens.min() >= SPECIALS
    assert not np.array_equal(batch_at(config, 3), batch_at(config, 4))
    assert np.array_equal(batch_at(config, 3), tokens)
    assert not np.array_equal(held_out(config, config.batch), batch_at(config, 0))


def _weights(folder: Path) -> dict[str, np.ndarray]:
    return load_file(str(folder / MODEL_FILE))


def test_the_same_configuration_and_seed_give_the_same_weights_bit_for_bit(short: SortingConfig,
                                                                         tmp_path: Path) -> None:
    train(short, tmp_path / "a", progress=False)
    train(short, tmp_path / "b", progress=False)
    train(short.with_seed(1), tmp_path / "c", progress=False)
    first, second, other = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)
    assert not all(np.array_equal(first[k], other[k]) for k in first)


def test_an_interrupted_run_resumes_from_its_last_checkpoint_to_the_same_weights(short: SortingConfig,
                                                                               tmp_path: Path) -> None:
    assert train(short, tmp_path / "stopped", progress=False, stop_after=25) is None
    assert sorted(p.name for p in (tmp_path / "stopped").glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    record = train(short, tmp_path / "stopped", progress=False)
    straight = train(short, tmp_path / "straight", progress=False)
    assert record is not None and straight is not None
    assert record.resumed_from == [20] and straight.resumed_from == []
    assert record.losses == straight.losses and len(record.losses) == short.steps
    resumed, whole = _weights(tmp_path / "stopped"), _weights(tmp_path / "straight")
    assert all(np.array_equal(resumed[k], whole[k]) for k in whole)
    again = train(short, tmp_path / "stopped", progress=False)
    assert again == record


def test_the_ci_configuration_learns_to_sort_held_out_lists(tmp_path: Path) -> None:
    record = train(load_config("ci"), tmp_path, progress=False)
    assert record is not None and record.held_out_accuracy >= 0.95
    assert record.losses[-1] < record.losses[0] / 10
    saved = json.loads((tmp_path / RECORD_FILE).read_text())
    assert saved["config"]["name"] == "ci" and len(saved["losses"]) == record.config.steps


def test_the_sorting_spec_trains_once_into_a_cache_keyed_by_configuration(short: SortingConfig, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("mechclaims.training.sorting.load_config",
                        lambda name, seed=0: replace(short, seed=seed))
    model = load_model("sorting:ci@2")
    folder = run_folder(short.with_seed(2))
    assert folder.is_relative_to(tmp_path) and (folder / MODEL_FILE).is_file()
    caps = model.capabilities
    assert (caps.n_layers, caps.n_heads, caps.has_mlp, caps.norm, caps.positions) == (1, 2, False, "layernorm", "absolute")
    assert load_model("sorting:ci@2").fingerprint == model.fingerprint
    assert run_folder(replace(short, weight_decay=0.0)) != run_folder(short)
    tokens = model.activations(["3 1 7 SEP 1 3 7"], [], prepend_bos=False, progress=False).tokens[0]
    assert tokens.tolist() == [n + SPECIALS for n in (3, 1, 7)] + [short.separator] + [n + SPECIALS for n in (1, 3, 7)]


@pytest.mark.parametrize("damaged", [MODEL_FILE, RECORD_FILE, f"checkpoint-20/{MODEL_FILE}"])
def test_a_damaged_cached_run_is_discarded_with_a_note_and_retrained_to_the_same_weights(
    short: SortingConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damaged: str
) -> None:
    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("mechclaims.training.sorting.load_config", lambda name, seed=0: replace(short, seed=seed))
    spec = "sorting:ci@2/20" if damaged.startswith("checkpoint") else "sorting:ci@2"
    fingerprint = load_model(spec, remember=False).fingerprint
    path = run_folder(short.with_seed(2)) / damaged
    path.write_bytes(path.read_bytes()[:40])
    with pytest.warns(MechclaimsWarning, match="discarded the unusable cache entry .*computed again") as noted:
        again = load_model(spec, remember=False)
    assert len(noted) == 1 and again.fingerprint == fingerprint
    assert path.stat().st_size > 40


@pytest.mark.parametrize(("spec", "message"), [
    ("sorting:papr", r"unknown sorting configuration 'papr' \(did you mean 'paper'\?\)"),
    ("sorting:ci@x", "write sorting:<configuration>"),
])
def test_bad_sorting_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(MechclaimsError, match=message):
        load_model(spec)


@pytest.mark.parametrize(("change", "message"), [
    ({"heads": 0}, "field 'heads' out of range"),
    ({"steps": 0}, "field 'steps' out of range"),
    ({"window": 100}, "need list_length <= window <= numbers"),
    ({"list_length": 30, "window": 24}, "need list_length <= window <= numbers"),
    ({"d_model": 49}, "'d_model' 49 is not a multiple of 'heads' 2"),
    ({"learning_rate": "fast"}, "field 'learning_rate' is 'fast', which is not float"),
    ({"layernorm": 1}, "field 'layernorm' is 1, which is not bool"),
    ({"steps": True}, "field 'steps' is True, which is not int"),
    ({"targets": "reversed"}, "field 'targets' is 'reversed', not one of sorted, shuffled"),
    ({"schedule": "cosine"}, "field 'schedule' is 'cosine', not one of constant, linear"),
])
def test_malformed_configurations_are_one_line_errors(change: dict, message: str) -> None:
    with pytest.raises(MechclaimsError, match=message):
        replace(load_config("ci"), **change)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda data: data.pop("layernorm"), "missing field 'layernorm'"),
    (lambda data: data.update(dropout=0.1), "unknown field 'dropout'"),
    (lambda data: data.update(steps="many"), "field 'steps' is 'many', which is not int"),
    (lambda data: data.update(list_length=30), "need list_length <= window <= numbers"),
])
def test_a_malformed_configuration_file_is_a_one_line_error_naming_the_field(
        edit: object, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "sorting"
    folder.mkdir()
    data = json.loads((Path(__file__).parent.parent / "fixtures" / "sorting" / "ci.json").read_text())
    edit(data)
    (folder / "broken.json").write_text(json.dumps(data))
    monkeypatch.setenv("MECHCLAIMS_FIXTURES", str(tmp_path))
    with pytest.raises(MechclaimsError, match=message) as raised:
        load_config("broken")
    assert "\n" not in str(raised.value)


def test_a_checkpoint_folder_of_a_run_whose_configuration_changed_is_refused(short: SortingConfig,
                                                                             tmp_path: Path) -> None:
    assert train(short, tmp_path, progress=False, stop_after=15) is None
    with pytest.raises(MechclaimsError, match=r"checkpoint-10 was saved by a run of another configuration than "
                                              r"sorting:ci@0 .*delete that folder"):
        train(replace(short, learning_rate=0.001), tmp_path, progress=False)


def test_a_family_trains_every_run_as_it_would_alone_up_to_the_last_bits(tmp_path: Path) -> None:
    """Runs batched in one family and the same runs trained alone: the same modes at every checkpoint, the same
    held-out accuracy within 0.5%, losses within float rounding of each other; a family mixes no runs (other
    seeds give other weights, and the shuffled twin does not learn to sort)."""
    config = replace(load_config("ci"), steps=600, checkpoint_every=200)
    runs = [(config, tmp_path / "family-0"), (config.with_seed(1), tmp_path / "family-1"),
            (replace(config, targets="shuffled"), tmp_path / "family-shuffled")]
    together = train_family(runs, progress=False)
    for (run, folder), batched in zip(runs, together):
        alone = train(run, folder.with_name(f"alone-{folder.name}"), progress=False)
        assert batched is not None and alone is not None
        assert [c.mode for c in batched.checkpoints] == [c.mode for c in alone.checkpoints]
        assert batched.held_out_accuracy == pytest.approx(alone.held_out_accuracy, abs=0.005)
        np.testing.assert_allclose(batched.losses[:50], alone.losses[:50], rtol=1e-4)
    assert together[0].held_out_accuracy > 0.9 > 0.5 > together[2].held_out_accuracy
    assert not np.array_equal(_weights(tmp_path / "family-0")["tok_embed.weight"],
                              _weights(tmp_path / "family-1")["tok_embed.weight"])


def test_a_run_records_its_mode_at_every_checkpoint_and_the_step_it_settled_at(short: SortingConfig,
                                                                              tmp_path: Path) -> None:
    record = train(short, tmp_path, progress=False)
    assert record is not None and [c.step for c in record.checkpoints] == checkpoint_steps(short)
    saved = json.loads((tmp_path / RECORD_FILE).read_text())
    assert saved["settled_step"] == record.settled_step and saved["checkpoints"][-1]["step"] == short.steps
    expected = None
    for checkpoint in record.checkpoints:
        later = [c for c in record.checkpoints if c.step >= checkpoint.step]
        if all(c.mode == record.checkpoints[-1].mode and c.held_out_accuracy >= 0.95 for c in later):
            expected = checkpoint.step
            break
    assert record.settled_step == expected
    assert record.fingerprint == load_model_fingerprint(short, tmp_path)


def load_model_fingerprint(config: SortingConfig, folder: Path) -> str:
    """The fingerprint of the run's final weights as a loaded bridge has it."""
    from mechclaims.models.model import Model

    return Model.from_bridge(boot(config, folder / MODEL_FILE), "run").fingerprint


def test_families_trained_side_by_side_in_processes_are_the_bits_of_families_trained_here(short: SortingConfig,
                                                                                        tmp_path: Path) -> None:
    decayed, undecayed = short, replace(short, weight_decay=0.0)
    runs = [(decayed, tmp_path / "together-0"), (decayed.with_seed(1), tmp_path / "together-1"),
            (undecayed, tmp_path / "together-wd0")]
    train_many(runs, processes=2)
    train_family([(c, f.with_name(f"here-{f.name}")) for c, f in runs[:2]], progress=False)
    train_family([(undecayed, tmp_path / "here-together-wd0")], progress=False)
    for _, folder in runs:
        together, here = _weights(folder), _weights(folder.with_name(f"here-{folder.name}"))
        assert set(together) == set(here)
        assert all(np.array_equal(together[key], here[key]) for key in here), folder.name
    assert not np.array_equal(_weights(tmp_path / "together-0")["tok_embed.weight"],
                              _weights(tmp_path / "together-wd0")["tok_embed.weight"])


def test_a_pool_prepares_a_family_and_its_null_family_together(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The engine hands the pool the subject and its model null before loading either; the sorting kind trains every
    member of both that the cache lacks in one call."""
    from mechclaims.engine import Settings, evaluate
    from mechclaims.models.kinds.sorting import config_of
    from mechclaims.models.specs import parse

    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path))
    asked: list[list[Path]] = []
    monkeypatch.setattr("mechclaims.training.sorting.train_many",
                        lambda runs, processes, device=None: asked.append(sorted(str(f) for _, f in runs)))
    claim = claim_by_id("urdshals2025.simple_head_modes")
    settings = Settings()
    monkeypatch.setattr(settings.models, "get", lambda spec: (_ for _ in ()).throw(MechclaimsError("not loaded")))
    evaluate(claim, "sorting:ci@0-1", settings)
    expected = sorted(str(run_folder(config_of(parse(spec)))) for spec in
                      ("sorting:ci@0", "sorting:ci@1", "sorting:ci@0/shuffled", "sorting:ci@1/shuffled"))
    assert asked == [expected]
