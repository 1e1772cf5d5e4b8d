"""Deprecated import path: re-exports :mod:`stadv_ref.experiments.pipeline` (the module moved there in the layered tree)."""
from __future__ import annotations

from .experiments.pipeline import (  # noqa: F401
    atomic_write_text,
    atomic_write_json,
    atomic_savefig,
    atomic_savez,
    Config,
    quick_config,
    full_config,
    Step,
    STEPS,
    STEP_NAMES,
    reproduce,
    lower_bound_curve,
    certify_curve,
    attack_curve,
    soundness_spot_check,
    plot_lower_bound,
    plot_samples,
    plot_convergence,
    plot_certify,
    plot_attack,
    plot_training,
    export_docs,
)

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_savefig", "atomic_savez", "Config", "quick_config", "full_config", "Step", "STEPS", "STEP_NAMES", "reproduce", "lower_bound_curve", "certify_curve", "attack_curve", "soundness_spot_check", "plot_lower_bound", "plot_samples", "plot_convergence", "plot_certify", "plot_attack", "plot_training", "export_docs"]
