"""The ``.npz`` model file of :class:`stadv_ref.OneHiddenLayerNet`: write it, read and check it (no pickle).

A model file holds ``format_version`` (1), the arrays ``W``, ``v``, ``b``, ``c``,
``image_shape`` and optional ``meta_*`` entries. Reading refuses anything else: a
missing file, a non-``.npz``, pickled objects, missing or unknown arrays, another
``format_version``. The network itself checks the arrays' shapes and values.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

__all__ = ["FORMAT_VERSION", "MODEL_ARRAYS", "check_path", "write_model", "read_model"]

FORMAT_VERSION = 1
MODEL_ARRAYS = ("format_version", "W", "v", "b", "c", "image_shape")


def check_path(name, path):
    """``path`` as a str: a str or path-like (``TypeError`` otherwise; an int would be a file descriptor)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or path-like, got {type(path).__name__}")
    return os.fspath(path)


def write_model(path, arrays, metadata):
    """Write ``arrays`` (``W``, ``v``, ``b``, ``c``, ``image_shape``) and ``metadata`` to exactly ``path``."""
    path = check_path("path", path)
    extra = {}
    for k, val in metadata.items():
        arr = np.asarray(val)
        if arr.dtype == object:
            raise TypeError(f"metadata {k!r} must be numbers, strings or numeric arrays")
        extra["meta_" + k] = arr
    # write to exactly ``path`` (np.savez would append ".npz" to a bare name, and load(path) would not find it)
    with open(path, "wb") as fh:
        np.savez(fh, format_version=np.int64(FORMAT_VERSION), **arrays, **extra)


def read_model(path):
    """Read a model file; return ``(arrays, metadata)`` after the format checks of the module docstring."""
    path = check_path("path", path)
    if not os.path.isfile(path):
        raise ValueError(f"model file {path!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"model file {path!r} is not a valid .npz archive")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except ValueError as exc:
        raise ValueError(f"model file {path!r} holds pickled objects; refusing to load ({exc})") from exc
    except Exception as exc:
        raise ValueError(f"model file {path!r} is not a valid .npz archive ({exc})") from exc
    missing = [k for k in ("W", "v") if k not in data]
    if missing:
        raise ValueError(f"model file {path!r} lacks the arrays {missing}")
    extra = sorted(k for k in data if k not in MODEL_ARRAYS and not k.startswith("meta_"))
    if extra:
        raise ValueError(
            f"model file {path!r} holds arrays this one-hidden-layer format does not have: {extra} "
            f"(expected {list(MODEL_ARRAYS)} and meta_*); refusing to ignore them"
        )
    version = data.pop("format_version", None)  # absent: weights exported from elsewhere
    if version is not None and (
        version.shape != () or not np.issubdtype(version.dtype, np.integer) or int(version) != FORMAT_VERSION
    ):
        raise ValueError(
            f"model file {path!r} has format_version {version!r}; this library reads version "
            f"{FORMAT_VERSION} (a newer stadv-ref wrote it?)"
        )
    meta = {k[5:]: (v.item() if v.ndim == 0 else v) for k, v in data.items() if k.startswith("meta_")}
    return {k: v for k, v in data.items() if not k.startswith("meta_")}, meta
