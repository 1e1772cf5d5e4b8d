"""Deprecated import path: re-exports :mod:`stadv_ref.experiments.pipeline` (the module moved there in the layered tree)."""
from __future__ import annotations

from .experiments.pipeline import (  # noqa: F401
    STEP_NAMES,
    STEPS,
    Config,
    Step,
    atomic_savefig,
    atomic_savez,
    atomic_write_json,
    atomic_write_text,
    attack_curve,
    certify_curve,
    export_docs,
    full_config,
    lower_bound_curve,
    plot_attack,
    plot_certify,
    plot_convergence,
    plot_lower_bound,
    plot_samples,
    plot_training,
    quick_config,
    reproduce,
    soundness_spot_check,
)

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_savefig", "atomic_savez", "Config", "quick_config", "full_config", "Step", "STEPS", "STEP_NAMES", "reproduce", "lower_bound_curve", "certify_curve", "attack_curve", "soundness_spot_check", "plot_lower_bound", "plot_samples", "plot_convergence", "plot_certify", "plot_attack", "plot_training", "export_docs"]
