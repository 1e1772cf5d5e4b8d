"""Deprecated import path: re-exports :mod:`stadv_ref.upper_bounds.sdp` (the module moved there in the layered tree)."""
from __future__ import annotations

from .reference.sdp import (  # noqa: F401
    cholesky_upper,
    lambda_max_upper_reference,
    sdp_mixing_reference,
)
from .upper_bounds.sdp import (  # noqa: F401
    SDPResult,
    bipartite_matrix,
    default_rank,
    dual_bound,
    dual_bound_and_grad,
    lambda_max_upper,
    sdp_primal_lower,
    solve_ellipsoid_sdp,
    solve_sdp,
)

__all__ = ["SDPResult", "solve_sdp", "solve_ellipsoid_sdp", "bipartite_matrix", "dual_bound", "dual_bound_and_grad", "sdp_primal_lower", "lambda_max_upper", "default_rank", "cholesky_upper", "sdp_mixing_reference", "lambda_max_upper_reference"]
