"""Data sets built from fixtures/: determinism, fingerprints, provenance of the texts, errors, the fixtures rules."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import platform
import re
import shutil
import sys
from pathlib import Path

import pytest

from mechclaims.datasets import DATASETS, FIXTURES_ENV, Dataset, fixtures_dir, load_dataset
from mechclaims.datasets.generic_text import prose_paragraphs
from mechclaims.errors import MechclaimsError

REPO_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def _repository_fixtures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from the repository's fixtures/, whatever the calling shell sets."""
    monkeypatch.delenv(FIXTURES_ENV, raising=False)


@pytest.fixture
def fixtures_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of fixtures/ that MECHCLAIMS_FIXTURES points at, free to edit."""
    copy = tmp_path / "fixtures"
    shutil.copytree(REPO_FIXTURES, copy)
    monkeypatch.setenv(FIXTURES_ENV, str(copy))
    return copy


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_two_builds_are_identical(name: str) -> None:
    first, second = load_dataset(name), load_dataset(name)
    assert first == second
    assert first.fingerprint == second.fingerprint
    assert re.fullmatch(r"[0-9a-f]{64}", first.fingerprint)
    assert first.provenance


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registered_options_match_the_builder_signature(name: str) -> None:
    """The option types load_dataset checks are those of the builder's keyword defaults, and nothing else."""
    builder = DATASETS[name]
    parameters = inspect.signature(builder.build).parameters
    assert {key: type(parameter.default) for key, parameter in parameters.items()} == dict(builder.options)
    assert all(parameter.kind is inspect.Parameter.KEYWORD_ONLY for parameter in parameters.values())


def test_the_fingerprint_is_sha256_of_the_canonical_content() -> None:
    """Recomputed independently; a change of version, text or metadata each changes it."""
    base = Dataset(name="d", version="1", texts=("a b", "c"), provenance="test", metadata=({"k": 1}, {"k": 2}))
    canonical = json.dumps(
        {"metadata": [{"k": 1}, {"k": 2}], "name": "d", "texts": ["a b", "c"], "version": "1"},
        separators=(",", ":"),
    )
    assert base.fingerprint == hashlib.sha256(canonical.encode()).hexdigest()
    variants = [
        Dataset(name="d", version="2", texts=("a b", "c"), provenance="test", metadata=({"k": 1}, {"k": 2})),
        Dataset(name="d", version="1", texts=("a b", "C"), provenance="test", metadata=({"k": 1}, {"k": 2})),
        Dataset(name="d", version="1", texts=("a b", "c"), provenance="test", metadata=({"k": 1}, {"k": 3})),
    ]
    assert len({base.fingerprint, *(variant.fingerprint for variant in variants)}) == 4


def test_a_dataset_is_immutable_and_checked_when_built() -> None:
    dataset = Dataset(name="d", version="1", texts=("a",), provenance="test", metadata=({"k": 1},))
    with pytest.raises(TypeError):
        dataset.metadata[0]["k"] = 2  # type: ignore[index]
    with pytest.raises(MechclaimsError, match="2 metadata rows for 1 texts"):
        Dataset(name="d", version="1", texts=("a",), provenance="test", metadata=({}, {}))
    with pytest.raises(MechclaimsError, match="empty"):
        Dataset(name="d", version="1", texts=("a", "  "), provenance="test")


def test_truncation_changes_the_fingerprint_and_fewer_texts_are_a_prefix() -> None:
    default, short, fewer = load_dataset("generic_text"), load_dataset("generic_text", max_words=20), load_dataset(
        "generic_text", n=10
    )
    assert len({default.fingerprint, short.fingerprint, fewer.fingerprint}) == 3
    assert fewer.texts == default.texts[:10]


@pytest.mark.parametrize("max_words", [5, 13])
def test_truncation_keeps_the_first_max_words_words(max_words: int) -> None:
    full = load_dataset("generic_text", max_words=10_000)
    cut = load_dataset("generic_text", max_words=max_words)
    assert cut.metadata == full.metadata
    assert all(cut_text == " ".join(text.split()[:max_words]) for cut_text, text in zip(cut.texts, full.texts))
    assert max(len(text.split()) for text in cut.texts) == max_words


def test_editing_a_fixture_changes_the_data_set_and_its_fingerprint(fixtures_copy: Path) -> None:
    """Build from the repository, then from an edited copy named by MECHCLAIMS_FIXTURES."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(FIXTURES_ENV)
        original, original_text = load_dataset("forward_check"), load_dataset("generic_text")
    prompts = fixtures_copy / "prompts" / "forward_check.txt"
    prompts.write_text(prompts.read_text(encoding="utf-8").replace("cat", "dog", 1), encoding="utf-8")
    modules = fixtures_copy / "generic_text" / "stdlib_modules.txt"
    first_module = str(original_text.metadata[0]["module"])
    kept = [name for name in modules.read_text(encoding="utf-8").split() if name != first_module]
    modules.write_text("\n".join(kept), encoding="utf-8")
    edited, edited_text = load_dataset("forward_check"), load_dataset("generic_text")
    assert fixtures_dir() == fixtures_copy
    assert edited.texts[0] == original.texts[0].replace("cat", "dog") != original.texts[0]
    assert edited.fingerprint != original.fingerprint
    assert edited_text.fingerprint != original_text.fingerprint
    assert first_module not in {row["module"] for row in edited_text.metadata}


def test_generic_text_comes_from_the_named_standard_library_docstring() -> None:
    """Independent check: each text occurs in its module's whitespace-normalised __doc__."""
    dataset = load_dataset("generic_text", n=100)
    assert len(dataset) == len(set(dataset.texts)) == 100
    for text, row in zip(dataset.texts, dataset.metadata):
        module = str(row["module"])
        assert module.partition(".")[0] in sys.stdlib_module_names
        assert text in " ".join((importlib.import_module(module).__doc__ or "").split()), module
    assert len({row["module"] for row in dataset.metadata}) >= 50
    assert platform.python_version() in dataset.provenance


