"""The IOI data set: determinism, the names in each prompt, the ABBA/BABA balance, restriction, its errors."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mechclaims.datasets import FIXTURES_ENV, fixture_lines, load_dataset
from mechclaims.datasets.ioi import TEMPLATES_FIXTURE, IOIDataset, build
from mechclaims.errors import MechclaimsError

REPO_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def _repository_fixtures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from the repository's fixtures/, whatever the calling shell sets."""
    monkeypatch.delenv(FIXTURES_ENV, raising=False)


def _starts(word: str, text: str) -> list[int]:
    """Where `word` occurs in `text` as a whole word."""
    return [match.start() for match in re.finditer(rf"\b{re.escape(word)}\b", text)]


def test_two_builds_are_identical_and_the_fingerprint_follows_seed_and_n() -> None:
    first, second = build(), load_dataset("ioi", n=256, seed=0)
    assert isinstance(second, IOIDataset)
    assert first == second and first.fingerprint == second.fingerprint
    assert len(first) == first.n == 256 and first.seed == 0 and first.dropped == ()
    fingerprints = {first.fingerprint, build(seed=1).fingerprint, build(n=255).fingerprint}
    assert len(fingerprints) == 3
    assert "n=256" in first.provenance and "seed=0" in first.provenance and TEMPLATES_FIXTURE in first.provenance


def test_each_prompt_names_the_io_once_and_the_subject_twice() -> None:
    dataset = build(n=400, seed=3)
    for text, row in zip(dataset.texts, dataset.metadata):
        io, s = str(row["io"]), str(row["s"])
        assert io != s and {io, s} <= set(dataset.names), text
        io_at, s_at = _starts(io, text), _starts(s, text)
        assert len(io_at) == 1 and len(s_at) == 2, text
        assert (io_at[0] < s_at[0]) == (row["order"] == "ABBA"), text
        assert _starts(str(row["place"]), text) and _starts(str(row["object"]), text), text
        assert text == text.strip() and text.endswith(" to"), text
    assert len({row["template"] for row in dataset.metadata}) == len(dataset.templates)


@pytest.mark.parametrize("n", [2, 256, 1000])
def test_half_the_prompts_are_abba_and_half_baba(n: int) -> None:
    orders = Counter(row["order"] for row in build(n=n).metadata)
    assert orders == {"ABBA": n // 2, "BABA": n // 2}


def test_restricted_drops_the_rejected_words_and_redraws_n_prompts() -> None:
    full = build(n=300, seed=5)
    rejected = {*full.names[::3], full.places[0], full.objects[-1]}
    restricted = full.restricted(lambda word: word not in rejected)
    assert restricted.dropped == tuple(sorted(rejected))
    assert len(restricted) == restricted.n == 300 and restricted.seed == 5
    assert restricted.fingerprint != full.fingerprint
    assert not rejected & {*restricted.names, *restricted.places, *restricted.objects}
    for text in restricted.texts:
        assert not [word for word in rejected if _starts(word, text)], text
    assert restricted.restricted(lambda word: True) == restricted
    again = restricted.restricted(lambda word: word != restricted.names[0])
    assert again.dropped == tuple(sorted({*rejected, restricted.names[0]}))


@pytest.mark.parametrize(
    ("rejects", "message"),
    [
        (lambda word: True, r"0 names, 0 places and 0 objects left"),
        (lambda word: word[0].isupper() and word != "John", r"1 names, \d+ places and \d+ objects left"),
        (lambda word: word.islower(), r"0 places and 0 objects left"),
    ],
)
def test_restricting_too_much_away_is_an_error(rejects: Callable[[str], bool], message: str) -> None:
    with pytest.raises(MechclaimsError, match=message) as info:
        build(n=4).restricted(lambda word: not rejects(word))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("options", [{"n": 0}, {"n": -3}, {"seed": -1}])
def test_a_bad_n_or_seed_is_an_error(options: dict[str, int]) -> None:
    with pytest.raises(MechclaimsError, match=r"ioi needs n >= 1 and seed >= 0") as info:
        load_dataset("ioi", **options)
    assert "\n" not in str(info.value)


def test_every_template_has_one_io_two_subjects_a_place_and_an_object() -> None:
    templates = fixture_lines(TEMPLATES_FIXTURE)
    assert len(templates) == len(set(templates)) >= 12
    for template in templates:
        counts = {slot: template.count(slot) for slot in ("[A]", "[B]", "[PLACE]", "[OBJECT]")}
        assert counts == {"[A]": 1, "[B]": 2, "[PLACE]": 1, "[OBJECT]": 1}, template
        assert template.index("[B] and [A]") == template.index("[B]"), template
        assert template.endswith(" to"), template


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace("[B] and [A]", "[A] and [B]", 1), r"line 1 .* must introduce the two people"),
        (lambda text: text.replace("[OBJECT]", "[THING]", 1), r"line 1 .* has placeholders"),
        (lambda text: text + "\nThen [B] and [A] saw Sam at the [PLACE]. [B] gave a [OBJECT] to\n",
         r"name 'Sam' also occurs in a template"),
        (lambda text: text + "\n[B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to\n",
         r"line 15 .* space before every placeholder"),
    ],
)
def test_a_bad_template_is_an_error(
    edit: Callable[[str], str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "fixtures"
    shutil.copytree(REPO_FIXTURES, copy)
    templates = copy / TEMPLATES_FIXTURE
    templates.write_text(edit(templates.read_text(encoding="utf-8")), encoding="utf-8")
    monkeypatch.setenv(FIXTURES_ENV, str(copy))
    with pytest.raises(MechclaimsError, match=message) as info:
        build()
    assert "\n" not in str(info.value)
