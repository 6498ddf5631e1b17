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
    held_out,
    load_config,
    sample_lists,
    train,
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
    assert (caps.n_layers, caps.n_heads, caps.has_mlp, caps.norm, caps.positions) == (1, 2, False, "none", "absolute")
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
    ("sorting:fulll", r"unknown sorting configuration 'fulll' \(did you mean 'full'\?\)"),
    ("sorting:ci@x", "write sorting:<configuration>"),
])
def test_bad_sorting_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(MechclaimsError, match=message):
        load_model(spec)


@pytest.mark.parametrize(("change", "message"), [
    ({"heads": 0}, "out of range"),
    ({"window": 100}, "needs list_length <= window <= numbers"),
    ({"d_model": 49}, "not a multiple of heads"),
    ({"learning_rate": "fast"}, "learning_rate='fast' must be float"),
    ({"targets": "reversed"}, "targets 'reversed' must be one of sorted, shuffled"),
])
def test_malformed_configurations_are_one_line_errors(change: dict, message: str) -> None:
    with pytest.raises(MechclaimsError, match=message):
        replace(load_config("ci"), **change)


def test_runs_trained_side_by_side_in_processes_are_the_bits_of_runs_trained_alone(short: SortingConfig,
                                                                                  tmp_path: Path) -> None:
    runs = [(short, tmp_path / "together-0"), (short.with_seed(1), tmp_path / "together-1")]
    train_many(runs, processes=2)
    for config, folder in runs:
        train(config, folder.with_name(f"alone-{config.seed}"), progress=False)
        together, alone = _weights(folder), _weights(folder.with_name(f"alone-{config.seed}"))
        assert set(together) == set(alone)
        assert all(np.array_equal(together[key], alone[key]) for key in alone), config.seed
    first, second = _weights(tmp_path / "together-0"), _weights(tmp_path / "together-1")
    assert not np.array_equal(first["tok_embed.weight"], second["tok_embed.weight"])


def test_a_pool_prepares_a_family_and_its_null_family_together(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The engine hands the pool the subject and its model null before loading either; the sorting kind trains every
    member of both that the cache lacks in one call."""
    from mechclaims.engine import Settings, evaluate
    from mechclaims.models.kinds.sorting import config_of
    from mechclaims.models.specs import parse

    monkeypatch.setenv("MECHCLAIMS_CACHE_DIR", str(tmp_path))
    asked: list[list[Path]] = []
    monkeypatch.setattr("mechclaims.training.sorting.train_many",
                        lambda runs, processes: asked.append(sorted(str(folder) for _, folder in runs)))
    claim = claim_by_id("urdshals2025.simple_head_modes")
    settings = Settings()
    monkeypatch.setattr(settings.models, "get", lambda spec: (_ for _ in ()).throw(MechclaimsError("not loaded")))
    evaluate(claim, "sorting:ci@0-1", settings)
    expected = sorted(str(run_folder(config_of(parse(spec)))) for spec in
                      ("sorting:ci@0", "sorting:ci@1", "sorting:ci@0/shuffled", "sorting:ci@1/shuffled"))
    assert asked == [expected]
