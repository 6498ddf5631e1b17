"""A dozen short English sentences written for this project, for checking forward passes."""

from __future__ import annotations

from mechclaims.datasets.base import Dataset, fixture_lines

NAME = "forward_check"
VERSION = "1"
FIXTURE = "prompts/forward_check.txt"


def build() -> Dataset:
    """One text per non-blank line of fixtures/prompts/forward_check.txt, in file order."""
    return Dataset(
        name=NAME,
        version=VERSION,
        texts=fixture_lines(FIXTURE),
        provenance=f"fixtures/{FIXTURE}: sentences written for mechclaims (see fixtures/README.md)",
    )
