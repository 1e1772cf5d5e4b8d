r"""The result of the lower-bound attacks: :class:`LowerBoundResult` and :data:`LABELS`.

:func:`~stadv_ref.lower_bounds.lower_bound_attack` (Theorem 1, Eq. (6), Algorithm 1, Eqs. (5)-(8))
and :func:`~stadv_ref.lower_bounds.linear_lower_bound_attack` (Theorem 2, Eq. (12), Algorithm 2,
Eqs. (13)-(14)) return a :class:`LowerBoundResult`. Its ``exact_loss`` is the true
``l_adv = f(g(r*; x*)) - f(x*)`` of a feasible pair, a certified lower bound on ``sup l_adv``;
the Theorem value, the paper's linearisation ``l~`` ([E8]) and the midpoint rule of
Eq. (7)/(13) are estimates. :data:`LABELS` says which field is which.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
