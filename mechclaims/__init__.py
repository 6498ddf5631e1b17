"""mechclaims: published mechanistic-interpretability claims as thresholded pytest tests.

`mechclaims.evaluate(claim_id, model_spec)` runs one claim without pytest and returns its typed Result.
"""

__version__ = "0.1.0"

from mechclaims.engine import Settings, evaluate  # noqa: E402

__all__ = ["Settings", "evaluate", "__version__"]
