"""`random:<spec>` and `random@<seed>:<spec>`: the null model, `<spec>`'s architecture and tokenizer with
every matrix re-drawn from a Gaussian with that matrix's own mean and std (vectors kept)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechclaims.models import specs
from mechclaims.models.controls import redrawn
from mechclaims.models.model import INITIALISED_AT_LOAD, checked_fingerprint

if TYPE_CHECKING:
    from mechclaims.models.specs import Spec


def check(spec: Spec, probe_hub: bool) -> None:
    """The base spec must load."""
    assert spec.base is not None, "parse gives every random: spec a base"
    specs.check(spec.base, probe_hub)


def sources(spec: Spec) -> list[Path] | None:
    """The base's files (the redraw is code, seeded by the spec)."""
    assert spec.base is not None, "parse gives every random: spec a base"
    return specs.sources(spec.base)


def boot(spec: Spec) -> Any:
    """The base model re-drawn under `spec.seed`. The base's weights are checked first, so a non-finite
    weight is reported by its checkpoint name rather than redrawn into a matrix of NaNs. A null lists nothing as
    initialised at load: none of it is the checkpoint's."""
    from transformer_lens.model_bridge import TransformerBridge

    base = spec.base
    assert base is not None, "parse gives every random: spec a base"
    original = specs.boot(base)
    checked_fingerprint(original.original_model, base.text)
    null = redrawn(original.original_model, spec.seed)
    setattr(null, INITIALISED_AT_LOAD, ())
    return TransformerBridge.boot_transformers(spec.text, hf_model=null, tokenizer=original.tokenizer)

