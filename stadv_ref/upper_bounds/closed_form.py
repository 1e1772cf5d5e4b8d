r"""Upper bounds on the adversarial loss (Section 4, Proposition 2, Eq. (16), appendix 6.7).

All bounds are on ``sup { l_adv(x, r) : x in [lo, hi]^d, ||M r|| <= eps }`` with
``l_adv(x, r) = f(g(r; x)) - f(x)`` for a binary network ``f = v^T relu(W x + b) + c``
or, for a multi-class network and ``classes=(i, y)``, the margin ``f_i - f_y`` (so
``v = V_i - V_y``). They are linear in ``eps``: ``value = eps * per_unit``.

The common chain (Section 4.1, with the corrections of EQUATIONS.md)
---------------------------------------------------------------------
By Eq. (4), ``l_adv = int_0^1 s(z)^T diag(v) W D(z) r dz`` where
``s(z) = dsigma(W g(z r; x) + b) in {0, 1}^m`` and ``D(z)`` is the diagonal Jacobian
of the tied warp, ``|D_ii| <= C`` with

* ``C = 2`` for pixels in ``[0, 1]`` (each of ``d x~/d du``, ``d x~/d dv`` is a convex
  combination of neighbour differences, ``|.| <= 1``) and ``C = 4`` for ``[-1, 1]`` ([E7]);
  in general ``C = 2 max(hi - lo, |lo|, |hi|)`` with zero padding (``2 (hi - lo)`` with
  border padding).

Hence ``l_adv <= C eps max { s^T B u : s in S, u in K }`` with ``B = diag(v) W`` and
``K = {u : |u_i| <= |r_i|, r^T L r <= 1}`` (the set of ``D r / (C eps)``). The bounds
differ in how they over-approximate ``S`` (``[-1,1]^m`` in the paper, ``[0,1]^m`` is
valid for ReLU) and ``K``:

* **Proposition 2** (AABB, [E11]): ``K`` is inside the box ``|u_i| <= lambda_i``,
  ``lambda_i = sqrt((L^-1)_ii)`` (:func:`stadv_ref.aabb_radii` with ``eps``).
* ``"aabb"``: box + ``max_{s,t} s^T A t <= sum |A_ij|``, ``A = B diag(lambda)``:
  ``C eps sum_ij |v_i W_ij| lambda_j``.
* ``"linear"``, Eq. (16): ``f = v^T x``: ``C eps ||v * lambda||_1`` (``2 eps ||v * lambda||_1``).
* ``"sdp"``, Section 4.1: box + SDP relaxation,
  ``max_{||z||_inf <= 1} z^T P z = 2 max s^T A t``, so ``l_adv <= (C/2) eps SDP(P)``
  (``eps SDP(P)`` for ``[0,1]``, ``2 eps SDP(P)`` for ``[-1,1]``), certified by the
  dual inequality (:mod:`stadv_ref.upper_bounds.sdp_dual`).
* ``"spectral"`` (sound): ``s^T B u <= ||diag(v) s||_2 ||W||_2 ||u||_2`` and
  ``||u||_2 <= ||r||_2 <= 1/sqrt(lambda_min(L))``:
  ``C eps ||W||_2 ||v||_2 / sqrt(lambda_min(L))``.
* ``"frobenius"`` (sound): the same with ``||W||_F >= ||W||_2``.
* ``"paper-spectral"`` / ``"paper-frobenius"``: ``eps ||W||_2 ||v||_2`` and
  ``eps ||W||_F ||v||_2`` as printed in the appendix ([E12]); they drop ``C`` and the
  ``1/sqrt(lambda_min(L))`` (about 4.9 at 28x28) and are NOT bounds
  (``sound=False``; a checkerboard construction breaks them).
* ``"tight"`` (beyond the paper): three sound ingredients, the smallest is reported:

  1. the *ellipsoid SDP* (:func:`stadv_ref.upper_bounds.solve_ellipsoid_sdp`): the SDP
     relaxation over ``K`` itself instead of its bounding box, with ``s in [0, 1]^m``
     (``s = (z0 + s')/2`` homogenised: ``B`` gets the extra row ``1^T B`` and the
     value halves): ``l_adv <= C eps ESDP([1^T B; B]) / 4``;
  2. the spectral bound with ``s in [0, 1]^m``:
     ``C eps (||W^T v||_2 + ||W||_2 ||v||_2) / (2 sqrt(lambda_min))``;
  3. the spectral bound.

  ESDP is provably ``<=`` the box SDP value and the spectral value (see
  :func:`stadv_ref.upper_bounds.solve_ellipsoid_sdp`); ``tight <= sdp`` is additionally
  *enforced*: a feasible box-SDP point's value (a lower bound on ``SDP(P)``) is
  computed and, should the certified ellipsoid value not be below it, the
  certified box SDP enters the minimum. For a linear classifier the chain's
  maximum has a closed form: ``C eps ||M^-1 |v| ||_2`` (the maximiser over ``K`` is
  ``r = L^-1 |v| / ||M^-1 |v|||`` up to signs; ``L^-1`` is entrywise positive).

Floating point: closed forms and certificates are computed in float64 with errors
far below ``1e-12`` relative; every sound value is multiplied by ``1 + 1e-9``.
Untied flows with ``||M du||^2 + ||M dv||^2 <= eps^2`` are covered by the same
bounds: ``|D_u du + D_v dv| <= (C/2)(|du| + |dv|)`` and
``||M (|du| + |dv|)|| <= sqrt(2) eps``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time

import numpy as np
from tqdm.auto import tqdm

from .._validate import check_budget, check_choice, check_class_pair, check_input_range
from ..network import LinearClassifier, OneHiddenLayerNet
from ..operators import aabb_radii, m_power, smoothness_operator
from .sdp import sdp_primal_lower, solve_sdp
from .sdp_ellipsoid import solve_ellipsoid_sdp
from .sdp_result import SDPResult, _check_solver_options

__all__ = [
    "UpperBoundResult",
    "LinearClassifier",
    "upper_bound",
    "class_pair_bounds",
    "METHODS",
    "SOUND_METHODS",
    "input_constant",
]

METHODS = ("aabb", "linear", "spectral", "frobenius", "paper-spectral", "paper-frobenius", "sdp", "tight")
"""Every ``method`` name of :func:`upper_bound`."""
SOUND_METHODS = ("aabb", "linear", "spectral", "frobenius", "sdp", "tight")
"""Methods whose value is a proven bound (``sound=True``)."""
_SAFE = 1.0 + 1e-9


@dataclasses.dataclass
class UpperBoundResult:
    """A bound on ``sup l_adv`` over ``||M r|| <= eps`` and how it was obtained.

    Attributes
    ----------
    value : float
        The bound at ``eps``.
    sound : bool
        ``True`` when ``value`` is proven (rigorous certificate or closed form);
        ``False`` for the paper's printed naive bounds ([E12]).
    method : str
    eps : float
    per_unit : float
        ``value / eps``: the bound at ``eps = 1`` (all bounds are linear in ``eps``).
    constant : float
        ``C``, the bound on ``|dg_i/dr_i|`` (2 for ``[0,1]``, 4 for ``[-1,1]``, [E7]).
    classes : tuple or None
    input_range : tuple
    how : str
        How it was obtained (formula and ingredients).
    gap : float or None
        Certified relative gap of the SDP solution (``None`` for closed forms).
    certificate : SDPResult or None
        The SDP certificate (``c``, solver status, timings) when one was used.
    time : float
        Seconds.
    details : dict
        Ingredients (norms, components of ``"tight"``...).
    """

    value: float
    sound: bool
    method: str
    eps: float
    per_unit: float
    constant: float
    classes: tuple = None
    input_range: tuple = (0.0, 1.0)
    how: str = ""
    gap: float = None
    certificate: SDPResult = None
    time: float = 0.0
    details: dict = dataclasses.field(default_factory=dict)


def input_constant(input_range=(0.0, 1.0), padding="zeros"):
    """``C >= |dg_i/dr_i|`` for pixels in ``input_range`` ([E7]).

    Parameters
    ----------
    input_range : tuple (lo, hi)
    padding : {"zeros", "border"}
        With zero padding, differences to the (zero) outside also count.

    Returns
    -------
    float
        ``2 max(hi - lo, |lo|, |hi|)`` (zeros) or ``2 (hi - lo)`` (border): 2 for ``[0, 1]``,
        4 for ``[-1, 1]``.
    """
    lo, hi = check_input_range("input_range", input_range)
    check_choice("padding", padding, ("zeros", "border"))
    span = hi - lo if padding == "border" else max(hi - lo, abs(lo), abs(hi))
    return 2.0 * span


def _check_classes(net, classes):
    if net.binary:
        if classes is not None:
            raise ValueError("classes is only for multi-class networks (got a binary network)")
        return None, net.v
    if classes is None:
        raise ValueError("classes=(i, y) is required for a multi-class network")
    i, y = check_class_pair("classes", classes, net.n_classes)
    return (i, y), net.V[i] - net.V[y]


def _finite_or_refuse(value, what):
    """``value`` if every entry is finite; else the ValueError that names ``net`` (weights too large)."""
    if not np.isfinite(value).all():
        raise ValueError(f"net weights too large: {what} overflows float64")
    return value


_NORM_CACHE = {}


def _matrix_norms(W):
    """``(||W||_2, ||W||_F)``, cached by a hash of ``W`` (shared by every class pair of a network)."""
    key = (W.shape, hashlib.sha1(np.ascontiguousarray(W).tobytes()).hexdigest())
    if key not in _NORM_CACHE:
        if len(_NORM_CACHE) > 64:
            _NORM_CACHE.clear()
        _NORM_CACHE[key] = (float(np.linalg.norm(W, 2)), float(np.linalg.norm(W)))
    return _NORM_CACHE[key]


def _spectral_parts(W, v, lmin):
    """``(||W||_2, ||W||_F, ||v||_2, ||W^T v||_2)``."""
    return (*_matrix_norms(W), float(np.linalg.norm(v)), float(np.linalg.norm(W.T @ v)))


def _net_bound(method, W, v, shape, C, opts, cache):
    """Per-unit-eps value, how, gap, certificate, details for a (binary view of a) network."""
    H, Wd = shape
    lmin = smoothness_operator(H, Wd).lambda_min
    lam = aabb_radii(H, Wd).reshape(-1)
    if "spec" not in cache:
        cache["spec"] = _spectral_parts(W, v, lmin)
    nW2, nWF, nv, nWv = cache["spec"]
    sq = math.sqrt(lmin)
    if method == "paper-spectral":
        return nW2 * nv, "eps ||W||_2 ||v||_2 as printed (appendix, [E12]; NOT a bound)", None, None, {}
    if method == "paper-frobenius":
        return nWF * nv, "eps ||W||_F ||v||_2 as printed (appendix, [E12]; NOT a bound)", None, None, {}
    if method == "spectral":
        val = C * nW2 * nv / sq
        return val * _SAFE, f"C eps ||W||_2 ||v||_2 / sqrt(lambda_min(L)), C={C:g}", None, None, \
            {"norm_W_2": nW2, "norm_v": nv, "lambda_min": lmin}
    if method == "frobenius":
        val = C * nWF * nv / sq
        return val * _SAFE, f"C eps ||W||_F ||v||_2 / sqrt(lambda_min(L)), C={C:g}", None, None, \
            {"norm_W_F": nWF, "norm_v": nv, "lambda_min": lmin}
    A = _finite_or_refuse((v[:, None] * W) * lam[None, :], "A = diag(v) W diag(lambda)")
    if method == "aabb":
        val = C * float(np.abs(A).sum())
        return val * _SAFE, f"C eps sum_ij |v_i W_ij| lambda_j (Prop. 2 box), C={C:g}", None, None, {}
    sdp_opts = {k: opts[k] for k in ("method", "gap_tol", "max_iter", "seed", "rank", "certificate",
                                     "time_limit", "scs_eps", "scs_max_iters") if k in opts}
    if method == "sdp":
        res = solve_sdp(A, **sdp_opts)
        val = 0.5 * C * res.value
        return val * _SAFE, f"(C/2) eps SDP(P), P=[[0,A],[A^T,0]], A=diag(v) W diag(lambda), C={C:g}; " \
            f"certified dual bound ({res.method}, {res.certificate})", res.gap, res, \
            {"sdp_value": res.value, "sdp_primal": res.primal}
    # tight
    B = v[:, None] * W
    Bext = _finite_or_refuse(np.vstack([B.sum(axis=0, keepdims=True), B]), "1^T diag(v) W")
    eopts = {k: opts[k] for k in ("gap_tol", "max_iter", "seed", "rank", "time_limit") if k in opts}
    if opts.get("method") == "scs":
        eopts["method"] = "scs"
    res = solve_ellipsoid_sdp(Bext, shape, **eopts)
    esdp = C * res.value / 4.0
    spec01 = C * (nWv + nW2 * nv) / (2 * sq)
    spec = C * nW2 * nv / sq
    comps = {"ellipsoid_sdp": esdp * _SAFE, "spectral01": spec01 * _SAFE, "spectral": spec * _SAFE}
    # Enforce tight <= sdp: compare with a feasible box-SDP value (a lower bound on SDP(P)).
    box_lower = 0.5 * C * sdp_primal_lower(A, iters=30, seed=opts.get("seed", 0))
    details = {"components": comps, "box_sdp_lower": box_lower}
    best = min(comps.values())
    if best > box_lower:
        full = solve_sdp(A, **sdp_opts)
        comps["sdp"] = 0.5 * C * full.value * _SAFE
        best = min(comps.values())
    winner = min(comps, key=comps.get)
    how = (f"min of sound bounds {sorted(comps)}; winner {winner}. Ellipsoid SDP: C eps ESDP([1^T B; B])/4, "
           f"B=diag(v)W, s in [0,1]^m, u in the solid hull of ||M r||<=1, C={C:g}")
    details["winner"] = winner
    details["ellipsoid_sdp_value"] = res.value
    details["ellipsoid_sdp_primal"] = res.primal
    return best, how, res.gap, res, details


def _linear_bound(method, v, shape, C):
    H, Wd = shape
    lmin = smoothness_operator(H, Wd).lambda_min
    lam = aabb_radii(H, Wd).reshape(-1)
    if method in ("linear", "aabb", "sdp"):
        val = C * float(np.abs(v * lam).sum())
        return val * _SAFE, f"Eq. (16): C eps ||v * lambda||_1, C={C:g} (for m=1 the SDP and box are exact)"
    if method == "spectral":
        return C * float(np.linalg.norm(v)) / math.sqrt(lmin) * _SAFE, \
            f"C eps ||v||_2 / sqrt(lambda_min(L)), C={C:g}"
    if method == "tight":
        a = np.abs(v).reshape(1, H, Wd)
        q = float(np.sum(a * np.asarray(m_power(a, -2))))
        return C * math.sqrt(max(q, 0.0)) * _SAFE, \
            f"C eps ||M^-1 |v| ||_2 (exact maximum over the solid hull of the ellipsoid), C={C:g}"
    raise ValueError(f"method {method!r} is not available for a linear classifier; "
                     "use one of ['aabb', 'linear', 'sdp', 'spectral', 'tight']")


def upper_bound(net, eps, method="sdp", *, classes=None, input_range=(0.0, 1.0), padding="zeros",
                solver="mixing", gap_tol=1e-5, max_iter=20000, seed=0, **solver_options):
    """Upper bound on ``sup_{x, ||M r|| <= eps} l_adv(x, r)`` (Section 4; module docstring).

    Parameters
    ----------
    net : OneHiddenLayerNet, LinearClassifier, or array_like
        A network, or a linear classifier ``f = v^T x`` (a ``LinearClassifier`` or the
        vector ``v`` of shape ``(d,)`` / ``(H, W)``).
    eps : float
        Budget ``||M r|| <= eps`` (>= 0).
    method : str
        One of :data:`METHODS`: ``"aabb"``, ``"linear"`` (Eq. 16, linear classifiers),
        ``"spectral"``, ``"frobenius"`` (sound), ``"paper-spectral"``,
        ``"paper-frobenius"`` (as printed, ``sound=False``), ``"sdp"`` (Section 4.1),
        ``"tight"`` (ellipsoid SDP; never looser than ``"sdp"`` and ``"spectral"``).
    classes : tuple (i, y), optional
        For multi-class networks: bound the margin ``f_i - f_y`` (appendix 6.7).
    input_range : tuple (lo, hi)
        Pixel range; sets ``C`` (2 for ``(0, 1)``, 4 for ``(-1, 1)``; [E7]).
    padding : {"zeros", "border"}
    solver : {"mixing", "scs"}
        SDP solver for ``"sdp"`` / ``"tight"``.
    gap_tol, max_iter, seed
        Passed to the SDP solvers.
    **solver_options
        More options of :func:`stadv_ref.solve_sdp` (``rank``, ``certificate``,
        ``time_limit``, ``scs_eps``, ``scs_max_iters``).

    Returns
    -------
    UpperBoundResult

    Raises
    ------
    TypeError
        ``net`` neither a network nor numeric weights ``v``; ``classes`` not a pair of integers
        (floats, bools refused, never truncated); ``eps``, ``gap_tol`` not reals (bools refused);
        ``max_iter``, ``seed`` not integers; an unknown keyword in ``solver_options``.
    ValueError
        ``eps`` negative or not finite; unknown ``method``, ``padding``, ``solver``; ``"linear"``
        for a network; ``classes`` missing (multi-class), given (binary, linear) or out of range
        or equal; bad ``input_range``; ``gap_tol`` not positive finite; ``max_iter < 1``;
        ``seed < 0``; ``v`` not finite or misshaped; ``net``'s weights so large the bound overflows.
    """
    t0 = time.perf_counter()
    eps = check_budget("eps", eps)
    check_choice("method", method, METHODS)
    check_choice("solver", solver, ("mixing", "scs"))
    C = input_constant(input_range, padding)
    lo, hi = (float(t) for t in input_range)
    unknown = set(solver_options) - {"rank", "certificate", "time_limit", "scs_eps", "scs_max_iters"}
    if unknown:
        raise TypeError(f"unknown solver options {sorted(unknown)}")
    gap_tol, max_iter, seed = _check_solver_options(gap_tol, max_iter, seed)[:3]
    opts = dict(solver_options, method=solver, gap_tol=gap_tol, max_iter=max_iter, seed=seed)
    if not isinstance(net, OneHiddenLayerNet):
        try:
            lin = net if isinstance(net, LinearClassifier) else LinearClassifier(net)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"net must be a OneHiddenLayerNet, a LinearClassifier or its weights v: {exc}") from exc
        if classes is not None:
            raise ValueError("classes is only for multi-class networks (net is a linear classifier)")
        per, how = _linear_bound(method, lin.v, lin.image_shape, C)
        per = float(_finite_or_refuse(per, "the bound"))
        return UpperBoundResult(value=eps * per, sound=True, method=method, eps=eps, per_unit=per, constant=C,
                                classes=None, input_range=(lo, hi), how=how, time=time.perf_counter() - t0)
    if method == "linear":
        raise ValueError("method 'linear' (Eq. 16) is for linear classifiers f = v^T x; "
                         "pass a LinearClassifier or the vector v")
    with np.errstate(over="ignore", invalid="ignore"):  # overflows are refused by name (_finite_or_refuse)
        cls, v = _check_classes(net, classes)
        per, how, gap, cert, details = _net_bound(method, net.W, v, net.image_shape, C, opts, {})
    per = float(_finite_or_refuse(per, "the bound"))
    return UpperBoundResult(value=eps * per, sound=method in SOUND_METHODS, method=method, eps=eps, per_unit=per,
                            constant=C, classes=cls, input_range=(lo, hi), how=how, gap=gap, certificate=cert,
                            time=time.perf_counter() - t0, details=details)


def class_pair_bounds(net, method="sdp", *, input_range=(0.0, 1.0), padding="zeros", solver="mixing",
                      gap_tol=1e-5, max_iter=20000, seed=0, progress=True, **solver_options):
    """Per-unit-``eps`` bounds for every class pair of a network (appendix 6.7).

    The bound for ``(i, y)`` depends on ``v_i - v_y`` only through ``|.|``-symmetric
    quantities, so ``bounds[i, y] = bounds[y, i]`` and only ``i < y`` is computed.

    Parameters
    ----------
    net : OneHiddenLayerNet
    method, input_range, padding, solver, gap_tol, max_iter, seed, **solver_options
        As in :func:`upper_bound`.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    bounds : ndarray, shape (K, K)
        ``bounds[i, y]`` = per-unit bound on ``f_i - f_y`` (``0`` on the diagonal);
        for a binary network, shape (1, 1) holding the bound on ``f``.
    results : dict
        ``(i, y) -> UpperBoundResult`` (``i < y``).
    """
    if not isinstance(net, OneHiddenLayerNet):
        raise TypeError(f"net must be a OneHiddenLayerNet, got {type(net).__name__}")
    if net.binary:
        r = upper_bound(net, 1.0, method, input_range=input_range, padding=padding, solver=solver,
                        gap_tol=gap_tol, max_iter=max_iter, seed=seed, **solver_options)
        return np.array([[r.per_unit]]), {(0, 0): r}
    K = net.n_classes
    pairs = [(i, y) for i in range(K) for y in range(i + 1, K)]
    bounds = np.zeros((K, K))
    results = {}
    it = tqdm(pairs, desc=f"class-pair bounds ({method})", leave=False) if progress else pairs
    for i, y in it:
        r = upper_bound(net, 1.0, method, classes=(i, y), input_range=input_range, padding=padding,
                        solver=solver, gap_tol=gap_tol, max_iter=max_iter, seed=seed, **solver_options)
        bounds[i, y] = bounds[y, i] = r.per_unit
        results[(i, y)] = r
    return bounds, results
