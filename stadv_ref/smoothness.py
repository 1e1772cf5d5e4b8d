r"""Eq. (2) and Proposition 1: flow smoothness, neighbour matrices, ``L = M^T M``.

* :func:`neighbor_matrices` -- the sparse ``M(t), M(b), M(l), M(r)``.
* :func:`smoothness_matrix` -- ``L = sum_k (I - M(k))^T (I - M(k))`` (Prop. 1).
* :func:`flow_tv` -- Eq. (2), the quadratic ``l_diff`` ([E1]); for a tied flow
  ``flow_tv(tied(r)) = 2 r^T L r`` ([E2]).
* :func:`stadv_flow_loss` -- the stAdv paper's non-quadratic ``L_flow`` with a
  per-pair square root and ``1e-8`` (a different function, needed by the attack).
"""
from __future__ import annotations

from ._validate import as_float_array, check_budget, check_choice
from .backend import get_backend
from .reference.smoothness import (
    FLOW_PADDINGS,
    NEIGHBORHOODS,
    NeighborMatrices,
    neighbor_matrices,
    path_matrix,
    smoothness_matrix,
)

__all__ = [
    "NeighborMatrices",
    "neighbor_matrices",
    "smoothness_matrix",
    "path_matrix",
    "flow_tv",
    "flow_tv_grad",
    "stadv_flow_loss",
    "NEIGHBORHOODS",
    "FLOW_PADDINGS",
]


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------
def _flow_arg(flow):
    flow = as_float_array("flow", flow, ndim=4)
    if flow.shape[1] != 2 or flow.shape[0] < 1:
        raise ValueError(f"flow must have shape (N, 2, H, W), got {tuple(flow.shape)}")
    return flow


def flow_tv(flow, *, backend=None):
    """Flow smoothness ``l_diff`` of Eq. (2) (the quadratic form, [E1]).

    Parameters
    ----------
    flow : array_like, shape (N, 2, H, W)

    Returns
    -------
    ndarray, shape (N,)

    Raises
    ------
    TypeError
        ``flow`` is not a real numeric array.
    ValueError
        ``flow`` is not ``(N, 2, H, W)`` with ``N >= 1``, or holds NaN/inf; unknown ``backend``.

    Notes
    -----
    .. math:: l_{diff} = \\sum_i \\sum_{j \\in N_4(i)} (du_i-du_j)^2 + (dv_i-dv_j)^2

    with zero flow outside the image, so ``l_diff = du^T L du + dv^T L dv`` and,
    for a tied flow, ``2 r^T L r`` (Proposition 1).
    """
    flow = _flow_arg(flow)
    be = get_backend(backend)
    return be.flow_tv(be.asarray(flow))


def flow_tv_grad(flow, *, backend=None):
    """Gradient of Eq. (2), :func:`flow_tv`: ``(2 L du, 2 L dv)`` (Prop. 1), shape (N, 2, H, W).

    Raises
    ------
    TypeError, ValueError
        As :func:`flow_tv`.
    """
    flow = _flow_arg(flow)
    be = get_backend(backend)
    return be.flow_tv_grad(be.asarray(flow))


def stadv_flow_loss(flow, eps=1e-8, neighborhood="4", padding="zeros", *, backend=None):
    """The stAdv flow loss ``L_flow`` (Xiao et al. 2018) and its gradient.

    Parameters
    ----------
    flow : array_like, shape (N, 2, H, W)
    eps : float
        Added under each square root (``1e-8`` in stAdv); must be ``> 0`` so the
        loss is differentiable.
    neighborhood : {"4", "diagonal", "8"}
        ``"4"``: top/bottom/left/right (the stAdv paper's text).
        ``"diagonal"``: the four diagonal neighbours, as the public stAdv code does.
        ``"8"``: both.
    padding : {"zeros", "symmetric"}
        Flow outside the image: zero (like Eq. (2)) or mirrored
        (``tf.pad(mode="SYMMETRIC")`` as in the public stAdv code).

    Returns
    -------
    values : ndarray, shape (N,)
    grad : ndarray, shape (N, 2, H, W)

    Raises
    ------
    TypeError
        ``flow`` is not a real numeric array; ``eps`` is not a real number.
    ValueError
        ``flow`` is not ``(N, 2, H, W)`` with ``N >= 1`` or holds NaN/inf; ``eps`` is not
        finite and ``> 0``; unknown ``neighborhood``, ``padding`` or ``backend``.

    Notes
    -----
    .. math:: L_{flow} = \\sum_p \\sum_{q \\in N(p)} \\sqrt{(du_p-du_q)^2 + (dv_p-dv_q)^2 + \\epsilon}

    Unlike Eq. (2) this is not a quadratic form ([E1]).
    """
    flow = _flow_arg(flow)
    eps = check_budget("eps", eps, allow_zero=False)
    check_choice("neighborhood", neighborhood, NEIGHBORHOODS)
    check_choice("padding", padding, FLOW_PADDINGS)
    be = get_backend(backend)
    return be.stadv_flow_loss(be.asarray(flow), eps, neighborhood, padding)
