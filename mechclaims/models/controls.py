"""Null models: the same architecture and tokens with weights that carry no learned structure."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mechclaims.errors import MechclaimsError
from mechclaims.models.model import Model


class GaussianNull:
    """A model's null: the same capabilities and tokens, every weight matrix not in `keep` i.i.d. Gaussian."""

    def __init__(self, model: Model, seed: int, keep: frozenset[str] = frozenset()) -> None:
        self.model = model
        self.seed = seed
        self.keep = keep
        self.capabilities = model.capabilities
        self._weights: dict[str, Any] = {}

    def weights(self, processing: str = "raw") -> Any:
        if processing not in self._weights:
            self._weights[processing] = self.model.weights(processing).gaussian_like(self.seed, self.keep)
        return self._weights[processing]

    def token_strings(self, ids: Any) -> list[str]:
        return self.model.token_strings(ids)


def redrawn(hf_model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every matrix re-drawn from N(mean, std) of that matrix, seeded; vectors (norms, biases) kept."""
    clone = copy.deepcopy(hf_model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in clone.named_parameters():
            if param.ndim >= 2:
                mean, std = param.float().mean(), param.float().std()
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.copy_((noise * std + mean).to(param.dtype))
    return clone


SPECIALS = ("<|endoftext|>", "<unk>")
PLANTED_K = 4
PLANTED_SNR = 10.0


def word_tokenizer(vocab_size: int, specials: tuple[str, ...] = SPECIALS) -> Any:
    """A whitespace word-level tokenizer: `specials` first, then word0, word1, ... up to `vocab_size`."""
    return vocabulary_tokenizer([f"word{i}" for i in range(vocab_size - len(specials))], specials)


def vocabulary_tokenizer(words: Sequence[str], specials: tuple[str, ...] = SPECIALS,
                         split_punctuation: bool = False) -> Any:
    """A word-level tokenizer over `specials` then `words` (ids in that order); words split at whitespace, and
    at punctuation too with `split_punctuation`; any other word is the unknown token (specials[1])."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace, WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocabulary = [*specials, *dict.fromkeys(w for w in words if w not in specials)]
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(vocabulary)}, unk_token=specials[1]))
    backend.pre_tokenizer = Whitespace() if split_punctuation else WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=specials[1], eos_token=specials[0], bos_token=specials[0], pad_token=specials[0]
    )


def _planted_vectors(unit: np.ndarray, n: int, rng: np.random.Generator, random_directions: bool) -> tuple[np.ndarray, np.ndarray]:
    """n vectors, each the sum of PLANTED_K rows of `unit` plus noise at PLANTED_SNR (or random directions
    of the same norms); returns (vectors [n, d], planted row ids [n, K])."""
    planted = np.stack([rng.choice(len(unit), PLANTED_K, replace=False) for _ in range(n)])
    signal = unit[planted].sum(axis=1)
    noise = rng.standard_normal(signal.shape)
    noise *= np.linalg.norm(signal, axis=1, keepdims=True) / (PLANTED_SNR * np.linalg.norm(noise, axis=1, keepdims=True))
    vectors = signal + noise
    if random_directions:
        directions = rng.standard_normal(vectors.shape)
        vectors = directions * np.linalg.norm(vectors, axis=1, keepdims=True) / np.linalg.norm(directions, axis=1, keepdims=True)
    return vectors, planted


