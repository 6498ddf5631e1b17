"""A loaded model: a TransformerBridge, its capabilities, its weights and their fingerprint."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from mechclaims.errors import MechclaimsError, NotApplicable
from mechclaims.models.published import PUBLISHED_ATTRIBUTE
from mechclaims.run import Activations, activations, position_jacobians

Processing = Literal["raw", "compat"]
NORM_GAINS = frozenset({"mlp_in_gain", "unembed_gain"})
ATTENTION_BIASES = frozenset({"b_Q", "b_K"})
KEPT_BY_NULL = NORM_GAINS | ATTENTION_BIASES
"""Per-unit vectors, not matrices: a Gaussian null keeps them (as the random: null model keeps every vector)."""
ENCODER_MODEL_TYPES = frozenset(
    {"bert", "roberta", "distilbert", "albert", "electra", "mpnet", "deberta", "deberta-v2", "xlm-roberta"}
)


@dataclass(frozen=True)
class Capabilities:
    """What a claim may ask of an architecture (docs/design.md, Models). An attention-only model has
    `has_mlp` False and `d_mlp` 0; `norm` "none" means no normalisation layers at all; `published` names the
    published checkpoint whose files the model was loaded from, byte for byte (models.published), else ""."""

    architecture: str
    kind: Literal["encoder", "decoder"]
    positions: Literal["absolute", "rotary", "none"]
    norm: Literal["layernorm", "rmsnorm", "none"]
    gated_mlp: bool
    tied_embeddings: bool
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    has_mlp: bool = True
    published: str = ""

    @property
    def grouped_kv(self) -> bool:
        return self.n_kv_heads < self.n_heads

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "grouped_kv": self.grouped_kv}


@dataclass(frozen=True)
class Weights:
    """Weight matrices in TransformerLens orientation, float32 numpy.

    W_E [vocab, d]; W_pos [n_ctx, d] or None; W_Q [L, H, d, d_head]; W_K, W_V [L, H_kv, d, d_head]
    (grouped KV heads are not repeated); W_O [L, H, d_head, d]; W_in, W_gate [L, d, d_mlp]
    (W_gate None unless gated); W_out [L, d_mlp, d]; W_U [d, vocab]. W_in, W_out and mlp_in_gain
    are None in an attention-only model (`Capabilities.has_mlp` False).
    Norm gains: mlp_in_gain [L, d], the gain of the norm whose output each MLP reads (ln2 in a
    pre-norm decoder, the post-attention ln1 in a post-norm encoder); unembed_gain [d], the final
    norm's gain before W_U. Either is None where that norm has no gain (no norm, or a gain-free one).
    Attention biases: b_Q [L, H, d_head], b_K [L, H_kv, d_head], zeros for bias-free projections
    (None only in Weights built by hand without them). New fields go last: `gaussian_like` draws in
    field order, and baselines hold its numbers.
    """

    W_E: np.ndarray
    W_pos: np.ndarray | None
    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray
    W_O: np.ndarray
    W_in: np.ndarray | None
    W_gate: np.ndarray | None
    W_out: np.ndarray | None
    W_U: np.ndarray
    mlp_in_gain: np.ndarray | None
    unembed_gain: np.ndarray | None
    b_Q: np.ndarray | None = None
    b_K: np.ndarray | None = None

    def gaussian_like(self, seed: int, keep: frozenset[str] = frozenset()) -> Weights:
        """The null: every matrix not named in `keep` replaced by i.i.d. N(0, 1) entries, seeded; norm
        gains and attention biases are kept, so a gain-scaled null target is a Gaussian seen through
        the model's own gains."""
        rng = np.random.default_rng(seed)

        def draw(name: str, a: np.ndarray | None) -> np.ndarray | None:
            if a is None or name in keep or name in KEPT_BY_NULL:
                return a
            return rng.standard_normal(a.shape, dtype=np.float32)

        return Weights(**{name: draw(name, value) for name, value in self.__dict__.items()})


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