def test_generic_text_holds_no_code_or_markup() -> None:
    for text in load_dataset("generic_text", n=100, max_words=10_000).texts:
        assert text == " ".join(text.split())
        assert not re.search(r">>>|^\.\.\.|[=`{}\[\]<>_\\]|^\s*(def|class|import|from|return)\b", text), text
        assert text[0].isupper() and text[-1] in ".!?", text


def test_prose_paragraphs_keep_only_prose() -> None:
    """Each rejected paragraph breaks one rule: too short, no full stop, doctest, indented, bullet, code characters."""
    docstring = '''Module title line.

        This paragraph is ordinary English prose that explains what the module does
        and spans two lines of the docstring.

        Example usage follows in a doctest of the function defined in this module:

        >>> compute(1, 2)
        3

            Python runs the module over every file that is named on its command line.

        The options are the following, each described in its own entry below.
        - Verbose output prints every file name as it is processed by the module.

        The result is stored in the attribute `value_cache` of the instance it belongs to.

        A second prose paragraph of ordinary words, also long enough to be kept here.
        '''
    assert prose_paragraphs(docstring) == [
        (1, "This paragraph is ordinary English prose that explains what the module does and spans two lines of the "
            "docstring."),
        (7, "A second prose paragraph of ordinary words, also long enough to be kept here."),
    ]


def test_forward_check_reads_its_fixture_line_by_line() -> None:
    dataset = load_dataset("forward_check")
    lines = (REPO_FIXTURES / "prompts" / "forward_check.txt").read_text(encoding="utf-8").splitlines()
    assert dataset.texts == tuple(lines)
    assert len(dataset) == 12 == len(set(dataset.texts))
    assert all(text[0].isupper() and text[-1] in ".?!" and len(text.split()) <= 12 for text in dataset.texts)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("generic_txt", {}, r"unknown data set 'generic_txt' \(did you mean 'generic_text'\?\): use one of"),
        ("forward-check", {}, r"did you mean 'forward_check'\?"),
        ("zzz", {}, r"unknown data set 'zzz': use one of forward_check, generic_text, ioi, token_categories$"),
        ("generic_text", {"max_word": 3}, r"no option 'max_word' \(did you mean 'max_words'\?\)"),
        ("forward_check", {"n": 3}, r"no option 'n': its options are none"),
        ("generic_text", {"n": True}, r"n=True has type bool: pass a value of type int"),
        ("generic_text", {"max_words": 2.5}, r"max_words=2.5 has type float"),
        ("generic_text", {"n": 0}, r"needs n >= 1"),
        ("generic_text", {"n": 100_000}, r"fewer than n=100000"),
    ],
)
def test_bad_names_and_options_are_one_line_errors(name: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(MechclaimsError, match=message) as info:
        load_dataset(name, **options)
    assert "\n" not in str(info.value)


def test_generic_text_rejects_a_module_outside_the_standard_library(fixtures_copy: Path) -> None:
    modules = fixtures_copy / "generic_text" / "stdlib_modules.txt"
    modules.write_text(modules.read_text(encoding="utf-8") + "pytest\n", encoding="utf-8")
    with pytest.raises(MechclaimsError, match="pytest is not a standard-library module"):
        load_dataset("generic_text")


def test_fixtures_are_found_beside_the_package_or_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fixtures_dir() == REPO_FIXTURES
    monkeypatch.setenv(FIXTURES_ENV, str(tmp_path / "absent"))
    with pytest.raises(MechclaimsError, match=f"{FIXTURES_ENV}=.*absent is not a directory"):
        load_dataset("forward_check")
    monkeypatch.setenv(FIXTURES_ENV, str(tmp_path))
    with pytest.raises(MechclaimsError, match=r"cannot read fixture .*forward_check\.txt .*restore it") as info:
        load_dataset("forward_check")
    assert "\n" not in str(info.value)


def test_fixtures_hold_no_python() -> None:
    everything = list(REPO_FIXTURES.rglob("*"))
    code = [path for path in everything if path.suffix in {".py", ".pyc", ".pyi"} or path.name == "__pycache__"]
    assert everything and not code


def test_the_fixtures_readme_lists_exactly_the_files_present() -> None:
    """Every file has a provenance row, and no row names a file that does not exist (no placeholders)."""
    readme = (REPO_FIXTURES / "README.md").read_text(encoding="utf-8")
    files_table = readme.split("## Files", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([^`]+)` \|", files_table, flags=re.MULTILINE))
    present = {path.relative_to(REPO_FIXTURES).as_posix() for path in REPO_FIXTURES.rglob("*") if path.is_file()}
    assert listed == present - {"README.md"}
