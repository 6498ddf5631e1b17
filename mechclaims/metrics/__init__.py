"""Pure measurement functions: weights in, dataclasses out (no pytest, no model loading)."""
