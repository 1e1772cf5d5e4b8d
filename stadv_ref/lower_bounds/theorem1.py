r"""Theorem 1's starting input ``x* = pi_inf(W_d^-1 1)`` for a one-hidden-layer network (Section 3).

With ``x*`` and the Theorem flow of Eq. (6) (:func:`~.objectives.theorem_flow`),
``l~(x*, r*) = eps ||M^-1 diag(x*) W^T diag(v) dsigma(W x*)||`` (Theorem 1; [E14]:
``W^T diag(v)``). [E9]: ``W_d^-1`` needs ``rank W = d``, impossible for ``m < d``
(512 x 784): the pseudo-inverse ``x* = pi_inf(W^+ 1)`` is used and reported in the notes.
"""
from __future__ import annotations

import hashlib

import numpy as np
import scipy.linalg

from ..network import OneHiddenLayerNet

__all__ = ["theorem1_input"]

_X1_CACHE: dict = {}


def theorem1_input(net):
    """Theorem 1's input ``x* = pi_inf(W_d^-1 1)``, with the pseudo-inverse when ``m < d`` ([E9]).

    Parameters
    ----------
    net : OneHiddenLayerNet

    Returns
    -------
    x : ndarray, shape (H, W)
        ``||x||_inf = 1``.
    notes : list of str
        Which construction was used and how many hidden units ``x*`` activates.

    Notes
    -----
    ``m < d``: ``x* = pi_inf(W^+ 1)``; if ``W`` has full row rank, ``W x* = 1/||W^+ 1||_inf > 0``
    activates every unit (without hidden biases). ``m >= d`` and ``rank W = d``: ``W_d`` = the
    ``d`` rows chosen by a pivoted QR of ``W^T``, ``x* = pi_inf(W_d^-1 1)`` (the paper).
    Otherwise the pseudo-inverse, with a note.
    """
    if not isinstance(net, OneHiddenLayerNet):
        raise TypeError(f"net must be a OneHiddenLayerNet, got {type(net).__name__}")
    key = hashlib.sha1(net.W.tobytes() + net.b.tobytes() + repr(net.W.shape).encode()).hexdigest()
    if key in _X1_CACHE:
        x, notes = _X1_CACHE[key]
        return x.copy(), list(notes)
    W, b = net.W, net.b
    m, d = W.shape
    notes = []
    ones = np.ones(m)
    rank = int(np.linalg.matrix_rank(W))
    if m >= d and rank == d:
        _, _, piv = scipy.linalg.qr(W.T, pivoting=True, mode="economic")
        rows = np.sort(piv[:d])
        z = scipy.linalg.solve(W[rows], np.ones(d))
        notes.append(f"Theorem 1: rank-d submatrix W_d ({d} of {m} rows, pivoted QR), x* = pi_inf(W_d^-1 1)")
    else:
        z = scipy.linalg.lstsq(W, ones)[0]
        if m < d:
            notes.append(f"pseudo-inverse used: m = {m} < d = {d}, x* = pi_inf(W^+ 1) [E9]")
        else:
            notes.append(f"pseudo-inverse used: rank W = {rank} < d = {d}, Theorem 1's assumption fails [E9]")
        if rank < min(m, d) or (m < d and rank < m):
            notes.append(f"W has rank {rank} < m = {m}: W W^+ 1 != 1, not every unit is activated")
    big = float(np.abs(z).max())
    if not big > 0 or np.linalg.norm(W @ z) <= 1e-10 * np.sqrt(m):
        notes.append("W^+ 1 = 0 (1 is orthogonal to the range of W): x* = 1 used instead")
        x = np.ones(d)
    else:
        x = z / big
    if np.any(b != 0):
        notes.append("hidden biases b != 0: x* is built from W alone; dsigma uses W x + b")
    active = int((W @ x + b > 0).sum())
    notes.append(f"x* activates {active}/{m} hidden units")
    x = x.reshape(net.image_shape)
    if len(_X1_CACHE) > 16:
        _X1_CACHE.clear()
    _X1_CACHE[key] = (x.copy(), list(notes))
    return x, notes
