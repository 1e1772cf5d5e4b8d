"""Numba kernel for the Section 4.1 mixing method (see :func:`stadv_ref.reference.sdp.sdp_mixing_reference`).

The whole iteration loop runs compiled: the two matrix products per
iteration are BLAS calls (``np.dot`` with ``out=``, no allocation), the row
normalisations and the convergence test are fused loops, so small problems
with many iterations pay no Python overhead.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_OPTS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@njit(**_OPTS)
def _rownormalize(X, out):
    """``out[i] = X[i] / ||X[i]||`` where ``||X[i]|| > 0`` (other rows keep ``out[i]``); returns ``sum ||X[i]||``."""
    total = 0.0
    for i in range(X.shape[0]):
        s = X[i, 0] * X[i, 0]
        for j in range(1, X.shape[1]):
            s += X[i, j] * X[i, j]
        nrm = np.sqrt(s)
        if nrm > 0:
            for j in range(X.shape[1]):
                out[i, j] = X[i, j] / nrm
        total += nrm
    return total


@njit(**_OPTS)
def sdp_mixing_kernel(A, AT, S, T, max_iter, tol):
    """In place: ``S <- rownormalize(A T)``, ``T <- rownormalize(A^T S)`` until converged.

    Stops after iteration ``k >= 2`` when ``phi_k - phi_{k-1} <= tol |phi_k|``
    (``phi_k = sum_j ||(A^T S)_j||``) or at ``k = max_iter``; returns ``k``.
    """
    X = np.empty(S.shape, dtype=S.dtype)
    Y = np.empty(T.shape, dtype=T.dtype)
    phi_prev = 0.0
    k = 0
    for it in range(1, max_iter + 1):
        k = it
        np.dot(A, T, X)
        _rownormalize(X, S)
        np.dot(AT, S, Y)
        phi = _rownormalize(Y, T)
        if it >= 2 and phi - phi_prev <= tol * math.fabs(phi):
            break
        phi_prev = phi
    return k
