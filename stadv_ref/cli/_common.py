"""What every ``stadv`` subcommand shares: argument types, errors, models, data and output.

* :class:`CLIError` (one line on stderr, exit status 1) and :class:`_Parser` (usage errors: one line,
  exit status 2);
* argument types :func:`_nonneg_float`, :func:`_pos_int`, :func:`_option` (``KEY=VALUE``; a
  boolean training option takes exactly true/false/yes/no/1/0);
* :func:`load_model` (a model ``.npz``) and :func:`load_data` (``--data FILE.npz`` or MNIST), both
  validated with one clear error naming the file (a 0-byte, truncated or malformed file included);
* the output directory (:func:`_out_dir`; :func:`_discard_created` removes what a failed command
  created), JSON results (:func:`_write_json`: sealed with a format version and content hash,
  :func:`stadv_ref._io.atomic_write_sealed_json`, and carrying the :func:`stadv_ref._provenance.provenance`
  block), per-image CSV tables beside them (:func:`_write_csv`) and summary lines (:func:`_say`);
* :func:`_mnist_hint`: a missing MNIST file names the commands that fix it (``stadv data download``,
  ``--data-dir``).

The model and data formats are described in :mod:`stadv_ref.cli`'s docstring.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import shutil
from pathlib import Path

import numpy as np

from .._io import atomic_write_csv, atomic_write_sealed_json, read_npz, sha256_file
from .._provenance import provenance
from ..backend import current_backend_name
from ..data import data_dir, load_mnist
from ..network import OneHiddenLayerNet
from ..training import DEFAULTS

PROG = "stadv"
OUTPUT_VERSION = 1
"""``format_version`` of the sealed JSON and ``.npz`` results the subcommands write."""


class CLIError(ValueError):
    """A user-facing error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------
# Argument types
# ---------------------------------------------------------------------------
def _nonneg_float(name):
    def parse(text):
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(x) or x < 0:
            raise argparse.ArgumentTypeError(f"{name} must be finite and >= 0, got {text!r}")
        return x

    parse.__name__ = name
    return parse


