r"""Shared machinery of the lower-bound attacks (Algorithms 1 and 2, Eqs. (5)-(8), (12)-(14)).

The attacks of Section 3 and appendix 6.4 alternate two updates on a pair
``(x, r)`` with ``||x||_inf <= 1`` and ``||M r|| <= eps``:

* **x-update** (Eqs. (7)/(13)): with the ReLU pattern ``dsigma`` frozen at the
  current ``x``, the midpoint estimate

  .. math:: \frac1n \sum_{i=1}^n \nabla f(g(r^{(i)}; x))^T\, Dg(r^{(i)}; x)\, r,
            \qquad r^{(i)} = \tfrac{2i-1}{2n} r

  is linear in ``x`` (the warp is linear in ``x``); its coefficients are
  ``alpha = (1/n) sum_i J_i^T grad_i`` with ``J_i x = Dg(r^{(i)}; x) r``, and the
  update is ``x <- sign(alpha)``.
* **r-update** (Eqs. (8)/(14)): ``r <- eps M^-1 pi_2(M^-1 s)`` with
  ``s = (1/n) sum_i Dg(r^{(i)}; x)^T grad_i``, the maximiser of ``s^T r`` over the
  ellipsoid ``||M r|| <= eps``; ``M^-1`` is :func:`stadv_ref.operators.m_power`
  (``M`` symmetric, [E4]).

``J_i^T`` is computed exactly with the public warp adjoint: on a cell of the
sampling grid the warp is linear in each flow component, so the right partial
derivative ``d g / d du`` equals ``warp(x, flow_a) - warp(x, flow_b)`` where
``flow_a``/``flow_b`` move the column coordinate to ``floor(u + du) + 1`` and
``floor(u + du)`` (the same for ``dv`` with rows); its adjoint in ``x`` is
``warp_vjp_x(flow_a, .) - warp_vjp_x(flow_b, .)``. Every array operation on
images goes through the dispatched public functions (``warp``, ``warp_vjp_x``,
``warp_vjp_flow``, ``tied_jacobian_diag``, ``m_power``, ``smoothness_norm``,
``net.forward``/``net.input_gradient``) without a ``backend`` argument, so the
algorithms run unchanged on whichever backend is current; results are brought
back to NumPy with the backend's ``to_numpy`` for the (cheap) bookkeeping.

The x-update need not converge ([E10]): it can cycle. Cycles of sign patterns
are detected by hashing the visited patterns; both loops are capped; the best
iterate by the *exact* loss is kept; the trajectory is recorded.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..backend import get_backend
from ..operators import m_power, smoothness_norm
from ..transform import tied_jacobian_diag, warp, warp_vjp_flow, warp_vjp_x

__all__ = ["LowerBoundResult", "LABELS"]

LABELS = {
    "exact_loss": (
        "certified lower bound on sup l_adv over ||x||_inf <= 1, ||M r|| <= eps: the true "
        "l_adv = f(g(r; x)) - f(x) of the returned feasible pair"
    ),
    "theorem_exact_loss": "certified lower bound: true l_adv of the Theorem 1/2 pair",
    "init_exact_loss": "certified lower bound: best true l_adv among the initial pairs",
    "theorem_value": (
        "estimate: Theorem 1/2 value eps*||M^-1 a||, a statement about the linearisation l~ "
        "only ([E8]); not a bound on l_adv"
    ),
    "linearized_loss": "estimate: the paper's linearisation l~ = grad f(x)^T diag(x) r ([E8]) at the pair",
    "midpoint_loss": "estimate: midpoint rule of Eq. (7)/(13) (n midpoints) at the pair",
}
"""What each loss field of :class:`LowerBoundResult` is: a certified bound or an estimate."""


@dataclass
class LowerBoundResult:
    """Result of :func:`stadv_ref.lower_bound_attack` / :func:`stadv_ref.linear_lower_bound_attack`.

    Attributes
    ----------
    x : ndarray, shape (H, W)
        The input ``x*`` (``||x*||_inf <= 1``).
    flow : ndarray, shape (H, W) (tied ``r*``) or (2, H, W) (untied ``(du, dv)``)
        The flow ``r*`` (``||M r*|| <= eps``; untied: ``||M du||^2 + ||M dv||^2 <= eps^2``).
    eps : float
        Budget.
    exact_loss : float
        **Certified lower bound** on the supremum of ``l_adv`` over the feasible set: the
        true ``f(g(r*; x*)) - f(x*)`` (multi-class: the largest over ``i != y`` of the
        margin change of ``f_i - f_y``).
    linearized_loss : float
        Estimate: the paper's ``l~`` at the returned pair ([E8]).
    midpoint_loss : float
        Estimate: Eq. (7)/(13) with ``n`` midpoints at the returned pair.
    theorem_value : float
        Estimate: the value of Theorem 1 (network) or Theorem 2 (linear), a lower bound on
        ``sup l~`` only, not on ``sup l_adv`` ([E8]).
    theorem_exact_loss : float
        True ``l_adv`` at the Theorem pair (certified, usually much smaller).
    init_exact_loss : float
        Best true ``l_adv`` among the initial pairs (Theorem pair and restarts).
    flow_norm : float
        ``||M r*||`` (tied) or ``sqrt(||M du||^2 + ||M dv||^2)`` (untied); ``<= eps``.
    x_inf_norm : float
        ``||x*||_inf``; ``<= 1``.
    cycle_detected : bool
        Whether any x-update loop revisited a sign pattern ([E10]).
    x_loop_outcomes : dict
        How the x-update loops ended: ``fixed_point``, ``cycle`` or ``cap`` (the cap
        ``max_x_iter`` was reached with every pattern new), counted over all runs.
    cycles : list of dict
        One entry per detected cycle: ``restart``, ``outer``, ``inner``, ``period``.
    converged : bool
        Whether the outer loop of the best run stopped by convergence (not by the cap
        or a cycle of whole states).
    n_outer : int
        Outer iterations run (all restarts).
    history : list of dict
        Every evaluated iterate in order: ``step``, ``restart``, ``outer``, ``inner``,
        ``kind`` (``"init"``, ``"x"``, ``"r"``), ``exact_loss``, ``midpoint_loss``,
        ``linearized_loss``, ``flow_norm``, ``pair``, ``step_pair`` (the pair the step
        used), ``x_hash`` and ``n_flips`` (entries of ``x`` changed by an x-update); with
        ``store_iterates`` also ``x`` and ``flow`` arrays.
    best_step : int
        Index in ``history`` of the returned pair.
    classes : tuple of int or None
        Multi-class: ``(i, y)``, the class pair whose margin change is ``exact_loss``.
    y : int or None
        Multi-class: the true class.
    tied : bool
        Tied flow (``du = dv = r``, the paper) or untied.
    jacobian : str
        ``"correct"`` or ``"paper"`` ([E6]), the ``Dg`` used by Eqs. (7)-(8).
    n : int
        Midpoints of Eq. (7)/(13).
    method : str
        ``"algorithm1"``, ``"theorem1"``, ``"algorithm2"`` or ``"theorem2"``.
    init_x, init_flow : ndarray
        The Theorem pair.
    notes : list of str
        Facts about this run (pseudo-inverse used, fallbacks, cycles...).
    labels : dict
        :data:`LABELS`: which fields are certified and which are estimates.
    """

    x: np.ndarray
    flow: np.ndarray
    eps: float
    exact_loss: float
    linearized_loss: float
    midpoint_loss: float
    theorem_value: float
    theorem_exact_loss: float
    init_exact_loss: float
    flow_norm: float
    x_inf_norm: float
    cycle_detected: bool
    cycles: list
    x_loop_outcomes: dict
    converged: bool
    n_outer: int
    history: list
    best_step: int
    classes: Any
    y: Any
    tied: bool
    jacobian: str
    n: int
    method: str
    init_x: np.ndarray
    init_flow: np.ndarray
    notes: list = field(default_factory=list)
    labels: dict = field(default_factory=lambda: dict(LABELS))

    def summary(self):
        """The scalar fields as a JSON-ready dict (no arrays, no history)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name in ("x", "flow", "init_x", "init_flow", "history"):
                continue
            val = getattr(self, f.name)
            if isinstance(val, (np.floating, np.integer)):
                val = val.item()
            if isinstance(val, tuple):
                val = list(val)
            out[f.name] = val
        out["n_history"] = len(self.history)
        return out

    def loss_curve(self, kind=None):
        """Exact loss per recorded step (optionally only steps of ``kind``), as an array."""
        return np.array([h["exact_loss"] for h in self.history if kind is None or h["kind"] == kind])


