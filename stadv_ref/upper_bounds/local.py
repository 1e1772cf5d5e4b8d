r"""Per-image certificates for flows with ``||M r|| <= eps`` (issue #21; the fast level, and the
entry point of the tight level of :mod:`.local_tight`).

:func:`local_pair_bounds` bounds, for each image ``x_n`` with label ``y_n`` and each class
``i``, the worst margin ``max_{||M r|| <= eps} f_i(g(r; x_n)) - f_{y_n}(g(r; x_n))`` of a
one-hidden-layer ReLU network ``f = V relu(W x~ + b) + c`` over the warp ``x~ = g(r; x)`` of
Eq. (1) and the budget of Eq. (3). Unlike the global bounds of :mod:`.closed_form` (one
constant per class pair for every input), it uses the image. The certification rule of
[E13] becomes: ``x_n`` is certified at ``eps`` when every entry ``i != y_n`` is ``< 0``.

Construction (three sound steps)
--------------------------------
1. **Per-pixel relaxation** (:mod:`.local_relax`): over Proposition 2's box
   ``|r_i| <= eps lambda_i`` each warped pixel lies between two lines in ``r_i`` (tied) or
   planes in ``(du_i, dv_i)`` (untied): ``A-_i r_i + lo_i <= x~_i <= A+_i r_i + hi_i``.
2. **Pre-activation bounds** of ``z = W x~ + b``: a linear function ``g^T r + const`` has
   maximum ``const + eps sqrt(g^T L^-1 g)`` over ``||M r|| <= eps`` (the argmax is
   ``r* = eps L^-1 g / sqrt(g^T L^-1 g)``, [E4]); ``g^T L^-1 g = ||Lambda^-1/2 Q^T g||^2`` with
   the Kronecker eigendecomposition ``L = Q Lambda Q^T`` (:func:`stadv_ref.smoothness_operator`).
   Untied: ``eps sqrt(g_u^T L^-1 g_u + g_v^T L^-1 g_v)``. The box bound ``sum_i |g_i| eps lambda_i``
   is also valid; the smaller of the two is used. For ``u_j`` the coefficients are
   ``g = W_j^+ o A+ + W_j^- o A-`` with offsets ``W_j^+ hi + W_j^- lo`` (``W^+ = max(W, 0)``);
   for ``l_j`` the reverse. The ellipsoid is evaluated only for units the box leaves unstable.
3. **CROWN back-substitution** for the margin ``(V_i - V_y)^T relu(z) + c_i - c_y``: stable
   units exactly; on unstable units (``l < 0 < u``) the upper line
   ``relu(z) <= u (z - l) / (u - l)`` where the output coefficient is positive, and the lower
   line ``relu(z) >= alpha z`` (``alpha = 1`` if ``u >= -l`` else ``0``) where it is negative.
   This gives ``w^T x~ + mu``; step 1 turns it into
   ``(w^+ o A+ + w^- o A-)^T r + w^+ . hi + w^- . lo + mu`` and step 2's closed form (or the
   box) maximises the linear part.

The ellipsoid maxima of step 2 (the time of the fast bound at large ``eps``) are the backend
kernel ``kink_forms`` (:func:`stadv_ref.reference.local.kink_forms_reference`; a Numba kernel in
the ``numba`` backend). ``tightness="tight"`` returns the elementwise minimum of this bound and
the one of :mod:`.local_tight` (kink relaxations, the V-lemma, optimised ReLU slopes).

Rounding: every bound is raised (lower bounds lowered) by ``1e-9`` times the sum of the
absolute values of the terms it adds up (an a-priori bound of the float64 summation error
is ``n u < 1e-9`` times that sum for ``n < 9e6`` terms); the radii are inflated by
``1 + 1e-9`` (against rounding of ``lambda`` and of a flow's budget), and the per-pixel
offsets carry :data:`.local_relax.RELAX_MARGIN`.
"""
from __future__ import annotations

import numpy as np

