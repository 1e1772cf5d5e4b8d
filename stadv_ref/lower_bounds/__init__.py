"""Section 3 and appendices 6.3-6.6: lower bounds of the adversarial loss (the impossibility results).

Modules, bottom to top (each imports only those above it in this list):

* :mod:`.result` -- :class:`LowerBoundResult` and :data:`LABELS` (certified bound vs estimates);
* :mod:`.flows` -- the ellipsoid maximiser of Eqs. (6), (8), (12), (14), feasibility, the
  midpoints of Eqs. (7)/(13), the exact partial derivatives of the warp (Eq. (1)) and their adjoints;
* :mod:`.objectives` -- binary / multi-class (6.6) / linear objectives, one evaluation of
  Eqs. (7)-(8) and (13)-(14), the linearisation ``l~`` ([E8]), the Theorem flow of Eqs. (6)/(12);
* :mod:`.alternating` -- the loop of Algorithms 1-2 with cycle detection ([E10]);
* :mod:`.theorem1` -- Theorem 1's input (:func:`theorem1_input`, [E9]);
* :mod:`.linear` -- Theorem 2's input for a linear classifier (:func:`theorem2_input`);
* :mod:`.attack` -- the public attacks :func:`lower_bound_attack` (Theorem 1, Algorithm 1) and
  :func:`linear_lower_bound_attack` (Theorem 2, Algorithm 2).

:mod:`.core` re-exports the machinery under its pre-split module path.
"""
from __future__ import annotations

from .attack import (
    linear_lower_bound_attack,
    lower_bound_attack,
)
from .linear import theorem2_input
from .result import LABELS, LowerBoundResult
from .theorem1 import theorem1_input

__all__ = ["lower_bound_attack", "linear_lower_bound_attack", "LowerBoundResult", "LABELS", "theorem1_input", "theorem2_input"]
