r"""Per-image certificates, tight level (issue #21, deliverable 2(b)): kink relaxations and the V-lemma.

Where the fast bound of :mod:`.local` loses at large budgets. Every pixel's warped value
bends at ``r = 0`` (a kink: the forward and backward image differences differ), and a line
that holds over the pixel's whole interval ``|r_i| <= eps lambda_i`` pays the bend over the
whole interval. The ellipsoid maximum then adds these per-pixel costs as if every pixel could
sit at the end of its interval at once: a box bound in disguise. Flows with ``||M r|| <= eps``
cannot (on MNIST at ``eps = 1`` the attack's worst flows have mean ``|r_i|`` 0.12 against
``eps lambda_i`` = 0.55). Three sound steps replace the fast ones:

1. **Kink relaxation** per pixel (:func:`tied_kinks`, :func:`untied_kinks`):
   ``x~_i(r) <= b_i + a_i r + c_i |r|`` and ``-x~_i(r) <= b'_i + a'_i r + c'_i |r|`` with
   ``c, c' >= 0`` (untied: ``a_u du + c_u |du| + a_v dv + c_v |dv|``). From the half-secants
   ``s+ = (x~(R) - x~(0)) / R`` and ``s- = (x~(0) - x~(-R)) / R`` (per axis untied): a V-shaped
   kink (``s+ > s-``) gets ``a = (s+ + s-) / 2``, ``c = (s+ - s-) / 2`` (exact at ``-R, 0, R``),
   a concave one ``c = 0`` and the slope in ``[s+, s-]`` closest to 0. The offsets ``b`` are the
   exact maxima of ``x~ - a r - c |r|`` over the interval: the function is quadratic (tied) or
   bilinear (untied) on every unit piece and ``|r|`` is linear there, so the candidate points of
   :mod:`.local_relax` (ends, integers, vertices; the grid ``G x G``) suffice.
2. **V-lemma.** For ``c >= 0``,
   ``max_{||M r|| <= eps} a^T r + c^T |r| <= eps sqrt(a^T L^-1 a + 2 c^T |L^-1 a| + c^T L^-1 c)``.
   Proof: ``c^T |r| = max_sigma (c o sigma)^T r`` over sign vectors, so the maximum is
   ``max_sigma eps ||M^-1 (a + c o sigma)||`` ([E4]); ``L`` is positive definite with
   non-positive off-diagonal entries (Prop. 1), so ``L^-1 >= 0`` entrywise (an M-matrix) and
   ``(c o sigma)^T L^-1 (c o sigma) <= c^T L^-1 c``, ``(c o sigma)^T L^-1 a <= c^T |L^-1 a|``.
   The kink part alone is exact (``r ∝ L^-1 c >= 0`` attains it): a smooth flow adds the
   kink costs coherently, ``eps ||M^-1 c||``, instead of the fast bound's
   ``sum_i c_i eps lambda_i`` (about 3x larger for costs spread over a digit's stroke).
   Untied: the sum of the two components' forms under one square root.
3. **Pre-activation bounds** of every unit the fast bound leaves unstable: the V-lemma with
   ``a = W_j^+ o a + W_j^- o a'`` (``W^+ = max(W, 0)``, ``W^- = max(-W, 0)``), likewise ``c`` and
   the offsets, intersected with the fast bounds. **CROWN** back-substitution as in
   :mod:`.local` on these bounds, its margin coefficients ``w = lambda^T W`` bounded by the
   V-lemma, and the lower ReLU slopes ``alpha`` of the entries still ``>= 0`` optimised by
   :data:`ALPHA_STEPS` projected Adam steps on the bound itself (alpha-CROWN; any
   ``alpha in [0, 1]`` is sound and the smallest value met is kept).

The quadratic forms are the backend kernel ``kink_forms``
(:func:`stadv_ref.reference.local.kink_forms_reference`). The result is the elementwise minimum
with the fast bound.

Measured (``benchmarks/results/local.json``: 784-500-10 trained on the full MNIST training set,
1,000 test images, tied, zero padding; certified fast / tight / accuracy under attack): 0.940 /
0.969 / 0.975 at ``eps = 0.2``, 0.596 / 0.905 / 0.964 at 0.5, 0.016 / 0.483 / 0.929 at 1 (on 100
images the alpha steps add 0.03 at 1, the rest is steps 1-2). Also tried and dropped: per-unit optimised slopes (L-BFGS on the dual,
5-10 % narrower pre-activation intervals at 50x the cost), quadratic (S-lemma) terms, concave
kinks as ``-d r^2 / R`` in an S-procedure (3-5 %, a sparse factorisation per unit), optimal
transport of concave kinks onto convex neighbours (20 % narrower at a per-unit SOCP).

Rounding: sums carry the ``SAFETY`` margin of :mod:`.local` (relative ``1e-9`` of the
magnitudes summed, radii inflated); the offsets ``b`` the margin of :mod:`.local_relax`; the
quadratic form ``Q`` is raised by ``quad_margin(H, W) (sqrt(a^T L^-1 a) + sqrt(c^T L^-1 c))^2``,
an a-priori bound of the error of the eigenbasis products (``64 u (H + W) H W lambda_max /
lambda_min``, about ``1e-7`` at 28x28; ``|c^T (L^-1 a)~ - c^T L^-1 a|`` is bounded through
``||a||_inf <= sqrt(lambda_max) ||M^-1 a||`` and ``||c||_1 <= sqrt(H W lambda_max) ||M^-1 c||``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..backend import get_backend
from ..operators import m_power, smoothness_operator
from .local_relax import SAFETY, _Extended, _margin, _ratio, _span, margin_coefficients, relu_lines

__all__ = ["KinkRelaxation", "tied_kinks", "untied_kinks", "kink_maximum", "tight_chunk_bounds", "quad_margin",
           "ALPHA_STEPS", "ALPHA_LR"]

ALPHA_STEPS = 20
"""Projected Adam steps on the lower ReLU slopes of the entries the bound has not made negative."""
ALPHA_LR = 0.1
"""Initial Adam step on ``alpha in [0, 1]`` (decays linearly to 1e-3)."""


@dataclasses.dataclass
class KinkRelaxation:
    """Per-pixel kink bounds: ``x~ <= b_up + sum_k a_up[k] d_k + c_up[k] |d_k|`` and
    ``-x~ <= b_lo + sum_k a_lo[k] d_k + c_lo[k] |d_k|`` on the pixel's box, with ``d = (r,)``
    (tied) or ``(du, dv)`` (untied); every array ``(N, H*W)``, ``c >= 0``."""

    a_up: tuple
    c_up: tuple
    b_up: np.ndarray
    a_lo: tuple
    c_lo: tuple
    b_lo: np.ndarray


def _kink_slopes(p, m):
    """``(a, c)`` from the right and left half-secants ``p``, ``m`` (module docstring, step 1)."""
    v = p > m
    small = np.clip(0.0, np.minimum(p, m), np.maximum(p, m))
    return np.where(v, 0.5 * (p + m), small), np.where(v, 0.5 * (p - m), 0.0)


def _flat(N, *arrays):
    return tuple(a.reshape(N, -1) for a in arrays)


def tied_kinks(X, R, padding):
    """Kink bounds of the tied warp ``r -> x~_i(r)`` on ``|r| <= R_i`` for every pixel.

    Parameters
    ----------
    X : ndarray, shape (N, H, W), float64
    R : ndarray, shape (H, W)
        Radii ``R_i >= 0`` (inflated against rounding by the caller).
    padding : {"zeros", "border"}

    Returns
    -------
    KinkRelaxation
        One component (``r``).
    """
    N = X.shape[0]
    K = _span(R)
    ext = _Extended(X, K, padding)
    sp, sm = _ratio(ext.value(R, R) - X, R), _ratio(X - ext.value(-R, -R), R)
    pieces = []
    for k in range(-K, K + 1):
        x00, x01, x10, x11 = ext.corners(k, k)
        pieces.append((k, x00, x01 + x10 - 2 * x00, x00 - x01 - x10 + x11, (k <= R) & (k + 1 >= -R),
                       np.clip(-R - k, 0.0, 1.0), np.clip(R - k, 0.0, 1.0)))
    sides = []
    for sgn in (1.0, -1.0):
        a, c = _kink_slopes(sgn * sp, sgn * sm)
        b = np.full(X.shape, -np.inf)
        for k, q0, q1, q2, valid, tl, th in pieces:  # on the piece r = k + t, |r| = sg * r
            g = a + (1.0 if k >= 0 else -1.0) * c
            c0, c1, c2 = sgn * q0 - g * k, sgn * q1 - g, sgn * q2
            for t in (tl, th, np.clip(_ratio(c1, -2.0 * c2), tl, th)):
                np.maximum(b, np.where(valid, c0 + t * (c1 + c2 * t), -np.inf), out=b)
        sides.append((_flat(N, a), _flat(N, c), (b + _margin(X, (a, c), R)).reshape(N, -1)))
    return KinkRelaxation(*sides[0], *sides[1])


def untied_kinks(X, R, padding):
    """Kink bounds of the untied warp ``(du, dv) -> x~_i`` on ``[-R_i, R_i]^2`` for every pixel.

    Parameters and return as :func:`tied_kinks` (two components, ``du`` and ``dv``).
    The offsets are the extremes over the grid ``G x G`` (``G`` holds ``-R, 0, R`` and the
    integers in between), the corners of every rectangle on which the difference is bilinear.
    """
    N = X.shape[0]
    K = _span(R)
    ext = _Extended(X, K, padding)
    grid = [np.clip(float(j), -R, R) for j in range(-K, K + 2)]  # grid[K] = 0, grid[0] = -R, grid[-1] = R
    n = len(grid)
    DU = np.stack([np.broadcast_to(du, R.shape) for du in grid for _ in grid])[:, None]
    DV = np.stack([np.broadcast_to(dv, R.shape) for _ in grid for dv in grid])[:, None]
    F = np.stack([ext.value(du, dv) for du in grid for dv in grid])
    spu, smu = _ratio(F[(n - 1) * n + K] - X, R), _ratio(X - F[K], R)
    spv, smv = _ratio(F[K * n + n - 1] - X, R), _ratio(X - F[K * n], R)
    sides = []
    for sgn in (1.0, -1.0):
        (au, cu), (av, cv) = _kink_slopes(sgn * spu, sgn * smu), _kink_slopes(sgn * spv, sgn * smv)
        b = (sgn * F - au * DU - cu * np.abs(DU) - av * DV - cv * np.abs(DV)).max(axis=0)
        sides.append((_flat(N, au, av), _flat(N, cu, cv), (b + _margin(X, (au, cu, av, cv), R)).reshape(N, -1)))
    return KinkRelaxation(*sides[0], *sides[1])


def quad_margin(H, W):
    """Relative margin of the computed quadratic forms (module docstring, rounding)."""
    op = smoothness_operator(H, W)
    return 64 * np.finfo(float).eps * (H + W) * H * W * op.lambda_max / op.lambda_min


def kink_maximum(be, P, Q, kr, swap, n_idx, j_idx, eps, H, W):
    """V-lemma bound ``eps sqrt(Q)`` (rounding margin included) for the pairs ``(n_idx, j_idx)``.

    Field of pair ``b``: ``a = P[j] o a_up[n] + Q[j] o a_lo[n]`` (``swap``: ``a_lo`` and ``a_up``
    exchanged, the bound of ``-w``), likewise ``c``; summed over the flow's components.
    Returns ``(values, sqrt(Q))`` as NumPy arrays of shape ``(B,)``.
    """
    q = np.zeros(len(n_idx))
    scale = np.zeros(len(n_idx))
    for a1, a2, c1, c2 in zip(kr.a_up, kr.a_lo, kr.c_up, kr.c_lo):
        if swap:
            a1, a2, c1, c2 = a2, a1, c2, c1
        qa, cross, qc = (be.to_numpy(v) for v in be.kink_forms(P, Q, a1, a2, c1, c2, n_idx, j_idx, H, W))
        q += qa + 2.0 * cross + qc
        scale += (np.sqrt(np.maximum(qa, 0.0)) + np.sqrt(np.maximum(qc, 0.0))) ** 2
    root = np.sqrt(np.maximum(q, 0.0) + quad_margin(H, W) * scale)
    return eps * (1 + SAFETY) * root, root


def _preactivation(be, net, kr, eps, l, u):
    """Steps 2-3: V-lemma bounds of the units ``l < 0 < u``, intersected with ``[l, u]``."""
    H, W = net.image_shape
    P, Q = np.maximum(net.W, 0.0), np.maximum(-net.W, 0.0)
    n_idx, j_idx = np.nonzero((l < 0) & (u > 0))
    l, u = l.copy(), u.copy()
    for swap, out in ((False, u), (True, l)):
        if swap:  # a unit the new upper bound makes inactive needs no lower bound
            keep = u[n_idx, j_idx] > 0
            n_idx, j_idx = n_idx[keep], j_idx[keep]
        if n_idx.size == 0:
            break
        b1, b2 = (kr.b_lo, kr.b_up) if swap else (kr.b_up, kr.b_lo)
        off = (b1 @ P.T + b2 @ Q.T)[n_idx, j_idx]
        mag = np.abs(net.b[j_idx]) + (np.abs(b1) @ P.T + np.abs(b2) @ Q.T)[n_idx, j_idx]
        ell, _ = kink_maximum(be, P, Q, kr, swap, n_idx, j_idx, eps, H, W)
        reach = off + ell + SAFETY * (mag + ell)
        if swap:
            out[n_idx, j_idx] = np.maximum(out[n_idx, j_idx], net.b[j_idx] - reach)
        else:
            out[n_idx, j_idx] = np.minimum(out[n_idx, j_idx], net.b[j_idx] + reach)
    return l, u


def _evaluate(be, net, kr, eps, lines, C, c0, img, alpha, zmag, grad):
    """Bounds of the entries ``(C[e], c0[e])`` of images ``img[e]`` (rounding margins included),
    and with ``grad`` the gradient of the (unrounded) bound in ``alpha``."""
    H, W = net.image_shape
    s, t = lines[0][img], lines[1][img]
    lam = np.where(C > 0, C * s, C * alpha)
    up_t = np.where(C > 0, C * t, 0.0)
    w = lam @ net.W
    wp, wn = np.maximum(w, 0.0), np.maximum(-w, 0.0)
    rows = np.arange(len(img))
    ell, root = kink_maximum(be, wp, wn, kr, False, img, rows, eps, H, W)
    off = (wp * kr.b_up[img] + wn * kr.b_lo[img]).sum(axis=1)
    mag = (np.abs(c0) + np.abs(up_t).sum(axis=1) + (np.abs(lam) * zmag[img]).sum(axis=1)
           + (wp * np.abs(kr.b_up[img]) + wn * np.abs(kr.b_lo[img])).sum(axis=1) + ell)
    value = c0 + up_t.sum(axis=1) + lam @ net.b + off + ell + SAFETY * mag
    if not grad:
        return value, None
    k = (eps / np.maximum(root, 1e-300))[:, None]
    g_up, g_lo = kr.b_up[img].copy(), kr.b_lo[img].copy()
    for a1, a2, c1, c2 in zip(kr.a_up, kr.a_lo, kr.c_up, kr.c_lo):
        a = wp * a1[img] + wn * a2[img]
        c = wp * c1[img] + wn * c2[img]
        La, Lc = (np.asarray(m_power(f.reshape(-1, H, W), -2)).reshape(f.shape) for f in (a, c))
        Ls = np.asarray(m_power((c * np.sign(La)).reshape(-1, H, W), -2)).reshape(c.shape)
        ga, gc = k * (La + Ls), k * (np.abs(La) + Lc)
        g_up += a1[img] * ga + c1[img] * gc
        g_lo += a2[img] * ga + c2[img] * gc
    gw = np.where(w > 0, g_up, -g_lo)
    return value, C * (gw @ net.W.T + net.b)


def _final(be, net, X, y, kr, eps, l, u, steps):
    """Step 3's CROWN bound for every class, alpha steps for the entries still ``>= 0``."""
    C, c0 = margin_coefficients(net, y)
    N, K, m = C.shape
    img = np.repeat(np.arange(N), K)
    C, c0 = C.reshape(N * K, m), c0.reshape(-1)
    s, t, alpha0 = relu_lines(l, u)
    z0 = X.reshape(N, -1) @ net.W.T + net.b
    clean = (C * np.maximum(z0, 0.0)[img]).sum(axis=1) + c0
    zmag = np.abs(net.b) + np.abs(X).reshape(N, -1).max(axis=1)[:, None] * np.abs(net.W).sum(axis=1)
    free = (C < 0) & ((l < 0) & (u > 0))[img]  # the optimised slopes
    alpha = alpha0[img]
    best, _ = _evaluate(be, net, kr, eps, (s, t), C, c0, img, alpha, zmag, False)
    act = np.nonzero((best >= 0) & (clean < 0) & free.any(axis=1))[0]
    m1, m2 = np.zeros((len(act), m)), np.zeros((len(act), m))
    alpha = alpha[act]
    for it in range(steps + 1):
        if act.size == 0:
            break
        val, g = _evaluate(be, net, kr, eps, (s, t), C[act], c0[act], img[act], alpha, zmag, it < steps)
        best[act] = np.minimum(best[act], val)
        if it == steps:
            break
        keep = best[act] >= 0
        act, alpha, g, m1, m2 = act[keep], alpha[keep], g[keep], m1[keep], m2[keep]
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        lr = ALPHA_LR * (1 - it / steps) + 1e-3
        step = lr * (m1 / (1 - 0.9 ** (it + 1))) / (np.sqrt(m2 / (1 - 0.999 ** (it + 1))) + 1e-12)
        alpha = np.where(free[act], np.clip(alpha - step, 0.0, 1.0), alpha)
    return best.reshape(N, K)


def tight_chunk_bounds(net, X, y, eps, R, flow, padding, l, u, *, backend=None, alpha_steps=ALPHA_STEPS):
    """Tight-level bounds of one chunk of images (module docstring), before the minimum with fast.

    Parameters
    ----------
    net : OneHiddenLayerNet
    X : ndarray, shape (N, H, W), float64
        Validated images.
    y : ndarray of int, shape (N,)
    eps : float
    R : ndarray, shape (H, W)
        Inflated Proposition 2 radii (:func:`.local.box_radii`).
    flow : {"tied", "untied"}
    padding : {"zeros", "border"}
    l, u : ndarray, shape (N, m)
        Sound pre-activation bounds (the fast level's).
    backend : str or backend object, optional
        Where the kernel ``kink_forms`` runs (default: the current backend).
    alpha_steps : int

    Returns
    -------
    ndarray, shape (N, K)
        Sound upper bounds on the class margins (the ``y`` entries are not meaningful).
    """
    kr = (tied_kinks if flow == "tied" else untied_kinks)(X, R, padding)
    be = get_backend(backend)
    l, u = _preactivation(be, net, kr, eps, l, u)
    return _final(be, net, X, y, kr, eps, l, u, alpha_steps)
