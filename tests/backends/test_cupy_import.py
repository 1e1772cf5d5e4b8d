"""Tests of loading the CuPy backend ``stadv_cupy`` (issue 7), with or without a GPU.

* without CuPy or a GPU, importing ``stadv_cupy`` raises a clear :class:`ImportError`,
  importing :mod:`stadv_ref` never imports CuPy, and an explicit ``STADV_BACKEND=cupy``
  run fails instead of skipping;
* ``stadv_cupy/__init__.py`` itself, imported against a fake ``cupy`` (NumPy plus the CPU
  emulation of the kernels of :mod:`_cupy_emulation`): import failures, the backend object,
  the device description, the launches through ``RawModule``.
"""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _cupy_emulation import REPO, TOL, _case, _emu_call, cuda_src, emulation_library, needs_no_gpu

import stadv_ref
from stadv_ref._install import install_hint
from stadv_ref.backend import BackendError
from stadv_ref.reference import warp as transform


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """The CUDA source compiled for the CPU (:func:`_cupy_emulation.emulation_library`)."""
    return emulation_library(tmp_path_factory)


# ---------------------------------------------------------------------------
# Loading without a GPU
# ---------------------------------------------------------------------------
def test_backend_fixture_smoke(backend):
    """Public warp on every backend equals the NumPy reference (and makes the fixture fail when requested)."""
    x, flow, _ = _case(8, np.float64, N=2, C=1, H=5, W=5)
    be = stadv_ref.get_backend(backend)
    out = be.to_numpy(stadv_ref.warp(x[:, 0], flow, backend=backend))
    np.testing.assert_allclose(out, transform.warp_reference(x, flow, "zeros")[:, 0], rtol=1e-11, atol=1e-11)


@needs_no_gpu
def test_import_without_gpu_raises_clear_importerror():
    sys.modules.pop("stadv_cupy", None)
    with pytest.raises(ImportError, match="cupy backend needs (CuPy|a CUDA GPU)"):
        importlib.import_module("stadv_cupy")
    with pytest.raises(BackendError, match=re.escape(install_hint("cupy"))):
        stadv_ref.get_backend("cupy")


def test_import_stadv_ref_does_not_import_cupy():
    code = "import sys, stadv_ref; stadv_ref.warp; sys.exit('cupy' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


@needs_no_gpu
@pytest.mark.slow
def test_explicit_cupy_request_without_gpu_fails():
    """``STADV_BACKEND=cupy`` without a GPU makes the run fail, not skip."""
    env = dict(os.environ, STADV_BACKEND="cupy")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         f"{Path(__file__).resolve()}::test_backend_fixture_smoke"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "cannot be loaded" in out or "not installed" in out, out[-3000:]
    assert "1 passed" not in out and " skipped" not in out.splitlines()[-1]


# ---------------------------------------------------------------------------
# stadv_cupy/__init__.py itself, imported against a fake ``cupy`` (NumPy + the
# CPU emulation of the kernels): import checks, device description, launches
# ---------------------------------------------------------------------------
class _FakeRuntime:
    cudaDevAttrMemoryClockRate = 36
    cudaDevAttrGlobalMemoryBusWidth = 37
    cudaDevAttrMultiProcessorCount = 16

    def __init__(self, count=1, error=None):
        self.count, self.error = count, error

    def getDeviceCount(self):
        if self.error:
            raise RuntimeError(self.error)
        return self.count

    def getDeviceProperties(self, dev):
        # like CUDA 13: no memoryClockRate / memoryBusWidth in the struct
        return {"name": b"Fake GPU 80GB", "totalGlobalMem": 80 * 2**30, "multiProcessorCount": 4}

    def deviceGetAttribute(self, attr, dev):
        return {36: 2_619_000, 37: 5120, 16: 4}[attr]

    def runtimeGetVersion(self):
        return 13000

    def driverGetVersion(self):
        return 13000