def _pos_int(name, minimum=1):
    def parse(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {n}")
        return n

    parse.__name__ = name
    return parse


_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _option(text):
    """``KEY=VALUE``: a boolean training option (e.g. ``hidden_bias``) takes exactly true/false/yes/no/1/0
    (any case; anything else is refused by name: ``bool("False")`` is true); other VALUEs are parsed as
    JSON when possible (numbers), else kept as a string (the trainer checks them by name)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option must look like KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    k = k.strip()
    if isinstance(DEFAULTS.get(k), bool):
        word = v.strip().lower()
        if word not in _BOOLEANS:
            raise argparse.ArgumentTypeError(f"--option {k} must be true/false/yes/no/1/0, got {v!r}")
        return k, _BOOLEANS[word]
    try:
        v = json.loads(v)
    except (ValueError, RecursionError):
        pass
    return k, v


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------
def _out_dir(args, default):
    """The command's output directory (``--out``, else ``default``), created; what was created is noted on
    ``args`` so that :func:`_discard_created` can remove it when the command fails."""
    out = Path(args.out if getattr(args, "out", None) else default)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} exists and is not a directory")
    _make_dir(args, out)
    return out


def _make_dir(args, path):
    """``mkdir -p path``, remembering on ``args`` the outermost directory this created (if any)."""
    path = Path(path)
    top = None
    for p in (path, *path.parents):
        if p.exists():
            break
        top = p
    path.mkdir(parents=True, exist_ok=True)
    if top is not None and getattr(args, "_created", None) is None:
        args._created = top
    return path


def _discard_created(args, *, keep_files=False):
    """After a failed command: remove the directory it created (:func:`_make_dir`).

    ``keep_files``: for the commands that resume (``train``, ``reproduce``, ``data download``) the
    directory is removed only if it holds no file (a checkpoint or finished step is kept for the rerun).
    """
    top = getattr(args, "_created", None)
    if top is None or not top.is_dir():
        return
    if keep_files and any(p.is_file() for p in top.rglob("*")):
        return
    shutil.rmtree(top, ignore_errors=True)


def _progress(args):
    return not getattr(args, "no_progress", False)


def load_model(path):
    """Load a model ``.npz`` (:mod:`stadv_ref.cli`'s docstring); one clear error when missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file {str(p)!r} does not exist")
    return OneHiddenLayerNet.load(p, with_metadata=True)


def load_data(args, image_shape=None):
    """Images and labels from ``--data FILE.npz`` or MNIST (``--data-dir``, ``--split``, ``--n``, ``--offset``).

    Returns
    -------
    X : ndarray, shape (N, H, W), float64
    y : ndarray, shape (N,), int64
    source : str
    """
    n = getattr(args, "n", None)
    offset = getattr(args, "offset", 0) or 0
    if getattr(args, "data", None):
        p = Path(args.data)
        if not p.is_file():
            raise FileNotFoundError(f"data file {str(p)!r} does not exist")
        try:
            arrays = read_npz(p, "data file")  # a 0-byte, truncated or pickled file: ValueError naming it
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        missing = [k for k in ("X", "y") if k not in arrays]
        if missing:
            raise CLIError(f"data file {str(p)!r} lacks the arrays {missing} (needs X and y)")
        X, y = arrays["X"], arrays["y"]
        if X.ndim not in (2, 3) or y.ndim != 1:
            raise CLIError(f"data file {str(p)!r}: X must have shape (N, H, W) or (N, d) and y (N,), got "
                           f"{X.shape} and {y.shape}")
        X = X[offset:]
        y = y[offset:]
        if n is not None:
            X, y = X[:n], y[:n]
        source = str(p)
    else:
        limit = None if n is None else offset + n
        with _mnist_hint(getattr(args, "data_dir", None)):
            X, y = load_mnist(getattr(args, "split", "test"), data_dir=getattr(args, "data_dir", None), limit=limit)
        X, y = X[offset:], y[offset:]
        source = f"MNIST {getattr(args, 'split', 'test')} [{offset}:{offset + len(y)}]"
    where = f"data file {source!r}" if getattr(args, "data", None) else source
    X = np.asarray(X)
    y = np.asarray(y)
    if X.dtype.kind not in "fiub":
        raise CLIError(f"{where}: X must be numeric, got dtype {X.dtype}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise CLIError(f"{where}: y must be a 1-d integer array, got shape {y.shape} dtype {y.dtype}")
    if X.shape[0] != y.shape[0]:
        raise CLIError(f"{where}: X has {X.shape[0]} examples but y has {y.shape[0]}")
    if X.shape[0] == 0:
        raise CLIError(f"{where}: no examples selected (check --n / --offset)")
    X = X.astype(np.float64)
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        raise CLIError(f"{where}: X contains NaN or inf")
    if image_shape is not None:
        H, W = image_shape
        if X.ndim == 2 and X.shape[1] == H * W:
            X = X.reshape(-1, H, W)
        if X.shape[1:] != (H, W):
            raise CLIError(f"{where}: X has images of shape {X.shape[1:]}, the model expects {H}x{W}")
    elif X.ndim == 2:
        s = int(round(math.sqrt(X.shape[1])))
        if s * s != X.shape[1]:
            raise CLIError(f"{where}: X has {X.shape[1]} features, not a square image; save X as (N, H, W)")
        X = X.reshape(-1, s, s)
    if X.ndim != 3:
        raise CLIError(f"{where}: X must have shape (N, H, W) or (N, d), got {X.shape}")
    return X, y.astype(np.int64), source


def _labels_fit(net, y):
    if not net.binary and (y.min() < 0 or y.max() >= net.n_classes):
        raise CLIError(f"labels must be in [0, {net.n_classes}) for this model, got range [{y.min()}, {y.max()}]")


def _load_net(args, *, multiclass=None):
    """The ``--model`` network. ``multiclass``: for a command that needs a multi-class model, the error
    message for a binary one."""
    net, _ = load_model(args.model)
    if multiclass and net.binary:
        raise CLIError(multiclass)
    return net


def _default_out(name):
    """The default output directory of a command: ``stadv-out/NAME`` in the current directory."""
    return Path("stadv-out") / name


def _labelled_data(args, net):
    """The data options' images and labels for ``net`` (:func:`load_data`), labels checked against its classes."""
    X, y, source = load_data(args, net.image_shape)
    _labels_fit(net, y)
    return X, y, source


def _provenance(args):
    """The :func:`stadv_ref._provenance.provenance` block of this command (its backend, ``--seed`` if it has one,
    the command line as :func:`stadv_ref.cli.main` received it)."""
    return provenance(backend=current_backend_name(), seed=getattr(args, "seed", None),
                      argv=getattr(args, "command_line", None))


def _write_json(args, path, obj):
    """Write the result dict ``obj`` atomically, sealed (``format_version``, ``library_version``, ``sha256``), with
    the command's ``provenance`` block (inside the sealed content)."""
    atomic_write_sealed_json(path, {**obj, "provenance": _provenance(args)}, OUTPUT_VERSION)
    return path


def _write_csv(path, header, rows):
    """Write a per-image table as CSV (atomically); returns ``{"file", "sha256"}`` for the JSON beside it."""
    atomic_write_csv(path, header, rows)
    return {"file": Path(path).name, "columns": list(header), "sha256": sha256_file(path)}


@contextlib.contextmanager
def _mnist_hint(data_dir_arg, dataset="mnist"):
    """Turn the library's missing-MNIST error (which says ``download=True``) into one naming the CLI's fix."""
    try:
        yield
    except ValueError as exc:
        msg = str(exc)
        if "download=True" not in msg:
            raise
        where = data_dir(dataset, data_dir_arg)
        head = msg.split(". Put the IDX files there")[0]
        fetch = "stadv data download" + (f" --dataset {dataset}" if dataset != "mnist" else "")
        raise CLIError(f"{head}: run '{fetch} --dir {shlex.quote(str(where))}' (needs internet), or pass "
                       "--data-dir DIR (or set STADV_DATA_DIR) naming a folder that holds the four IDX files") from exc


def _say(args, msg):
    if not getattr(args, "quiet", False):
        print(msg)
