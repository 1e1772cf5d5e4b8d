r"""Numba kernels for Eq. (2) / Prop. 1 (flow smoothness) and the stAdv flow loss.

The quadratic smoothness uses the stencil of ``L = A_H (x) I + I (x) A_W``:
``(L F)_ij = (4 + n_ij) F_ij - 2 sum_{q in N4(ij)} F_q`` where ``n_ij`` is the
number of in-image 4-neighbours (``A_n`` is tridiagonal with diagonal
``2 + #neighbours`` and off-diagonal ``-2``, see
:func:`stadv_ref.smoothness.path_matrix`). Sums are accumulated in float64
and cast to the input dtype at the end.
"""
from __future__ import annotations

import math

from numba import njit, prange

_OPTS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@njit(parallel=True, **_OPTS)
def flow_tv_rows_kernel(flow, partial):
    """``partial[n*H + i]`` = Eq. (2) summed over row ``i`` of flow ``n`` (zero flow outside)."""
    N, K, H, W = flow.shape
    for t in prange(N * H):
        n = t // H
        i = t - n * H
        s = 0.0
        for k in range(K):
            for j in range(W):
                f = float(flow[n, k, i, j])
                up = float(flow[n, k, i - 1, j]) if i > 0 else 0.0
                dn = float(flow[n, k, i + 1, j]) if i < H - 1 else 0.0
                lf = float(flow[n, k, i, j - 1]) if j > 0 else 0.0
                rt = float(flow[n, k, i, j + 1]) if j < W - 1 else 0.0
                s += (f - up) ** 2 + (f - dn) ** 2 + (f - lf) ** 2 + (f - rt) ** 2
        partial[t] = s


@njit(parallel=True, **_OPTS)
def laplacian_kernel(fields, scale, out):
    """``out[b] = scale * L fields[b]`` for ``fields (B, H, W)`` (5-point stencil of Prop. 1)."""
    B, H, W = fields.shape
    for t in prange(B * H):
        b = t // H
        i = t - b * H
        for j in range(W):
            f = float(fields[b, i, j])
            acc = 4.0 * f
            if i > 0:
                acc += f - 2.0 * float(fields[b, i - 1, j])
            if i < H - 1:
                acc += f - 2.0 * float(fields[b, i + 1, j])
            if j > 0:
                acc += f - 2.0 * float(fields[b, i, j - 1])
            if j < W - 1:
                acc += f - 2.0 * float(fields[b, i, j + 1])
            out[b, i, j] = scale * acc


@njit(parallel=True, **_OPTS)
def stadv_flow_loss_kernel(flow, eps, offsets, symmetric, values, grad):
    """stAdv ``L_flow`` and its gradient; parallel over flows (the neighbour scatter stays in-flow).

    ``offsets (n_off, 2)`` are the ``(dr, dc)`` of the neighbourhood; outside
    the image the neighbour is 0 (zeros) or the clipped pixel (``symmetric``
    with a one-pixel halo equals edge replication). ``values (N,)`` and
    ``grad (N, 2, H, W)`` are float64.
    """
    N, _, H, W = flow.shape
    n_off = offsets.shape[0]
    for n in prange(N):
        for k in range(2):
            for i in range(H):
                for j in range(W):
                    grad[n, k, i, j] = 0.0
        total = 0.0
        for i in range(H):
            for j in range(W):
                fu = float(flow[n, 0, i, j])
                fv = float(flow[n, 1, i, j])
                for o in range(n_off):
                    qi = i + offsets[o, 0]
                    qj = j + offsets[o, 1]
                    inside = qi >= 0 and qi < H and qj >= 0 and qj < W
                    if symmetric:
                        qi = min(max(qi, 0), H - 1)
                        qj = min(max(qj, 0), W - 1)
                        inside = True
                    if inside:
                        du = fu - float(flow[n, 0, qi, qj])
                        dv = fv - float(flow[n, 1, qi, qj])
                    else:
                        du = fu
                        dv = fv
                    s = math.sqrt(du * du + dv * dv + eps)
                    total += s
                    qu = du / s
                    qv = dv / s
                    grad[n, 0, i, j] += qu
                    grad[n, 1, i, j] += qv
                    if inside:
                        grad[n, 0, qi, qj] -= qu
                        grad[n, 1, qi, qj] -= qv
        values[n] = total
