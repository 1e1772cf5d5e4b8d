r"""Numba kernels for Eq. (1): the bilinear warp, its VJPs and the tied Jacobian.

All kernels take C-contiguous canonical arrays (``x (N,C,H,W)``, ``flow
(N,2,H,W)``) of one float dtype ``T`` and compute in ``T``, like the NumPy
reference :mod:`stadv_ref.transform`:

* the sampling coordinate ``u_j + du`` is formed in ``T`` (``cb``/``rb`` are
  ``arange(W|H, dtype=T)``), so ``floor`` picks the same corner as the
  reference -- this matters for the right derivative at integer positions;
* the constant ``one`` is a ``T`` scalar so that no ``float64`` promotion
  creeps into float32 kernels.

Border padding clips the coordinate to ``[0, n-1]`` and zeroes its
derivative where a step to the right is clipped (``pos < 0`` or
``pos >= n-1``, the reference's right-derivative convention). Zero padding clamps the
coordinate to ``[-2, n+1]``, which changes nothing (every corner beyond is
invalid anyway) but keeps ``int()`` safe for huge flows.

Out-of-image corners get weight 0 and a clamped (valid) index, so the channel
loops are branch-free.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_OPTS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@njit(**_OPTS)
def _axis(pos, nm1, one, border):
    """Lower corner, fraction and 'moves with the flow' flag of one coordinate."""
    zero = one - one
    ok = one
    if border:
        if pos < zero:
            pos = zero
            ok = zero
        elif pos >= nm1:  # right derivative: clipped from the last row/column on
            pos = nm1
            ok = zero
    else:
        lo = zero - one - one
        hi = nm1 + one + one
        if pos < lo:
            pos = lo
        elif pos > hi:
            pos = hi
    p0 = np.floor(pos)
    return int(p0), pos - p0, ok


@njit(**_OPTS)
def _corners(i, j, du, dv, cb, rb, one, border):
    """Clamped corner indices, validity masks (``T`` 0/1), fractions and flags of pixel ``(i, j)``.

    Returns ``r0, r1, c0, c1, m00, m01, m10, m11, fr, fc, okr, okc``.
    """
    H = rb.shape[0]
    W = cb.shape[0]
    zero = one - one
    c0, fc, okc = _axis(cb[j] + du, cb[W - 1], one, border)
    r0, fr, okr = _axis(rb[i] + dv, rb[H - 1], one, border)
    c1 = c0 + 1
    r1 = r0 + 1
    vc0 = one if (c0 >= 0 and c0 < W) else zero
    vc1 = one if (c1 >= 0 and c1 < W) else zero
    vr0 = one if (r0 >= 0 and r0 < H) else zero
    vr1 = one if (r1 >= 0 and r1 < H) else zero
    c0 = min(max(c0, 0), W - 1)
    c1 = min(max(c1, 0), W - 1)
    r0 = min(max(r0, 0), H - 1)
    r1 = min(max(r1, 0), H - 1)
    return r0, r1, c0, c1, vr0 * vc0, vr0 * vc1, vr1 * vc0, vr1 * vc1, fr, fc, okr, okc


@njit(parallel=True, **_OPTS)
def warp_kernel(x, flow, cb, rb, one, border, out):
    """``out = g(flow; x)`` (Eq. (1)); parallel over (image, row)."""
    N, C, H, W = x.shape
    for t in prange(N * H):
        n = t // H
        i = t - n * H
        for j in range(W):
            r0, r1, c0, c1, m00, m01, m10, m11, fr, fc, _, _ = _corners(
                i, j, flow[n, 0, i, j], flow[n, 1, i, j], cb, rb, one, border
            )
            gr = one - fr
            gc = one - fc
            w00 = gr * gc * m00
            w01 = gr * fc * m01
            w10 = fr * gc * m10
            w11 = fr * fc * m11
            for c in range(C):
                out[n, c, i, j] = (
                    w00 * x[n, c, r0, c0]
                    + w01 * x[n, c, r0, c1]
                    + w10 * x[n, c, r1, c0]
                    + w11 * x[n, c, r1, c1]
                )


@njit(parallel=True, **_OPTS)
def warp_vjp_flow_kernel(x, flow, grad_out, cb, rb, one, border, out):
    """``out[:, 0|1] = sum_c grad_out * d g / d (du|dv)`` (right derivatives); parallel over rows."""
    N, C, H, W = x.shape
    zero = one - one
    for t in prange(N * H):
        n = t // H
        i = t - n * H
        for j in range(W):
            r0, r1, c0, c1, m00, m01, m10, m11, fr, fc, okr, okc = _corners(
                i, j, flow[n, 0, i, j], flow[n, 1, i, j], cb, rb, one, border
            )
            gr = one - fr
            gc = one - fc
            su = zero
            sv = zero
            for c in range(C):
                x00 = x[n, c, r0, c0] * m00
                x01 = x[n, c, r0, c1] * m01
                x10 = x[n, c, r1, c0] * m10
                x11 = x[n, c, r1, c1] * m11
                g = grad_out[n, c, i, j]
                su += g * ((gr * (x01 - x00) + fr * (x11 - x10)) * okc)
                sv += g * ((gc * (x10 - x00) + fc * (x11 - x01)) * okr)
            out[n, 0, i, j] = su
            out[n, 1, i, j] = sv


@njit(**_OPTS)
def _scatter_plane(flow, g, cb, rb, one, border, n, c, out):
    """``out[n, c] = G(flow[n])^T g[n, c]`` for one plane (zeroes it first)."""
    H = rb.shape[0]
    W = cb.shape[0]
    zero = one - one
    for i in range(H):
        for j in range(W):
            out[n, c, i, j] = zero
    for i in range(H):
        for j in range(W):
            r0, r1, c0, c1, m00, m01, m10, m11, fr, fc, _, _ = _corners(
                i, j, flow[n, 0, i, j], flow[n, 1, i, j], cb, rb, one, border
            )
            gr = one - fr
            gc = one - fc
            v = g[n, c, i, j]
            out[n, c, r0, c0] += v * (gr * gc * m00)
            out[n, c, r0, c1] += v * (gr * fc * m01)
            out[n, c, r1, c0] += v * (fr * gc * m10)
            out[n, c, r1, c1] += v * (fr * fc * m11)


@njit(parallel=True, **_OPTS)
def warp_vjp_x_kernel(flow, grad_out, cb, rb, one, border, out):
    """Adjoint warp ``G(flow)^T grad_out`` (scatter-add); parallel over (image, channel) planes."""
    N, C, H, W = grad_out.shape
    for t in prange(N * C):
        n = t // C
        c = t - n * C
        _scatter_plane(flow, grad_out, cb, rb, one, border, n, c, out)


@njit(parallel=True, **_OPTS)
def warp_vjp_both_kernel(x, flow, grad_out, cb, rb, one, border, gx, gflow):
    """Both VJPs in one pass over the pixels; parallel over images (race-free scatter)."""
    N, C, H, W = x.shape
    zero = one - one
    for n in prange(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    gx[n, c, i, j] = zero
        for i in range(H):
            for j in range(W):
                r0, r1, c0, c1, m00, m01, m10, m11, fr, fc, okr, okc = _corners(
                    i, j, flow[n, 0, i, j], flow[n, 1, i, j], cb, rb, one, border
                )
                gr = one - fr
                gc = one - fc
                w00 = gr * gc * m00
                w01 = gr * fc * m01
                w10 = fr * gc * m10
                w11 = fr * fc * m11
                su = zero
                sv = zero
                for c in range(C):
                    x00 = x[n, c, r0, c0] * m00
                    x01 = x[n, c, r0, c1] * m01
                    x10 = x[n, c, r1, c0] * m10
                    x11 = x[n, c, r1, c1] * m11
                    g = grad_out[n, c, i, j]
                    su += g * ((gr * (x01 - x00) + fr * (x11 - x10)) * okc)
                    sv += g * ((gc * (x10 - x00) + fc * (x11 - x01)) * okr)
                    gx[n, c, r0, c0] += g * w00
                    gx[n, c, r0, c1] += g * w01
                    gx[n, c, r1, c0] += g * w10
                    gx[n, c, r1, c1] += g * w11
                gflow[n, 0, i, j] = su
                gflow[n, 1, i, j] = sv


@njit(parallel=True, **_OPTS)
def tied_jacobian_diag_kernel(x, r, cb, rb, one, border, correct, out):
    """Diagonal of ``Dg`` for the tied flow ``du = dv = r`` ([E6]); parallel over rows."""
    N, C, H, W = x.shape
    for t in prange(N * H):
        n = t // H
        i = t - n * H
        for j in range(W):
            rr = r[n, i, j]
            r0, r1, c0, c1, m00, m01, m10, m11, fr, fc, okr, okc = _corners(
                i, j, rr, rr, cb, rb, one, border
            )
            gr = one - fr
            gc = one - fc
            for c in range(C):
                x00 = x[n, c, r0, c0] * m00
                x01 = x[n, c, r0, c1] * m01
                x10 = x[n, c, r1, c0] * m10
                x11 = x[n, c, r1, c1] * m11
                d_du = (gr * (x01 - x00) + fr * (x11 - x10)) * okc
                if correct:
                    out[n, c, i, j] = d_du + (gc * (x10 - x00) + fc * (x11 - x01)) * okr
                else:
                    out[n, c, i, j] = d_du
