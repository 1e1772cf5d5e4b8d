r"""Certification with the upper bounds (appendix 6.7, [E13]) and a strong flow attack to test it.

Rule ([E13]). For an input ``x`` with label ``y`` and each class ``i != y``, the pair
bound ``B_iy`` (per unit ``eps``, :func:`stadv_ref.upper_bounds.class_pair_bounds`)
satisfies ``f_i(g(r; x)) - f_y(g(r; x)) <= f_i(x) - f_y(x) + eps B_iy`` for every
``||M r|| <= eps``. So ``x`` is **certified** when

.. math:: f_y(x) - f_i(x) > \varepsilon\, B_{iy}\quad \text{for all } i \ne y ,

("if", not the printed "if and only if": the printed test ``max_i q_iy <= 0`` can never
pass because every ``q_iy`` is positive). The 0/1 adversarial loss at ``eps`` is the
fraction of points *not* certified. For a binary network (``f > 0`` is class 1) the
rule is ``(2y - 1) f(x) > eps B``.

Class-pair bounds are computed once per network and cached: in memory, keyed by a
hash of the weights (``W``, ``V``, ``b``, image shape) and of every option that
changes the bound; optionally also on disk (``cache_dir``) as ``.npz``.

:func:`flow_pgd_attack` is the strong attack the bounds are tested against:
projected gradient ascent on the exact ``l_adv`` over the ellipsoid ``||M r|| <= eps``
(in ``M``-coordinates ``s = M r`` the ellipsoid is a ball), optionally jointly over the
image ``x`` in the input box, with random restarts, tied or untied flows.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import numpy as np

from ._validate import as_float_array, check_budget, check_choice, check_positive_int
from .adversarial_loss import adv_loss_exact, binary_view
from .network import OneHiddenLayerNet
from .operators import m_power
from .transform import warp, warp_vjp_flow, warp_vjp_x
from .upper_bounds import METHODS, SOUND_METHODS, LinearClassifier, class_pair_bounds, input_constant

__all__ = [
    "CertificationResult",
    "certify",
    "pair_bounds_cached",
    "clear_bound_cache",
    "AttackResult",
    "flow_pgd_attack",
]

_MEMORY_CACHE = {}


# ---------------------------------------------------------------------------
# Cached class-pair bounds
# ---------------------------------------------------------------------------
def _cache_key(net, method, options):
    h = hashlib.sha256()
    for a in (net.W, net.V, net.b):
        arr = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    h.update(json.dumps({"method": method, "image_shape": list(net.image_shape), **options},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def clear_bound_cache():
    """Empty the in-memory cache of class-pair bounds."""
    _MEMORY_CACHE.clear()


def pair_bounds_cached(net, method="sdp", *, input_range=(0.0, 1.0), padding="zeros", solver="mixing",
                       gap_tol=1e-5, seed=0, cache=True, cache_dir=None, progress=True, **solver_options):
    """:func:`stadv_ref.upper_bounds.class_pair_bounds` with in-memory and on-disk caching.

    Returns
    -------
    bounds : ndarray, shape (K, K) (or (1, 1) for a binary network)
        Per-unit-``eps`` bounds.
    info : dict
        ``{"key", "source" ("computed"|"memory"|"disk"), "time", "gaps", "how"}``.
    """
    options = {"input_range": [float(t) for t in input_range], "padding": padding, "solver": solver,
               "gap_tol": float(gap_tol), "seed": int(seed), **solver_options}
    key = _cache_key(net, method, options)
    if cache and key in _MEMORY_CACHE:
        b, info = _MEMORY_CACHE[key]
        return b.copy(), dict(info, source="memory")
    path = None
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(os.fspath(cache_dir), f"bounds-{method}-{key}.npz")
        if cache and os.path.isfile(path):
            with np.load(path, allow_pickle=False) as f:
                b = f["bounds"].copy()
                info = json.loads(str(f["info"]))
            _MEMORY_CACHE[key] = (b, info)
            return b.copy(), dict(info, source="disk")
    t0 = time.perf_counter()
    b, results = class_pair_bounds(net, method, input_range=input_range, padding=padding, solver=solver,
                                   gap_tol=gap_tol, seed=seed, progress=progress, **solver_options)
    gaps = [r.gap for r in results.values() if r.gap is not None]
    info = {
        "key": key,
        "method": method,
        "time": time.perf_counter() - t0,
        "max_gap": max(gaps) if gaps else None,
        "how": next(iter(results.values())).how,
        "sound": method in SOUND_METHODS,
        "winners": {f"{i},{y}": r.details.get("winner") for (i, y), r in results.items()
                    if r.details.get("winner")},
    }
    if cache:
        _MEMORY_CACHE[key] = (b.copy(), info)
    if path is not None and cache:
        np.savez(path, bounds=b, info=np.asarray(json.dumps(info)))
    return b, dict(info, source="computed")


# ---------------------------------------------------------------------------
# certify
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class CertificationResult:
    """Result of :func:`certify`.

    Attributes
    ----------
    certified : ndarray of bool, shape (N,) or (E, N)
        Per example (and per ``eps`` when several were given).
    loss_01 : float or ndarray, shape (E,)
        0/1 adversarial loss: the fraction of examples not certified.
    eps : float or ndarray
    method : str
    sound : bool
        Whether the bound used is proven (``False`` for the paper's naive bounds).
    margins : ndarray, shape (N, K) (or (N,) binary)
        ``f_y(x) - f_i(x)`` (``+inf`` at ``i = y``); binary: ``(2y - 1) f(x)``.
    bounds : ndarray, shape (K, K)
        Per-unit class-pair bounds ``B_iy``.
    required : ndarray, shape (N, K)
        ``B_iy`` for each example's label (the margin test is ``margins > eps * required``).
    accuracy : float
        Clean accuracy.
    info : dict
        Cache information and timings.
    """

    certified: np.ndarray
    loss_01: object
    eps: object
    method: str
    sound: bool
    margins: np.ndarray
    bounds: np.ndarray
    required: np.ndarray
    accuracy: float
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def certified_radius(self):
        """Largest ``eps`` each example is certified for: ``min_i margin_i / B_iy`` (0 if misclassified)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(self.required > 0, self.margins / self.required, np.where(self.margins > 0, np.inf, 0.0))
        rad = q.min(axis=-1) if q.ndim == 2 else q
        return np.maximum(rad, 0.0)


def certify(net, X, y, eps, method="sdp", *, input_range=(0.0, 1.0), padding="zeros", solver="mixing",
            gap_tol=1e-5, seed=0, cache=True, cache_dir=None, progress=True, **solver_options):
    """Certify examples against every flow with ``||M r|| <= eps`` (appendix 6.7, [E13]).

    Parameters
    ----------
    net : OneHiddenLayerNet
    X : array_like, shape (N, H, W) or (N, d)
    y : array_like of int, shape (N,)
        Labels (``{0, 1}`` for a binary network).
    eps : float or array_like of float
        One budget or several (the bounds are computed once; the margin test is
        repeated per ``eps``).
    method : str
        A method of :func:`stadv_ref.upper_bound` (not ``"linear"``).
    input_range, padding, solver, gap_tol, seed, **solver_options
        As in :func:`stadv_ref.upper_bound`. Every pixel of ``X`` must lie in
        ``input_range``: the bounds hold only inside that box.
    cache : bool
        Use / fill the in-memory (and, with ``cache_dir``, on-disk) bound cache.
    cache_dir : path, optional
    progress : bool

    Returns
    -------
    CertificationResult

    Raises
    ------
    TypeError
        If ``net`` is not a :class:`OneHiddenLayerNet`.
    ValueError
        If ``X`` is not finite or leaves ``input_range`` (a certificate for such an
        image would be false), if ``y`` is not integer labels of the right shape and
        range, or if ``eps``, ``method``, ``input_range`` or ``padding`` is invalid.
    """
    if not isinstance(net, OneHiddenLayerNet):
        raise TypeError(f"net must be a OneHiddenLayerNet, got {type(net).__name__}")
    check_choice("method", method, tuple(m for m in METHODS if m != "linear"))
    input_constant(input_range, padding)  # validates input_range / padding
    lo, hi = (float(t) for t in input_range)
    scalar = np.ndim(eps) == 0
    eps_arr = np.atleast_1d(np.asarray(eps, dtype=object))
    if eps_arr.ndim != 1 or eps_arr.size == 0:
        raise ValueError(f"eps must be a number or a 1-D sequence of numbers, got {eps!r}")
    eps_arr = np.array([check_budget("eps", float(e) if isinstance(e, (np.floating, np.integer)) else e)
                        for e in eps_arr])
    Xf = net.flatten(X, "X")
    if Xf.size and (Xf.min() < lo or Xf.max() > hi):
        # The bounds hold only for images in the input box: an image outside it
        # would get a certificate that a flow attack can break ([E7], issue #19).
        raise ValueError(
            f"X must lie in input_range=({lo:g}, {hi:g}); got values in [{Xf.min():g}, {Xf.max():g}] "
            "(rescale the images, e.g. X / 255, or pass the input_range the network was trained on)")
    y = np.asarray(y)
    if y.shape != (Xf.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be integer labels of shape ({Xf.shape[0]},), got shape {y.shape}, dtype {y.dtype}")
    K = 2 if net.binary else net.n_classes
    if y.size and (y.min() < 0 or y.max() >= K):
        raise ValueError(f"y must hold labels in [0, {K})")
    bounds, info = pair_bounds_cached(net, method, input_range=input_range, padding=padding, solver=solver,
                                      gap_tol=gap_tol, seed=seed, cache=cache, cache_dir=cache_dir,
                                      progress=progress, **solver_options)
    out = net(Xf)
    N = Xf.shape[0]
    if net.binary:
        margins = (2 * y - 1) * out
        required = np.full(N, bounds[0, 0])
        pred = (out > 0).astype(np.int64)
        cert = margins[None, :] > eps_arr[:, None] * required[None, :]
    else:
        rows = np.arange(N)
        margins = out[rows, y][:, None] - out
        margins[rows, y] = np.inf
        required = bounds[:, y].T.copy()  # required[n, i] = B_{i, y_n}
        pred = out.argmax(axis=1)
        cert = np.all(margins[None, :, :] > eps_arr[:, None, None] * required[None, :, :], axis=2)
    loss = 1.0 - cert.mean(axis=1) if N else np.zeros(len(eps_arr))
    if scalar:
        cert, loss, eps_out = cert[0], float(loss[0]), float(eps_arr[0])
    else:
        eps_out = eps_arr
    return CertificationResult(
        certified=cert, loss_01=loss, eps=eps_out, method=method, sound=method in SOUND_METHODS,
        margins=margins, bounds=bounds, required=required, accuracy=float(np.mean(pred == y)) if N else float("nan"),
        info=info,
    )


# ---------------------------------------------------------------------------
# A strong attack (the soundness tests' adversary)
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class AttackResult:
    """Result of :func:`flow_pgd_attack`.

    Attributes
    ----------
    value : float
        Best exact ``l_adv`` found (a valid lower bound on the supremum).
    x : ndarray, shape (H, W)
        Image of the best pair.
    flow : ndarray, shape (H, W) (tied) or (2, H, W) (untied)
        Flow of the best pair; ``||M r|| <= eps`` up to rounding.
    values : ndarray, shape (restarts,)
        Best value per restart.
    budget : float
        ``||M r||`` (tied) or ``sqrt(||M du||^2 + ||M dv||^2)`` of the returned flow.
    """

    value: float
    x: np.ndarray
    flow: np.ndarray
    values: np.ndarray
    budget: float


def _project_ball(s, eps):
    axes = tuple(range(1, s.ndim))
    nrm = np.sqrt((s * s).sum(axis=axes, keepdims=True))
    return s * np.minimum(1.0, eps / np.maximum(nrm, 1e-300))


def flow_pgd_attack(net, eps, *, classes=None, x=None, tied=True, restarts=32, steps=200, optimize_x=None,
                    input_range=(0.0, 1.0), padding="zeros", step_size=0.25, seed=0):
    """Projected gradient ascent on the exact ``l_adv`` over ``||M r|| <= eps`` (and optionally ``x``).

    Parametrises the flow by ``s = M r`` (tied) or ``s = (M du, M dv)`` (untied), so the
    budget set is the Euclidean ball ``||s|| <= eps`` and projection is a rescaling;
    ``r = M^-1 s``. Steps are normalised gradient steps in ``s`` (gradient
    ``M^-1 grad_r``) and sign steps in ``x`` (clipped to ``input_range``), with a
    linearly decaying step size; each restart keeps its best exact value.

    Parameters
    ----------
    net : OneHiddenLayerNet or LinearClassifier
    eps : float
    classes : tuple (i, y), optional
        For multi-class networks: attack the margin ``f_i - f_y``.
    x : array_like, shape (H, W), optional
        Fixed image (then ``optimize_x`` defaults to False); default: random images
        (uniform, binary and checkerboards) optimised jointly.
    tied : bool
        Tied flow ``du = dv = r`` with ``||M r|| <= eps`` or untied with
        ``||M du||^2 + ||M dv||^2 <= eps^2``.
    restarts, steps : int
    optimize_x : bool, optional
    input_range : tuple (lo, hi)
    padding : {"zeros", "border"}
    step_size : float
        Initial step as a fraction of ``eps`` (and of ``hi - lo`` for ``x``).
    seed : int

    Returns
    -------
    AttackResult
    """
    if isinstance(net, LinearClassifier):
        net = net.as_network()
    f = binary_view(net, classes)
    eps = check_budget("eps", eps)
    restarts = check_positive_int("restarts", restarts)
    steps = check_positive_int("steps", steps)
    input_constant(input_range, padding)
    lo, hi = (float(t) for t in input_range)
    H, W = f.image_shape
    rng = np.random.default_rng(seed)
    N = restarts
    if x is None:
        X = rng.uniform(lo, hi, (N, H, W))
        X[1::3] = np.where(rng.random((len(X[1::3]), H, W)) < 0.5, lo, hi)
        cb = (np.add.outer(np.arange(H), np.arange(W)) % 2).astype(bool)
        X[2::6] = np.where(cb, hi, lo)
        X[5::6] = np.where(cb, lo, hi)
        optimize_x = True if optimize_x is None else bool(optimize_x)
    else:
        x = as_float_array("x", x, dtype=np.float64).reshape(H, W)
        X = np.broadcast_to(x, (N, H, W)).copy()
        optimize_x = False if optimize_x is None else bool(optimize_x)
    shape = (N, H, W) if tied else (N, 2, H, W)
    s = rng.standard_normal(shape)
    # A few structured starts: constant flows of both signs.
    s[0] = 1.0
    if N > 3:
        s[3] = -1.0
    s = _project_ball(s / np.sqrt((s * s).sum(axis=tuple(range(1, s.ndim)), keepdims=True)) * eps, eps)
    best_val = np.full(N, -np.inf)
    best_x = X.copy()
    best_s = s.copy()

    def flow_of(s_):
        r = np.asarray(m_power(s_, -1))
        return np.stack([r, r], axis=1) if tied else r

    for t in range(steps + 1):
        flow = flow_of(s)
        xt = warp(X, flow, padding)
        val = f(xt) - f(X)
        better = val > best_val
        best_val[better] = val[better]
        best_x[better] = X[better]
        best_s[better] = s[better]
        if t == steps:
            break
        gxt = f.input_gradient(xt).reshape(N, H, W)
        gflow = warp_vjp_flow(X, flow, gxt, padding)
        gr = gflow[:, 0] + gflow[:, 1] if tied else gflow
        gs = np.asarray(m_power(gr, -1))
        nrm = np.sqrt((gs * gs).sum(axis=tuple(range(1, gs.ndim)), keepdims=True))
        alpha = step_size * (1.0 - t / steps) + 0.01
        s = _project_ball(s + alpha * eps * gs / np.maximum(nrm, 1e-300), eps)
        if optimize_x:
            gx = warp_vjp_x(flow, gxt, padding) - f.input_gradient(X).reshape(N, H, W)
            X = np.clip(X + alpha * (hi - lo) * np.sign(gx), lo, hi)
    k = int(np.argmax(best_val))
    r = flow_of(best_s[k:k + 1])[0]
    flow_out = r[0] if tied else r
    # Re-evaluate exactly at the returned pair (same arithmetic as adv_loss_exact).
    value = float(adv_loss_exact(f, best_x[k][None], flow_out[None], padding=padding)[0])
    budget = float(np.sqrt(np.sum(flow_out * np.asarray(m_power(flow_out[None], 2))[0])))
    return AttackResult(value=value, x=best_x[k], flow=flow_out, values=best_val, budget=budget)
