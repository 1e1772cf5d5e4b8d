"""stadv-ref: reference implementation of *Provable Defenses against Spatially
Transformed Adversarial Inputs: Impossibility and Possibility Results*.

Equation index (paper numbering; see ``docs/EQUATIONS.md``):

====================  ==============================================
Eq. (1) warp          :mod:`stadv_ref.transform`
Eq. (2), Prop. 1      :mod:`stadv_ref.smoothness`
Eq. (3), Prop. 2      :mod:`stadv_ref.operators`
Eqs. (4), (5), [E8]   :mod:`stadv_ref.adversarial_loss`
Thms. 1-2, Eqs. 5-14  :mod:`stadv_ref.lower_bounds`
Sec. 4, Eq. (16)      :mod:`stadv_ref.upper_bounds` (closed_form, sdp)
Certification (6.7)   :mod:`stadv_ref.upper_bounds.certification`
stAdv, PGD, training  :mod:`stadv_ref.attacks`, :mod:`stadv_ref.training`
====================  ==============================================

The full table (every equation, proposition, theorem, algorithm and erratum, with
its code and its test) is ``docs/EQUATION_INDEX.md``. Layers, bottom to top:
``_validate`` < ``reference`` < ``kernels`` < ``backend`` < the math modules
(``transform``, ``smoothness``, ``operators``, ``network``, ``adversarial_loss``)
< ``lower_bounds`` / ``upper_bounds`` / ``attacks`` < ``training`` < ``experiments``
< ``cli``. Importing this package never imports Numba or CuPy (backends load lazily).
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
from .network import LinearClassifier, OneHiddenLayerNet
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

# Names defined by the upper layers, imported on first access so that importing
# stadv_ref stays light (no cvxpy, matplotlib or tqdm until they are needed).
_LAZY = {
    "lower_bound_attack": "lower_bounds",
    "linear_lower_bound_attack": "lower_bounds",
    "LowerBoundResult": "lower_bounds",
    "upper_bound": "upper_bounds",
    "UpperBoundResult": "upper_bounds",
    "solve_sdp": "upper_bounds",
    "certify": "upper_bounds",
    "CertificationResult": "upper_bounds",
    "local_pair_bounds": "upper_bounds",
    "stadv_attack": "attacks",
    "flow_pgd_attack": "attacks",
    "flow_pgd_attack_images": "attacks",
    "train": "training",
    "import_onnx": "onnx_import",
    "from_torch": "torch_import",
}

__all__ = [
    "OneHiddenLayerNet",
    "LinearClassifier",
    "warp",
    "warp_vjp_x",
    "warp_vjp_flow",
    "warp_matrix",
    "tied",
    "tied_jacobian_diag",
    "neighbor_matrices",
    "smoothness_matrix",
    "flow_tv",
    "flow_tv_grad",
    "stadv_flow_loss",
    "SmoothnessOperator",
    "smoothness_operator",
    "m_power",
    "smoothness_norm",
    "dense_smoothness_power",
    "aabb_radii",
    "adv_loss_exact",
    "adv_loss_first_order",
    "adv_loss_linearized",
    "adv_loss_path_integral",
    "cw_margin",
    "flow_gradient",
    "BackendError",
    "available_backends",
    "current_backend_name",
    "get_backend",
    "use_backend",
    "load_dataset",
    "load_mnist",
    "read_idx",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'stadv_ref' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