def _weights_from_bridge(bridge: Any, caps: Capabilities) -> Weights:
    mlp = caps.has_mlp
    with torch.no_grad():
        return Weights(
            W_E=_numpy(bridge.W_E),
            W_pos=_numpy(bridge.W_pos) if caps.positions == "absolute" else None,
            W_Q=_numpy(bridge.W_Q),
            W_K=_numpy(bridge.W_K),
            W_V=_numpy(bridge.W_V),
            W_O=_numpy(bridge.W_O),
            W_in=_numpy(bridge.W_in) if mlp else None,
            W_gate=_numpy(bridge.W_gate) if mlp and caps.gated_mlp else None,
            W_out=_numpy(bridge.W_out) if mlp else None,
            W_U=_numpy(bridge.W_U),
            mlp_in_gain=_stacked_gains([_mlp_input_norm(block, caps) for block in bridge.blocks]) if mlp else None,
            unembed_gain=_gain(getattr(bridge, "ln_final", None)),
            b_Q=_attention_bias(bridge, "b_Q", caps.n_heads, caps),
            b_K=_attention_bias(bridge, "b_K", caps.n_kv_heads, caps),
        )


def _mlp_input_norm(block: Any, caps: Capabilities) -> Any:
    """The norm whose output the block's MLP reads: ln2 before the MLP (pre-norm decoders), or the
    post-attention ln1 (post-norm encoders such as BERT)."""
    return block.ln1 if caps.kind == "encoder" else block.ln2


def _gain(norm: Any) -> np.ndarray | None:
    """A norm's gain, or None for no norm or a gain-free one (TransformerLens's LNPre, RMSPre, identity)."""
    weight = getattr(norm, "w", None)
    return None if weight is None else _numpy(weight)


def _stacked_gains(norms: list[Any]) -> np.ndarray | None:
    """[L, d] gains of one norm per layer, or None when the layers' norms have no gain."""
    gains = [_gain(norm) for norm in norms]
    return None if any(gain is None for gain in gains) else np.stack(gains)


def _attention_bias(bridge: Any, name: str, heads: int, caps: Capabilities) -> np.ndarray:
    """Stacked attention bias `name` (b_Q or b_K) [L, heads, d_head]; zeros where the projections have no
    bias (Llama-style), which TransformerLens refuses to stack."""
    if any(getattr(block.attn, name, None) is None for block in bridge.blocks):
        return np.zeros((caps.n_layers, heads, caps.d_head), dtype=np.float32)
    return _numpy(getattr(bridge, name))


def capabilities_of(bridge: Any) -> Capabilities:
    """Read the architecture's capabilities off the bridge config and the Hugging Face config. Every claim reads
    attention layers, so an architecture whose blocks do not all have one (a state-space model such as Mamba, a
    hybrid) is refused here, at load: a NotApplicable error, so every claim on it is N/A with that line."""
    attended = len(bridge.blocks_with("attn"))
    if attended < len(bridge.blocks):
        architecture = type(bridge.original_model).__name__
        raise NotApplicable(
            f"{architecture} has attention in {attended} of its {len(bridge.blocks)} layers: mechclaims measures "
            "transformers, whose every layer attends; use a transformer checkpoint (e.g. --model smollm2-135m)")
    cfg = bridge.cfg
    hf_config = getattr(bridge.original_model, "config", None)
    model_type = getattr(hf_config, "model_type", "")
    bidirectional = getattr(cfg, "attention_dir", "causal") == "bidirectional"
    positional = cfg.positional_embedding_type
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    has_mlp = not getattr(cfg, "attn_only", False)
    return Capabilities(
        architecture=type(bridge.original_model).__name__,
        kind="encoder" if model_type in ENCODER_MODEL_TYPES or bidirectional else "decoder",
        positions="rotary" if positional == "rotary" else ("absolute" if positional == "standard" else "none"),
        norm=_norm_kind(cfg.normalization_type),
        gated_mlp=has_mlp and bool(cfg.gated_mlp),
        tied_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        d_mlp=int(cfg.d_mlp) if has_mlp else 0,
        d_vocab=int(cfg.d_vocab),
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        n_kv_heads=int(n_kv),
        has_mlp=has_mlp,
        published=str(getattr(bridge.original_model, PUBLISHED_ATTRIBUTE, "")),
    )


