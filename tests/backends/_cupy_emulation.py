"""Shared machinery of the CuPy backend tests (``test_cupy_*.py``); not a test module.

* the files of ``backends/stadv_cupy`` that need no GPU (the CUDA source, the
  array-module-generic ops, the backend factory, the SDP kernels), imported by path
  without running the package ``__init__`` (which needs a GPU);
* :data:`GPU_BE` (the real cupy backend, or ``None`` with the reason :data:`GPU_WHY`) and the
  ``needs_gpu`` / ``needs_no_gpu`` skip marks;
* test inputs (:func:`_case`: flows that exercise every branch of the sampling code);
* the CPU emulation of the CUDA kernels: the CUDA source compiled with ``g++`` against a
  small shim and run one emulated thread at a time (:func:`emulation_library`,
  :func:`_emu_call`, :func:`_emu_kernels`), and the real backend wrappers driven by it
  (:func:`emulated_backend`).

Test modules import what they use (``from _cupy_emulation import _case``; pytest puts
``tests/backends`` on ``sys.path``) and wrap :func:`emulation_library` and
:func:`emulated_backend` in their fixtures ``emu`` and ``emu_backend``.
"""
from __future__ import annotations

import ctypes
import importlib.util
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import stadv_ref
from stadv_ref.backend import BackendError

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "backends" / "stadv_cupy"


def _load_by_path(modname, path):
    """Import a file of ``stadv_cupy`` without running its ``__init__`` (which needs a GPU)."""
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cuda_src = _load_by_path("_stadv_cupy_cuda_src_for_tests", PKG / "_cuda_src.py")
ops = _load_by_path("_stadv_cupy_ops_for_tests", PKG / "_ops.py")
factory = _load_by_path("_stadv_cupy_factory_for_tests", PKG / "_factory.py")
sdp_ops = _load_by_path("_stadv_cupy_sdp_for_tests", PKG / "_sdp.py")


def _gpu_backend():
    try:
        return stadv_ref.get_backend("cupy"), ""
    except BackendError as exc:
        return None, str(exc)


GPU_BE, GPU_WHY = _gpu_backend()
needs_gpu = pytest.mark.skipif(GPU_BE is None, reason=f"no CuPy GPU backend here: {GPU_WHY}")
needs_no_gpu = pytest.mark.skipif(GPU_BE is not None, reason="a GPU is present")

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-11)}


# ---------------------------------------------------------------------------
# Test inputs: flows that exercise every branch of the sampling code
# ---------------------------------------------------------------------------
def _flows(rng, N, H, W, dtype):
    """Random flows plus integer flows, huge flows and samples exactly on the border."""
    f = rng.uniform(-2.5, 2.5, (N, 2, H, W))
    if N > 1:
        f[1] = np.round(f[1])  # integer coordinates: right derivatives, zero weights
    if N > 2:
        f[2, 0] = (W - 1) - np.arange(W)[None, :]  # column exactly W - 1
        f[2, 1] = -np.arange(H)[:, None]  # row exactly 0
        f[2, :, 0, 0] = (1e7, -1e9)  # far outside
    if N > 3:
        f[3] = 0.0
        f[3, :, 1:-1, 1:-1] = rng.uniform(-0.49, 0.49, (2, H - 2, W - 2))
    return f.astype(dtype)


def _case(seed, dtype, N=5, C=3, H=6, W=7):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (N, C, H, W)).astype(dtype)
    flow = _flows(rng, N, H, W, dtype)
    g = rng.standard_normal((N, C, H, W)).astype(dtype)
    return x, flow, g



# ---------------------------------------------------------------------------
# CPU emulation of the CUDA kernels (g++ and a shim; no GPU needed)
# ---------------------------------------------------------------------------
# argument kinds: c = const T*, p = T*, l = long long
SIGNATURES = {
    "stadv_warp_fwd": "ccp" + "l" * 5,
    "stadv_warp_vjp_x": "ccp" + "l" * 5,
    "stadv_warp_vjp_flow": "cccp" + "l" * 5,
    "stadv_warp_vjp_both": "cccpp" + "l" * 5,
    "stadv_tied_jacobian_diag": "ccp" + "l" * 6,
}

SHIM = r"""
#include <cmath>
#include <math.h>
struct StadvDim3 { unsigned int x, y, z; };
static StadvDim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
template <typename T> static inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
"""


INDEX = {"int": "int", "long long": "ll"}


def _emulation_source():
    lines = [SHIM, cuda_src.SOURCE]
    for kname, sig in SIGNATURES.items():
        for t in ("float", "double"):
            for itype, isuffix in INDEX.items():
                params, args = [], []
                for k, kind in enumerate(sig):
                    ctype = {"c": f"const {t}*", "p": f"{t}*", "l": "long long"}[kind]
                    params.append(f"{ctype} a{k}")
                    args.append(f"a{k}")
                lines.append(
                    f'extern "C" void emu_{kname}_{t}_{isuffix}({", ".join(params)}, int grid, int block) {{\n'
                    "  gridDim.x = grid; blockDim.x = block;\n"
                    "  for (int b = 0; b < grid; ++b) for (int t = 0; t < block; ++t) {\n"
                    f"    blockIdx.x = b; threadIdx.x = t; {kname}<{t}, {itype}>({', '.join(args)});\n"
                    "  }\n}\n"
                )
    return "\n".join(lines)