def planted_bundles(random_neurons: bool, seed: int = 0, vocab: int = 2048, d_model: int = 512) -> tuple[Any, np.ndarray]:
    """The positive control (and, with `random_neurons`, its negative twin): a GPT-2-architecture model
    whose layer-0 MLP input vectors, and whose last layer's MLP output vectors, are sums of PLANTED_K
    unit token embeddings (tied with the unembedding) plus Gaussian noise with ||signal|| / ||noise||
    = PLANTED_SNR. Returns (hf_model, layer-0 planted token ids [d_mlp, K]).

    The twin replaces those vectors by random directions of the same norms. d_model 512 with 2048
    tokens keeps a 10-token bundle of a random direction below cosine 0.5.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=8, n_embd=d_model, n_inner=4 * d_model, vocab_size=vocab, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    rng = np.random.default_rng(seed)
    embeddings = model.transformer.wte.weight.detach().double().numpy()
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    reads, planted = _planted_vectors(unit, config.n_inner, rng, random_neurons)
    writes, _ = _planted_vectors(unit, config.n_inner, rng, random_neurons)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.copy_(torch.from_numpy(reads.T).float())
        model.transformer.h[-1].mlp.c_proj.weight.copy_(torch.from_numpy(writes).float())
    return model, planted


PLANTED_HEAD_RANK = 2


def planted_low_rank_head(words: Sequence[str], seed: int = 0, d_model: int = 64, scale: float = 6.0) -> Any:
    """The positive control of the sparse-attention claims: a one-layer, one-head GPT-2-architecture model over
    the vocabulary `words` whose head has a rank-PLANTED_HEAD_RANK Omega (W_Q and W_K both `scale` times the
    same two orthonormal directions, no query or key bias), so each score is a sum of at most two non-zero
    terms. Its `random:` twin redraws every matrix (same std), which makes Omega full rank."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=1, n_head=1, n_embd=d_model, n_inner=4 * d_model,
                        vocab_size=len(words) + len(SPECIALS), n_positions=64, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    rng = np.random.default_rng(seed)
    directions, _ = np.linalg.qr(rng.standard_normal((d_model, PLANTED_HEAD_RANK)))
    qk = torch.zeros(d_model, 2 * d_model)
    planted = torch.from_numpy(directions * scale).float()
    qk[:, :PLANTED_HEAD_RANK] = planted
    qk[:, d_model:d_model + PLANTED_HEAD_RANK] = planted
    with torch.no_grad():
        attention = model.transformer.h[0].attn
        attention.c_attn.weight[:, : 2 * d_model] = qk
        attention.c_attn.bias[: 2 * d_model] = 0.0
    return model


def planted_isotropic_head(words: Sequence[str], seed: int = 0, d_model: int = 64) -> Any:
    """The negative control of singular-vector reuse: a one-layer, one-head GPT-2-architecture model over the
    vocabulary `words` whose W_Q and W_K are the identity (d_head = d_model, no query or key bias), so Omega is the
    identity on the centred residual: its singular values are all equal, each token attends mostly to itself, and
    every such score is a sum of same-signed terms over every singular vector alike."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=1, n_head=1, n_embd=d_model, n_inner=4 * d_model,
                        vocab_size=len(words) + len(SPECIALS), n_positions=64, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    identity = torch.eye(d_model)
    with torch.no_grad():
        attention = model.transformer.h[0].attn
        attention.c_attn.weight[:, :d_model] = identity
        attention.c_attn.weight[:, d_model:2 * d_model] = identity
        attention.c_attn.bias[: 2 * d_model] = 0.0
    return model


CONCEPT_SPREAD = 0.3
"""Noise norm relative to the centre in `planted_concepts`: words of one category sit within cosine ~0.95."""


def planted_concepts(words: Sequence[str], categories: Sequence[int], shuffled: bool, seed: int = 0,
                     d_model: int = 64) -> Any:
    """The positive control of the concept-space claims: a two-layer GPT-2-architecture model over the
    vocabulary SPECIALS + `words` whose embedding rows, and (untied) unembedding rows, of the words with a
    category (`categories[i]` >= 0) are a random unit centre per category plus CONCEPT_SPREAD noise. Its twin
    (`shuffled`) permutes those rows among the words, so the same vectors no longer follow the categories."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=d_model, n_inner=4 * d_model, vocab_size=len(words) + len(SPECIALS),
                        n_positions=64, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    rng = np.random.default_rng(seed)
    labels = np.asarray(categories)
    rows = len(SPECIALS) + np.flatnonzero(labels >= 0)
    order = rng.permutation(len(rows)) if shuffled else np.arange(len(rows))
    with torch.no_grad():
        for matrix in (model.transformer.wte.weight, model.lm_head.weight):
            scale = float(matrix.norm(dim=1).mean())
            centres = rng.standard_normal((labels.max() + 1, d_model))
            centres /= np.linalg.norm(centres, axis=1, keepdims=True)
            noise = rng.standard_normal((len(rows), d_model)) * CONCEPT_SPREAD / np.sqrt(d_model)
            vectors = (centres[labels[labels >= 0]] + noise)[order] * scale
            matrix[torch.from_numpy(rows)] = torch.from_numpy(vectors).float()
    return model