from .._validate import (
    as_float_array,
    as_images,
    check_budget,
    check_choice,
    check_input_range,
    check_labels,
    check_positive_int,
)
from ..backend import get_backend
from ..network import OneHiddenLayerNet
from ..operators import aabb_radii, smoothness_operator
from ..transform import PADDINGS
from .local_relax import SAFETY, Relaxation, margin_coefficients, relu_lines, tied_relaxation, untied_relaxation
from .local_tight import tight_chunk_bounds

__all__ = ["local_pair_bounds", "ellipsoid_max", "box_radii", "FLOWS", "TIGHTNESS", "SAFETY"]

FLOWS = ("tied", "untied")
"""Flow models: tied ``du = dv = r``, ``||M r|| <= eps``; untied ``||M du||^2 + ||M dv||^2 <= eps^2``."""
TIGHTNESS = ("fast", "tight")
"""Tightness levels of :func:`local_pair_bounds`: the closed form below, or :mod:`.local_tight`."""


def _inv_quad(fields, op):
    """``g^T L^-1 g`` for every field ``g`` of ``fields (B, H, W)`` (Kronecker eigenbasis).

    ``T = Q_H^T G Q_W`` (stacked 2-D products, faster here than one tall GEMM), then
    ``sum_kl T_kl^2 / (a_k + b_l)``. Peak memory: two arrays of ``B * H * W`` float64.
    """
    B = fields.shape[0]
    T = op.QH.T @ fields @ op.QW
    np.square(T, out=T)
    return T.reshape(B, -1) @ (1.0 / op.eigvals).ravel()


def ellipsoid_max(g, eps, *, untied=False):
    """Closed-form maximum of ``g^T r`` over the budget ``||M r|| <= eps`` (Eq. (3), [E4]).

    Parameters
    ----------
    g : array_like, shape (..., H, W), or (..., 2, H, W) with ``untied=True``
        Coefficients of a tied flow ``r``, or of an untied flow ``(du, dv)``.
    eps : float
    untied : bool
        Maximise ``g_u^T du + g_v^T dv`` over ``||M du||^2 + ||M dv||^2 <= eps^2``.

    Returns
    -------
    ndarray, shape ``g.shape[:-2]`` (``g.shape[:-3]`` untied)
        ``eps * sqrt(g^T L^-1 g)`` (untied: ``eps * sqrt(g_u^T L^-1 g_u + g_v^T L^-1 g_v)``).

    Notes
    -----
    In ``s = M r`` the budget is the ball ``||s|| <= eps`` and ``g^T r = (M^-1 g)^T s``, so by
    Cauchy-Schwarz the maximum is ``eps ||M^-1 g|| = eps sqrt(g^T L^-1 g)``, attained at
    ``r* = eps L^-1 g / sqrt(g^T L^-1 g)``. ``g^T L^-1 g = ||Lambda^-1/2 Q^T g||^2`` with the
    Kronecker eigendecomposition ``L = Q Lambda Q^T`` (two small GEMMs per field).
    """
    g = as_float_array("g", g, dtype=np.float64)
    eps = check_budget("eps", eps)
    if g.ndim < (3 if untied else 2) or (untied and g.shape[-3] != 2):
        raise ValueError(f"g must have shape (..., {'2, ' if untied else ''}H, W), got {g.shape}")
    H, W = g.shape[-2:]
    op = smoothness_operator(H, W)
    q = _inv_quad(g.reshape(-1, H, W), op)
    q = q.reshape(g.shape[:-2])
    if untied:
        q = q.sum(axis=-1)
    return eps * np.sqrt(np.maximum(q, 0.0))


def box_radii(H, W, eps):
    """Proposition 2's radii ``eps * lambda_i`` inflated by ``1 + SAFETY`` (against rounding of
    ``lambda`` and of a flow's budget): every flow with ``||M r|| <= eps`` has ``|r_i| <= R_i``."""
    return aabb_radii(H, W, eps) * (1 + SAFETY)


