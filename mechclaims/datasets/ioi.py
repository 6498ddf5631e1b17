"""Indirect Object Identification (IOI) prompts filled from the templates and word lists in fixtures/ioi/.

Each template (fixtures/ioi/templates.txt, written in BABA form) introduces two people, "[B] and [A]", then has
[B] do something with an [OBJECT] "to" someone, and ends right before the indirect object, so the next token
should be " " + IO. Prompt i is BABA when i is even and ABBA (the first clause swapped to "[A] and [B]") when
odd; from numpy's default_rng(seed) it draws, in this order, the template, two distinct names (IO fills [A],
the subject S fills [B]), the place and the object, each uniformly. Each word list is read sorted and
deduplicated. Names appear nowhere else in a prompt (checked at build time), so a consumer finds IO as the
first occurrence of the IO name's token, S1 and S2 as the first and second of the S name's, and 'end' as
the last token. Metadata per prompt: io, s, order ("ABBA"/"BABA"), template (index in the file's non-blank
lines), place, object. `IOIDataset.restricted` drops words (e.g. those that are not one token) and redraws.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mechclaims.datasets.base import Dataset, fixture_lines
from mechclaims.errors import MechclaimsError

NAME = "ioi"
VERSION = "1"
TEMPLATES_FIXTURE = "ioi/templates.txt"
NAMES_FIXTURE = "ioi/names.txt"
PLACES_FIXTURE = "ioi/places.txt"
OBJECTS_FIXTURE = "ioi/objects.txt"
FIXTURES = (TEMPLATES_FIXTURE, NAMES_FIXTURE, PLACES_FIXTURE, OBJECTS_FIXTURE)
PLACEHOLDER_COUNTS = {"[A]": 1, "[B]": 2, "[PLACE]": 1, "[OBJECT]": 1}
FIRST_CLAUSE = "[B] and [A]"
SWAPPED_CLAUSE = "[A] and [B]"


@dataclass(frozen=True, kw_only=True)
class IOIDataset(Dataset):
    """IOI prompts with the inputs that made them: `n`, `seed`, the templates and the (sorted) word lists, and
    `dropped`, the sorted words that `restricted` removed from the fixture lists (empty for `build`)."""

    n: int
    seed: int
    templates: tuple[str, ...]
    names: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]
    dropped: tuple[str, ...] = ()

    def restricted(self, keep: Callable[[str], bool]) -> IOIDataset:
        """The same n prompts redrawn with the same seed from the names, places and objects `w` with keep(w) true.

        `keep` gets the bare word (no leading space: add it yourself to test the token a prompt holds); the
        words it rejects are added to `dropped`. Fewer than two names, or no place or object, left is an error.
        """
        kept = {word: keep(word) for words in self.words for word in words}
        names, places, objects = (tuple(word for word in words if kept[word]) for words in self.words)
        removed = {word for word, keeps in kept.items() if not keeps}
        return _generate(
            n=self.n, seed=self.seed, templates=self.templates, names=names, places=places, objects=objects,
            dropped=tuple(sorted(removed.union(self.dropped))),
        )

    @property
    def words(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """The names, places and objects the prompts are drawn from."""
        return self.names, self.places, self.objects


def build(*, n: int = 256, seed: int = 0) -> IOIDataset:
    """`n` IOI prompts drawn with numpy's default_rng(`seed`) from the fixtures in fixtures/ioi/."""
    templates = fixture_lines(TEMPLATES_FIXTURE)
    for line, template in enumerate(templates, start=1):
        check_template(template, where=f"non-blank line {line} of fixtures/{TEMPLATES_FIXTURE}")
    names, places, objects = (
        tuple(sorted(set(fixture_lines(path)))) for path in (NAMES_FIXTURE, PLACES_FIXTURE, OBJECTS_FIXTURE)
    )
    return _generate(n=n, seed=seed, templates=templates, names=names, places=places, objects=objects, dropped=())