def _norm_kind(normalization_type: str | None) -> Literal["layernorm", "rmsnorm", "none"]:
    """TransformerLens's normalization_type (LN, LNPre, RMS, RMSPre or None) as a Capabilities norm."""
    if normalization_type is None:
        return "none"
    return "rmsnorm" if normalization_type.upper().startswith("RMS") else "layernorm"


INITIALISED_AT_LOAD = "mechclaims_initialised_at_load"
"""The attribute of a transformers model naming the parameters its checkpoint lacked (`initialised_at_load`)."""


def checkpoint_name(key: str) -> str:
    """A parameter's name in the checkpoint: TransformerBridge's `_original_component` wrappers dropped."""
    return key.replace("._original_component", "").replace("_original_component.", "")


def initialised_at_load(module: torch.nn.Module) -> tuple[str, ...]:
    """Parameters the checkpoint did not hold, which transformers initialised at load: the head of a headless
    checkpoint, kept by `kinds.hub.pretrained`; empty for a model built in code."""
    return tuple(getattr(module, INITIALISED_AT_LOAD, ()))


def _detach_cached_tensors(bridge: torch.nn.Module) -> None:
    """TransformerBridge keeps the last forward's attention pattern on each attention component (`_pattern`); after
    a forward with gradients (position Jacobians) that is a tensor in the autograd graph, which deepcopy refuses.
    Such kept tensors are detached in place (same values), so the bridge can be copied whatever ran before."""
    for module in bridge.modules():
        for key, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                setattr(module, key, value.detach())


def checked_fingerprint(module: torch.nn.Module, name: str) -> str:
    """sha256 over every parameter's float32 bytes in name order; rejects non-finite weights.

    Names are the checkpoint's own (`checkpoint_name`).
    """
    return tensors_fingerprint({checkpoint_name(k): v for k, v in module.state_dict().items()}, name)


