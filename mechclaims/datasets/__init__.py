"""Deterministic data sets built from fixtures/ (DESIGN.md, Layout): name -> Dataset, each with a fingerprint."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from mechclaims.datasets import forward_check, generic_text, ioi, token_categories
from mechclaims.datasets.base import FIXTURES_ENV, Dataset, fixture_lines, fixtures_dir, read_fixture
from mechclaims.errors import MechclaimsError


@dataclass(frozen=True)
class Builder:
    """How to build one data set: the function, and the keyword options it takes with their exact types."""

    build: Callable[..., Dataset]
    options: Mapping[str, type]


DATASETS: Mapping[str, Builder] = MappingProxyType(
    {
        forward_check.NAME: Builder(forward_check.build, {}),
        generic_text.NAME: Builder(generic_text.build, {"n": int, "max_words": int}),
        ioi.NAME: Builder(ioi.build, {"n": int, "seed": int}),
        token_categories.NAME: Builder(token_categories.build, {}),
    }
)


def load_dataset(name: str, **options: object) -> Dataset:
    """Build the data set `name`; an unknown name or option, or a wrongly typed value, is a one-line error."""
    builder = DATASETS.get(name)
    if builder is None:
        known = ", ".join(DATASETS)
        raise MechclaimsError(f"unknown data set {name!r}{_suggestion(name, DATASETS)}: use one of {known}")
    for key, value in options.items():
        expected = builder.options.get(key)
        if expected is None:
            allowed = ", ".join(builder.options) or "none"
            raise MechclaimsError(
                f"data set {name!r} has no option {key!r}{_suggestion(key, builder.options)}: its options are {allowed}"
            )
        if type(value) is not expected:
            raise MechclaimsError(
                f"data set {name!r} option {key}={value!r} has type {type(value).__name__}: pass a value of type "
                f"{expected.__name__}"
            )
    return builder.build(**options)


def _suggestion(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


__all__ = [
    "DATASETS",
    "FIXTURES_ENV",
    "Builder",
    "Dataset",
    "fixture_lines",
    "fixtures_dir",
    "load_dataset",
    "read_fixture",
]
