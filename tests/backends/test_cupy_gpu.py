"""Tests of the CuPy backend ``stadv_cupy`` on a CUDA GPU (issue 7); skipped with the reason elsewhere.

Device reporting, NumPy input accepted, every result a ``cupy.ndarray`` of the input's
dtype, no device synchronisation inside the kernels, grid-stride launches, float64
``atomicAdd`` scatter (dot-product test of the warp), the SDP kernels. The generic
Hypothesis cross-checks of every kernel against the reference live in
``tests/backends/test_crosscheck.py`` and run for ``cupy`` through the ``backend`` fixture
when a GPU is present; the tests that need no GPU are in ``test_cupy_emulated.py`` and
``test_cupy_import.py``.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from _checks import dottest
from _cupy_emulation import GPU_BE, TOL, _case, _unit_rows, needs_gpu

import stadv_ref
from stadv_ref.reference import operators, smoothness
from stadv_ref.reference import warp as transform


# ---------------------------------------------------------------------------
# On a GPU
# ---------------------------------------------------------------------------
def _cupy():
    import cupy

    return cupy


@needs_gpu
@pytest.mark.gpu
def test_gpu_device_reporting():
    cupy = _cupy()
    be = GPU_BE
    assert be.name == "cupy" and be.xp is cupy
    info = be.device_info()
    assert info["name"] and info["name"] in be.device_name
    assert info["total_memory_bytes"] > 0 and info["multiprocessors"] > 0
    assert info["id"] == cupy.cuda.Device().id
    props = cupy.cuda.runtime.getDeviceProperties(info["id"])
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    assert name == info["name"]


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_numpy_input_gives_cupy_output_of_same_dtype(dtype):
    cupy = _cupy()
    x, flow, g = _case(9, dtype, N=4, C=2, H=7, W=6)
    tol = TOL[dtype]

    def check(got, ref, **kw):
        assert isinstance(got, cupy.ndarray), type(got)
        assert got.dtype == dtype, got.dtype
        np.testing.assert_allclose(cupy.asnumpy(got), ref, **(kw or tol))

    for padding in ("zeros", "border"):
        check(stadv_ref.warp(x, flow, padding, backend="cupy"), transform.warp_reference(x, flow, padding))
        check(stadv_ref.warp_vjp_x(flow, g, padding, backend="cupy"), transform.warp_vjp_x_reference(flow, g, padding))
        check(
            stadv_ref.warp_vjp_flow(x, flow, g, padding, backend="cupy"),
            transform.warp_vjp_flow_reference(x, flow, g, padding),
        )
        r = flow[:, 0]
        for variant in ("correct", "paper"):
            check(
                stadv_ref.tied_jacobian_diag(x, r, padding, variant, backend="cupy"),
                transform.tied_jacobian_diag_reference(x, r, padding, variant),
            )
    loose = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    check(stadv_ref.flow_tv(flow, backend="cupy"), smoothness.flow_tv_reference(flow), **loose)
    check(stadv_ref.flow_tv_grad(flow, backend="cupy"), smoothness.flow_tv_grad_reference(flow), **loose)
    val, grad = stadv_ref.stadv_flow_loss(flow, 1e-8, "diagonal", "symmetric", backend="cupy")
    rv, rg = smoothness.stadv_flow_loss_reference(flow, 1e-8, "diagonal", "symmetric")
    check(val, rv, **loose)
    check(grad, rg, **loose)
    for k in (1, -1, 2, -2, 4, -4):
        ref = operators.smoothness_power_reference(flow.astype(np.float64), k / 2)
        got = stadv_ref.m_power(flow, k, backend="cupy")
        check(got, ref, rtol=1e-4 if dtype == np.float32 else 1e-9, atol=1e-4 * np.abs(ref).max())


@needs_gpu
@pytest.mark.gpu
def test_gpu_network_passes():
    cupy = _cupy()
    rng = np.random.default_rng(10)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((8, 16)), rng.standard_normal((3, 8)), image_shape=(4, 4))
    X = rng.uniform(0, 1, (5, 4, 4))
    out = net(X, backend="cupy")
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(out), net(X, backend="numpy"), rtol=1e-12)
    w = rng.standard_normal((5, 3))
    gi = net.input_gradient(X, w, backend="cupy")
    assert isinstance(gi, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(gi), net.input_gradient(X, w, backend="numpy"), rtol=1e-12)
    # CuPy input works too
    out2 = net(cupy.asarray(X), backend="cupy")
    np.testing.assert_allclose(cupy.asnumpy(out2), cupy.asnumpy(out), rtol=1e-15)


@needs_gpu
@pytest.mark.gpu
def test_gpu_kernels_do_not_synchronise():
    """Device arrays in, device arrays out, and no host round trip inside the kernels."""
    cupy = _cupy()
    import cupyx

    be = GPU_BE
    x, flow, g = (cupy.asarray(a) for a in _case(11, np.float32, N=3, C=2, H=8, W=9))
    rng = np.random.default_rng(11)
    W, b, V, c = (cupy.asarray(rng.standard_normal(s)) for s in ((5, 72), (5,), (2, 5), (2,)))
    X, wts = cupy.asarray(rng.standard_normal((3, 72))), cupy.asarray(rng.standard_normal((3, 2)))

    def run_all():
        outs = [
            be.warp(x, flow, "zeros"),
            be.warp_vjp_x(flow, g, "border"),
            be.warp_vjp_flow(x, flow, g, "zeros"),
            *be.warp_vjp(x, flow, g, "zeros"),
            be.tied_jacobian_diag(x, flow[:, 0], "zeros", "correct"),
            be.flow_tv(flow),
            be.flow_tv_grad(flow),
            *be.stadv_flow_loss(flow, 1e-8, "8", "symmetric"),
            be.smoothness_power(flow, -0.5),
            *be.net_forward(W, b, V, c, X),
            be.net_input_grad(W, b, V, X, wts),
        ]
        return outs

    run_all()  # warm-up: compile kernels, fill the constant cache
    cupy.cuda.Device().synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cupyx.allow_synchronize(False):
            outs = run_all()
    assert all(isinstance(o, cupy.ndarray) for o in outs)


@needs_gpu
@pytest.mark.gpu
def test_gpu_grid_stride_and_large_batch(monkeypatch):
    """A capped grid (grid-stride loop) and a batch larger than one launch give the reference result."""
    cupy = _cupy()
    import stadv_cupy

    rng = np.random.default_rng(12)
    x = rng.uniform(0, 1, (3000, 1, 28, 28))
    flow = rng.uniform(-2, 2, (3000, 2, 28, 28))
    g = rng.standard_normal(x.shape)
    ref = transform.warp_reference(x, flow, "zeros")
    ref_gx = transform.warp_vjp_x_reference(flow, g, "zeros")
    full = cupy.asnumpy(GPU_BE.warp(x, flow, "zeros"))
    np.testing.assert_allclose(full, ref, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(stadv_cupy, "max_grid", 3)
    np.testing.assert_allclose(cupy.asnumpy(GPU_BE.warp(x, flow, "zeros")), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cupy.asnumpy(GPU_BE.warp_vjp_x(flow, g, "zeros")), ref_gx, rtol=1e-11, atol=1e-11)


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_gpu_adjoint_and_fused_vjp(padding):
    """``<G x, y> = <x, G^T y>`` in float64 (atomicAdd scatter), and the fused VJP equals the separate ones."""
    cupy = _cupy()
    x, flow, g = (cupy.asarray(a) for a in _case(13, np.float64, N=6, C=3, H=16, W=12))
    be = GPU_BE
    dottest(lambda a: be.warp(cupy.asarray(a), flow, padding), lambda b: be.warp_vjp_x(flow, cupy.asarray(b), padding),
            x.shape, x.shape, np.random.default_rng(13), rtol=1e-10)
    gx, gflow = be.warp_vjp(x, flow, g, padding)
    np.testing.assert_allclose(cupy.asnumpy(gx), cupy.asnumpy(be.warp_vjp_x(flow, g, padding)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        cupy.asnumpy(gflow), cupy.asnumpy(be.warp_vjp_flow(x, flow, g, padding)), rtol=1e-12, atol=1e-12
    )


@needs_gpu
@pytest.mark.gpu
def test_gpu_sdp_kernels():
    """``sdp_mixing`` equals the reference (same n_iter) and ``lambda_max_upper`` is a valid, tight bound."""
    cupy = _cupy()
    from stadv_ref.upper_bounds.sdp import lambda_max_upper_reference, sdp_mixing_reference

    rng = np.random.default_rng(17)
    A = rng.standard_normal((20, 49))
    S0, T0 = _unit_rows(rng, 20, 11), _unit_rows(rng, 49, 11)
    for tol in (0.0, 1e-4):
        S, T, it = GPU_BE.sdp_mixing(cupy.asarray(A), cupy.asarray(S0), cupy.asarray(T0), 37, tol)
        Sr, Tr, itr = sdp_mixing_reference(A, S0, T0, 37, tol)
        assert isinstance(S, cupy.ndarray) and isinstance(T, cupy.ndarray)
        assert it == itr
        np.testing.assert_allclose(cupy.asnumpy(S), Sr, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(cupy.asnumpy(T), Tr, rtol=1e-9, atol=1e-9)
    P = np.block([[np.zeros((20, 20)), A], [A.T, np.zeros((49, 49))]]) - np.diag(rng.uniform(0, 3, 69))
    lam = float(np.linalg.eigvalsh(P)[-1])
    u = GPU_BE.lambda_max_upper(cupy.asarray(P))
    assert isinstance(u, float) and u >= lam
    assert u - lam <= 1e-8 * max(1.0, float(np.linalg.norm(P)))
    assert abs(u - lambda_max_upper_reference(P)) <= 1e-8 * max(1.0, float(np.linalg.norm(P)))


@needs_gpu
@pytest.mark.gpu
def test_gpu_solve_sdp_matches_numpy():
    rng = np.random.default_rng(19)
    A = rng.standard_normal((30, 64))
    ref = stadv_ref.solve_sdp(A, method="mixing", certificate="eigvalsh", max_iter=500, backend="numpy")
    got = stadv_ref.solve_sdp(A, method="mixing", certificate="eigvalsh", max_iter=500, backend="cupy")
    assert got.certified
    # both are certified upper bounds: each must dominate the other's feasible primal value
    assert got.value >= ref.primal * (1 - 1e-9) and ref.value >= got.primal * (1 - 1e-9)
    # the stopping iteration may differ by rounding; both stop within the gap tolerance
    assert abs(got.value - ref.value) <= 3e-5 * abs(ref.value)
