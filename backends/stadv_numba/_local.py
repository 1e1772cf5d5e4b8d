r"""Numba kernel ``kink_forms`` (issue #21): the quadratic forms of the per-image certificate.

Same semantics as :func:`stadv_ref.reference.local.kink_forms_reference`. The reference
gathers every pair's field ``a = P[j] * A1[n] + Q[j] * A2[n]`` into a ``(B, H, W)`` array
(memory-bound: half the time of the fast certificate) before the stacked eigenbasis
products. Here each thread builds one pair's field at a time in an ``H x W`` scratch and
transforms it in place: ``T = Q_H^T a Q_W`` as two products in AXPY form (the inner loop
runs over ``W`` contiguous values, so it vectorises without ``fastmath``), skipping the
zero rows of the field -- pixels where the image is flat have zero slopes, most of an MNIST
digit's background. ``a^T L^-1 a = sum T^2 / lambda``; with a second field ``c`` also
``c^T L^-1 c`` and ``c^T |L^-1 a|`` (``L^-1 a = Q_H (T / lambda) Q_W^T``, evaluated only
where ``c`` is nonzero). Pairs are sorted by unit (its weights stay in cache) and split into
contiguous chunks over the threads.
"""
from __future__ import annotations

import functools

import numba
import numpy as np
from numba import njit, prange

from stadv_ref.operators import smoothness_operator

__all__ = ["kink_forms"]

_OPTS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@njit(**_OPTS)
def _build(P, Q, X1, X2, j, n, F, rows):
    """``F = P[j] * X1[n] + Q[j] * X2[n]`` as an ``H x W`` field; ``rows[h]``: row ``h`` is nonzero."""
    H, W = F.shape
    for h in range(H):
        nz = False
        for w in range(W):
            i = h * W + w
            v = P[j, i] * X1[n, i] + Q[j, i] * X2[n, i]
            F[h, w] = v
            nz = nz or v != 0.0
        rows[h] = nz


@njit(**_OPTS)
def _spectral(F, rows, QH, QW, T1, T):
    """``T = Q_H^T F Q_W`` (zero rows of ``F`` skipped)."""
    H, W = F.shape
    T[:, :] = 0.0
    for h in range(H):
        if not rows[h]:
            continue
        T1[h, :] = 0.0
        for w in range(W):
            f = F[h, w]
            if f != 0.0:
                for col in range(W):
                    T1[h, col] += f * QW[w, col]
        for k in range(H):
            q = QH[h, k]
            for col in range(W):
                T[k, col] += q * T1[h, col]


@njit(**_OPTS)
def _cross(S, G, rows, QH, QW, t1):
    """``sum G * |Q_H S Q_W^T|`` over the nonzero entries of ``G`` only (``rows``: nonzero rows)."""
    H, W = S.shape
    s = 0.0
    for h in range(H):
        if not rows[h]:
            continue
        t1[:] = 0.0
        for k in range(H):
            q = QH[h, k]
            for col in range(W):
                t1[col] += q * S[k, col]
        for w in range(W):
            g = G[h, w]
            if g != 0.0:
                u = 0.0
                for col in range(W):
                    u += t1[col] * QW[w, col]
                s += g * abs(u)
    return s


@njit(parallel=True, **_OPTS)
def _forms_kernel(P, Q, A1, A2, C1, C2, has_c, order, n_idx, j_idx, QH, QW, inv, n_chunks, qa, cross, qc):
    B = n_idx.shape[0]
    H, W = inv.shape
    for ch in prange(n_chunks):
        F = np.empty((H, W))
        G = np.empty((H, W))
        T1 = np.empty((H, W))
        T = np.empty((H, W))
        t1 = np.empty(W)
        rows = np.empty(H, dtype=np.bool_)
        for o in range(ch * B // n_chunks, (ch + 1) * B // n_chunks):
            b = order[o]
            n, j = n_idx[b], j_idx[b]
            _build(P, Q, A1, A2, j, n, F, rows)
            _spectral(F, rows, QH, QW, T1, T)
            s = 0.0
            for k in range(H):
                for col in range(W):
                    v = T[k, col] * inv[k, col]
                    s += T[k, col] * v
                    T[k, col] = v
            qa[b] = s
            if not has_c:
                continue
            _build(P, Q, C1, C2, j, n, G, rows)
            cross[b] = _cross(T, G, rows, QH, QW, t1)
            _spectral(G, rows, QH, QW, T1, T)
            s = 0.0
            for k in range(H):
                for col in range(W):
                    s += T[k, col] * T[k, col] * inv[k, col]
            qc[b] = s


@functools.lru_cache(maxsize=16)
def _basis(H, W):
    op = smoothness_operator(H, W)
    QH, QW = np.ascontiguousarray(op.QH), np.ascontiguousarray(op.QW)
    return QH, QW, np.ascontiguousarray(1.0 / op.eigvals)


def _f64(a):
    return np.ascontiguousarray(a, dtype=np.float64)


def kink_forms(P, Q, A1, A2, C1, C2, n_idx, j_idx, H, W):
    """``(a^T L^-1 a, c^T |L^-1 a|, c^T L^-1 c)`` per pair (see :mod:`stadv_ref.reference.local`)."""
    P, Q, A1, A2 = _f64(P), _f64(Q), _f64(A1), _f64(A2)
    has_c = C1 is not None
    C1, C2 = (_f64(C1), _f64(C2)) if has_c else (A1, A2)
    n_idx = np.ascontiguousarray(n_idx, dtype=np.int64)
    j_idx = np.ascontiguousarray(j_idx, dtype=np.int64)
    B = n_idx.shape[0]
    qa, cross, qc = np.zeros(B), np.zeros(B), np.zeros(B)
    if B:
        n_chunks = max(1, min(B, 4 * numba.get_num_threads()))
        order = np.argsort(j_idx, kind="stable")  # pairs of one unit in a row: its weights stay in cache
        _forms_kernel(P, Q, A1, A2, C1, C2, has_c, order, n_idx, j_idx, *_basis(int(H), int(W)), n_chunks,
                      qa, cross, qc)
    return qa, cross, qc
