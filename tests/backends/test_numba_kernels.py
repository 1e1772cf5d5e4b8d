"""Numba-specific tests of the warp kernels, called directly (not through the backend).

The generic cross-checks (``tests/backends/test_crosscheck.py``) reach each Numba kernel
through the backend's dispatch, which depends on the batch size and on the
number of threads (the fused backward falls back to the two separate kernels
when there are fewer images than threads). Here the kernels of
:mod:`stadv_numba._warp_packed` (packed planes, 2-4 channels) are called with
fixed chunk counts on shapes that cover several pixel blocks, 1xW, Hx1 and
1x1 images, and are required to equal the planar kernels of
:mod:`stadv_numba._warp` bit for bit, as their docstrings promise, and the
NumPy reference within the dtype's tolerance.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_crosscheck import TOL

from stadv_ref.reference import warp as T

stadv_numba = pytest.importorskip("stadv_numba", reason="the numba extra is not installed")
from stadv_numba import _warp, _warp_packed  # noqa: E402

SHAPES = [(1, 1), (1, 9), (9, 1), (5, 7), (23, 31), (3, 300)]  # (3, 300): two pixel blocks of 512


def _case(N, C, H, W, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (N, C, H, W)).astype(dtype)
    g = rng.standard_normal((N, C, H, W)).astype(dtype)
    flow = (3 * rng.standard_normal((N, 2, H, W))).astype(dtype)
    flow[:, :, ::2] = np.round(flow[:, :, ::2])  # integer positions: right derivatives
    flow[0, :, 0, 0] = [1e6, -1e6]  # far outside the image
    return x, flow, g


def _run(mod, x, flow, g, border, nchunks):
    """Forward and fused backward of kernel module ``mod`` on canonical flat views."""
    N, C, H, W = x.shape
    dt = x.dtype
    cg, rg, one = stadv_numba._grid(H, W, dt)
    xf, flf, gf = x.reshape(N * C, H * W), flow.reshape(N, 2, H * W), g.reshape(N * C, H * W)
    out = np.empty_like(xf)
    mod.warp_kernel(xf, flf, cg, rg, H, W, one, border, nchunks, out)
    gx = np.empty_like(xf)
    gflow = np.empty_like(flf)
    mod.warp_vjp_both_kernel(xf, flf, gf, cg, rg, H, W, one, border, nchunks, gx, gflow)
    return out.reshape(x.shape), gx.reshape(x.shape), gflow.reshape(flow.shape)


@pytest.mark.parametrize("C", [2, 3, 4])
def test_packed_kernels_equal_planar_bit_for_bit(C):
    for (H, W), dtype, padding, (N, nchunks) in itertools.product(
        SHAPES, [np.float32, np.float64], ["zeros", "border"], [(1, 1), (5, 2), (7, 3)]
    ):
        x, flow, g = _case(N, C, H, W, dtype, seed=C * 1000 + H * W)
        border = padding == "border"
        packed = _run(_warp_packed, x, flow, g, border, nchunks)
        planar = _run(_warp, x, flow, g, border, nchunks)
        for name, a, b in zip(("warp", "vjp_x", "vjp_flow"), packed, planar):
            assert np.array_equal(a, b), f"{name}: packed != planar for C={C} {H}x{W} {dtype.__name__} {padding}"


@pytest.mark.parametrize("C", [2, 3, 4])
def test_packed_kernels_match_reference(C):
    for (H, W), dtype, padding in itertools.product(SHAPES, [np.float32, np.float64], ["zeros", "border"]):
        x, flow, g = _case(3, C, H, W, dtype, seed=C + H * W)
        out, gx, gflow = _run(_warp_packed, x, flow, g, padding == "border", 2)
        tol = TOL[np.dtype(dtype)]  # the cross-checks' tolerances
        np.testing.assert_allclose(out, T.warp_reference(x, flow, padding), rtol=tol, atol=tol)
        np.testing.assert_allclose(gx, T.warp_vjp_x_reference(flow, g, padding), rtol=tol,
                                   atol=tol * float(np.abs(g).sum(axis=(2, 3)).max()))
        np.testing.assert_allclose(gflow, T.warp_vjp_flow_reference(x, flow, g, padding), rtol=tol,
                                   atol=4 * C * tol * float(np.abs(g).max()))
