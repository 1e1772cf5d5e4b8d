r"""Numba kernels for Eq. (1): the bilinear warp, its VJPs and the tied Jacobian.

All kernels take C-contiguous canonical arrays of one float dtype ``T``, viewed
flat (``xf (N*C, H*W)`` images, ``flf (N, 2, H*W)`` flows), and compute in
``T`` like the NumPy reference :mod:`stadv_ref.transform`:

* the sampling coordinate ``u_j + du`` is formed in ``T`` (the pixel grids
  ``cg``/``rg`` have dtype ``T``), so ``floor`` picks the same corner as the
  reference -- this matters for the right derivative at integer positions;
* the constant ``one`` is a ``T`` scalar so that no ``float64`` promotion
  creeps into float32 kernels.

Padded planes (the layout, the blocks and the tasks live in :mod:`._layout`). Each
image plane is copied into (or, for the adjoint, accumulated in) a scratch plane
with a ring of two zero pixels on every side, ``(H+4) x (W+4)``. With zero padding the sampling coordinate is clamped to
``[-2, n]``, so all four corners of every pixel fall inside the padded plane:
out-of-image corners read the zero ring (exactly the reference's "pixels
outside are 0", including the right derivative just outside the image) and
the adjoint's contributions to them land in the ring and are dropped. No
masks and a single corner offset per pixel (the others are ``+1``, ``+Wp``,
``+Wp+1``). Border padding clips the coordinate to ``[0, n-1]`` and zeroes its
derivative where a step to the right is clipped (``pos < 0`` or
``pos >= n-1``, the reference's convention).

Vectorization. Each image is cut into blocks of ``BLOCK`` consecutive pixels
(row-major, so a block spans rows and short rows still fill the vector units);
:func:`_setup` writes the block's corner offsets, bilinear weights and
derivative factors into small scratch arrays in a branch-free loop that LLVM
vectorizes, then the channel loops gather (AVX2/AVX-512). Only the
scatter-add of the adjoint in ``x`` is a scalar loop (corners collide). Three
Numba details matter: the helpers are inlined at the Numba IR level
(``inline="always"``); no array *view* is created inside a ``prange`` body, so
Numba's alias analysis marks the parallel body's arrays ``noalias``; and flat
indices are unsigned, so no negative-index wraparound code blocks contiguous
vector loads and stores.

Fused backward (:func:`warp_vjp_both_kernel`, parallel over images so the
scatter is race-free). One-channel images take a pixel-major loop
(:func:`_dflow_scatter_px`): the corner offsets (unsigned, :func:`_corners`)
and the eight weights are formed in registers -- with zero padding from
``fc, fr`` alone (``FRAC``); other channel counts take one pass per channel.

Images with 2-4 channels (RGB) are served by :mod:`._warp_packed` (forward and
fused backward on channel-interleaved planes, 4-lane vector code); the
kernels here handle them too (the separate VJP kernels and the tied Jacobian
use them for every channel count).

Batches of small images: the kernels that walk images in order request the
cache lines of the image ``AHEAD`` positions later (:mod:`._prefetch`).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._layout import _INL, _OPTS, BLOCK, RING, _load_image, _sizes, _store_image, _task
from ._prefetch import AHEAD, SMALL, prefetch_image

# Rows of the weight scratch ``Wt`` filled by _setup (``mode``):
#   0..3  bilinear weights of the corners 00, 01, 10, 11 (row offset, column offset)
#   4..7  derivative factors (1-fr) okc, fr okc, (1-fc) okr, fc okr (mode DERIV)
# or, in mode FRAC (zero padding only), rows 0, 1 = the fractional parts fc, fr, from
# which the pixel loop recomputes all eight in registers (same roundings): in the scalar
# backward loops 2 loads + 6 flops measured faster than 8 loads.
_NW = 8
WEIGHTS, DERIV, FRAC = 0, 1, 2


@njit(**_INL)
def _setup(flf, n, k0, L, cg, rg, H, W, one, border, mode, KB, Wt):
    """Padded corner offsets and weights of pixels ``k0 .. k0+L-1`` of flow ``flf[n]``.

    ``flf (N, 2, H*W)`` is a flat flow, or ``(N, 1, H*W)`` for a tied flow
    (``du = dv``). ``KB[j]`` is the offset of corner 00 in the padded plane.
    ``mode`` (a constant at each call site): ``WEIGHTS``, ``DERIV`` (also the
    derivative factors) or ``FRAC`` (only ``fc, fr``; zero padding).
    ``KB`` is int32 so that LLVM can use gathers with 32-bit indices (16 lanes).
    """
    kv = flf.shape[1] - 1  # component holding dv: 1, or 0 for a tied flow
    zero = one - one
    two = one + one
    wm1 = cg[W - 1]
    hm1 = rg[(H - 1) * W]
    Wp = W + 2 * RING
    for j in range(L):
        k = np.uint64(k0 + j)
        pc = cg[k] + flf[n, 0, k]
        pr = rg[k] + flf[n, kv, k]
        if border:
            okc = one if (pc >= zero) & (pc < wm1) else zero
            okr = one if (pr >= zero) & (pr < hm1) else zero
            pc = min(max(pc, zero), wm1)
            pr = min(max(pr, zero), hm1)
        else:
            okc = one
            okr = one
            pc = min(max(pc, zero - two), wm1 + one)
            pr = min(max(pr, zero - two), hm1 + one)
        fc0 = np.floor(pc)
        fr0 = np.floor(pr)
        fc = pc - fc0
        fr = pr - fr0
        KB[j] = np.int32((np.int64(fr0) + RING) * Wp + np.int64(fc0) + RING)
        if mode == FRAC:
            Wt[0, j] = fc
            Wt[1, j] = fr
        else:
            gr = one - fr
            gc = one - fc
            Wt[0, j] = gr * gc
            Wt[1, j] = gr * fc
            Wt[2, j] = fr * gc
            Wt[3, j] = fr * fc
            if mode == DERIV:
                Wt[4, j] = gr * okc
                Wt[5, j] = fr * okc
                Wt[6, j] = gc * okr
                Wt[7, j] = fc * okr


@njit(**_INL)
def _gather(XP, c, k0, L, KB, Wt, Wp, of, p):
    """``of[p, k0+j] = sum_k Wt[k, j] x_k`` from padded plane ``XP[c]`` (the warp of one block)."""
    for j in range(L):
        q = np.int64(KB[j])
        of[p, np.uint64(k0 + j)] = (
            Wt[0, j] * XP[c, np.uint64(q)]
            + Wt[1, j] * XP[c, np.uint64(q + 1)]
            + Wt[2, j] * XP[c, np.uint64(q + Wp)]
            + Wt[3, j] * XP[c, np.uint64(q + Wp + 1)]
        )


@njit(**_INL)
def _dflow(XP, c, gf, q0, k0, L, KB, Wt, Wp, outf, n, first):
    """Flow VJP of one block from padded plane ``XP[c]`` with cotangent ``gf[q0, k0:]``.

    ``outf[n, 0|1, k0+j]`` gets (``first``) or accumulates ``g * d x~/d du|dv``.
    """
    for j in range(L):
        q = np.int64(KB[j])
        x00 = XP[c, np.uint64(q)]
        x01 = XP[c, np.uint64(q + 1)]
        x10 = XP[c, np.uint64(q + Wp)]
        x11 = XP[c, np.uint64(q + Wp + 1)]
        k = np.uint64(k0 + j)
        g = gf[q0, k]
        su = g * (Wt[4, j] * (x01 - x00) + Wt[5, j] * (x11 - x10))
        sv = g * (Wt[6, j] * (x10 - x00) + Wt[7, j] * (x11 - x01))
        if first:
            outf[n, 0, k] = su
            outf[n, 1, k] = sv
        else:
            outf[n, 0, k] += su
            outf[n, 1, k] += sv


@njit(**_INL)
def _scatter(A, c, gf, p, k0, L, KB, Wt, Wp):
    """``A[c, corner_k(j)] += Wt[k, j] gf[p, k0+j]`` (scalar: corners of nearby pixels collide)."""
    for j in range(L):
        g = gf[p, np.uint64(k0 + j)]
        q = np.int64(KB[j])
        A[c, np.uint64(q)] += g * Wt[0, j]
        A[c, np.uint64(q + 1)] += g * Wt[1, j]
        A[c, np.uint64(q + Wp)] += g * Wt[2, j]
        A[c, np.uint64(q + Wp + 1)] += g * Wt[3, j]


@njit(**_INL)
def _both_one(XP, A, c, gf, p, k, q0, q1, q2, q3, w0, w1, w2, w3, d4, d5, d6, d7):
    """One channel of :func:`_dflow_scatter_px` at one pixel: scatter ``g w`` into ``A[c]``, return ``(su, sv)``.

    ``q0..q3`` are the (unsigned) offsets of the corners 00, 01, 10, 11.
    """
    x00 = XP[c, q0]
    x01 = XP[c, q1]
    x10 = XP[c, q2]
    x11 = XP[c, q3]
    g = gf[p, k]
    A[c, q0] += g * w0
    A[c, q1] += g * w1
    A[c, q2] += g * w2
    A[c, q3] += g * w3
    return g * (d4 * (x01 - x00) + d5 * (x11 - x10)), g * (d6 * (x10 - x00) + d7 * (x11 - x01))


@njit(**_INL)
def _corners(KB, j, Wp):
    """Unsigned offsets of the corners 00, 01, 10, 11 of pixel ``j`` (no negative-index code)."""
    q0 = np.uint64(KB[j])
    one = np.uint64(1)
    q2 = q0 + np.uint64(Wp)
    return q0, q0 + one, q2, q2 + one


@njit(**_INL)
def _pixel_weights(Wt, j, one, frac):
    """The eight weights of pixel ``j`` (``Wt`` filled in mode ``DERIV``, or ``FRAC`` if ``frac``)."""
    if frac:
        fc = Wt[0, j]
        fr = Wt[1, j]
        gr = one - fr
        gc = one - fc
        return gr * gc, gr * fc, fr * gc, fr * fc, gr, fr, gc, fc
    return Wt[0, j], Wt[1, j], Wt[2, j], Wt[3, j], Wt[4, j], Wt[5, j], Wt[6, j], Wt[7, j]


@njit(**_INL)
def _dflow_scatter_px(XP, A, gf, p, k0, L, KB, Wt, Wp, outf, n, one, frac):
    """:func:`_dflow` and :func:`_scatter` fused in one loop for a one-channel image
    (sharing the corner loads), with the corner offsets
    (:func:`_corners`) and the eight weights (:func:`_pixel_weights`) formed per
    pixel in registers (``frac``, a constant at each call site: from ``fc, fr``)."""
    for j in range(L):
        q0, q1, q2, q3 = _corners(KB, j, Wp)
        k = np.uint64(k0 + j)
        w0, w1, w2, w3, d4, d5, d6, d7 = _pixel_weights(Wt, j, one, frac)
        su, sv = _both_one(XP, A, 0, gf, p, k, q0, q1, q2, q3, w0, w1, w2, w3, d4, d5, d6, d7)
        outf[n, 0, k] = su
        outf[n, 1, k] = sv


@njit(**_INL)
def _dflow_scatter_block(XP, A, gf, n, C, k0, L, KB, Wt, Wp, outf, one, frac):
    """Both VJPs of one pixel block of image ``n``: :func:`_dflow_scatter_px` for one
    channel, else a :func:`_dflow` and a :func:`_scatter` pass per channel (``Wt`` in mode ``DERIV``;
    ``frac``, a constant at each call site, only with one channel)."""
    if C == 1:
        _dflow_scatter_px(XP, A, gf, n, k0, L, KB, Wt, Wp, outf, n, one, frac)
    else:
        for c in range(C):
            _dflow(XP, c, gf, n * C + c, k0, L, KB, Wt, Wp, outf, n, c == 0)
            _scatter(A, c, gf, n * C + c, k0, L, KB, Wt, Wp)


@njit(parallel=True, **_OPTS)
def warp_kernel(xf, flf, cg, rg, H, W, one, border, nchunks, of):
    """``of = g(flow; x)`` (Eq. (1)); parallel over chunks of (image, block) tasks."""
    N = flf.shape[0]
    C = xf.shape[0] // N
    HW, nb, T, Wp, HWp = _sizes(N, H, W)
    for ch in prange(nchunks):
        KB = np.empty(BLOCK, dtype=np.int32)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        XP = np.zeros((C, HWp), dtype=cg.dtype)
        loaded = -1
        for t in range(ch * T // nchunks, (ch + 1) * T // nchunks):
            n, k0, L = _task(t, nb, HW)
            if n != loaded:
                _load_image(xf, n, C, H, W, XP)
                loaded = n
                if n + AHEAD < N and HW * C <= SMALL:
                    prefetch_image(xf, flf, xf, n + AHEAD, C, HW, False)
            _setup(flf, n, k0, L, cg, rg, H, W, one, border, WEIGHTS, KB, Wt)
            for c in range(C):
                _gather(XP, c, k0, L, KB, Wt, Wp, of, n * C + c)


@njit(parallel=True, **_OPTS)
def warp_vjp_flow_kernel(xf, flf, gf, cg, rg, H, W, one, border, nchunks, outf):
    """``outf[:, 0|1] = sum_c g * d warp / d (du|dv)`` (right derivatives); parallel over task chunks."""
    N = flf.shape[0]
    C = xf.shape[0] // N
    HW, nb, T, Wp, HWp = _sizes(N, H, W)
    for ch in prange(nchunks):
        KB = np.empty(BLOCK, dtype=np.int32)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        XP = np.zeros((C, HWp), dtype=cg.dtype)
        loaded = -1
        for t in range(ch * T // nchunks, (ch + 1) * T // nchunks):
            n, k0, L = _task(t, nb, HW)
            if n != loaded:
                _load_image(xf, n, C, H, W, XP)
                loaded = n
            _setup(flf, n, k0, L, cg, rg, H, W, one, border, DERIV, KB, Wt)
            for c in range(C):
                _dflow(XP, c, gf, n * C + c, k0, L, KB, Wt, Wp, outf, n, c == 0)


@njit(parallel=True, **_OPTS)
def warp_vjp_x_kernel(flf, gf, cg, rg, H, W, one, border, nchunks, gxf):
    """Adjoint warp ``G(flow)^T g`` (scatter-add); parallel over chunks of (image, channel) planes.

    Each plane is accumulated by one thread in a padded scratch plane, so there are no races.
    """
    N = flf.shape[0]
    NC = gf.shape[0]
    C = NC // N
    HW, nb, _, Wp, HWp = _sizes(N, H, W)
    zero = one - one
    for ch in prange(nchunks):
        KB = np.empty(BLOCK, dtype=np.int32)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        A = np.empty((1, HWp), dtype=cg.dtype)
        for p in range(ch * NC // nchunks, (ch + 1) * NC // nchunks):
            n = p // C
            for k in range(HWp):
                A[0, k] = zero
            for b in range(nb):
                k0 = b * BLOCK
                L = min(BLOCK, HW - k0)
                _setup(flf, n, k0, L, cg, rg, H, W, one, border, WEIGHTS, KB, Wt)
                _scatter(A, 0, gf, p, k0, L, KB, Wt, Wp)
            _store_image(A, p, 1, H, W, gxf)


@njit(parallel=True, **_OPTS)
def warp_vjp_both_kernel(xf, flf, gf, cg, rg, H, W, one, border, nchunks, gxf, gflf):
    """Both VJPs in one pass over the pixels; parallel over chunks of images (race-free scatter).

    One-channel images take the pixel-major path :func:`_dflow_scatter_px` (with zero
    padding, weights recomputed from ``fc, fr``). Images with 2-4 channels are served by
    :mod:`._warp_packed` instead.
    """
    N = flf.shape[0]
    C = xf.shape[0] // N
    HW, nb, _, Wp, HWp = _sizes(N, H, W)
    zero = one - one
    for ch in prange(nchunks):
        KB = np.empty(BLOCK, dtype=np.int32)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        XP = np.zeros((C, HWp), dtype=cg.dtype)
        A = np.empty((C, HWp), dtype=cg.dtype)
        n_end = (ch + 1) * N // nchunks
        for n in range(ch * N // nchunks, n_end):
            _load_image(xf, n, C, H, W, XP)
            if n + AHEAD < n_end and HW * C <= SMALL:
                prefetch_image(xf, flf, gf, n + AHEAD, C, HW, True)
            for c in range(C):
                for k in range(HWp):
                    A[c, k] = zero
            for b in range(nb):
                k0 = b * BLOCK
                L = min(BLOCK, HW - k0)
                if C == 1 and not border:
                    _setup(flf, n, k0, L, cg, rg, H, W, one, border, FRAC, KB, Wt)
                    _dflow_scatter_block(XP, A, gf, n, C, k0, L, KB, Wt, Wp, gflf, one, True)
                else:
                    _setup(flf, n, k0, L, cg, rg, H, W, one, border, DERIV, KB, Wt)
                    _dflow_scatter_block(XP, A, gf, n, C, k0, L, KB, Wt, Wp, gflf, one, False)
            _store_image(A, n, C, H, W, gxf)


@njit(parallel=True, **_OPTS)
def tied_jacobian_diag_kernel(xf, rf, ones, cg, rg, H, W, one, border, correct, nchunks, of):
    """Diagonal of ``Dg`` for the tied flow ``du = dv = r`` ([E6]); parallel over task chunks.

    ``rf (N, 1, H*W)``; ``ones (1, BLOCK)`` is the all-ones cotangent.
    """
    N = rf.shape[0]
    C = xf.shape[0] // N
    HW, nb, T, Wp, HWp = _sizes(N, H, W)
    for ch in prange(nchunks):
        KB = np.empty(BLOCK, dtype=np.int32)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        XP = np.zeros((C, HWp), dtype=cg.dtype)
        S = np.empty((1, 2, BLOCK), dtype=cg.dtype)
        loaded = -1
        for t in range(ch * T // nchunks, (ch + 1) * T // nchunks):
            n, k0, L = _task(t, nb, HW)
            if n != loaded:
                _load_image(xf, n, C, H, W, XP)
                loaded = n
            _setup(rf, n, k0, L, cg, rg, H, W, one, border, DERIV, KB, Wt)
            for c in range(C):
                p = n * C + c
                _dflow(XP, c, ones, 0, 0, L, KB, Wt, Wp, S, 0, True)
                for j in range(L):
                    of[p, np.uint64(k0 + j)] = S[0, 0, j] + S[0, 1, j] if correct else S[0, 0, j]
