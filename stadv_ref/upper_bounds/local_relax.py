r"""Per-pixel linear relaxations of the bilinear warp, Eq. (1), over Proposition 2's box.

For an image ``x`` and a budget ``||M r|| <= eps`` (Eq. (3)), Proposition 2 confines
every flow component to ``|r_i| <= R_i = eps * lambda_i`` (``lambda_i = sqrt((L^-1)_ii)``,
:func:`stadv_ref.aabb_radii`). The functions here bound the warped value of each pixel
between two lines (tied flows) or planes (untied flows) over that box
(:class:`Relaxation`):

* tied, ``du = dv = r``:  ``a-_i r + lo_i <= x~_i(r) <= a+_i r + hi_i`` for ``|r| <= R_i``;
* untied: ``a-_i du + b-_i dv + lo_i <= x~_i(du, dv) <= a+_i du + b+_i dv + hi_i`` on the
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

For a given slope the exact warped value is evaluated at all these points and the offset is
their maximum (upper line) or minimum (lower line).

Slopes. Any slope gives a sound line; the choice only matters for tightness. ``r = 0`` is a
kink of every pixel (integer position: forward and backward differences differ), so the
single secant of the whole interval (issue #21's simplest construction) leaves a gap at
``r = 0`` on *both* sides. Each side picks its own slope among a few candidates (the secant,
the half-secants, the one-sided derivatives at 0, and 0; untied: per axis the centre-line
secant, the one-sided differences and 0) by the smallest offset plus
``SLOPE_COST * |slope| * R``: where the kink is concave the upper line through ``x~(0)`` with
a slope between the one-sided derivatives is exact at 0, likewise the lower line at a convex
kink. On 200 MNIST test images (784-500-10, tied, zero padding) this certifies 0.37 instead
of 0.28 of the images at ``eps = 1`` and 0.87 instead of 0.86 at 0.2.

The ReLU lines of the CROWN step (:func:`relu_lines`) and the output coefficients of the margins
(:func:`margin_coefficients`) are shared by both tightness levels of :mod:`.local`.

Rounding: the offsets are widened by ``1e-9 * (max_j |x_j| + sum |slope_i| R_i)``, far
above the few-ulp error of the evaluations. The caller should pass radii already inflated
against rounding of ``lambda`` and of the flow (see :mod:`.local`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Relaxation", "tied_relaxation", "untied_relaxation", "extended_warp", "relu_lines", "margin_coefficients",
           "RELAX_MARGIN", "SLOPE_COST", "SAFETY"]

RELAX_MARGIN = 1e-9
"""Relative safety margin added to the offsets ``lo``/``hi`` (see the module docstring)."""
SAFETY = 1e-9
"""Relative rounding margin of every summed bound and of the radii (see :mod:`.local`)."""
SLOPE_COST = 0.15
"""Weight of ``|slope| * R`` against the offset when a pixel's slope is chosen (a heuristic:
any slope is sound; a steeper line costs through the budget term)."""


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


@dataclasses.dataclass
class Relaxation:
    """Per-pixel lines (tied) or planes (untied) around the warped value.

    ``sum_c lower[c] * d_c + lo <= x~(d) <= sum_c upper[c] * d_c + hi`` for every displacement
    ``d`` in the pixel's box, with ``d = (r,)`` (tied) or ``d = (du, dv)`` (untied).

    Attributes
    ----------
    lower, upper : tuple of ndarray, each (N, H, W)
        Slopes: one array (tied) or two (``du``, ``dv``; untied).
    lo, hi : ndarray, shape (N, H, W)
        Offsets (exact extremes plus the margin :data:`RELAX_MARGIN`).
    """

    lower: tuple
    lo: np.ndarray
    upper: tuple
    hi: np.ndarray


def _ratio(num, den):
    """``num / den`` with 0 where ``den == 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _margin(X, slopes, R):
    """Rounding margin ``RELAX_MARGIN * (max |x| + sum |slope| * R)`` per pixel."""
    scale = np.abs(X).max(axis=(1, 2), keepdims=True) if X.size else 0.0
    return RELAX_MARGIN * (scale + sum(np.abs(s) for s in slopes) * R)


