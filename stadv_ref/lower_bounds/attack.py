r"""Impossibility results (Section 3, appendix 6.4/6.6): Theorems 1-2 and Algorithms 1-2.

* :func:`lower_bound_attack` -- Theorem 1 (Eq. (6)) and Algorithm 1 (Eqs. (5)-(8))
  for ``f(x) = v^T relu(W x + b) + c``, binary or multi-class (appendix 6.6).
* :func:`linear_lower_bound_attack` -- Theorem 2 (Eq. (12)) and Algorithm 2
  (Eqs. (13)-(14)) for a linear classifier ``f(x) = v^T x``.

Both return a :class:`LowerBoundResult`. Its ``exact_loss`` is the true
``l_adv = f(g(r*; x*)) - f(x*)`` of a feasible pair (``||x*||_inf <= 1``,
``||M r*|| <= eps``) and therefore a **certified lower bound** on
``sup l_adv``, whatever produced the pair. ``theorem_value``,
``linearized_loss`` and ``midpoint_loss`` are **estimates**: the Theorems bound
the linearisation ``l~`` only ([E8]); it grows linearly in ``eps`` while the true
loss is bounded.

Corrections to the paper applied here (``docs/EQUATIONS.md``):

* [E9] ``W_d^-1`` needs ``rank W = d``, impossible for ``m < d`` (512 x 784):
  ``x* = pi_inf(W^+ 1)`` (the pseudo-inverse) is used and reported in ``notes``.
* [E4] ``M^-1`` is the symmetric ``L^(-1/2)``; [E14] Eq. (6) uses ``W^T diag(v)``.
* [E6] ``Dg`` of a tied flow is ``dx~/ddu + dx~/ddv`` (``jacobian="correct"``,
  default); ``jacobian="paper"`` uses the printed ``du`` term alone.
* [E10] the x-update can cycle: cycles are detected, loops capped, the best
  iterate by the exact loss kept, the trajectory recorded.
* [E14] the multi-class step *increases* the CW margin ``f_i - f_y`` (ascent).
* [E5] untied flows (``flow="untied"``): budget ``||M du||^2 + ||M dv||^2 <= eps^2``.
  A tied ``r`` has ``||M du||^2 + ||M dv||^2 = 2 ||M r||^2``, so the tied members
  of the untied ball of radius ``eps`` are the tied flows with
  ``||M r|| <= eps / sqrt(2)``; by default the untied attack starts from the tied
  attack at ``eps / sqrt(2)`` and so never does worse than it.

Only zero padding (the paper's Eq. (1)) is used. This module holds the public drivers;
the machinery lives in :mod:`.objectives` (Eqs. (5)-(8), (12)-(14)), :mod:`.alternating`
(the loop of Algorithms 1-2), :mod:`.flows`, :mod:`.theorem1`, :mod:`.linear` (Theorem 2)
and :mod:`.result`.
"""
from __future__ import annotations

import functools

import numpy as np

from .._validate import (
    as_float_array,
    check_budget,
    check_choice,
    check_class_index,
    check_class_pair,
    check_positive_int,
    check_seed,
)
from ..backend import as_numpy as _np
from ..network import OneHiddenLayerNet, as_linear_weights
from .alternating import Recorder, run_alternating
from .flows import _feasible
from .linear import theorem2_input
from .objectives import LinearObjective, MulticlassObjective, NetObjective, theorem_flow
from .result import LABELS, LowerBoundResult
from .theorem1 import theorem1_input

__all__ = [
    "lower_bound_attack",
    "linear_lower_bound_attack",
    "LowerBoundResult",
    "LABELS",
    "theorem1_input",
    "theorem2_input",
]

FLOWS = ("tied", "untied")
JACOBIANS = ("correct", "paper")
UNTIED_INITS = ("tied", "theorem")


def _check_x0(x0, shape):
    x0 = as_float_array("x0", x0, ndim=(1, 2), dtype=np.float64)
    if x0.size != shape[0] * shape[1] or (x0.ndim == 2 and x0.shape != tuple(shape)):
        raise ValueError(f"x0 must have shape {tuple(shape)} (or {shape[0] * shape[1]} entries), got {x0.shape}")
    if np.abs(x0).max() > 1 + 1e-12:
        raise ValueError(f"x0 must satisfy ||x0||_inf <= 1, got {np.abs(x0).max()}")
    return np.clip(x0.reshape(shape), -1.0, 1.0)