_EMU_LIB: dict = {}


def emulation_library(tmp_path_factory):
    """The CUDA source compiled for the CPU (``g++``), as a ctypes library (compiled once per session).

    Skips the calling test when there is no C++ compiler.
    """
    if "lib" in _EMU_LIB:
        return _EMU_LIB["lib"]
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to emulate the CUDA kernels on the CPU")
    d = tmp_path_factory.mktemp("cuda_emu")
    src, lib = d / "emu.cpp", d / "emu.so"
    src.write_text(_emulation_source())
    res = subprocess.run(
        [cxx, "-std=c++14", "-O1", "-shared", "-fPIC", "-ffp-contract=off", "-o", str(lib), str(src)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, f"the CUDA source does not compile as C++:\n{res.stderr[-4000:]}"
    _EMU_LIB["lib"] = ctypes.CDLL(str(lib))
    return _EMU_LIB["lib"]


def _emu_call(lib, kname, arrays, ints, grid=3, block=16, index="int"):
    """Run ``kname`` on the CPU; ``arrays`` are C-contiguous NumPy arrays (outputs written in place)."""
    t = "float" if arrays[0].dtype == np.float32 else "double"
    for a in arrays:
        assert a.flags.c_contiguous and a.dtype == arrays[0].dtype
    fn = getattr(lib, f"emu_{kname}_{t}_{INDEX[index]}")
    args = [a.ctypes.data_as(ctypes.c_void_p) for a in arrays]
    args += [ctypes.c_longlong(int(v)) for v in ints] + [ctypes.c_int(grid), ctypes.c_int(block)]
    fn.argtypes = [ctypes.c_void_p] * len(arrays) + [ctypes.c_longlong] * len(ints) + [ctypes.c_int] * 2
    fn.restype = None
    fn(*args)


def _emu_kernels(lib, x, flow, g, padding, grid=3, block=16, index="int"):
    """All warp kernels through the emulation, returned like the reference functions."""
    N, C, H, W = x.shape
    dims = (N, C, H, W, padding == "border")
    kw = dict(grid=grid, block=block, index=index)
    out = np.full_like(x, np.nan)  # poisoned: every element must be written
    _emu_call(lib, "stadv_warp_fwd", [x, flow, out], dims, **kw)
    gx = np.zeros_like(x)
    _emu_call(lib, "stadv_warp_vjp_x", [flow, g, gx], dims, **kw)
    gflow = np.full_like(flow, np.nan)
    _emu_call(lib, "stadv_warp_vjp_flow", [x, flow, g, gflow], dims, **kw)
    gx2, gflow2 = np.zeros_like(x), np.full_like(flow, np.nan)
    _emu_call(lib, "stadv_warp_vjp_both", [x, flow, g, gx2, gflow2], dims, **kw)
    r = np.ascontiguousarray(flow[:, 0])
    jac = {}
    for variant in ("correct", "paper"):
        jac[variant] = np.full_like(x, np.nan)
        _emu_call(lib, "stadv_tied_jacobian_diag", [x, r, jac[variant]], dims + (variant == "paper",), **kw)
    return out, gx, gflow, gx2, gflow2, jac


def _emu_launcher(lib, max_grid=4, block=32):
    """A ``launch`` for :func:`stadv_cupy._factory.make_backend` that runs the kernels on the CPU."""

    def launch(kname, dtype, n_threads, args, n_elements):
        if n_threads <= 0:
            return
        arrays = [a for a in args if isinstance(a, np.ndarray) and a.ndim > 0]
        ints = [a for a in args if not (isinstance(a, np.ndarray) and a.ndim > 0)]
        assert all(isinstance(v, np.int64) for v in ints), [type(v) for v in ints]
        assert args[: len(arrays)] == tuple(arrays), "arrays must come first"
        assert len(arrays) + len(ints) == len(SIGNATURES[kname])
        assert all(a.dtype == np.dtype(dtype) for a in arrays)
        grid = max(1, min(math.ceil(n_threads / block), max_grid))
        assert n_elements >= max(a.size for a in arrays)  # bounds every offset
        _emu_call(lib, kname, arrays, ints, grid, block, cuda_src.index_type(n_elements, grid * block))

    return launch


def emulated_backend(emu):
    """The real backend wrappers of ``stadv_cupy`` on NumPy arrays, kernels run by the CPU emulation ``emu``."""
    return factory.make_backend(
        np,
        _emu_launcher(emu),
        ops.DeviceCache(np),
        ops,
        sdp_ops,
        name="cupy-emulated",
        asarray=lambda a, dtype=None: np.asarray(a, dtype=dtype),
        to_numpy=np.asarray,
    )


def _unit_rows(rng, n, k, dtype=np.float64):
    X = rng.standard_normal((n, k))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(dtype)
