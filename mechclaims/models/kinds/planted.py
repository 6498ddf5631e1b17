"""`planted:<name>`: the positive control for the token-bundle claims, a small GPT-2 with planted bundles
(`bundles`), and its negative twin with random directions in their place (`random-neurons`)."""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING, Any

from mechclaims.errors import MechclaimsError
from mechclaims.models.controls import planted_bundles, word_tokenizer

if TYPE_CHECKING:
    from mechclaims.models.specs import Spec

PLANTED = {"bundles": False, "random-neurons": True}
"""planted:<name> -> whether the layer-0 neurons are random directions (the negative twin)."""


def check(spec: Spec, probe_hub: bool) -> None:
    """Only the planted models in PLANTED exist."""
    if spec.argument not in PLANTED:
        raise MechclaimsError(f"unknown planted model {spec.text!r}: use {', '.join('planted:' + p for p in PLANTED)}")


def boot(spec: Spec) -> Any:
    """The planted model with a word-level tokenizer over its vocabulary (loaded from disk, as
    TransformerBridge expects a tokenizer that knows its own name)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    model, _ = planted_bundles(random_neurons=PLANTED[spec.argument])
    with tempfile.TemporaryDirectory() as folder:
        word_tokenizer(model.config.vocab_size).save_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return TransformerBridge.boot_transformers(spec.text, hf_model=model, tokenizer=tokenizer)
