"""Compatibility module: the shared machinery of the lower-bound attacks, now split by idea.

The names importable from here before the split keep working; new code imports them from
the module that holds them:

* :mod:`.result` -- :class:`LowerBoundResult`, :data:`LABELS`;
* :mod:`.flows` -- :func:`ellipsoid_argmax` (Eqs. (6), (8), (12), (14)), :func:`midpoint_flows`
  (the midpoints of Eqs. (7)/(13)), :func:`cell_flows`, :func:`partial_apply`,
  :func:`partial_adjoint` (the exact partial derivatives of the warp, Eq. (1));
* :mod:`.objectives` -- :class:`NetObjective`, :class:`MulticlassObjective`,
  :class:`LinearObjective`, :func:`probe` (Eqs. (7)-(8), (13)-(14)), :func:`linearized` ([E8]),
  :func:`theorem_flow` (Eqs. (6)/(12));
* :mod:`.alternating` -- :class:`Recorder`, :func:`run_alternating` (Algorithms 1-2, [E10]).

Nothing inside :mod:`stadv_ref` imports this module.
"""
from __future__ import annotations

from .alternating import Recorder, run_alternating
from .flows import cell_flows, ellipsoid_argmax, midpoint_flows, partial_adjoint, partial_apply
from .objectives import LinearObjective, MulticlassObjective, NetObjective, linearized, probe, theorem_flow
from .result import LABELS, LowerBoundResult

__all__ = [
    "LowerBoundResult",
    "LABELS",
    "ellipsoid_argmax",
    "midpoint_flows",
    "cell_flows",
    "partial_apply",
    "partial_adjoint",
    "NetObjective",
    "MulticlassObjective",
    "LinearObjective",
    "probe",
    "linearized",
    "theorem_flow",
    "Recorder",
    "run_alternating",
]
