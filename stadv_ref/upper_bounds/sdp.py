r"""The SDP relaxation of Section 4.1 and its rigorous dual certificates.

Problem (Section 4.1, appendix 6.7). For ``A = diag(v) W diag(lambda)`` (``m x d``)
and ``P = [[0, A], [A^T, 0]]`` (``n = m + d``),

.. math:: \mathrm{SDP}(P) = \max\ \mathrm{tr}(Z P)\quad \text{s.t.}\quad \mathrm{diag}(Z) \le 1,\ Z \succeq 0 .

Certificate (weak duality). For *any* vector ``c``,

.. math:: \mathrm{SDP}(P) \le n\,\max(0, \lambda_{\max}(P - \mathrm{diag}(c))) + \textstyle\sum_i \max(c_i, 0),

because ``tr(ZP) = tr(Z (P - diag c)) + sum_i c_i Z_ii``, ``tr(Z) <= n`` and
``0 <= Z_ii <= 1``. Every bound this module reports as certified is this
right-hand side, with ``lambda_max`` replaced by a *guaranteed* upper estimate
(:func:`cholesky_upper`, :func:`lambda_max_upper_reference`): a solver status never
certifies anything.

Solvers
-------
* ``method="scs"``: cvxpy + SCS on the problem exactly as the paper states it (the
  reference). The dual of ``diag(Z) <= 1`` is the ``c`` that gets certified.
* ``method="mixing"``: the Burer-Monteiro / mixing method (Wang, Chang & Kolter 2017)
  in its bipartite block form: ``Z = V V^T``, ``V = [S; T]`` with unit rows; since
  ``P`` is bipartite all ``s``-rows can be updated at once, ``S <- rownormalize(A T)``,
  then all ``t``-rows, ``T <- rownormalize(A^T S)`` (two matrix products per
  iteration; the backend kernel ``sdp_mixing``). Rank ``k = ceil(sqrt(2 n)) + 1``
  (Barvinok-Pataki: some optimal ``Z`` has rank ``<= sqrt(2 n)``).
  The dual ``c`` is read off the iterate, ``c_i = ||(P V)_i||`` (``P V = [A T; A^T S]``),
  then *polished*: ``diag(c) - P`` is PSD iff ``||C_s^{-1/2} A C_t^{-1/2}||_2 <= 1``, so
  scaling ``c`` by that norm ``sigma`` (and rebalancing the two blocks, ``c_s -> alpha c_s``,
  ``c_t -> c_t / alpha``, ``alpha = sqrt(sum c_t / sum c_s)``) makes ``lambda_max(P - diag c)``
  zero up to a ``1e-9`` relative slack; a floating-point Cholesky factorisation of
  ``diag(c) - P`` with a rounding margin then *proves* the ``lambda_max`` term is (almost)
  zero. The certified value is ``2 sigma sqrt(sum c_s sum c_t)`` up to that slack.

The tighter ellipsoid relaxation used by ``upper_bound(method="tight")`` is
:func:`solve_ellipsoid_sdp` (documented there).

Rounding
--------
:func:`cholesky_upper` uses the backward error of Cholesky (Demmel 1989; Higham,
*Accuracy and Stability*, Thm 10.3): if the floating-point factorisation of ``K``
runs to completion, ``R^T R = K + dK`` with ``|dK| <= gamma_{n+1} |R^T| |R|``, hence
``||dK||_2 <= gamma_{n+1} / (1 - gamma_{n+1}) tr(K)`` and
``lambda_min(K) >= -gamma_{n+1}/(1-gamma_{n+1}) tr(K) - (rounding made forming K)``.
We use twice that margin (any summation order, fused multiply-add).
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from .._validate import as_float_array, check_choice, check_positive_int
from ..backend import get_backend

__all__ = [
    "SDPResult",
    "solve_sdp",
    "solve_ellipsoid_sdp",
    "bipartite_matrix",
    "dual_bound",
    "dual_bound_and_grad",
    "sdp_primal_lower",
    "cholesky_upper",
    "lambda_max_upper",
    "sdp_mixing_reference",
    "lambda_max_upper_reference",
    "default_rank",
]

from ..reference.sdp import (  # noqa: F401  (re-exported: public names of this module)
    _EPS,
    _TINY,
    _gamma,
    cholesky_upper,
    lambda_max_certificate,
    lambda_max_upper_reference,
    sdp_mixing_reference,
)


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


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
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


def dual_bound_and_grad(A, c):
    r"""Dual SDP bound and its (sub)gradient, for training through the bound (Raghunathan et al. 2018).

    .. math:: J(A, c) = n \max(0, \lambda_{\max}(P(A) - \mathrm{diag}(c))) + \sum_i \max(c_i, 0)

    with ``P(A) = [[0, A], [A^T, 0]]`` and ``n = m + d``. ``J >= SDP(P(A))`` for every
    ``c``, so minimising ``J`` over ``(A, c)`` (e.g. with ``A = diag(v) W diag(lambda)``
    and ``c`` a trainable vector) drives the Section 4.1 bound down.

    Parameters
    ----------
    A : array_like, shape (m, d)
    c : array_like, shape (m + d,)

    Returns
    -------
    value : float
        ``J`` with ``lambda_max`` from a dense ``eigh`` (an estimate; use
        :func:`solve_sdp` or :func:`dual_bound` for a certified value).
    grad_A : ndarray, shape (m, d)
        ``n * 2 x_s x_t^T`` where ``x = (x_s, x_t)`` is a unit top eigenvector of
        ``P - diag c`` (0 when ``lambda_max <= 0``).
    grad_c : ndarray, shape (m + d,)
        ``-n x**2 (if lambda_max > 0) + 1[c > 0]``.

    Notes
    -----
    ``lambda_max`` is differentiable where the top eigenvalue is simple; elsewhere this
    is a subgradient (any unit top eigenvector gives one).
    """
    A = as_float_array("A", A, ndim=2, dtype=np.float64)
    m, d = A.shape
    n = m + d
    c = as_float_array("c", c, ndim=1, dtype=np.float64)
    if c.shape != (n,):
        raise ValueError(f"c must have shape ({n},) for A of shape {A.shape}, got {c.shape}")
    M = bipartite_matrix(A)
    M[np.diag_indices(n)] -= c
    lam, vec = scipy.linalg.eigh(M, subset_by_index=[n - 1, n - 1])
    lam = float(lam[0])
    x = vec[:, 0]
    value = n * max(0.0, lam) + float(np.maximum(c, 0).sum())
    grad_c = (c > 0).astype(np.float64)
    if lam > 0:
        grad_A = 2.0 * n * np.outer(x[:m], x[m:])
        grad_c = grad_c - n * x**2
    else:
        grad_A = np.zeros_like(A)
    return value, grad_A, grad_c


# ---------------------------------------------------------------------------
# Result type
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class SDPResult:
    """Result of :func:`solve_sdp` / :func:`solve_ellipsoid_sdp`.

    Attributes
    ----------
    value : float
        Certified upper bound on the SDP optimum (``inf`` if no certificate was found).
    certified : bool
        Whether ``value`` comes from a successful rigorous certificate.
    primal : float
        ``tr(P Z)`` of a feasible ``Z`` (a lower bound on the optimum) when available.
    gap : float
        ``(value - primal) / |primal|``: the certified relative gap.
    c : ndarray
        The dual vector the certificate was evaluated for.
    lambda_upper : float
        Guaranteed upper estimate of ``lambda_max(P - diag c)`` that entered the bound.
    method : str
        ``"mixing"`` or ``"scs"``.
    certificate : str
        How ``lambda_upper`` was obtained: ``"cholesky"`` (proof that it is ``<= ~0``)
        or ``"eigvalsh"`` (dense eigenvalue + Cholesky proof).
    status : str
        Solver status (for SCS its own status string; never used to certify).
    n_iter, rank : int
    time_solve, time_certificate : float
        Seconds.
    details : dict
    """

    value: float
    certified: bool
    primal: float
    gap: float
    c: np.ndarray
    lambda_upper: float
    method: str
    certificate: str
    status: str
    n_iter: int = 0
    rank: int = 0
    time_solve: float = 0.0
    time_certificate: float = 0.0
    details: dict = dataclasses.field(default_factory=dict)

    @property
    def time(self):
        """Total seconds (solve + certificate)."""
        return self.time_solve + self.time_certificate


# ---------------------------------------------------------------------------
# Bipartite certificates
# ---------------------------------------------------------------------------
def _floor(x, rel=1e-12):
    top = float(np.max(x)) if x.size else 0.0
    fl = max(rel * top, 1e-300)
    return np.maximum(x, fl)


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
        if certificate == "cholesky":
            c = np.concatenate([cs_p, ct_p])
    c = np.concatenate([cs_p, ct_p])
    S = bipartite_matrix(A)
    S[np.diag_indices(n)] -= c
    lam = lambda_max_upper(S, backend=backend)
    return _dual_value(n, lam, c), c, lam, "eigvalsh", {"sigma": sig, "cholesky_slacks_tried": tried}


# ---------------------------------------------------------------------------
# The public solver
# ---------------------------------------------------------------------------
def _split_problem(A, P):
    if (A is None) == (P is None):
        raise ValueError("pass exactly one of A (m x d block) or P (symmetric n x n)")
    if A is not None:
        A = as_float_array("A", A, ndim=2, dtype=np.float64)
        if A.size == 0:
            raise ValueError(f"A must be non-empty, got shape {A.shape}")
        return A, None
    P = as_float_array("P", P, ndim=2, dtype=np.float64)
    if P.shape[0] != P.shape[1] or P.size == 0:
        raise ValueError(f"P must be a non-empty square matrix, got shape {P.shape}")
    if not np.allclose(P, P.T, rtol=0, atol=1e-12 * max(1.0, float(np.abs(P).max()))):
        raise ValueError("P must be symmetric")
    return None, 0.5 * (P + P.T)


def solve_sdp(
    A=None,
    *,
    P=None,
    method="mixing",
    rank=None,
    gap_tol=1e-5,
    max_iter=20000,
    seed=0,
    certificate="auto",
    init=None,
    scs_eps=1e-9,
    scs_max_iters=200000,
    time_limit=None,
    verbose=False,
    backend=None,
):
    r"""Solve and *certify* ``SDP(P) = max tr(Z P) s.t. diag(Z) <= 1, Z psd`` (Section 4.1).

    Parameters
    ----------
    A : array_like, shape (m, d), optional
        The off-diagonal block: ``P = [[0, A], [A^T, 0]]`` (for the paper,
        ``A = diag(v) W diag(lambda)``). Either ``A`` or ``P`` must be given.
    P : array_like, shape (n, n), optional
        A general symmetric matrix (small problems; the mixing method then updates
        one row at a time).
    method : {"mixing", "scs"}
        ``"mixing"``: the fast bipartite mixing method (module docstring).
        ``"scs"``: cvxpy + SCS on the problem exactly as printed (the reference).
    rank : int, optional
        Burer-Monteiro rank ``k`` (default :func:`default_rank`).
    gap_tol : float
        Stop the mixing method when the *certified* relative gap
        ``(value - primal) / primal`` is below this.
    max_iter : int
        Maximum number of mixing iterations.
    seed : int
        Seed of the random initial factors.
    certificate : {"auto", "cholesky", "eigvalsh"}
        How the ``lambda_max`` term is bounded: ``"cholesky"`` proves
        ``lambda_max(P - diag c) <= ~0`` by one Cholesky factorisation of the polished
        ``diag(c) - P``; ``"eigvalsh"`` uses the dense top eigenvalue made rigorous
        (:func:`lambda_max_upper`); ``"auto"``: Cholesky, falling back to eigvalsh.
    init : tuple (S, T), optional
        Warm start for the mixing method (bipartite case).
    scs_eps : float
        SCS ``eps_abs`` and ``eps_rel``.
    scs_max_iters : int
        SCS iteration cap.
    time_limit : float, optional
        Seconds; SCS ``time_limit_secs``, or a wall-clock cap for the mixing loop.
    verbose : bool
    backend : str, optional
        Backend for the kernels (default: the current one).

    Returns
    -------
    SDPResult
        ``value`` is the certified bound; ``primal`` a feasible lower value.

    Notes
    -----
    The SCS status is recorded in ``status`` and never certifies: SCS's returned
    dual ``c`` is pushed through the same dual inequality (raw, and polished for a
    bipartite ``P``), and the smaller certified value is reported.
    """
    A, P = _split_problem(A, P)
    check_choice("method", method, ("mixing", "scs"))
    check_choice("certificate", certificate, ("auto", "cholesky", "eigvalsh"))
    if not (isinstance(gap_tol, (int, float)) and np.isfinite(gap_tol) and gap_tol > 0):
        raise ValueError(f"gap_tol must be a positive finite number, got {gap_tol!r}")
    max_iter = check_positive_int("max_iter", max_iter)
    if time_limit is not None and not (np.isfinite(time_limit) and time_limit > 0):
        raise ValueError(f"time_limit must be positive, got {time_limit!r}")
    if method == "scs":
        return _solve_scs(A, P, scs_eps=scs_eps, scs_max_iters=scs_max_iters, time_limit=time_limit,
                          verbose=verbose, certificate=certificate, backend=backend)
    if A is not None:
        return _solve_mixing_bipartite(A, rank=rank, gap_tol=gap_tol, max_iter=max_iter, seed=seed,
                                       certificate=certificate, init=init, time_limit=time_limit,
                                       verbose=verbose, backend=backend)
    return _solve_mixing_general(P, rank=rank, gap_tol=gap_tol, max_iter=max_iter, seed=seed,
                                 time_limit=time_limit, backend=backend)


def _rel_gap(value, primal):
    """Relative gap ``(value - primal) / |primal|`` between a dual bound and a primal value."""
    return (value - primal) / max(abs(primal), _TINY)


def _stop_reason(gap, gap_tol, out_of_time, stagnated=False):
    """Why a solver loop stops after a certificate: its status, or None to go on.

    ``"converged"``: the *certified* gap is at most ``gap_tol``; ``"time_limit"``; and
    ``"stagnated"``: the objective stopped increasing (a fixed point of the iteration,
    up to rounding) before the gap was reached, so more iterations cannot help.
    """
    if gap <= gap_tol:
        return "converged"
    if out_of_time:
        return "time_limit"
    if stagnated:
        return "stagnated"
    return None


def _random_unit_rows(rng, n, k):
    X = rng.standard_normal((n, k))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _solve_mixing_bipartite(A, *, rank, gap_tol, max_iter, seed, certificate, init, time_limit,
                            verbose, backend):
    be = get_backend(backend)
    m, d = A.shape
    n = m + d
    k = default_rank(n) if rank is None else check_positive_int("rank", rank)
    rng = np.random.default_rng(seed)
    if init is not None:
        S, T = (np.array(a, dtype=np.float64) for a in init)
        if S.shape[0] != m or T.shape[0] != d or S.shape[1] != T.shape[1]:
            raise ValueError(f"init must be (S (m, k), T (d, k)) for A {A.shape}, got {S.shape}, {T.shape}")
        k = S.shape[1]
    else:
        S, T = _random_unit_rows(rng, m, k), _random_unit_rows(rng, d, k)
    t0 = time.perf_counter()
    A_be = be.asarray(A)
    S_be, T_be = be.asarray(S), be.asarray(T)
    done, chunk, status = 0, 10, "max_iter"
    history = []
    best = None
    t_cert = 0.0
    while done < max_iter:
        step = min(chunk, max_iter - done)
        S_be, T_be, it = be.sdp_mixing(A_be, S_be, T_be, step, 0.0)
        done += int(it)
        S, T = be.to_numpy(S_be), be.to_numpy(T_be)
        GS, GT = A @ T, A.T @ S
        cs, ct = np.linalg.norm(GS, axis=1), np.linalg.norm(GT, axis=1)
        primal = 2.0 * float(np.einsum("ij,ij->", S, GS))
        est = 2.0 * _sigma_estimate(A, _floor(cs), _floor(ct)) * math.sqrt(_floor(cs).sum() * _floor(ct).sum())
        est_gap = _rel_gap(est, primal)
        history.append((done, primal, est))
        if verbose:
            print(f"[mixing] iter {done}: primal {primal:.10g} dual~ {est:.10g} gap~ {est_gap:.2e}")
        out_of_time = time_limit is not None and time.perf_counter() - t0 > time_limit
        if est_gap <= 0.5 * gap_tol or int(it) < step or out_of_time or done >= max_iter:
            tc = time.perf_counter()
            val, c, lam, how, info = _certify_bipartite(A, cs, ct, certificate=certificate, backend=backend)
            t_cert += time.perf_counter() - tc
            gap = _rel_gap(val, primal)
            if best is None or val < best[0]:
                best = (val, c, lam, how, info, primal, gap)
            stop = _stop_reason(gap, gap_tol, out_of_time, stagnated=int(it) < step)
            if stop:
                status = stop
                break
        chunk = min(2 * chunk, 200)
    val, c, lam, how, info, primal, gap = best
    total = time.perf_counter() - t0
    info = dict(info, history=history, primal_iterate=(S, T))
    return SDPResult(
        value=val, certified=True, primal=primal, gap=gap, c=c, lambda_upper=lam, method="mixing",
        certificate=how, status=status, n_iter=done, rank=k, time_solve=total - t_cert,
        time_certificate=t_cert, details=info,
    )


def sdp_primal_lower(A, *, iters=30, rank=None, seed=0, backend=None):
    """A cheap *lower* bound on ``SDP(P(A))``: ``tr(P V V^T)`` after ``iters`` mixing iterations.

    Any ``V`` with unit rows gives a feasible ``Z = V V^T``, so the value is a valid
    lower bound whatever the number of iterations (used to check orderings of bounds
    without paying for a certificate).
    """
    A = as_float_array("A", A, ndim=2, dtype=np.float64)
    be = get_backend(backend)
    m, d = A.shape
    k = default_rank(m + d) if rank is None else check_positive_int("rank", rank)
    rng = np.random.default_rng(seed)
    S, T = _random_unit_rows(rng, m, k), _random_unit_rows(rng, d, k)
    S_be, T_be, _ = be.sdp_mixing(be.asarray(A), be.asarray(S), be.asarray(T),
                                  check_positive_int("iters", iters), 0.0)
    S, T = be.to_numpy(S_be), be.to_numpy(T_be)
    return 2.0 * float(np.einsum("ij,ij->", S, A @ T))


def _solve_mixing_general(P, *, rank, gap_tol, max_iter, seed, time_limit, backend):
    """Row-by-row mixing method for a general symmetric ``P`` (small ``n``)."""
    n = P.shape[0]
    k = default_rank(n) if rank is None else check_positive_int("rank", rank)
    rng = np.random.default_rng(seed)
    V = _random_unit_rows(rng, n, k)
    Poff = P - np.diag(np.diag(P))
    dP = np.diag(P)
    t0 = time.perf_counter()
    best = None
    status = "max_iter"
    it = 0
    for it in range(1, max_iter + 1):
        for i in range(n):
            g = Poff[i] @ V
            ng = float(np.linalg.norm(g))
            if dP[i] >= 0 or ng >= -dP[i]:
                if ng > 0:
                    V[i] = g / ng
            else:  # interior maximiser of dP_i ||v||^2 + 2 g.v over the unit ball
                V[i] = g / (-dP[i])
        if it % 10 == 0 or it == max_iter:
            PV = P @ V
            primal = float(np.einsum("ij,ij->", V, PV))
            G = Poff @ V
            c = np.maximum(np.linalg.norm(G, axis=1) + dP, 0.0)
            val, lam = dual_bound(P, c, backend=backend)
            gap = _rel_gap(val, primal)
            if best is None or val < best[0]:
                best = (val, c, lam, primal, gap)
            stop = _stop_reason(gap, gap_tol, time_limit is not None and time.perf_counter() - t0 > time_limit)
            if stop:
                status = stop
                break
    if best is None:
        PV = P @ V
        primal = float(np.einsum("ij,ij->", V, PV))
        c = np.maximum(np.linalg.norm(Poff @ V, axis=1) + dP, 0.0)
        val, lam = dual_bound(P, c, backend=backend)
        best = (val, c, lam, primal, _rel_gap(val, primal))
    val, c, lam, primal, gap = best
    return SDPResult(
        value=val, certified=True, primal=primal, gap=gap, c=c, lambda_upper=lam, method="mixing",
        certificate="eigvalsh", status=status, n_iter=it, rank=k, time_solve=time.perf_counter() - t0,
        details={"general_P": True},
    )


def _feasible_primal(Z, P):
    """A feasible point from an approximate SCS solution: PSD projection, then diagonal scaling."""
    Z = 0.5 * (Z + Z.T)
    w, Q = np.linalg.eigh(Z)
    Z = (Q * np.maximum(w, 0)) @ Q.T
    dg = np.maximum(np.diag(Z), 1.0)
    s = 1.0 / np.sqrt(dg)
    Z = Z * s[:, None] * s[None, :]
    return float(np.sum(Z * P))


def _run_scs(prob, *, scs_eps, scs_max_iters, time_limit, verbose):
    """Solve the cvxpy problem ``prob`` with SCS (``eps_abs = eps_rel = scs_eps``); returns the seconds taken.

    SCS's warnings are silenced: its status is recorded, and nothing it returns is
    trusted without the dual certificate.
    """
    import cvxpy as cp

    opts = dict(eps_abs=scs_eps, eps_rel=scs_eps, max_iters=int(scs_max_iters), verbose=verbose)
    if time_limit is not None:
        opts["time_limit_secs"] = float(time_limit)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob.solve(solver=cp.SCS, **opts)
    return time.perf_counter() - t0


def _scs_failed(n, status, time_solve, details=None):
    """The result when SCS returns no solution: nothing certified, value ``+inf``."""
    return SDPResult(
        value=np.inf, certified=False, primal=-np.inf, gap=np.inf, c=np.full(n, np.nan),
        lambda_upper=np.inf, method="scs", certificate="none", status=status,
        time_solve=time_solve, details={} if details is None else details,
    )


def _solve_scs(A, P, *, scs_eps, scs_max_iters, time_limit, verbose, certificate, backend):
    import cvxpy as cp

    if P is None:
        Pm = bipartite_matrix(A)
    else:
        Pm = P
    n = Pm.shape[0]
    Z = cp.Variable((n, n), PSD=True)
    cons = [cp.diag(Z) <= 1]
    prob = cp.Problem(cp.Maximize(cp.trace(Pm @ Z)), cons)
    t0 = time.perf_counter()
    try:
        t_solve = _run_scs(prob, scs_eps=scs_eps, scs_max_iters=scs_max_iters, time_limit=time_limit,
                           verbose=verbose)
    except cp.error.SolverError as exc:  # pragma: no cover - SCS failure
        return _scs_failed(n, f"error: {exc}", time.perf_counter() - t0)
    status = str(prob.status)
    stats = prob.solver_stats
    details = {
        "scs_objective": None if prob.value is None else float(prob.value),
        "scs_iters": getattr(stats, "num_iters", None),
        "scs_solve_time": getattr(stats, "solve_time", None),
    }
    if Z.value is None or cons[0].dual_value is None:
        return _scs_failed(n, status, t_solve, details)
    tc = time.perf_counter()
    c = np.asarray(cons[0].dual_value, dtype=np.float64).reshape(-1)
    primal = _feasible_primal(np.asarray(Z.value), Pm)
    val, lam = dual_bound(Pm, c, backend=backend)
    how = "eigvalsh"
    details["raw_dual_bound"] = val
    if A is not None:
        m = A.shape[0]
        val2, c2, lam2, how2, info = _certify_bipartite(
            A, np.maximum(c[:m], 0), np.maximum(c[m:], 0), certificate=certificate, backend=backend
        )
        details["polished_dual_bound"] = val2
        if val2 < val:
            val, c, lam, how = val2, c2, lam2, how2
    t_cert = time.perf_counter() - tc
    return SDPResult(
        value=val, certified=True, primal=primal, gap=_rel_gap(val, primal), c=c,
        lambda_upper=lam, method="scs", certificate=how, status=status,
        n_iter=int(details["scs_iters"] or 0), rank=n, time_solve=t_solve, time_certificate=t_cert,
        details=details,
    )


# ---------------------------------------------------------------------------
# The ellipsoid SDP (a tighter relaxation, used by upper_bound(method="tight"))
# ---------------------------------------------------------------------------
def _sigma_dense(X):
    """``||X||_2`` by a dense symmetric eigenvalue of ``X X^T`` (or ``X^T X``); an estimate."""
    m, d = X.shape
    G = X @ X.T if m <= d else X.T @ X
    k = G.shape[0]
    lam = scipy.linalg.eigh(G, eigvals_only=True, subset_by_index=[k - 1, k - 1])[0]
    return float(math.sqrt(max(lam, 0.0)))


def _lambda_min_lower(H, W):
    """Lower estimate of ``lambda_min(L)`` (Kronecker eigenvalues, 1e-9 relative safety)."""
    from ..operators import smoothness_operator

    return smoothness_operator(H, W).lambda_min * (1 - 1e-9)


def _linv(g, H, W):
    from ..operators import m_power

    return np.asarray(m_power(g.reshape(1, H, W), -2)).reshape(-1)


def _mu_estimate(w, H, W, v0=None):
    """``lambda_max(L^-1 diag(w))`` (Perron root; simple), by ARPACK on ``diag(sqrt w) L^-1 diag(sqrt w)``."""
    sw = np.sqrt(w)
    d = w.size
    op = scipy.sparse.linalg.LinearOperator((d, d), matvec=lambda x: sw * _linv(sw * np.ravel(x), H, W),
                                            dtype=np.float64)
    try:
        return float(scipy.sparse.linalg.eigsh(op, k=1, which="LA", tol=1e-12, v0=v0,
                                               return_eigenvectors=False)[0])
    except Exception:  # pragma: no cover
        from ..operators import dense_smoothness_power

        Li = dense_smoothness_power(H, W, -1.0)
        return float(scipy.linalg.eigh(sw[:, None] * Li * sw[None, :], eigvals_only=True,
                                       subset_by_index=[d - 1, d - 1])[0])


def _certify_ellipsoid(B, H, W, cs, w, rho=None, prove=True):
    """Rigorous bound on the ellipsoid SDP from dual ``(c, w)`` (docstring of :func:`solve_ellipsoid_sdp`).

    With ``prove=False`` only the estimate ``2 sqrt(sigma^2 sum(c) mu(w))`` is returned
    (``(value, None, None, {})``), without the Cholesky proofs.
    """
    from ..smoothness import smoothness_matrix

    m, d = B.shape
    n = m + d
    lmin = _lambda_min_lower(H, W)
    cs = _floor(np.asarray(cs, dtype=np.float64))
    w = _floor(np.asarray(w, dtype=np.float64))
    sig = _sigma_dense(B / np.sqrt(cs)[:, None] / np.sqrt(w)[None, :])
    v0 = None if rho is None else np.sqrt(w) * np.maximum(rho, 1e-300)
    mu_w = _mu_estimate(w, H, W, v0=v0)
    if not prove:
        return 2.0 * sig * math.sqrt(float(cs.sum()) * mu_w), None, None, {}
    L = smoothness_matrix(H, W).toarray()
    slack = max(1e-9, 8 * n * _gamma(n + 1))
    info = {"sigma": sig}
    for _ in range(8):
        c1 = cs * sig * (1 + slack)
        w1 = w * sig * (1 + slack)
        mu1 = mu_w * sig * (1 + slack)
        alpha = math.sqrt(mu1 / c1.sum())
        c1, w1, mu1 = alpha * c1, w1 / alpha, mu1 / alpha
        mu1 = mu1 * (1 + slack)
        S1 = bipartite_matrix(B)
        S1[np.diag_indices(n)] -= np.concatenate([c1, w1])
        u1 = cholesky_upper(S1, 0.0)
        S2 = -mu1 * L
        S2[np.diag_indices(d)] += w1
        derr = 2 * _EPS * float(np.max(mu1 * np.diag(L) + w1))
        u2 = cholesky_upper(S2, 0.0, diag_err=derr)
        if u1 is not None and u2 is not None:
            val = (float(c1.sum()) + mu1 + max(u1, 0.0) * (m + 1.0 / lmin) + max(u2, 0.0) / lmin)
            val = val * (1 + 4 * (n + 4) * _EPS) + _TINY
            info.update(slack=slack, mu=mu1, u1=u1, u2=u2, lambda_min_lower=lmin)
            return val, np.concatenate([c1, w1]), mu1, info
        slack *= 10
    # Fall back to the eigenvalue route (always succeeds).
    c1, w1, mu1 = cs * sig, w * sig, mu_w * sig
    S1 = bipartite_matrix(B)
    S1[np.diag_indices(n)] -= np.concatenate([c1, w1])
    u1 = lambda_max_upper(S1)
    S2 = -mu1 * L
    S2[np.diag_indices(d)] += w1
    u2 = lambda_max_upper(S2) + 2 * _EPS * float(np.max(mu1 * np.diag(L) + w1))
    val = float(c1.sum()) + mu1 + max(u1, 0.0) * (m + 1.0 / lmin) + max(u2, 0.0) / lmin
    val = val * (1 + 4 * (n + 4) * _EPS) + _TINY
    info.update(mu=mu1, u1=u1, u2=u2, lambda_min_lower=lmin, fallback="eigvalsh")
    return val, np.concatenate([c1, w1]), mu1, info


def solve_ellipsoid_sdp(
    B,
    image_shape,
    *,
    method="mixing",
    rank=None,
    gap_tol=1e-5,
    max_iter=20000,
    inner=5,
    seed=0,
    scs_eps=1e-7,
    scs_max_iters=50000,
    time_limit=None,
    verbose=False,
    backend=None,
):
    r"""The ellipsoid SDP: the Section 4.1 relaxation with the box replaced by the true budget set.

    Problem. With ``B`` (``m x d``), ``L = M^T M`` on ``image_shape`` and
    ``P_B = [[0, B], [B^T, 0]]``,

    .. math::
        \mathrm{ESDP}(B) = \max\ \mathrm{tr}(P_B Z)\ \text{s.t.}\
        Z = \begin{bmatrix} Z_s & X \\ X^T & Z_u\end{bmatrix} \succeq 0,\
        \mathrm{diag}(Z_s) \le 1,\ \mathrm{diag}(Z_u) \le \mathrm{diag}(R),\
        R \succeq 0,\ \mathrm{tr}(L R) \le 1 .

    It relaxes ``max 2 s^T B u`` over ``||s||_inf <= 1`` and ``u`` in the *solid hull*
    ``K = {u : |u_i| <= |r_i| for some r with r^T L r <= 1}`` (``u = D r / const`` with the
    diagonal warp Jacobian ``D``, Section 4.1): take ``Z = (s, u)(s, u)^T``, ``R = |r||r|^T``,
    which is feasible because ``|r|^T L |r| <= r^T L r`` (``L`` has non-positive
    off-diagonal entries). It is never looser than the box SDP with
    ``A = B diag(lambda)`` (the box constraints are the special cases
    ``w = e_i / (L^-1)_ii`` of the dual below) nor than the spectral argument
    (``w = lambda_min(L) 1``).

    Solver (mixing). ``Z = V V^T`` with ``V = [S; diag(rho) U~]`` (unit rows ``S``, ``U~``)
    and ``R = rho rho^T``; since ``L`` is an M-matrix the best ``R`` for given row norms
    ``rho >= 0`` is rank one, so the problem is
    ``max 2 sum_ij B_ij rho_j <S_i, U~_j>`` s.t. ``rho^T L rho <= 1``. Blocks: ``(S, U~)``
    by ``inner`` iterations of the bipartite kernel ``sdp_mixing(B diag(rho), S, U~)``,
    then ``rho = L^-1 g / sqrt(g^T L^-1 g)`` with ``g_j = ||(B^T S)_j||`` (exact block
    maximiser; objective ``2 sqrt(g^T L^-1 g)``).

    Certificate (weak duality, any ``c``, ``w``, ``mu >= 0``)::

        ESDP <= sum(c+) + mu + lam1+ (m + 1/lambda_min(L)) + lam2+ / lambda_min(L)

    with ``lam1 >= lambda_max(P_B - diag(c, w))``, ``lam2 >= lambda_max(diag(w+) - mu L)``
    (because ``tr Z_s <= m``, ``tr Z_u <= tr R <= tr(LR)/lambda_min <= 1/lambda_min``).
    From the iterate: ``c_i = ||(B U)_i||``, ``w_j = g_j / rho_j``, both scaled by
    ``sigma = ||C^-1/2 B W^-1/2||`` (so ``diag(c, w) - P_B`` is PSD), ``mu`` the top
    eigenvalue of ``L^-1 diag(w)`` (its Perron root), blocks rebalanced; ``lam1``, ``lam2``
    are then proven ``~0`` by Cholesky factorisations with rounding margins.

    Parameters
    ----------
    B : array_like, shape (m, d)
    image_shape : tuple (H, W)
        ``H * W = d``; ``L`` is the Proposition 1 matrix of this grid (``d <= 4096``).
    method : {"mixing", "scs"}
        ``"scs"``: cvxpy + SCS on the problem above (reference, small problems).
    rank, gap_tol, max_iter, seed, scs_eps, scs_max_iters, time_limit, verbose, backend
        As in :func:`solve_sdp`.
    inner : int
        Kernel iterations between two ``rho`` updates.

    Returns
    -------
    SDPResult
        ``c`` holds ``(c, w)``; ``details["mu"]`` the ``mu``.
    """
    B = as_float_array("B", B, ndim=2, dtype=np.float64)
    m, d = B.shape
    if len(image_shape) != 2:
        raise ValueError(f"image_shape must be (H, W), got {image_shape!r}")
    H, W_ = (check_positive_int("image_shape", int(s)) for s in image_shape)
    if H * W_ != d:
        raise ValueError(f"image_shape {image_shape} does not match B's {d} columns")
    if d > 4096:
        raise ValueError(f"solve_ellipsoid_sdp needs a dense L; d = {d} > 4096")
    check_choice("method", method, ("mixing", "scs"))
    max_iter = check_positive_int("max_iter", max_iter)
    inner = check_positive_int("inner", inner)
    if method == "scs":
        return _solve_ellipsoid_scs(B, H, W_, scs_eps=scs_eps, scs_max_iters=scs_max_iters,
                                    time_limit=time_limit, verbose=verbose)
    be = get_backend(backend)
    n = m + d
    k = default_rank(n) if rank is None else check_positive_int("rank", rank)
    rng = np.random.default_rng(seed)
    S = _random_unit_rows(rng, m, k)
    GT = B.T @ S
    g = np.linalg.norm(GT, axis=1)
    Ut = _random_unit_rows(rng, d, k)
    h = _linv(g, H, W_)
    rho = h / math.sqrt(max(float(g @ h), _TINY))
    t0 = time.perf_counter()
    t_cert = 0.0
    done, since_check, check_every = 0, 0, 10
    best, status, history = None, "max_iter", []
    B_be = be.asarray(B)
    while done < max_iter:
        S_be, U_be, _ = be.sdp_mixing(be.asarray(B * rho[None, :]), be.asarray(S), be.asarray(Ut), inner, 0.0)
        S, Ut = be.to_numpy(S_be), be.to_numpy(U_be)
        GT = np.asarray(be.to_numpy(B_be.T @ be.asarray(S)))
        g = np.linalg.norm(GT, axis=1)
        h = _linv(g, H, W_)
        N = math.sqrt(max(float(g @ h), _TINY))
        rho = np.maximum(h / N, 0.0)
        done += inner
        since_check += inner
        if since_check >= check_every or done >= max_iter:
            since_check = 0
            check_every = min(2 * check_every, 200)
            primal = 2.0 * N
            U = rho[:, None] * Ut
            cs = np.linalg.norm(B @ U, axis=1)
            w = g / np.maximum(rho, _TINY)
            out_of_time = time_limit is not None and time.perf_counter() - t0 > time_limit
            est = _certify_ellipsoid(B, H, W_, cs, w, rho, prove=False)[0]
            est_gap = _rel_gap(est, primal)
            history.append((done, primal, est))
            if verbose:
                print(f"[ellipsoid] iter {done}: primal {primal:.10g} dual~ {est:.10g} gap~ {est_gap:.2e}")
            if est_gap <= 0.5 * gap_tol or out_of_time or done >= max_iter:
                tc = time.perf_counter()
                val, cw, mu, info = _certify_ellipsoid(B, H, W_, cs, w, rho)
                t_cert += time.perf_counter() - tc
                gap = _rel_gap(val, primal)  # primal = 2 N > 0
                if best is None or val < best[0]:
                    best = (val, cw, mu, info, primal, gap)
                stop = _stop_reason(gap, gap_tol, out_of_time)
                if stop:
                    status = stop
                    break
    val, cw, mu, info, primal, gap = best
    info = dict(info, history=history, rho=rho)
    total = time.perf_counter() - t0
    return SDPResult(
        value=val, certified=True, primal=primal, gap=gap, c=cw, lambda_upper=info.get("u1", np.nan),
        method="mixing", certificate="cholesky" if "fallback" not in info else "eigvalsh", status=status,
        n_iter=done, rank=k, time_solve=total - t_cert, time_certificate=t_cert, details=info,
    )


def _solve_ellipsoid_scs(B, H, W_, *, scs_eps, scs_max_iters, time_limit, verbose):
    import cvxpy as cp

    from ..smoothness import smoothness_matrix

    m, d = B.shape
    n = m + d
    L = smoothness_matrix(H, W_).toarray()
    P = bipartite_matrix(B)
    Z = cp.Variable((n, n), PSD=True)
    R = cp.Variable((d, d), PSD=True)
    cons = [cp.diag(Z)[:m] <= 1, cp.diag(Z)[m:] <= cp.diag(R), cp.trace(L @ R) <= 1]
    prob = cp.Problem(cp.Maximize(cp.trace(P @ Z)), cons)
    t_solve = _run_scs(prob, scs_eps=scs_eps, scs_max_iters=scs_max_iters, time_limit=time_limit, verbose=verbose)
    if Z.value is None:
        return _scs_failed(n, str(prob.status), t_solve)
    cs = np.maximum(np.asarray(cons[0].dual_value, dtype=np.float64).reshape(-1), 0)
    w = np.maximum(np.asarray(cons[1].dual_value, dtype=np.float64).reshape(-1), 0)
    tc = time.perf_counter()
    val, cw, mu, info = _certify_ellipsoid(B, H, W_, cs, w)
    info["scs_objective"] = float(prob.value)
    return SDPResult(value=val, certified=True, primal=float(prob.value), gap=(val - prob.value) / abs(prob.value),
                     c=cw, lambda_upper=info.get("u1", np.nan), method="scs", certificate="cholesky",
                     status=str(prob.status), rank=n, time_solve=t_solve,
                     time_certificate=time.perf_counter() - tc, details=info)
