"""End-of-epoch training checkpoints: one sealed ``.npz`` (no pickle) with everything needed to resume.

A checkpoint (``format_version`` 2) holds the settings (JSON), the fingerprint of the
training data (:func:`data_fingerprint`), the RNG state, the step and epoch counters, every
parameter with its two optimiser moments (``p_``, ``m_``, ``v_``), the variant state
(``s_``: warm-start vectors, the ``at`` pool), the history (``h_``) and the seal of
:mod:`stadv_ref._io` (``format_version``, ``library_version``, ``sha256`` of the rest).
It is written atomically. Resuming from it gives the same model as an uninterrupted run
(bit for bit on the same machine with the same number of BLAS threads: the checkpoint
records :func:`blas_threads`, and resuming with another count warns, since every matrix
product's last bits depend on how BLAS splits it).

Resuming refuses (:class:`CheckpointMismatch`, a ``ValueError`` naming the file) a
checkpoint that is damaged or of another format, written by another library version, with
other settings, for other training data, or whose counters do not fit the settings (e.g.
an ``epoch`` beyond ``epochs``): resuming from it would silently give another model.
:func:`stadv_ref.training.train` raises it (pass ``resume=False`` to start afresh);
:func:`stadv_ref.training.load_or_train` warns and retrains.
"""
from __future__ import annotations

import json
import warnings

import numpy as np

from .._io import atomic_savez, library_version, read_npz, seal_arrays, sha256_arrays, unseal_arrays
from .._provenance import blas_threads  # re-exported: the checkpoint records it

__all__ = ["CheckpointMismatch", "data_fingerprint", "blas_threads", "save_checkpoint", "load_checkpoint"]

_CKPT_VERSION = 2
_ADVICE = "use another checkpoint path or resume=False ('stadv train --restart')"


class CheckpointMismatch(ValueError):
    """A training checkpoint that must not be resumed from (the message says why and names the file)."""


def data_fingerprint(X, y):
    """sha256 (hex) of training data as :func:`stadv_ref.training.train` sees them.

    ``X`` as a C-contiguous float64 ``(N, d)`` array and ``y`` as int64 ``(N,)``: dtypes,
    shapes and bytes, so ``(N, H, W)`` images and their flattened rows agree.
    """
    X = np.asarray(X, dtype=np.float64)
    X = np.ascontiguousarray(X.reshape(X.shape[0], -1))
    return sha256_arrays({"X": X, "y": np.ascontiguousarray(np.asarray(y, dtype=np.int64))})


def _fingerprint_of(tr):
    """:func:`data_fingerprint` of the trainer's data, computed once per trainer."""
    fp = getattr(tr, "_data_sha256", None)
    if fp is None:
        fp = tr._data_sha256 = data_fingerprint(tr.X, tr.y)
    return fp