# ---------------------------------------------------------------------------
# Backend-neutral helpers
# ---------------------------------------------------------------------------
def _np(a):
    """A dispatched function's result as a NumPy array."""
    return np.asarray(get_backend().to_numpy(a))


def _hash(x):
    return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]


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


# ---------------------------------------------------------------------------
# Objectives: what f is (binary net, pair of a multi-class net, linear)
# ---------------------------------------------------------------------------
class NetObjective:
    """A binary network, or a fixed class pair ``f_i - f_y`` (appendix 6.6)."""

    multiclass = False

    def __init__(self, net, classes=None):
        self.net = net
        self.classes = None if classes is None else (int(classes[0]), int(classes[1]))
        self.f = net if classes is None else net.pair(*self.classes)
        self.shape = net.image_shape

    def select(self, x_adv):
        """Choose the class pair for the next step (no-op for a binary objective)."""

    @property
    def pair(self):
        return self.classes

    def grad(self, X):
        """``grad f`` at images ``X (N, H, W)``, shape (N, H, W)."""
        return _np(self.f.input_gradient(X)).reshape(X.shape)

    def exact(self, x, flow4):
        """True ``l_adv`` of one pair; returns ``(value, classes)``."""
        xa = _np(warp(x[None], flow4[None]))
        val = float(_np(self.f(xa))[0] - _np(self.f(x[None]))[0])
        return val, self.classes


