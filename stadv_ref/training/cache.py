"""The model cache: :func:`load_or_train` (train once on MNIST, keep the ``.npz``) and its paths.

A cached model is the deployed classifier of :func:`stadv_ref.training.train` plus its
metadata (test accuracy, settings, history, the variant's extra arrays), one file per
variant, size, seed and epochs: :func:`model_path` under :func:`default_model_dir`.

A cached file is never trusted blindly: one that cannot be read (damaged, truncated, a
content hash that does not match) or whose metadata contradict its name is retrained with a
warning, and so is an interrupted training whose checkpoint cannot be resumed
(:class:`.checkpoint.CheckpointMismatch`). A readable model trained with other options is a
``ValueError`` (a different model was asked for: use another ``cache_dir``).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from .._validate import check_choice, check_positive_int
from ..data import load_mnist
from ..network import OneHiddenLayerNet
from ..transform import warp
from .checkpoint import CheckpointMismatch, data_fingerprint
from .objectives import _affine_basis, _stn_forward
from .settings import DEFAULT_EPOCHS, QUICK_EPOCHS, QUICK_N_TRAIN, QUICK_OPTIONS, VARIANTS
from .trainer import train

__all__ = ["load_or_train", "model_path", "default_model_dir"]


def default_model_dir():
    """``STADV_MODEL_DIR`` or ``~/.cache/stadv_ref/models``."""
    env = os.environ.get("STADV_MODEL_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stadv_ref" / "models"


def _resolve(variant, n_train, epochs, quick):
    """``(n_train, epochs, default epochs)`` of a cached model, defaults filled in and checked."""
    if n_train is None:
        n_train = QUICK_N_TRAIN if quick else 60000
    n_train = check_positive_int("n_train", n_train)
    default_ep = (QUICK_EPOCHS if quick else DEFAULT_EPOCHS)[variant]
    if epochs is None:
        epochs = default_ep
    epochs = 0 if variant == "rand" else check_positive_int("epochs", epochs, minimum=0)
    return n_train, epochs, default_ep


def model_path(variant, cache_dir=None, n_train=None, hidden=500, seed=0, epochs=None, quick=False):
    """Cache path ``<cache_dir>/<variant>-h<hidden>-n<n_train>-s<seed>.npz``.

    ``-e<epochs>`` is appended when ``epochs`` differs from the default for
    ``quick`` (so differently trained models never share a file).
    """
    check_choice("variant", variant, VARIANTS)
    n_train, epochs, default_ep = _resolve(variant, n_train, epochs, quick)
    stem = f"{variant}-h{check_positive_int('hidden', hidden)}-n{n_train}-s{check_positive_int('seed', seed, minimum=0)}"
    if epochs != default_ep:
        stem += f"-e{epochs}"
    base = Path(cache_dir) if cache_dir is not None else default_model_dir()
    return base / (stem + ".npz")


def load_or_train(variant, cache_dir=None, n_train=None, hidden=500, seed=0, epochs=None, quick=False,
                  data_dir=None, progress=True, with_metadata=False, **options):
    """Load a cached trained network, or train it on MNIST and cache it.

    Parameters
    ----------
    variant : str
        One of :data:`VARIANTS`.
    cache_dir : str or path-like, optional
        Default :func:`default_model_dir` (``STADV_MODEL_DIR`` or
        ``~/.cache/stadv_ref/models``).
    n_train : int, optional
        First ``n_train`` MNIST training images (default 60000, or 5000 with ``quick``).
    hidden, seed, epochs
        As in :func:`train`; ``epochs`` defaults to :data:`DEFAULT_EPOCHS`
        (:data:`QUICK_EPOCHS` with ``quick``).
    quick : bool
        Small defaults for fast checks.
    data_dir : str, optional
        MNIST directory (default ``STADV_DATA_DIR``).
    progress : bool
    with_metadata : bool
        Also return the metadata dict (``test_accuracy``, settings ...).
    **options
        Passed to :func:`train`; they must not contradict a cached model's
        settings (otherwise ``ValueError``: use another ``cache_dir``).

    Returns
    -------
    OneHiddenLayerNet, or (OneHiddenLayerNet, dict)

    Notes
    -----
    The file holds the deployed classifier (``W, v, b, c``) and, as ``meta_*``
    entries: ``test_accuracy`` (full MNIST test set), ``train_accuracy``,
    ``settings`` (JSON), ``history_*`` and the variant's extra arrays (``stn_*``
    transformer weights and ``test_accuracy_with_stn`` for ``stn``; ``sdp_c`` and
    ``sdp_pairs`` for ``sdp``). A per-epoch checkpoint lives in
    ``<cache_dir>/checkpoints/`` while training and is removed afterwards.
    """
    n_train, epochs, _ = _resolve(variant, n_train, epochs, quick)
    if quick:
        options = {**QUICK_OPTIONS.get(variant, {}), **options}
    path = model_path(variant, cache_dir, n_train, hidden, seed, epochs, quick)
    if path.is_file():
        cached = _read_cached(path, dict(variant=variant, n_train=n_train, epochs=epochs, hidden=hidden, seed=seed))
        if cached is not None:
            net, meta, saved = cached
            bad = {k: (saved.get(k), v) for k, v in options.items() if k in saved and saved[k] != v}
            if bad:
                raise ValueError(f"cached model {str(path)!r} was trained with other settings {bad}; "
                                 "pass another cache_dir")
            return (net, meta) if with_metadata else net
    X, y = load_mnist("train", data_dir=data_dir, limit=n_train)
    Xt, yt = load_mnist("test", data_dir=data_dir)
    ckpt = path.parent / "checkpoints" / (path.stem + ".ckpt.npz")
    kw = dict(hidden=hidden, epochs=epochs, seed=seed, checkpoint=ckpt, progress=progress, return_result=True)
    try:
        res = train(variant, X, y, **kw, **options)
    except CheckpointMismatch as exc:
        warnings.warn(f"{exc}: training {variant} from the start", stacklevel=2)
        res = train(variant, X, y, **kw, resume=False, **options)
    net = res.net
    meta = {
        "variant": variant,
        "test_accuracy": float((net.predict(Xt) == yt).mean()),
        "train_accuracy": float((net.predict(X) == y).mean()),
        "settings": json.dumps(res.settings, sort_keys=True),
        "n_train": n_train,
        "epochs": epochs,
        "hidden": hidden,
        "seed": seed,
        "data_sha256": data_fingerprint(X, y),
    }
    for k, v in res.history.items():
        meta["history_" + k] = v
    meta.update(res.extras)
    if variant == "stn":
        meta["test_accuracy_with_stn"] = _stn_accuracy(res, Xt, yt)
    net.save(path, **meta)  # atomic, sealed
    if ckpt.is_file():
        ckpt.unlink()
    return (net, meta) if with_metadata else net


def _read_cached(path, expected):
    """``(net, meta, settings)`` of a cached model file, or ``None`` (with a warning) when it cannot be trusted."""
    try:
        net, meta = OneHiddenLayerNet.load(path, with_metadata=True)
        saved = json.loads(str(meta.get("settings", "{}")))
        if not isinstance(saved, dict):
            raise ValueError("its settings are not a JSON object")
        wrong = {k: meta.get(k) for k, v in expected.items() if k in meta and meta[k] != v}
        if wrong:
            raise ValueError(f"its metadata {wrong} contradict its name (expected {expected})")
    except ValueError as exc:
        warnings.warn(f"cached model {str(path)!r} cannot be used ({exc}); training it again", stacklevel=3)
        return None
    return net, meta, saved


def _stn_accuracy(res, Xt, yt):
    """Test accuracy of the transformer + classifier pipeline used in training."""
    s = res.settings
    p = dict(res.extras)
    shape = res.net.image_shape
    X = Xt.reshape(Xt.shape[0], -1)
    _, flow = _stn_forward(p, X, s["stn_mode"], _affine_basis(*shape), shape)
    Xw = warp(Xt.reshape(-1, *shape), flow, s["stn_padding"])
    return float((res.net.predict(Xw) == yt).mean())
