r"""Flows of the lower-bound attacks: the ellipsoid maximiser (Eqs. (6), (8), (12), (14)),
feasibility, the midpoints of Eqs. (7)/(13) and the exact partial derivatives of the warp.

* :func:`ellipsoid_argmax` -- the maximiser of ``s^T r`` over ``||M r|| <= eps``:
  ``r = eps M^-1 pi_2(M^-1 s)`` ([E4]: ``M`` symmetric, ``M^-1`` is
  :func:`stadv_ref.operators.m_power`), the r-step of Eqs. (6), (8), (12), (14);
* :func:`_feasible` -- a flow rescaled so that its computed budget norm (Eq. (3)) is ``<= eps``;
* :func:`midpoint_flows` -- ``r^(i) = (2i - 1)/(2n) r``, the midpoints of Eqs. (7)/(13);
* :func:`cell_flows`, :func:`partial_apply`, :func:`partial_adjoint` -- ``d g / d du`` and
  ``d g / d dv`` of the warp (Eq. (1)) and their adjoints in ``x``. On a cell of the sampling
  grid the warp is linear in each flow component, so the right partial derivative
  ``d g / d du`` equals ``warp(x, flow_a) - warp(x, flow_b)`` where ``flow_a``/``flow_b`` move
  the column coordinate to ``floor(u + du) + 1`` and ``floor(u + du)`` (the same for ``dv``
  with rows); its adjoint in ``x`` is ``warp_vjp_x(flow_a, .) - warp_vjp_x(flow_b, .)``.
  This gives the ``J_i^T`` of the x-update of Eqs. (7)/(13) exactly.

Every array operation on images goes through the dispatched public functions
(``warp``, ``warp_vjp_x``, ``m_power``, ``smoothness_norm``) without a ``backend``
argument, so the attacks run unchanged on whichever backend is current; :func:`_np`
brings results back to NumPy with the backend's ``to_numpy`` for the (cheap) bookkeeping.
"""
from __future__ import annotations

import numpy as np

from ..backend import as_numpy as _np
from ..operators import m_power, smoothness_norm
from ..transform import warp, warp_vjp_x

__all__ = ["ellipsoid_argmax", "midpoint_flows", "cell_flows", "partial_apply", "partial_adjoint"]


def _inv_l_quadratic(s):
    """``(L^-1 s, s^T L^-1 s)`` for a tied ``(H, W)`` or untied ``(2, H, W)`` field."""
    Ls = _np(m_power(s[None], -2))[0]
    return Ls, float((s * Ls).sum())


def ellipsoid_argmax(s, eps):
    """Maximiser of ``s^T r`` over ``||M r|| <= eps`` (Eqs. (6), (8), (12), (14)).

    ``r = eps M^-1 pi_2(M^-1 s) = eps L^-1 s / sqrt(s^T L^-1 s)`` ([E4]); the maximum is
    ``eps sqrt(s^T L^-1 s) = eps ||M^-1 s||``. For an untied ``s (2, H, W)`` the budget
    is ``||M du||^2 + ||M dv||^2 <= eps^2`` and the same formula holds per stacked field.

    Returns
    -------
    r : ndarray, shape of ``s``
    value : float
        ``eps ||M^-1 s||``.
    """
    Ls, q = _inv_l_quadratic(s)
    if not q > 0:
        return np.zeros_like(s), 0.0
    return eps * Ls / np.sqrt(q), eps * np.sqrt(q)


def _feasible(flow2, eps, tied):
    """Rescale a flow whose budget norm (Eq. (3)) exceeds ``eps`` by rounding; return (flow, norm).

    The returned ``norm`` is the computed ``||M r||`` of the returned flow and is
    ``<= eps`` (the flow is shrunk by a few ulps at a time until the computed norm
    passes; as a last resort it is set to 0, which is always feasible).
    """
    def norm(fl):
        f = fl[0] if tied else fl
        return float(_np(smoothness_norm(f[None]))[0])

    nrm = norm(flow2)
    if nrm > eps:
        flow2 = flow2 * (eps / nrm if nrm > 0 else 0.0)
        nrm = norm(flow2)
        shrink = 1e-15
        while nrm > eps and shrink < 1e-6:  # last ulps: shrink a hair more
            flow2 = flow2 * (1 - shrink)
            nrm = norm(flow2)
            shrink *= 4
        if nrm > eps:  # pragma: no cover - a norm off by more than 1e-6 relative
            flow2 = np.zeros_like(flow2)
            nrm = norm(flow2)
    return flow2, nrm


def midpoint_flows(flow2, n):
    """The midpoints ``r^(i) = (2i - 1)/(2n) r`` of Eqs. (7)/(13), shape (n, 2, H, W)."""
    z = (2.0 * np.arange(1, n + 1) - 1.0) / (2.0 * n)
    return z[:, None, None, None] * flow2[None]


def cell_flows(flows, axis):
    """Flows moving one sampling coordinate to the corners of its grid cell.

    Parameters
    ----------
    flows : ndarray, shape (N, 2, H, W)
    axis : {0, 1}
        0: the column coordinate (``du``), 1: the row coordinate (``dv``).

    Returns
    -------
    flow_hi, flow_lo : ndarray, shape (N, 2, H, W)
        Coordinate set to ``floor(c) + 1`` and ``floor(c)``, ``c = base + flow``. Then
        ``warp(x, flow_hi) - warp(x, flow_lo)`` is the right partial derivative of the warp
        w.r.t. that flow component (the convention of :mod:`stadv_ref.transform`).
    """
    _, _, H, W = flows.shape
    base = np.arange(W, dtype=np.float64)[None, None, :] if axis == 0 else np.arange(H, dtype=np.float64)[None, :, None]
    lo = np.floor(base + flows[:, axis])
    hi_f, lo_f = flows.copy(), flows.copy()
    hi_f[:, axis] = lo + 1.0 - base
    lo_f[:, axis] = lo - base
    return hi_f, lo_f


def partial_apply(x_rep, flows, axis):
    """``d g / d (du or dv)`` at ``flows`` applied to images ``x_rep (N, H, W)``."""
    hi_f, lo_f = cell_flows(flows, axis)
    return _np(warp(x_rep, hi_f)) - _np(warp(x_rep, lo_f))


def partial_adjoint(flows, w, axis):
    """Adjoint in ``x`` of :func:`partial_apply`: ``(d g / d flow_axis)^T w``, ``w (N, H, W)``."""
    hi_f, lo_f = cell_flows(flows, axis)
    return _np(warp_vjp_x(hi_f, w)) - _np(warp_vjp_x(lo_f, w))
