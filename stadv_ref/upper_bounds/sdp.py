r"""The SDP relaxation of Section 4.1: :func:`solve_sdp`, its mixing-method solvers, certified results.

Problem (Section 4.1, appendix 6.7; EQUATIONS.md "Section 4.1"). For ``A = diag(v) W diag(lambda)``
(``m x d``) and ``P = [[0, A], [A^T, 0]]`` (``n = m + d``),

.. math:: \mathrm{SDP}(P) = \max\ \mathrm{tr}(Z P)\quad \text{s.t.}\quad \mathrm{diag}(Z) \le 1,\ Z \succeq 0 .

Every bound reported as certified is the weak-duality bound of :mod:`.sdp_dual`
(EQUATIONS.md "Dual certificate") with ``lambda_max`` replaced by a *guaranteed* upper
estimate (:func:`cholesky_upper`, :func:`lambda_max_upper`): a solver status never
certifies anything.

Solvers
-------
* ``method="scs"``: cvxpy + SCS on the problem exactly as the paper states it (the
  reference, :mod:`.sdp_scs`). The dual of ``diag(Z) <= 1`` is the ``c`` that gets certified.
* ``method="mixing"``: the Burer-Monteiro / mixing method (Wang, Chang & Kolter 2017)
  in its bipartite block form: ``Z = V V^T``, ``V = [S; T]`` with unit rows; since
  ``P`` is bipartite all ``s``-rows can be updated at once, ``S <- rownormalize(A T)``,
  then all ``t``-rows, ``T <- rownormalize(A^T S)`` (two matrix products per
  iteration; the backend kernel ``sdp_mixing``). Rank ``k = ceil(sqrt(2 n)) + 1``
  (Barvinok-Pataki: some optimal ``Z`` has rank ``<= sqrt(2 n)``).
  The dual ``c`` is read off the iterate, ``c_i = ||(P V)_i||`` (``P V = [A T; A^T S]``),
  then polished and proven by a Cholesky factorisation (:func:`.sdp_dual._certify_bipartite`);
  the certified value is ``2 sigma sqrt(sum c_s sum c_t)`` up to a ``1e-9`` relative slack.

The tighter ellipsoid relaxation used by ``upper_bound(method="tight")`` is
:func:`solve_ellipsoid_sdp` (:mod:`.sdp_ellipsoid`). The names of :mod:`.sdp_dual`,
:mod:`.sdp_result`, :mod:`.sdp_ellipsoid` and the reference kernels of
:mod:`stadv_ref.reference.sdp` stay importable from here.
"""
from __future__ import annotations

import math
import time

import numpy as np
from threadpoolctl import threadpool_limits

from .._validate import as_float_array, check_choice, check_positive_int, check_seed
from ..backend import get_backend
from ..reference.sdp import (
    cholesky_upper,
    lambda_max_upper_reference,
    sdp_mixing_reference,
)
from .sdp_dual import (
    _certify_bipartite,
    _floor,
    _sigma_estimate,
    bipartite_matrix,
    default_rank,
    dual_bound,
    dual_bound_and_grad,
    lambda_max_upper,
)
from .sdp_ellipsoid import solve_ellipsoid_sdp
from .sdp_result import SDPResult, _check_solver_options, _random_unit_rows, _rel_gap, _stop_reason
from .sdp_scs import _solve_scs

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

    Raises
    ------
    TypeError
        ``A`` or ``P`` not numeric; ``gap_tol``, ``time_limit``, ``scs_eps`` not real numbers
        (bools are refused); ``max_iter``, ``scs_max_iters``, ``seed``, ``rank`` not integers.
    ValueError
        Neither or both of ``A`` and ``P``; ``A``/``P`` empty, not 2-D, not finite, ``P`` not
        square or symmetric; ``gap_tol``, ``time_limit``, ``scs_eps`` not positive and finite;
        ``max_iter``, ``scs_max_iters``, ``rank < 1``; ``seed < 0``; ``method`` or
        ``certificate`` not one of the choices; ``init`` of the wrong shapes.

    Notes
    -----
    The SCS status is recorded in ``status`` and never certifies: SCS's returned
    dual ``c`` is pushed through the same dual inequality (raw, and polished for a
    bipartite ``P``), and the smaller certified value is reported.
    """
    A, P = _split_problem(A, P)
    check_choice("method", method, ("mixing", "scs"))
    check_choice("certificate", certificate, ("auto", "cholesky", "eigvalsh"))
    gap_tol, max_iter, seed, time_limit, scs_eps, scs_max_iters = _check_solver_options(
        gap_tol, max_iter, seed, time_limit, scs_eps, scs_max_iters)
    if method == "scs":
        return _solve_scs(A, P, scs_eps=scs_eps, scs_max_iters=scs_max_iters, time_limit=time_limit,
                          verbose=verbose, certificate=certificate, backend=backend)
    # one BLAS thread: the mixing sweeps are many small products, where a second OpenBLAS thread only
    # spins; on the 784-500 MNIST pair (1, 0) of `nt` on a shared 2-core machine: 0.55-0.61 s vs 1.36-2.64 s
    # with the default 2 threads, same value (benchmarks/bench_threads.py, README "Default threads")
    with threadpool_limits(limits=1, user_api="blas"):
        if A is not None:
            return _solve_mixing_bipartite(A, rank=rank, gap_tol=gap_tol, max_iter=max_iter, seed=seed,
                                           certificate=certificate, init=init, time_limit=time_limit,
                                           verbose=verbose, backend=backend)
        return _solve_mixing_general(P, rank=rank, gap_tol=gap_tol, max_iter=max_iter, seed=seed,
                                     time_limit=time_limit, backend=backend)


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
    rng = np.random.default_rng(check_seed("seed", seed))
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
