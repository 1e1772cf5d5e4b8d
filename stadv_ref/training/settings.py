"""Settings of the training variants (Section 4.2, appendix 6.8): names, defaults, validation.

:data:`VARIANTS` (``nt, rand, fro, spe, stn, at, sdp``; EQUATIONS.md "Experiments"),
:data:`DEFAULTS` (every option of :func:`stadv_ref.training.train`), the epochs per variant
(:data:`DEFAULT_EPOCHS`, :data:`QUICK_EPOCHS` for quick checks) and the checks of the
arguments of :func:`stadv_ref.training.train`.
"""
from __future__ import annotations

import numpy as np

from .._validate import as_float_array, check_budget, check_choice, check_positive_int

__all__ = ["VARIANTS", "DEFAULTS", "DEFAULT_EPOCHS", "QUICK_EPOCHS", "QUICK_N_TRAIN", "QUICK_OPTIONS"]

VARIANTS = ("nt", "rand", "fro", "spe", "stn", "at", "sdp")

#: Default settings; ``train(..., **options)`` overrides them.
DEFAULTS = {
    "hidden": 500,
    "epochs": 20,
    "batch_size": 100,
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.9,
    "hidden_bias": False,
    "init_scale": 1.0,
    # fro / spe (appendix 6.8)
    "fro_weight": 0.08,
    "spe_weight": 0.09,
    "spe_power_iters": 2,
    # stn
    "stn_hidden": 100,
    "stn_mode": "affine",
    "stn_padding": "zeros",
    # at
    "at_weight": 0.3,
    "at_tau": 0.05,
    "at_every": 3,
    "at_warmup": 1,
    "at_pool_size": 10000,
    "at_max_iter": 50,
    # sdp
    "sdp_weight": 0.05,
    "sdp_pairs_per_step": 3,
    "sdp_every": 2,
    "sdp_dual_lr": 1e-3,
    "sdp_eps": 1.0,
}

#: Default epochs per variant (``rand`` is never trained).
DEFAULT_EPOCHS = {"nt": 20, "rand": 0, "fro": 20, "spe": 20, "stn": 20, "at": 12, "sdp": 20}
QUICK_EPOCHS = {"nt": 4, "rand": 0, "fro": 4, "spe": 4, "stn": 4, "at": 3, "sdp": 4}
QUICK_N_TRAIN = 5000
#: Option overrides applied by ``load_or_train(quick=True)`` unless given explicitly.
QUICK_OPTIONS = {"at": {"at_pool_size": 1000}}

_LOSS_OF = {"nt": "ce", "rand": "ce", "fro": "hinge", "spe": "hinge", "stn": "hinge", "at": "ce", "sdp": "hinge"}


def _settings(variant, hidden, epochs, batch_size, seed, options):
    """Every setting of one training: :data:`DEFAULTS` updated with ``options``, validated."""
    check_choice("variant", variant, VARIANTS)
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    s = dict(DEFAULTS)
    s.update(options)
    s["variant"] = variant
    s["hidden"] = check_positive_int("hidden", hidden)
    s["epochs"] = DEFAULT_EPOCHS[variant] if epochs is None else check_positive_int("epochs", epochs, minimum=0)
    if variant == "rand":
        s["epochs"] = 0
    s["batch_size"] = check_positive_int("batch_size", batch_size)
    s["seed"] = check_positive_int("seed", seed, minimum=0)
    s["loss"] = _LOSS_OF[variant]
    check_choice("optimizer", s["optimizer"], ("adam", "sgd"))
    check_choice("stn_mode", s["stn_mode"], ("affine", "flow"))
    check_choice("stn_padding", s["stn_padding"], ("zeros", "border"))
    for k in ("lr", "fro_weight", "spe_weight", "at_weight", "at_tau", "sdp_weight", "sdp_dual_lr",
              "momentum", "init_scale"):
        s[k] = check_budget(k, s[k])
    check_budget("sdp_eps", s["sdp_eps"], allow_zero=False)
    s["at_warmup"] = check_positive_int("at_warmup", s["at_warmup"], minimum=0)
    for k in ("spe_power_iters", "stn_hidden", "at_every", "at_pool_size", "at_max_iter", "sdp_pairs_per_step",
              "sdp_every"):
        s[k] = check_positive_int(k, s[k])
    s["hidden_bias"] = bool(s["hidden_bias"])
    return s


def _check_data(X, y, name_x="X", name_y="y"):
    """Training images as a contiguous ``(N, d)`` float64 array and labels as int64, checked."""
    X = as_float_array(name_x, X, ndim=(2, 3), dtype=np.float64)
    if X.ndim == 3:
        X = X.reshape(X.shape[0], -1)
    if X.shape[0] < 1:
        raise ValueError(f"{name_x} must hold at least one example")
    y = np.asarray(y)
    if y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name_y} must be integer labels of shape ({X.shape[0]},), got {y.shape} {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{name_y} must be non-negative class labels")
    return np.ascontiguousarray(X), y.astype(np.int64)