UNEMBEDDING_NORM_SPREAD = 3.0
"""Standard deviation of log row norms in `planted_unembedding(equal_norms=False)`."""


def planted_unembedding(vocab_size: int, equal_norms: bool, seed: int = 0, d_model: int = 64) -> Any:
    """Controls of the context-vector claim: a two-layer GPT-2-architecture model with an untied unembedding of
    random directions. With `equal_norms` every row has the same norm, so a token's logit is |h| |w| cos and the
    cosine ranks tokens exactly as the probability does; otherwise the norms are log-normal
    (UNEMBEDDING_NORM_SPREAD), so the probability follows the norms rather than the directions."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=d_model, n_inner=4 * d_model, vocab_size=vocab_size,
                        n_positions=128, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((vocab_size, d_model))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    norms = np.ones(vocab_size) if equal_norms else np.exp(UNEMBEDDING_NORM_SPREAD * rng.standard_normal(vocab_size))
    with torch.no_grad():
        model.lm_head.weight.copy_(torch.from_numpy(directions * norms[:, None] * np.sqrt(d_model)).float())
    return model


class PositionMixingMLP(torch.nn.Module):
    """A GPT-2 MLP (its own c_fc, act and c_proj, which the bridge maps) plus the causal running mean of its
    input over positions: an "MLP" that aggregates."""

    def __init__(self, mlp: torch.nn.Module) -> None:
        super().__init__()
        self.c_fc, self.act, self.c_proj = mlp.c_fc, mlp.act, mlp.c_proj

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        counts = torch.arange(1, hidden_states.shape[-2] + 1, dtype=hidden_states.dtype, device=hidden_states.device)
        mixed = hidden_states.cumsum(dim=-2) / counts[:, None]
        return self.c_proj(self.act(self.c_fc(hidden_states))) + mixed


def planted_swapped_roles(vocab_size: int, seed: int = 0, d_model: int = 64) -> Any:
    """The negative control of the filtering/aggregation claims: a two-layer GPT-2-architecture model whose MLPs
    mix positions (PositionMixingMLP) and whose attention cannot (W_V = 0 and b_V = 0, so every head writes
    only its output bias, whatever it attends to)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=d_model, n_inner=4 * d_model, vocab_size=vocab_size,
                        n_positions=64, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight[:, 2 * d_model:] = 0.0
            block.attn.c_attn.bias[2 * d_model:] = 0.0
            block.mlp = PositionMixingMLP(block.mlp)
    return model


