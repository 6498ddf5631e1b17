"""Model specs -> Model: parse once (`specs.parse`), check with the spec's kind before anything loads,
resolve `auto`, boot a TransformerBridge, and wrap it (`Model.from_bridge`)."""

from __future__ import annotations

from typing import Any

import torch

from mechclaims.errors import MechclaimsError
from mechclaims.models import identity, specs
from mechclaims.models.kinds import hub
from mechclaims.models.kinds.bundled import MODELS_EXTRA_HINT
from mechclaims.models.model import Model

DEFAULT_HUB_MODEL = "gpt2"
FALLBACK_MODEL = "smollm2-135m"
LOAD_SEED = 0
"""Parameters a checkpoint lacks (the masked-LM head of a sentence-embedding BERT such as minilm-l6) are
initialised at load; under this seed every load of one checkpoint is identical, so its fingerprint,
cache entries and baselines are stable."""


def resolve_auto() -> str:
    """`auto`: gpt2 when cached or the hub answers within 5 s, else the bundled smollm2-135m."""
    if hub.hub_cached(DEFAULT_HUB_MODEL) or hub.hub_reachable():
        return DEFAULT_HUB_MODEL
    return FALLBACK_MODEL


def check_spec(spec: str, probe_hub: bool = True) -> None:
    """Reject a spec that cannot load, before any model loads (usage errors are one line).

    With probe_hub, a hub name must be cached or the hub must answer within 5 s.
    """
    specs.check(specs.parse(spec), probe_hub)


def load_model(spec: str, remember: bool = True) -> Model:
    """Load a model spec (see docs/design.md, Models); raises MechclaimsError with a one-line fix. The caller's
    torch random state is left as it was. With `remember`, a model whose identity the cache folder holds for its
    files as they are now is not loaded until its bridge is read (`models.identity`), and one loaded is
    remembered."""
    parsed = specs.parse(spec)
    target = specs.resolved(parsed, resolve_auto)
    specs.check(target, probe_hub=True)
    resolved_from = "auto" if target != parsed else None
    known = identity.recall(target) if remember else None
    if known is not None:
        return Model(target.text, known.capabilities, known.fingerprint, resolved_from, known.initialised_at_load,
                     boot=lambda: _boot(target))
    model = Model.from_bridge(_boot(target), target.text, resolved_from=resolved_from)
    if remember:
        identity.remember(target, model)
    return model


def _boot(target: specs.Spec) -> Any:
    """The spec's bridge under LOAD_SEED; a failure inside the libraries is a one-line MechclaimsError."""
    loads = (target.base or target).text
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(LOAD_SEED)
            return specs.boot(target)
    except ImportError as exc:
        raise MechclaimsError(f"loading {loads!r} needs a missing package ({exc.name}): {MODELS_EXTRA_HINT}") from None
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MechclaimsError(f"could not load model {loads!r}: {first[:200]}; {hub.BUNDLED_HINT}") from None