def check_template(template: str, *, where: str) -> None:
    """A one-line error unless `template` holds one [A], two [B], one [PLACE] and one [OBJECT], no other
    bracket, a space before each placeholder, and opens its story with the literal "[B] and [A]" (the first [B])."""
    counts = {placeholder: template.count(placeholder) for placeholder in PLACEHOLDER_COUNTS}
    if counts != PLACEHOLDER_COUNTS:
        raise MechclaimsError(f"{NAME}: {where} has placeholders {counts}: it needs exactly {PLACEHOLDER_COUNTS}")
    bare = template
    for placeholder in PLACEHOLDER_COUNTS:
        bare = bare.replace(placeholder, "")
    if "[" in bare or "]" in bare:
        raise MechclaimsError(f"{NAME}: {where} has an unknown placeholder: use only {', '.join(PLACEHOLDER_COUNTS)}")
    if re.search(r"(^|[^ ])\[(A|B|PLACE|OBJECT)\]", template):
        raise MechclaimsError(f"{NAME}: {where} must put a space before every placeholder (no template may open with "
                              "one): a word's token then always carries its leading space")
    if template.find(FIRST_CLAUSE) != template.find("[B]"):
        raise MechclaimsError(f"{NAME}: {where} must introduce the two people as {FIRST_CLAUSE!r} (BABA form)")


def _generate(
    *,
    n: int,
    seed: int,
    templates: tuple[str, ...],
    names: tuple[str, ...],
    places: tuple[str, ...],
    objects: tuple[str, ...],
    dropped: tuple[str, ...],
) -> IOIDataset:
    """Draw the prompts (see the module docstring) after checking the options and word lists."""
    if n < 1 or seed < 0:
        raise MechclaimsError(f"{NAME} needs n >= 1 and seed >= 0 (got n={n}, seed={seed})")
    if len(names) < 2 or not places or not objects:
        raise MechclaimsError(
            f"{NAME} has {len(names)} names, {len(places)} places and {len(objects)} objects left: it needs at "
            f"least 2 names, 1 place and 1 object (keep more words, or add them to fixtures/ioi/)"
        )
    _check_names_appear_only_as_names(names, templates, places + objects)
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    rows: list[dict[str, str | int]] = []
    for index in range(n):
        order = "BABA" if index % 2 == 0 else "ABBA"
        template_index = int(rng.integers(len(templates)))
        io_index, s_index = (int(i) for i in rng.choice(len(names), size=2, replace=False))
        place, thing = places[int(rng.integers(len(places)))], objects[int(rng.integers(len(objects)))]
        template = templates[template_index]
        if order == "ABBA":
            template = template.replace(FIRST_CLAUSE, SWAPPED_CLAUSE, 1)
        io, s = names[io_index], names[s_index]
        filled = template.replace("[A]", io).replace("[B]", s).replace("[PLACE]", place).replace("[OBJECT]", thing)
        texts.append(filled)
        rows.append({"io": io, "s": s, "order": order, "template": template_index, "place": place, "object": thing})
    files = ", ".join(f"fixtures/{path}" for path in FIXTURES)
    restriction = f"; {len(dropped)} words dropped by restricted()" if dropped else ""
    return IOIDataset(
        name=NAME,
        version=VERSION,
        texts=tuple(texts),
        provenance=(
            f"IOI prompts filled from {files} with numpy default_rng; n={n}, seed={seed}, {len(templates)} "
            f"templates, {len(names)} names, {len(places)} places, {len(objects)} objects{restriction}"
        ),
        metadata=tuple(rows),
        n=n,
        seed=seed,
        templates=templates,
        names=names,
        places=places,
        objects=objects,
        dropped=dropped,
    )


def _check_names_appear_only_as_names(
    names: tuple[str, ...], templates: tuple[str, ...], words: tuple[str, ...]
) -> None:
    """A one-line error when a name occurs as a whole word in a template, place or object."""
    text = "\n".join(templates + words)
    for name in names:
        if re.search(rf"\b{re.escape(name)}\b", text):
            raise MechclaimsError(
                f"{NAME}: the name {name!r} also occurs in a template, place or object: remove it from "
                f"fixtures/{NAMES_FIXTURE}"
            )
