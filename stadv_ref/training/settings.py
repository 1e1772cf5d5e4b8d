"""Settings of the training variants (Section 4.2, appendix 6.8): names, defaults, validation.

:data:`VARIANTS` (``nt, rand, fro, spe, stn, at, sdp``; EQUATIONS.md "Experiments"),
:data:`DEFAULTS` (every option of :func:`stadv_ref.training.train`), the epochs per variant
(:data:`DEFAULT_EPOCHS`, :data:`QUICK_EPOCHS` for quick checks) and the checks of the
arguments of :func:`stadv_ref.training.train`.
"""
from __future__ import annotations

import numpy as np

from .._validate import (
    as_images,
    check_budget,
    check_choice,
    check_image_shape,
    check_labels,
    check_positive_int,
    check_seed,
)

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
    s["seed"] = check_seed("seed", seed)
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
    if not isinstance(s["hidden_bias"], (bool, np.bool_)):  # bool("False") would be True
        raise TypeError(f"hidden_bias must be True or False, got {s['hidden_bias']!r}")
    s["hidden_bias"] = bool(s["hidden_bias"])
    return s


def _check_data(X, y, n_classes, image_shape):
    """The training data and its shape, checked by name.

    Returns ``X`` as a contiguous ``(N, d)`` float64 array, ``y`` as int64 labels in
    ``[0, n_classes)``, ``n_classes`` and ``image_shape`` as ``(H, W)`` with ``H W = d``.
    ``N = 0`` is refused (nothing to train on).
    """
    K = check_positive_int("n_classes", n_classes, minimum=2)
    image_shape = check_image_shape("image_shape", image_shape)
    X = as_images("X", X, ndim=(2, 3), dtype=np.float64)
    N = X.shape[0]
    if N < 1:
        raise ValueError(f"X must hold at least one example (N = 0 is refused), got shape {X.shape}")
    X = X.reshape(N, -1)
    if np.ndim(y) == 1 and len(y) != N:
        raise ValueError(f"X and y disagree: X holds {N} example(s), y holds {len(y)} label(s)")
    y = check_labels("y", y, N, np.iinfo(np.int64).max)  # integer labels >= 0, one per example
    if y.max() >= K:
        raise ValueError(f"y has labels up to {y.max()}, not below n_classes = {K}")
    if image_shape[0] * image_shape[1] != X.shape[1]:
        raise ValueError(f"image_shape {image_shape} does not match X with {X.shape[1]} features")
    return np.ascontiguousarray(X), y, K, image_shape

