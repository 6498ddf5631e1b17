"""The model-spec grammar, read in one place into a typed Spec, and the table of spec kinds (docs/design.md, Models).

    spec := "random" ["@" seed] ":" base | base
    base := "auto" | kind ":" argument | a bundled name | a folder path | a Hugging Face name ["@" revision]

A folder of training checkpoints (`checkpoint-<step>/` subfolders, as the transformers Trainer writes them) and a
sorting run's `/steps` are one model per step (a kind's `expanded(spec) -> [step spec]`); a revision is a hub branch,
tag or commit (a Pythia `step1000` branch, say).

Each kind is one module in `mechclaims.models.kinds` with `check(spec, probe_hub)` (refuse, before
anything loads, with a one-line MechclaimsError naming the fix) and `boot(spec) -> TransformerBridge`; a kind
whose specs can name several models (a family) also has `members(spec) -> [member spec]`, and a kind with work
that pays to do for many specs at once (training the suite's own models in parallel) has
`prepare(specs, processes)`. A kind that can name the files a spec loads from has `sources(spec) -> [Path] | None`
(`identity`: a model whose files have not changed need not load when its measurements are cached); a kind
whose models the suite trains itself has `recipe(spec) -> str`, what made the model (baselines compare a retrained
model by it). A new kind of model (the suite's own trained models, say) is one more module and one more KINDS entry,
written `<kind>:<argument>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from mechclaims.errors import MechclaimsError
from mechclaims.models.kinds import bundled, hub, planted, random, sorting

RANDOM = re.compile(r"random(?:@(?P<seed>\d+))?:(?P<base>.+)")
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
REVISION = re.compile(r"[\w.-]+")
AUTO = "auto"


@dataclass(frozen=True)
class Spec:
    """One parsed model spec. `text` is its canonical spelling, which reports show as the model's name
    (`random@0:` is written `random:`); `argument` is what the kind loads (a hub name, a folder path, a
    bundled or planted name); `revision` the hub revision of a hub name (None: its main branch); `seed` and `base`
    belong to `random:`, the null model of `base`."""

    text: str
    kind: str
    argument: str
    seed: int = 0
    base: Spec | None = None
    revision: str | None = None


class Kind(Protocol):
    """What a kind module provides."""

    def check(self, spec: Spec, probe_hub: bool) -> None: ...

    def boot(self, spec: Spec) -> Any: ...


KINDS: dict[str, Kind] = {
    "hub": hub,
    "folder": hub,
    "bundled": bundled,
    "random": random,
    "planted": planted,
    "sorting": sorting,
}
"""Spec kind -> the module that checks and boots it. `auto` is no kind: it is resolved to a spec of
another kind before loading."""
BY_FORM = frozenset({"hub", "folder", "bundled", "random"})
"""Kinds recognised by the form of the spec; every other kind in KINDS is written `<kind>:<argument>`."""


def random_text(seed: int, base: str) -> str:
    """The canonical spelling of the random null of `base` under `seed`."""
    return f"random:{base}" if seed == 0 else f"random@{seed}:{base}"


def parse(text: str) -> Spec:
    """The one reading of a spec string; a spec that no kind accepts is a one-line MechclaimsError."""
    if not text.strip():
        raise MechclaimsError("empty model spec: name a model, e.g. --model smollm2-135m (a folder as ./name)")
    match = RANDOM.fullmatch(text)
    if match is None:
        return _parse_base(text, text)
    if RANDOM.fullmatch(match["base"]):
        raise MechclaimsError(f"nested random: in model spec {text!r}: use random:<spec> once")
    base = _parse_base(match["base"], text)
    seed = int(match["seed"] or 0)
    if seed >= 2**32:
        raise MechclaimsError(f"random seed {seed} in model spec {text!r} is too large: use a seed below 2**32")
    return Spec(random_text(seed, base.text), "random", base.text, seed=seed, base=base)


def _parse_base(text: str, whole: str) -> Spec:
    """A spec without the random: prefix; `whole` is the spec as written, for the error message."""
    kind, colon, argument = text.partition(":")
    if text == AUTO:
        return Spec(text, AUTO, text)
    if colon and kind in _prefixed_kinds():
        return Spec(text, kind, argument)
    if text in bundled.BUNDLED:
        return Spec(text, "bundled", text)
    if text.startswith(("/", ".", "~")) or hub.existing_folder(text) is not None:
        folder = _folder_text(text)
        return Spec(folder, "folder", folder)
    if _is_hub_name(text):
        return Spec(text, "hub", text)
    name, at, revision = text.partition("@")
    if at and _is_hub_name(name) and REVISION.fullmatch(revision):
        return Spec(text, "hub", name, revision=revision)
    raise MechclaimsError(
        f"unknown model spec {whole!r}: use a Hugging Face name (gpt2) or name@revision, a checkpoint folder, "
        f"{', '.join([*bundled.BUNDLED, *(f'{kind}:<name>' for kind in _prefixed_kinds())])}, random:<spec> or auto"
    )


def _folder_text(text: str) -> str:
    """A folder spec's canonical spelling: repeated and trailing slashes dropped (`d/` and `d//x` are `d`, `d/x`)."""
    return re.sub("/+", "/", text).rstrip("/") or "/"