def _check_common(eps, flow, jacobian, n, max_iter, max_x_iter, tol, n_restarts, seed, untied_init,
                  algorithm, record_estimates, progress):
    """Validate the options shared by Algorithms 1 and 2; returns ``eps`` and the run options of :func:`_attack`."""
    eps = check_budget("eps", eps)
    check_choice("flow", flow, FLOWS)
    check_choice("jacobian", jacobian, JACOBIANS)
    check_choice("untied_init", untied_init, UNTIED_INITS)
    n = check_positive_int("n", n)
    max_iter = check_positive_int("max_iter", max_iter, minimum=0)
    max_x_iter = check_positive_int("max_x_iter", max_x_iter)
    tol = check_budget("tol", tol)
    n_restarts = check_positive_int("n_restarts", n_restarts, minimum=0)
    seed = check_seed("seed", seed)
    return eps, dict(jacobian=jacobian, n=n, max_iter=max_iter, max_x_iter=max_x_iter, tol=tol,
                     n_restarts=n_restarts, seed=seed, algorithm=algorithm, record_estimates=record_estimates,
                     progress=progress)


def _run_attack(rerun, obj, x_init, eps, *, flow, untied_init, store_iterates, notes, method, opts):
    """:func:`_attack` with the run options ``opts`` (from :func:`_check_common`).

    ``rerun(eps', flow="tied", ...)`` is the public attack on the same problem: with an untied
    flow and ``untied_init="tied"``, its tied result at ``eps' = eps / sqrt(2)`` is a warm start ([E5]).
    """
    tied_sub = None
    if flow == "untied" and untied_init == "tied":
        def tied_sub(e):
            return rerun(e, flow="tied", store_iterates=False, **opts)
    return _attack(obj, x_init, eps, flow=flow, store_iterates=store_iterates, notes=notes, method=method,
                   tied_sub=tied_sub, **opts)


