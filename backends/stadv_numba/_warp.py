r"""Numba kernels for Eq. (1): the bilinear warp, its VJPs and the tied Jacobian.

All kernels take C-contiguous canonical arrays (``x (N,C,H,W)``, ``flow
(N,2,H,W)``) of one float dtype ``T`` and compute in ``T``, like the NumPy
reference :mod:`stadv_ref.transform`:

* the sampling coordinate ``u_j + du`` is formed in ``T`` (the pixel grids
  ``cg``/``rg`` have dtype ``T``), so ``floor`` picks the same corner as the
  reference -- this matters for the right derivative at integer positions;
* the constant ``one`` is a ``T`` scalar so that no ``float64`` promotion
  creeps into float32 kernels.

Border padding clips the coordinate to ``[0, n-1]`` and zeroes its
derivative where a step to the right is clipped (``pos < 0`` or
``pos >= n-1``, the reference's right-derivative convention). Zero padding
clamps the coordinate to ``[-2, n+1]``, which changes nothing (every corner
beyond is invalid anyway) but keeps the integer conversion safe for huge flows.

Layout for speed: each image is cut into blocks of ``B`` consecutive pixels
(row-major, so a block spans rows and short rows still fill the vector units),
processed in loops free of branches so that LLVM vectorizes them (AVX2/AVX-512
gathers): :func:`_setup` writes the four corner offsets, the bilinear weights
and the derivative factors of the block into small scratch arrays, using the
pixel grids ``cg``/``rg`` (column and row of every flat pixel); the channel
loops then gather. Out-of-image corners get weight 0 and a clamped (valid) offset.
Only the scatter-add of the adjoint in ``x`` is a scalar loop (collisions).

Two Numba details keep the loops vectorizable: the helpers are inlined at the
Numba IR level (``inline="always"``), and no array *view* is created inside a
``prange`` body (only scalar indexing), so Numba's alias analysis marks the
parallel body's arrays ``noalias`` and LLVM needs no runtime alias checks.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_OPTS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")

# rows of the scratch arrays filled by _row_setup
#   K[0..3]  flat in-plane offsets of the corners 00, 01, 10, 11 (row, column offset)
#   Wt[0..3] bilinear weights times validity masks
#   Wt[4..7] validity masks m00, m01, m10, m11 (0/1)
#   Wt[8..11] derivative factors (1-fr) okc, fr okc, (1-fc) okr, fc okr
_NW = 12
BLOCK = 512
"""Pixels per block (scratch arrays of a few KiB stay in L1)."""


_INL = dict(_OPTS, inline="always")


@njit(**_INL)
def _setup(flf, n, k0, L, cg, rg, H, W, one, border, K, Wt):
    """Corners, weights and derivative factors of pixels ``k0 .. k0+L-1`` of flow ``flf[n]``.

    ``flf (N, 2, H*W)`` is a flat flow, or ``(N, 1, H*W)`` for a tied flow (``du = dv``).
    """
    kv = flf.shape[1] - 1  # component holding dv: 1, or 0 for a tied flow
    zero = one - one
    wm1 = cg[W - 1]
    hm1 = rg[(H - 1) * W]
    two = one + one
    lo = zero - two
    for j in range(L):
        k = np.uint64(k0 + j)  # unsigned: no negative-index wraparound code, contiguous vector loads
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
            pc = min(max(pc, lo), wm1 + two)
            pr = min(max(pr, lo), hm1 + two)
        fc0 = np.floor(pc)
        fr0 = np.floor(pr)
        fc = pc - fc0
        fr = pr - fr0
        c0 = np.int64(fc0)
        r0 = np.int64(fr0)
        c1 = c0 + 1
        r1 = r0 + 1
        mc0 = one if (c0 >= 0) & (c0 < W) else zero
        mc1 = one if (c1 >= 0) & (c1 < W) else zero
        mr0 = one if (r0 >= 0) & (r0 < H) else zero
        mr1 = one if (r1 >= 0) & (r1 < H) else zero
        c0 = min(max(c0, 0), W - 1)
        c1 = min(max(c1, 0), W - 1)
        r0 = min(max(r0, 0), H - 1) * W
        r1 = min(max(r1, 0), H - 1) * W
        K[0, j] = np.uint64(r0 + c0)  # unsigned: no wraparound code at the gathers
        K[1, j] = np.uint64(r0 + c1)
        K[2, j] = np.uint64(r1 + c0)
        K[3, j] = np.uint64(r1 + c1)
        gr = one - fr
        gc = one - fc
        m00 = mr0 * mc0
        m01 = mr0 * mc1
        m10 = mr1 * mc0
        m11 = mr1 * mc1
        Wt[0, j] = gr * gc * m00
        Wt[1, j] = gr * fc * m01
        Wt[2, j] = fr * gc * m10
        Wt[3, j] = fr * fc * m11
        Wt[4, j] = m00
        Wt[5, j] = m01
        Wt[6, j] = m10
        Wt[7, j] = m11
        Wt[8, j] = gr * okc
        Wt[9, j] = fr * okc
        Wt[10, j] = gc * okr
        Wt[11, j] = fc * okr


@njit(**_INL)
def _gather(xf, p, k0, L, K, Wt, of):
    """``of[p, k0+j] = sum_k Wt[k, j] xf[p, K[k, j]]`` (the warp of one block of plane ``p``)."""
    for j in range(L):
        of[p, np.uint64(k0 + j)] = (
            Wt[0, j] * xf[p, K[0, j]]
            + Wt[1, j] * xf[p, K[1, j]]
            + Wt[2, j] * xf[p, K[2, j]]
            + Wt[3, j] * xf[p, K[3, j]]
        )


@njit(**_INL)
def _dflow(xf, p, gf, q, k0, L, K, Wt, outf, n, first):
    """Flow VJP of one block of plane ``p`` with cotangent ``gf[q, k0:]``.

    ``outf[n, 0|1, k0+j]`` gets (``first``) or accumulates ``g * d x~/d du|dv``.
    """
    for j in range(L):
        x00 = xf[p, K[0, j]] * Wt[4, j]
        x01 = xf[p, K[1, j]] * Wt[5, j]
        x10 = xf[p, K[2, j]] * Wt[6, j]
        x11 = xf[p, K[3, j]] * Wt[7, j]
        k = np.uint64(k0 + j)
        g = gf[q, k]
        su = g * (Wt[8, j] * (x01 - x00) + Wt[9, j] * (x11 - x10))
        sv = g * (Wt[10, j] * (x10 - x00) + Wt[11, j] * (x11 - x01))
        if first:
            outf[n, 0, k] = su
            outf[n, 1, k] = sv
        else:
            outf[n, 0, k] += su
            outf[n, 1, k] += sv


@njit(**_INL)
def _scatter(gxf, p, gf, k0, L, K, Wt):
    """``gxf[p, K[k, j]] += Wt[k, j] gf[p, k0+j]`` (scalar: corners of nearby pixels collide)."""
    for j in range(L):
        g = gf[p, np.uint64(k0 + j)]
        gxf[p, K[0, j]] += g * Wt[0, j]
        gxf[p, K[1, j]] += g * Wt[1, j]
        gxf[p, K[2, j]] += g * Wt[2, j]
        gxf[p, K[3, j]] += g * Wt[3, j]


@njit(parallel=True, **_OPTS)
def warp_kernel(xf, flf, cg, rg, H, W, one, border, nchunks, of):
    """``of = g(flow; x)`` (Eq. (1)) on flat planes ``xf, of (N*C, H*W)``, ``flf (N, 2, H*W)``.

    Parallel over chunks of (image, block) tasks.
    """
    N = flf.shape[0]
    C = xf.shape[0] // N
    HW = H * W
    nb = (HW + BLOCK - 1) // BLOCK
    T = N * nb
    for ch in prange(nchunks):
        K = np.empty((4, BLOCK), dtype=np.uint64)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        for t in range(ch * T // nchunks, (ch + 1) * T // nchunks):
            n = t // nb
            k0 = (t - n * nb) * BLOCK
            L = min(BLOCK, HW - k0)
            _setup(flf, n, k0, L, cg, rg, H, W, one, border, K, Wt)
            for c in range(C):
                _gather(xf, n * C + c, k0, L, K, Wt, of)


@njit(parallel=True, **_OPTS)
def warp_vjp_flow_kernel(xf, flf, gf, cg, rg, H, W, one, border, nchunks, outf):
    """``outf[:, 0|1] = sum_c g * d warp / d (du|dv)`` (right derivatives); flat arrays as above."""
    N = flf.shape[0]
    C = xf.shape[0] // N
    HW = H * W
    nb = (HW + BLOCK - 1) // BLOCK
    T = N * nb
    for ch in prange(nchunks):
        K = np.empty((4, BLOCK), dtype=np.uint64)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        for t in range(ch * T // nchunks, (ch + 1) * T // nchunks):
            n = t // nb
            k0 = (t - n * nb) * BLOCK
            L = min(BLOCK, HW - k0)
            _setup(flf, n, k0, L, cg, rg, H, W, one, border, K, Wt)
            for c in range(C):
                _dflow(xf, n * C + c, gf, n * C + c, k0, L, K, Wt, outf, n, c == 0)


@njit(parallel=True, **_OPTS)
def warp_vjp_x_kernel(flf, gf, cg, rg, H, W, one, border, nchunks, gxf):
    """Adjoint warp ``G(flow)^T g`` (scatter-add) on flat planes; parallel over chunks of planes.

    Each (image, channel) plane is scattered by one thread, so there are no races.
    """
    N = flf.shape[0]
    NC = gf.shape[0]
    C = NC // N
    HW = H * W
    nb = (HW + BLOCK - 1) // BLOCK
    zero = one - one
    for ch in prange(nchunks):
        K = np.empty((4, BLOCK), dtype=np.uint64)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        for p in range(ch * NC // nchunks, (ch + 1) * NC // nchunks):
            n = p // C
            for k in range(HW):
                gxf[p, k] = zero
            for b in range(nb):
                k0 = b * BLOCK
                L = min(BLOCK, HW - k0)
                _setup(flf, n, k0, L, cg, rg, H, W, one, border, K, Wt)
                _scatter(gxf, p, gf, k0, L, K, Wt)


@njit(parallel=True, **_OPTS)
def warp_vjp_both_kernel(xf, flf, gf, cg, rg, H, W, one, border, nchunks, gxf, gflf):
    """Both VJPs in one pass over the pixels; parallel over chunks of images (race-free scatter)."""
    N = flf.shape[0]
    C = xf.shape[0] // N
    HW = H * W
    nb = (HW + BLOCK - 1) // BLOCK
    zero = one - one
    for ch in prange(nchunks):
        K = np.empty((4, BLOCK), dtype=np.uint64)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        for n in range(ch * N // nchunks, (ch + 1) * N // nchunks):
            for p in range(n * C, (n + 1) * C):
                for k in range(HW):
                    gxf[p, k] = zero
            for b in range(nb):
                k0 = b * BLOCK
                L = min(BLOCK, HW - k0)
                _setup(flf, n, k0, L, cg, rg, H, W, one, border, K, Wt)
                for c in range(C):
                    _dflow(xf, n * C + c, gf, n * C + c, k0, L, K, Wt, gflf, n, c == 0)
                    _scatter(gxf, n * C + c, gf, k0, L, K, Wt)


@njit(parallel=True, **_OPTS)
def tied_jacobian_diag_kernel(xf, rf, ones, cg, rg, H, W, one, border, correct, nchunks, of):
    """Diagonal of ``Dg`` for the tied flow ``du = dv = r`` ([E6]) on flat planes.

    ``rf (N, 1, H*W)``; ``ones (1, BLOCK)`` is the all-ones cotangent.
    """
    N = rf.shape[0]
    C = xf.shape[0] // N
    HW = H * W
    nb = (HW + BLOCK - 1) // BLOCK
    T = N * nb
    for ch in prange(nchunks):
        K = np.empty((4, BLOCK), dtype=np.uint64)
        Wt = np.empty((_NW, BLOCK), dtype=cg.dtype)
        S = np.empty((1, 2, BLOCK), dtype=cg.dtype)
        for t in range(ch * T // nchunks, (ch + 1) * T // nchunks):
            n = t // nb
            k0 = (t - n * nb) * BLOCK
            L = min(BLOCK, HW - k0)
            _setup(rf, n, k0, L, cg, rg, H, W, one, border, K, Wt)
            for c in range(C):
                p = n * C + c
                _dflow(xf, p, ones, 0, 0, L, K, Wt, S, 0, True)
                for j in range(L):
                    of[p, np.uint64(k0 + j)] = S[0, 0, j] + S[0, 1, j] if correct else S[0, 0, j]
