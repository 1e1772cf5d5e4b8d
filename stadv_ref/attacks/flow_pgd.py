r"""The projected-gradient flow attack: the adversary every certificate is tested against.

:func:`flow_pgd_attack` maximises the exact adversarial loss ``l_adv(x, r) = f(g(r; x)) - f(x)``
(Section 3, Eq. (4)) over the budget ellipsoid ``||M r|| <= eps`` of Eq. (3) (in
``M``-coordinates ``s = M r`` the ellipsoid is a ball, so projection is a rescaling),
optionally jointly over the image ``x`` in the input box, with random restarts (and
caller-given starting images and flows), tied or untied flows, zero or border padding, and a
linear or cosine step-size schedule. Every value it returns is a true loss at a feasible
pair, so it is a valid lower bound on the supremum that the upper bounds must exceed.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .._validate import (
    as_float_array,
    check_budget,
    check_choice,
    check_input_range,
    check_positive_int,
    check_seed,
)
from ..adversarial_loss import adv_loss_exact, binary_view
from ..network import LinearClassifier
from ..operators import m_power
from ..transform import PADDINGS, warp, warp_vjp_flow, warp_vjp_x

__all__ = ["AttackResult", "flow_pgd_attack", "SCHEDULES"]

SCHEDULES = ("linear", "cosine")
"""Step-size schedules of :func:`flow_pgd_attack`: both decay from ``step_size + 0.01`` to ``0.01``."""


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


def _step(step_size, t, steps, schedule):
    """Step size at iteration ``t`` of ``steps``: ``step_size`` times a decay from 1 to 0, plus 0.01."""
    if schedule == "cosine":
        return step_size * 0.5 * (1.0 + np.cos(np.pi * t / steps)) + 0.01
    return step_size * (1.0 - t / steps) + 0.01


def _flow_starts(rng, shape, eps):
    """The random starting flows ``s = M r`` of ``shape = (restarts, ...)`` on the budget's boundary:
    Gaussian directions from ``rng``, restart 0 the constant flow ``+1`` and restart 3 ``-1``."""
    s = rng.standard_normal(shape)
    s[0] = 1.0
    if shape[0] > 3:
        s[3] = -1.0
    return _project_ball(s / np.sqrt((s * s).sum(axis=tuple(range(1, s.ndim)), keepdims=True)) * eps, eps)


def _flow_of(s, tied):
    """The flow ``(N, 2, H, W)`` of ``s = M r``: ``r = M^-1 s``, both components ``r`` when tied."""
    r = np.asarray(m_power(s, -1))
    return np.stack([r, r], axis=1) if tied else r


def _starts(name, a, shape, restarts):
    """Validate caller-given starts: ``(k,) + shape`` (or ``shape`` for one start), ``k <= restarts``."""
    a = as_float_array(name, a, ndim=(len(shape), len(shape) + 1), dtype=np.float64)
    a = a if a.ndim == len(shape) + 1 else a[None]
    if a.shape[1:] != shape:
        raise ValueError(f"{name} must have shape (k, {', '.join(map(str, shape))}), got {tuple(a.shape)}")
    if a.shape[0] > restarts:
        raise ValueError(f"{name} has {a.shape[0]} starts but restarts = {restarts}")
    return a


def flow_pgd_attack(net, eps, *, classes=None, x=None, tied=True, restarts=32, steps=200, optimize_x=None,
                    input_range=(0.0, 1.0), padding="zeros", step_size=0.25, seed=0, x_starts=None,
                    r_starts=None, schedule="linear"):
    """Projected gradient ascent on the exact ``l_adv`` over ``||M r|| <= eps`` (and optionally ``x``).

    Parametrises the flow by ``s = M r`` (tied) or ``s = (M du, M dv)`` (untied), so the
    budget set is the Euclidean ball ``||s|| <= eps`` and projection is a rescaling;
    ``r = M^-1 s``. Steps are normalised gradient steps in ``s`` (gradient
    ``M^-1 grad_r``) and sign steps in ``x`` (clipped to ``input_range``), with a
    decaying step size (linear or cosine); each restart keeps its best exact value.

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
        Initial step as a fraction of ``eps`` (and of ``hi - lo`` for ``x``), above the
        final step 0.01.
    seed : int
    x_starts : array_like, shape (k, H, W), optional
        Starting images (e.g. constructions) for the first ``k <= restarts`` restarts, inside
        ``input_range``; the other restarts start from the default images. Only with ``x=None``.
    r_starts : array_like, shape (k, H, W) (tied) or (k, 2, H, W) (untied), optional
        Starting flows for the first ``k <= restarts`` restarts, projected onto the budget
        ``||M r|| <= eps`` (a feasible start is kept as it is); the other restarts start from
        random flows on the budget's boundary.
    schedule : {"linear", "cosine"}
        Decay of the step size from ``step_size + 0.01`` at the first step to 0.01 at the
        last: linear (default) or cosine (``step_size (1 + cos(pi t / steps)) / 2 + 0.01``).

    Returns
    -------
    AttackResult

    Raises
    ------
    TypeError
        ``net`` is not a network; ``classes`` not a pair of integers (floats and bools are
        refused); ``eps``, ``step_size`` not real numbers; ``restarts``, ``steps``, ``seed`` not
        integers; ``x``, ``x_starts``, ``r_starts`` not numeric.
    ValueError
        ``eps`` or ``step_size`` negative or not finite; ``restarts``, ``steps < 1``; ``seed < 0``;
        ``classes`` missing (multi-class), given (binary), out of range or equal; bad
        ``input_range``; ``padding`` or ``schedule`` not one of the choices; ``x`` not one
        ``(H, W)`` image, not finite or outside ``input_range``; ``x_starts`` with ``x`` given,
        of the wrong shape, more starts than ``restarts`` or outside ``input_range``;
        ``r_starts`` of the wrong shape or too many.
    """
    if isinstance(net, LinearClassifier):
        net = net.as_network()
    f = binary_view(net, classes)
    eps = check_budget("eps", eps)
    restarts = check_positive_int("restarts", restarts)
    steps = check_positive_int("steps", steps)
    lo, hi = check_input_range("input_range", input_range)
    check_choice("padding", padding, PADDINGS)
    check_choice("schedule", schedule, SCHEDULES)
    step_size = check_budget("step_size", step_size)
    seed = check_seed("seed", seed)
    H, W = f.image_shape
    if x is not None:
        x = as_float_array("x", x, ndim=2, dtype=np.float64)
        if x.shape != (H, W):
            raise ValueError(f"x must be one {H}x{W} image, got shape {x.shape}")
        if x.min() < lo or x.max() > hi:
            raise ValueError(f"x must lie in input_range {(lo, hi)}, got values in [{x.min()}, {x.max()}]")
    if x_starts is not None:
        if x is not None:
            raise ValueError("x_starts needs x=None (with a fixed x every restart starts from x)")
        x_starts = _starts("x_starts", x_starts, (H, W), restarts)
        if x_starts.size and (x_starts.min() < lo or x_starts.max() > hi):
            raise ValueError(f"x_starts must lie in input_range {(lo, hi)}, got values in "
                             f"[{x_starts.min()}, {x_starts.max()}]")
    if r_starts is not None:
        r_starts = _starts("r_starts", r_starts, (H, W) if tied else (2, H, W), restarts)
    rng = np.random.default_rng(seed)
    N = restarts
    if x is None:
        X = rng.uniform(lo, hi, (N, H, W))
        X[1::3] = np.where(rng.random((len(X[1::3]), H, W)) < 0.5, lo, hi)
        cb = (np.add.outer(np.arange(H), np.arange(W)) % 2).astype(bool)
        X[2::6] = np.where(cb, hi, lo)
        X[5::6] = np.where(cb, lo, hi)
        if x_starts is not None:
            X[: len(x_starts)] = x_starts
        optimize_x = True if optimize_x is None else bool(optimize_x)
    else:
        X = np.broadcast_to(x, (N, H, W)).copy()
        optimize_x = False if optimize_x is None else bool(optimize_x)
    s = _flow_starts(rng, (N, H, W) if tied else (N, 2, H, W), eps)
    if r_starts is not None:
        s[: len(r_starts)] = _project_ball(np.asarray(m_power(r_starts, 1)), eps)
    best_val = np.full(N, -np.inf)
    best_x = X.copy()
    best_s = s.copy()

    for t in range(steps + 1):
        flow = _flow_of(s, tied)
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
        alpha = _step(step_size, t, steps, schedule)
        s = _project_ball(s + alpha * eps * gs / np.maximum(nrm, 1e-300), eps)
        if optimize_x:
            gx = warp_vjp_x(flow, gxt, padding) - f.input_gradient(X).reshape(N, H, W)
            X = np.clip(X + alpha * (hi - lo) * np.sign(gx), lo, hi)
    k = int(np.argmax(best_val))
    r = _flow_of(best_s[k:k + 1], tied)[0]
    flow_out = r[0] if tied else r
    # Re-evaluate exactly at the returned pair (same arithmetic as adv_loss_exact).
    value = float(adv_loss_exact(f, best_x[k][None], flow_out[None], padding=padding)[0])
    budget = float(np.sqrt(np.sum(flow_out * np.asarray(m_power(flow_out[None], 2))[0])))
    return AttackResult(value=value, x=best_x[k], flow=flow_out, values=best_val, budget=budget)
