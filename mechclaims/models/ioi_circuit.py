"""`planted:ioi-circuit`: a hand-built attention-only GPT-2 that does the IOI task through a known circuit, and its
twin `planted:ioi-circuit-shuffled` (the controls of the sparse-attention task claims, docs/claims_catalogue.md
section 2).

Every feature is a unit direction of the residual stream, orthonormal to the others and to the all-ones vector (so
LayerNorm's centring leaves it alone); a large ANCHOR direction in every embedding keeps each residual's norm, hence
LayerNorm's scale, nearly constant, and the norm weights undo that scale. Tokens (a word-level vocabulary over the IOI
data set's words): every name has `nameness` n plus its own `id` (a low-coherence code in ID_DIMS dimensions); every
other word its own `word` direction. Position p adds `pos_p`, and position 0 also the `sink` s. The MLPs write nothing.

The circuit (layer.head; "reads q / k" is the query / key side of the head's QK circuit):
- 0.0 (earlier-name head): at a name, q reads n, k reads n, and a position term forbids attending to itself; so it
  attends to the earlier names, if any, else to the sink. OV: n -> 2 phi (and 4.5 psi_0, a direction nobody reads).
- 0.1 (self-name head): at a name attends to itself and the earlier names. OV: n -> -phi (and 2.5 psi_1).
  Together: phi = -1 at the first name of the story, +1 at the second name and at S2, 0 elsewhere.
- 1.0 (duplicate-token head): q and k read the id, the position term forbids itself: at S2 it attends to S1. OV:
  phi -> gamma (so gamma at S2 says whether S was the first or the second name), n -> mark m.
- 2.0 (S-inhibition head): q reads the bias, k reads m: from every position after S2 it attends to S2. OV:
  gamma -> gamma' (at end).
- 3.0 (name mover): q reads gamma', k reads phi, with score -B gamma'.phi: at end it attends to the name whose order
  differs from S's, IO (S2 is pushed away by -C on m through the bias row). OV: id -> id, tied to the unembedding:
  the IO name's logit rises.
- 3.1 (a distractor): q reads the bias, k reads n: it attends to every name alike and writes nothing.
Planted edges (tracing's "upstream@role -> downstream@role"): 2.0@end -> 3.0@end through the query, 0.0@IO and 0.1@IO
-> 3.0@end through the key (0.0 carries phi when IO is the second name, 0.1 when it is the first), and 1.0@S2 ->
2.0@end through the key. Every other head attends to the sink and writes nothing.

The twin swaps layer 3's query and key blocks between heads 0 and 1: every matrix keeps its entries and norms, but
the head that copies names (3.0) now attends to every name alike, so S (twice in every prompt) outweighs IO and the
task fails (the logit difference is negative on every prompt); the name mover's QK circuit now sits in 3.1, which
writes nothing, so no planted edge into the head that moves the name remains.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mechclaims.errors import MechclaimsError
from mechclaims.measurement import KnownCircuit
from mechclaims.models.controls import SPECIALS

D_MODEL = 512
HEADS = 4
LAYERS = 4
POSITIONS = 48
ID_DIMS = 64
ANCHOR = 12.0
SINK = 6.0
"""Score of the sink (position 0) for a head whose query finds nothing else."""
QUIET_SINK = 12.0
"""Score of the sink for every head outside the circuit: it attends there and never fires."""
NAME_MATCH = 14.0
SELF_PENALTY = 30.0
DUPLICATE_MATCH = 20.0
DUPLICATE_SINK = 12.0
MARK_MATCH = 14.0
MOVER_SCORE = 10.0
MOVER_SINK = 4.0
MARK_REPEL = 20.0
COPY_GAIN = 10.0
PLANTED_EDGES = frozenset({("2.0@end", "3.0@end"), ("0.0@IO", "3.0@end"), ("0.1@IO", "3.0@end"),
                           ("1.0@S2", "2.0@end")})


def _directions(seed: int) -> np.ndarray:
    """D_MODEL - 1 orthonormal columns orthogonal to the all-ones vector, in a seeded random rotation."""
    rng = np.random.default_rng(seed)
    start = np.concatenate([np.ones((D_MODEL, 1)), rng.standard_normal((D_MODEL, D_MODEL - 1))], axis=1)
    q, _ = np.linalg.qr(start)
    return q[:, 1:]


def _code(count: int, dims: int, seed: int) -> np.ndarray:
    """`count` unit vectors in `dims` dimensions with low mutual coherence (a few hundred steps that push the most
    aligned pairs apart), so a name's id matches only itself."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, dims, generator=generator, dtype=torch.float64).requires_grad_()
    optimiser = torch.optim.Adam([x], lr=0.02)
    for _ in range(400):
        unit = x / x.norm(dim=1, keepdim=True)
        gram = unit @ unit.T - torch.eye(count, dtype=torch.float64)
        loss = torch.logsumexp(30 * gram.abs().flatten(), 0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (x / x.norm(dim=1, keepdim=True)).detach().numpy()


class _Layout:
    """Named residual directions (columns of a rotation that keeps them zero-mean)."""

    def __init__(self, seed: int, words: int, names: int) -> None:
        basis = _directions(seed)
        taken = 0

        def take(count: int) -> np.ndarray:
            nonlocal taken
            if taken + count > basis.shape[1]:
                raise MechclaimsError(f"the planted IOI circuit has {D_MODEL} residual dimensions, too few for {words} "
                                      "words outside the names: shorten fixtures/ioi's place and object lists")
            block = basis[:, taken:taken + count]
            taken += count
            return block

        self.anchor, self.sink, self.name, self.phi, self.gamma, self.mark, self.inhibit, self.psi0, self.psi1 = (
            take(1)[:, 0] for _ in range(9))
        self.id_space = take(ID_DIMS)
        self.ids = self.id_space @ _code(names, ID_DIMS, seed).T if names else np.zeros((D_MODEL, 0))
        self.words = take(words)
        self.positions = take(POSITIONS)


class _Head:
    """One head's QK and OV circuits, built term by term: score(i, j) = sum_t gain_t (q_t . x_i)(k_t . x_j) with
    q_t None for the bias row; OV writes sum_t gain_t (read_t . x_j) write_t."""

    def __init__(self) -> None:
        self.qk: list[tuple[np.ndarray | None, np.ndarray, float]] = []
        self.ov: list[tuple[np.ndarray, np.ndarray, float]] = []


def _load_head(attention: Any, head: int, spec: _Head, d_head: int) -> None:
    """Write one head's terms into GPT-2's fused c_attn (x W + b, columns q | k | v) and c_proj."""
    if len(spec.qk) > d_head or len(spec.ov) > d_head:
        raise MechclaimsError(f"a planted head has {max(len(spec.qk), len(spec.ov))} terms, more than d_head {d_head}")
    root = d_head ** 0.25
    weight, bias, out = attention.c_attn.weight, attention.c_attn.bias, attention.c_proj.weight
    for slot, (query, key, gain) in enumerate(spec.qk):
        q_col, k_col = head * d_head + slot, D_MODEL + head * d_head + slot
        scale = np.sqrt(abs(gain)) * root
        if query is None:
            bias[q_col] = float(scale)
        else:
            weight[:, q_col] = torch.from_numpy(query * scale).float()
        weight[:, k_col] = torch.from_numpy(key * scale * np.sign(gain)).float()
    for slot, (read, write, gain) in enumerate(spec.ov):
        weight[:, 2 * D_MODEL + head * d_head + slot] = torch.from_numpy(read).float()
        out[head * d_head + slot] = torch.from_numpy(write * gain).float()


def _heads(layout: _Layout) -> dict[tuple[int, int], _Head]:
    """Every head's terms (module docstring): the circuit's five heads, the distractor 3.1, and for every other head
    a sink it attends to. The position terms forbid attending to oneself, each with its own gain so that the
    singular vectors are the position directions themselves."""
    heads = {(layer, head): _Head() for layer in range(LAYERS) for head in range(HEADS)}
    for spec in heads.values():
        spec.qk.append((None, layout.sink, QUIET_SINK))
    penalty = [(layout.positions[:, p], layout.positions[:, p], -(SELF_PENALTY + 0.25 * p)) for p in range(POSITIONS)]
    earlier, own = heads[0, 0], heads[0, 1]
    earlier.qk[:] = [(None, layout.sink, SINK), (layout.name, layout.name, NAME_MATCH), *penalty]
    earlier.ov += [(layout.name, layout.phi, 2.0), (layout.name, layout.psi0, 4.5)]
    own.qk[:] = [(None, layout.sink, SINK), (layout.name, layout.name, NAME_MATCH)]
    own.ov += [(layout.name, layout.phi, -1.0), (layout.name, layout.psi1, 2.5)]
    duplicate = heads[1, 0]
    ids = layout.id_space
    duplicate.qk[:] = [(None, layout.sink, DUPLICATE_SINK), *penalty]
    duplicate.qk += [(ids[:, k], ids[:, k], DUPLICATE_MATCH * (1 + 0.01 * k)) for k in range(ID_DIMS)]
    duplicate.ov += [(layout.phi, layout.gamma, 1.0), (layout.name, layout.mark, 1.0)]
    inhibition = heads[2, 0]
    inhibition.qk[:] = [(None, layout.sink, SINK), (None, layout.mark, MARK_MATCH)]
    inhibition.ov += [(layout.gamma, layout.inhibit, 1.0)]
    mover = heads[3, 0]
    mover.qk[:] = [(layout.inhibit, layout.phi, -MOVER_SCORE), (None, layout.sink, MOVER_SINK),
                   (None, layout.mark, -MARK_REPEL)]
    mover.ov += [(ids[:, k], ids[:, k], COPY_GAIN) for k in range(ID_DIMS)]
    heads[3, 1].qk[:] = [(None, layout.name, NAME_MATCH)]
    return heads


def planted_ioi_circuit(words: Sequence[str], names: Sequence[str], shuffled: bool, seed: int = 0) -> Any:
    """The model over the vocabulary SPECIALS + `words` (module docstring); `names` are the words that are names."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    vocabulary = [*SPECIALS, *words]
    config = GPT2Config(n_layer=LAYERS, n_head=HEADS, n_embd=D_MODEL, n_inner=4, vocab_size=len(vocabulary),
                        n_positions=POSITIONS, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    named = set(names)
    is_name = np.array([word in named for word in vocabulary])
    name_rows = np.flatnonzero(is_name)
    layout = _Layout(seed, int((~is_name).sum()), len(name_rows))
    embedding = np.tile(ANCHOR * layout.anchor, (len(vocabulary), 1))
    embedding[name_rows] += layout.name + layout.ids.T
    embedding[~is_name] += layout.words.T
    positions = layout.positions.T.copy()
    positions[0] += layout.sink
    typical = np.sqrt(ANCHOR ** 2 + 3.0)
    gain = typical / np.sqrt(D_MODEL)
    d_head = D_MODEL // HEADS
    with torch.no_grad():
        model.transformer.wte.weight.copy_(torch.from_numpy(embedding).float())
        model.transformer.wpe.weight.copy_(torch.from_numpy(positions).float())
        for block in model.transformer.h:
            for norm in (block.ln_1, block.ln_2):
                norm.weight.fill_(gain)
                norm.bias.zero_()
            for parameter in (block.attn.c_attn.weight, block.attn.c_attn.bias, block.attn.c_proj.weight,
                              block.attn.c_proj.bias, block.mlp.c_fc.weight, block.mlp.c_fc.bias,
                              block.mlp.c_proj.weight, block.mlp.c_proj.bias):
                parameter.zero_()
        model.transformer.ln_f.weight.fill_(gain)
        model.transformer.ln_f.bias.zero_()
        for (layer, head), spec in _heads(layout).items():
            _load_head(model.transformer.h[layer].attn, head, spec, d_head)
        if shuffled:
            attention = model.transformer.h[LAYERS - 1].attn
            for start in (0, D_MODEL):
                first, second = slice(start, start + d_head), slice(start + d_head, start + 2 * d_head)
                for tensor in (attention.c_attn.weight, attention.c_attn.bias):
                    a, b = tensor[..., first].clone(), tensor[..., second].clone()
                    tensor[..., first], tensor[..., second] = b, a
    return model


@functools.cache
def known_circuit(shuffled: bool, seed: int = 0) -> KnownCircuit:
    """What the planted model's tracing should find: its edges, and each circuit head's planted reading directions
    per side (residual space); built once per process, as every measurement of a planted model reads it. The twin's name mover (3.0) reads nothing, so its planted edges are the same list,
    now absent."""
    layout = _Layout(seed, 1, 0)
    return KnownCircuit(
        edges=PLANTED_EDGES,
        key_directions={"3.0": layout.phi[None], "2.0": layout.mark[None], "0.0": layout.name[None],
                        "0.1": layout.name[None]},
        query_directions={"3.0": layout.inhibit[None], "0.0": layout.name[None], "0.1": layout.name[None]},
        note="the name mover's QK circuit moved from 3.0 to 3.1, which writes nothing" if shuffled else "",
    )
