"""stadv-ref: reference implementation of *Provable Defenses against Spatially
Transformed Adversarial Inputs: Impossibility and Possibility Results*.

Equation index (paper numbering; see ``docs/EQUATIONS.md``):

====================  ==============================================
Eq. (1) warp          :mod:`stadv_ref.transform`
Eq. (2), Prop. 1      :mod:`stadv_ref.smoothness`
Eq. (3), Prop. 2      :mod:`stadv_ref.operators`
Eqs. (4), (5), [E8]   :mod:`stadv_ref.adversarial_loss`
Thms. 1-2, Eqs. 5-14  :mod:`stadv_ref.impossibility`
Sec. 4, Eq. (16)      :mod:`stadv_ref.upper_bounds`, :mod:`stadv_ref.sdp`
Certification (6.7)   :mod:`stadv_ref.certification`
stAdv, training       :mod:`stadv_ref.attacks`, :mod:`stadv_ref.training`
====================  ==============================================

Importing this package never imports Numba or CuPy (backends load lazily).
"""
from __future__ import annotations

import importlib

from .adversarial_loss import (
    adv_loss_exact,
    adv_loss_first_order,
    adv_loss_linearized,
    adv_loss_path_integral,
    cw_margin,
    flow_gradient,
)
from .backend import (
    BackendError,
    available_backends,
    current_backend_name,
    get_backend,
    use_backend,
)
from .data import load_dataset, load_mnist, read_idx
from .network import OneHiddenLayerNet
from .operators import (
    SmoothnessOperator,
    aabb_radii,
    dense_smoothness_power,
    m_power,
    smoothness_norm,
    smoothness_operator,
)
from .smoothness import (
    flow_tv,
    flow_tv_grad,
    neighbor_matrices,
    smoothness_matrix,
    stadv_flow_loss,
)
from .transform import tied, tied_jacobian_diag, warp, warp_matrix, warp_vjp_flow, warp_vjp_x

__version__ = "0.1.0"

# Names defined by later modules, imported on first access so that a missing
# optional piece never breaks ``import stadv_ref``.
_LAZY = {
    "lower_bound_attack": "impossibility",
    "linear_lower_bound_attack": "impossibility",
    "LowerBoundResult": "impossibility",
    "upper_bound": "upper_bounds",
    "UpperBoundResult": "upper_bounds",
    "LinearClassifier": "upper_bounds",
    "solve_sdp": "sdp",
    "certify": "certification",
    "stadv_attack": "attacks",
    "train": "training",
}


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'stadv_ref' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