def _fake_cupy(emu_lib, runtime, cc="90"):
    import types

    launches = []

    class Device:
        def __init__(self, dev=None):
            self.id = 0 if dev is None else int(dev)
            self.compute_capability = cc

        def synchronize(self):
            pass

    class RawModule:
        def __init__(self, code=None, name_expressions=None, options=()):
            assert code == cuda_src.SOURCE
            assert tuple(name_expressions) == cuda_src.NAME_EXPRESSIONS
            self.names = set(name_expressions)

        def get_function(self, expr):
            assert expr in self.names, expr
            kname, targs = expr[:-1].split("<")
            t, index = targs.split(", ")

            def kernel(grid, block, args):
                assert isinstance(grid, tuple) and isinstance(block, tuple)
                arrays = [a for a in args if isinstance(a, np.ndarray) and a.ndim > 0]
                ints = args[len(arrays):]
                assert all(isinstance(v, np.int64) for v in ints)
                assert all(a.dtype == (np.float32 if t == "float" else np.float64) for a in arrays)
                launches.append((kname, grid[0], block[0]))
                _emu_call(emu_lib, kname, arrays, ints, grid[0], block[0], index)

            return kernel

    fake = types.ModuleType("cupy")
    fake.__getattr__ = lambda name: getattr(np, name)
    fake.__version__ = "0.0-fake"
    fake.ndarray = np.ndarray
    fake.asnumpy = lambda a: np.asarray(a)
    fake.RawModule = RawModule
    fake.cuda = types.SimpleNamespace(runtime=runtime, Device=Device)
    fake.launches = launches
    fakex = types.ModuleType("cupyx")

    import contextlib

    fakex.errstate = lambda **kw: contextlib.nullcontext()
    return fake, fakex


@pytest.fixture()
def import_fake(monkeypatch, emu):
    """Import a fresh ``stadv_cupy`` against a fake ``cupy``; returns ``(module or exception, fake)``."""

    def _import(runtime=None, cc="90"):
        fake, fakex = _fake_cupy(emu, runtime or _FakeRuntime(), cc)
        monkeypatch.setitem(sys.modules, "cupy", fake)
        monkeypatch.setitem(sys.modules, "cupyx", fakex)
        for k in [k for k in sys.modules if k == "stadv_cupy" or k.startswith("stadv_cupy.")]:
            monkeypatch.delitem(sys.modules, k)
        try:
            return importlib.import_module("stadv_cupy"), fake
        except ImportError as exc:
            return exc, fake

    yield _import
    for k in [k for k in sys.modules if k == "stadv_cupy" or k.startswith("stadv_cupy.")]:
        del sys.modules[k]


@pytest.mark.parametrize(
    "runtime, cc, match",
    [
        (_FakeRuntime(error="cudaErrorNoDevice: no CUDA-capable device is detected"), "90", "needs a CUDA GPU.*NoDevice"),
        (_FakeRuntime(count=0), "90", "getDeviceCount\\(\\) is 0"),
        (_FakeRuntime(), "52", "compute capability >= 6.0"),
    ],
)
def test_fake_cupy_import_failures_are_importerrors(import_fake, runtime, cc, match):
    mod, _ = import_fake(runtime, cc)
    assert isinstance(mod, ImportError), mod
    assert re.search(match, str(mod)), str(mod)


def test_fake_cupy_backend_object_and_device_description(import_fake):
    from stadv_ref.kernels import KERNELS

    mod, fake = import_fake()
    assert not isinstance(mod, Exception), mod
    be = mod.backend
    assert [k for k in KERNELS + ("name", "xp") if not hasattr(be, k)] == []
    assert be.name == "cupy" and be.xp is fake
    assert be.device_name.startswith("Fake GPU 80GB (CUDA device 0, compute capability 9.0, 80.0 GiB")
    info = be.device_info()
    assert info["name"] == "Fake GPU 80GB" and info["multiprocessors"] == 4
    # H100 SXM: 2.619 GHz HBM3 clock x 5120-bit bus, double data rate = 3.35 TB/s
    assert info["peak_bandwidth_bytes_per_s"] == pytest.approx(3.352e12, rel=1e-3)
    assert mod.max_grid == 32 * 4


def test_fake_cupy_kernels_through_rawmodule(import_fake):
    """The real launch path (RawModule, name expressions, grid-stride launch shapes) on the emulation."""
    mod, fake = import_fake()
    be = mod.backend
    x, flow, g = _case(20, np.float32, N=3, C=2, H=9, W=8)
    for padding in ("zeros", "border"):
        np.testing.assert_allclose(be.warp(x, flow, padding), transform.warp_reference(x, flow, padding), **TOL[np.float32])
        gx, gflow = be.warp_vjp_both(x.astype(np.float64), flow, g, padding)
        np.testing.assert_allclose(gx, transform.warp_vjp_x_reference(flow.astype(np.float64), g.astype(np.float64), padding), rtol=1e-11, atol=1e-11)
    assert {k for k, _, _ in fake.launches} == {"stadv_warp_fwd", "stadv_warp_vjp_both"}
    assert all(b == 256 and 1 <= gr <= mod.max_grid for _, gr, b in fake.launches)
    # capped grid: the grid-stride loop covers everything
    mod.max_grid = 1
    np.testing.assert_allclose(be.warp(x, flow, "zeros"), transform.warp_reference(x, flow, "zeros"), **TOL[np.float32])
    assert fake.launches[-1][1] == 1
    u = be.lambda_max_upper(np.diag([1.0, 2.0, -3.0]))
    assert 2.0 <= u <= 2.0 + 1e-12
