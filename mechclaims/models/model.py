"""A loaded model: a TransformerBridge, its capabilities, its weights and their fingerprint."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from mechclaims.errors import MechclaimsError

Processing = Literal["raw", "compat"]
NORM_GAINS = frozenset({"mlp_in_gain", "unembed_gain"})
ENCODER_MODEL_TYPES = frozenset(
    {"bert", "roberta", "distilbert", "albert", "electra", "mpnet", "deberta", "deberta-v2", "xlm-roberta"}
)


@dataclass(frozen=True)
class Capabilities:
    """What a claim may ask of an architecture (DESIGN.md, Models)."""

    architecture: str
    kind: Literal["encoder", "decoder"]
    positions: Literal["absolute", "rotary", "none"]
    norm: Literal["layernorm", "rmsnorm"]
    gated_mlp: bool
    tied_embeddings: bool
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_layers: int
    n_heads: int
    n_kv_heads: int

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
    (W_gate None unless gated); W_out [L, d_mlp, d]; W_U [d, vocab].
    Norm gains: mlp_in_gain [L, d], the gain of the norm whose output each MLP reads (ln2 in a
    pre-norm decoder, the post-attention ln1 in a post-norm encoder); unembed_gain [d], the final
    norm's gain before W_U (None without a final norm).
    """

    W_E: np.ndarray
    W_pos: np.ndarray | None
    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray
    W_O: np.ndarray
    W_in: np.ndarray
    W_gate: np.ndarray | None
    W_out: np.ndarray
    W_U: np.ndarray
    mlp_in_gain: np.ndarray
    unembed_gain: np.ndarray | None

    def gaussian_like(self, seed: int, keep: frozenset[str] = frozenset()) -> Weights:
        """The null: every matrix not named in `keep` replaced by i.i.d. N(0, 1) entries, seeded; norm
        gains are kept, so a gain-scaled null target is a Gaussian seen through the model's own gains."""
        rng = np.random.default_rng(seed)

        def draw(name: str, a: np.ndarray | None) -> np.ndarray | None:
            if a is None or name in keep or name in NORM_GAINS:
                return a
            return rng.standard_normal(a.shape, dtype=np.float32)

        return Weights(**{name: draw(name, value) for name, value in self.__dict__.items()})


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


def _weights_from_bridge(bridge: Any, caps: Capabilities) -> Weights:
    with torch.no_grad():
        return Weights(
            W_E=_numpy(bridge.W_E),
            W_pos=_numpy(bridge.W_pos) if caps.positions == "absolute" else None,
            W_Q=_numpy(bridge.W_Q),
            W_K=_numpy(bridge.W_K),
            W_V=_numpy(bridge.W_V),
            W_O=_numpy(bridge.W_O),
            W_in=_numpy(bridge.W_in),
            W_gate=_numpy(bridge.W_gate) if caps.gated_mlp else None,
            W_out=_numpy(bridge.W_out),
            W_U=_numpy(bridge.W_U),
            mlp_in_gain=np.stack([_numpy(_mlp_input_norm(block, caps).w) for block in bridge.blocks]),
            unembed_gain=_numpy(bridge.ln_final.w) if hasattr(bridge, "ln_final") else None,
        )


def _mlp_input_norm(block: Any, caps: Capabilities) -> Any:
    """The norm whose output the block's MLP reads: ln2 before the MLP (pre-norm decoders), or the
    post-attention ln1 (post-norm encoders such as BERT)."""
    return block.ln1 if caps.kind == "encoder" else block.ln2


def capabilities_of(bridge: Any) -> Capabilities:
    """Read the architecture's capabilities off the bridge config and the Hugging Face config."""
    cfg = bridge.cfg
    hf_config = bridge.original_model.config
    model_type = getattr(hf_config, "model_type", "")
    positional = cfg.positional_embedding_type
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return Capabilities(
        architecture=type(bridge.original_model).__name__,
        kind="encoder" if model_type in ENCODER_MODEL_TYPES else "decoder",
        positions="rotary" if positional == "rotary" else ("absolute" if positional == "standard" else "none"),
        norm="rmsnorm" if str(cfg.normalization_type).upper().startswith("RMS") else "layernorm",
        gated_mlp=bool(cfg.gated_mlp),
        tied_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        d_mlp=int(cfg.d_mlp),
        d_vocab=int(cfg.d_vocab),
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        n_kv_heads=int(n_kv),
    )


def checkpoint_name(key: str) -> str:
    """A parameter's name in the checkpoint: TransformerBridge's `_original_component` wrappers dropped."""
    return key.replace("._original_component", "").replace("_original_component.", "")


def initialised_at_load(module: torch.nn.Module) -> tuple[str, ...]:
    """Parameters the checkpoint did not hold, which transformers initialised at load (it marks every
    parameter it loads with `_is_hf_initialized`); empty for a model built in code, which has no marks."""
    named = {checkpoint_name(k): p for k, p in module.named_parameters()}
    if not any(getattr(p, "_is_hf_initialized", False) for p in named.values()):
        return ()
    return tuple(sorted(k for k, p in named.items() if not getattr(p, "_is_hf_initialized", False)))


def checked_fingerprint(module: torch.nn.Module, name: str) -> str:
    """sha256 over every parameter's float32 bytes in name order; rejects non-finite weights.

    Names are the checkpoint's own (`checkpoint_name`).
    """
    digest = hashlib.sha256()
    named = {checkpoint_name(k): v for k, v in module.state_dict().items()}
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
    `initialised_at_load` names parameters the checkpoint lacked: untrained, shown in the report."""

    name: str
    bridge: Any
    tokenizer: Any
    capabilities: Capabilities
    fingerprint: str
    resolved_from: str | None = None
    initialised_at_load: tuple[str, ...] = ()
    _weights: dict[str, Weights] = field(default_factory=dict, repr=False)

    def weights(self, processing: Processing = "raw") -> Weights:
        """`raw`: the checkpoint as published; `compat`: TransformerLens-folded (LN folded, centred)."""
        if processing not in ("raw", "compat"):
            raise MechclaimsError(f"unknown weight processing {processing!r}: use 'raw' or 'compat'")
        if processing not in self._weights:
            bridge = self.bridge
            if processing == "compat":
                bridge = copy.deepcopy(self.bridge)
                bridge.enable_compatibility_mode(disable_warnings=True)
            self._weights[processing] = _weights_from_bridge(bridge, self.capabilities)
        return self._weights[processing]

    def token_strings(self, ids: list[int] | np.ndarray) -> list[str]:
        """The text of each token id, as the tokenizer decodes it alone."""
        if self.tokenizer is None:
            return [f"<{int(i)}>" for i in ids]
        return [self.tokenizer.decode([int(i)]) for i in ids]
