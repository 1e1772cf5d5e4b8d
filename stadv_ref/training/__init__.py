"""Training the seven network variants of Section 5 (``nt, rand, fro, spe, stn, at, sdp``)."""
from __future__ import annotations

from .trainer import (
    VARIANTS,
    DEFAULTS,
    TrainResult,
    train,
    load_or_train,
    model_path,
    default_model_dir,
    hinge_loss,
    cross_entropy_loss,
    sdp_pair_bounds,
)

__all__ = ["VARIANTS", "DEFAULTS", "TrainResult", "train", "load_or_train", "model_path", "default_model_dir", "hinge_loss", "cross_entropy_loss", "sdp_pair_bounds"]
