"""The list-sorting model as a plain torch function of its checkpoint tensors, with a leading run axis, so that
every seed of a family (and its shuffled-target twin) trains as one batched model.

For run r with tensors under their checkpoint names (`tok_embed.weight`, `pos.weight`, `layers.0.attn.q.weight`,
..., `head.weight`; with LayerNorm also `layers.0.ln1.*` and `ln_out.*`):
    x = W_E[ids] + W_pos,  h = LN1(x) (or x),  x += sum_h softmax(q k^T / sqrt(d_head) + causal mask) v W_O + b_O,
    logits = LN_out(x) W_U^T + b_U (or x W_U^T + b_U),
the forward pass of TransformerLens 4's native one-layer attention-only model (tests check the logits against the
bridge's). Runs never mix: each output row depends only on its own run's tensors, so the gradient of the summed
per-run losses is each run's own gradient, and AdamW, being elementwise, steps each run as it would alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

LAYER_NORM_EPS = 1e-5
"""torch.nn.LayerNorm's default, which the native model's norms use."""


def _key(name: str) -> str:
    return name.replace(".", "/")


class SortingStack(torch.nn.Module):
    """Runs of one architecture stacked along a leading axis: parameters [R, ...] under their checkpoint names."""

    def __init__(self, runs: list[Mapping[str, torch.Tensor]], heads: int, layernorm: bool) -> None:
        super().__init__()
        names = sorted(runs[0])
        if any(sorted(run) != names for run in runs):
            raise ValueError("stacked runs must have the same tensors")
        self.heads, self.layernorm, self.names = heads, layernorm, names
        self.stacked = torch.nn.ParameterDict({_key(name): torch.nn.Parameter(
            torch.stack([run[name].detach().to(torch.float32) for run in runs]).contiguous()) for name in names})

    @property
    def runs(self) -> int:
        return next(iter(self.stacked.values())).shape[0]

    def tensor(self, name: str) -> torch.Tensor:
        return self.stacked[_key(name)]

    def run_tensors(self, run: int) -> dict[str, torch.Tensor]:
        """Run `run`'s tensors under their checkpoint names (copies on the CPU)."""
        return {name: self.tensor(name)[run].detach().cpu().clone().contiguous() for name in self.names}

    def _norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """LayerNorm with each run's own weight and bias."""
        weight, bias = self.tensor(f"{prefix}.weight"), self.tensor(f"{prefix}.bias")
        normalised = torch.nn.functional.layer_norm(x, x.shape[-1:], eps=LAYER_NORM_EPS)
        return torch.addcmul(bias[:, None, None], normalised, weight[:, None, None])

    def _linear(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """x [R, B, T, i] @ weight[r]^T + bias[r], as one batched product per run."""
        runs, batch, length, width = x.shape
        weight, bias = self.tensor(f"{prefix}.weight"), self.tensor(f"{prefix}.bias")
        out = torch.baddbmm(bias[:, None], x.reshape(runs, batch * length, width), weight.transpose(1, 2))
        return out.view(runs, batch, length, -1)

    def forward(self, ids: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Logits [R, B, T - first, V] at positions first .. T - 1 of token ids [R, B, T] (run r reads ids[r]). In
        one layer the logits at a position depend only on its own query, so training computes queries and outputs
        for the predicting positions alone."""
        runs, batch, length = ids.shape
        embed = self.tensor("tok_embed.weight")
        one_hot = torch.nn.functional.one_hot(ids, embed.shape[1]).to(embed.dtype).view(runs, batch * length, -1)
        x = (one_hot @ embed).view(runs, batch, length, -1) + self.tensor("pos.weight")[:, None, :length]
        h = self._norm(x, "layers.0.ln1") if self.layernorm else x
        width = x.shape[-1]
        d_head = width // self.heads

        def split(inputs: torch.Tensor, name: str) -> torch.Tensor:  # [R * B, H, positions, d_head]
            projected = self._linear(inputs, f"layers.0.attn.{name}")
            return projected.view(runs * batch, -1, self.heads, d_head).transpose(1, 2)

        scores = split(h[:, :, first:], "q") @ split(h, "k").transpose(-1, -2) / d_head**0.5
        future = torch.arange(length, device=ids.device)[None] > torch.arange(first, length, device=ids.device)[:, None]
        scores = scores.masked_fill(future, float("-inf"))
        weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
        pattern = weights / weights.sum(dim=-1, keepdim=True)
        mixed = (pattern @ split(h, "v")).transpose(1, 2).reshape(runs, batch, length - first, width)
        x = x[:, :, first:] + self._linear(mixed, "layers.0.attn.o")
        if self.layernorm:
            x = self._norm(x, "ln_out")
        return self._linear(x, "head")


class SortingLogits(SortingStack):
    """One run's logits [B, T, V] of ids [B, T]: the model devinterp samples around (SORT-4)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], heads: int, layernorm: bool = False) -> None:
        super().__init__([tensors], heads, layernorm)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids[None])[0]