def _validate(net, X, y, eps, flow, padding, tightness, input_range, chunk_size):
    if not isinstance(net, OneHiddenLayerNet):
        raise TypeError(f"net must be a OneHiddenLayerNet, got {type(net).__name__}")
    check_choice("flow", flow, FLOWS)
    check_choice("padding", padding, PADDINGS)
    check_choice("tightness", tightness, TIGHTNESS)
    lo, hi = check_input_range("input_range", input_range)
    eps = check_budget("eps", eps)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    H, W = net.image_shape
    X = as_images("X", X, ndim=(2, 3), dtype=np.float64)
    if X.ndim == 2:
        if X.shape[1] != H * W:
            raise ValueError(f"X must have shape (N, {H}, {W}) or (N, {H * W}), got {X.shape}")
        X = X.reshape(-1, H, W)
    elif X.shape[1:] != (H, W):
        raise ValueError(f"X must hold {H}x{W} images (net.image_shape), got shape {X.shape}")
    if X.size and (X.min() < lo or X.max() > hi):
        raise ValueError(
            f"X must lie in input_range=({lo:g}, {hi:g}); got values in [{X.min():g}, {X.max():g}] "
            "(a certificate for an image outside the range the network is certified on would be false)")
    N = X.shape[0]
    if np.ndim(y) == 1 and len(y) != N:
        raise ValueError(f"X and y disagree: X holds {N} image(s), y holds {len(y)} label(s)")
    y_arr = check_labels("y", y, N, 2 if net.binary else net.n_classes).astype(np.int64)
    return X, y_arr, eps, chunk_size


def _preactivation_bounds(net, rel, R, eps, op, backend=None):
    """Bounds ``l <= W x~ + b <= u`` over the relaxation ``rel`` of step 1 and the budget (step 2).

    The box bound is computed for every unit; the ellipsoid maximum only where the box
    leaves the unit unstable (a stable unit's ReLU is exact whatever its bounds), by the
    backend kernel ``kink_forms`` (:func:`stadv_ref.reference.local.kink_forms_reference`),
    and for the lower bound only where the upper one stays positive (the lower bound of an
    inactive unit is left at the box value: it does not enter the ReLU lines).
    """
    be = get_backend(backend)
    Wp, Wn = np.maximum(net.W, 0.0), np.minimum(net.W, 0.0)
    Wabs_t = np.abs(net.W).T
    top = rel.hi @ Wp.T + rel.lo @ Wn.T + net.b
    bottom = rel.lo @ Wp.T + rel.hi @ Wn.T + net.b
    # linear parts: upper bound W+ (upper slopes) + W- (lower slopes); lower bound the reverse
    box_up = sum((np.abs(a) * R) @ Wp.T - (np.abs(c) * R) @ Wn.T for a, c in zip(rel.upper, rel.lower))
    box_lo = sum((np.abs(c) * R) @ Wp.T - (np.abs(a) * R) @ Wn.T for a, c in zip(rel.upper, rel.lower))
    mag = np.abs(net.b) + np.maximum(np.abs(rel.lo), np.abs(rel.hi)) @ Wabs_t
    reach_up = top + box_up + SAFETY * (mag + box_up)
    reach_lo = bottom - box_lo - SAFETY * (mag + box_lo)
    n_idx, j_idx = np.nonzero((reach_lo < 0) & (reach_up > 0) & (box_up + box_lo > 0))
    for box, first, second in ((box_up, rel.upper, rel.lower), (box_lo, rel.lower, rel.upper)):
        if box is box_lo:  # a unit the upper bound makes inactive needs no lower bound (its ReLU is 0)
            keep = top[n_idx, j_idx] + box_up[n_idx, j_idx] + SAFETY * (mag + box_up)[n_idx, j_idx] > 0
            n_idx, j_idx = n_idx[keep], j_idx[keep]
        if n_idx.size == 0:
            break
        q = sum(be.to_numpy(be.kink_forms(Wp, Wn, a, c, None, None, n_idx, j_idx, op.H, op.W)[0])
                for a, c in zip(first, second))
        box[n_idx, j_idx] = np.minimum(box[n_idx, j_idx], eps * np.sqrt(np.maximum(q, 0.0)))
    return bottom - box_lo - SAFETY * (mag + box_lo), top + box_up + SAFETY * (mag + box_up)