def tensors_fingerprint(named: Mapping[str, torch.Tensor], name: str) -> str:
    """`checked_fingerprint` of tensors already under their checkpoint names (e.g. a run the suite trained)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(named.items()):
        if not tensor.is_floating_point():
            continue
        data = tensor.detach().to(torch.float32).cpu().contiguous()
        bad = int((~torch.isfinite(data)).sum())
        if bad:
            raise MechclaimsError(
                f"model {name!r} has {bad} non-finite weights in {key}: the checkpoint is corrupt or "
                "diverged; re-download or re-save it"
            )
        digest.update(key.encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


@dataclass
class Model:
    """One model as the claims see it. `name` is what reports show; `resolved_from` notes `auto`;
    `initialised_at_load` names parameters the checkpoint lacked: untrained, shown in the report.

    A model known from its remembered identity (`models.identity`) has no bridge until something reads it: `boot`
    then loads it, and its weights must have the remembered fingerprint."""

    name: str
    capabilities: Capabilities
    fingerprint: str
    resolved_from: str | None = None
    initialised_at_load: tuple[str, ...] = ()
    boot: Callable[[], Any] | None = field(default=None, repr=False)
    _bridge: Any = field(default=None, repr=False)
    _weights: dict[str, Weights] = field(default_factory=dict, repr=False)

    @classmethod
    def from_bridge(cls, bridge: Any, name: str, resolved_from: str | None = None) -> Model:
        """Where every load ends, whatever the spec's kind: the bridge in eval mode with its capabilities,
        its fingerprint (non-finite weights are refused) and the parameters its checkpoint lacked."""
        fingerprint = checked_fingerprint(bridge.original_model, name)
        bridge.eval()
        return cls(name=name, capabilities=capabilities_of(bridge), fingerprint=fingerprint,
                   resolved_from=resolved_from, initialised_at_load=initialised_at_load(bridge.original_model),
                   _bridge=bridge)

    @property
    def bridge(self) -> Any:
        """The TransformerBridge, loaded on first use for a model known from its identity."""
        if self._bridge is None:
            assert self.boot is not None, "a Model has a bridge or a boot"
            loaded = Model.from_bridge(self.boot(), self.name)
            if loaded.fingerprint != self.fingerprint:
                raise MechclaimsError(
                    f"model {self.name!r} loaded with fingerprint {loaded.fingerprint[:12]}, not the "
                    f"{self.fingerprint[:12]} remembered for its files (rewritten with the same size and time?): "
                    "rerun with --no-cache")
            self._bridge = loaded.bridge
        return self._bridge

    @property
    def tokenizer(self) -> Any:
        return self.bridge.tokenizer

    def weights(self, processing: Processing = "raw") -> Weights:
        """`raw`: the checkpoint as published; `compat`: TransformerLens-folded (LN folded, centred)."""
        if processing not in ("raw", "compat"):
            raise MechclaimsError(f"unknown weight processing {processing!r}: use 'raw' or 'compat'")
        if processing not in self._weights:
            bridge = self.bridge
            if processing == "compat":
                _detach_cached_tensors(bridge)
                bridge = copy.deepcopy(bridge)
                bridge.enable_compatibility_mode(disable_warnings=True)
            self._weights[processing] = _weights_from_bridge(bridge, self.capabilities)
        return self._weights[processing]

    def activations(self, texts: Sequence[str], names: Sequence[str], **options: Any) -> Activations:
        """The named hook activations over `texts` (run.activations: batched, masked, memory-bounded)."""
        return activations(self, texts, names, **options)

    def position_jacobians(self, text: str, **options: Any) -> dict[str, np.ndarray]:
        """Each component's probed Jacobian norms across positions on one text (run.position_jacobians)."""
        return position_jacobians(self, text, **options)

    def rotary_tables(self, n_positions: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(cos, sin), float64 [n_positions, d_head], as the model's own rotary module computes them for positions
        0..n_positions-1 (any scaling included); None for a model without rotary positions."""
        if self.capabilities.positions != "rotary":
            return None
        module = next((m for m in self.bridge.original_model.modules() if type(m).__name__.endswith("RotaryEmbedding")),
                      None)
        if module is None:
            raise MechclaimsError(f"model {self.name!r} has rotary positions but no *RotaryEmbedding module to read")
        probe = torch.zeros(1, n_positions, self.capabilities.d_head)
        with torch.no_grad():
            cos, sin = module(probe, torch.arange(n_positions)[None])
        return cos[0].double().numpy(), sin[0].double().numpy()

    @property
    def known_circuit(self) -> Any:
        """The ground truth of a planted model with a known circuit (a KnownCircuit), else None."""
        from mechclaims.models.kinds.planted import known

        return known(self.name)

    def single_token_id(self, text: str) -> int | None:
        """The id of `text` when the tokenizer makes it exactly one token (no special tokens) other than its
        unknown token, else None."""
        if self.tokenizer is None:
            return None
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or (ids[0] == self.tokenizer.unk_token_id and text.strip() != self.tokenizer.unk_token):
            return None
        return int(ids[0])

    def token_strings(self, ids: list[int] | np.ndarray) -> list[str]:
        """The text of each token id, as the tokenizer decodes it alone."""
        if self.tokenizer is None:
            return [f"<{int(i)}>" for i in ids]
        return [self.tokenizer.decode([int(i)]) for i in ids]