def planted_averaging_attention(vocab_size: int, seed: int = 0, d_model: int = 256, layers: int = 3) -> Any:
    """The positive control of the encoding-walk claim: a GPT-2-architecture model in which every block only
    averages its normalised inputs over the causal context (W_Q = W_K = 0, so attention is uniform; W_V = W_O =
    identity; the MLPs write nothing) and positions add nothing (W_pos = 0). Its last residual is its last
    token's embedding plus the mean of its context's normalised embeddings, so it lies near the context's
    tokens by construction."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=layers, n_head=1, n_embd=d_model, n_inner=4 * d_model, vocab_size=vocab_size,
                        n_positions=128, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    identity = torch.eye(d_model)
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        for block in model.transformer.h:
            block.attn.c_attn.weight.zero_()
            block.attn.c_attn.bias.zero_()
            block.attn.c_attn.weight[:, 2 * d_model:] = identity
            block.attn.c_proj.weight.copy_(identity)
            block.attn.c_proj.bias.zero_()
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
    return model


SORTER_MODES = ("vocabulary-splitting", "copy-suppression", "overlapping")
SORTER_SHARPNESS = 4.0
"""Attention logit lost per unit of distance above the last emitted number: the next number gets e^4 times the
weight of the one after it."""


def planted_sorter(config: Any, mode: str) -> Any:
    """A sorting model of `config` whose weights are set by hand, not trained: it sorts, and its two heads are in
    `mode` (the controls of the list-sorting claims).

    One-hot token embeddings, no positions, W_U the identity on the tokens. From a query holding number c (SEP: c =
    -1) a head scores a key holding number k in its range by A - beta (k - c) when k > c, SEP by 0 (a sink), and
    everything else by -A: it attends to the smallest number above c that it covers, else to SEP. Its OV circuit
    writes out(k) = 20 - 0.6 k to k's logit, so when both heads find a candidate the smaller number wins.
    Vocabulary-splitting: head 0 covers 0..n/2-1, head 1 the rest. Overlapping: both cover every number.
    Copy-suppression: head 1 attends as head 0 does and writes -0.6 out(k). With LayerNorm (weights 1, biases 0)
    the attention reads LN(e_k) = a e_k - c 1 (a = d / sqrt(d - 1), c = 1 / sqrt(d - 1)), so Q, K and V are
    divided by a and given the bias (c / a) W 1 that cancels the shift: the heads see e_k exactly; the final LN
    centres and scales each position's residual, which keeps every prediction's argmax."""
    from mechclaims.training.sorting import SPECIALS, _load_weights, _weights, boot

    bridge = boot(config)
    tensors = {name: torch.zeros_like(value) for name, value in _weights(bridge.original_model).items()}
    n, d_head, vocabulary = config.numbers, config.d_model // config.heads, config.vocabulary
    half = list(range(n // 2)), list(range(n // 2, n))
    ranges = {"vocabulary-splitting": half, "overlapping": (list(range(n)),) * 2,
              "copy-suppression": (list(range(n)),) * 2}[mode]
    if max(len(numbers) for numbers in ranges) > d_head:
        raise MechclaimsError(f"a hand-built {mode} sorter of {config.name!r} needs d_head >= the numbers a head "
                              f"covers ({max(len(numbers) for numbers in ranges)}), not {d_head}")
    signs = (1.0, -0.6 if mode == "copy-suppression" else 1.0)
    tensors["tok_embed.weight"][:, :vocabulary] = torch.eye(vocabulary)
    tensors["head.weight"][:, :vocabulary] = torch.eye(vocabulary)
    top = SORTER_SHARPNESS * n + 8.0
    for head, (numbers, sign) in enumerate(zip(ranges, signs)):
        scores = np.zeros((vocabulary, vocabulary))
        for query in [*range(n), -1]:
            row = SPECIALS + query if query >= 0 else config.separator
            scores[row, SPECIALS:SPECIALS + n] = -top
            for k in numbers:
                if k > query:
                    scores[row, SPECIALS + k] = top - SORTER_SHARPNESS * (k - query)
        left, singular, right = np.linalg.svd(scores * np.sqrt(d_head))
        rows, root = slice(head * d_head, (head + 1) * d_head), np.sqrt(singular[:d_head])
        tensors["layers.0.attn.q.weight"][rows, :vocabulary] = torch.tensor((left[:, :d_head] * root).T)
        tensors["layers.0.attn.k.weight"][rows, :vocabulary] = torch.tensor((right[:d_head].T * root).T)
        for slot, k in enumerate(numbers):
            tensors["layers.0.attn.v.weight"][head * d_head + slot, SPECIALS + k] = 1.0
            tensors["layers.0.attn.o.weight"][SPECIALS + k, head * d_head + slot] = sign * (20.0 - 0.6 * k)
    if config.layernorm:
        width = config.d_model
        scale, shift = width / np.sqrt(width - 1), 1 / np.sqrt(width - 1)
        for name in ("q", "k", "v"):
            weight = tensors[f"layers.0.attn.{name}.weight"] / scale
            tensors[f"layers.0.attn.{name}.weight"] = weight
            tensors[f"layers.0.attn.{name}.bias"] = shift * weight.sum(dim=1)
        for norm in ("layers.0.ln1", "ln_out"):
            tensors[f"{norm}.weight"] = torch.ones(width)
    _load_weights(bridge.original_model, tensors)
    return bridge
