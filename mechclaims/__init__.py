"""mechclaims: published mechanistic-interpretability claims as thresholded pytest tests."""

__version__ = "0.1.0"
