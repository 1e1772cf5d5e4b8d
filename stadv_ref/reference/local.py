r"""Issue #21 reference kernel: the quadratic forms of the per-image certificate (Eq. (3), Prop. 1).

The per-image certificate (:mod:`stadv_ref.upper_bounds.local`) maximises linear functions of
a flow over the budget ``||M r|| <= eps``; its inner loop builds one coefficient field per
(image, hidden unit) pair by splitting the unit's weights by sign,

``a = P[j] * A1[n] + Q[j] * A2[n]``  (``P = max(W, 0)``, ``Q = max(-W, 0)`` or ``min(W, 0)``,
``A1``, ``A2`` per-pixel slopes of image ``n``),

and needs ``a^T L^-1 a`` (the squared ellipsoid maximum ``max_{||M r|| <= 1} a^T r``, [E4]).
The tight level also has a second field ``c`` of the same form (the coefficients of ``|r|``)
and needs ``c^T |L^-1 a|`` and ``c^T L^-1 c``. :func:`kink_forms_reference` computes the three
forms with the Kronecker eigendecomposition ``L = Q Lambda Q^T``
(:class:`~stadv_ref.reference.operators.SmoothnessOperator`): ``a^T L^-1 a = sum T^2 / lambda``
with ``T = Q_H^T a Q_W``, and ``L^-1 a = Q_H (T / lambda) Q_W^T``.
"""
from __future__ import annotations

import numpy as np

from .operators import smoothness_operator

__all__ = ["kink_forms_reference", "BLOCK"]

BLOCK = 1024
"""Pairs whose fields are built at once (about ``8 * 8 * BLOCK * H * W`` bytes of temporaries)."""


def kink_forms_reference(P, Q, A1, A2, C1, C2, n_idx, j_idx, H, W):
    """Quadratic forms of gathered coefficient fields (reference kernel ``kink_forms``).

    Parameters
    ----------
    P, Q : ndarray, shape (m, H*W), float64
        Row ``j``: the two parts of unit ``j``'s weights (e.g. positive and negative part).
    A1, A2 : ndarray, shape (N, H*W), float64
        Per-image slopes of the field ``a``: ``a_b = P[j_b] * A1[n_b] + Q[j_b] * A2[n_b]``.
    C1, C2 : ndarray, shape (N, H*W), float64, or None
        Slopes of the second field ``c_b = P[j_b] * C1[n_b] + Q[j_b] * C2[n_b]``; ``None``: no
        second field (``cross`` and ``qc`` are 0).
    n_idx, j_idx : ndarray of int, shape (B,)
        Image and unit of every pair.
    H, W : int
        Grid of the fields.

    Returns
    -------
    qa, cross, qc : ndarray, shape (B,), float64
        ``a^T L^-1 a``, ``c^T |L^-1 a|`` and ``c^T L^-1 c`` per pair.
    """
    op = smoothness_operator(H, W)
    inv = 1.0 / op.eigvals
    inv_flat = inv.ravel()
    B = len(n_idx)
    qa, cross, qc = np.zeros(B), np.zeros(B), np.zeros(B)
    for start in range(0, B, BLOCK):
        sl = slice(start, min(start + BLOCK, B))
        n, j = n_idx[sl], j_idx[sl]
        Pj, Qj = P[j], Q[j]
        a = (Pj * A1[n] + Qj * A2[n]).reshape(-1, H, W)
        Ta = op.QH.T @ a @ op.QW
        qa[sl] = np.square(Ta).reshape(len(n), -1) @ inv_flat
        if C1 is None:
            continue
        c = (Pj * C1[n] + Qj * C2[n]).reshape(-1, H, W)
        Tc = op.QH.T @ c @ op.QW
        qc[sl] = np.square(Tc).reshape(len(n), -1) @ inv_flat
        La = op.QH @ (Ta * inv) @ op.QW.T
        cross[sl] = (c * np.abs(La)).reshape(len(n), -1).sum(axis=1)
    return qa, cross, qc