def _chunk_bounds(net, X, y, eps, R, flow, padding, op, tightness, backend):
    N = X.shape[0]
    H, W = net.image_shape
    rel = (tied_relaxation if flow == "tied" else untied_relaxation)(X, R, padding)
    flat = lambda arrs: tuple(a.reshape(N, -1) for a in arrs)  # noqa: E731
    rel = Relaxation(flat(rel.lower), rel.lo.reshape(N, -1), flat(rel.upper), rel.hi.reshape(N, -1))
    Rf = R.reshape(-1)
    l, u = _preactivation_bounds(net, rel, Rf, eps, op, backend)
    s, t, alpha = relu_lines(l, u)
    C, c0 = margin_coefficients(net, y)                      # (N, K, m), (N, K)
    lam = np.where(C > 0, C * s[:, None, :], C * alpha[:, None, :])
    up_t = np.where(C > 0, C * t[:, None, :], 0.0)
    mu = c0 + up_t.sum(axis=2) + lam @ net.b
    K, m = C.shape[1], C.shape[2]
    w = (lam.reshape(N * K, m) @ net.W).reshape(N, K, -1)     # coefficients of x~
    wp, wn = np.maximum(w, 0.0), np.minimum(w, 0.0)
    offset = (wp * rel.hi[:, None, :] + wn * rel.lo[:, None, :]).sum(axis=2)
    q = np.zeros((N, K))
    box = np.zeros((N, K))
    for a, c in zip(rel.upper, rel.lower):
        g = wp * a[:, None, :] + wn * c[:, None, :]
        q += _inv_quad(g.reshape(N * K, H, W), op).reshape(N, K)
        box += np.abs(g) @ Rf
    lin = np.minimum(eps * np.sqrt(np.maximum(q, 0.0)), box)
    # magnitude of everything summed (rounding margin)
    xabs = np.maximum(np.abs(rel.lo), np.abs(rel.hi))
    xmax = xabs + sum(np.maximum(np.abs(a), np.abs(c)) for a, c in zip(rel.upper, rel.lower)) * Rf
    zmag = np.abs(net.b) + xmax @ np.abs(net.W).T                                     # (N, m)
    mag = (np.abs(c0) + np.abs(up_t).sum(axis=2) + (np.abs(lam) * zmag[:, None, :]).sum(axis=2)
           + (np.abs(w) * xabs[:, None, :]).sum(axis=2) + lin)
    fast = mu + offset + lin + SAFETY * mag
    if tightness == "fast":
        return fast
    return np.minimum(fast, tight_chunk_bounds(net, X, y, eps, R, flow, padding, l, u, backend=backend))


