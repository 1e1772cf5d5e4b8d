r"""Array-module-generic kernels of the CuPy backend (flow losses, ``L^p``, network).

Every function takes the array module ``xp`` as its first argument, so the same
code runs on CuPy in the backend and on NumPy in the CPU tests
(``tests/backends/test_cupy_emulated.py`` cross-checks it against the reference without a
GPU). Nothing here converts to NumPy or synchronises the device: inputs and
outputs stay ``xp`` arrays; only the small constant matrices (``A_n``,
``Q_H``, ``Q_W``, the spectrum of ``L``) are built on the host once per grid
size and dtype and cached on the device by :class:`DeviceCache`.

This module imports neither CuPy nor the package ``stadv_cupy`` (whose import
fails without a GPU), only :mod:`stadv_ref`.
"""
from __future__ import annotations

import threading

import numpy as np

from stadv_ref.operators import smoothness_operator
from stadv_ref.reference.smoothness import _unpad_adjoint  # slicing only: works on any array module
from stadv_ref.smoothness import NEIGHBORHOODS, path_matrix


def float_dtype(a):
    """``float32`` stays ``float32``; everything else computes in ``float64``."""
    return np.float32 if a.dtype == np.float32 else np.float64


class DeviceCache:
    """Constant matrices moved to the device once per ``(key, dtype)``.

    Parameters
    ----------
    xp : module
        ``cupy`` (or ``numpy`` in the CPU tests).

    Notes
    -----
    Arrays are allocated on the device that is current at the first request;
    the cache key includes the device id (``device_id()``) so a multi-GPU
    process gets one copy per device.
    """

    def __init__(self, xp, device_id=lambda: 0):
        self.xp = xp
        self.device_id = device_id
        self._store = {}
        self._lock = threading.Lock()

    def get(self, key, dtype, build):
        """Return the cached device copy of ``build()`` (host arrays) cast to ``dtype``."""
        full = (self.device_id(), key, np.dtype(dtype).str)
        hit = self._store.get(full)
        if hit is None:
            host = build()
            if isinstance(host, tuple):
                hit = tuple(self.xp.asarray(np.ascontiguousarray(h, dtype=dtype)) for h in host)
            else:
                hit = self.xp.asarray(np.ascontiguousarray(host, dtype=dtype))
            with self._lock:
                self._store.setdefault(full, hit)
                hit = self._store[full]
        return hit

    def clear(self):
        """Drop every cached array (frees device memory)."""
        with self._lock:
            self._store.clear()


def _rmul(A, M):
    """``A @ M`` for ``A (..., H, W)`` and ``M (W, K)`` as one 2-D GEMM."""
    lead = A.shape[:-1]
    return (A.reshape(-1, A.shape[-1]) @ M).reshape(*lead, M.shape[1])


def _lmul(M, A, xp):
    """``M @ A`` for ``M (K, H)`` and ``A (..., H, W)`` without broadcasting ``M``.

    Uses ``(A^T M^T)^T`` so the batched product is one 2-D GEMM on a
    contiguous transposed copy (broadcasting a 2-D left factor over a large
    batch can make the array library materialise one copy per batch item).
    """
    At = xp.ascontiguousarray(xp.swapaxes(A, -1, -2))
    return xp.swapaxes(_rmul(At, M.T), -1, -2)


# ---------------------------------------------------------------------------
# Eq. (2), Prop. 1: flow smoothness
# ---------------------------------------------------------------------------
def flow_tv(xp, flow):
    """Eq. (2) ``l_diff`` per flow (zero flow outside the image), shape ``(N,)``."""
    dt = float_dtype(flow)
    flow = flow.astype(dt, copy=False)
    H, W = flow.shape[-2:]
    padded = xp.pad(flow, ((0, 0), (0, 0), (1, 1), (1, 1)))
    total = xp.zeros(flow.shape[0], dtype=dt)
    for dr, dc in NEIGHBORHOODS["4"]:
        nb = padded[:, :, 1 + dr : 1 + dr + H, 1 + dc : 1 + dc + W]
        total += ((flow - nb) ** 2).sum(axis=(1, 2, 3))
    return total


def apply_L(xp, cache, fields):
    """``L F = A_H F + F A_W`` for every ``(H, W)`` field (Prop. 1)."""
    dt = float_dtype(fields)
    H, W = fields.shape[-2:]
    AH = cache.get(("path", H), dt, lambda: path_matrix(H))
    AW = cache.get(("path", W), dt, lambda: path_matrix(W))
    fields = fields.astype(dt, copy=False)
    return _lmul(AH, fields, xp) + _rmul(fields, AW)


def flow_tv_grad(xp, cache, flow):
    """Gradient of Eq. (2): ``(2 L du, 2 L dv)``."""
    return 2 * apply_L(xp, cache, flow)


def _pad_flow(xp, flow, padding):
    mode = "constant" if padding == "zeros" else "symmetric"
    return xp.pad(flow, ((0, 0), (0, 0), (1, 1), (1, 1)), mode=mode)


def stadv_flow_loss(xp, flow, eps, neighborhood, padding):
    """stAdv ``L_flow = sum_p sum_{q in N(p)} sqrt(||flow_p - flow_q||^2 + eps)`` and gradient."""
    dt = float_dtype(flow)
    flow = flow.astype(dt, copy=False)
    H, W = flow.shape[-2:]
    padded = _pad_flow(xp, flow, padding)
    values = xp.zeros(flow.shape[0], dtype=dt)
    g_center = xp.zeros_like(flow)
    g_pad = xp.zeros_like(padded)
    for dr, dc in NEIGHBORHOODS[neighborhood]:
        win = (slice(None), slice(None), slice(1 + dr, 1 + dr + H), slice(1 + dc, 1 + dc + W))
        diff = flow - padded[win]
        s = xp.sqrt((diff**2).sum(axis=1) + dt(eps))  # (N, H, W)
        values += s.sum(axis=(1, 2))
        q = diff / s[:, None]
        g_center += q
        g_pad[win] -= q
    return values, g_center + _unpad_adjoint(g_pad, padding)


# ---------------------------------------------------------------------------
# Eq. (3), Prop. 2: powers of L through the Kronecker-sum eigenbasis
# ---------------------------------------------------------------------------
def smoothness_power(xp, cache, fields, p):
    """``L^p F = Q_H ((a_k + b_l)^p o (Q_H^T F Q_W)) Q_W^T`` on each ``(H, W)`` field."""
    dt = float_dtype(fields)
    H, W = fields.shape[-2:]
    p = float(p)

    def build():
        op = smoothness_operator(H, W)
        return op.QH, op.QW, op.eigvals**p

    QH, QW, spec = cache.get(("Lpow", H, W, p), dt, build)
    F = fields.astype(dt, copy=False)
    T = _lmul(QH.T, _rmul(F, QW), xp)  # Q_H^T F Q_W
    T = T * spec
    return _rmul(_lmul(QH, T, xp), QW.T)


# ---------------------------------------------------------------------------
# One-hidden-layer network
# ---------------------------------------------------------------------------
def net_forward(xp, W, b, V, c, X):
    """``Z = X W^T + b``, ``out = relu(Z) V^T + c``."""
    Z = X @ W.T + b
    return Z, xp.maximum(Z, 0) @ V.T + c


def net_input_grad(xp, W, b, V, X, weights):
    """``grad_x sum_k weights[n,k] f_k(x_n) = ((weights V) o dsigma(Z)) W`` (``dsigma(0) = 0``)."""
    Z = X @ W.T + b
    return ((weights @ V) * (Z > 0).astype(Z.dtype)) @ W
