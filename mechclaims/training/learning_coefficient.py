"""The Local Learning Coefficient (LLC) of a list-sorting checkpoint, estimated with the `devinterp` library
(SORT-4; Lau et al. 2023): SGLD draws around the checkpoint's weights w*, with LLC = n beta (E[L(w)] - L(w*)),
L the sorted-half cross-entropy on training batches.

devinterp deep-copies the model for every chain. TransformerLens's native bridge does not survive that after a
forward pass, so the sampler runs on `SortingLogits`, the same one-layer attention-only function written as a
plain torch module over the checkpoint's tensors (tests check its logits against the bridge's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import warnings

import numpy as np
import torch

from mechclaims.errors import MechclaimsError

SAMPLING_BATCHES = 32
"""The SGLD data: the first SAMPLING_BATCHES training batches of the run (mechclaims.training.sorting.batch_at)."""


class SortingLogits(torch.nn.Module):
    """Logits of the sorting model: x = W_E[ids] + W_pos, x += attention (causal, 1/sqrt(d_head)), logits = x W_U^T
    + b_U, from the checkpoint's tensors under their checkpoint names."""

    def __init__(self, tensors: dict[str, torch.Tensor], heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.weights = torch.nn.ParameterDict({name.replace(".", "_"): torch.nn.Parameter(value.detach().clone())
                                               for name, value in tensors.items()})

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        w = self.weights
        x = torch.nn.functional.embedding(ids, w["tok_embed_weight"]) + w["pos_weight"][: ids.shape[1]]
        batch, length, width = x.shape
        d_head = width // self.heads

        def heads_of(name: str) -> torch.Tensor:
            projected = x @ w[f"layers_0_attn_{name}_weight"].T + w[f"layers_0_attn_{name}_bias"]
            return projected.view(batch, length, self.heads, d_head).transpose(1, 2)

        scores = heads_of("q") @ heads_of("k").transpose(-1, -2) / d_head**0.5
        scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
        mixed = (scores.softmax(dim=-1) @ heads_of("v")).transpose(1, 2).reshape(batch, length, width)
        x = x + mixed @ w["layers_0_attn_o_weight"].T + w["layers_0_attn_o_bias"]
        return x @ w["head_weight"].T + w["head_bias"]


@dataclass(frozen=True)
class SamplerSettings:
    """devinterp's SGLD settings: step size, inverse temperature n beta, localisation gamma, chains, draws, batch."""

    lr: float = 1e-4
    n_beta: float = 100.0
    localization: float = 100.0
    chains: int = 2
    draws: int = 100
    batch: int = 64


def _devinterp() -> Any:
    try:
        from devinterp.slt.llc import llc
    except ImportError:
        raise MechclaimsError("the Local Learning Coefficient needs devinterp: pip install 'mechclaims[llc]' "
                              "(devinterp==2.0.1)") from None
    return llc


def learning_coefficient(config: Any, tensors: dict[str, torch.Tensor],
                         settings: SamplerSettings) -> tuple[float, float]:
    """(mean, std over chains) of the LLC estimate at the checkpoint `tensors` of a sorting run of `config`. The loss
    is the sorted half's per-token cross-entropy; devinterp asks for one loss per position, so the unsorted half's
    positions carry each list's sorted-half mean, which leaves every list's mean loss unchanged."""
    from datasets import Dataset

    from mechclaims.training.sorting import batch_at

    llc = _devinterp()
    length = config.list_length
    lists = np.concatenate([batch_at(config, step) for step in range(SAMPLING_BATCHES)])
    data = Dataset.from_dict({"input_ids": lists.tolist()}).with_format("torch")

    def per_position_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        logits = model(ids)
        sorted_half = torch.nn.functional.cross_entropy(logits[:, length:-1].transpose(1, 2), ids[:, length + 1:],
                                                        reduction="none")
        padding = sorted_half.mean(dim=1, keepdim=True).expand(-1, ids.shape[1] - 1 - length)
        return torch.cat([padding, sorted_half], dim=1)

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sampling without output_path")
        found = llc(SortingLogits(tensors, config.heads), data, {}, lr=settings.lr, n_beta=settings.n_beta,
                    localization=settings.localization, num_chains=settings.chains, num_draws=settings.draws,
                    batch_size=settings.batch, loss_fn=per_position_loss, device="cpu", init_seed=config.seed)
    return float(found["llc_mean"]), float(found["llc_std"])
