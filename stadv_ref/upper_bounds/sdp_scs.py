"""The reference solver of the Section 4.1 box SDP: cvxpy + SCS on the problem as the paper states it.

``SDP(P) = max tr(Z P) s.t. diag(Z) <= 1, Z psd`` (EQUATIONS.md, "Section 4.1"). The dual of
``diag(Z) <= 1`` returned by SCS is pushed through the certified dual inequality of
:mod:`.sdp_dual` (raw, and polished for a bipartite ``P``): SCS's status never certifies.
:func:`_run_scs` and :func:`_scs_failed` are shared with the ellipsoid SDP (:mod:`.sdp_ellipsoid`).
cvxpy is an optional dependency, imported where used.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from .sdp_dual import _certify_bipartite, bipartite_matrix, dual_bound
from .sdp_result import SDPResult, _rel_gap


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