def same_model(spec: Spec) -> tuple[Any, ...]:
    """What a spec loads, so that two spellings of one model are one: a folder by its resolved path."""
    if spec.base is not None:
        return ("random", spec.seed, same_model(spec.base))
    if spec.kind == "folder":
        return ("folder", str(Path(spec.argument).expanduser().resolve()))
    return (spec.kind, spec.argument, spec.revision)


def expanded(spec: Spec) -> list[Spec]:
    """The models a spec names: one per training step where its kind's `expanded` lists the steps (a folder of
    `checkpoint-<step>/` folders, a sorting run's `/steps`), also under random:; any other spec is itself."""
    if spec.base is not None:
        return [parse(random_text(spec.seed, member.text)) for member in expanded(spec.base)]
    listed = getattr(KINDS.get(spec.kind), "expanded", None)
    return [parse(step) for step in ([] if listed is None else listed(spec))] or [spec]


def _prefixed_kinds() -> list[str]:
    """The kinds written `<kind>:<argument>`, in table order."""
    return [kind for kind in KINDS if kind not in BY_FORM]


def _is_hub_name(text: str) -> bool:
    """A repository id the Hugging Face hub accepts (`name` or `owner/name`)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not HUB_NAME.fullmatch(text):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def resolved(spec: Spec, auto: Callable[[], str]) -> Spec:
    """`spec` with `auto` (also under random:) replaced by the spec that `auto()` names."""
    if spec.kind == AUTO:
        return parse(auto())
    if spec.base is not None and spec.base.kind == AUTO:
        return parse(random_text(spec.seed, auto()))
    return spec


def check(spec: Spec, probe_hub: bool = True) -> None:
    """Refuse a spec that cannot load, before anything loads; `auto` always resolves to a loadable model."""
    if spec.kind != AUTO:
        KINDS[spec.kind].check(spec, probe_hub)


def members(spec: Spec) -> list[str]:
    """The member specs when `spec` names a family (a kind with a `members` function), else []."""
    listed = getattr(KINDS.get(spec.kind), "members", None)
    return [] if listed is None else listed(spec)


def prepare(parsed: list[Spec], processes: int) -> None:
    """Each kind's `prepare` over its specs, where it has one."""
    for kind in KINDS:
        same = [spec for spec in parsed if spec.kind == kind]
        ready = getattr(KINDS[kind], "prepare", None)
        if same and ready is not None:
            ready(same, processes)


def recipe(spec: Spec) -> str | None:
    """What made a model the suite trains itself (its kind's `recipe`), by which a retrained model with other weight
    bits is still the same model; None for every other kind."""
    made = getattr(KINDS[spec.kind], "recipe", None)
    return None if made is None else made(spec)


def sources(spec: Spec) -> list[Path] | None:
    """The files a resolved spec loads from, or None where its kind cannot say (it is then always loaded)."""
    named = getattr(KINDS[spec.kind], "sources", None)
    return None if named is None else named(spec)


def boot(spec: Spec) -> Any:
    """A TransformerBridge for a resolved spec (no `auto` left)."""
    return KINDS[spec.kind].boot(spec)
