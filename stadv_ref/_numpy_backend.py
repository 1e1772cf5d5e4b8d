"""The NumPy/SciPy reference registered as backend ``"numpy"``.

Every kernel here is the reference implementation from the module that owns
its equation; this namespace only collects them under the names of
:data:`stadv_ref.interface.KERNELS`.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import network, operators, smoothness, transform


def _asarray(a, dtype=None):
    return np.asarray(a, dtype=dtype)


def _to_numpy(a):
    return np.asarray(a)


def _sdp_mixing(*args, **kwargs):
    from . import sdp

    return sdp.sdp_mixing_reference(*args, **kwargs)


def _lambda_max_upper(*args, **kwargs):
    from . import sdp

    return sdp.lambda_max_upper_reference(*args, **kwargs)


backend = SimpleNamespace(
    name="numpy",
    xp=np,
    asarray=_asarray,
    to_numpy=_to_numpy,
    warp=transform.warp_reference,
    warp_vjp_x=transform.warp_vjp_x_reference,
    warp_vjp_flow=transform.warp_vjp_flow_reference,
    tied_jacobian_diag=transform.tied_jacobian_diag_reference,
    flow_tv=smoothness.flow_tv_reference,
    flow_tv_grad=smoothness.flow_tv_grad_reference,
    stadv_flow_loss=smoothness.stadv_flow_loss_reference,
    smoothness_power=operators.smoothness_power_reference,
    net_forward=network.net_forward_reference,
    net_input_grad=network.net_input_grad_reference,
    sdp_mixing=_sdp_mixing,
    lambda_max_upper=_lambda_max_upper,
)
