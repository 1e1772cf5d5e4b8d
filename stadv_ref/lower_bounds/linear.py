r"""Theorem 2 (appendix 6.4): the initial input ``x*`` for a linear classifier ``f = v^T x``.

``v*`` is the top eigenvector of ``B = diag(v) M^-2 diag(v) = diag(v) L^-1 diag(v)``,
found matrix-free: ``B`` is a :class:`scipy.sparse.linalg.LinearOperator` whose
``matvec`` applies :func:`stadv_ref.operators.m_power` (``M^-2 = L^-1``, fast
Kronecker-sum operator), and :func:`scipy.sparse.linalg.eigsh` finds its largest
eigenpair; no dense ``d x d`` matrix is formed (except for ``d <= 16``, where
ARPACK is not reliable and ``B`` is materialised column by column).

``x* = pi_inf(v*)`` (Theorem 2) and the bound is ``eps ||M^-1 diag(v) x*||``.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from ..backend import get_backend
from ..operators import m_power

__all__ = ["theorem2_operator", "theorem2_input"]

_DENSE_MAX = 16


def theorem2_operator(v_img):
    """``B = diag(v) M^-2 diag(v)`` as a matrix-free symmetric PSD LinearOperator (Theorem 2)."""
    H, W = v_img.shape
    vf = v_img.ravel()
    to_np = get_backend().to_numpy

    def matvec(y):
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        field = (vf * y).reshape(1, H, W)
        return vf * np.asarray(to_np(m_power(field, -2))).reshape(-1)

    return spla.LinearOperator((H * W, H * W), matvec=matvec, rmatvec=matvec, dtype=np.float64)


def theorem2_input(v_img, *, seed=0, tol=0.0):
    """Theorem 2's ``x* = pi_inf(v*)``, ``v*`` the top eigenvector of ``diag(v) M^-2 diag(v)``.

    Parameters
    ----------
    v_img : ndarray, shape (H, W)
        Linear weights.
    seed : int
        Seed of the ARPACK start vector (deterministic).
    tol : float
        ``eigsh`` tolerance (0: machine precision).

    Returns
    -------
    x : ndarray, shape (H, W)
        ``pi_inf(v*)``, sign fixed so that its largest-magnitude entry is positive.
    eigval : float
        Top eigenvalue of ``B``.
    notes : list of str
    """
    H, W = v_img.shape
    d = H * W
    op = theorem2_operator(v_img)
    notes = []
    if d <= _DENSE_MAX:
        B = np.column_stack([op.matvec(e) for e in np.eye(d)])
        lam, Q = scipy.linalg.eigh(0.5 * (B + B.T))
        val, vec = float(lam[-1]), Q[:, -1]
        notes.append(f"Theorem 2 eigenvector by dense eigh (d = {d} <= {_DENSE_MAX})")
    else:
        v0 = np.random.default_rng(seed).standard_normal(d)
        lam, Q = spla.eigsh(op, k=1, which="LA", v0=v0, tol=tol)
        val, vec = float(lam[0]), Q[:, 0]
        notes.append("Theorem 2 eigenvector by matrix-free eigsh on diag(v) M^-2 diag(v)")
    big = np.abs(vec).max()
    if not big > 0 or not val > 0:
        notes.append("v = 0: Theorem 2 degenerates, x* = 1 used")
        return np.ones((H, W)), 0.0, notes
    x = vec / big
    x = x * np.sign(x[np.argmax(np.abs(x))])
    return x.reshape(H, W), val, notes