def _attack(obj, x_init, eps, *, flow, jacobian, n, max_iter, max_x_iter, tol, n_restarts, seed,
            algorithm, store_iterates, record_estimates, progress, notes, method, tied_sub):
    """Shared driver: Theorem pair, optional tied warm start, Algorithm loop, restarts."""
    tied = flow == "tied"
    rec = Recorder(obj, eps, n, tied, jacobian, store_iterates, record_estimates)
    obj.select(x_init)  # r = 0: the adversarial input is x itself
    flow2, theorem_value = theorem_flow(obj, x_init, eps, tied)
    # Eq. (6)/(12) puts r* on the boundary ||M r*|| = eps; rounding can leave it an ulp
    # outside, so every initial pair is made feasible before its exact loss is recorded
    flow2, _ = _feasible(flow2, eps, tied)
    theorem_exact = rec.record(x_init, flow2, "init", 0, None, None)
    init_x, init_flow = x_init.copy(), (flow2[0] if tied else flow2).copy()
    if not tied and jacobian == "paper":
        notes.append("jacobian='paper' ([E6]) concerns tied flows only: the untied steps use the full Dg "
                     "(it affects only the tied warm start)")
    if not tied:
        notes.append(
            "untied: budget ||M du||^2 + ||M dv||^2 <= eps^2; theorem_value is sup of the symmetric "
            "extension (l~(du) + l~(dv))/2, equal to the tied Theorem value at eps/sqrt(2)"
        )
        if tied_sub is not None:
            sub = tied_sub(eps / np.sqrt(2.0))
            sub_flow2, _ = _feasible(np.stack([sub.flow, sub.flow]), eps, tied)
            rec.record(sub.x, sub_flow2, "init", 0, None, None)
            notes.append(
                f"untied run started from the tied {sub.method} result at eps/sqrt(2) "
                f"(exact {sub.exact_loss:.6g}), a feasible untied flow"
            )
    cycles = []
    outcomes = {"fixed_point": 0, "cycle": 0, "cap": 0}
    converged, n_outer = False, 0
    runs = []
    if algorithm:
        _, _, x_start, f_start, _ = rec.best
        conv, k = run_alternating(
            rec, x_start.copy(), f_start.copy(), restart=0, max_iter=max_iter, max_x_iter=max_x_iter,
            tol=tol, cycles=cycles, progress=progress, desc=f"{method} eps={eps:.3g}", outcomes=outcomes,
        )
        runs.append((0, conv))
        n_outer += k
    rng = np.random.default_rng(seed)
    for j in range(1, n_restarts + 1):
        xr = rng.choice([-1.0, 1.0], size=x_init.shape)
        obj.select(xr)
        fr, _ = theorem_flow(obj, xr, eps, tied)
        fr, _ = _feasible(fr, eps, tied)
        rec.record(xr, fr, "init", j, None, None)
        if algorithm:
            conv, k = run_alternating(
                rec, xr, fr, restart=j, max_iter=max_iter, max_x_iter=max_x_iter, tol=tol,
                cycles=cycles, progress=progress, desc=f"{method} restart {j}", outcomes=outcomes,
            )
            runs.append((j, conv))
            n_outer += k
    init_exact = max(h["exact_loss"] for h in rec.history if h["kind"] == "init")
    best_exact, best_step, bx, bflow2, classes = rec.best
    best_restart = rec.history[best_step]["restart"]
    converged = any(c for r, c in runs if r == best_restart)
    if cycles:
        nx = sum(c["kind"] == "x" for c in cycles)
        notes.append(f"[E10] {nx} x-update cycle(s) and {len(cycles) - nx} repeated whole state(s) detected")
    h = rec.fill_best()
    f_best = bflow2[0] if tied else bflow2
    return LowerBoundResult(
        x=bx, flow=f_best.copy(), eps=eps, exact_loss=best_exact, linearized_loss=h["linearized_loss"],
        midpoint_loss=h["midpoint_loss"], theorem_value=theorem_value, theorem_exact_loss=theorem_exact,
        init_exact_loss=init_exact, flow_norm=h["flow_norm"], x_inf_norm=float(np.abs(bx).max()),
        cycle_detected=bool(cycles), cycles=cycles, x_loop_outcomes=outcomes, converged=converged,
        n_outer=n_outer,
        history=rec.history, best_step=best_step, classes=classes, y=getattr(obj, "y", None), tied=tied,
        jacobian=jacobian, n=n, method=method, init_x=init_x, init_flow=init_flow, notes=notes,
        labels=dict(LABELS),
    )


