r"""Eq. (3) and Proposition 2: the operator ``M = L^(1/2)``, its powers, and AABB radii.

``L = A_H (x) I_W + I_H (x) A_W`` is a Kronecker sum of the tridiagonal 1-D
factors :func:`stadv_ref.smoothness.path_matrix`. With ``A_H = Q_H diag(a) Q_H^T``
and ``A_W = Q_W diag(b) Q_W^T``, every power of ``L`` acts on an ``H x W`` field
``F`` as

.. math:: L^p F = Q_H\,\big((a_k + b_l)^p \circ (Q_H^T F Q_W)\big)\,Q_W^T ,

so ``M = L^(1/2)`` (the symmetric square root, [E4]), ``M^-1``, ``L^-1`` and
``diag(L^-1)`` need two small eigendecompositions and no dense ``d x d`` matrix
(224x224 fields in milliseconds; a dense ``L`` would need 18.8 GiB).

:func:`dense_smoothness_power` builds the same operator densely from the sparse
``L`` (for small grids only) to check the fast one against.
"""
from __future__ import annotations

import numpy as np

from ._validate import as_float_array, check_budget, check_choice, check_positive_int, check_real
from .backend import get_backend
from .reference import operators as _ref
from .reference.operators import SmoothnessOperator

__all__ = [
    "SmoothnessOperator",
    "smoothness_operator",
    "m_power",
    "smoothness_norm",
    "dense_smoothness_power",
    "aabb_radii",
    "M_POWERS",
]

M_POWERS = (1.0, -1.0, 2.0, -2.0, 4.0, -4.0)
"""Allowed powers ``k`` of ``M`` in :func:`m_power` (``M^k = L^(k/2)``)."""


def m_power(fields, k, *, backend=None):
    """Apply ``M^k = L^(k/2)`` to flow fields (Eq. (3), Theorems 1-2).

    Parameters
    ----------
    fields : array_like, shape (..., H, W)
        One field per ``(H, W)`` slice: a tied flow ``(N, H, W)`` or an untied
        ``(N, 2, H, W)`` (each component separately).
    k : {1, -1, 2, -2, 4, -4}
        Power of ``M``: ``1`` is ``M``, ``-1`` is ``M^-1`` ( = ``M^-T``, [E4]),
        ``-2`` is ``L^-1``, ``2`` is ``L``.

    Returns
    -------
    ndarray, shape of ``fields``

    Raises
    ------
    TypeError
        ``fields`` is not a real numeric array; ``k`` is not a real number.
    ValueError
        ``fields`` has fewer than 2 dimensions or holds NaN/inf (an empty batch gives an
        empty result); ``k`` is not in :data:`M_POWERS`; unknown ``backend``.
    """
    fields = as_float_array("fields", fields)
    if fields.ndim < 2:
        raise ValueError(f"fields must have at least 2 dimensions (H, W), got shape {fields.shape}")
    p = check_choice("k", check_real("k", k), M_POWERS) / 2
    be = get_backend(backend)
    return be.smoothness_power(be.asarray(fields), p)


def smoothness_norm(flow, *, backend=None):
    """Budget norm of Eq. (3) (Prop. 1): ``||M r||`` per flow.

    Parameters
    ----------
    flow : array_like, shape (N, H, W) (tied) or (N, 2, H, W) (untied)

    Returns
    -------
    ndarray, shape (N,)
        ``sqrt(r^T L r)`` for tied flows, ``sqrt(du^T L du + dv^T L dv)`` for untied.

    Raises
    ------
    TypeError
        ``flow`` is not a real numeric array.
    ValueError
        ``flow`` is not ``(N, H, W)``/``(N, 2, H, W)`` or holds NaN/inf (``N = 0`` gives an
        empty result); unknown ``backend``.
    """
    flow = as_float_array("flow", flow, ndim=(3, 4))
    if flow.ndim == 4 and flow.shape[1] != 2:
        raise ValueError(f"flow must have shape (N, H, W) (tied) or (N, 2, H, W) (untied), got {tuple(flow.shape)}")
    be = get_backend(backend)
    flow = be.asarray(flow)  # NumPy input times a GPU result would not mix
    Lf = m_power(flow, 2, backend=backend)
    axes = tuple(range(1, flow.ndim))
    q = (flow * Lf).sum(axis=axes)
    return be.xp.sqrt(q.clip(0, None))


def _grid(H, W):
    return check_positive_int("H", H), check_positive_int("W", W)


def smoothness_operator(H, W):
    """Cached :class:`SmoothnessOperator` for an ``H x W`` grid (Eq. (3)).

    Raises
    ------
    TypeError
        ``H`` or ``W`` is not an integer.
    ValueError
        ``H`` or ``W`` is ``< 1``.
    """
    return _ref.smoothness_operator(*_grid(H, W))


def dense_smoothness_power(H, W, p):
    """Dense ``L^p`` (``d x d``) from the sparse ``L`` by ``eigh`` -- for checks on small grids.

    Parameters
    ----------
    H, W : int
        ``H * W <= 4096``.
    p : float

    Returns
    -------
    ndarray, shape (H*W, H*W)

    Raises
    ------
    TypeError
        ``H``/``W`` not integers, ``p`` not a real number.
    ValueError
        ``H``/``W`` ``< 1`` or ``H * W > 4096``; ``p`` not finite.
    """
    H, W = _grid(H, W)
    p = check_real("p", p)
    if not np.isfinite(p):
        raise ValueError(f"p must be finite, got {p}")
    return _ref.dense_smoothness_power(H, W, p)


def aabb_radii(H, W, eps=1.0):
    """Proposition 2: the axis-aligned bounding box of ``{r : ||M r|| <= eps}``.

    Parameters
    ----------
    H, W : int
    eps : float, default 1
        Budget (``>= 0``). The paper prints the radii without ``eps`` ([E11]); they
        scale linearly in it.

    Returns
    -------
    ndarray, shape (H, W)
        ``eps * lambda_i`` with ``lambda_i = sqrt((L^-1)_ii)``: ``|r_i| <= eps * lambda_i``
        for every feasible ``r``, attained by ``r = eps L^-1 e_i / sqrt((L^-1)_ii)``.

    Raises
    ------
    TypeError
        ``H``/``W`` not integers, ``eps`` not a real number.
    ValueError
        ``H``/``W`` ``< 1``; ``eps`` negative or not finite.
    """
    H, W = _grid(H, W)
    return _ref.aabb_radii(H, W, check_budget("eps", eps))
