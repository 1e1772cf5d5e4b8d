r"""Section 4.1 reference kernels: the bipartite mixing-method ascent and a proven ``lambda_max`` bound.

* :func:`sdp_mixing_reference` -- the backend kernel ``sdp_mixing`` (block mixing method).
* :func:`cholesky_upper`, :func:`lambda_max_certificate`, :func:`lambda_max_upper_reference`
  -- an upper bound on ``lambda_max`` proved by a floating-point Cholesky factorisation
  with the backward-error margin of Demmel 1989 / Higham Thm 10.3 (see
  :mod:`stadv_ref.upper_bounds.sdp` for how the solvers use them).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

__all__ = [
    "sdp_mixing_reference",
    "cholesky_upper",
    "lambda_max_certificate",
    "lambda_max_upper_reference",
]

_EPS = np.finfo(np.float64).eps / 2  # unit roundoff u = 2^-53
_TINY = 1e-300


def _gamma(k):
    """``gamma_k = k u / (1 - k u)`` (Higham's notation)."""
    ku = k * _EPS
    if ku >= 0.5:
        raise ValueError(f"matrix too large for the rounding analysis (n = {k})")
    return ku / (1 - ku)


def _rownormalize(X, previous):
    nrm = np.sqrt(np.einsum("ij,ij->i", X, X))
    ok = nrm > 0
    out = np.array(previous, copy=True)
    out[ok] = X[ok] / nrm[ok, None]
    return out, nrm


def sdp_mixing_reference(A, S, T, max_iter, tol):
    """Reference kernel: block mixing-method ascent for ``max 2 tr(S^T A T)`` over unit rows.

    One iteration is ``S <- rownormalize(A T)`` then ``T <- rownormalize(A^T S)``
    (rows of norm exactly 0 keep their previous value). With
    ``phi_k = sum_j ||(A^T S)_j||`` after iteration ``k``, stop after iteration
    ``k >= 2`` when ``phi_k - phi_{k-1} <= tol * |phi_k|`` or at ``k = max_iter``.

    Parameters
    ----------
    A : ndarray, shape (m, d)
    S : ndarray, shape (m, k)
    T : ndarray, shape (d, k)
    max_iter : int
    tol : float

    Returns
    -------
    S, T : ndarray
        New factors (copies; the inputs are not modified).
    n_iter : int
    """
    S = np.array(S, copy=True)
    T = np.array(T, copy=True)
    phi_prev = None
    k = 0
    for k in range(1, int(max_iter) + 1):
        S, _ = _rownormalize(A @ T, S)
        T, nrm = _rownormalize(A.T @ S, T)
        phi = float(nrm.sum())
        if k >= 2 and phi - phi_prev <= tol * abs(phi):
            break
        phi_prev = phi
    return S, T, k


def cholesky_upper(S, mu=0.0, *, diag_err=None):
    """Guaranteed upper bound on ``lambda_max(S)`` *if* ``mu I - S`` is (numerically) positive definite.

    Forms ``K = mu I - S`` (only the diagonal is rounded; the off-diagonal is
    ``-S`` exactly) and runs LAPACK's Cholesky factorisation on it. If it runs to
    completion, ``lambda_min(K_exact) >= -margin`` with
    ``margin = 2 gamma_{n+1}/(1 - gamma_{n+1}) tr(K) + 2 u max_i |K_ii| + diag_err``,
    so ``lambda_max(S) <= mu + margin`` rigorously (module docstring).

    Parameters
    ----------
    S : ndarray, shape (n, n)
        Symmetric (only the lower triangle is read by the factorisation; the
        caller guarantees symmetry).
    mu : float
        Candidate bound.
    diag_err : float, optional
        Additional bound on rounding the caller made on the diagonal of ``S``.

    Returns
    -------
    float or None
        ``mu + margin``, or ``None`` when the factorisation fails.
    """
    n = S.shape[0]
    K = -np.asarray(S, dtype=np.float64)
    idx = np.diag_indices(n)
    K[idx] += mu
    d = K[idx]
    if not np.all(d > 0):
        return None
    _, info = scipy.linalg.lapack.dpotrf(K, lower=1, clean=0, overwrite_a=1)
    if info != 0:
        return None
    g = _gamma(n + 1)
    margin = 2.0 * g / (1.0 - g) * float(d.sum()) + 2.0 * _EPS * float(d.max()) + n * _TINY
    if diag_err:
        margin += float(diag_err)
    return float(mu) + margin


def _square_finite(S):
    """``S`` as a float64 array, checked to be a non-empty finite square matrix."""
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"S must be a square matrix, got shape {S.shape}")
    if not np.all(np.isfinite(S)):
        raise ValueError("S contains NaN or inf")
    if S.shape[0] == 0:
        raise ValueError("S must be non-empty")
    return S


def lambda_max_certificate(S, mu0):
    """Turn an estimate ``mu0`` of ``lambda_max(S)`` into a guaranteed upper bound.

    :func:`cholesky_upper` is tried at ``mu = mu0 + delta``, ``delta`` starting at
    ``4 gamma_{n+1} (n |mu0| + ||S||_F)`` and growing 8x until the factorisation
    succeeds; the estimate's accuracy only affects how tight the bound is, never
    its validity. Shared by the reference and the CPU backends, which differ only
    in how they estimate ``mu0``.

    Parameters
    ----------
    S : ndarray, shape (n, n)
        Symmetric, finite (checked by the callers).
    mu0 : float
        Estimate of the largest eigenvalue.

    Returns
    -------
    float
    """
    n = S.shape[0]
    scale = float(np.linalg.norm(S)) + abs(mu0) * n + _TINY
    delta = 4.0 * _gamma(n + 1) * scale
    for _ in range(40):
        u = cholesky_upper(S, mu0 + delta)
        if u is not None:
            return u
        delta *= 8.0
    # Unreachable in practice; Gershgorin is always a valid bound.
    r = np.abs(S).sum(axis=1) - np.abs(np.diag(S))
    return float(np.max(np.diag(S) + r) * (1 + 4 * n * _EPS) + _TINY)


def lambda_max_upper_reference(S):
    """Reference kernel: guaranteed upper bound on the largest eigenvalue of a dense symmetric ``S``.

    The top eigenvalue ``mu0`` by dense LAPACK (``scipy.linalg.eigh`` restricted to the
    last index) is only an estimate; :func:`lambda_max_certificate` turns it into a
    proof by a Cholesky factorisation of ``(mu0 + delta) I - S``.

    Returns
    -------
    float
    """
    S = _square_finite(S)
    n = S.shape[0]
    mu0 = float(scipy.linalg.eigh(S, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0])
    return lambda_max_certificate(S, mu0)
