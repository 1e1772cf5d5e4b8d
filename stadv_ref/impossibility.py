"""Deprecated import path: re-exports :mod:`stadv_ref.lower_bounds` (the module moved there in the layered tree)."""
from __future__ import annotations

from .lower_bounds import (  # noqa: F401
    LABELS,
    LowerBoundResult,
    linear_lower_bound_attack,
    lower_bound_attack,
    theorem1_input,
    theorem2_input,
)

__all__ = ["lower_bound_attack", "linear_lower_bound_attack", "LowerBoundResult", "LABELS", "theorem1_input", "theorem2_input"]
