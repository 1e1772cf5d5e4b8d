"""Tests of the CuPy backend ``stadv_cupy`` that need no GPU (issue 7): its CUDA source and NumPy-generic code.

* the CUDA source of the warp kernels, compiled with ``g++`` against a small shim and
  *executed on the CPU*, one emulated thread at a time (:mod:`_cupy_emulation`), equals
  the NumPy reference kernels of Eq. (1) for every launch shape and index type; it
  compiles for ``sm_80`` with ``nvcc`` where one is installed;
* the whole backend, with its kernels run by the emulation, passes the generic
  cross-checks of ``tests/backends/test_crosscheck.py`` (loaded by path and rerun here);
* the array-module-generic code of :mod:`stadv_cupy._ops` and the SDP kernels of
  :mod:`stadv_cupy._sdp` run with ``xp = numpy`` against the reference.

Importing ``stadv_cupy`` itself (with and without a GPU, or against a fake ``cupy``) is
tested in ``test_cupy_import.py``, the GPU-only tests are in ``test_cupy_gpu.py``.
"""
from __future__ import annotations

import inspect
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _cupy_emulation import (
    SIGNATURES,
    TOL,
    _case,
    _emu_kernels,
    _load_by_path,
    _unit_rows,
    cuda_src,
    emulated_backend,
    emulation_library,
    ops,
    sdp_ops,
)

import stadv_ref
from stadv_ref.reference import network, operators, smoothness
from stadv_ref.reference import warp as transform


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """The CUDA source compiled for the CPU (:func:`_cupy_emulation.emulation_library`)."""
    return emulation_library(tmp_path_factory)


@pytest.fixture(scope="module")
def emu_backend(emu):
    """The whole cupy backend on NumPy arrays, its kernels run by the CPU emulation."""
    return emulated_backend(emu)


def _crosscheck_tests():
    path = Path(__file__).with_name("test_crosscheck.py")  # must exist: a rename would silently drop the suite
    mod = _load_by_path("_crosscheck_for_cupy_emulation", path)
    names = [
        n
        for n, f in sorted(vars(mod).items())
        if n.startswith("test_") and callable(f) and "backend" in inspect.signature(f).parameters
        and n != "test_backend_implements_interface"  # checks the registered name
    ]
    return mod, names


_CROSSCHECK, _CROSSCHECK_NAMES = _crosscheck_tests()


def test_emulated_backend_implements_interface(emu_backend):
    from stadv_ref.kernels import KERNELS

    assert [k for k in KERNELS + ("name", "xp") if not hasattr(emu_backend, k)] == []


@pytest.mark.skipif(_CROSSCHECK is None, reason="tests/backends/test_crosscheck.py not found")
@pytest.mark.parametrize("name", _CROSSCHECK_NAMES or ["none"])
def test_emulated_backend_passes_crosscheck(emu_backend, name):
    """The generic Hypothesis cross-checks, run on the whole cupy backend with emulated kernels."""
    getattr(_CROSSCHECK, name)(backend=emu_backend)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("index", ["int", "long long"])
def test_emulated_cuda_kernels_match_reference(emu, dtype, padding, seed, index):
    """Every CUDA kernel, executed on the CPU, equals the NumPy reference of Eq. (1)."""
    x, flow, g = _case(seed, dtype)
    out, gx, gflow, gx2, gflow2, jac = _emu_kernels(emu, x, flow, g, padding, index=index)
    tol = TOL[dtype]
    np.testing.assert_allclose(out, transform.warp_reference(x, flow, padding), **tol)
    ref_gx = transform.warp_vjp_x_reference(flow, g, padding)
    ref_gflow = transform.warp_vjp_flow_reference(x, flow, g, padding)
    np.testing.assert_allclose(gx, ref_gx, **tol)
    np.testing.assert_allclose(gflow, ref_gflow, **tol)
    np.testing.assert_allclose(gx2, ref_gx, **tol)
    np.testing.assert_allclose(gflow2, ref_gflow, **tol)
    r = np.ascontiguousarray(flow[:, 0])
    for variant in ("correct", "paper"):
        ref = transform.tied_jacobian_diag_reference(x, r, padding, variant)
        np.testing.assert_allclose(jac[variant], ref, **tol)


def test_emulated_kernels_any_launch_shape(emu):
    """Grid-stride loops: one thread, a ragged grid and an oversized grid give the same result."""
    x, flow, g = _case(3, np.float64, N=3, C=2, H=5, W=4)
    results = [_emu_kernels(emu, x, flow, g, "zeros", grid, block) for grid, block in ((1, 1), (7, 5), (40, 32))]
    for other in results[1:]:
        for a, b in zip(results[0][:5], other[:5]):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


