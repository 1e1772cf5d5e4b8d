r"""Per-pixel linear relaxations of the bilinear warp, Eq. (1), over Proposition 2's box.

For an image ``x`` and a budget ``||M r|| <= eps`` (Eq. (3)), Proposition 2 confines
every flow component to ``|r_i| <= R_i = eps * lambda_i`` (``lambda_i = sqrt((L^-1)_ii)``,
:func:`stadv_ref.aabb_radii`). The functions here bound the warped value of each pixel
between two parallel lines (tied flows) or planes (untied flows) over that box:

* tied, ``du = dv = r``:  ``a_i r + lo_i <= x~_i(r) <= a_i r + hi_i`` for ``|r| <= R_i``;
* untied: ``a_i du + b_i dv + lo_i <= x~_i(du, dv) <= a_i du + b_i dv + hi_i`` on the
  square ``[-R_i, R_i]^2``.

Why finitely many evaluations are exact
---------------------------------------
Both paddings are bilinear interpolation of an *extended* image: the zero extension
(``padding="zeros"``) or the edge-replicated one (``padding="border"``: clipping a
sampling coordinate to ``[0, W-1]`` gives the same value as interpolating the replicated
border). Pixel ``i`` sits at integer ``(u_i, v_i)``, so

* tied: on every unit piece ``r in [k, k+1]`` both coordinates share the fractional part
  ``t = r - k`` and ``x~_i = (1-t)^2 x_00 + t(1-t)(x_01 + x_10) + t^2 x_11``, a quadratic;
  ``x~_i(r) - a r`` is quadratic on each piece, so its extremes over ``[-R, R]`` lie at the
  interval's ends, the integers inside it, or a piece's vertex
  ``t* = (a - q_1) / (2 q_2)`` (``q_1 = x_01 + x_10 - 2 x_00``, ``q_2 = x_00 - x_01 - x_10 + x_11``);
* untied: on every unit cell ``x~_i`` is bilinear in ``(du, dv)``; a bilinear function minus
  a plane is bilinear, hence extreme at the corners of each rectangle
  ``cell ∩ box``: the grid ``G x G`` with ``G = {-R, the integers in (-R, R), R}``.

The exact warped value is evaluated at all these points and the offsets are their minimum
and maximum. Slopes: the secant ``a_i = (x~_i(R_i) - x~_i(-R_i)) / (2 R_i)`` (tied), the
centre-line secants in ``du`` and ``dv`` (untied); ``0`` where ``R_i = 0``. Any slope gives
a sound relaxation; the secant is the simple choice of issue #21's fast level.

Rounding: the offsets are widened by ``1e-9 * (max_j |x_j| + (|a_i| + |b_i|) R_i)``, far
above the few-ulp error of the evaluations. The caller should pass radii already inflated
against rounding of ``lambda`` and of the flow (see :mod:`.local`).
"""
from __future__ import annotations

import numpy as np

__all__ = ["tied_relaxation", "untied_relaxation", "extended_warp", "RELAX_MARGIN"]

RELAX_MARGIN = 1e-9
"""Relative safety margin added to the offsets ``lo``/``hi`` (see the module docstring)."""


class _Extended:
    """An image batch ``(N, H, W)`` padded by ``K + 1`` pixels (zeros or replicated edge).

    ``value(du, dv)`` is Eq. (1)'s bilinear warp at per-pixel displacements with
    ``|du|, |dv| <= K`` (arrays broadcastable to ``(N, H, W)``).
    """

    def __init__(self, X, K, padding):
        N, H, W = X.shape
        self.P = P = int(K) + 1
        self.K = int(K)
        mode = "constant" if padding == "zeros" else "edge"
        self.flat = np.pad(X, ((0, 0), (P, P), (P, P)), mode=mode).reshape(N, -1)
        self.Wp = W + 2 * P
        self.shape = (N, H, W)
        self.rows = np.arange(H)[:, None]
        self.cols = np.arange(W)[None, :]

    def corners(self, k, l):
        """``x_00, x_01, x_10, x_11`` of the cell whose corner is ``(row v + l, col u + k)``."""
        N, H, W = self.shape
        base = (self.P + self.rows + l) * self.Wp + (self.P + self.cols + k)
        base = np.broadcast_to(base, self.shape).reshape(N, -1)
        out = []
        for off in (0, 1, self.Wp, self.Wp + 1):
            out.append(np.take_along_axis(self.flat, base + off, axis=1).reshape(N, H, W))
        return out

    def value(self, du, dv):
        """Warped values at displacement ``(du, dv)`` (columns, rows) of every pixel."""
        du = np.broadcast_to(du, self.shape)
        dv = np.broadcast_to(dv, self.shape)
        k = np.clip(np.floor(du), -self.K, self.K)
        l_ = np.clip(np.floor(dv), -self.K, self.K)
        s, t = du - k, dv - l_
        x00, x01, x10, x11 = self.corners(k.astype(np.int64), l_.astype(np.int64))
        return (1 - t) * ((1 - s) * x00 + s * x01) + t * ((1 - s) * x10 + s * x11)


