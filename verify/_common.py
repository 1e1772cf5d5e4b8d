"""Helpers shared by the ``verify/`` figure scripts (and ``benchmarks/bench_sdp.py``).

* :func:`script_parser` -- the ``--quick`` / ``--out`` options every script takes;
* :func:`output_dir` -- create the ``--out`` directory;
* :func:`load_networks` -- trained one-hidden-layer MNIST networks from
  :func:`stadv_ref.training.load_or_train`, with :func:`fallback_train` (a minimal
  cross-entropy trainer) for ``nt`` / ``rand`` when that fails;
* :func:`close_record` -- note the networks that could not be had and the run time;
* :func:`jsonable`, :func:`write_json`, :func:`write_text_atomic` -- JSON output;
* :func:`pyplot`, :func:`save_figure` -- matplotlib on the Agg backend.

Imported as ``verify._common`` (repository root on ``sys.path``) or as
``_common`` when a script runs as ``python verify/figX.py`` (``verify/`` is then
``sys.path[0]``). Not part of the installed ``stadv_ref`` package.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


# ---------------------------------------------------------------------------
# Command line and output directory
# ---------------------------------------------------------------------------
def script_parser(doc, default_out, quick_help=None, out_help=None):
    """An ``ArgumentParser`` (description: first line of ``doc``) with ``--quick`` and ``--out``."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", default=str(default_out), help=out_help)
    return p


def parse_variants(text):
    """``"nt, rand,at"`` -> ``["nt", "rand", "at"]`` (empty items dropped)."""
    return [v.strip() for v in text.split(",") if v.strip()]


def output_dir(path):
    """``Path(path)``, created with its parents if needed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------
def fallback_train(variant, hidden, n_train, epochs, seed, data_dir):
    """Minimal cross-entropy trainer (mini-batch Adam, no hidden bias) for ``nt`` / ``rand``.

    ``nt`` is trained for ``epochs`` epochs on the first ``n_train`` MNIST training
    images; ``rand`` keeps its random initialisation (He-scaled ``W``, ``V``).
    """
    import stadv_ref

    X, y = stadv_ref.load_mnist("train", data_dir=data_dir, limit=n_train)
    X = X.reshape(len(X), -1)
    rng = np.random.default_rng(seed)
    d, K = X.shape[1], 10
    W = rng.standard_normal((hidden, d)) * np.sqrt(2.0 / d)
    V = rng.standard_normal((K, hidden)) * np.sqrt(1.0 / hidden)
    c = np.zeros(K)
    params = [W, V, c]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    t = 0
    for _ in range(epochs if variant == "nt" else 0):
        for idx in np.array_split(rng.permutation(len(X)), max(1, len(X) // 100)):
            Z = X[idx] @ W.T
            Hh = np.maximum(Z, 0)
            out = Hh @ V.T + c
            P = np.exp(out - out.max(1, keepdims=True))
            P /= P.sum(1, keepdims=True)
            P[np.arange(len(idx)), y[idx]] -= 1
            P /= len(idx)
            grads = (((P @ V) * (Z > 0)).T @ X[idx], P.T @ Hh, P.sum(0))
            t += 1
            for p, g, a, b in zip(params, grads, m1, m2):
                a *= 0.9
                a += 0.1 * g
                b *= 0.999
                b += 0.001 * g * g
                p -= 1e-3 * (a / (1 - 0.9**t)) / (np.sqrt(b / (1 - 0.999**t)) + 1e-8)
    return stadv_ref.OneHiddenLayerNet(W, V, c=c, image_shape=(28, 28))


def load_networks(variants, hidden, quick, model_dir=None, data_dir=None, seed=0, progress=False,
                  fallback_source="fallback trainer"):
    """Trained MNIST networks with ``hidden`` hidden units and where each came from.

    Each variant is loaded (or trained and cached) by
    :func:`stadv_ref.training.load_or_train`; if that fails, ``nt`` and ``rand``
    come from :func:`fallback_train` (5,000 images and 4 epochs when ``quick``,
    else 60,000 and 20) and the other variants are reported missing.

    Returns
    -------
    nets : dict variant -> OneHiddenLayerNet
    info : dict variant -> dict with ``source, test_accuracy, n_train, epochs`` (loaded),
        ``source, n_train, epochs, reason`` (fallback trainer) or ``missing, reason``,
        each followed by ``load_seconds``.
    """
    nets, info = {}, {}
    try:
        from stadv_ref.training import load_or_train
    except Exception as exc:  # pragma: no cover - depends on the training module
        load_or_train, why = None, f"stadv_ref.training unavailable ({exc})"
    for v in variants:
        t0 = time.perf_counter()
        try:
            if load_or_train is None:
                raise RuntimeError(why)
            net, meta = load_or_train(v, cache_dir=model_dir, hidden=hidden, seed=seed, quick=quick,
                                      data_dir=data_dir, progress=progress, with_metadata=True)
            nets[v] = net
            info[v] = {"source": "stadv_ref.training.load_or_train" + (" (quick)" if quick else ""),
                       "test_accuracy": float(meta.get("test_accuracy", float("nan"))),
                       "n_train": int(meta.get("n_train", -1)), "epochs": int(meta.get("epochs", -1))}
        except Exception as exc:
            if v in ("nt", "rand"):
                n_train, epochs = (5000, 4) if quick else (60000, 20)
                nets[v] = fallback_train(v, hidden, n_train, epochs, seed, data_dir)
                info[v] = {"source": fallback_source, "n_train": n_train,
                           "epochs": epochs if v == "nt" else 0, "reason": f"{type(exc).__name__}: {exc}"}
            else:
                info[v] = {"missing": True, "reason": f"{type(exc).__name__}: {exc}"}
        info[v]["load_seconds"] = time.perf_counter() - t0
    return nets, info


def close_record(out, variants, nets, info, t0, path=None):
    """Finish a result dict and write it to ``path`` (JSON, :func:`write_json`) if given.

    Adds ``missing_networks`` (variant -> reason, only when some of ``variants`` are
    not in ``nets``), then ``seconds`` since ``t0`` (a ``time.time()`` value).
    """
    missing = [v for v in variants if v not in nets]
    if missing:
        out["missing_networks"] = {v: info[v].get("reason") for v in missing}
    out["seconds"] = time.time() - t0
    if path is not None:
        write_json(path, out)
    return out


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------
def jsonable(o):
    """NumPy scalars/arrays and tuples to JSON types (non-finite floats to ``None``)."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
    if isinstance(o, (np.floating, float)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` through a ``.part`` file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path, obj):
    """``obj`` (through :func:`jsonable`) as indented JSON, written atomically."""
    write_text_atomic(path, json.dumps(jsonable(obj), indent=1) + "\n")


# ---------------------------------------------------------------------------
# Plotting
# ---------------------------------------------------------------------------
def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, title, dpi, fontsize=10):
    """Add the title, lay out, save ``fig`` to ``path`` and close it."""
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
