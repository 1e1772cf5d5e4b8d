"""Files that are never half-written and cannot lie: atomic writers, content hashes, checked readers.

Each writer writes a temporary file in the target's directory and moves it into
place with :func:`os.replace`, so a reader (or a resumed run after ``kill -9``)
sees either the old file or the complete new one. ``.npz`` files never hold
pickled objects.

A *sealed* file (issue #19, "files that cannot lie") also carries its
``format_version``, the ``library_version`` that wrote it and ``sha256``, the
hash of everything else in it (:func:`sha256_arrays` for ``.npz`` files,
:func:`sha256_json` for JSON). :func:`unseal_arrays` and :func:`read_sealed_json`
check all three and raise a ``ValueError`` naming the file on any mismatch;
:func:`read_npz` turns every failure of reading an ``.npz`` (missing, truncated,
not a zip, pickles, corrupt members) into a ``ValueError`` naming the file. The
callers decide between that error and a recomputation with a warning.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import importlib.metadata
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_csv", "atomic_savez",
           "atomic_savefig", "jsonable",
           "library_version", "sha256_arrays", "sha256_json", "sha256_file", "seal_arrays", "unseal_arrays",
           "read_npz", "atomic_write_sealed_json", "read_sealed_json"]

SEAL_FIELDS = ("format_version", "library_version", "sha256")
"""The entries a sealed file adds to its payload."""


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


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, then ``os.replace``)."""
    path = Path(path)
    tmp = _tmp_in(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
    except BaseException:
        os.remove(tmp)
        raise
    return _replace(tmp, path)


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


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


def _csv_cell(value):
    """One CSV cell: booleans as ``true``/``false``, ``None`` empty, floats in Python's shortest round-trip form."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, np.integer):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def atomic_write_csv(path, header, rows):
    """Write a CSV table (``header``, then one line per row) atomically (:func:`atomic_write_text`).

    Cells: ``true``/``false`` for booleans, empty for ``None``, floats exactly (``repr``;
    ``inf``/``nan`` as such), NumPy scalars as Python numbers. Every row must have one cell per
    column of ``header``.
    """
    header = [str(h) for h in header]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for k, row in enumerate(rows):
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"CSV row {k} has {len(row)} cells for {len(header)} columns")
        writer.writerow([_csv_cell(v) for v in row])
    return atomic_write_text(path, buf.getvalue())


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


def atomic_savez(path, compress=True, **arrays):
    """``np.savez_compressed`` (``np.savez`` with ``compress=False``) atomically, to exactly ``path`` (no pickle)."""
    path = Path(path)
    tmp = _tmp_in(path)
    try:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compress else np.savez)(fh, **arrays)
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


# ---------------------------------------------------------------------------
# Content hashes and sealed files
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def library_version():
    """The installed ``stadv-ref`` version (``importlib.metadata``; ``"unknown"`` when not installed)."""
    try:
        return importlib.metadata.version("stadv-ref")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


def sha256_arrays(arrays):
    """sha256 (hex) of named arrays: name, dtype, shape and bytes of each, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([str(name), a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _canonical_json(obj):
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_json(obj):
    """sha256 (hex) of ``obj`` as canonical JSON (sorted keys; :func:`jsonable` conversions)."""
    return hashlib.sha256(_canonical_json(obj).encode()).hexdigest()


def sha256_file(path):
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal_arrays(arrays, format_version):
    """``arrays`` plus :data:`SEAL_FIELDS`: ``format_version``, ``library_version`` and their ``sha256``."""
    out = {k: np.asarray(v) for k, v in arrays.items()}
    clash = sorted(set(out) & set(SEAL_FIELDS))
    if clash:
        raise ValueError(f"array names {clash} are reserved for the file's seal")
    out["format_version"] = np.int64(format_version)
    out["library_version"] = np.asarray(library_version())
    out["sha256"] = np.asarray(sha256_arrays(out))
    return out


def _scalar(data, name, kind):
    """The 0-d entry ``name`` of ``data`` as a Python int/str, or ``None`` if absent or of another kind."""
    a = data.get(name)
    if not isinstance(a, np.ndarray) or a.shape != ():
        return None
    if kind == "int" and np.issubdtype(a.dtype, np.integer) and a.dtype != np.bool_:
        return int(a)
    if kind == "str" and a.dtype.kind == "U":
        return str(a)
    return None


def unseal_arrays(data, what, path, format_version):
    """Check the seal of the arrays ``data`` read from ``path``; return ``(payload, library_version)``.

    ``ValueError`` naming ``what`` and the file when ``sha256`` is missing or does not match
    the rest (the file was changed after it was written), or the ``format_version`` is not
    ``format_version`` (an int or a tuple of accepted ints).
    """
    accepted = (format_version,) if isinstance(format_version, int) else tuple(format_version)
    name = f"{what} {os.fspath(path)!r}"
    version = _scalar(data, "format_version", "int")
    if version not in accepted:
        raise ValueError(f"{name} has format_version {version!r}; this library reads {list(accepted)}")
    stored = _scalar(data, "sha256", "str")
    if stored is None:
        raise ValueError(f"{name} has format_version {version} but no content hash (sha256): damaged")
    if stored != sha256_arrays({k: v for k, v in data.items() if k != "sha256"}):
        raise ValueError(f"{name} does not match its content hash (changed or damaged after it was written)")
    lib = _scalar(data, "library_version", "str")
    return {k: v for k, v in data.items() if k not in SEAL_FIELDS}, lib


def read_npz(path, what):
    """Every array of the ``.npz`` at ``path`` (``allow_pickle=False``) as a dict.

    Any failure -- a missing file, not a zip archive (e.g. truncated), pickled objects,
    corrupt or non-array members -- is a ``ValueError`` naming ``what`` and the file,
    never an ``EOFError``/``zipfile.BadZipFile`` from below.
    """
    name = f"{what} {os.fspath(path)!r}"
    if not os.path.isfile(path):
        raise ValueError(f"{name} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{name} is not a valid .npz archive (empty, truncated or another format)")
    try:
        # our own handle: np.load leaves its file open when the zip directory is corrupt
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ValueError(f"{name} holds pickled objects; refusing to load it") from exc
        raise ValueError(f"{name} is not a valid .npz archive ({exc})") from exc
    except Exception as exc:  # BadZipFile, EOFError, zlib.error, NotImplementedError, MemoryError, ...
        raise ValueError(f"{name} is not a valid .npz archive ({type(exc).__name__}: {exc})") from exc
    bad = sorted(k for k, v in data.items() if not isinstance(v, np.ndarray))
    if bad:
        raise ValueError(f"{name} holds members that are not .npy arrays: {bad}")
    return data


def atomic_write_sealed_json(path, obj, format_version=1):
    """Write the dict ``obj`` as JSON with :data:`SEAL_FIELDS` added, atomically."""
    body = _jsonable(obj)
    if not isinstance(body, dict):
        raise TypeError(f"a sealed JSON file holds a dict, got {type(obj).__name__}")
    clash = sorted(set(body) & set(SEAL_FIELDS))
    if clash:
        raise ValueError(f"keys {clash} are reserved for the file's seal")
    body["format_version"] = int(format_version)
    body["library_version"] = library_version()
    body["sha256"] = sha256_json(body)
    return atomic_write_text(path, json.dumps(body, indent=2) + "\n")


def read_sealed_json(path, what, format_version=1):
    """Read a file of :func:`atomic_write_sealed_json`; its dict (seal fields included).

    ``ValueError`` naming ``what`` and the file: missing, unreadable, not JSON, not a JSON
    object (e.g. a list), no or a wrong content hash, another ``format_version``.
    """
    name = f"{what} {os.fspath(path)!r}"
    try:
        with open(path, encoding="utf-8") as fh:
            body = json.load(fh)
    except FileNotFoundError as exc:
        raise ValueError(f"{name} does not exist") from exc
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{name} is not readable JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(body, dict):
        raise ValueError(f"{name} holds a JSON {type(body).__name__} where an object belongs")
    stored = body.get("sha256")
    if not isinstance(stored, str):
        raise ValueError(f"{name} has no content hash (not written by this stadv-ref version, or damaged)")
    version = body.get("format_version")
    if type(version) is not int or version != format_version:
        raise ValueError(f"{name} has format_version {version!r}; this library reads {format_version}")
    try:
        actual = sha256_json({k: v for k, v in body.items() if k != "sha256"})
    except (ValueError, RecursionError) as exc:  # e.g. a float NaN written by hand
        raise ValueError(f"{name} holds values JSON cannot represent exactly ({exc})") from exc
    if stored != actual:
        raise ValueError(f"{name} does not match its content hash (changed or damaged after it was written)")
    return body
