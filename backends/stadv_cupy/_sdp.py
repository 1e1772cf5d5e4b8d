r"""Section 4.1 SDP kernels of the CuPy backend (array-module generic).

Semantics are those of the references :func:`stadv_ref.reference.sdp.sdp_mixing_reference`
and :func:`stadv_ref.reference.sdp.lambda_max_upper_reference` (and of the kernel
contract in :mod:`stadv_ref.kernels`):

* :func:`sdp_mixing` -- one iteration is ``S <- rownormalize(A T)`` then
  ``T <- rownormalize(A^T S)`` (a row of norm exactly 0 keeps its previous
  value); with ``phi_k = sum_j ||(A^T S)_j||`` stop after iteration ``k >= 2``
  when ``phi_k - phi_{k-1} <= tol |phi_k|`` or at ``k = max_iter``. On the GPU
  the iterations run in chunks: ``phi`` of every iteration of a chunk is kept
  on the device and copied to the host once per chunk (no round trip inside
  the loop); the iterate at the stopping iteration is returned exactly as if
  the loop had stopped there (at most ``chunk - 1`` iterations are computed
  and discarded).
* :func:`lambda_max_upper` -- a *guaranteed* upper bound: the top eigenvalue
  ``mu0`` by ``xp.linalg.eigvalsh`` is only an estimate; it is proved by a
  Cholesky factorisation of ``(mu0 + delta) I - S`` on the device (cuSOLVER
  ``potrf``; float64) with the rounding margin of
  :func:`stadv_ref.reference.sdp.cholesky_upper` (backward error of Cholesky, valid for
  any summation order and fused multiply-add), ``delta`` growing 8x until the
  factorisation succeeds.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from stadv_ref.reference.sdp import _EPS, _TINY, _gamma  # the reference's rounding constants (Higham)

CHUNK = 16
"""Iterations of :func:`sdp_mixing` per host check of the stopping rule."""


def _to_host(xp, a):
    return xp.asnumpy(a) if hasattr(xp, "asnumpy") else np.asarray(a)


def _rownormalize(xp, X, previous):
    """Rows of ``X`` scaled to unit norm; a row of norm exactly 0 keeps ``previous``'s row."""
    nrm = xp.sqrt((X * X).sum(axis=1))
    ok = nrm > 0
    safe = xp.where(ok, nrm, 1)
    return xp.where(ok[:, None], X / safe[:, None], previous), nrm


def sdp_mixing(xp, A, S, T, max_iter, tol, chunk=CHUNK):
    """Block mixing-method ascent for ``max 2 tr(S^T A T)`` over unit rows.

    Parameters
    ----------
    xp : module
    A : array, shape (m, d)
    S : array, shape (m, k)
    T : array, shape (d, k)
        Unit rows expected; ``T`` is used first.
    max_iter : int
    tol : float
    chunk : int
        Iterations between two host checks of the stopping rule.

    Returns
    -------
    S, T : array
        The new factors (new arrays; the inputs are not modified), dtype of the inputs.
    n_iter : int
    """
    f32 = all(getattr(a, "dtype", None) == np.float32 for a in (A, S, T))
    dt = np.float32 if f32 else np.float64
    A, S, T = (xp.asarray(a, dtype=dt) for a in (A, S, T))
    max_iter, tol = int(max_iter), float(tol)
    if max_iter < 1:
        return S.copy(), T.copy(), 0
    At = A.T
    k, phi_prev = 0, None
    while k < max_iter:
        c = min(int(chunk), max_iter - k)
        phis = xp.empty(c, dtype=np.float64)
        iterates = []
        for j in range(c):
            S, _ = _rownormalize(xp, A @ T, S)
            T, nrm = _rownormalize(xp, At @ S, T)
            phis[j] = nrm.sum(dtype=np.float64)  # stays on the device
            iterates.append((S, T))
        phis = _to_host(xp, phis)  # one transfer per chunk
        for j in range(c):
            it = k + j + 1
            phi = float(phis[j])
            if it >= 2 and phi - phi_prev <= tol * abs(phi):
                S, T = iterates[j]
                return S, T, it
            phi_prev = phi
        k += c
    return S, T, k


def _cholesky_succeeds(xp, K):
    """Whether the floating-point Cholesky factorisation of ``K`` runs to completion."""
    if xp is np:
        _, info = scipy.linalg.lapack.dpotrf(K, lower=1, clean=0, overwrite_a=0)
        return info == 0
    import cupyx

    try:
        with cupyx.errstate(linalg="raise"):
            R = xp.linalg.cholesky(K)
    except np.linalg.LinAlgError:
        return False
    return bool(xp.isfinite(R).all())


def cholesky_upper(xp, S, mu):
    """``mu + margin`` if the Cholesky factorisation of ``mu I - S`` succeeds, else ``None``.

    Same margin as :func:`stadv_ref.reference.sdp.cholesky_upper`:
    ``2 gamma_{n+1}/(1 - gamma_{n+1}) tr(K) + 2 u max_i K_ii + n * 1e-300``.
    """
    n = S.shape[0]
    K = -S
    idx = xp.arange(n)
    K[idx, idx] += mu
    d = _to_host(xp, K[idx, idx])
    if not np.all(d > 0):
        return None
    if not _cholesky_succeeds(xp, K):
        return None
    g = _gamma(n + 1)
    margin = 2.0 * g / (1.0 - g) * float(d.sum()) + 2.0 * _EPS * float(d.max()) + n * _TINY
    return float(mu) + margin


def lambda_max_upper(xp, S):
    """Guaranteed upper bound on ``lambda_max(S)`` of the dense symmetric ``S`` (Python float)."""
    S = xp.asarray(S, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"S must be a square matrix, got shape {S.shape}")
    n = S.shape[0]
    if n == 0:
        raise ValueError("S must be non-empty")
    if not bool(xp.isfinite(S).all()):
        raise ValueError("S contains NaN or inf")
    mu0 = float(xp.linalg.eigvalsh(S)[-1])
    scale = float(xp.linalg.norm(S)) + abs(mu0) * n + _TINY
    delta = 4.0 * _gamma(n + 1) * scale
    for _ in range(40):
        u = cholesky_upper(xp, S, mu0 + delta)
        if u is not None:
            return u
        delta *= 8.0
    # Unreachable in practice; Gershgorin is always a valid bound.
    Sh = _to_host(xp, S)
    r = np.abs(Sh).sum(axis=1) - np.abs(np.diag(Sh))
    return float(np.max(np.diag(Sh) + r) * (1 + 4 * n * _EPS) + _TINY)
