"""stadv_ref backend ``"numba"``: parallel CPU kernels with the reference's semantics.

Select it with ``STADV_BACKEND=numba``, ``stadv_ref.use_backend("numba")`` or
``backend="numba"``; install it with ``pip install -e ".[numba]"`` in a checkout
(the error message names the command for the way stadv-ref was installed).
Importing this package imports Numba (and raises :class:`ImportError` when it
is missing); importing :mod:`stadv_ref` alone never does.

Every kernel of :data:`stadv_ref.kernels.KERNELS` is provided with the
reference's shapes and dtype rules (float32 in, float32 out; float64 in,
float64 out); ``tests/backends/test_crosscheck.py`` checks each against the
NumPy reference. Kernels are compiled once and cached on disk
(``cache=True``); they run on ``numba.get_num_threads()`` threads, except the
network's two elementwise kernels, serial between BLAS products so that no idle
OpenMP worker spins on the cores BLAS needs (:mod:`._net`, #20).

Idle OpenMP workers: importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` when the
environment does not set it (a value you set is kept). Numba's default threading layer is
libgomp, whose workers otherwise spin for a while after every parallel region, on the cores
that the next BLAS product (OpenBLAS's own threads) needs. Where small parallel kernels and
BLAS products alternate, that costs an order of magnitude: the flow PGD attack of the
soundness spot check (one MNIST image, 784-500-10 network, 2 cores, default threads) took
24.4 s wall / 48.5 s CPU with spinning workers and 1.7 s / 3.5 s with passive ones
(``benchmarks/bench_threads.py``, case ``flow pgd``, measures it). The setting only takes
effect if libgomp is not loaded yet (another library of the process may have loaded it first).

Extra name: :func:`warp_vjp_both` -- both VJPs of Eq. (1) in one pass (the
forward+backward hot path of stAdv and of the flow gradient).
"""
from __future__ import annotations

import functools
import os

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from stadv_ref._install import install_hint

# before Numba can load libgomp (its "omp" threading layer reads this when it is loaded): see above
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import numba
except ImportError as exc:  # pragma: no cover - exercised only without numba
    raise ImportError(f"the numba backend needs Numba: {install_hint('numba')}") from exc

from stadv_ref.kernels import collect_kernels
from stadv_ref.operators import smoothness_operator
from stadv_ref.reference.sdp import _square_finite, lambda_max_certificate

from . import _net, _sdp, _smooth, _warp, _warp_packed
from ._local import kink_forms  # noqa: F401  (issue #21 kernel, collected below)

