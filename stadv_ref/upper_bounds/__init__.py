"""Section 4 and appendix 6.7: upper bounds of the adversarial loss and certification.

* :mod:`.closed_form` -- :func:`upper_bound` (Eq. (16), Prop. 2's AABB, the sound and the paper's
  spectral / Frobenius bounds, ``"sdp"``, ``"tight"``) and :func:`class_pair_bounds`;
* :mod:`.sdp` -- the SDP relaxation of Section 4.1, its solvers and rigorous dual certificates;
* :mod:`.certification` -- :func:`certify` ([E13]) with cached class-pair bounds.
"""
from __future__ import annotations

from .closed_form import (
    UpperBoundResult,
    upper_bound,
    class_pair_bounds,
    METHODS,
    SOUND_METHODS,
    input_constant,
)
from .sdp import (
    SDPResult,
    solve_sdp,
    solve_ellipsoid_sdp,
    bipartite_matrix,
    dual_bound,
    dual_bound_and_grad,
    sdp_primal_lower,
    lambda_max_upper,
    default_rank,
)
from .certification import (
    CertificationResult,
    certify,
    pair_bounds_cached,
    clear_bound_cache,
)
from ..network import LinearClassifier

__all__ = ["UpperBoundResult", "upper_bound", "class_pair_bounds", "METHODS", "SOUND_METHODS", "input_constant", "SDPResult", "solve_sdp", "solve_ellipsoid_sdp", "bipartite_matrix", "dual_bound", "dual_bound_and_grad", "sdp_primal_lower", "lambda_max_upper", "default_rank", "CertificationResult", "certify", "pair_bounds_cached", "clear_bound_cache", "LinearClassifier"]
