"""Numba kernels for the one-hidden-layer network (the GEMMs stay in BLAS via NumPy).

Both kernels are serial on purpose (#20, "threads that never hurt"). Each runs between two
BLAS products (``X W^T`` before, ``G W`` after) that are already multi-threaded and hold almost
all of the work (``O(N m d)`` against ``O(N m K)`` here, ``K << d``). A parallel region there
gains little and costs much: after it, the OpenMP workers of Numba's default threading layer
keep spinning (libgomp's active wait: about 4 ms of CPU per region, measured on the 2-core VM)
on the cores the next BLAS product needs. With them parallel, ``net.forward`` +
``net.input_gradient`` on 1,000 MNIST images took 1.16-1.44x the NumPy backend's time
(``benchmarks/bench_threads.py``, default threads); serial, they are not slower. Rows are
independent, so the serial loops give the same bits as the parallel ones did.
"""
from __future__ import annotations

from numba import njit

_OPTS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@njit(**_OPTS)
def bias_relu_out_kernel(Z, b, VT, c, out):
    """In place ``Z += b``; ``out[n] = relu(Z[n]) VT + c`` (fused; ``K`` is small, ``VT = V^T``)."""
    N, m = Z.shape
    K = VT.shape[1]
    for n in range(N):
        for k in range(K):
            out[n, k] = c[k]
        for h in range(m):
            z = Z[n, h] + b[h]
            Z[n, h] = z
            if z > 0:
                for k in range(K):
                    out[n, k] += z * VT[h, k]


@njit(**_OPTS)
def masked_backprop_kernel(Z, b, G):
    """In place ``G *= dsigma(Z + b)`` (ReLU derivative, 0 at 0)."""
    N, m = Z.shape
    for n in range(N):
        for h in range(m):
            if not (Z[n, h] + b[h] > 0):
                G[n, h] = 0
