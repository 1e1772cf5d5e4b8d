"""Attacks: stAdv (Xiao et al. 2018) and the projected-gradient flow attack.

* :mod:`.stadv` -- :func:`stadv_attack`, the stAdv objective and its batched L-BFGS engine;
* :mod:`.flow_pgd` -- :func:`flow_pgd_attack`, the one projected-gradient attack on the exact
  adversarial loss over ``||M r|| <= eps``, used by the soundness tests, the audit and training.
"""
from __future__ import annotations

from .flow_pgd import (
    SCHEDULES,
    AttackResult,
    flow_pgd_attack,
)
from .stadv import (
    METHODS,
    STADV_CODE_OPTIONS,
    StadvObjective,
    StadvResult,
    stadv_attack,
    stadv_objective,
)

__all__ = ["StadvResult", "StadvObjective", "stadv_objective", "stadv_attack", "STADV_CODE_OPTIONS", "METHODS", "AttackResult", "flow_pgd_attack", "SCHEDULES"]