class MulticlassObjective:
    """CW margin with ``kappa = 0`` (appendix 6.6): each step uses ``f_i - f_y`` for the
    current runner-up ``i`` at the adversarial input ([E14]: ascent on the margin)."""

    multiclass = True

    def __init__(self, net, y):
        self.net = net
        self.y = int(y)
        self.shape = net.image_shape
        self._pairs = {}
        self.i = None
        self.f = None

    def select(self, x_adv):
        out = _np(self.net(x_adv[None]))[0].copy()
        out[self.y] = -np.inf
        i = int(np.argmax(out))
        if i not in self._pairs:
            self._pairs[i] = self.net.pair(i, self.y)
        self.i, self.f = i, self._pairs[i]

    @property
    def pair(self):
        return None if self.i is None else (self.i, self.y)

    def grad(self, X):
        return _np(self.f.input_gradient(X)).reshape(X.shape)

    def exact(self, x, flow4):
        """Largest margin change ``max_{i != y} (f_i - f_y)(g) - (f_i - f_y)(x)``."""
        xa = _np(warp(x[None], flow4[None]))
        out_a = _np(self.net(xa))[0]
        out_x = _np(self.net(x[None]))[0]
        change = (out_a - out_a[self.y]) - (out_x - out_x[self.y])
        change[self.y] = -np.inf
        i = int(np.argmax(change))
        return float(change[i]), (i, self.y)


class LinearObjective:
    """Linear classifier ``f(x) = v^T x + c`` (appendix 6.4)."""

    multiclass = False
    pair = None

    def __init__(self, v_img):
        self.v = v_img
        self.shape = v_img.shape

    def select(self, x_adv):
        pass

    def grad(self, X):
        return np.broadcast_to(self.v, X.shape)

    def exact(self, x, flow4):
        """``v^T (g(r; x) - x)``."""
        xa = _np(warp(x[None], flow4[None]))[0]
        return float((self.v * (xa - x)).sum()), None