def lower_bound_attack(net, eps, *, y=None, classes=None, x0=None, flow="tied", jacobian="correct", n=16,
                       max_iter=30, max_x_iter=20, tol=1e-9, n_restarts=0, seed=0, algorithm=True,
                       untied_init="tied", store_iterates=True, record_estimates=True, progress=None):
    """Theorem 1 and Algorithm 1: a certified lower bound on ``sup l_adv`` for a one-hidden-layer net.

    Maximises ``l_adv(x, r) = f(g(r; x)) - f(x)`` over ``||x||_inf <= 1``, ``||M r|| <= eps``
    (Section 3). Initialisation: Theorem 1, ``x* = pi_inf(W_d^-1 1)`` (pseudo-inverse
    ``W^+`` when ``m < d``, [E9]) and Eq. (6), ``r* = eps M^-1 pi_2(M^-1 diag(x*) W^T diag(v)
    dsigma(W x*))``. Then Algorithm 1 alternates the x-update ``x <- sign(alpha)`` (Eq. (7)
    with ``dsigma`` frozen, repeated until a fixed point or a cycle) and the r-update of
    Eq. (8) with the midpoint rule.

    Parameters
    ----------
    net : OneHiddenLayerNet
        Binary (``v`` of shape ``(m,)``) or multi-class network.
    eps : float
        Budget ``||M r|| <= eps`` (``>= 0``).
    y : int, optional
        Multi-class: the true class; the objective is the CW margin with ``kappa = 0``
        and every step works on the pair ``(runner-up, y)`` at the current adversarial
        input (appendix 6.6). Default: the class ``net`` predicts at the initial ``x``.
    classes : tuple (i, y), optional
        Multi-class: attack the fixed pair ``f_i - f_y`` instead.
    x0 : array_like, shape (H, W), optional
        Initial input (``||x0||_inf <= 1``) replacing Theorem 1's ``x*``; ``r`` still from Eq. (6).
    flow : {"tied", "untied"}
        Tied ``du = dv = r`` (the paper) or untied ``(du, dv)`` with budget
        ``||M du||^2 + ||M dv||^2 <= eps^2`` ([E5]).
    jacobian : {"correct", "paper"}
        ``Dg`` of a tied flow in Eqs. (7)-(8): ``dx~/ddu + dx~/ddv`` or the printed ``du`` term ([E6]).
    n : int
        Midpoints of Eq. (7).
    max_iter : int
        Cap on outer iterations (0: Theorem 1 only).
    max_x_iter : int
        Cap on x-updates per outer iteration.
    tol : float
        Outer convergence: x unchanged and ``||M (r_new - r)|| <= tol * eps``.
    n_restarts : int
        Extra runs from random sign inputs (``seed``); the best pair over all runs is returned.
    seed : int
    algorithm : bool
        False: return the Theorem 1 pair (no refinement).
    untied_init : {"tied", "theorem"}
        Untied only: also start from the tied attack at ``eps / sqrt(2)`` (default; its
        flows are feasible untied flows), or from the Theorem pair alone.
    store_iterates : bool
        Keep every iterate's ``x`` and flow in ``history``.
    record_estimates : bool
        Compute the midpoint and linearised estimates at every recorded step (False: only
        at the initial pairs and the returned pair; ``None`` in the other history entries).
    progress : bool, optional
        tqdm progress bar (``None``: only on a terminal).

    Returns
    -------
    LowerBoundResult
        ``exact_loss`` is the certified lower bound; ``theorem_value``, ``linearized_loss``,
        ``midpoint_loss`` are estimates (see :data:`LABELS`).

    Raises
    ------
    TypeError
        ``net`` is not a :class:`OneHiddenLayerNet`; ``y`` or an entry of ``classes`` is not an
        integer (floats and bools are refused, never truncated); ``classes`` is not a pair;
        ``eps``, ``tol`` not real numbers; ``n``, ``max_iter``, ``max_x_iter``, ``n_restarts``,
        ``seed`` not integers; ``x0`` not numeric.
    ValueError
        ``eps`` or ``tol`` negative or not finite; ``n < 1``, ``max_x_iter < 1``, ``max_iter < 0``,
        ``n_restarts < 0``, ``seed < 0``; ``flow``, ``jacobian``, ``untied_init`` not one of the
        choices; ``y`` or ``classes`` given for a binary network, both given, out of ``[0, K)``
        or ``classes`` with ``i == y``; ``x0`` of the wrong shape, not finite or with
        ``||x0||_inf > 1``.

    Examples
    --------
    >>> import numpy as np, stadv_ref
    >>> rng = np.random.default_rng(0)
    >>> net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((6, 16)), rng.standard_normal(6))
    >>> res = stadv_ref.lower_bound_attack(net, 1.0, max_iter=5)
    >>> bool(res.flow_norm <= 1.0 + 1e-9 and res.x_inf_norm <= 1.0)
    True
    """
    if not isinstance(net, OneHiddenLayerNet):
        raise TypeError(f"net must be a OneHiddenLayerNet, got {type(net).__name__}")
    eps, opts = _check_common(eps, flow, jacobian, n, max_iter, max_x_iter, tol, n_restarts, seed, untied_init,
                              algorithm, record_estimates, progress)
    K = net.n_classes
    if net.binary:
        if y is not None:
            raise ValueError("y is only for multi-class networks")
        if classes is not None:
            raise ValueError("classes is only for multi-class networks")
    if y is not None:
        y = check_class_index("y", y, K)
    if classes is not None:
        if y is not None:
            raise ValueError("pass either y or classes, not both")
        ci, cy = check_class_pair("classes", classes, K)
    shape = net.image_shape
    if x0 is None:
        x_init, notes = theorem1_input(net)
    else:
        x_init, notes = _check_x0(x0, shape), ["x0 given: Theorem 1's x* replaced by x0"]
    if net.binary:
        obj = NetObjective(net)
    elif classes is not None:
        obj = NetObjective(net, (ci, cy))
        notes.append(f"fixed class pair f_{ci} - f_{cy}")
    else:
        if y is None:
            y = int(_np(net.predict(x_init[None]))[0])
            notes.append(f"y not given: y = {y}, the class net predicts at the initial x")
        obj = MulticlassObjective(net, y)
        notes.append(f"multi-class (6.6): CW margin kappa = 0, true class y = {y}, runner-up pair per step [E14]")
    return _run_attack(
        functools.partial(lower_bound_attack, net, y=y, classes=classes, x0=x0), obj, x_init, eps, flow=flow,
        untied_init=untied_init, store_iterates=store_iterates, notes=notes,
        method="algorithm1" if algorithm else "theorem1", opts=opts,
    )


