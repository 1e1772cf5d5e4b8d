r"""The alternating loop of Algorithm 1 (lines 4-8) and Algorithm 2 (lines 4-7).

:func:`run_alternating` alternates x-updates ``x <- sign(alpha)`` (the coefficients of
Eq. (7)/(13), repeated until a fixed point, a cycle or a cap) and r-updates (Eq. (8)/(14),
:func:`~.flows.ellipsoid_argmax`); :class:`Recorder` evaluates every iterate (the exact
``l_adv``, the midpoint rule of Eq. (7)/(13), the linearisation ``l~`` of [E8]), keeps the
history and the best pair by the *exact* loss.

The x-update need not converge ([E10]): it can cycle. Cycles of sign patterns are
detected by hashing the visited patterns; both loops are capped; the best iterate by the
exact loss is kept; the trajectory is recorded.
"""
from __future__ import annotations

import hashlib

import numpy as np
from tqdm.auto import tqdm

from ..backend import as_numpy as _np
from ..operators import smoothness_norm
from ..transform import warp
from .flows import _feasible, ellipsoid_argmax
from .objectives import linearized, probe

__all__ = ["Recorder", "run_alternating"]


def _hash(x):
    return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]



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
