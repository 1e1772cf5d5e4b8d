"""Training the seven network variants of Section 5 (``nt, rand, fro, spe, stn, at, sdp``).

* :mod:`.settings` -- :data:`VARIANTS`, :data:`DEFAULTS`, the epochs per variant, argument checks;
* :mod:`.objectives` -- losses, the regularisers (``fro``, ``spe``, ``sdp`` through
  :func:`stadv_ref.upper_bounds.sdp_dual_gradient`), the ``stn`` transformer, :func:`sdp_pair_bounds`;
* :mod:`.trainer` -- :func:`train`, the one training loop, and :class:`TrainResult`;
* :mod:`.checkpoint` -- the resumable end-of-epoch ``.npz`` checkpoints;
* :mod:`.cache` -- :func:`load_or_train`, :func:`model_path`, :func:`default_model_dir`.
"""
from __future__ import annotations

from .cache import default_model_dir, load_or_train, model_path
from .objectives import (
    cross_entropy_loss,
    hinge_loss,
    sdp_pair_bounds,
)
from .settings import (
    DEFAULT_EPOCHS,
    DEFAULTS,
    QUICK_EPOCHS,
    QUICK_N_TRAIN,
    VARIANTS,
)
from .trainer import TrainResult, train

__all__ = ["VARIANTS", "DEFAULTS", "DEFAULT_EPOCHS", "QUICK_EPOCHS", "QUICK_N_TRAIN", "TrainResult", "train",
           "load_or_train", "model_path", "default_model_dir", "hinge_loss", "cross_entropy_loss",
           "sdp_pair_bounds"]