def local_pair_bounds(net, X, y, eps, *, flow="tied", padding="zeros", tightness="fast", input_range=(0.0, 1.0),
                      chunk_size=32, backend=None):
    r"""Per-image upper bounds on the worst class margin under flows with ``||M r|| <= eps``.

    Parameters
    ----------
    net : OneHiddenLayerNet
        ``f(x) = V relu(W x + b) + c`` (multi-class or binary).
    X : array_like, shape (N, H, W) or (N, H*W)
        Images; ``(H, W) = net.image_shape``; every pixel in ``input_range``.
    y : array_like of int, shape (N,)
        Labels in ``[0, K)`` (``{0, 1}`` for a binary network).
    eps : float
        Budget ``>= 0`` of Eq. (3) (any size: Prop. 2's interval may span several pixels).
    flow : {"tied", "untied"}
        ``"tied"``: ``du = dv = r`` with ``||M r|| <= eps``; ``"untied"``: ``(du, dv)`` with
        ``||M du||^2 + ||M dv||^2 <= eps^2``.
    padding : {"zeros", "border"}
        As :func:`stadv_ref.warp`.
    tightness : {"fast", "tight"}
        ``"fast"``: the closed-form construction of the module docstring. ``"tight"``: the
        kink relaxations, the V-lemma and optimised ReLU slopes of :mod:`.local_tight`
        (elementwise at most the fast bound; several times slower, far tighter at large ``eps``).
    input_range : tuple (lo, hi)
        The box the images must lie in (a certificate for an image outside it is refused).
    chunk_size : int
        Images processed at once. Peak memory is at most about
        ``8 * H * W * (8 * 1024 + chunk_size * (6 * K + 2 * (2 * ceil(eps * max(lambda)) + 2)^2 + 10))``
        bytes (``K`` classes; the first term: the ellipsoid maxima of unstable units, computed
        by the ``numpy`` backend 1024 (image, unit) pairs at a time (the ``numba`` kernel builds
        one pair's field at a time); the square: the untied relaxation's grid). On 28x28 MNIST
        with ``K = 10`` (traced peaks, 64 images): 50 MB fast, 80 MB tight (numpy; 36 MB with
        numba) with the default 32; 96 MB tight with 256. The speed hardly depends on it.
    backend : str or backend object, optional
        Backend of the kernel ``kink_forms`` (the ellipsoid maxima; :mod:`stadv_ref.backend`);
        default the current one. ``"numba"`` is about 1.3-1.6x faster on one core.

    Returns
    -------
    ndarray, shape (N, K) float64 (``(N, 1)`` for a binary network)
        Entry ``(n, i)`` is a sound upper bound on
        ``max_{||M r|| <= eps} f_i(g(r; x_n)) - f_{y_n}(g(r; x_n))``; entry ``(n, y_n)`` is ``-inf``.
        For a binary network (class 1 iff ``f > 0``) the single column bounds
        ``max -(2 y_n - 1) f(g(r; x_n))``. ``x_n`` is certified when its row is ``< 0``
        (appendix 6.7 with the corrected rule [E13]).

    Raises
    ------
    TypeError
        ``net`` not a :class:`OneHiddenLayerNet`; non-numeric ``X``; non-real ``eps``.
    ValueError
        ``X`` of the wrong shape, not finite or outside ``input_range``; ``y`` not integer
        labels in range; ``eps < 0`` or not finite; unknown ``flow``, ``padding``,
        ``tightness``; bad ``input_range`` or ``chunk_size``; unknown ``backend``.

    Notes
    -----
    With ``x~ = g(r; x)`` (Eq. (1)), Prop. 2's box ``|r_i| <= eps lambda_i`` and per-pixel
    relaxations ``A-_j r_j + lo_j <= x~_j <= A+_j r_j + hi_j``, the CROWN lines give
    ``f_i - f_y <= mu + w^T x~`` for all feasible ``r``; with ``g = w^+ o A+ + w^- o A-``,

    .. math:: \max_{\|Mr\|\le\varepsilon} f_i - f_y \le \mu + w^+\cdot hi + w^-\cdot lo
              + \min\Big(\varepsilon \sqrt{g^\top L^{-1} g},\;
              \sum_j |g_j|\, \varepsilon\lambda_j\Big).

    (untied: ``g`` has a ``du`` and a ``dv`` part and ``g^T L^-1 g`` sums both.)
    At ``eps = 0`` the bound equals the clean margin ``f_i(x) - f_y(x)`` up to the
    ``1e-9`` relative safety margin.

    Examples
    --------
    >>> import numpy as np, stadv_ref
    >>> from stadv_ref.upper_bounds.local import local_pair_bounds
    >>> rng = np.random.default_rng(0)
    >>> net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((8, 16)), rng.standard_normal((3, 8)))
    >>> X = rng.uniform(0, 1, (2, 4, 4))
    >>> local_pair_bounds(net, X, net.predict(X), 0.1).shape
    (2, 3)
    """
    X, y, eps, chunk_size = _validate(net, X, y, eps, flow, padding, tightness, input_range, chunk_size)
    backend = get_backend(backend)
    H, W = net.image_shape
    N = X.shape[0]
    out = np.empty((N, net.n_classes))
    if N == 0:  # no image, no bound: an empty (0, K) result
        return out
    R = box_radii(H, W, eps)
    op = smoothness_operator(H, W)
    for start in range(0, N, chunk_size):
        sl = slice(start, min(start + chunk_size, N))
        out[sl] = _chunk_bounds(net, X[sl], y[sl], eps, R, flow, padding, op, tightness, backend)
    if not np.all(np.isfinite(out)):  # overflow: a bound of inf or NaN certifies nothing and hides the cause
        raise ValueError("net weights too large: the local bound overflows float64 (rescale the network)")
    if not net.binary:
        out[np.arange(N), y] = -np.inf
    return out