def _span(R):
    """``K = ceil(max R)``: every displacement in the box lies in ``[-K, K]``."""
    return int(np.ceil(float(R.max()))) if R.size else 0


def extended_warp(X, du, dv, padding):
    """Eq. (1) at per-pixel displacements, through the extended image (for tests and checks).

    Parameters
    ----------
    X : ndarray, shape (N, H, W)
    du, dv : ndarray, broadcastable to (N, H, W)
        Column and row displacements.
    padding : {"zeros", "border"}

    Returns
    -------
    ndarray, shape (N, H, W)
        The same values as :func:`stadv_ref.warp` with ``flow = (du, dv)``.
    """
    K = int(np.ceil(max(np.abs(du).max(), np.abs(dv).max(), 0.0)))
    return _Extended(X, K, padding).value(du, dv)


def _secant(ext, R, plus, minus):
    """``(x~(plus) - x~(minus)) / (2 R)`` with 0 where ``R = 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(R > 0, (ext.value(*plus) - ext.value(*minus)) / np.where(R > 0, 2 * R, 1.0), 0.0)


def _offsets(lo, hi, X, slope_mag, R):
    """Widen ``[lo, hi]`` by the rounding margin ``RELAX_MARGIN * (max |x| + slope_mag * R)``."""
    scale = np.abs(X).max(axis=(1, 2), keepdims=True) if X.size else 0.0
    delta = RELAX_MARGIN * (scale + slope_mag * R)
    return lo - delta, hi + delta


def tied_relaxation(X, R, padding):
    """Lines enclosing the tied warp ``r -> x~_i(r)`` on ``|r| <= R_i`` for every pixel.

    Parameters
    ----------
    X : ndarray, shape (N, H, W), float64
        Images (validated by the caller).
    R : ndarray, shape (H, W)
        Radii ``R_i >= 0`` (Proposition 2's ``eps * lambda_i``, possibly inflated).
    padding : {"zeros", "border"}

    Returns
    -------
    a, lo, hi : ndarray, each (N, H, W)
        ``a r + lo <= x~(r) <= a r + hi`` for all ``|r| <= R`` (exact extremes plus the
        margin :data:`RELAX_MARGIN`).

    Notes
    -----
    Candidates per pixel: ``clip(j, -R, R)`` for ``j = -K, ..., K + 1`` (the two ends and
    every integer inside) and, per piece ``[k, k+1]``, the vertex of ``x~(r) - a r``
    clipped to the piece and the interval. All are points of ``[-R, R]``, so the
    extremes over them are the exact extremes of the piecewise quadratic.
    """
    K = _span(R)
    ext = _Extended(X, K, padding)
    a = _secant(ext, R, (R, R), (-R, -R))
    lo = np.full(X.shape, np.inf)
    hi = np.full(X.shape, -np.inf)

    def visit(r):
        h = ext.value(r, r) - a * r
        np.minimum(lo, h, out=lo)
        np.maximum(hi, h, out=hi)

    for j in range(-K, K + 2):
        visit(np.clip(float(j), -R, R))
    for k in range(-K, K + 1):
        x00, x01, x10, x11 = ext.corners(k, k)
        q1 = x01 + x10 - 2 * x00
        q2 = x00 - x01 - x10 + x11
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(q2 != 0, (a - q1) / np.where(q2 != 0, 2 * q2, 1.0), 0.0)
        r = np.clip(k + np.clip(t, 0.0, 1.0), -R, R)
        visit(r)
    lo, hi = _offsets(lo, hi, X, np.abs(a), R)
    return a, lo, hi


def untied_relaxation(X, R, padding):
    """Planes enclosing the untied warp ``(du, dv) -> x~_i`` on ``[-R_i, R_i]^2``.

    Parameters
    ----------
    X : ndarray, shape (N, H, W), float64
    R : ndarray, shape (H, W)
    padding : {"zeros", "border"}

    Returns
    -------
    a, b, lo, hi : ndarray, each (N, H, W)
        ``a du + b dv + lo <= x~(du, dv) <= a du + b dv + hi`` on the whole square.

    Notes
    -----
    ``a``, ``b``: secants along ``dv = 0`` and ``du = 0``. The extremes of
    ``x~ - a du - b dv`` are taken over the grid ``G x G``,
    ``G = {clip(j, -R, R) : j = -K, ..., K + 1}``: the corners of every rectangle
    ``cell ∩ box``, where the bilinear difference attains its extremes.
    """
    K = _span(R)
    ext = _Extended(X, K, padding)
    zero = np.zeros_like(R)
    a = _secant(ext, R, (R, zero), (-R, zero))
    b = _secant(ext, R, (zero, R), (zero, -R))
    lo = np.full(X.shape, np.inf)
    hi = np.full(X.shape, -np.inf)
    grid = [np.clip(float(j), -R, R) for j in range(-K, K + 2)]
    for du in grid:
        for dv in grid:
            h = ext.value(du, dv) - a * du - b * dv
            np.minimum(lo, h, out=lo)
            np.maximum(hi, h, out=hi)
    lo, hi = _offsets(lo, hi, X, np.abs(a) + np.abs(b), R)
    return a, b, lo, hi
