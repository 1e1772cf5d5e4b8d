"""End-of-epoch training checkpoints: one ``.npz`` (no pickle) with everything needed to resume.

A checkpoint holds the settings (JSON), the RNG state, the step and epoch counters, every
parameter with its two optimiser moments (``p_``, ``m_``, ``v_``), the variant state
(``s_``: warm-start vectors, the ``at`` pool) and the history (``h_``). Resuming from it
gives the same model as an uninterrupted run (bit for bit on the same machine).
"""
from __future__ import annotations

import json

import numpy as np

from .._io import atomic_savez

_CKPT_VERSION = 1


def save_checkpoint(tr, path):
    """Write the state of the trainer ``tr`` (:class:`stadv_ref.training.trainer._Trainer`) to ``path``."""
    arrays = {
        "ckpt_version": np.int64(_CKPT_VERSION),
        "settings": np.asarray(json.dumps(tr.s, sort_keys=True)),
        "rng_state": np.asarray(json.dumps(tr.rng.bit_generator.state)),
        "t": np.int64(tr.t),
        "epoch": np.int64(tr.epoch),
    }
    for k, v in tr.params.items():
        arrays["p_" + k] = v
        arrays["m_" + k] = tr.opt[k][0]
        arrays["v_" + k] = tr.opt[k][1]
    for k, v in tr.state.items():
        arrays["s_" + k] = v
    for k, v in tr.history.items():
        arrays["h_" + k] = np.asarray(v, dtype=np.float64)
    atomic_savez(path, **arrays)


def load_checkpoint(tr, path):
    """Restore the trainer ``tr`` from ``path``; ``ValueError`` if unreadable or written with other settings."""
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as exc:
        raise ValueError(f"checkpoint {str(path)!r} is not a valid .npz ({exc})") from exc
    saved = json.loads(str(data["settings"]))
    if saved != json.loads(json.dumps(tr.s, sort_keys=True)):
        diff = sorted(k for k in set(saved) | set(tr.s) if saved.get(k) != tr.s.get(k))
        raise ValueError(f"checkpoint {str(path)!r} was written with different settings {diff}; "
                         "use another checkpoint path or resume=False")
    tr.rng.bit_generator.state = json.loads(str(data["rng_state"]))
    tr.t = int(data["t"])
    tr.epoch = int(data["epoch"])
    for k in list(tr.params):
        tr.params[k] = data["p_" + k].copy()
        tr.opt[k] = (data["m_" + k].copy(), data["v_" + k].copy())
    tr.state = {k[2:]: data[k].copy() for k in data if k.startswith("s_")}
    tr.history = {k[2:]: list(data[k]) for k in data if k.startswith("h_")}
