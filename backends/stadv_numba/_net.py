"""Numba kernels for the one-hidden-layer network (the GEMMs stay in BLAS via NumPy)."""
from __future__ import annotations

from numba import njit, prange

_OPTS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@njit(parallel=True, **_OPTS)
def bias_relu_out_kernel(Z, b, VT, c, out):
    """In place ``Z += b``; ``out[n] = relu(Z[n]) VT + c`` (fused; ``K`` is small, ``VT = V^T``)."""
    N, m = Z.shape
    K = VT.shape[1]
    for n in prange(N):
        for k in range(K):
            out[n, k] = c[k]
        for h in range(m):
            z = Z[n, h] + b[h]
            Z[n, h] = z
            if z > 0:
                for k in range(K):
                    out[n, k] += z * VT[h, k]


@njit(parallel=True, **_OPTS)
def masked_backprop_kernel(Z, b, G):
    """In place ``G *= dsigma(Z + b)`` (ReLU derivative, 0 at 0)."""
    N, m = Z.shape
    for n in prange(N):
        for h in range(m):
            if not (Z[n, h] + b[h] > 0):
                G[n, h] = 0