__all__ = ["backend", "warp_vjp_both"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _float_dtype(a):
    return np.float32 if a.dtype == np.float32 else np.float64


def _c(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _grid(H, W, dtype):
    """Column and row of every flat pixel (``cg``, ``rg``, dtype ``T``) and ``one = T(1)``."""
    if (H + 2 * _warp.RING) * (W + 2 * _warp.RING) >= 2**31:
        raise ValueError(f"images of {H}x{W} pixels are too large for the numba backend's 32-bit offsets")
    dt = np.dtype(dtype)
    rg, cg = np.divmod(np.arange(H * W), W)
    cg = cg.astype(dt)
    rg = rg.astype(dt)
    cg.setflags(write=False)
    rg.setflags(write=False)
    return cg, rg, dt.type(1)


def _nchunks(n_tasks):
    """Chunks of tasks for the parallel loops: a few per thread (each allocates its scratch once)."""
    return max(1, min(n_tasks, 4 * numba.get_num_threads()))


def _block_chunks(N, H, W):
    """Chunks of (image, pixel block) tasks. Each chunk copies the images it touches into
    padded scratch planes, so with fewer images than chunks use one chunk per thread."""
    threads = numba.get_num_threads()
    n_tasks = N * -(-(H * W) // _warp.BLOCK)
    return max(1, min(n_tasks, max(threads, min(N, 4 * threads))))


def _kernels(C):
    """The warp kernels for ``C`` channels: packed (:mod:`._warp_packed`) for 2-4, else planar."""
    return _warp_packed if 2 <= C <= 4 else _warp


def _border(padding):
    if padding not in ("zeros", "border"):
        raise ValueError(f"padding must be one of ['border', 'zeros'], got {padding!r}")
    return padding == "border"


# ---------------------------------------------------------------------------
# Eq. (1)
# ---------------------------------------------------------------------------
def _flat(a, dt):
    """C-contiguous ``a`` of dtype ``dt`` viewed as ``(N, C, H*W)``."""
    a = _c(a, dt)
    return a.reshape(a.shape[0], -1, a.shape[-2] * a.shape[-1])


def warp(x, flow, padding):
    """Eq. (1): ``x (N,C,H,W)``, ``flow (N,2,H,W)`` -> warped images (see :func:`stadv_ref.warp`)."""
    dt = _float_dtype(x)
    N, C, H, W = x.shape
    cg, rg, one = _grid(H, W, dt)
    out = np.empty((N, C, H, W), dtype=dt)
    _kernels(C).warp_kernel(
        _flat(x, dt).reshape(N * C, H * W), _flat(flow, dt), cg, rg, H, W, one, _border(padding),
        _block_chunks(N, H, W), out.reshape(N * C, H * W),
    )
    return out


def warp_vjp_x(flow, grad_out, padding):
    """Adjoint warp ``G(flow)^T grad_out`` (scatter-add), shape of ``grad_out``."""
    dt = _float_dtype(grad_out)
    N, C, H, W = grad_out.shape
    cg, rg, one = _grid(H, W, dt)
    out = np.empty((N, C, H, W), dtype=dt)
    _warp.warp_vjp_x_kernel(
        _flat(flow, dt), _flat(grad_out, dt).reshape(N * C, H * W), cg, rg, H, W, one,
        _border(padding), _nchunks(N * C), out.reshape(N * C, H * W),
    )
    return out


def warp_vjp_flow(x, flow, grad_out, padding):
    """``sum_c grad_out * d warp / d (du, dv)`` (right derivatives) -> ``(N,2,H,W)``."""
    dt = _float_dtype(x)
    N, C, H, W = x.shape
    cg, rg, one = _grid(H, W, dt)
    out = np.empty((N, 2, H, W), dtype=dt)
    _warp.warp_vjp_flow_kernel(
        _flat(x, dt).reshape(N * C, H * W), _flat(flow, dt),
        _flat(grad_out, dt).reshape(N * C, H * W), cg, rg, H, W, one, _border(padding),
        _block_chunks(N, H, W), out.reshape(N, 2, H * W),
    )
    return out


def warp_vjp_both(x, flow, grad_out, padding):
    """Both VJPs of Eq. (1) in one pass: ``(warp_vjp_x(...), warp_vjp_flow(...))``.

    Parallel over images; with fewer images than threads it falls back to
    the two separate kernels (parallel over planes and pixel blocks).
    """
    dt = _float_dtype(x)
    N, C, H, W = x.shape
    if N < numba.get_num_threads():
        return warp_vjp_x(flow, grad_out, padding), warp_vjp_flow(x, flow, grad_out, padding)
    cg, rg, one = _grid(H, W, dt)
    gx = np.empty((N, C, H, W), dtype=dt)
    gflow = np.empty((N, 2, H, W), dtype=dt)
    _kernels(C).warp_vjp_both_kernel(
        _flat(x, dt).reshape(N * C, H * W), _flat(flow, dt),
        _flat(grad_out, dt).reshape(N * C, H * W), cg, rg, H, W, one, _border(padding),
        _nchunks(N), gx.reshape(N * C, H * W), gflow.reshape(N, 2, H * W),
    )
    return gx, gflow


def tied_jacobian_diag(x, r, padding, variant):
    """Diagonal of ``Dg`` for a tied flow ``r (N,H,W)`` ([E6]); ``variant in {"correct","paper"}``."""
    if variant not in ("correct", "paper"):
        raise ValueError(f"variant must be one of ['correct', 'paper'], got {variant!r}")
    dt = _float_dtype(x)
    N, C, H, W = x.shape
    cg, rg, one = _grid(H, W, dt)
    out = np.empty((N, C, H, W), dtype=dt)
    ones = np.ones((1, _warp.BLOCK), dtype=dt)
    _warp.tied_jacobian_diag_kernel(
        _flat(x, dt).reshape(N * C, H * W), _c(r, dt).reshape(N, 1, H * W), ones, cg, rg, H, W,
        one, _border(padding), variant == "correct", _block_chunks(N, H, W),
        out.reshape(N * C, H * W),
    )
    return out


# ---------------------------------------------------------------------------
# Eq. (2), Prop. 1, stAdv flow loss
# ---------------------------------------------------------------------------
def flow_tv(flow):
    """Eq. (2) quadratic smoothness per flow -> ``(N,)``."""
    dt = _float_dtype(flow)
    flow = _c(flow, dt)
    N, _, H, _ = flow.shape
    partial = np.empty(N * H)
    _smooth.flow_tv_rows_kernel(flow, partial)
    return partial.reshape(N, H).sum(axis=1).astype(dt)


def _laplacian(fields, scale, dt):
    """``scale * L`` on each ``(H, W)`` field of ``fields (..., H, W)`` (stencil, float64 inside)."""
    shape = fields.shape
    F = _c(fields, dt).reshape((-1,) + shape[-2:])
    out = np.empty(F.shape, dtype=dt)
    _smooth.laplacian_kernel(F, float(scale), out)
    return out.reshape(shape)


def flow_tv_grad(flow):
    """Gradient of :func:`flow_tv`: ``(2 L du, 2 L dv)``."""
    return _laplacian(flow, 2.0, _float_dtype(flow))


_NEIGHBORHOODS = {
    "4": ((-1, 0), (1, 0), (0, -1), (0, 1)),
    "diagonal": ((1, 1), (1, -1), (-1, 1), (-1, -1)),
}
_NEIGHBORHOODS["8"] = _NEIGHBORHOODS["4"] + _NEIGHBORHOODS["diagonal"]
_OFFSETS = {k: np.array(v, dtype=np.int64) for k, v in _NEIGHBORHOODS.items()}


def stadv_flow_loss(flow, eps, neighborhood, padding):
    """stAdv ``L_flow`` and its gradient: ``(values (N,), grad (N,2,H,W))``."""
    if neighborhood not in _OFFSETS:
        raise ValueError(f"neighborhood must be one of {sorted(_OFFSETS)}, got {neighborhood!r}")
    if padding not in ("zeros", "symmetric"):
        raise ValueError(f"padding must be one of ['symmetric', 'zeros'], got {padding!r}")
    dt = _float_dtype(flow)
    flow = _c(flow, dt)
    values = np.empty(flow.shape[0])
    grad = np.empty(flow.shape)
    _smooth.stadv_flow_loss_kernel(
        flow, float(eps), _OFFSETS[neighborhood], padding == "symmetric", values, grad
    )
    return values.astype(dt), grad.astype(dt)


@functools.lru_cache(maxsize=64)
def _spectral(H, W, p, dtype):
    op = smoothness_operator(H, W)
    dt = np.dtype(dtype)
    QH = np.ascontiguousarray(op.QH, dtype=dt)
    QW = np.ascontiguousarray(op.QW, dtype=dt)
    spec = np.ascontiguousarray((op.eigvals**p)[:, None, :], dtype=dt)
    return QH, np.ascontiguousarray(QH.T), QW, np.ascontiguousarray(QW.T), spec


def smoothness_power(fields, p):
    """``L^p`` on each ``(H, W)`` field of ``fields (..., H, W)`` (Prop. 2, ``M^k = L^(k/2)``).

    ``p = 1, 2``: the exact 5-point stencil of ``L`` (applied ``p`` times).
    Other ``p``: the Kronecker eigendecomposition of
    :class:`stadv_ref.operators.SmoothnessOperator` with the whole batch in
    four large BLAS GEMMs (instead of one small GEMM per field).
    """
    dt = _float_dtype(fields)
    shape = fields.shape
    H, W = shape[-2:]
    p = float(p)
    if p == 1.0:
        return _laplacian(fields, 1.0, dt)
    if p == 2.0:
        return _laplacian(_laplacian(fields, 1.0, dt), 1.0, dt)
    QH, QHT, QW, QWT, spec = _spectral(H, W, p, dt)
    F = _c(fields, dt).reshape(-1, H, W)
    B = F.shape[0]
    T = (F.reshape(B * H, W) @ QW).reshape(B, H, W)  # F Q_W
    T = np.ascontiguousarray(T.transpose(1, 0, 2)).reshape(H, B * W)
    T = (QHT @ T).reshape(H, B, W)  # Q_H^T F Q_W, laid out (H, B, W)
    T *= spec
    T = (QH @ T.reshape(H, B * W)).reshape(H, B, W)
    T = np.ascontiguousarray(T.transpose(1, 0, 2)).reshape(B * H, W) @ QWT
    return T.reshape(shape)


# ---------------------------------------------------------------------------
# One-hidden-layer network
# ---------------------------------------------------------------------------
def net_forward(W, b, V, c, X):
    """``Z = X W^T + b``, ``out = relu(Z) V^T + c`` -> ``(Z (N,m), out (N,K))``."""
    dt = _float_dtype(X)
    Z = np.ascontiguousarray(_c(X, dt) @ _c(W, dt).T)
    out = np.empty((Z.shape[0], V.shape[0]), dtype=dt)
    _net.bias_relu_out_kernel(Z, _c(b, dt), _c(np.asarray(V).T, dt), _c(c, dt), out)
    return Z, out


def net_input_grad(W, b, V, X, weights):
    """``grad_x sum_k weights[n,k] f_k(x_n) = ((weights V) * dsigma(Z)) W`` -> ``(N, d)``."""
    dt = _float_dtype(X)
    W = _c(W, dt)
    Z = np.ascontiguousarray(_c(X, dt) @ W.T)
    G = np.ascontiguousarray(_c(weights, dt) @ _c(V, dt))
    _net.masked_backprop_kernel(Z, _c(b, dt), G)
    return G @ W


# ---------------------------------------------------------------------------
# Section 4.1 SDP
# ---------------------------------------------------------------------------
def sdp_mixing(A, S, T, max_iter, tol):
    """Mixing-method block ascent for ``max 2 tr(S^T A T)`` over unit rows (Section 4.1).

    Same iteration, convergence criterion and return value ``(S, T, n_iter)``
    as :func:`stadv_ref.reference.sdp.sdp_mixing_reference` (the inputs are not modified);
    the loop runs compiled with BLAS products.
    """
    dt = np.result_type(np.asarray(A).dtype, np.asarray(S).dtype, np.asarray(T).dtype, np.float32)
    A = _c(A, dt)
    S = np.array(S, dtype=dt, order="C", copy=True)
    T = np.array(T, dtype=dt, order="C", copy=True)
    n_iter = _sdp.sdp_mixing_kernel(A, np.ascontiguousarray(A.T), S, T, int(max_iter), float(tol))
    return S, T, int(n_iter)


def _top_eigenvalue(S):
    """Estimate of ``lambda_max(S)``: dense LAPACK for ``n <= 256``, else Lanczos (ARPACK) to machine precision."""
    n = S.shape[0]
    if n > 256:
        v0 = np.random.default_rng(0).standard_normal(n)
        try:
            return float(
                scipy.sparse.linalg.eigsh(S, k=1, which="LA", tol=0, v0=v0, return_eigenvectors=False)[0]
            )
        except scipy.sparse.linalg.ArpackError:  # no convergence: dense fallback
            pass
    return float(scipy.linalg.eigh(S, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0])


def lambda_max_upper(S):
    """Guaranteed upper bound on the largest eigenvalue of the dense symmetric ``S``.

    Same certificate as :func:`stadv_ref.reference.sdp.lambda_max_upper_reference`: an
    estimate ``mu0`` becomes a proof through a Cholesky factorisation of
    ``(mu0 + delta) I - S`` with a rounding margin
    (:func:`stadv_ref.reference.sdp.cholesky_upper`), ``delta`` starting at
    ``4 gamma_{n+1} (n |mu0| + ||S||_F)`` and growing 8x until it succeeds. For
    ``n > 256`` the estimate comes from Lanczos (ARPACK, O(n^2) per step)
    instead of a dense tridiagonalisation; the bound stays rigorous because
    only the Cholesky factorisation certifies it.
    """
    S = _square_finite(S)
    return lambda_max_certificate(S, _top_eigenvalue(S))


def asarray(a, dtype=None):
    """``numpy.asarray`` (the numba backend works on NumPy arrays)."""
    return np.asarray(a, dtype=dtype)


def to_numpy(a):
    """``numpy.asarray`` (no copy for NumPy input)."""
    return np.asarray(a)


backend = collect_kernels("numba", np, globals(), warp_vjp_both=warp_vjp_both)
"""The backend object registered under the entry point ``stadv_ref.backends: numba``."""
