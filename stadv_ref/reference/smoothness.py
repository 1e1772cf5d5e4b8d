r"""Eq. (2) and Proposition 1 reference: neighbour matrices, ``L = M^T M`` and the flow losses.

* :func:`neighbor_matrices` -- the sparse ``M(t), M(b), M(l), M(r)``.
* :func:`smoothness_matrix` -- ``L = sum_k (I - M(k))^T (I - M(k))`` (Prop. 1).
* ``flow_tv_reference`` -- Eq. (2), the quadratic ``l_diff`` ([E1]).
* ``stadv_flow_loss_reference`` -- the stAdv paper's ``L_flow`` (per-pair square root).

Kernels take canonical, validated arrays; :mod:`stadv_ref.smoothness` validates and dispatches.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import scipy.sparse as sp

from .._validate import check_positive_int

__all__ = [
    "NeighborMatrices",
    "NEIGHBORHOODS",
    "FLOW_PADDINGS",
    "neighbor_matrices",
    "smoothness_matrix",
    "path_matrix",
    "flow_tv_reference",
    "flow_tv_grad_reference",
    "stadv_flow_loss_reference",
]

NeighborMatrices = namedtuple("NeighborMatrices", ["top", "bottom", "left", "right"])

NEIGHBORHOODS = {
    "4": ((-1, 0), (1, 0), (0, -1), (0, 1)),
    "diagonal": ((1, 1), (1, -1), (-1, 1), (-1, -1)),
}
NEIGHBORHOODS["8"] = NEIGHBORHOODS["4"] + NEIGHBORHOODS["diagonal"]
FLOW_PADDINGS = ("zeros", "symmetric")


def _check_hw(H, W):
    return check_positive_int("H", H), check_positive_int("W", W)


def neighbor_matrices(H, W):
    """The four neighbour matrices of Section 2.1 / Prop. 1.

    Parameters
    ----------
    H, W : int
        Image height and width; ``d = H * W`` pixels in row-major order.

    Returns
    -------
    NeighborMatrices
        ``(top, bottom, left, right)``, each a ``scipy.sparse.csr_matrix`` of
        shape ``(d, d)``: row ``i`` is the one-hot vector of pixel ``i``'s
        top/bottom/left/right neighbour, or a zero row where it does not exist
        (zero flow outside the image).
    """
    H, W = _check_hw(H, W)
    d = H * W
    rows, cols = np.divmod(np.arange(d), W)
    mats = []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nr, nc = rows + dr, cols + dc
        ok = (nr >= 0) & (nr < H) & (nc >= 0) & (nc < W)
        i = np.arange(d)[ok]
        j = (nr * W + nc)[ok]
        mats.append(sp.csr_matrix((np.ones(i.size), (i, j)), shape=(d, d)))
    return NeighborMatrices(*mats)


def smoothness_matrix(H, W):
    """``L = M^T M = sum_k (I - M(k))^T (I - M(k))`` (Proposition 1).

    Parameters
    ----------
    H, W : int

    Returns
    -------
    scipy.sparse.csr_matrix, shape (H*W, H*W)
        Symmetric positive definite ([E3]); ``||M r||^2 = r^T L r`` is the
        budget of Eq. (3).

    Notes
    -----
    ``L = A_H (x) I_W + I_H (x) A_W`` with ``A_n = path_matrix(n)``; see
    :mod:`stadv_ref.operators` for its fast powers.
    """
    H, W = _check_hw(H, W)
    eye = sp.identity(H * W, format="csr")
    L = sp.csr_matrix((H * W, H * W))
    for Mk in neighbor_matrices(H, W):
        D = eye - Mk
        L = L + D.T @ D
    return L.tocsr()


def path_matrix(n):
    """1-D factor ``A_n`` of ``L``: ``(I-S)^T (I-S) + (I-S^T)^T (I-S^T)``, ``S`` the shift.

    Tridiagonal, diagonal ``(3, 4, ..., 4, 3)`` (``(2,)`` when ``n = 1``), off-diagonal ``-2``.
    """
    n = check_positive_int("n", n)
    S = np.eye(n, k=-1)  # row i is one-hot of i-1: "previous" neighbour
    I = np.eye(n)
    return (I - S).T @ (I - S) + (I - S.T).T @ (I - S.T)


def _apply_L(fields):
    """``L`` applied to each (H, W) field, via the 1-D factors: ``A_H F + F A_W``."""
    H, W = fields.shape[-2:]
    return path_matrix(H) @ fields + fields @ path_matrix(W)


# ---------------------------------------------------------------------------
# Reference kernels
# ---------------------------------------------------------------------------
def flow_tv_reference(flow):
    """Eq. (2): ``sum_i sum_{j in N4(i)} (du_i-du_j)^2 + (dv_i-dv_j)^2`` (zero flow outside)."""
    padded = np.pad(flow, ((0, 0), (0, 0), (1, 1), (1, 1)))
    H, W = flow.shape[-2:]
    total = np.zeros(flow.shape[0], dtype=flow.dtype)
    for dr, dc in NEIGHBORHOODS["4"]:
        nb = padded[:, :, 1 + dr : 1 + dr + H, 1 + dc : 1 + dc + W]
        total += ((flow - nb) ** 2).sum(axis=(1, 2, 3))
    return total


def flow_tv_grad_reference(flow):
    """Gradient of Eq. (2): ``(2 L du, 2 L dv)``."""
    return (2 * _apply_L(flow)).astype(flow.dtype, copy=False)


def _pad_flow(flow, padding):
    mode = "constant" if padding == "zeros" else "symmetric"
    return np.pad(flow, ((0, 0), (0, 0), (1, 1), (1, 1)), mode=mode)


def _unpad_adjoint(gpad, padding):
    """Adjoint of :func:`_pad_flow` (fold the halo gradients back for symmetric)."""
    g = gpad[..., 1:-1, 1:-1].copy()
    if padding == "symmetric":
        g[..., 0, :] += gpad[..., 0, 1:-1]
        g[..., -1, :] += gpad[..., -1, 1:-1]
        g[..., :, 0] += gpad[..., 1:-1, 0]
        g[..., :, -1] += gpad[..., 1:-1, -1]
        g[..., 0, 0] += gpad[..., 0, 0]
        g[..., 0, -1] += gpad[..., 0, -1]
        g[..., -1, 0] += gpad[..., -1, 0]
        g[..., -1, -1] += gpad[..., -1, -1]
    return g


def stadv_flow_loss_reference(flow, eps, neighborhood, padding):
    """stAdv ``L_flow = sum_p sum_{q in N(p)} sqrt(||flow_p - flow_q||^2 + eps)`` and its gradient."""
    H, W = flow.shape[-2:]
    padded = _pad_flow(flow, padding)
    values = np.zeros(flow.shape[0], dtype=flow.dtype)
    g_center = np.zeros_like(flow)
    g_pad = np.zeros_like(padded)
    for dr, dc in NEIGHBORHOODS[neighborhood]:
        win = (slice(None), slice(None), slice(1 + dr, 1 + dr + H), slice(1 + dc, 1 + dc + W))
        diff = flow - padded[win]
        s = np.sqrt((diff**2).sum(axis=1) + eps)  # (N, H, W)
        values += s.sum(axis=(1, 2))
        q = diff / s[:, None]
        g_center += q
        g_pad[win] -= q
    return values, g_center + _unpad_adjoint(g_pad, padding)