def linear_lower_bound_attack(v, eps, image_shape=None, *, x0=None, flow="tied", jacobian="correct", n=16,
                              max_iter=30, max_x_iter=20, tol=1e-9, n_restarts=0, seed=0, algorithm=True,
                              untied_init="tied", store_iterates=True, record_estimates=True, progress=None,
                              eig_tol=0.0):
    """Theorem 2 and Algorithm 2: a certified lower bound on ``sup l_adv`` for ``f(x) = v^T x``.

    Initialisation (Theorem 2): ``v*`` the top eigenvector of ``diag(v) M^-2 diag(v)``
    (matrix-free ``eigsh``), ``x* = pi_inf(v*)`` and Eq. (12),
    ``r* = eps M^-1 pi_2(M^-1 diag(v) x*)``, value ``eps ||M^-1 diag(v) x*||``. Algorithm 2
    alternates ``x <- sign(alpha)`` (coefficients of Eq. (13)) and Eq. (14). The exact loss is
    ``v^T (g(r; x) - x)`` (an output bias cancels).

    Parameters
    ----------
    v : array_like, shape (d,) or (H, W)
        Weights of the linear classifier.
    eps : float
        Budget ``||M r|| <= eps``.
    image_shape : tuple (H, W), optional
        Needed for a flat ``v`` of non-square length.
    x0, flow, jacobian, n, max_iter, max_x_iter, tol, n_restarts, seed, algorithm, untied_init,
    store_iterates, record_estimates, progress
        As in :func:`lower_bound_attack`.
    eig_tol : float
        ``eigsh`` tolerance (0: machine precision).

    Returns
    -------
    LowerBoundResult

    Raises
    ------
    TypeError
        ``v`` not numeric; ``image_shape`` not a pair of integers; the options as in
        :func:`lower_bound_attack`; ``eig_tol`` not a real number.
    ValueError
        ``v`` not finite, empty or not of shape ``(d,)``/``(H, W)`` matching ``image_shape``;
        the options as in :func:`lower_bound_attack`; ``eig_tol`` negative or not finite.
    """
    v_img = as_linear_weights(v, image_shape)
    eps, opts = _check_common(eps, flow, jacobian, n, max_iter, max_x_iter, tol, n_restarts, seed, untied_init,
                              algorithm, record_estimates, progress)
    eig_tol = check_budget("eig_tol", eig_tol)
    if x0 is None:
        x_init, _, notes = theorem2_input(v_img, seed=opts["seed"], tol=eig_tol)
    else:
        x_init, notes = _check_x0(x0, v_img.shape), ["x0 given: Theorem 2's x* replaced by x0"]
    obj = LinearObjective(v_img)
    return _run_attack(
        functools.partial(linear_lower_bound_attack, v_img, x0=x0, eig_tol=eig_tol), obj, x_init, eps, flow=flow,
        untied_init=untied_init, store_iterates=store_iterates, notes=notes,
        method="algorithm2" if algorithm else "theorem2", opts=opts,
    )
