"""Forward passes: the only code in mechclaims that runs a model (docs/design.md, Layout).

`activations(model, texts, names)` tokenizes the texts, runs them in memory-bounded batches through the
model's TransformerBridge with `run_with_cache`, and returns the named hooks' activations as numpy arrays
padded to one length, with the mask that says which positions are real.

Padding is on the right, and every batch passes its attention mask. Right padding keeps each real token at
the position it has when its text runs alone, so absolute and rotary position embeddings see the same
positions without derived position ids; causal attention never looks right, and the mask stops an encoder's
real tokens from attending to pads. Padded positions hold zeros; `Activations.real` and `Activations.per_text`
drop them, so no statistic sees them.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mechclaims import memory
from mechclaims.errors import MechclaimsError

if TYPE_CHECKING:
    from mechclaims.models import Model

DEFAULT_MEMORY_BUDGET_BYTES = 1 << 30
"""Bytes one batch may hold in cached activations plus its logits (1 GiB)."""
DEVICE_ENV = "MECHCLAIMS_DEVICE"
PADDING_SIDE = "right"
REDUCE_TEXTS = "measure fewer texts (a smaller data set, e.g. its option n) or keep fewer hooks"
PAIRWISE_HOOKS = ("hook_pattern", "hook_attn_scores")
"""Hooks laid out [batch, head, query, key]: both of their last two axes are positions."""


@dataclass(frozen=True)
class Activations:
    """Activations of `texts` at hook names, batch axis first, right-padded to the longest text.

    tokens: int64 [n_texts, max_len] (pad id on padded positions); mask: bool [n_texts, max_len], True on real
    tokens; arrays: hook name -> [n_texts, ...] float32 (integer hooks such as token ids keep their dtype), zero
    on padded positions; position_axes: hook name -> the axes of its array that index positions (one for
    [batch, pos, ...] hooks, query and key for patterns); batch_sizes: texts per forward call, in call order;
    last_logits: float32 [n_texts, vocab], the logits at each text's last real position (when asked for);
    losses: float32 [n_texts, max_len] (when asked for), losses[i, t] = -log p(token t+1 | tokens <= t), zero
    where position t+1 is not a real token (see `predicted`).
    """

    tokens: np.ndarray
    mask: np.ndarray
    arrays: dict[str, np.ndarray]
    position_axes: dict[str, tuple[int, ...]]
    batch_sizes: tuple[int, ...]
    last_logits: np.ndarray | None = None
    losses: np.ndarray | None = None

    @property
    def predicted(self) -> np.ndarray:
        """bool [n_texts, max_len]: positions whose next token is real, i.e. where `losses` holds a loss."""
        return np.concatenate([self.mask[:, 1:], np.zeros((len(self.mask), 1), dtype=bool)], axis=1)

    @property
    def lengths(self) -> np.ndarray:
        """Real tokens per text."""
        return self.mask.sum(axis=1)

    @property
    def last_positions(self) -> np.ndarray:
        """Each text's last real position (right padding: its length minus one)."""
        return self.lengths - 1

    @property
    def forward_calls(self) -> int:
        """How many batches ran through the model."""
        return len(self.batch_sizes)

    def _single_position_axis(self, name: str) -> np.ndarray:
        """The array with its one position axis moved next to the batch axis."""
        axes = self.position_axes[name]
        if len(axes) != 1:
            raise MechclaimsError(
                f"hook {name!r} has {len(axes)} position axes (query and key): use Activations.per_text({name!r})"
            )
        return np.moveaxis(self.arrays[name], axes[0], 1)

    def real(self, name: str) -> np.ndarray:
        """Hook `name` at every real position, texts in order: [sum(lengths), ...]; no pad ever appears."""
        return self._single_position_axis(name)[self.mask]

    def last(self, name: str) -> np.ndarray:
        """Hook `name` at each text's last real position: [n_texts, ...]."""
        return self._single_position_axis(name)[np.arange(len(self.mask)), self.last_positions]

    def per_text(self, name: str) -> list[np.ndarray]:
        """Hook `name` for each text, cut to its length on every position axis (patterns: query and key)."""
        out = []
        for row, length in zip(self.arrays[name], self.lengths):
            cut = [slice(None)] * row.ndim
            for axis in self.position_axes[name]:
                cut[axis - 1] = slice(0, int(length))
            out.append(row[tuple(cut)])
        return out


