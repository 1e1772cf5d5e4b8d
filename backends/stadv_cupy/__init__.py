r"""stadv_ref backend ``"cupy"``: the kernel contract of :mod:`stadv_ref.interface` on a CUDA GPU.

Select it with ``STADV_BACKEND=cupy``, ``stadv_ref.use_backend("cupy")`` or
``backend="cupy"``. Install with ``pip install "stadv-ref[cupy]"`` (an NVIDIA
GPU with a CUDA 12 driver; on CUDA 13 install ``cupy-cuda13x`` instead).

* Eq. (1): :func:`warp`, :func:`warp_vjp_x` (``atomicAdd`` scatter),
  :func:`warp_vjp_flow`, :func:`tied_jacobian_diag` and the fused
  :func:`warp_vjp` are ``cupy.RawModule`` CUDA kernels
  (:mod:`stadv_cupy._cuda_src`), float32 and float64 by C++ templates.
* Eq. (2) flow losses, Eq. (3) powers of ``L`` (eigenvectors of
  :func:`stadv_ref.operators.smoothness_operator` moved to the device once and
  cached) and the network passes are CuPy array code (:mod:`stadv_cupy._ops`).
* Section 4.1: :func:`sdp_mixing` and :func:`lambda_max_upper`.

Inputs may be NumPy or CuPy arrays (NumPy input is copied to the current
device); every result is a ``cupy.ndarray`` on that device: nothing is copied
back to the host and nothing synchronises inside the kernels.
:data:`device_name` and :func:`device_info` say which GPU is used.

Importing this package raises :class:`ImportError` with the reason when CuPy
is not installed or no usable CUDA device is present, so the dispatcher
reports the install hint and the tests skip (or fail, when the backend was
requested explicitly with ``STADV_BACKEND=cupy``).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

_INSTALL = 'pip install "stadv-ref[cupy]" (cupy-cuda12x; cupy-cuda13x for a CUDA 13 driver)'

try:
    import cupy
except Exception as exc:  # ImportError, or a broken CUDA library set-up
    raise ImportError(
        f"the cupy backend needs CuPy, which cannot be imported ({type(exc).__name__}: {exc}); "
        f"install it with {_INSTALL}"
    ) from exc

try:
    _n_devices = int(cupy.cuda.runtime.getDeviceCount())
except Exception as exc:  # CUDARuntimeError: no driver, insufficient driver, no device
    raise ImportError(
        f"the cupy backend needs a CUDA GPU, but CUDA reports none usable "
        f"({type(exc).__name__}: {exc})"
    ) from exc
if _n_devices < 1:
    raise ImportError("the cupy backend needs a CUDA GPU, but cupy.cuda.runtime.getDeviceCount() is 0")

try:
    _cc = cupy.cuda.Device().compute_capability  # e.g. "90"
    cupy.zeros(1, dtype=np.float64).sum()  # creates the context: fails early on a broken set-up
except Exception as exc:
    raise ImportError(
        f"the cupy backend cannot use the CUDA device ({type(exc).__name__}: {exc})"
    ) from exc
if int(_cc) < 60:
    raise ImportError(
        f"the cupy backend needs compute capability >= 6.0 (float64 atomicAdd); the GPU has {_cc}"
    )

from . import _ops  # noqa: E402
from ._cuda_src import NAME_EXPRESSIONS, SOURCE  # noqa: E402

__all__ = [
    "backend",
    "device_name",
    "device_info",
    "warp",
    "warp_vjp_x",
    "warp_vjp_flow",
    "warp_vjp",
    "tied_jacobian_diag",
]

name = "cupy"
xp = cupy


# ---------------------------------------------------------------------------
# Device description
# ---------------------------------------------------------------------------
def _decode(v):
    return v.decode(errors="replace") if isinstance(v, (bytes, bytearray)) else str(v)


def device_info(device=None):
    """Describe the GPU the backend computes on.

    Parameters
    ----------
    device : int, optional
        CUDA device id; default the current device (``cupy.cuda.Device()``).

    Returns
    -------
    dict
        ``id``, ``name``, ``compute_capability``, ``total_memory_bytes``,
        ``multiprocessors``, ``memory_bus_width_bits``, ``memory_clock_khz``,
        ``peak_bandwidth_bytes_per_s`` (``2 * clock * bus width / 8``; ``None``
        when the driver does not report the memory clock),
        ``cuda_runtime_version``, ``cuda_driver_version``, ``cupy_version``.
    """
    dev = cupy.cuda.Device(device)
    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(dev.id)

    def attr(key, enum_name):
        if key in props and props[key]:
            return int(props[key])
        enum = getattr(rt, enum_name, None)
        if enum is None:
            return None
        try:
            return int(rt.deviceGetAttribute(enum, dev.id))
        except Exception:
            return None

    clock = attr("memoryClockRate", "cudaDevAttrMemoryClockRate")  # kHz
    bus = attr("memoryBusWidth", "cudaDevAttrGlobalMemoryBusWidth")  # bits
    peak = 2.0 * clock * 1e3 * bus / 8 if clock and bus else None
    return {
        "id": dev.id,
        "name": _decode(props.get("name", "unknown")),
        "compute_capability": dev.compute_capability,
        "total_memory_bytes": int(props.get("totalGlobalMem", 0)),
        "multiprocessors": attr("multiProcessorCount", "cudaDevAttrMultiProcessorCount"),
        "memory_bus_width_bits": bus,
        "memory_clock_khz": clock,
        "peak_bandwidth_bytes_per_s": peak,
        "cuda_runtime_version": rt.runtimeGetVersion(),
        "cuda_driver_version": rt.driverGetVersion(),
        "cupy_version": cupy.__version__,
    }


def _describe(info):
    cc = info["compute_capability"]
    return (
        f"{info['name']} (CUDA device {info['id']}, compute capability {cc[:-1]}.{cc[-1]}, "
        f"{info['total_memory_bytes'] / 2**30:.1f} GiB, CuPy {info['cupy_version']})"
    )


_INFO0 = device_info()
device_name = _describe(_INFO0)
"""Which GPU the backend runs on (the current device at import), in words."""

_SM_COUNT = _INFO0["multiprocessors"] or 80
_BLOCK = 256
max_grid = 32 * _SM_COUNT
"""Upper bound on the blocks of one launch (kernels use grid-stride loops)."""


# ---------------------------------------------------------------------------
# Array conversion
# ---------------------------------------------------------------------------
def asarray(a, dtype=None):
    """``a`` (NumPy, CuPy, list, scalar) as a ``cupy.ndarray`` on the current device."""
    return cupy.asarray(a, dtype=dtype)


def to_numpy(a):
    """A NumPy copy of ``a`` (CuPy or NumPy); the only call that copies to the host."""
    return cupy.asnumpy(a)


def _float(a):
    """C-contiguous float32/float64 device array (float32 stays, others -> float64)."""
    a = cupy.asarray(a)
    dt = np.float32 if a.dtype == np.float32 else np.float64
    return cupy.ascontiguousarray(a, dtype=dt)


def _current_device_id():
    return cupy.cuda.Device().id


_cache = _ops.DeviceCache(cupy, _current_device_id)
clear_cache = _cache.clear


# ---------------------------------------------------------------------------
# Eq. (1): CUDA kernels
# ---------------------------------------------------------------------------
_modules = {}


def _kernel(kname, dtype):
    """The compiled template instance ``kname<float|double>`` on the current device."""
    dev = _current_device_id()
    mod = _modules.get(dev)
    if mod is None:
        mod = cupy.RawModule(code=SOURCE, name_expressions=NAME_EXPRESSIONS)
        _modules[dev] = mod
    t = "float" if np.dtype(dtype) == np.float32 else "double"
    return mod.get_function(f"{kname}<{t}>")


def _launch(kname, dtype, n_threads, args):
    if n_threads <= 0:
        return
    grid = max(1, min(math.ceil(n_threads / _BLOCK), max_grid))
    _kernel(kname, dtype)((grid,), (_BLOCK,), args)


_PADDING = {"zeros": 0, "border": 1}


def _dims(x4):
    N, C, H, W = (int(s) for s in x4.shape)
    return N, C, H, W, tuple(np.int64(v) for v in (N, C, H, W))


def warp(x, flow, padding):
    """Eq. (1) on the GPU. ``x (N,C,H,W)``, ``flow (N,2,H,W)`` -> ``(N,C,H,W)``."""
    x = _float(x)
    flow = cupy.ascontiguousarray(cupy.asarray(flow), dtype=x.dtype)
    N, C, H, W, dims = _dims(x)
    out = cupy.empty_like(x)
    _launch("stadv_warp_fwd", x.dtype, N * H * W, (x, flow, out) + dims + (np.int64(_PADDING[padding]),))
    return out


def warp_vjp_x(flow, grad_out, padding):
    """Adjoint warp ``G(flow)^T grad_out`` by ``atomicAdd`` scatter -> ``(N,C,H,W)``."""
    g = _float(grad_out)
    flow = cupy.ascontiguousarray(cupy.asarray(flow), dtype=g.dtype)
    N, C, H, W, dims = _dims(g)
    gx = cupy.zeros_like(g)
    _launch("stadv_warp_vjp_x", g.dtype, N * H * W, (flow, g, gx) + dims + (np.int64(_PADDING[padding]),))
    return gx


def warp_vjp_flow(x, flow, grad_out, padding):
    """``sum_c grad_out * d warp / d (du, dv)`` (right derivatives) -> ``(N,2,H,W)``."""
    x = _float(x)
    flow = cupy.ascontiguousarray(cupy.asarray(flow), dtype=x.dtype)
    g = cupy.ascontiguousarray(cupy.asarray(grad_out), dtype=x.dtype)
    N, C, H, W, dims = _dims(x)
    gflow = cupy.empty((N, 2, H, W), dtype=x.dtype)
    _launch(
        "stadv_warp_vjp_flow", x.dtype, N * H * W, (x, flow, g, gflow) + dims + (np.int64(_PADDING[padding]),)
    )
    return gflow


def warp_vjp(x, flow, grad_out, padding):
    """Both VJPs of Eq. (1) in one kernel: ``(G^T grad_out, flow VJP)``.

    Not part of the kernel contract; the fused backward pass used by the
    benchmark (one read of ``x``, ``flow`` and ``grad_out`` instead of two).
    """
    x = _float(x)
    flow = cupy.ascontiguousarray(cupy.asarray(flow), dtype=x.dtype)
    g = cupy.ascontiguousarray(cupy.asarray(grad_out), dtype=x.dtype)
    N, C, H, W, dims = _dims(x)
    gx = cupy.zeros_like(x)
    gflow = cupy.empty((N, 2, H, W), dtype=x.dtype)
    _launch(
        "stadv_warp_vjp_both", x.dtype, N * H * W, (x, flow, g, gx, gflow) + dims + (np.int64(_PADDING[padding]),)
    )
    return gx, gflow


def tied_jacobian_diag(x, r, padding, variant):
    """Diagonal of ``Dg`` for a tied flow ``r (N,H,W)`` ([E6]) -> ``(N,C,H,W)``."""
    x = _float(x)
    r = cupy.ascontiguousarray(cupy.asarray(r), dtype=x.dtype)
    N, C, H, W, dims = _dims(x)
    out = cupy.empty_like(x)
    _launch(
        "stadv_tied_jacobian_diag",
        x.dtype,
        N * H * W,
        (x, r, out) + dims + (np.int64(_PADDING[padding]), np.int64(variant == "paper")),
    )
    return out


# ---------------------------------------------------------------------------
# Eq. (2), Eq. (3), network: CuPy array code
# ---------------------------------------------------------------------------
def flow_tv(flow):
    """Eq. (2) ``l_diff`` per flow -> ``(N,)``."""
    return _ops.flow_tv(cupy, _float(flow))


def flow_tv_grad(flow):
    """Gradient of Eq. (2): ``(2 L du, 2 L dv)`` -> ``(N,2,H,W)``."""
    return _ops.flow_tv_grad(cupy, _cache, _float(flow))


def stadv_flow_loss(flow, eps, neighborhood, padding):
    """stAdv ``L_flow`` and its gradient: ``(values (N,), grad (N,2,H,W))``."""
    return _ops.stadv_flow_loss(cupy, _float(flow), eps, neighborhood, padding)


def smoothness_power(fields, p):
    """``L^p`` on every ``(H, W)`` field of ``fields (..., H, W)`` (eigenbasis cached on the device)."""
    return _ops.smoothness_power(cupy, _cache, _float(fields), p)


def _same_dtype(*arrays):
    """Device arrays of one float dtype (float32 only when every input is float32)."""
    f32 = all(getattr(a, "dtype", None) == np.float32 for a in arrays)
    dt = np.float32 if f32 else np.float64
    return tuple(cupy.asarray(a, dtype=dt) for a in arrays)


def net_forward(W, b, V, c, X):
    """``Z = X W^T + b``, ``out = relu(Z) V^T + c`` -> ``(Z (N,m), out (N,K))``."""
    W, b, V, c, X = _same_dtype(W, b, V, c, X)
    return _ops.net_forward(cupy, W, b, V, c, X)


def net_input_grad(W, b, V, X, weights):
    """``grad_x sum_k weights[n,k] f_k(x_n)`` -> ``(N,d)``."""
    W, b, V, X, weights = _same_dtype(W, b, V, X, weights)
    return _ops.net_input_grad(cupy, W, b, V, X, weights)


# ---------------------------------------------------------------------------
# Section 4.1: SDP
# ---------------------------------------------------------------------------
def sdp_mixing(A, S, T, max_iter, tol):
    """Mixing-method block ascent for ``max 2 tr(S^T A T)`` over unit rows (see :mod:`stadv_ref.sdp`)."""
    raise NotImplementedError("sdp_mixing on the GPU is not implemented yet")


def lambda_max_upper(S):
    """An upper bound on the largest eigenvalue of the dense symmetric ``S`` (float)."""
    raise NotImplementedError("lambda_max_upper on the GPU is not implemented yet")


backend = SimpleNamespace(
    name=name,
    xp=cupy,
    device_name=device_name,
    device_info=device_info,
    asarray=asarray,
    to_numpy=to_numpy,
    warp=warp,
    warp_vjp_x=warp_vjp_x,
    warp_vjp_flow=warp_vjp_flow,
    warp_vjp=warp_vjp,
    tied_jacobian_diag=tied_jacobian_diag,
    flow_tv=flow_tv,
    flow_tv_grad=flow_tv_grad,
    stadv_flow_loss=stadv_flow_loss,
    smoothness_power=smoothness_power,
    net_forward=net_forward,
    net_input_grad=net_input_grad,
    sdp_mixing=sdp_mixing,
    lambda_max_upper=lambda_max_upper,
    clear_cache=clear_cache,
)
"""The backend object registered under the entry point ``cupy = "stadv_cupy:backend"``."""
