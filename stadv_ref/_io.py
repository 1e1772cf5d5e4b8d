"""Files that are never half-written: atomic text, JSON, ``.npz`` and figure writers.

Each writer writes a temporary file in the target's directory and moves it into
place with :func:`os.replace`, so a reader (or a resumed run after ``kill -9``)
sees either the old file or the complete new one. ``.npz`` files never hold
pickled objects.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_savez", "atomic_savefig", "jsonable"]


def _tmp_in(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.stem + ".", suffix=".part" + path.suffix)
    os.close(fd)
    return tmp


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace(tmp, path):
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` atomically (temporary file in the same directory, then ``os.replace``)."""
    path = Path(path)
    tmp = _tmp_in(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    except BaseException:
        os.remove(tmp)
        raise
    return _replace(tmp, path)


def _jsonable(obj, skip=()):
    """A JSON-ready copy of ``obj``: NumPy scalars and arrays converted, non-finite floats as strings.

    Dictionary entries whose key is in ``skip`` are left out (at every depth).
    """
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, skip) for k, v in obj.items() if k not in skip}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, skip) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if np.isfinite(x) else str(x)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), skip)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path, obj):
    """JSON version of :func:`atomic_write_text` (NumPy scalars/arrays converted, non-finite as strings)."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def atomic_savefig(fig, path, dpi=100):
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = _tmp_in(path)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    except BaseException:
        os.remove(tmp)
        raise
    finally:
        plt.close(fig)
    return _replace(tmp, path)


def atomic_savez(path, **arrays):
    """``np.savez_compressed`` atomically (no pickle)."""
    path = Path(path)
    tmp = _tmp_in(path)
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    except BaseException:
        os.remove(tmp)
        raise
    return _replace(tmp, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


jsonable = _jsonable
