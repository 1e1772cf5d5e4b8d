"""Section 4 and appendix 6.7: upper bounds of the adversarial loss and certification.

* :mod:`.closed_form` -- :func:`upper_bound` (Eq. (16), Prop. 2's AABB, the sound and the paper's
  spectral / Frobenius bounds, ``"sdp"``, ``"tight"``) and :func:`class_pair_bounds`;
* :mod:`.sdp` -- the SDP relaxation of Section 4.1: :func:`solve_sdp` (mixing method; cvxpy + SCS
  reference in :mod:`.sdp_scs`), :class:`SDPResult` (:mod:`.sdp_result`);
* :mod:`.sdp_dual` -- its weak-duality certificate (:func:`dual_bound`), the dual bound's gradient
  (:func:`sdp_dual_gradient`, also used by the ``sdp`` training variant) and the bipartite
  Cholesky certificate;
* :mod:`.sdp_ellipsoid` -- :func:`solve_ellipsoid_sdp`, the tighter relaxation of ``"tight"``;
* :mod:`.certification` -- :func:`certify` ([E13]) with cached class-pair bounds.
"""
from __future__ import annotations

from ..network import LinearClassifier
from .certification import (
    CERTIFY_METHODS,
    CertificationResult,
    certify,
    clear_bound_cache,
    pair_bounds_cached,
)
from .closed_form import (
    METHODS,
    SOUND_METHODS,
    UpperBoundResult,
    class_pair_bounds,
    input_constant,
    upper_bound,
)
from .local import ellipsoid_max, local_pair_bounds
from .sdp import sdp_primal_lower, solve_sdp
from .sdp_dual import (
    DualGradient,
    bipartite_matrix,
    default_rank,
    dual_bound,
    dual_bound_and_grad,
    lambda_max_upper,
    sdp_dual_gradient,
)
from .sdp_ellipsoid import solve_ellipsoid_sdp
from .sdp_result import SDPResult

__all__ = ["UpperBoundResult", "upper_bound", "class_pair_bounds", "METHODS", "SOUND_METHODS", "input_constant", "SDPResult", "solve_sdp", "solve_ellipsoid_sdp", "bipartite_matrix", "dual_bound", "dual_bound_and_grad", "sdp_dual_gradient", "DualGradient", "sdp_primal_lower", "lambda_max_upper", "default_rank", "local_pair_bounds", "ellipsoid_max", "CERTIFY_METHODS", "CertificationResult", "certify", "pair_bounds_cached", "clear_bound_cache", "LinearClassifier"]
