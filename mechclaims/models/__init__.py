"""Model specs -> Model (docs/design.md, Models)."""

from mechclaims.models.controls import GaussianNull
from mechclaims.models.kinds.bundled import BUNDLED
from mechclaims.models.loading import check_spec, load_model, resolve_auto
from mechclaims.models.model import Capabilities, Model, Weights

__all__ = ["BUNDLED", "Capabilities", "GaussianNull", "Model", "Weights", "check_spec", "load_model", "resolve_auto"]
