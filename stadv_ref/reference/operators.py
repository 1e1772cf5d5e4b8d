r"""Eq. (3) and Proposition 2 reference: powers of ``M`` (``L^p``) and the AABB of the budget set.

:class:`SmoothnessOperator` diagonalises ``L = M^T M`` on an ``H x W`` grid as a
Kronecker sum of two path Laplacians, so ``L^p`` (``p`` in ``{±1/2, ±1, ±2}``) costs
two small dense products per field. :mod:`stadv_ref.operators` validates and dispatches.
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.linalg

from .._validate import check_budget, check_positive_int
from .smoothness import path_matrix, smoothness_matrix

__all__ = [
    "SmoothnessOperator",
    "smoothness_operator",
    "smoothness_power_reference",
    "dense_smoothness_power",
    "aabb_radii",
]


class SmoothnessOperator:
    """Fast powers of ``L = M^T M`` on ``H x W`` fields (Kronecker-sum eigendecomposition).

    Parameters
    ----------
    H, W : int

    Attributes
    ----------
    eigvals : ndarray, shape (H, W)
        Eigenvalues ``a_k + b_l`` of ``L``.
    QH, QW : ndarray
        Orthonormal eigenvectors of ``A_H`` and ``A_W``.
    """

    def __init__(self, H, W):
        self.H = check_positive_int("H", H)
        self.W = check_positive_int("W", W)
        a, self.QH = scipy.linalg.eigh(path_matrix(self.H))
        b, self.QW = scipy.linalg.eigh(path_matrix(self.W))
        self.eigvals = a[:, None] + b[None, :]
        for arr in (self.eigvals, self.QH, self.QW):
            arr.setflags(write=False)  # shared through the cache: keep it immutable

    @property
    def lambda_min(self):
        """Smallest eigenvalue of ``L`` (about 0.041 at 28x28)."""
        return float(self.eigvals.min())

    @property
    def lambda_max(self):
        """Largest eigenvalue of ``L``."""
        return float(self.eigvals.max())

    def apply(self, fields, p):
        """``L^p`` applied to every ``(H, W)`` field of ``fields (..., H, W)``."""
        dt = fields.dtype if fields.dtype == np.float32 else np.float64
        QH, QW = self.QH.astype(dt), self.QW.astype(dt)
        spec = (self.eigvals**p).astype(dt)
        return QH @ ((QH.T @ fields @ QW) * spec) @ QW.T

    def diag(self, p):
        """``diag(L^p)`` as an ``(H, W)`` array: ``(Q_H^2) (lam^p) (Q_W^2)^T``."""
        return (self.QH**2) @ (self.eigvals**p) @ (self.QW**2).T


@functools.lru_cache(maxsize=32)
def smoothness_operator(H, W):
    """Cached :class:`SmoothnessOperator` for an ``H x W`` grid."""
    return SmoothnessOperator(H, W)


def smoothness_power_reference(fields, p):
    """Reference kernel: ``L^p`` on each field of ``fields (..., H, W)``."""
    H, W = fields.shape[-2:]
    return smoothness_operator(H, W).apply(fields, p)


def dense_smoothness_power(H, W, p):
    """Dense ``L^p`` (``d x d``) from the sparse ``L`` by ``eigh`` -- for checks on small grids.

    Parameters
    ----------
    H, W : int
    p : float

    Returns
    -------
    ndarray, shape (H*W, H*W)
    """
    H, W = check_positive_int("H", H), check_positive_int("W", W)
    if H * W > 4096:
        raise ValueError(f"dense_smoothness_power is for small grids; H*W = {H * W} > 4096")
    lam, Q = np.linalg.eigh(smoothness_matrix(H, W).toarray())
    return (Q * lam**p) @ Q.T


def aabb_radii(H, W, eps=1.0):
    """Proposition 2: the axis-aligned bounding box of ``{r : ||M r|| <= eps}``.

    Parameters
    ----------
    H, W : int
    eps : float, default 1
        Budget. The paper prints the radii without ``eps`` ([E11]); they scale
        linearly in it.

    Returns
    -------
    ndarray, shape (H, W)
        ``eps * lambda_i`` with ``lambda_i = sqrt((L^-1)_ii)``: ``|r_i| <= eps * lambda_i``
        for every feasible ``r``, attained by ``r = eps L^-1 e_i / sqrt((L^-1)_ii)``.
    """
    eps = check_budget("eps", eps)
    return eps * np.sqrt(smoothness_operator(H, W).diag(-1.0))
