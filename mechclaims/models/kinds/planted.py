"""`planted:<name>`: positive controls with known structure, and their negative twins.

- `bundles`: a small GPT-2 with planted token bundles in its MLPs (the VSA claims); `random-neurons`: its
  twin with random directions in their place.
- `low-rank-head`: a one-layer GPT-2 whose head 0 has a rank-2 Omega, over a word vocabulary that holds every
  IOI word (the sparse-attention claims); its negative twin is `random:planted:low-rank-head`.
- `isotropic-head`: the same shape with W_Q = W_K = identity, so every singular value is equal and each score
  uses every singular vector alike (singular-vector reuse fails).
- `concept-clusters`: a GPT-2 over the token-category words whose embedding and unembedding rows cluster by
  category (the concept-space claims); `concept-clusters-shuffled`: the same rows shuffled among the words.
- `unit-unembedding`: a GPT-2 over the generic-text words whose unembedding rows are random directions of one
  norm (the context-vector claims hold exactly); `random-unembedding`: random directions of log-normal norms.
- `averaging-attention`: a GPT-2 over the generic-text words whose blocks only average the context's normalised
  embeddings (the encoding-walk claim holds by construction); its negative twin is
  `random:planted:averaging-attention`.
- `ioi-circuit`: a four-layer attention-only GPT-2 over the IOI words that does the IOI task through a known
  circuit (mechclaims.models.ioi_circuit); `ioi-circuit-shuffled`: the same matrices with the name mover's query
  and key moved to a head that writes nothing, so the task fails.
- `swapped-roles`: a GPT-2 whose MLPs mix positions and whose attention cannot (the filtering/aggregation
  claims fail).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mechclaims.errors import MechclaimsError, did_you_mean
from mechclaims.measurement import KnownCircuit
from mechclaims.models.controls import (
    planted_averaging_attention,
    planted_bundles,
    planted_concepts,
    planted_isotropic_head,
    planted_low_rank_head,
    planted_swapped_roles,
    planted_unembedding,
    vocabulary_tokenizer,
    word_tokenizer,
)
from mechclaims.models.ioi_circuit import known_circuit, planted_ioi_circuit

if TYPE_CHECKING:
    from mechclaims.models.specs import Spec


def _bundles(random_neurons: bool) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        model, _ = planted_bundles(random_neurons=random_neurons)
        return model, word_tokenizer(model.config.vocab_size)

    return build


def _over_ioi_words(make: Callable[[list[str]], Any]) -> Callable[[], tuple[Any, Any]]:
    """A builder of make(words) over the words of the IOI data set's prompts (punctuation split off)."""
    def build() -> tuple[Any, Any]:
        words = _words_of("ioi")
        return make(words), vocabulary_tokenizer(words, split_punctuation=True)

    return build


def _ioi_circuit(shuffled: bool) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        from mechclaims.datasets import load_dataset

        words = _words_of("ioi")
        names = load_dataset("ioi").names
        return planted_ioi_circuit(words, names, shuffled), vocabulary_tokenizer(words, split_punctuation=True)

    return build


def _words_of(dataset: str) -> list[str]:
    """The words and punctuation marks of a data set's texts, sorted."""
    from mechclaims.datasets import load_dataset

    return sorted({w for text in load_dataset(dataset).texts for w in re.findall(r"\w+|[^\w\s]+", text)})


def _concepts(shuffled: bool) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        from mechclaims.datasets import load_dataset

        rows = load_dataset("token_categories").metadata
        names = sorted({row["category"] for row in rows})
        category = {row["word"]: names.index(row["category"]) for row in rows}
        words = _words_of("token_categories")
        return (planted_concepts(words, [category.get(w, -1) for w in words], shuffled),
                vocabulary_tokenizer(words, split_punctuation=True))

    return build


def _over_generic_text(make: Callable[[int], Any], fillers: int = 0) -> Callable[[], tuple[Any, Any]]:
    """A builder of make(vocab_size) with a word tokenizer over the generic-text words and `fillers` unused words
    (a vocabulary larger than the context-vector claim's top 1000 tokens)."""
    def build() -> tuple[Any, Any]:
        words = _words_of("generic_text") + [f"unused{i}" for i in range(fillers)]
        tokenizer = vocabulary_tokenizer(words, split_punctuation=True)
        return make(len(tokenizer)), tokenizer

    return build


UNUSED_WORDS = 2000
"""Filler words of the unembedding controls: about 2 700 tokens in all, so the top 1000 are a minority."""


def _swapped_roles() -> tuple[Any, Any]:
    """The model over a plain word vocabulary (its claims read only the forward-check sentence's positions)."""
    return planted_swapped_roles(512), word_tokenizer(512)


PLANTED: dict[str, Callable[[], tuple[Any, Any]]] = {
    "bundles": _bundles(False),
    "random-neurons": _bundles(True),
    "low-rank-head": _over_ioi_words(planted_low_rank_head),
    "isotropic-head": _over_ioi_words(planted_isotropic_head),
    "concept-clusters": _concepts(False),
    "concept-clusters-shuffled": _concepts(True),
    "unit-unembedding": _over_generic_text(lambda size: planted_unembedding(size, equal_norms=True), UNUSED_WORDS),
    "random-unembedding": _over_generic_text(lambda size: planted_unembedding(size, equal_norms=False), UNUSED_WORDS),
    "averaging-attention": _over_generic_text(planted_averaging_attention),
    "swapped-roles": _swapped_roles,
    "ioi-circuit": _ioi_circuit(False),
    "ioi-circuit-shuffled": _ioi_circuit(True),
}
"""planted:<name> -> a builder of (hf_model, tokenizer)."""


KNOWN_CIRCUITS: dict[str, Callable[[], KnownCircuit]] = {
    "ioi-circuit": lambda: known_circuit(shuffled=False),
    "ioi-circuit-shuffled": lambda: known_circuit(shuffled=True),
}
"""planted:<name> -> its ground truth, for the measurements that score a method against it."""


def known(name: str) -> KnownCircuit | None:
    """The ground truth of the model named `name` (a planted spec), else None."""
    argument = name.removeprefix("planted:")
    return KNOWN_CIRCUITS[argument]() if name.startswith("planted:") and argument in KNOWN_CIRCUITS else None


def check(spec: Spec, probe_hub: bool) -> None:
    """Only the planted models in PLANTED exist."""
    if spec.argument not in PLANTED:
        raise MechclaimsError(f"unknown planted model {spec.text!r}{did_you_mean(spec.argument, PLANTED)}: use "
                              f"{', '.join('planted:' + p for p in PLANTED)}")


def boot(spec: Spec) -> Any:
    """The planted model with its tokenizer (saved and reloaded, as TransformerBridge expects a tokenizer that
    knows its own name)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    model, tokenizer = PLANTED[spec.argument]()
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return TransformerBridge.boot_transformers(spec.text, hf_model=model, tokenizer=AutoTokenizer.from_pretrained(folder))