# ---------------------------------------------------------------------------
# One evaluation of Eqs. (7)/(8) at a pair
# ---------------------------------------------------------------------------
def probe(obj, x, flow2, n, tied, jacobian, want_alpha=True):
    """Midpoint machinery at ``(x, flow)`` with ``dsigma`` frozen at ``x``.

    Returns
    -------
    alpha : ndarray (H, W) or None
        Coefficients of ``x`` in Eq. (7)/(13).
    s : ndarray (H, W) tied or (2, H, W) untied
        ``(1/n) sum_i Dg(r^(i); x)^T grad_i`` (the direction of Eq. (8)/(14)).
    midpoint : float
        Eq. (7)/(13): ``s^T r`` ( = ``alpha^T x``).
    """
    flows = midpoint_flows(flow2, n)
    x_rep = np.broadcast_to(x, (n,) + x.shape).copy()
    X_mid = _np(warp(x_rep, flows))
    G = obj.grad(X_mid)
    if tied:
        r = flow2[0]
        jac = _np(tied_jacobian_diag(x_rep, flows[:, 0], variant=jacobian))
        s = (jac * G).mean(axis=0)
        mid = float((s * r).sum())
    else:
        s = _np(warp_vjp_flow(x_rep, flows, G)).mean(axis=0)
        mid = float((s * flow2).sum())
    alpha = None
    if want_alpha:
        axes = (0,) if (tied and jacobian == "paper") else (0, 1)
        alpha = np.zeros(x.shape)
        for ax in axes:
            w = G * flow2[ax][None]
            alpha += partial_adjoint(flows, w, ax).mean(axis=0)
    return alpha, s, mid


def linearized(obj, x, flow2, tied):
    """The paper's ``l~ = grad f(x)^T diag(x) r`` ([E8]); untied: ``(l~(du) + l~(dv)) / 2``."""
    gx = obj.grad(x[None])[0]
    if tied:
        return float((gx * x * flow2[0]).sum())
    return float(0.5 * (gx * x * (flow2[0] + flow2[1])).sum())


def theorem_flow(obj, x, eps, tied):
    """Eqs. (6)/(12): ``r* = eps M^-1 pi_2(M^-1 a)``, ``a = diag(x) grad f(x)``.

    Untied: ``(r*, r*) / sqrt(2)`` at budget ``eps``, the maximiser of the symmetric
    extension ``(l~(du) + l~(dv)) / 2``; its value is ``eps ||M^-1 a|| / sqrt(2)``.

    Returns ``(flow2 (2, H, W), value)``.
    """
    a = x * obj.grad(x[None])[0]
    r, val = ellipsoid_argmax(a, eps)
    if tied:
        return np.stack([r, r]), val
    return np.stack([r, r]) / np.sqrt(2.0), val / np.sqrt(2.0)


# ---------------------------------------------------------------------------
# The alternating loop (Algorithm 1 lines 4-8, Algorithm 2 lines 4-7)
# ---------------------------------------------------------------------------
class Recorder:
    """Evaluates iterates, keeps the history and the best pair by exact loss."""

    def __init__(self, obj, eps, n, tied, jacobian, store_iterates, estimates=True):
        self.obj, self.eps, self.n, self.tied, self.jacobian = obj, eps, n, tied, jacobian
        self.store = store_iterates
        self.estimates = estimates
        self.history = []
        self.best = None  # (exact, step, x, flow2, classes)

    def estimate(self, x, flow2):
        """``(midpoint, linearised)`` estimates at a pair (pair chosen at its adversarial input)."""
        obj = self.obj
        obj.select(_np(warp(x[None], flow2[None]))[0])
        _, _, mid = probe(obj, x, flow2, self.n, self.tied, self.jacobian, want_alpha=False)
        return mid, linearized(obj, x, flow2, self.tied)

    def fill_best(self):
        """Compute the estimates of the best entry if they were skipped (``estimates=False``)."""
        _, step, x, flow2, _ = self.best
        h = self.history[step]
        if h["midpoint_loss"] is None:
            h["midpoint_loss"], h["linearized_loss"] = self.estimate(x, flow2)
            h["step_pair"] = None if self.obj.pair is None else list(self.obj.pair)
        return h

    def record(self, x, flow2, kind, restart, outer, inner, n_flips=None):
        obj = self.obj
        exact, classes = obj.exact(x, flow2)
        mid = lin = None
        if self.estimates or kind == "init":
            mid, lin = self.estimate(x, flow2)
        f = flow2[0] if self.tied else flow2
        entry = {
            "step": len(self.history),
            "restart": restart,
            "outer": outer,
            "inner": inner,
            "kind": kind,
            "exact_loss": exact,
            "midpoint_loss": mid,
            "linearized_loss": lin,
            "flow_norm": float(_np(smoothness_norm(f[None]))[0]),
            "pair": None if classes is None else list(classes),
            "step_pair": None if obj.pair is None else list(obj.pair),
            "x_hash": _hash(x),
            "n_flips": n_flips,
        }
        if self.store:
            entry["x"] = x.copy()
            entry["flow"] = f.copy()
        self.history.append(entry)
        if self.best is None or exact > self.best[0]:
            self.best = (exact, entry["step"], x.copy(), flow2.copy(), classes)
        return exact


