"""Deprecated import path: re-exports :mod:`stadv_ref.upper_bounds.certification` (the module moved there in the layered tree)."""
from __future__ import annotations

from .attacks.flow_pgd import (  # noqa: F401
    AttackResult,
    flow_pgd_attack,
)
from .upper_bounds.certification import (  # noqa: F401
    CertificationResult,
    certify,
    clear_bound_cache,
    pair_bounds_cached,
)

__all__ = ["CertificationResult", "certify", "pair_bounds_cached", "clear_bound_cache", "AttackResult", "flow_pgd_attack"]