def target_device(device: str | None) -> torch.device:
    """The device to run on: `device`, else $MECHCLAIMS_DEVICE (what --device sets), else the CPU; CUDA only
    when present."""
    asked = device or os.environ.get(DEVICE_ENV) or "cpu"
    try:
        target = torch.device(asked)
    except RuntimeError:
        raise MechclaimsError(f"unknown device {asked!r}: use cpu or cuda (cuda:N for the N-th GPU)") from None
    if target.type not in ("cpu", "cuda"):
        raise MechclaimsError(f"device {asked!r} is not supported: use cpu or cuda (cuda:N for the N-th GPU)")
    if target.type == "cuda" and not torch.cuda.is_available():
        raise MechclaimsError(
            f"device {asked!r} was asked for but torch sees no CUDA device: use --device cpu or a CUDA build of torch"
        )
    return target


def _check_names(model: Model, hooks: dict[str, Any], names: Sequence[str]) -> None:
    """Every name must be a hook of this model; an unknown one fails with the nearest real names."""
    for name in names:
        if name not in hooks:
            close = difflib.get_close_matches(name, list(hooks), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see model.bridge.hook_dict for its hook names"
            raise MechclaimsError(f"model {model.name!r} has no hook {name!r}: {hint}")


def _tokenize(model: Model, texts: Sequence[str], max_length: int | None, prepend_bos: bool | None) -> list[np.ndarray]:
    """Each text's token ids alone (so its length needs no pad id), cut to `max_length` tokens."""
    ids = []
    for text in texts:
        row = model.bridge.to_tokens(text, prepend_bos=prepend_bos, padding_side=PADDING_SIDE, move_to_device=False)[0]
        row = row.numpy()[:max_length]
        if len(row) == 0:
            raise MechclaimsError(f"text {text[:40]!r} has no tokens on model {model.name!r}: drop it or prepend BOS")
        ids.append(row)
    return ids


def _pad(ids: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token rows to the longest: (tokens [n, max_len], mask [n, max_len])."""
    max_len = max(len(row) for row in ids)
    tokens = np.full((len(ids), max_len), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), max_len), dtype=bool)
    for i, row in enumerate(ids):
        tokens[i, : len(row)] = row
        mask[i, : len(row)] = True
    return tokens, mask


def _position_axes(hook: Any, name: str, ndim: int) -> tuple[int, ...]:
    """Axes of a hook's batched activation that index positions (the bridge's convention: patterns and
    scores are [batch, head, query, key], a hook may declare its `pos_dim`, anything else is [batch, pos, ...])."""
    if name.endswith(PAIRWISE_HOOKS):
        return (ndim - 2, ndim - 1)
    declared = getattr(hook, "pos_dim", None)
    return (1 if declared is None else declared % ndim,)


def _adder(delta: np.ndarray, device: torch.device) -> Any:
    """A forward hook adding `delta` [batch, width, ...] to the hook's activation."""
    added = torch.from_numpy(delta).to(device)

    def add(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        return activation + added.to(activation.dtype)

    return add


def _replacer(value: np.ndarray, device: torch.device, name: str) -> Any:
    """A forward hook returning `value` in place of the hook's activation (the same shape)."""
    replacement = torch.from_numpy(value).to(device)

    def replace(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        if activation.shape != replacement.shape:
            raise MechclaimsError(f"replacement for hook {name!r} has shape {tuple(replacement.shape)}, but the "
                                  f"activation has {tuple(activation.shape)}: give one array per text, padded alike")
        return replacement.to(activation.dtype)

    return replace


def _batch_slice(array: np.ndarray, rows: np.ndarray, width: int, axes: tuple[int, ...]) -> np.ndarray:
    """The rows of a per-text array for one batch, each position axis cut to the batch's width."""
    cut: list[Any] = [rows] + [slice(None)] * (array.ndim - 1)
    for axis in axes:
        cut[axis] = slice(0, width)
    return np.ascontiguousarray(array[tuple(cut)])


def _forward(
    model: Model, tokens: np.ndarray, mask: np.ndarray, names: Sequence[str], device: torch.device,
    additions: Mapping[str, np.ndarray], replacements: Mapping[str, np.ndarray],
) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """One batch through the bridge, `additions` (hook -> [batch, width, ...]) added and `replacements` put in
    place on the way: (requested activations on the CPU, logits, bytes held: cache plus logits)."""
    edits = [(name, _adder(delta, device)) for name, delta in additions.items()]
    edits += [(name, _replacer(value, device, name)) for name, value in replacements.items()]
    with model.bridge.hooks(fwd_hooks=edits):
        logits, cache = model.bridge.run_with_cache(
            torch.from_numpy(tokens).to(device),
            attention_mask=torch.from_numpy(mask).to(device=device, dtype=torch.long),
            names_filter=list(names),
            device=torch.device("cpu"),
        )
    missing = [name for name in names if name not in cache]
    if missing:
        raise MechclaimsError(
            f"hook {missing[0]!r} did not fire on model {model.name!r}: it is gated off on this bridge "
            "(its set_use_* setter enables it)"
        )
    held = {name: cache[name] for name in names}
    return held, logits, sum(t.nbytes for t in held.values()) + logits.nbytes


def _zero_padding(array: np.ndarray, mask: np.ndarray, axes: tuple[int, ...]) -> None:
    """Set every entry at a padded position (on any position axis) to zero, in place."""
    for axis in axes:
        shape = [1] * array.ndim
        shape[0], shape[axis] = mask.shape
        np.copyto(array, 0, where=~mask.reshape(shape))


def _numpy(value: torch.Tensor, batch: int) -> np.ndarray:
    """A cached activation as numpy, float32 when floating; a broadcast leading axis expanded to the batch."""
    array = (value.float() if value.is_floating_point() else value).numpy()
    if array.shape[0] != batch:
        array = np.broadcast_to(array, (batch, *array.shape[1:]))
    return array


def activations(
    model: Model,
    texts: Sequence[str],
    names: Sequence[str],
    *,
    batch_size: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    device: str | None = None,
    progress: bool = True,
    max_length: int | None = None,
    prepend_bos: bool | None = None,
    last_logits: bool = False,
    additions: Mapping[str, np.ndarray] | None = None,
    replacements: Mapping[str, np.ndarray] | None = None,
    next_token_losses: bool = False,
) -> Activations:
    """Run `texts` through `model` and return the activations at hook `names` (see `Activations`).

    Texts run longest first. Without `batch_size`, the longest text runs alone and its cache plus logits,
    in bytes, bound every other text's (no batch is padded longer), so batches hold
    `memory_budget_bytes // that` texts (at least one). `device` as in `target_device` (the CPU unless asked);
    the model goes back where it was afterwards. `max_length` keeps each text's first tokens; `prepend_bos` overrides the
    bridge's default; `last_logits` keeps the logits at each text's last real position; `additions` maps hook
    names to arrays [n_texts, max_len, ...] added to those activations (an intervention; zero on pads);
    `replacements` maps hook names to arrays that take the activations' place (one per text, position axes
    padded to max_len, e.g. [n_texts, heads, max_len, max_len] for a pattern); `next_token_losses` keeps
    each position's loss on the next token (`Activations.losses`). The budget bounds what one batch holds,
    not the forward's transient intermediates nor the returned arrays, which grow with the number of texts: those
    are estimated from the first batch and must fit in the memory available (`memory.require`), else a
    MechclaimsError says how much they need before they are allocated.
    """
    if not texts:
        raise MechclaimsError("activations() got no texts: pass at least one")
    if batch_size is not None and batch_size < 1:
        raise MechclaimsError(f"batch_size must be at least 1, got {batch_size}")
    names = list(dict.fromkeys(names))
    hooks = model.bridge.hook_dict
    _check_names(model, hooks, [*names, *(additions or {}), *(replacements or {})])
    target = target_device(device)
    bridge = model.bridge
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise MechclaimsError(f"model {model.name!r} has no tokenizer, so it cannot run texts")
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    tokens, mask = _pad(_tokenize(model, texts, max_length, prepend_bos), pad_id)
    order = np.argsort(-mask.sum(axis=1), kind="stable")
    home = next(bridge.original_model.parameters()).device
    was_training = bridge.training
    arrays: dict[str, np.ndarray] = {}
    position_axes: dict[str, tuple[int, ...]] = {}
    batch_sizes: list[int] = []
    final = np.zeros((len(texts), 0), dtype=np.float32)
    losses = np.zeros(tokens.shape, dtype=np.float32)
    bar = tqdm(total=len(texts), desc=f"{model.name}: forward", unit="text", disable=not progress)
    try:
        if target != home:
            bridge.to(target, print_details=False)
        bridge.eval()
        start = 0
        size = batch_size or 1
        with torch.no_grad():
            while start < len(order):
                rows = order[start : start + size]
                width = int(mask[rows].sum(axis=1).max())
                edits, swaps = ({name: _batch_slice(value, rows, width, _position_axes(hooks[name], name, value.ndim))
                                 for name, value in (given or {}).items()} for given in (additions, replacements))
                batch = tokens[rows, :width]
                held, logits, nbytes = _forward(model, batch, mask[rows, :width], names, target, edits, swaps)
                if start == 0:
                    memory.require(_returned_bytes(held, logits, len(texts), last_logits),
                                   f"the forward pass of {len(texts)} texts through {model.name} keeping "
                                   f"{', '.join(names) or 'no hook'}", REDUCE_TEXTS)
                if next_token_losses:
                    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                    nll = -logprobs.gather(-1, torch.from_numpy(batch[:, 1:]).to(logprobs.device)[..., None])[..., 0]
                    losses[rows, : width - 1] = np.where(mask[rows, 1:width], nll.cpu().numpy(), 0.0)
                if last_logits:
                    last = logits[torch.arange(len(rows)), torch.from_numpy(mask[rows].sum(axis=1) - 1)]
                    if final.shape[1] == 0:
                        final = np.zeros((len(texts), last.shape[-1]), dtype=np.float32)
                    final[rows] = last.float().cpu().numpy()
                for name, value in held.items():
                    array = _numpy(value, len(rows))
                    if name not in arrays:
                        arrays[name] = np.zeros((len(texts), *array.shape[1:]), dtype=array.dtype)
                        position_axes[name] = _position_axes(hooks[name], name, array.ndim)
                    arrays[name][(rows, *(slice(0, n) for n in array.shape[1:]))] = array
                if batch_size is None and start == 0:
                    size = max(1, memory_budget_bytes // max(nbytes, 1))
                batch_sizes.append(len(rows))
                start += len(rows)
                bar.update(len(rows))
    finally:
        bar.close()
        if target != home:
            bridge.to(home, print_details=False)
        bridge.train(was_training)
    for name, array in arrays.items():
        _zero_padding(array, mask, position_axes[name])
    return Activations(tokens, mask, arrays, position_axes, tuple(batch_sizes), final if last_logits else None,
                       losses if next_token_losses else None)


def _returned_bytes(held: Mapping[str, torch.Tensor], logits: torch.Tensor, n_texts: int, last_logits: bool) -> int:
    """The bytes of the arrays `activations` returns for `n_texts` texts, from the first batch, whose texts are the
    longest: one text's activations at every hook (float32 once returned) and its last logits, times the texts."""
    per_text = sum(value[0].numel() * (4 if value.is_floating_point() else value.element_size())
                   for value in held.values())
    return n_texts * (per_text + (4 * logits.shape[-1] if last_logits else 0))


PER_POSITION_COMPONENTS = ("ln1", "ln2", "mlp")
"""Block components that read one position at a time, each from its own hook_in to its hook_out."""


def _probed_norms(output: torch.Tensor, leaf: torch.Tensor, probes: int, generator: torch.Generator,
                  where: str) -> np.ndarray:
    """[T_out, T_in]: sqrt(mean over random unit-variance probes v of ||v . d output[i] / d leaf[j]||^2)."""
    length = output.shape[1]
    squares = torch.zeros(length, leaf.shape[1], dtype=torch.float64)
    for i in range(length):
        for _ in range(probes):
            probe = torch.randn(output.shape[-1], generator=generator, dtype=output.dtype)
            (grad,) = torch.autograd.grad((output[0, i] * probe).sum(), leaf, retain_graph=True, allow_unused=True)
            if grad is None:
                raise MechclaimsError(f"{where}'s output does not depend on its hooked input on this bridge (it "
                                      "delegates to a wrapped module), so its Jacobian cannot be read")
            squares[i] += grad[0].double().pow(2).sum(dim=-1)
    return (squares / probes).sqrt().numpy()


def position_jacobians(model: Model, text: str, *, probes: int = 2, seed: int = 0,
                       prepend_bos: bool | None = None) -> dict[str, np.ndarray]:
    """How each component's output at position i depends on its input at position j, on one text, by autograd:
    component -> [n_layers, T, T] of probed Jacobian norms ||d out_i / d in_j|| (`_probed_norms`).

    Per-position components (PER_POSITION_COMPONENTS, where the model has them, and `ln_final`, as [1, T, T])
    are read from their own hook_in to hook_out. Attention is read from the block's input to the attention's
    output (`attn`), as a bridge may hand attention its input past the attention's own hook_in; in a pre-norm
    block this includes the input norm, which is per-position. Each component's input is a fresh leaf tensor,
    so the graph of one component never reaches another's.
    """
    hooks = model.bridge.hook_dict
    layers = model.capabilities.n_layers
    tokens = model.bridge.to_tokens(text, prepend_bos=prepend_bos, move_to_device=False)
    generator = torch.Generator().manual_seed(seed)
    passes = [{f"{c}.{layer}": (f"blocks.{layer}.{c}.hook_in", f"blocks.{layer}.{c}.hook_out")
               for layer in range(layers) for c in PER_POSITION_COMPONENTS if f"blocks.{layer}.{c}.hook_in" in hooks}]
    if "ln_final.hook_in" in hooks:
        passes[0]["ln_final.0"] = ("ln_final.hook_in", "ln_final.hook_out")
    passes.append({f"attn.{layer}": (f"blocks.{layer}.hook_in", f"blocks.{layer}.attn.hook_out") for layer in range(layers)})
    found: dict[str, dict[int, np.ndarray]] = {}
    was_training = model.bridge.training
    model.bridge.eval()
    try:
        for readings in passes:
            leaves: dict[str, torch.Tensor] = {}
            outputs: dict[str, torch.Tensor] = {}

            def leaf(key: str) -> Any:
                def make(activation: torch.Tensor, hook: Any) -> torch.Tensor:
                    leaves[key] = activation.detach().clone().requires_grad_(True)
                    return leaves[key]
                return make

            def keep(key: str) -> Any:
                def store(activation: torch.Tensor, hook: Any) -> torch.Tensor:
                    outputs[key] = activation
                    return activation
                return store

            edits = [(hook_in, leaf(key)) for key, (hook_in, _) in readings.items()]
            edits += [(hook_out, keep(key)) for key, (_, hook_out) in readings.items()]
            with torch.enable_grad(), model.bridge.hooks(fwd_hooks=edits):
                model.bridge(tokens)
                for key in readings:
                    if key not in leaves or key not in outputs:
                        raise MechclaimsError(f"model {model.name!r}: hooks of {key} did not fire, so its Jacobian "
                                              "cannot be read")
                    component, layer = key.rsplit(".", 1)
                    found.setdefault(component, {})[int(layer)] = _probed_norms(
                        outputs[key], leaves[key], probes, generator, f"{component} of layer {layer}")
    finally:
        model.bridge.train(was_training)
    return {component: np.stack([by_layer[i] for i in sorted(by_layer)]) for component, by_layer in found.items()}
