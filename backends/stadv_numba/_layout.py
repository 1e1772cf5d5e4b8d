r"""Layout shared by the Numba warp kernels (:mod:`._warp`, :mod:`._warp_packed`): compile
options, pixel blocks, padded planes and the (image, block) tasks of the parallel loops.

* ``BLOCK`` consecutive pixels (row-major) form a block, the unit of work of the kernels'
  vectorized setup and channel loops;
* each image plane is held in a padded scratch plane ``(H + 2 RING) x (W + 2 RING)`` with a
  ring of ``RING`` zero pixels (:func:`_load_image` copies an image in, :func:`_store_image`
  copies an adjoint accumulator out, dropping the ring), so that every corner of the
  bilinear warp (Eq. (1)) falls inside the plane;
* :func:`_sizes` and :func:`_task` give every kernel the same sizes and task decomposition.

The helpers are inlined at the Numba IR level (``inline="always"``) into each kernel.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_OPTS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")
_INL = dict(_OPTS, inline="always")

BLOCK = 512
"""Pixels per block (the scratch arrays, a few KiB, stay in L1)."""
RING = 2
"""Zero pixels around each padded plane."""


@njit(**_INL)
def _sizes(N, H, W):
    """Sizes shared by the kernels: pixels per image ``HW``, pixel blocks per image ``nb``,
    (image, block) tasks ``T``, padded width ``Wp`` and padded plane size ``HWp``."""
    HW = H * W
    nb = (HW + BLOCK - 1) // BLOCK
    Wp = W + 2 * RING
    return HW, nb, N * nb, Wp, (H + 2 * RING) * Wp


@njit(**_INL)
def _task(t, nb, HW):
    """Task ``t`` of the (image, block) kernels: image ``n``, first pixel ``k0`` and length ``L`` of its block."""
    n = t // nb
    k0 = (t - n * nb) * BLOCK
    return n, k0, min(BLOCK, HW - k0)


@njit(**_INL)
def _load_image(xf, n, C, H, W, XP):
    """Copy the ``C`` planes of image ``n`` into the interior of the padded planes ``XP``."""
    Wp = W + 2 * RING
    for c in range(C):
        p = n * C + c
        for r in range(H):
            base = (r + RING) * Wp + RING
            for cc in range(W):
                XP[c, np.uint64(base + cc)] = xf[p, np.uint64(r * W + cc)]


@njit(**_INL)
def _store_image(A, n, C, H, W, gxf):
    """``gxf[n*C + c]`` = interior of the padded accumulator ``A[c]`` (the ring is dropped)."""
    Wp = W + 2 * RING
    for c in range(C):
        p = n * C + c
        for r in range(H):
            base = (r + RING) * Wp + RING
            for cc in range(W):
                gxf[p, np.uint64(r * W + cc)] = A[c, np.uint64(base + cc)]
