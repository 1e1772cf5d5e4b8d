r"""The ellipsoid SDP: the Section 4.1 relaxation over the true budget set (``upper_bound(method="tight")``).

:func:`solve_ellipsoid_sdp` replaces the Proposition 2 box around ``{r : ||M r|| <= 1}`` by the
set itself (its solid hull; ``L = M^T M`` of Proposition 1), solves the relaxation with a
block mixing method and certifies it by weak duality with two Cholesky proofs (the
problem, solver and certificate are documented in :func:`solve_ellipsoid_sdp`). It is
never looser than the box SDP of :mod:`.sdp` nor than the sound spectral bound.
"""
from __future__ import annotations

import math
import time

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from .._validate import as_float_array, check_choice, check_image_shape, check_positive_int
from ..backend import get_backend
from ..operators import dense_smoothness_power, m_power, smoothness_operator
from ..reference.sdp import _EPS, _TINY, _gamma, cholesky_upper
from ..smoothness import smoothness_matrix
from .sdp_dual import _floor, _sigma_dense, bipartite_matrix, default_rank, lambda_max_upper
from .sdp_result import SDPResult, _check_solver_options, _random_unit_rows, _rel_gap, _stop_reason
from .sdp_scs import _run_scs, _scs_failed

__all__ = ["solve_ellipsoid_sdp"]


def _lambda_min_lower(H, W):
    """Lower estimate of ``lambda_min(L)`` (Kronecker eigenvalues, 1e-9 relative safety)."""
    return smoothness_operator(H, W).lambda_min * (1 - 1e-9)


def _linv(g, H, W):
    """``L^-1 g`` for ``g`` on the ``H x W`` grid (``M^-2``, Proposition 1)."""
    return np.asarray(m_power(g.reshape(1, H, W), -2)).reshape(-1)


def _mu_estimate(w, H, W, v0=None):
    """``lambda_max(L^-1 diag(w))`` (Perron root; simple), by ARPACK on ``diag(sqrt w) L^-1 diag(sqrt w)``.

    ``v0`` is the ARPACK start vector; by default ``sqrt(w)`` (positive, like the Perron
    vector; a fixed start keeps the result deterministic, unlike ARPACK's random one).
    """
    sw = np.sqrt(w)
    if v0 is None:
        v0 = sw
    d = w.size
    op = scipy.sparse.linalg.LinearOperator((d, d), matvec=lambda x: sw * _linv(sw * np.ravel(x), H, W),
                                            dtype=np.float64)
    try:
        return float(scipy.sparse.linalg.eigsh(op, k=1, which="LA", tol=1e-12, v0=v0,
                                               return_eigenvectors=False)[0])
    except Exception:  # pragma: no cover
        Li = dense_smoothness_power(H, W, -1.0)
        return float(scipy.linalg.eigh(sw[:, None] * Li * sw[None, :], eigvals_only=True,
                                       subset_by_index=[d - 1, d - 1])[0])


def _certify_ellipsoid(B, H, W, cs, w, rho=None, prove=True):
    """Rigorous bound on the ellipsoid SDP from dual ``(c, w)`` (docstring of :func:`solve_ellipsoid_sdp`).

    With ``prove=False`` only the estimate ``2 sqrt(sigma^2 sum(c) mu(w))`` is returned
    (``(value, None, None, {})``), without the Cholesky proofs.
    """
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

    Raises
    ------
    TypeError
        ``B`` not numeric; ``image_shape`` not a pair of integers (floats are refused); the
        solver options of the wrong type, as in :func:`solve_sdp`; ``inner`` not an integer.
    ValueError
        ``B`` empty, not 2-D or not finite; ``image_shape`` not positive or ``H * W`` not the
        number of columns of ``B``; ``d > 4096``; the solver options out of range, as in
        :func:`solve_sdp`; ``inner < 1``.
    """
    B = as_float_array("B", B, ndim=2, dtype=np.float64)
    m, d = B.shape
    if B.size == 0:
        raise ValueError(f"B must be non-empty, got shape {B.shape}")
    H, W_ = check_image_shape("image_shape", image_shape)
    if H * W_ != d:
        raise ValueError(f"image_shape {image_shape} does not match B's {d} columns")
    if d > 4096:
        raise ValueError(f"solve_ellipsoid_sdp needs a dense L; d = {d} > 4096")
    check_choice("method", method, ("mixing", "scs"))
    gap_tol, max_iter, seed, time_limit, scs_eps, scs_max_iters = _check_solver_options(
        gap_tol, max_iter, seed, time_limit, scs_eps, scs_max_iters)
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