def test_emulated_single_pixel_and_single_row(emu):
    """Degenerate grids (1x1, 1xW, Hx1) follow the reference too."""
    rng = np.random.default_rng(4)
    for H, W in ((1, 1), (1, 5), (4, 1)):
        x = rng.uniform(0, 1, (2, 1, H, W))
        flow = rng.uniform(-1.5, 1.5, (2, 2, H, W))
        g = rng.standard_normal(x.shape)
        for padding in ("zeros", "border"):
            out, gx, gflow, _, _, _ = _emu_kernels(emu, x, flow, g, padding)
            np.testing.assert_allclose(out, transform.warp_reference(x, flow, padding), atol=1e-12)
            np.testing.assert_allclose(gx, transform.warp_vjp_x_reference(flow, g, padding), atol=1e-12)
            np.testing.assert_allclose(gflow, transform.warp_vjp_flow_reference(x, flow, g, padding), atol=1e-12)


@pytest.mark.slow
def test_cuda_source_compiles_with_nvcc(tmp_path):
    """The kernels compile for sm_80 with nvcc (where one is installed), without register spills."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    inst = []
    for kname, sig in SIGNATURES.items():
        for t in ("float", "double"):
            for i in ("int", "long long"):
                params = [{"c": f"const {t}*", "p": f"{t}*", "l": "long long"}[k] for k in sig]
                inst.append(f"template __global__ void {kname}<{t}, {i}>({', '.join(params)});")
    src = tmp_path / "k.cu"
    src.write_text(cuda_src.SOURCE + "\n" + "\n".join(inst) + "\n")
    res = subprocess.run(
        [nvcc, "-arch=sm_80", "-cubin", "-Xptxas", "-v", "-o", str(tmp_path / "k.cubin"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    report = res.stdout + res.stderr
    for kname in SIGNATURES:
        assert kname in report, f"{kname} missing from the ptxas report"
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill stores", report)]
    assert len(spills) == 4 * len(SIGNATURES), report[-3000:]
    assert not any(spills), f"register spills: {report[-3000:]}"


def test_name_expressions_cover_every_kernel_dtype_and_index_type():
    assert set(cuda_src.KERNEL_NAMES) == set(SIGNATURES)
    for kname in SIGNATURES:
        for t in ("float", "double"):
            for i in ("int", "long long"):
                assert f"{kname}<{t}, {i}>" in cuda_src.NAME_EXPRESSIONS
        assert f"__global__ void {kname}(" in cuda_src.SOURCE
    assert cuda_src.name_expression("stadv_warp_fwd", np.dtype(np.float32), 10, 256) == "stadv_warp_fwd<float, int>"


def test_index_type_switches_before_int32_overflow():
    """32-bit indices only while every offset and grid-stride index stays below 2**31 - 1."""
    assert cuda_src.index_type(100_000 * 2 * 28 * 28, 32 * 132 * 256) == "int"
    assert cuda_src.index_type(2**31 - 1 - 1024, 1024) == "long long"
    assert cuda_src.index_type(2**31 - 2 - 1024, 1024) == "int"  # i + stride <= 2**31 - 3
    assert cuda_src.index_type(3 * 2**30, 256) == "long long"


# ---------------------------------------------------------------------------
# The array-module-generic code of stadv_cupy._ops, run with NumPy
# ---------------------------------------------------------------------------
@pytest.fixture()
def np_cache():
    return ops.DeviceCache(np)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ops_flow_losses_match_reference(np_cache, dtype):
    rng = np.random.default_rng(5)
    flow = rng.standard_normal((3, 2, 5, 6)).astype(dtype)
    tol = TOL[dtype]
    v = ops.flow_tv(np, flow)
    assert v.dtype == dtype
    np.testing.assert_allclose(v, smoothness.flow_tv_reference(flow), **tol)
    gr = ops.flow_tv_grad(np, np_cache, flow)
    assert gr.dtype == dtype and gr.shape == flow.shape
    np.testing.assert_allclose(gr, smoothness.flow_tv_grad_reference(flow), rtol=1e-5 if dtype == np.float32 else 1e-11, atol=1e-5 if dtype == np.float32 else 1e-11)
    for nb in ("4", "diagonal", "8"):
        for padding in ("zeros", "symmetric"):
            val, grad = ops.stadv_flow_loss(np, flow, 1e-8, nb, padding)
            rv, rg = smoothness.stadv_flow_loss_reference(flow, 1e-8, nb, padding)
            assert val.dtype == dtype and grad.dtype == dtype
            np.testing.assert_allclose(val, rv, **tol)
            np.testing.assert_allclose(grad, rg, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 5), (2, 2, 6, 3)])
@pytest.mark.parametrize("p", [1.0, 0.5, -0.5, -1.0])
def test_ops_smoothness_power_matches_reference(np_cache, shape, p):
    rng = np.random.default_rng(6)
    fields = rng.standard_normal(shape)
    ref = operators.smoothness_power_reference(fields, p)
    out = ops.smoothness_power(np, np_cache, fields, p)
    assert out.shape == fields.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    out32 = ops.smoothness_power(np, np_cache, fields.astype(np.float32), p)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_ops_device_cache_builds_once_per_key_and_dtype():
    cache = ops.DeviceCache(np)
    calls = []

    def build():
        calls.append(1)
        return np.arange(3.0)

    a = cache.get("k", np.float64, build)
    assert cache.get("k", np.float64, build) is a and len(calls) == 1
    b = cache.get("k", np.float32, build)
    assert b.dtype == np.float32 and len(calls) == 2
    cache.clear()
    cache.get("k", np.float64, build)
    assert len(calls) == 3


@pytest.mark.parametrize("K", [1, 4])
def test_ops_network_matches_reference(K):
    rng = np.random.default_rng(7)
    m, d, N = 6, 9, 5
    W, b = rng.standard_normal((m, d)), rng.standard_normal(m)
    V, c = rng.standard_normal((K, m)), rng.standard_normal(K)
    X, weights = rng.standard_normal((N, d)), rng.standard_normal((N, K))
    for got, ref in zip(ops.net_forward(np, W, b, V, c, X), network.net_forward_reference(W, b, V, c, X)):
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    np.testing.assert_allclose(
        ops.net_input_grad(np, W, b, V, X, weights),
        network.net_input_grad_reference(W, b, V, X, weights),
        rtol=1e-12,
    )


# ---------------------------------------------------------------------------
# Section 4.1 SDP kernels of stadv_cupy._sdp, run with NumPy
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 3, 16])
@pytest.mark.parametrize("tol", [0.0, 1e-3, 1e-6])
def test_sdp_mixing_same_iterates_and_stop_as_reference(chunk, tol):
    """Chunked stopping rule: the same ``n_iter`` and iterate as the reference, for any chunk size."""
    from stadv_ref.upper_bounds.sdp import sdp_mixing_reference

    rng = np.random.default_rng(14)
    A = rng.standard_normal((7, 11))
    A[2] = 0.0  # a zero row of A T: that row of S keeps its previous value
    S0, T0 = _unit_rows(rng, 7, 4), _unit_rows(rng, 11, 4)
    S0c, T0c = S0.copy(), T0.copy()
    for max_iter in (1, 2, 5, 40):
        S, T, it = sdp_ops.sdp_mixing(np, A, S0, T0, max_iter, tol, chunk=chunk)
        Sr, Tr, itr = sdp_mixing_reference(A, S0, T0, max_iter, tol)
        assert it == itr
        np.testing.assert_allclose(S, Sr, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(T, Tr, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(S0, S0c)  # inputs untouched
    np.testing.assert_array_equal(T0, T0c)
    S, T, it = sdp_ops.sdp_mixing(np, A, S0, T0, 0, tol)
    assert it == 0 and S is not S0 and np.array_equal(S, S0)


def test_sdp_mixing_float32_stays_float32():
    rng = np.random.default_rng(15)
    A = rng.standard_normal((5, 6)).astype(np.float32)
    S, T, _ = sdp_ops.sdp_mixing(np, A, _unit_rows(rng, 5, 3, np.float32), _unit_rows(rng, 6, 3, np.float32), 5, 0.0)
    assert S.dtype == np.float32 and T.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(T, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 30, 120])
def test_lambda_max_upper_is_a_tight_upper_bound(n):
    from stadv_ref.upper_bounds.sdp import lambda_max_upper_reference

    rng = np.random.default_rng(16 + n)
    B = rng.standard_normal((n, n))
    for S in (B + B.T, -(B @ B.T), np.zeros((n, n)), np.eye(n) * 3.0):
        lam = float(np.linalg.eigvalsh(S)[-1])
        u = sdp_ops.lambda_max_upper(np, S)
        assert isinstance(u, float)
        assert u >= lam
        assert u - lam <= 1e-8 * max(1.0, float(np.linalg.norm(S)))
        assert abs(u - lambda_max_upper_reference(S)) <= 1e-8 * max(1.0, float(np.linalg.norm(S)))


@pytest.mark.parametrize("certificate", ["auto", "eigvalsh"])
def test_solve_sdp_on_emulated_backend_matches_numpy(emu_backend, certificate):
    """The public solver driven by the cupy backend's SDP kernels gives the reference's certified value."""
    rng = np.random.default_rng(18)
    A = rng.standard_normal((6, 9))
    ref = stadv_ref.solve_sdp(A, method="mixing", certificate=certificate, max_iter=300, backend="numpy")
    got = stadv_ref.solve_sdp(A, method="mixing", certificate=certificate, max_iter=300, backend=emu_backend)
    assert got.certified and got.n_iter == ref.n_iter
    assert abs(got.value - ref.value) <= 1e-9 * abs(ref.value)
    assert got.value >= got.primal - 1e-9 * abs(got.primal)


def test_lambda_max_upper_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        sdp_ops.lambda_max_upper(np, np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        sdp_ops.lambda_max_upper(np, np.array([[np.nan]]))