def _choose(candidates, extremes, R, upper):
    """Pick, per pixel, the candidate slope(s) with the best offset, penalised by ``SLOPE_COST``.

    ``candidates``: list of slope tuples; ``extremes``: the matching exact ``max`` (``upper``)
    or ``min`` of ``x~ - slopes . d``. Returns ``(slopes, offset)``.
    """
    sign = 1.0 if upper else -1.0
    score = np.stack([sign * e + SLOPE_COST * sum(np.abs(a) for a in c) * R for c, e in zip(candidates, extremes)])
    best = np.argmin(score, axis=0)[None]
    pick = lambda arrs: np.take_along_axis(np.stack(np.broadcast_arrays(*arrs)), best, axis=0)[0]  # noqa: E731
    slopes = tuple(pick([c[i] for c in candidates]) for i in range(len(candidates[0])))
    return slopes, pick(extremes)


def _one_sided(ext):
    """Forward and backward image differences at every pixel: ``(D+u, D-u, D+v, D-v)``."""
    x00, x01, x10, _ = ext.corners(0, 0)
    left = ext.corners(-1, 0)[0]
    up = ext.corners(0, -1)[0]
    return x01 - x00, x00 - left, x10 - x00, x00 - up


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
    Relaxation
        ``a_lo r + lo <= x~(r) <= a_hi r + hi`` for all ``|r| <= R``.

    Notes
    -----
    Candidate points per pixel: ``clip(j, -R, R)`` for ``j = -K, ..., K + 1`` (the two ends
    and every integer inside) and, per piece ``[k, k+1]``, the vertex of ``x~(r) - a r``
    clipped to the piece and the interval. All are points of ``[-R, R]``, so the extremes
    over them are the exact extremes of the piecewise quadratic. Candidate slopes: the
    secant, the two half-secants ``(x~(R) - x)/R`` and ``(x - x~(-R))/R``, the one-sided
    derivatives at ``r = 0`` (``r = 0`` is a kink: forward and backward differences) and 0.
    """
    K = _span(R)
    ext = _Extended(X, K, padding)
    pts = [np.clip(float(j), -R, R) for j in range(-K, K + 2)]
    f_pts = [ext.value(p, p) for p in pts]
    pieces = []
    for k in range(-K, K + 1):
        x00, x01, x10, x11 = ext.corners(k, k)
        valid = (k <= R) & (k + 1 >= -R)
        pieces.append((k, x00, x01 + x10 - 2 * x00, x00 - x01 - x10 + x11, valid,
                       np.clip(-R - k, 0.0, 1.0), np.clip(R - k, 0.0, 1.0)))
    dpu, dmu, dpv, dmv = _one_sided(ext)
    f_right, f_left = f_pts[-1], f_pts[0]
    candidates = [(_ratio(f_right - f_left, 2 * R),), (_ratio(f_right - X, R),), (_ratio(X - f_left, R),),
                  (dpu + dpv,), (dmu + dmv,), (np.zeros_like(X),)]
    highs, lows = [], []
    for (a,) in candidates:
        hi = np.full(X.shape, -np.inf)
        lo = np.full(X.shape, np.inf)
        for p, f in zip(pts, f_pts):
            h = f - a * p
            np.maximum(hi, h, out=hi)
            np.minimum(lo, h, out=lo)
        for k, q0, q1, q2, valid, tl, th in pieces:
            t = np.clip(_ratio(a - q1, 2 * np.abs(q2)) * np.sign(q2), tl, th)
            h = np.where(valid, q0 + t * (q1 + q2 * t) - a * (k + t), X)  # X: the value at r = 0
            np.maximum(hi, h, out=hi)
            np.minimum(lo, h, out=lo)
        highs.append(hi)
        lows.append(lo)
    upper, hi = _choose(candidates, highs, R, True)
    lower, lo = _choose(candidates, lows, R, False)
    return Relaxation(lower, lo - _margin(X, lower, R), upper, hi + _margin(X, upper, R))


def untied_relaxation(X, R, padding):
    """Planes enclosing the untied warp ``(du, dv) -> x~_i`` on ``[-R_i, R_i]^2``.

    Parameters
    ----------
    X : ndarray, shape (N, H, W), float64
    R : ndarray, shape (H, W)
    padding : {"zeros", "border"}

    Returns
    -------
    Relaxation
        ``a_lo du + b_lo dv + lo <= x~(du, dv) <= a_hi du + b_hi dv + hi`` on the whole square.

    Notes
    -----
    The extremes of ``x~ - a du - b dv`` are taken over the grid ``G x G``,
    ``G = {clip(j, -R, R) : j = -K, ..., K + 1}``: the corners of every rectangle
    ``cell ∩ box``, where the bilinear difference attains its extremes. Candidate slopes per
    axis: the centre-line secant, the forward and backward differences at 0, and 0 (all 16
    combinations).
    """
    K = _span(R)
    ext = _Extended(X, K, padding)
    grid = [np.clip(float(j), -R, R) for j in range(-K, K + 2)]
    DU = np.stack([np.broadcast_to(du, R.shape) for du in grid for _ in grid])[:, None]
    DV = np.stack([np.broadcast_to(dv, R.shape) for _ in grid for dv in grid])[:, None]
    F = np.stack([ext.value(du, dv) for du in grid for dv in grid])
    n = len(grid)
    # grid point (K, K) is (du, dv) = (0, 0); (n - 1, K) is (R, 0), (0, K) is (-R, 0)
    sec_u = _ratio(F[(n - 1) * n + K] - F[K], 2 * R)
    sec_v = _ratio(F[K * n + n - 1] - F[K * n], 2 * R)
    dpu, dmu, dpv, dmv = _one_sided(ext)
    zero = np.zeros_like(X)
    candidates = [(a, b) for a in (sec_u, dpu, dmu, zero) for b in (sec_v, dpv, dmv, zero)]
    highs, lows = [], []
    for a, b in candidates:
        h = F - a * DU - b * DV
        highs.append(h.max(axis=0))
        lows.append(h.min(axis=0))
    upper, hi = _choose(candidates, highs, R, True)
    lower, lo = _choose(candidates, lows, R, False)
    return Relaxation(lower, lo - _margin(X, lower, R), upper, hi + _margin(X, upper, R))


def relu_lines(l, u):
    """CROWN lines per unit: ``alpha z <= relu(z) <= s z + t`` on ``[l, u]`` (adaptive ``alpha``).

    Stable units are exact (``s = alpha = 1, t = 0`` if ``l >= 0``; all 0 if ``u <= 0``); an unstable
    unit gets the chord ``s = u / (u - l)``, ``t = -s l`` and ``alpha = 1`` if ``u >= -l`` else 0
    (any ``alpha`` in ``[0, 1]`` is sound).
    """
    unstable = (l < 0) & (u > 0)
    active = l >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        s_unst = np.where(unstable, u / np.where(unstable, u - l, 1.0), 0.0)
    s = np.where(unstable, s_unst, active.astype(float))
    t = np.where(unstable, -s_unst * l, 0.0)
    alpha = np.where(unstable, (u >= -l).astype(float), active.astype(float))
    return s, t, alpha


def margin_coefficients(net, y):
    """Output coefficients ``C (N, K', m)`` and constants ``c0 (N, K')`` of the margins bounded:
    ``f_i - f_y = C[n, i] . relu(z) + c0[n, i]`` (binary: the single margin ``-(2 y - 1) f``)."""
    if net.binary:
        sign = -(2.0 * y - 1.0)
        return sign[:, None, None] * net.V[None], sign[:, None] * net.c[None]
    return net.V[None] - net.V[y][:, None, :], net.c[None] - net.c[y][:, None]
