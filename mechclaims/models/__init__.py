"""Model specs -> Model (DESIGN.md, Models)."""

from mechclaims.models.controls import GaussianNull
from mechclaims.models.loading import BUNDLED, check_spec, load_model, resolve_auto
from mechclaims.models.model import Capabilities, Model, Weights

__all__ = ["BUNDLED", "Capabilities", "GaussianNull", "Model", "Weights", "check_spec", "load_model", "resolve_auto"]
