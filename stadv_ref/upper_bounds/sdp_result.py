"""What every Section 4.1 SDP solver shares: the :class:`SDPResult` type, the stop rule, random starts.

Used by :mod:`.sdp` (box SDP, mixing method), :mod:`.sdp_scs` (cvxpy + SCS reference)
and :mod:`.sdp_ellipsoid` (the ellipsoid SDP of ``upper_bound(method="tight")``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .._validate import check_budget, check_positive_int, check_seed
from ..reference.sdp import _TINY

__all__ = ["SDPResult"]


@dataclasses.dataclass
class SDPResult:
    """Result of :func:`solve_sdp` / :func:`solve_ellipsoid_sdp`.

    Attributes
    ----------
    value : float
        Certified upper bound on the SDP optimum (``inf`` if no certificate was found).
    certified : bool
        Whether ``value`` comes from a successful rigorous certificate.
    primal : float
        ``tr(P Z)`` of a feasible ``Z`` (a lower bound on the optimum) when available.
    gap : float
        ``(value - primal) / |primal|``: the certified relative gap.
    c : ndarray
        The dual vector the certificate was evaluated for.
    lambda_upper : float
        Guaranteed upper estimate of ``lambda_max(P - diag c)`` that entered the bound.
    method : str
        ``"mixing"`` or ``"scs"``.
    certificate : str
        How ``lambda_upper`` was obtained: ``"cholesky"`` (proof that it is ``<= ~0``)
        or ``"eigvalsh"`` (dense eigenvalue + Cholesky proof).
    status : str
        Solver status (for SCS its own status string; never used to certify).
    n_iter, rank : int
    time_solve, time_certificate : float
        Seconds.
    details : dict
    """

    value: float
    certified: bool
    primal: float
    gap: float
    c: np.ndarray
    lambda_upper: float
    method: str
    certificate: str
    status: str
    n_iter: int = 0
    rank: int = 0
    time_solve: float = 0.0
    time_certificate: float = 0.0
    details: dict = dataclasses.field(default_factory=dict)

    @property
    def time(self):
        """Total seconds (solve + certificate)."""
        return self.time_solve + self.time_certificate


def _rel_gap(value, primal):
    """Relative gap ``(value - primal) / |primal|`` between a dual bound and a primal value."""
    return (value - primal) / max(abs(primal), _TINY)


def _stop_reason(gap, gap_tol, out_of_time, stagnated=False):
    """Why a solver loop stops after a certificate: its status, or None to go on.

    ``"converged"``: the *certified* gap is at most ``gap_tol``; ``"time_limit"``; and
    ``"stagnated"``: the objective stopped increasing (a fixed point of the iteration,
    up to rounding) before the gap was reached, so more iterations cannot help.
    """
    if gap <= gap_tol:
        return "converged"
    if out_of_time:
        return "time_limit"
    if stagnated:
        return "stagnated"
    return None


def _check_solver_options(gap_tol, max_iter, seed, time_limit=None, scs_eps=1e-9, scs_max_iters=1):
    """The options every SDP solver shares, validated by name and returned normalised.

    ``gap_tol``, ``time_limit`` (or None) and ``scs_eps`` are positive finite reals (bools
    refused), ``max_iter`` and ``scs_max_iters`` integers ``>= 1``, ``seed`` an integer ``>= 0``.
    Valid values come back unchanged (as ``float``/``int``), so results do not change.

    Raises
    ------
    TypeError
        An option of the wrong type (``gap_tol=True``, ``seed=1.5``, ``max_iter="3"``...).
    ValueError
        An option out of range or not finite (``gap_tol=0``, ``gap_tol=10**400``, ``seed=-1``...).
    """
    gap_tol = check_budget("gap_tol", gap_tol, allow_zero=False)
    max_iter = check_positive_int("max_iter", max_iter)
    seed = check_seed("seed", seed)
    if time_limit is not None:
        time_limit = check_budget("time_limit", time_limit, allow_zero=False)
    scs_eps = check_budget("scs_eps", scs_eps, allow_zero=False)
    scs_max_iters = check_positive_int("scs_max_iters", scs_max_iters)
    return gap_tol, max_iter, seed, time_limit, scs_eps, scs_max_iters


def _random_unit_rows(rng, n, k):
    """``n`` random unit rows of length ``k`` (the mixing methods' start ``V``)."""
    X = rng.standard_normal((n, k))
    return X / np.linalg.norm(X, axis=1, keepdims=True)
