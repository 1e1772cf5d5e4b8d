r"""stadv_ref backend ``"cupy"``: the kernel contract of :mod:`stadv_ref.kernels` on a CUDA GPU.

Select it with ``STADV_BACKEND=cupy``, ``stadv_ref.use_backend("cupy")`` or
``backend="cupy"``. Install with ``pip install -e ".[cupy]"`` in a checkout (an NVIDIA
GPU with a CUDA 12 driver; on CUDA 13 the ``[cupy13]`` extra instead); the error message
names the command for the way stadv-ref was installed.

* Eq. (1): :func:`warp`, :func:`warp_vjp_x` (``atomicAdd`` scatter),
  :func:`warp_vjp_flow`, :func:`tied_jacobian_diag` and the fused
  :func:`warp_vjp_both` are ``cupy.RawModule`` CUDA kernels
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

import numpy as np

from stadv_ref._install import install_hint

try:
    import cupy
except Exception as exc:  # ImportError, or a broken CUDA library set-up
    raise ImportError(
        f"the cupy backend needs CuPy (cupy-cuda12x or cupy-cuda13x), which cannot be imported "
        f"({type(exc).__name__}: {exc}); install it with {install_hint('cupy')} (CUDA 12) "
        f"or {install_hint('cupy13')} (CUDA 13)"
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

from . import _ops, _sdp  # noqa: E402
from ._cuda_src import NAME_EXPRESSIONS, SOURCE, name_expression  # noqa: E402
from ._factory import make_backend  # noqa: E402

__all__ = [
    "backend",
    "device_name",
    "device_info",
    "warp",
    "warp_vjp_x",
    "warp_vjp_flow",
    "warp_vjp_both",
    "tied_jacobian_diag",
]

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
    """A NumPy copy of ``a`` (CuPy or NumPy): the only function that copies to the host."""
    return cupy.asnumpy(a)


def _current_device_id():
    return cupy.cuda.Device().id


_cache = _ops.DeviceCache(cupy, _current_device_id)
clear_cache = _cache.clear
"""Free the constant matrices cached on the device (``A_n``, ``Q_H``, ``Q_W``, spectra)."""


# ---------------------------------------------------------------------------
# Eq. (1): CUDA kernels (compiled by NVRTC on first use, once per device)
# ---------------------------------------------------------------------------
_modules = {}


def _kernel(expr):
    """The compiled template instance ``expr`` (a name expression) on the current device."""
    dev = _current_device_id()
    mod = _modules.get(dev)
    if mod is None:
        mod = _modules.setdefault(dev, cupy.RawModule(code=SOURCE, name_expressions=NAME_EXPRESSIONS))
    return mod.get_function(expr)


def _launch(kname, dtype, n_threads, args, n_elements):
    """Launch on the current stream; asynchronous (no synchronisation)."""
    if n_threads <= 0:
        return
    grid = max(1, min(math.ceil(n_threads / _BLOCK), max_grid))
    expr = name_expression(kname, np.dtype(dtype), n_elements, grid * _BLOCK)
    _kernel(expr)((grid,), (_BLOCK,), args)


backend = make_backend(
    cupy,
    _launch,
    _cache,
    _ops,
    _sdp,
    name="cupy",
    asarray=asarray,
    to_numpy=to_numpy,
    device_name=device_name,
    device_info=device_info,
    clear_cache=clear_cache,
)
"""The backend object registered under the entry point ``cupy = "stadv_cupy:backend"``."""

warp = backend.warp
warp_vjp_x = backend.warp_vjp_x
warp_vjp_flow = backend.warp_vjp_flow
warp_vjp_both = backend.warp_vjp_both
tied_jacobian_diag = backend.tied_jacobian_diag
