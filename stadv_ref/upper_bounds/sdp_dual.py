r"""The dual of the Section 4.1 SDP: certified bounds, the bound's gradient, the bipartite certificate.

For ``A`` (``m x d``), ``P = [[0, A], [A^T, 0]]`` and ``n = m + d`` (EQUATIONS.md,
"Section 4.1" and "Dual certificate"), weak duality gives for *any* vector ``c``

.. math:: \mathrm{SDP}(P) \le J(A, c) = n\,\max(0, \lambda_{\max}(P - \mathrm{diag}(c))) + \textstyle\sum_i \max(c_i, 0),

because ``tr(ZP) = tr(Z (P - diag c)) + sum_i c_i Z_ii``, ``tr(Z) <= n`` and ``0 <= Z_ii <= 1``.

* :func:`dual_bound` -- ``J`` with ``lambda_max`` replaced by a *guaranteed* upper estimate
  (:func:`lambda_max_upper`), hence a certified bound.
* :func:`sdp_dual_gradient` / :func:`dual_bound_and_grad` -- ``J`` with an estimated
  ``lambda_max`` and its (sub)gradient in ``(A, c)``: the one implementation of the dual
  used both here and by the ``sdp`` training variant (Raghunathan et al. 2018), with a
  dense ``eigh`` or a warm-started matrix-free ARPACK ``eigsh``.
* :func:`_certify_bipartite` -- the certificate of the mixing solver: ``diag(c) - P`` is PSD
  iff ``||C_s^{-1/2} A C_t^{-1/2}||_2 <= 1``, so ``c`` scaled by that norm (and the two blocks
  rebalanced) makes ``lambda_max(P - diag c)`` zero up to a ``1e-9`` relative slack, which a
  floating-point Cholesky factorisation with a rounding margin
  (:func:`stadv_ref.reference.sdp.cholesky_upper`, Demmel 1989; Higham Thm 10.3) proves.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from .._validate import as_float_array, check_choice
from ..backend import get_backend
from ..reference.sdp import _EPS, _TINY, _gamma, cholesky_upper

__all__ = [
    "bipartite_matrix",
    "default_rank",
    "lambda_max_upper",
    "dual_bound",
    "DualGradient",
    "sdp_dual_gradient",
    "dual_bound_and_grad",
]


def lambda_max_upper(S, *, backend=None):
    """Guaranteed upper bound on ``lambda_max(S)`` via the current backend's kernel.

    Parameters
    ----------
    S : array_like, shape (n, n)
        Dense symmetric matrix.

    Returns
    -------
    float
    """
    S = as_float_array("S", S, ndim=2, dtype=np.float64)
    if S.shape[0] != S.shape[1]:
        raise ValueError(f"S must be square, got shape {S.shape}")
    be = get_backend(backend)
    return float(be.lambda_max_upper(be.asarray(S)))


def bipartite_matrix(A):
    """``P = [[0, A], [A^T, 0]]`` of Section 4.1 (dense, ``(m+d) x (m+d)``)."""
    A = np.asarray(A, dtype=np.float64)
    m, d = A.shape
    P = np.zeros((m + d, m + d))
    P[:m, m:] = A
    P[m:, :m] = A.T
    return P


def default_rank(n):
    """Burer-Monteiro rank ``ceil(sqrt(2 n)) + 1`` (enough for an optimal ``Z``, Barvinok-Pataki)."""
    return int(math.ceil(math.sqrt(2 * n))) + 1


def dual_bound(P, c, *, backend=None):
    """The certified dual bound ``n max(0, lambda_max(P - diag c)) + sum max(c, 0)`` on ``SDP(P)``.

    ``lambda_max`` comes from :func:`lambda_max_upper` (a guaranteed upper estimate),
    so the returned value is a rigorous upper bound on ``SDP(P)`` for any ``c``.

    Parameters
    ----------
    P : array_like, shape (n, n)
        Symmetric.
    c : array_like, shape (n,)

    Returns
    -------
    value : float
    lam_upper : float
        The upper estimate of ``lambda_max(P - diag c)`` used.
    """
    P = as_float_array("P", P, ndim=2, dtype=np.float64)
    c = as_float_array("c", c, ndim=1, dtype=np.float64)
    n = P.shape[0]
    if P.shape != (n, n) or c.shape != (n,):
        raise ValueError(f"P must be square and c of matching length, got {P.shape}, {c.shape}")
    lam = lambda_max_upper(P - np.diag(c), backend=backend)
    return _dual_value(n, lam, c), lam


def _dual_value(n, lam, c):
    # Upward-rounded evaluation of n * max(0, lam) + sum(max(c, 0)).
    s = float(np.maximum(c, 0).sum())
    val = n * max(0.0, lam) + s
    return val * (1 + 4 * (len(c) + 2) * _EPS) + _TINY


# ---------------------------------------------------------------------------
# The dual bound and its gradient (training through the bound)
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DualGradient:
    """``J(A, c)`` and its (sub)gradient, from :func:`sdp_dual_gradient`.

    Attributes
    ----------
    value : float
        ``J = n max(0, lam) + sum max(c, 0)`` (an estimate: ``lam`` is not certified).
    lam : float
        The estimate of ``lambda_max(P - diag c)``.
    x : ndarray, shape (m + d,)
        A unit top eigenvector of ``P - diag c`` (a warm start for the next call).
    grad_c : ndarray, shape (m + d,)
        ``dJ/dc = 1[c > 0] - n x**2`` (without the second term when ``lam <= 0``).
    scale : float
        ``dJ/dA = scale * outer(x_s, x_t)``: ``2 n`` when ``lam > 0``, else 0.
    m : int
        Rows of ``A`` (``x_s = x[:m]``, ``x_t = x[m:]``).
    """

    value: float
    lam: float
    x: np.ndarray
    grad_c: np.ndarray
    scale: float
    m: int

    @property
    def x_s(self):
        """The first ``m`` entries of ``x``."""
        return self.x[: self.m]

    @property
    def x_t(self):
        """The last ``d`` entries of ``x``."""
        return self.x[self.m :]

    @property
    def grad_A(self):
        """``dJ/dA``, shape ``(m, d)`` (rank one; zero when ``lam <= 0``)."""
        if self.scale:
            return self.scale * np.outer(self.x_s, self.x_t)
        return np.zeros((self.m, self.x.size - self.m))


def _top_eig_dense(A, c):
    """Top eigenpair of ``P(A) - diag c`` by dense LAPACK ``eigh`` (last index only)."""
    n = c.size
    M = bipartite_matrix(A)
    M[np.diag_indices(n)] -= c
    lam, vec = scipy.linalg.eigh(M, subset_by_index=[n - 1, n - 1])
    return float(lam[0]), vec[:, 0]


def _top_eig_arpack(A, row_scale, c, u0, tol, seed):
    """Top eigenpair of ``P(diag(row_scale) A) - diag c`` by ARPACK on a matrix-free operator.

    The start vector is ``u0`` (a warm start) or, without one, a deterministic
    ``uniform(-1, 1)`` draw of ``numpy.random.default_rng(seed)``: ARPACK's own random start
    would make two identical calls in one process differ (issue #19). Falls back to the
    dense route if ARPACK fails.
    """
    m, d = A.shape
    n = m + d
    c1, c2 = c[:m], c[m:]
    if row_scale is None:
        def mv(z):
            z = np.asarray(z).reshape(-1)
            s, t = z[:m], z[m:]
            return np.concatenate([A @ t - c1 * s, A.T @ s - c2 * t])
    else:
        dv = row_scale

        def mv(z):
            z = np.asarray(z).reshape(-1)
            s, t = z[:m], z[m:]
            return np.concatenate([dv * (A @ t) - c1 * s, A.T @ (dv * s) - c2 * t])

    v0 = u0 if u0 is not None else np.random.default_rng(seed).uniform(-1.0, 1.0, n)
    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=mv, dtype=np.float64)
    try:
        vals, vecs = scipy.sparse.linalg.eigsh(op, k=1, which="LA", v0=v0, tol=tol, maxiter=5000)
        return float(vals[0]), vecs[:, 0]
    except Exception:  # pragma: no cover - ARPACK failure: dense fallback
        return _top_eig_dense(A if row_scale is None else row_scale[:, None] * A, c)


def sdp_dual_gradient(A, c, *, row_scale=None, solver="dense", u0=None, tol=0.0, seed=0):
    r"""The dual bound ``J(A, c)`` and its (sub)gradient (Raghunathan et al. 2018; module docstring).

    .. math:: J(A, c) = n \max(0, \lambda_{\max}(P(A) - \mathrm{diag}(c))) + \sum_i \max(c_i, 0)

    with ``P(A) = [[0, A], [A^T, 0]]`` and ``n = m + d``. ``J >= SDP(P(A))`` for every
    ``c``, so minimising ``J`` over ``(A, c)`` (e.g. with ``A = diag(v) W diag(lambda)``
    and ``c`` a trainable vector) drives the Section 4.1 bound down. This is the one
    implementation of the dual used by :func:`dual_bound_and_grad` and by the ``sdp``
    training variant.

    Parameters
    ----------
    A : array_like, shape (m, d)
    c : array_like, shape (m + d,)
    row_scale : array_like, shape (m,), optional
        The block is ``diag(row_scale) A`` (never formed on the ARPACK route: its
        products are ``row_scale * (A t)`` and ``A^T (row_scale * s)``).
    solver : {"dense", "arpack"}
        ``"dense"``: LAPACK ``eigh`` of the dense ``P - diag c`` (last eigenvalue only).
        ``"arpack"``: ``eigsh`` on a matrix-free operator (several times faster per
        training step; falls back to dense if ARPACK fails).
    u0 : array_like, shape (m + d,), optional
        ARPACK start vector (warm start, e.g. the previous ``x``); ignored by ``"dense"``.
    tol : float
        ARPACK relative tolerance (0: machine precision).
    seed : int or sequence of int
        Seeds the deterministic ARPACK start vector used when ``u0`` is not given.

    Returns
    -------
    DualGradient
        ``value``, the estimate ``lam``, the top eigenvector ``x``, ``grad_c`` and
        ``dJ/dA = scale * outer(x_s, x_t)`` (with respect to the block ``diag(row_scale) A``).

    Notes
    -----
    ``lam`` is an estimate, so ``value`` is not certified (use :func:`dual_bound`).
    ``lambda_max`` is differentiable where the top eigenvalue is simple; elsewhere
    this is a subgradient (any unit top eigenvector gives one).
    """
    A = as_float_array("A", A, ndim=2, dtype=np.float64)
    m, d = A.shape
    n = m + d
    c = as_float_array("c", c, ndim=1, dtype=np.float64)
    if c.shape != (n,):
        raise ValueError(f"c must have shape ({n},) for A of shape {A.shape}, got {c.shape}")
    if row_scale is not None:
        row_scale = as_float_array("row_scale", row_scale, ndim=1, dtype=np.float64)
        if row_scale.shape != (m,):
            raise ValueError(f"row_scale must have shape ({m},), got {row_scale.shape}")
    check_choice("solver", solver, ("dense", "arpack"))
    if solver == "dense":
        lam, x = _top_eig_dense(A if row_scale is None else row_scale[:, None] * A, c)
    else:
        if u0 is not None:
            u0 = as_float_array("u0", u0, ndim=1, dtype=np.float64)
            if u0.shape != (n,):
                raise ValueError(f"u0 must have shape ({n},), got {u0.shape}")
        lam, x = _top_eig_arpack(A, row_scale, c, u0, tol, seed)
    value = n * max(0.0, lam) + float(np.maximum(c, 0).sum())
    grad_c = (c > 0).astype(np.float64)
    scale = 0.0
    if lam > 0:
        grad_c = grad_c - n * x * x
        scale = 2.0 * n
    return DualGradient(value=value, lam=lam, x=x, grad_c=grad_c, scale=scale, m=m)


def dual_bound_and_grad(A, c, **options):
    r"""Dual SDP bound and its (sub)gradient as ``(value, grad_A, grad_c)``.

    :func:`sdp_dual_gradient` (same arguments and ``options``; default a dense ``eigh``)
    with the rank-one ``dJ/dA`` formed.

    Parameters
    ----------
    A : array_like, shape (m, d)
    c : array_like, shape (m + d,)
    **options
        ``row_scale``, ``solver``, ``u0``, ``tol``, ``seed`` of :func:`sdp_dual_gradient`.

    Returns
    -------
    value : float
        ``J`` with an estimated ``lambda_max`` (use :func:`stadv_ref.upper_bounds.solve_sdp`
        or :func:`dual_bound` for a certified value).
    grad_A : ndarray, shape (m, d)
        ``n * 2 x_s x_t^T`` where ``x = (x_s, x_t)`` is a unit top eigenvector of
        ``P - diag c`` (0 when ``lambda_max <= 0``).
    grad_c : ndarray, shape (m + d,)
        ``-n x**2 (if lambda_max > 0) + 1[c > 0]``.
    """
    g = sdp_dual_gradient(A, c, **options)
    return g.value, g.grad_A, g.grad_c


# ---------------------------------------------------------------------------
# The bipartite certificate (polish, then a Cholesky proof)
# ---------------------------------------------------------------------------
def _floor(x, rel=1e-12):
    top = float(np.max(x)) if x.size else 0.0
    fl = max(rel * top, 1e-300)
    return np.maximum(x, fl)


def _sigma_dense(X):
    """``||X||_2`` by a dense symmetric eigenvalue of ``X X^T`` (or ``X^T X``); an estimate."""
    m, d = X.shape
    G = X @ X.T if m <= d else X.T @ X
    k = G.shape[0]
    lam = scipy.linalg.eigh(G, eigvals_only=True, subset_by_index=[k - 1, k - 1])[0]
    return float(math.sqrt(max(lam, 0.0)))


def _sigma_estimate(A, cs, ct):
    """Estimate ``||C_s^{-1/2} A C_t^{-1/2}||_2`` by a dense symmetric eigenvalue (the proof comes after).

    Near the optimum the top singular value is (nearly) multiple, which makes
    iterative solvers crawl; the dense route costs one ``min(m,d)^2 max(m,d)`` product.
    """
    return _sigma_dense(A / np.sqrt(cs)[:, None] / np.sqrt(ct)[None, :])


def _polish_bipartite(A, cs, ct):
    """Scale ``(c_s, c_t)`` so ``diag(c) - P`` is (just) PSD and the two sums are balanced."""
    cs = _floor(np.asarray(cs, dtype=np.float64))
    ct = _floor(np.asarray(ct, dtype=np.float64))
    sig = _sigma_estimate(A, cs, ct)
    alpha = math.sqrt(ct.sum() / cs.sum())
    return sig * alpha * cs, sig / alpha * ct, sig


def _certify_bipartite(A, cs, ct, *, certificate="auto", backend=None):
    """Rigorous bound on ``SDP(P(A))`` from a dual vector ``(cs, ct)`` (polished first)."""
    m, d = A.shape
    n = m + d
    cs_p, ct_p, sig = _polish_bipartite(A, cs, ct)
    slack = max(1e-9, 8 * n * _gamma(n + 1))
    tried = []
    if certificate in ("auto", "cholesky"):
        for _ in range(8):
            c = np.concatenate([cs_p, ct_p]) * (1 + slack)
            S = bipartite_matrix(A)
            S[np.diag_indices(n)] -= c
            u = cholesky_upper(S, 0.0)
            tried.append(slack)
            if u is not None:
                return _dual_value(n, u, c), c, u, "cholesky", {"sigma": sig, "slack": slack}
            slack *= 10
    c = np.concatenate([cs_p, ct_p])
    S = bipartite_matrix(A)
    S[np.diag_indices(n)] -= c
    lam = lambda_max_upper(S, backend=backend)
    return _dual_value(n, lam, c), c, lam, "eigvalsh", {"sigma": sig, "cholesky_slacks_tried": tried}
