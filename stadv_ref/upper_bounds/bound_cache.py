"""The cache of class-pair bounds used by :func:`stadv_ref.upper_bounds.certify` ([E13]).

:func:`pair_bounds_cached` computes :func:`stadv_ref.upper_bounds.class_pair_bounds` once per
network and settings and keeps the result in memory and, with ``cache_dir``, on disk as
``bounds-<method>-<key>.npz``. The key (:func:`_cache_key`) hashes the weights (``W``, ``V``,
``b``), the image shape, every option that changes the bound and the library version.

A disk file is written atomically and sealed (:mod:`stadv_ref._io`: ``format_version``,
``library_version`` and the ``sha256`` of the bounds, the key and the info). A file that
cannot be trusted -- truncated or not an ``.npz``, a content hash that does not match (changed
after it was written), another format, key or library version, bounds of the wrong shape or
with NaN -- is never used: :func:`pair_bounds_cached` warns (naming the file) and recomputes.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings

import numpy as np

from .._io import atomic_savez, library_version, read_npz, seal_arrays, unseal_arrays
from .closed_form import SOUND_METHODS, class_pair_bounds

__all__ = ["pair_bounds_cached", "clear_bound_cache"]

_CACHE_VERSION = 1
_MEMORY_CACHE = {}


def _cache_key(net, method, options):
    """Hash (32 hex digits) of the weights, image shape, method, options and library version."""
    h = hashlib.sha256()
    for a in (net.W, net.V, net.b):
        arr = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    h.update(json.dumps({"method": method, "image_shape": list(net.image_shape), **options},
                        sort_keys=True, default=str).encode())
    h.update(f"stadv-ref {library_version()}".encode())
    return h.hexdigest()[:32]


def clear_bound_cache():
    """Empty the in-memory cache of class-pair bounds."""
    _MEMORY_CACHE.clear()


def _read_disk(path, key, shape):
    """``(bounds, info)`` from a cache file, or ``None`` with a warning naming the file when it cannot be trusted."""
    try:
        data, lib = unseal_arrays(read_npz(path, "bound cache"), "bound cache", path, _CACHE_VERSION)
        if lib != library_version():
            raise ValueError(f"was written by stadv-ref {lib}, this is {library_version()}")
        stored = data.get("key")
        if stored is None or stored.shape != () or str(stored) != key:
            raise ValueError("holds the bounds of another network or settings (key mismatch)")
        b = data.get("bounds")
        if b is None or b.shape != shape or b.dtype != np.float64 or np.isnan(b).any() or (b < 0).any():
            raise ValueError(f"does not hold non-negative float64 bounds of shape {shape}")
        info = json.loads(str(data.get("info", "")))
        if not isinstance(info, dict):
            raise ValueError("its info is not a JSON object")
    except ValueError as exc:
        msg = str(exc) if str(path) in str(exc) else f"bound cache {path!r} {exc}"
        warnings.warn(f"{msg}; recomputing the bounds", stacklevel=3)
        return None
    return b.copy(), info


def pair_bounds_cached(net, method="sdp", *, input_range=(0.0, 1.0), padding="zeros", solver="mixing",
                       gap_tol=1e-5, seed=0, cache=True, cache_dir=None, progress=True, **solver_options):
    """:func:`stadv_ref.upper_bounds.class_pair_bounds` with in-memory and on-disk caching.

    Parameters
    ----------
    net : OneHiddenLayerNet
    method, input_range, padding, solver, gap_tol, seed, **solver_options
        As in :func:`stadv_ref.upper_bounds.class_pair_bounds`; all enter the cache key.
    cache : bool
        Read and fill the caches (``False``: always compute, write nothing).
    cache_dir : str or path-like, optional
        Directory of the on-disk cache (created if needed).
    progress : bool

    Returns
    -------
    bounds : ndarray, shape (K, K) (or (1, 1) for a binary network)
        Per-unit-``eps`` bounds.
    info : dict
        ``{"key", "source" ("computed"|"memory"|"disk"), "time", "max_gap", "how", ...}``.

    Warns
    -----
    UserWarning
        A cache file that cannot be trusted (module docstring); the bounds are recomputed
        and the file rewritten.
    """
    options = {"input_range": [float(t) for t in input_range], "padding": padding, "solver": solver,
               "gap_tol": float(gap_tol), "seed": int(seed), **solver_options}
    key = _cache_key(net, method, options)
    if cache and key in _MEMORY_CACHE:
        b, info = _MEMORY_CACHE[key]
        return b.copy(), dict(info, source="memory")
    path = None
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(os.fspath(cache_dir), f"bounds-{method}-{key}.npz")
        if cache and os.path.isfile(path):
            K = 1 if net.binary else net.n_classes
            found = _read_disk(path, key, (K, K))
            if found is not None:
                _MEMORY_CACHE[key] = (found[0].copy(), found[1])
                return found[0], dict(found[1], source="disk")
    t0 = time.perf_counter()
    b, results = class_pair_bounds(net, method, input_range=input_range, padding=padding, solver=solver,
                                   gap_tol=gap_tol, seed=seed, progress=progress, **solver_options)
    gaps = [r.gap for r in results.values() if r.gap is not None]
    info = {
        "key": key,
        "method": method,
        "time": time.perf_counter() - t0,
        "max_gap": max(gaps) if gaps else None,
        "how": next(iter(results.values())).how,
        "sound": method in SOUND_METHODS,
        "winners": {f"{i},{y}": r.details.get("winner") for (i, y), r in results.items()
                    if r.details.get("winner")},
    }
    if cache:
        _MEMORY_CACHE[key] = (b.copy(), info)
    if path is not None and cache:
        arrays = {"bounds": np.asarray(b, dtype=np.float64), "key": np.asarray(key),
                  "info": np.asarray(json.dumps(info))}
        atomic_savez(path, **seal_arrays(arrays, _CACHE_VERSION))
    return b, dict(info, source="computed")