def run_alternating(rec, x, flow2, *, restart, max_iter, max_x_iter, tol, cycles, progress, desc,
                    outcomes=None):
    """Alternate x-updates (inner loop, cycle detection) and r-updates (Eq. (8)/(14)).

    ``outcomes`` (dict) counts how each x-update loop ended: ``fixed_point``, ``cycle``
    or ``cap`` (``max_x_iter`` reached without repeating a pattern).

    Returns ``(converged, n_outer)``.
    """
    if outcomes is None:
        outcomes = {}
    obj, eps, n, tied, jac = rec.obj, rec.eps, rec.n, rec.tied, rec.jacobian
    seen_states = {(_hash(x), _hash(np.round(flow2 / max(eps, 1e-300), 10)))}
    converged = False
    outer = 0
    bar = tqdm(range(max_iter), desc=desc, disable=(None if progress is None else not progress), leave=False)
    for outer in bar:
        # -- refinement of x (Algorithm 1 lines 5-7), dsigma frozen at the current x
        order = [_hash(x)]
        states = {order[0]: (x.copy(), None)}
        x_moved = False
        outcome = "cap"
        for inner in range(max_x_iter):
            obj.select(_np(warp(x[None], flow2[None]))[0])
            alpha, _, _ = probe(obj, x, flow2, n, tied, jac)
            x_new = np.where(alpha > 0, 1.0, np.where(alpha < 0, -1.0, x))
            if np.array_equal(x_new, x):
                outcome = "fixed_point"
                break
            key = _hash(x_new)
            if key in states:  # [E10]: the sign update revisited a pattern
                start = order.index(key)
                period = len(order) - start
                cycles.append({"kind": "x", "restart": restart, "outer": outer, "inner": inner, "period": period})
                # continue from the best pattern of the cycle (true loss at the current r)
                cands = [states[k] for k in order[start:]]
                vals = [c[1] if c[1] is not None else obj.exact(c[0], flow2)[0] for c in cands]
                x = cands[int(np.argmax(vals))][0].copy()
                x_moved = True
                outcome = "cycle"
                break
            n_flips = int((x_new != x).sum())
            x = x_new
            x_moved = True
            val = rec.record(x, flow2, "x", restart, outer, inner, n_flips=n_flips)
            order.append(key)
            states[key] = (x.copy(), val)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        # -- refinement of r (line 8), Eq. (8)/(14)
        obj.select(_np(warp(x[None], flow2[None]))[0])
        _, s, _ = probe(obj, x, flow2, n, tied, jac, want_alpha=False)
        new, _ = ellipsoid_argmax(s, eps)
        new2 = np.stack([new, new]) if tied else new
        new2, _ = _feasible(new2, eps, tied)
        change = float(_np(smoothness_norm(((new2 - flow2)[0] if tied else new2 - flow2)[None]))[0])
        flow2 = new2
        rec.record(x, flow2, "r", restart, outer, None)
        if progress:
            bar.set_postfix(best=f"{rec.best[0]:.4g}")
        if not x_moved and change <= tol * max(eps, 1e-300):
            converged = True
            break
        state = (_hash(x), _hash(np.round(flow2 / max(eps, 1e-300), 10)))
        if state in seen_states:
            cycles.append({"kind": "state", "restart": restart, "outer": outer, "inner": None, "period": None})
            break
        seen_states.add(state)
    bar.close()
    return converged, (outer + 1 if max_iter > 0 else 0)
