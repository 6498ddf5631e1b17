"""Null models: the same architecture and tokens with weights that carry no learned structure."""

from __future__ import annotations

import copy
from typing import Any

import torch

from mechclaims.models.model import Model


class GaussianNull:
    """A model's null: the same capabilities and tokens, every weight matrix i.i.d. Gaussian."""

    def __init__(self, model: Model, seed: int) -> None:
        self.model = model
        self.seed = seed
        self.capabilities = model.capabilities
        self._weights: dict[str, Any] = {}

    def weights(self, processing: str = "raw") -> Any:
        if processing not in self._weights:
            self._weights[processing] = self.model.weights(processing).gaussian_like(self.seed)
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
