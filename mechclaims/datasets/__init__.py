"""Deterministic data sets built from fixtures/ (docs/design.md, Layout): name -> Dataset, each with a fingerprint."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from mechclaims.datasets import forward_check, generic_text, ioi, token_categories
from mechclaims.datasets.base import FIXTURES_ENV, Dataset, fixture_lines, fixtures_dir, read_fixture
from mechclaims.errors import MechclaimsError, did_you_mean


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
        raise MechclaimsError(f"unknown data set {name!r}{did_you_mean(name, DATASETS)}: use one of {known}")
    for key, value in options.items():
        expected = builder.options.get(key)
        if expected is None:
            allowed = ", ".join(builder.options) or "none"
            raise MechclaimsError(
                f"data set {name!r} has no option {key!r}{did_you_mean(key, builder.options)}: its options are {allowed}"
            )
        if type(value) is not expected:
            raise MechclaimsError(
                f"data set {name!r} option {key}={value!r} has type {type(value).__name__}: pass a value of type "
                f"{expected.__name__}"
            )
    return builder.build(**options)


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
