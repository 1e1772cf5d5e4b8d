"""Section 3 and appendices 6.3-6.5: lower bounds of the adversarial loss (the impossibility results).

* :mod:`.attack` -- Algorithms 1-2 (:func:`lower_bound_attack`, :func:`linear_lower_bound_attack`),
  Theorem 1's starting input (:func:`theorem1_input`);
* :mod:`.linear` -- Theorem 2's input for a linear classifier (:func:`theorem2_input`);
* :mod:`.core` -- the shared machinery: objectives, Eqs. (5)-(14) probes, the alternating loop,
  :class:`LowerBoundResult`.
"""
from __future__ import annotations

from .attack import (
    lower_bound_attack,
    linear_lower_bound_attack,
    LowerBoundResult,
    LABELS,
    theorem1_input,
    theorem2_input,
)

__all__ = ["lower_bound_attack", "linear_lower_bound_attack", "LowerBoundResult", "LABELS", "theorem1_input", "theorem2_input"]
