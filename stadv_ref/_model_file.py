"""The ``.npz`` model file of :class:`stadv_ref.OneHiddenLayerNet`: write it, read and check it (no pickle).

A model file (``format_version`` 2) holds the arrays ``W``, ``v``, ``b``, ``c``,
``image_shape``, optional ``meta_*`` entries and the seal of :mod:`stadv_ref._io`:
``format_version``, ``library_version`` and ``sha256`` (the hash of every other array).
It is written atomically. Reading refuses anything else: a missing file, a non-``.npz``
(e.g. truncated), pickled objects, missing or unknown arrays, another ``format_version``,
a content hash that does not match. Files of ``format_version`` 1 (no hash) and ``.npz``
files without ``format_version`` (weights exported from elsewhere) are still read. The
network itself checks the arrays' shapes and values.
"""
from __future__ import annotations

import os

import numpy as np

from ._io import SEAL_FIELDS, atomic_savez, read_npz, seal_arrays, unseal_arrays

__all__ = ["FORMAT_VERSION", "MODEL_ARRAYS", "check_path", "write_model", "read_model"]

FORMAT_VERSION = 2
LEGACY_VERSION = 1
"""``format_version`` 1: the same arrays without ``library_version`` and ``sha256`` (still read)."""
MODEL_ARRAYS = ("W", "v", "b", "c", "image_shape") + SEAL_FIELDS


def check_path(name, path):
    """``path`` as a str: a str or path-like (``TypeError`` otherwise; an int would be a file descriptor)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or path-like, got {type(path).__name__}")
    return os.fspath(path)


def write_model(path, arrays, metadata):
    """Write ``arrays`` (``W``, ``v``, ``b``, ``c``, ``image_shape``) and ``metadata`` to exactly ``path``.

    Atomically (a reader never sees half a file), sealed with ``format_version``,
    ``library_version`` and ``sha256``.
    """
    path = check_path("path", path)
    extra = {}
    for k, val in metadata.items():
        arr = np.asarray(val)
        if arr.dtype == object:
            raise TypeError(f"metadata {k!r} must be numbers, strings or numeric arrays")
        extra["meta_" + k] = arr
    # exactly ``path``: np.savez would append ".npz" to a bare name, and load(path) would not find it
    atomic_savez(path, compress=False, **seal_arrays({**arrays, **extra}, FORMAT_VERSION))


def read_model(path):
    """Read a model file; return ``(arrays, metadata)`` after the format checks of the module docstring."""
    path = check_path("path", path)
    data = read_npz(path, "model file")
    missing = [k for k in ("W", "v") if k not in data]
    if missing:
        raise ValueError(f"model file {path!r} lacks the arrays {missing}")
    extra = sorted(k for k in data if k not in MODEL_ARRAYS and not k.startswith("meta_"))
    if extra:
        raise ValueError(
            f"model file {path!r} holds arrays this one-hidden-layer format does not have: {extra} "
            f"(expected {list(MODEL_ARRAYS)} and meta_*); refusing to ignore them"
        )
    version = data.get("format_version")  # absent: weights exported from elsewhere
    if version is None:
        pass
    elif version.shape == () and version.dtype.kind in "iu" and int(version) == LEGACY_VERSION:
        if "sha256" in data or "library_version" in data:
            raise ValueError(f"model file {path!r} has format_version 1 but a seal of version 2 (damaged?)")
        data.pop("format_version")
    elif version.shape == () and version.dtype.kind in "iu" and int(version) == FORMAT_VERSION:
        data, _ = unseal_arrays(data, "model file", path, FORMAT_VERSION)
    else:
        raise ValueError(
            f"model file {path!r} has format_version {version!r}; this library reads versions "
            f"{LEGACY_VERSION} and {FORMAT_VERSION} (a newer stadv-ref wrote it?)"
        )
    if "sha256" in data or "library_version" in data:
        raise ValueError(f"model file {path!r} has a content hash but no format_version (damaged?)")
    meta = {k[5:]: (v.item() if v.ndim == 0 else v) for k, v in data.items() if k.startswith("meta_")}
    return {k: v for k, v in data.items() if not k.startswith("meta_")}, meta
