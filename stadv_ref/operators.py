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

from ._validate import as_float_array, check_choice
from .backend import get_backend
from .reference.operators import (
    SmoothnessOperator,
    aabb_radii,
    dense_smoothness_power,
    smoothness_operator,
)

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
    """
    fields = as_float_array("fields", fields)
    if fields.ndim < 2:
        raise ValueError(f"fields must have at least 2 dimensions (H, W), got shape {fields.shape}")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, float, np.integer, np.floating)):
        raise TypeError(f"k must be a number, got {type(k).__name__}")
    p = check_choice("k", float(k), M_POWERS) / 2
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
