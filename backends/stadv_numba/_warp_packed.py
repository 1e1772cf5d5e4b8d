r"""Numba kernels for Eq. (1) on channel-interleaved ("packed") planes: images with 2-4 channels.

The planar kernels of :mod:`._warp` gather each channel of each corner
separately (AVX-512 gathers bound the forward) and scatter the adjoint one
scalar at a time. Here each image is first copied into a packed padded plane
``P (HWp, 4)`` -- row ``q`` holds the channels of padded pixel ``q``, unused
lanes zero, same zero ring and corner offsets as :mod:`._warp` -- so that each
corner is one 4-lane vector access for all channels (:mod:`._simd`).
Measured on 16x3x224x224 float32 images, 2 threads: forward 1.45 -> 1.0 ms,
fused backward 3.1 -> 2.1 ms; results equal the planar kernels bit for bit.

The pixel setup (:func:`._warp._setup`), the task layout (:mod:`._layout`) and the
prefetch of small images (:mod:`._prefetch`) are the planar kernels'; with zero padding
the backward recomputes its weights from ``fc, fr`` (mode ``FRAC``), with
border padding it reads them (``DERIV``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._layout import _INL, _OPTS, BLOCK, RING, _sizes, _task
from ._prefetch import AHEAD, SMALL, prefetch_image
from ._simd import LANES, sample4, vjp_both4
from ._warp import _NW, DERIV, FRAC, WEIGHTS, _pixel_weights, _setup


@njit(**_INL)
def _load_packed(xf, n, C, H, W, P, zero):
    """Copy the ``C`` planes of image ``n`` into the interior of the packed plane ``P``.

    Writes all four lanes of each row (unused ones zero), so LLVM vectorizes
    the interleave.
    """
    Wp = W + 2 * RING
    p = n * C
    for r in range(H):
        base = (r + RING) * Wp + RING
        for cc in range(W):
            k = np.uint64(r * W + cc)
            b = np.uint64(base + cc)
            P[b, 0] = xf[p, k]
            P[b, 1] = xf[p + 1, k]
            P[b, 2] = xf[p + 2, k] if C > 2 else zero
            P[b, 3] = xf[p + 3, k] if C > 3 else zero


@njit(**_INL)
def _store_packed(A, n, C, H, W, gxf, zero):
    """``gxf[n*C + c]`` = lane ``c`` of the interior of the packed accumulator ``A``;
    then zero all of ``A`` for the next image: the interior in the same pass, then the ring
    (never copied out, but zeroed so that it cannot accumulate to overflow or to
    subnormal values, which are slow, over a long batch)."""
    Wp = W + 2 * RING
    p = n * C
    for r in range(H):
        base = (r + RING) * Wp + RING
        for cc in range(W):
            k = np.uint64(r * W + cc)
            b = np.uint64(base + cc)
            gxf[p, k] = A[b, 0]
            gxf[p + 1, k] = A[b, 1]
            if C > 2:
                gxf[p + 2, k] = A[b, 2]
            if C > 3:
                gxf[p + 3, k] = A[b, 3]
            for c in range(LANES):
                A[b, c] = zero
    for r in range(H + 2 * RING):
        ring_row = r < RING or r >= H + RING
        for cc in range(Wp if ring_row else RING):
            for c in range(LANES):
                A[np.uint64(r * Wp + cc), c] = zero
                A[np.uint64(r * Wp + Wp - 1 - cc), c] = zero


@njit(parallel=True, **_OPTS)
def warp_kernel(xf, flf, cg, rg, H, W, one, border, nchunks, of):
    """``of = g(flow; x)`` (Eq. (1)) for ``C`` in 2..4; parallel over chunks of (image, block) tasks."""
    N = flf.shape[0]
    C = xf.shape[0] // N
    HW, nb, T, Wp, HWp = _sizes(N, H, W)
    wp = np.uint64(Wp)
    zero = one - one
    for ch in prange(nchunks):
        KB = np.empty(BLOCK, dtype=np.int32)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        P = np.zeros((HWp, LANES), dtype=cg.dtype)
        loaded = -1
        for t in range(ch * T // nchunks, (ch + 1) * T // nchunks):
            n, k0, L = _task(t, nb, HW)
            if n != loaded:
                _load_packed(xf, n, C, H, W, P, zero)
                loaded = n
                if n + AHEAD < N and HW * C <= SMALL:
                    prefetch_image(xf, flf, xf, n + AHEAD, C, HW, False)
            _setup(flf, n, k0, L, cg, rg, H, W, one, border, WEIGHTS, KB, Wt)
            p = n * C
            for j in range(L):
                k = np.uint64(k0 + j)
                s0, s1, s2, s3 = sample4(P, np.uint64(KB[j]), wp, Wt[0, j], Wt[1, j], Wt[2, j], Wt[3, j])
                of[p, k] = s0
                of[p + 1, k] = s1
                if C > 2:
                    of[p + 2, k] = s2
                if C > 3:
                    of[p + 3, k] = s3


@njit(**_INL)
def _vjp_block(P, A, gf, p, C, k0, L, KB, Wt, wp, gflf, n, one, frac):
    """Both VJPs of one pixel block (``Wt`` in mode ``FRAC`` if ``frac`` else ``DERIV``)."""
    zero = one - one
    for j in range(L):
        k = np.uint64(k0 + j)
        w0, w1, w2, w3, d4, d5, d6, d7 = _pixel_weights(Wt, j, one, frac)
        q = np.uint64(KB[j])
        g0 = gf[p, k]
        g1 = gf[p + 1, k]
        if C == 3:
            su, sv = vjp_both4(P, A, q, wp, 3, g0, g1, gf[p + 2, k], zero, w0, w1, w2, w3, d4, d5, d6, d7)
        elif C == 2:
            su, sv = vjp_both4(P, A, q, wp, 2, g0, g1, zero, zero, w0, w1, w2, w3, d4, d5, d6, d7)
        else:
            su, sv = vjp_both4(P, A, q, wp, 4, g0, g1, gf[p + 2, k], gf[p + 3, k], w0, w1, w2, w3, d4, d5, d6, d7)
        gflf[n, 0, k] = su
        gflf[n, 1, k] = sv


@njit(**_INL)
def _vjp_any(P, A, gf, p, C, k0, L, KB, Wt, wp, gflf, n, one, frac):
    """:func:`_vjp_block` with ``C`` (2, 3 or 4) passed on as a literal: one specialised
    pixel loop per channel count (about 5% faster on 3x224x224 than one loop branching
    on ``C`` per pixel; the copies in and out gain nothing from it)."""
    if C == 3:
        _vjp_block(P, A, gf, p, 3, k0, L, KB, Wt, wp, gflf, n, one, frac)
    elif C == 2:
        _vjp_block(P, A, gf, p, 2, k0, L, KB, Wt, wp, gflf, n, one, frac)
    else:
        _vjp_block(P, A, gf, p, 4, k0, L, KB, Wt, wp, gflf, n, one, frac)


@njit(parallel=True, **_OPTS)
def warp_vjp_both_kernel(xf, flf, gf, cg, rg, H, W, one, border, nchunks, gxf, gflf):
    """Both VJPs in one pass over the pixels for ``C`` in 2..4; parallel over chunks of
    images (each thread accumulates whole images: the scatter is race-free)."""
    N = flf.shape[0]
    C = xf.shape[0] // N
    HW, nb, _, Wp, HWp = _sizes(N, H, W)
    wp = np.uint64(Wp)
    zero = one - one
    for ch in prange(nchunks):
        KB = np.empty(BLOCK, dtype=np.int32)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        P = np.zeros((HWp, LANES), dtype=cg.dtype)
        A = np.zeros((HWp, LANES), dtype=cg.dtype)
        n_end = (ch + 1) * N // nchunks
        for n in range(ch * N // nchunks, n_end):
            _load_packed(xf, n, C, H, W, P, zero)
            if n + AHEAD < n_end and HW * C <= SMALL:
                prefetch_image(xf, flf, gf, n + AHEAD, C, HW, True)
            for b in range(nb):
                k0 = b * BLOCK
                L = min(BLOCK, HW - k0)
                if border:
                    _setup(flf, n, k0, L, cg, rg, H, W, one, border, DERIV, KB, Wt)
                    _vjp_any(P, A, gf, n * C, C, k0, L, KB, Wt, wp, gflf, n, one, False)
                else:
                    _setup(flf, n, k0, L, cg, rg, H, W, one, border, FRAC, KB, Wt)
                    _vjp_any(P, A, gf, n * C, C, k0, L, KB, Wt, wp, gflf, n, one, True)
            _store_packed(A, n, C, H, W, gxf, zero)
