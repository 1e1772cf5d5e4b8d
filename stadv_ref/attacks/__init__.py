"""Attacks: stAdv (Xiao et al. 2018) and the projected-gradient flow attack.

* :mod:`.stadv` -- :func:`stadv_attack`, the stAdv objective and its batched L-BFGS engine;
* :mod:`.flow_pgd` -- :func:`flow_pgd_attack`, the one projected-gradient attack on the exact
  adversarial loss over ``||M r|| <= eps``, used by the soundness tests, the audit and training;
* :mod:`.flow_pgd_images` -- :func:`flow_pgd_attack_images`, the same attack with ``x`` fixed on many
  images at once (the attack ceiling of the per-image certificates).
"""
from __future__ import annotations

from .flow_pgd import (
    SCHEDULES,
    AttackResult,
    flow_pgd_attack,
)
from .flow_pgd_images import ImagesAttackResult, flow_pgd_attack_images
from .stadv import (
    METHODS,
    STADV_CODE_OPTIONS,
    StadvObjective,
    StadvResult,
    stadv_attack,
    stadv_objective,
)

__all__ = ["StadvResult", "StadvObjective", "stadv_objective", "stadv_attack", "STADV_CODE_OPTIONS", "METHODS", "AttackResult", "flow_pgd_attack", "SCHEDULES",
           "ImagesAttackResult", "flow_pgd_attack_images"]
