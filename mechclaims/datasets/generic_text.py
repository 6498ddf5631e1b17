"""Generic English prose: paragraphs of the docstrings of standard-library modules (read at build time, never copied).

The modules are those listed in fixtures/generic_text/stdlib_modules.txt, taken in sorted order. Each docstring is
dedented and split at blank lines; a paragraph is kept when it looks like prose (`prose_paragraphs`). Texts are
taken round-robin over the modules (every module's first prose paragraph, then every module's second, ...), so
they spread over many modules; a paragraph seen before is skipped. The choice of paragraphs does not depend on
`max_words`: each is then cut to its first `max_words` words (so a tiny `max_words` may repeat a text). The same
Python minor version gives the same texts; the fingerprint covers the texts, so a Python whose docstrings differ
gives another fingerprint.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import platform
import re
import sys

from mechclaims.datasets.base import Dataset, fixture_lines
from mechclaims.errors import MechclaimsError

NAME = "generic_text"
VERSION = "1"
MODULES_FIXTURE = "generic_text/stdlib_modules.txt"
MIN_WORDS = 10
CODE_CHARACTERS = frozenset("=<>{}[]`\\|_@#$%^~*")
CODE_LINE_STARTS = (">>>", "...", "-", "*", "+")
SENTENCE_ENDS = (".", "!", "?")


def normalise(text: str) -> str:
    """Runs of whitespace (newlines included) collapsed to one space, ends stripped."""
    return " ".join(text.split())


def prose_paragraphs(docstring: str) -> list[tuple[int, str]]:
    """(index among the docstring's paragraphs, normalised text) of each prose-like paragraph.

    Prose: no indented line (code blocks, continuation of lists), no line starting with a doctest prompt or
    bullet, none of the characters code and markup use (`=`, brackets, backticks, `_`, ...), at least
    MIN_WORDS words, a capital first letter and a full stop, question or exclamation mark at the end.
    """
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(docstring))
    kept: list[tuple[int, str]] = []
    for index, paragraph in enumerate(paragraphs):
        lines = paragraph.splitlines()
        if any(line[:1].isspace() or line.startswith(CODE_LINE_STARTS) for line in lines):
            continue
        text = normalise(paragraph)
        if len(text.split()) < MIN_WORDS or not text[0].isupper() or not text.endswith(SENTENCE_ENDS):
            continue
        if CODE_CHARACTERS.intersection(text):
            continue
        kept.append((index, text))
    return kept


def build(*, n: int = 64, max_words: int = 48) -> Dataset:
    """`n` prose paragraphs from standard-library module docstrings, each cut to its first `max_words` words."""
    if n < 1 or max_words < 1:
        raise MechclaimsError(f"{NAME} needs n >= 1 and max_words >= 1 (got n={n}, max_words={max_words})")
    if sys.flags.optimize >= 2:
        raise MechclaimsError(f"{NAME} reads docstrings, which python -OO strips: run without -OO")
    modules = sorted(set(fixture_lines(MODULES_FIXTURE)))
    per_module = [[(module, index, text) for index, text in prose_paragraphs(_docstring(module))] for module in modules]
    chosen: dict[str, dict[str, str | int]] = {}
    for row in itertools.chain.from_iterable(itertools.zip_longest(*per_module)):
        if row is not None and row[2] not in chosen:
            chosen[row[2]] = {"module": row[0], "paragraph": row[1]}
    if len(chosen) < n:
        raise MechclaimsError(
            f"{NAME} found {len(chosen)} distinct prose paragraphs in the modules of fixtures/{MODULES_FIXTURE}, "
            f"fewer than n={n}: ask for fewer or list more modules there"
        )
    paragraphs = list(chosen.items())[:n]
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return Dataset(
        name=NAME,
        version=VERSION,
        texts=tuple(" ".join(paragraph.split()[:max_words]) for paragraph, _ in paragraphs),
        provenance=(
            f"prose paragraphs of the module docstrings of {len(modules)} standard-library modules "
            f"(fixtures/{MODULES_FIXTURE}) of {python}, read at build time; n={n}, max_words={max_words}"
        ),
        metadata=tuple(row for _, row in paragraphs),
    )


def _docstring(module: str) -> str:
    """The module's docstring ('' when it has none); a non-standard or missing module is a one-line error."""
    if module.partition(".")[0] not in sys.stdlib_module_names:
        raise MechclaimsError(
            f"{NAME}: {module} is not a standard-library module: remove it from fixtures/{MODULES_FIXTURE}"
        )
    try:
        return importlib.import_module(module).__doc__ or ""
    except ImportError as exc:
        raise MechclaimsError(
            f"{NAME}: standard-library module {module} cannot be imported ({exc}): "
            f"remove it from fixtures/{MODULES_FIXTURE}"
        ) from None