def save_checkpoint(tr, path):
    """Write the state of the trainer ``tr`` (:class:`stadv_ref.training.trainer._Trainer`) to ``path``."""
    arrays = {
        "settings": np.asarray(json.dumps(tr.s, sort_keys=True)),
        "data_sha256": np.asarray(_fingerprint_of(tr)),
        "blas_threads": np.asarray(json.dumps(blas_threads())),
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
    atomic_savez(path, **seal_arrays(arrays, _CKPT_VERSION))


def _text(data, key):
    a = data.get(key)
    if not isinstance(a, np.ndarray) or a.shape != () or a.dtype.kind != "U":
        raise ValueError(f"its {key!r} entry is missing or not a string")
    return str(a)


def _count(data, key):
    a = data.get(key)
    if not isinstance(a, np.ndarray) or a.shape != () or a.dtype.kind not in "iu":
        raise ValueError(f"its {key!r} entry is missing or not an integer")
    return int(a)


def _check(tr, data, name):
    """Every check of the module docstring on the unsealed arrays ``data``; the reason as a ``ValueError``."""
    saved = json.loads(_text(data, "settings"))
    if not isinstance(saved, dict):
        raise ValueError("its settings are not a JSON object")
    if saved != json.loads(json.dumps(tr.s, sort_keys=True)):
        diff = sorted(k for k in set(saved) | set(tr.s) if saved.get(k) != tr.s.get(k))
        raise CheckpointMismatch(f"{name} was written with different settings {diff}; {_ADVICE}")
    fp = _text(data, "data_sha256")
    if fp != _fingerprint_of(tr):
        raise CheckpointMismatch(f"{name} was written for other training data (data sha256 {fp[:12]}..., these "
                                 f"data {_fingerprint_of(tr)[:12]}...); {_ADVICE}")
    epoch, t = _count(data, "epoch"), _count(data, "t")
    steps = -(-tr.X.shape[0] // tr.s["batch_size"])
    if not 0 <= epoch <= tr.s["epochs"] or t != epoch * steps:
        raise ValueError(f"its counters (epoch {epoch}, step {t}) do not fit {tr.s['epochs']} epochs of "
                         f"{steps} steps")
    for k, v in tr.params.items():
        for pre in ("p_", "m_", "v_"):
            a = data.get(pre + k)
            if not isinstance(a, np.ndarray) or a.shape != v.shape or a.dtype != np.float64:
                raise ValueError(f"its array {pre + k!r} is missing or not float64 of shape {v.shape}")
    hist = {k[2:] for k in data if k.startswith("h_")}
    if hist != set(tr.history) or any(data["h_" + k].shape != (epoch,) for k in hist):
        raise ValueError(f"its history is not {sorted(tr.history)} over {epoch} epoch(s)")
    known = {"settings", "data_sha256", "blas_threads", "rng_state", "epoch", "t"}
    extra = sorted(k for k in data if k not in known and k[:2] not in ("p_", "m_", "v_", "s_", "h_"))
    if extra or any(k[2:] not in tr.params for k in data if k[:2] in ("p_", "m_", "v_")):
        raise ValueError(f"it holds arrays this trainer does not have: {extra or sorted(data)}")
    return json.loads(_text(data, "rng_state")), epoch, t


def load_checkpoint(tr, path):
    """Restore the trainer ``tr`` from ``path``.

    Raises
    ------
    CheckpointMismatch
        (a ``ValueError``) for every reason of the module docstring; the message names the file.
    """
    name = f"checkpoint {str(path)!r}"
    try:
        data, lib = unseal_arrays(read_npz(path, "checkpoint"), "checkpoint", path, _CKPT_VERSION)
    except ValueError as exc:
        raise CheckpointMismatch(f"{exc}; {_ADVICE}") from exc
    if lib != library_version():
        raise CheckpointMismatch(f"{name} was written by stadv-ref {lib}, this is {library_version()} (resuming "
                                 f"would not be bit-identical); {_ADVICE}")
    try:
        rng_state, epoch, t = _check(tr, data, name)
        rng = np.random.default_rng(0)
        rng.bit_generator.state = rng_state  # validated on a spare generator first
        threads = json.loads(_text(data, "blas_threads"))
    except CheckpointMismatch:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointMismatch(f"{name} cannot be resumed: {exc}; {_ADVICE}") from exc
    if threads != blas_threads():
        warnings.warn(f"{name} was written with BLAS threads {threads}, now {blas_threads()}: the resumed model is "
                      "valid but not bit-identical to an uninterrupted run", stacklevel=4)
    tr.rng.bit_generator.state = rng_state
    tr.t = t
    tr.epoch = epoch
    for k in list(tr.params):
        tr.params[k] = data["p_" + k].copy()
        tr.opt[k] = (data["m_" + k].copy(), data["v_" + k].copy())
    tr.state = {k[2:]: data[k].copy() for k in data if k.startswith("s_")}
    tr.history = {k[2:]: list(data[k]) for k in data if k.startswith("h_")}
