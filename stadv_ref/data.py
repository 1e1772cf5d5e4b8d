"""MNIST / Fashion-MNIST loader for the original IDX files (gzip-compressed or not).

The directory comes from the ``data_dir`` argument, else the environment
variable ``STADV_DATA_DIR``, else the cache ``~/.cache/stadv_ref/<dataset>``.
With ``download=True`` missing files are fetched into that directory and
verified against their published MD5 checksums; offline, a clear error says
where to put the files. The data are never shipped with the package.

:func:`read_idx` reads any IDX file; :func:`load_dataset` accepts only what the
MNIST-format data sets are: ``uint8`` images of shape ``(N, 28, 28)`` and ``uint8``
labels in ``[0, 9]`` with the same ``N >= 1`` (anything else is refused by file name).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import shutil
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ._validate import check_choice, check_positive_int

__all__ = ["read_idx", "load_dataset", "load_mnist", "data_dir", "DATASETS", "FILES"]

DATASETS = {
    "mnist": {
        "urls": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        # MD5 of the uncompressed files (gunzip of the published archives above)
        "md5_raw": {
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
    },
    "fashion-mnist": {
        "urls": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "md5_raw": {
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
    },
}
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGE_SHAPE = (28, 28)
N_CLASSES = 10
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path):
    """Read one IDX file (optionally gzip-compressed).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    ndarray
        With the shape and element type recorded in the header (any IDX type:
        ``uint8``, ``int8``, ``>i2``, ``>i4``, ``>f4``, ``>f8``; no range check --
        :func:`load_dataset` checks what MNIST files must hold).

    Raises
    ------
    TypeError
        ``path`` is not a string or path-like.
    ValueError
        Missing or unreadable file, not an IDX file, unknown type code, or
        truncated/oversized data.
    """
    path = _path_arg("path", path)
    if not path.is_file():
        raise ValueError(f"IDX file {str(path)!r} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: corrupt gzip data
        raise ValueError(f"cannot read {str(path)!r}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise ValueError(f"{str(path)!r}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{str(path)!r}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{str(path)!r}: header announces shape {shape} ({expected} bytes) "
            f"but holds {len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _path_arg(name, path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or path-like, got {type(path).__name__}")
    return Path(path)


def data_dir(dataset="mnist", data_dir=None):
    """Resolve the directory holding ``dataset``'s IDX files (see module docstring).

    Raises
    ------
    TypeError
        ``data_dir`` is not a str or path-like.
    ValueError
        Unknown ``dataset``.
    """
    check_choice("dataset", dataset, DATASETS)
    if data_dir is not None:
        return _path_arg("data_dir", data_dir)
    env = os.environ.get("STADV_DATA_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stadv_ref" / dataset


def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(name, target, dataset, base_urls):
    target.parent.mkdir(parents=True, exist_ok=True)
    want = DATASETS[dataset]["md5"][name]
    errors = []
    for base in base_urls:
        url = base + name
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
        os.close(fd)
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out)
            got = _md5(tmp)
            if got != want:
                errors.append(f"{url}: MD5 {got} != {want}")
                continue
            os.replace(tmp, target)
            return
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise ValueError(f"could not download {name}: " + "; ".join(errors))


def _find(directory, name):
    """The file ``name`` or its uncompressed twin in ``directory``."""
    for cand in (directory / name, directory / name[:-3]):
        if cand.is_file():
            return cand
    return None


def _verify(path, name, dataset):
    """Check ``path`` (``name`` or its uncompressed twin) against the published MD5 table."""
    entry = DATASETS[dataset]
    table, key = (entry["md5"], name) if path.suffix == ".gz" else (entry.get("md5_raw", {}), name[:-3])
    want = table.get(key)
    if want is None:
        raise ValueError(f"verify=True: no published MD5 for {str(path)!r}; cannot verify it "
                         f"(use the .gz file or verify=False)")
    if _md5(path) != want:
        raise ValueError(f"{str(path)!r} does not match its published MD5 checksum")


def _check_split(images, labels, paths):
    """Refuse anything but uint8 images ``(N, 28, 28)`` and uint8 labels in ``[0, 9]`` with the same ``N >= 1``."""
    img, lab = (repr(str(p)) for p in paths)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"image file {img} must hold uint8 images of shape (N, 28, 28), "
                         f"got {images.dtype} of shape {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"label file {lab} must hold uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"inconsistent IDX files: {images.shape[0]} images in {img}, "
                         f"{labels.shape[0]} labels in {lab}")
    if images.shape[0] == 0:
        raise ValueError(f"image file {img} holds no images")
    if labels.max() >= N_CLASSES:
        raise ValueError(f"label file {lab} holds label {int(labels.max())}; labels must be in [0, {N_CLASSES - 1}]")


def load_dataset(split="test", dataset="mnist", data_dir=None, *, download=False, limit=None,
                 verify=False, base_urls=None):
    """Load MNIST or Fashion-MNIST as float64 images in ``[0, 1]``.

    Parameters
    ----------
    split : {"train", "test"}
    dataset : {"mnist", "fashion-mnist"}
    data_dir : str or path-like, optional
        Directory with the four IDX files (gzip-compressed or not); default
        ``STADV_DATA_DIR`` or the cache.
    download : bool
        Fetch missing files (checked against the published MD5) into the directory.
    limit : int, optional
        Return only the first ``limit >= 1`` examples.
    verify : bool
        Check the MD5 of existing files too: ``.gz`` files against the published
        checksums, uncompressed files against the checksums of the uncompressed
        originals. A file with no known checksum is refused, never used unverified.
    base_urls : sequence of str, optional
        Mirrors to try (each must end with ``/``).

    Returns
    -------
    X : ndarray, shape (N, 28, 28), float64 in [0, 1]
    y : ndarray, shape (N,), int64 in [0, 9]

    Raises
    ------
    TypeError
        ``data_dir`` is not path-like; ``download``/``verify`` are not bools;
        ``limit`` is not an integer; ``base_urls`` is not a sequence of strings.
    ValueError
        Unknown ``split``/``dataset``; ``limit < 1``; a missing file without
        ``download``; a failed download or checksum; a file that is not IDX or does
        not hold uint8 ``(N, 28, 28)`` images / uint8 labels in ``[0, 9]`` with the
        same ``N >= 1`` (the message names the file).
    """
    check_choice("split", split, FILES)
    for name, flag in (("download", download), ("verify", verify)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if limit is not None:
        limit = check_positive_int("limit", limit)
    if base_urls is not None:
        if isinstance(base_urls, (str, bytes)) or not all(isinstance(u, str) and u.endswith("/") for u in base_urls):
            raise TypeError(f"base_urls must be a sequence of URL strings ending with '/', got {base_urls!r}")
    directory = globals()["data_dir"](dataset, data_dir)
    arrays, paths = [], []
    for name in FILES[split]:
        path = _find(directory, name)
        if path is None:
            if not download:
                raise ValueError(
                    f"{name} not found in {str(directory)!r}. Put the IDX files there, set "
                    f"STADV_DATA_DIR, or pass download=True (needs internet)."
                )
            _download(name, directory / name, dataset, base_urls or DATASETS[dataset]["urls"])
            path = directory / name
        elif verify:
            _verify(path, name, dataset)
        arrays.append(read_idx(path))
        paths.append(path)
    images, labels = arrays
    _check_split(images, labels, paths)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images.astype(np.float64) / 255.0, labels.astype(np.int64)


def load_mnist(split="test", data_dir=None, **kwargs):
    """:func:`load_dataset` for MNIST (same keywords, returns and ``Raises``)."""
    return load_dataset(split, "mnist", data_dir, **kwargs)
