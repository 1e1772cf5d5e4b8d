r"""Build the backend namespace from an array module and a kernel launcher.

:func:`make_backend` holds every wrapper of the kernel contract
(:data:`stadv_ref.kernels.KERNELS`): argument normalisation (C-contiguous,
float32 stays float32, everything else float64), output allocation, and the
calls into the CUDA kernels of :mod:`stadv_cupy._cuda_src` (through
``launch``) or the array code of :mod:`stadv_cupy._ops`.

``stadv_cupy`` calls it with ``xp = cupy`` and a launcher of
``cupy.RawModule`` kernels. The CPU tests call it with ``xp = numpy`` and a
launcher that runs the same CUDA source compiled for the CPU, so the whole
backend -- wrappers included -- is cross-checked against the reference
without a GPU. This module imports neither CuPy nor ``stadv_cupy``.
"""
from __future__ import annotations

import numpy as np

from stadv_ref.kernels import collect_kernels
from stadv_ref.reference.local import kink_forms_reference

PADDING_CODES = {"zeros": 0, "border": 1}


def make_backend(xp, launch, cache, ops, sdp, *, name, asarray, to_numpy, **extra):
    """Return the backend namespace.

    Parameters
    ----------
    xp : module
        Array module of inputs and outputs (``cupy``; ``numpy`` in the CPU tests).
    launch : callable
        ``launch(kernel_name, dtype, n_threads, args, n_elements)`` runs a
        template instance ``kernel_name<float|double, int|long long>`` of
        :mod:`stadv_cupy._cuda_src` over ``n_threads`` grid-stride iterations;
        ``args`` are ``xp`` arrays and ``numpy.int64`` scalars in the kernel's
        parameter order; ``n_elements`` (the largest array's size) decides the
        index type (:func:`stadv_cupy._cuda_src.index_type`). It must not
        synchronise.
    cache : stadv_cupy._ops.DeviceCache
        Device cache of constant matrices.
    ops, sdp : module
        :mod:`stadv_cupy._ops` and :mod:`stadv_cupy._sdp`.
    name : str
    asarray, to_numpy : callable
    **extra
        More attributes of the namespace (``device_name``, ...).
    """

    def _float(a):
        a = xp.asarray(a)
        dt = np.float32 if a.dtype == np.float32 else np.float64
        return xp.ascontiguousarray(a, dtype=dt)

    def _like(a, dtype):
        return xp.ascontiguousarray(xp.asarray(a), dtype=dtype)

    def _dims(x4):
        """``(n_threads, kernel dims, n_elements)``; flows have 2 channels, images ``C``."""
        N, C, H, W = (int(s) for s in x4.shape)
        return N * H * W, tuple(np.int64(v) for v in (N, C, H, W)), N * max(C, 2) * H * W

    def warp(x, flow, padding):
        """Eq. (1). ``x (N,C,H,W)``, ``flow (N,2,H,W)`` -> ``(N,C,H,W)``."""
        x = _float(x)
        flow = _like(flow, x.dtype)
        n, dims, ne = _dims(x)
        out = xp.empty_like(x)
        launch("stadv_warp_fwd", x.dtype, n, (x, flow, out) + dims + (np.int64(PADDING_CODES[padding]),), ne)
        return out

    def warp_vjp_x(flow, grad_out, padding):
        """Adjoint warp ``G(flow)^T grad_out`` (``atomicAdd`` scatter) -> ``(N,C,H,W)``."""
        g = _float(grad_out)
        flow = _like(flow, g.dtype)
        n, dims, ne = _dims(g)
        gx = xp.zeros_like(g)
        launch("stadv_warp_vjp_x", g.dtype, n, (flow, g, gx) + dims + (np.int64(PADDING_CODES[padding]),), ne)
        return gx

    def warp_vjp_flow(x, flow, grad_out, padding):
        """``sum_c grad_out * d warp / d (du, dv)`` (right derivatives) -> ``(N,2,H,W)``."""
        x = _float(x)
        flow, g = _like(flow, x.dtype), _like(grad_out, x.dtype)
        n, dims, ne = _dims(x)
        N, _, H, W = x.shape
        gflow = xp.empty((N, 2, H, W), dtype=x.dtype)
        launch(
            "stadv_warp_vjp_flow", x.dtype, n, (x, flow, g, gflow) + dims + (np.int64(PADDING_CODES[padding]),), ne
        )
        return gflow

    def warp_vjp_both(x, flow, grad_out, padding):
        """Both VJPs of Eq. (1) in one kernel: ``(warp_vjp_x, warp_vjp_flow)``.

        Not part of the kernel contract (the numba backend has the same extra):
        one read of ``x``, ``flow`` and ``grad_out`` instead of two.
        """
        x = _float(x)
        flow, g = _like(flow, x.dtype), _like(grad_out, x.dtype)
        n, dims, ne = _dims(x)
        N, _, H, W = x.shape
        gx = xp.zeros_like(x)
        gflow = xp.empty((N, 2, H, W), dtype=x.dtype)
        launch(
            "stadv_warp_vjp_both",
            x.dtype,
            n,
            (x, flow, g, gx, gflow) + dims + (np.int64(PADDING_CODES[padding]),),
            ne,
        )
        return gx, gflow

    def tied_jacobian_diag(x, r, padding, variant):
        """Diagonal of ``Dg`` for a tied flow ``r (N,H,W)`` ([E6]) -> ``(N,C,H,W)``."""
        x = _float(x)
        r = _like(r, x.dtype)
        n, dims, ne = _dims(x)
        out = xp.empty_like(x)
        launch(
            "stadv_tied_jacobian_diag",
            x.dtype,
            n,
            (x, r, out) + dims + (np.int64(PADDING_CODES[padding]), np.int64(variant == "paper")),
            ne,
        )
        return out

    def flow_tv(flow):
        """Eq. (2) ``l_diff`` per flow -> ``(N,)``."""
        return ops.flow_tv(xp, _float(flow))

    def flow_tv_grad(flow):
        """Gradient of Eq. (2): ``(2 L du, 2 L dv)``."""
        return ops.flow_tv_grad(xp, cache, _float(flow))

    def stadv_flow_loss(flow, eps, neighborhood, padding):
        """stAdv ``L_flow`` and gradient: ``(values (N,), grad (N,2,H,W))``."""
        return ops.stadv_flow_loss(xp, _float(flow), eps, neighborhood, padding)

    def smoothness_power(fields, p):
        """``L^p`` on every ``(H, W)`` field (eigenbasis cached on the device)."""
        return ops.smoothness_power(xp, cache, _float(fields), p)

    def _same_dtype(*arrays):
        f32 = all(getattr(a, "dtype", None) == np.float32 for a in arrays)
        dt = np.float32 if f32 else np.float64
        return tuple(xp.asarray(a, dtype=dt) for a in arrays)

    def net_forward(W, b, V, c, X):
        """``Z = X W^T + b``, ``out = relu(Z) V^T + c`` -> ``(Z, out)``."""
        return ops.net_forward(xp, *_same_dtype(W, b, V, c, X))

    def net_input_grad(W, b, V, X, weights):
        """``grad_x sum_k weights[n,k] f_k(x_n)`` -> ``(N,d)``."""
        return ops.net_input_grad(xp, *_same_dtype(W, b, V, X, weights))

    def sdp_mixing(A, S, T, max_iter, tol):
        """Section 4.1 mixing method (see :mod:`stadv_ref.sdp`)."""
        return sdp.sdp_mixing(xp, A, S, T, max_iter, tol)

    def lambda_max_upper(S):
        """Upper bound on ``lambda_max`` of the symmetric ``S`` (float)."""
        return sdp.lambda_max_upper(xp, S)

    def kink_forms(P, Q, A1, A2, C1, C2, n_idx, j_idx, H, W):
        """Issue #21 quadratic forms: the NumPy reference on host copies, results on the device."""
        host = [None if a is None else to_numpy(a) for a in (P, Q, A1, A2, C1, C2, n_idx, j_idx)]
        return tuple(xp.asarray(v) for v in kink_forms_reference(*host, H, W))

    return collect_kernels(name, xp, locals(), warp_vjp_both=warp_vjp_both, **extra)
