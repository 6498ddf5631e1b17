"""The Local Learning Coefficient (LLC) of a list-sorting checkpoint, estimated with the `devinterp` library
(SORT-4; Lau et al. 2023): SGLD draws around the checkpoint's weights w*, with LLC = n beta (E[L(w)] - L(w*)),
L the sorted-half cross-entropy on training batches.

devinterp deep-copies the model for every chain. TransformerLens's native bridge does not survive that after a
forward pass, so the sampler runs on `SortingLogits` (mechclaims.training.sorting_model), the same one-layer
attention-only function written as a plain torch module over the checkpoint's tensors (tests check its logits
against the bridge's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import warnings

import numpy as np
import torch

from mechclaims.errors import MechclaimsError
from mechclaims.training.sorting_model import SortingLogits

SAMPLING_BATCHES = 32
"""The SGLD data: the first SAMPLING_BATCHES training batches of the run (mechclaims.training.sorting.batch_at)."""


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
        found = llc(SortingLogits(tensors, config.heads, config.layernorm), data, {}, lr=settings.lr,
                    n_beta=settings.n_beta, localization=settings.localization, num_chains=settings.chains,
                    num_draws=settings.draws, batch_size=settings.batch, loss_fn=per_position_loss, device="cpu",
                    init_seed=config.seed)
    return float(found["llc_mean"]), float(found["llc_std"])
