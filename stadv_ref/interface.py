"""The backend contract: the kernels every compute backend provides.

A backend is any object (usually a module or a :class:`types.SimpleNamespace`)
with the attributes below. The NumPy reference (:mod:`stadv_ref._numpy_backend`)
is the specification; optimized backends (``stadv_numba``, ``stadv_cupy``) are
judged against it by ``tests/test_backend_crosscheck.py``.

Kernels receive **already validated, canonical** arrays (the public functions
in :mod:`stadv_ref` do the checking and reshaping) and must return arrays of
the backend's own array type (``backend.xp``) with the input's float dtype
(float32 in, float32 out; float64 in, float64 out).

Canonical shapes
----------------
* images ``x``: ``(N, C, H, W)``
* flows: ``(N, 2, H, W)``, ``flow[:, 0] = du`` (columns), ``flow[:, 1] = dv`` (rows)
* tied flows ``r``: ``(N, H, W)``
* network weights: ``W (m, d)``, ``b (m,)``, ``V (K, m)``, ``c (K,)``; inputs ``X (N, d)``

Registering a backend
---------------------
Add an entry point in the group ``stadv_ref.backends`` whose value is the
backend object, e.g. in ``pyproject.toml``::

    [project.entry-points."stadv_ref.backends"]
    numba = "stadv_numba:backend"

Importing ``stadv_ref`` never imports a backend: entry points are loaded on
first use. A backend whose dependencies are missing must raise
:class:`ImportError` when its entry point is loaded.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Mapping, Protocol, runtime_checkable

KERNELS = (
    "asarray",
    "to_numpy",
    "warp",
    "warp_vjp_x",
    "warp_vjp_flow",
    "tied_jacobian_diag",
    "flow_tv",
    "flow_tv_grad",
    "stadv_flow_loss",
    "smoothness_power",
    "net_forward",
    "net_input_grad",
    "sdp_mixing",
    "lambda_max_upper",
)
"""Names every backend must provide (plus the attributes ``name`` and ``xp``)."""


@runtime_checkable
class Backend(Protocol):
    """Protocol of a compute backend. See the module docstring for conventions."""

    name: str
    """Registered name (``"numpy"``, ``"numba"``, ``"cupy"``)."""
    xp: Any
    """Array module of the backend's arrays (``numpy`` or ``cupy``)."""

    def asarray(self, a, dtype=None):
        """Convert ``a`` (NumPy or backend array) to a backend array."""

    def to_numpy(self, a):
        """Convert a backend array to a NumPy array (no-op for NumPy)."""

    # -- Eq. (1): bilinear warp and its derivatives -------------------------
    def warp(self, x, flow, padding):
        """Eq. (1). ``x (N,C,H,W)``, ``flow (N,2,H,W)``, ``padding in {"zeros","border"}`` -> ``(N,C,H,W)``."""

    def warp_vjp_x(self, flow, grad_out, padding):
        """Adjoint of the warp in ``x``: ``G(flow)^T grad_out``; ``grad_out (N,C,H,W)`` -> ``(N,C,H,W)``."""

    def warp_vjp_flow(self, x, flow, grad_out, padding):
        """``sum_c grad_out * d warp / d flow``; -> ``(N,2,H,W)`` (right derivative at integers)."""

    def tied_jacobian_diag(self, x, r, padding, variant):
        """Diagonal of ``Dg`` for a tied flow ``r (N,H,W)``; ``variant in {"correct","paper"}`` -> ``(N,C,H,W)``."""

    # -- Eq. (2), Prop. 1: flow smoothness ----------------------------------
    def flow_tv(self, flow):
        """Eq. (2) quadratic smoothness ``l_diff`` per flow -> ``(N,)``."""

    def flow_tv_grad(self, flow):
        """Gradient of :meth:`flow_tv` -> ``(N,2,H,W)`` (equals ``2 L du, 2 L dv``)."""

    def stadv_flow_loss(self, flow, eps, neighborhood, padding):
        """stAdv ``L_flow`` (per-pair square root). Returns ``(values (N,), grad (N,2,H,W))``.

        ``neighborhood in {"4","diagonal","8"}``, ``padding in {"zeros","symmetric"}``.
        """

    def smoothness_power(self, fields, p):
        """Apply ``L^p`` to each field of ``fields (..., H, W)``.

        ``p in {0.5, -0.5, 1, -1, 2, -2}``: ``M^k`` with ``k = 2p`` (see :func:`stadv_ref.m_power`).
        """

    # -- One-hidden-layer network --------------------------------------------
    def net_forward(self, W, b, V, c, X):
        """``Z = X W^T + b``, ``out = relu(Z) V^T + c``. Returns ``(Z (N,m), out (N,K))``."""

    def net_input_grad(self, W, b, V, X, weights):
        """``grad_x sum_k weights[n,k] f_k(x_n)`` -> ``(N,d)`` (ReLU derivative 0 at 0)."""

    # -- Section 4.1 SDP ---------------------------------------------------------
    def sdp_mixing(self, A, S, T, max_iter, tol):
        """Block mixing-method ascent for the bipartite SDP of Section 4.1 (see :mod:`stadv_ref.sdp`).

        Maximises ``2 tr(S^T A T)`` (``= tr(P V V^T)`` with ``P = [[0, A], [A^T, 0]]``,
        ``V = [S; T]``) over matrices with unit-norm rows (Burer-Monteiro factor of
        ``Z = V V^T``, ``diag(Z) = 1``). One iteration is, exactly in this order::

            S <- rownormalize(A @ T)      # all s-rows at once (exact block maximiser)
            T <- rownormalize(A.T @ S)    # all t-rows at once

        where ``rownormalize`` divides each row by its Euclidean norm and a row whose
        norm is exactly 0 keeps its previous value. After iteration ``k`` let
        ``phi_k = sum_j ||(A.T @ S)_j||_2`` (the row norms of the T update, i.e.
        ``tr(S^T A T)`` for the new ``T``; ``phi`` never decreases in exact arithmetic).
        Convergence criterion: stop after iteration ``k >= 2`` when
        ``phi_k - phi_{k-1} <= tol * |phi_k|``, or when ``k == max_iter``.

        Parameters: ``A (m, d)``, ``S (m, k)``, ``T (d, k)`` of one float dtype
        (unit rows expected; ``T`` is used first), ``max_iter >= 1`` (int),
        ``tol >= 0`` (float). Inputs are not modified.
        Returns ``(S, T, n_iter)``: the new factors (same dtype) and ``n_iter = k``.
        """

    def lambda_max_upper(self, S):
        """Guaranteed upper bound on the largest eigenvalue of the dense symmetric ``S (n, n)``.

        Returns a Python float ``u`` with ``lambda_max(S) <= u`` in exact arithmetic
        despite rounding, and ``u - lambda_max(S) <= 1e-8 * max(1, ||S||_F)`` (for
        ``n <= 4096``). Reference: top eigenvalue by dense LAPACK (``eigh``), then a
        proof by a floating-point Cholesky factorisation of ``u I - S`` with the
        backward-error margin of Cholesky (Demmel 1989; Higham, Thm 10.3; see
        :func:`stadv_ref.sdp.cholesky_upper`), enlarging ``u`` until it succeeds. An iterative eigensolver
        alone is never enough (it can return a value below ``lambda_max``).
        Raises ``ValueError`` if ``S`` is not finite.
        """


def collect_kernels(name, xp, namespace: Mapping[str, Any], **extra):
    """A backend object: the :data:`KERNELS` found in ``namespace``, plus ``name``, ``xp`` and ``extra``.

    Backends define their kernels under the contract's names (as module globals
    or the locals of a factory) and collect them with
    ``collect_kernels("numba", numpy, globals(), warp_vjp_both=...)``, so the
    list of names lives only here.

    Raises
    ------
    TypeError
        If ``namespace`` lacks a kernel of the contract (names them).
    """
    missing = [k for k in KERNELS if not callable(namespace.get(k))]
    if missing:
        raise TypeError(f"backend {name!r} does not define the kernels {missing}")
    return SimpleNamespace(name=name, xp=xp, **{k: namespace[k] for k in KERNELS}, **extra)
