r"""The job functions of the reproduction (:mod:`.jobs`): each loads what it needs by name and path,
computes one independent piece of a step with :mod:`.curves`, and returns a JSON-able dict.

* ``train_network``: one network's training (or its cached copy) and accuracies (``models``);
* ``lower_bound_network``: Theorem 1 and Algorithm 1 on one network at one ``eps`` (``fig2``);
* ``certify_network``: one network's class-pair bounds by one method and what they certify (``fig5``, ``fig11``);
* ``local_network``: one network's per-image certificates and the attack ceiling (``local``);
* ``attack_network``: one network's stAdv attack at one ``tau`` on the test images (``fig6``).

Their arguments are plain values (names, paths, numbers) so that a pool process or a Dask worker
can run them; ``model`` holds the keywords of :func:`stadv_ref.training.load_or_train` and
``model_sha256`` the cached network's hash (it enters the job's stored arguments, so a retrained
network makes the job run again).
"""
from __future__ import annotations

import time

import numpy as np

from ..data import load_mnist
from ..training import load_or_train
from .curves import _LB_FIELDS, attack_curve, certify_curve, local_curve, lower_bound_curve

__all__ = ["train_network", "lower_bound_network", "certify_network", "local_network", "attack_network"]


def _network(variant, hidden, model):
    return load_or_train(variant, hidden=hidden, progress=False, with_metadata=True, **model)


def _test(data_dir, n):
    return load_mnist("test", data_dir=data_dir, limit=n)


def train_network(variant, hidden, model):
    """Train (or load) one network; its row of the ``models`` table (accuracies, epochs, seconds)."""
    t0 = time.perf_counter()
    _, meta = _network(variant, hidden, model)
    return dict(variant=variant, hidden=hidden, test_accuracy=meta.get("test_accuracy"),
                train_accuracy=meta.get("train_accuracy"), epochs=meta.get("epochs"), n_train=meta.get("n_train"),
                seconds=round(time.perf_counter() - t0, 2), test_accuracy_with_stn=meta.get("test_accuracy_with_stn"))


def lower_bound_network(variant, hidden, model, model_sha256, eps, max_iter, n, seed):
    """:func:`.curves.lower_bound_curve` of one network at one ``eps``, with Algorithm 1's pair ``x``, ``flow``."""
    net, _ = _network(variant, hidden, model)
    curve = lower_bound_curve(net, (eps,), max_iter=max_iter, n=n, seed=seed, progress=False, keep_results=True)
    res = curve.pop("results")[0]
    return {"curve": curve, "x": np.asarray(res.x).tolist(), "flow": np.asarray(res.flow).tolist(),
            "dtype": str(np.asarray(res.x).dtype)}


def merge_lower_bound(parts):
    """One :func:`.curves.lower_bound_curve` dict from its one-``eps`` parts (``notes``: the last one's)."""
    curves = [p["curve"] for p in parts]
    out = {k: [v for c in curves for v in c[k]] for k in ("eps", *_LB_FIELDS, "convergence")}
    out["notes"] = curves[-1]["notes"]
    return out


def certify_network(variant, hidden, model, model_sha256, data_dir, n_test, eps, method, cache_dir, gap_tol):
    """:func:`.curves.certify_curve` of one network and one method on the first ``n_test`` test images."""
    net, _ = _network(variant, hidden, model)
    X, y = _test(data_dir, n_test)
    return certify_curve(net, X, y, eps, (method,), cache_dir=cache_dir, gap_tol=gap_tol, progress=False)


def local_network(variant, hidden, model, model_sha256, data_dir, n_test, eps, options):
    """:func:`.curves.local_curve` of one network on the first ``n_test`` test images (``options``: its keywords)."""
    net, _ = _network(variant, hidden, model)
    X, y = _test(data_dir, n_test)
    return local_curve(net, X, y, eps, progress=False, **options)


def attack_network(variant, hidden, model, model_sha256, data_dir, n_test, tau, max_iter):
    """:func:`.curves.attack_curve` of one network at one ``tau`` on the first ``n_test`` test images."""
    net, _ = _network(variant, hidden, model)
    X, y = _test(data_dir, n_test)
    return attack_curve(net, X, y, (tau,), max_iter=max_iter, progress=False)


def merge_certify(parts):
    """One :func:`.curves.certify_curve` dict from its one-method parts (in method order)."""
    out = {"eps": parts[0]["eps"], "methods": [m for p in parts for m in p["methods"]]}
    for key in ("zero_one", "sound", "certified_count", "pair_bounds", "seconds"):
        out[key] = {m: v for p in parts for m, v in p[key].items()}
    out["clean_error"], out["n"] = parts[0]["clean_error"], parts[0]["n"]
    return out


def merge_attack(parts):
    """One :func:`.curves.attack_curve` dict from its one-``tau`` parts (in ``tau`` order)."""
    out = dict(parts[0])
    for key, value in parts[0].items():
        if isinstance(value, list):
            out[key] = [v for p in parts for v in p[key]]
    return out
