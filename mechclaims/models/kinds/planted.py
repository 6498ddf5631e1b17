"""`planted:<name>`: positive controls with known structure, and their negative twins.

- `bundles`: a small GPT-2 with planted token bundles in its MLPs (the VSA claims); `random-neurons`: its
  twin with random directions in their place.
- `low-rank-head`: a one-layer GPT-2 whose head 0 has a rank-2 Omega, over a word vocabulary that holds every
  IOI word (the sparse-attention claims); its negative twin is `random:planted:low-rank-head`.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mechclaims.errors import MechclaimsError
from mechclaims.models.controls import planted_bundles, planted_low_rank_head, vocabulary_tokenizer, word_tokenizer

if TYPE_CHECKING:
    from mechclaims.models.specs import Spec


def _bundles(random_neurons: bool) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        model, _ = planted_bundles(random_neurons=random_neurons)
        return model, word_tokenizer(model.config.vocab_size)

    return build


def _low_rank_head() -> tuple[Any, Any]:
    """The model over the words of the IOI data set's prompts (punctuation split off)."""
    from mechclaims.datasets import load_dataset

    words = sorted({w for text in load_dataset("ioi").texts for w in re.findall(r"\w+|[^\w\s]+", text)})
    return planted_low_rank_head(words), vocabulary_tokenizer(words, split_punctuation=True)


PLANTED: dict[str, Callable[[], tuple[Any, Any]]] = {
    "bundles": _bundles(False),
    "random-neurons": _bundles(True),
    "low-rank-head": _low_rank_head,
}
"""planted:<name> -> a builder of (hf_model, tokenizer)."""


def check(spec: Spec, probe_hub: bool) -> None:
    """Only the planted models in PLANTED exist."""
    if spec.argument not in PLANTED:
        raise MechclaimsError(f"unknown planted model {spec.text!r}: use {', '.join('planted:' + p for p in PLANTED)}")


def boot(spec: Spec) -> Any:
    """The planted model with its tokenizer (saved and reloaded, as TransformerBridge expects a tokenizer that
    knows its own name)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    model, tokenizer = PLANTED[spec.argument]()
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return TransformerBridge.boot_transformers(spec.text, hf_model=model, tokenizer=AutoTokenizer.from_pretrained(folder))
