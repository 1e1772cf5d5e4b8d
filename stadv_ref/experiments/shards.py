r"""The job functions of the reproduction (:mod:`.jobs`): each loads what it needs by name and path,
computes one independent piece of a step with :mod:`.curves`, and returns a JSON-able dict.

* ``train_network``: one network's training (or its cached copy) and accuracies (``models``);
* ``lower_bound_network``: Theorem 1 and Algorithm 1 on one network at one ``eps`` (``fig2``);
* ``certify_network``: one network's class-pair bounds by one method and what they certify (``fig5``, ``fig11``);
* ``local_network``: one network's per-image certificates and the attack ceiling on a range of test
  images (``local``; :func:`merge_local` joins the ranges);
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

__all__ = ["train_network", "lower_bound_network", "certify_network", "local_network", "attack_network",
           "merge_lower_bound", "merge_certify", "merge_local", "merge_attack"]


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


def local_network(variant, hidden, model, model_sha256, data_dir, n_test, eps, options, start=0, stop=None):
    """:func:`.curves.local_curve` of one network on test images ``start:stop`` of the first ``n_test``.

    ``options`` are its keywords; the attack on test image ``n`` is seeded with ``attack_seed + n``
    wherever the part starts, so parts merged by :func:`merge_local` give the numbers of one job.
    """
    stop = n_test if stop is None else stop
    if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop <= n_test):
        raise ValueError(f"start, stop must be integers with 0 <= start < stop <= n_test = {n_test}, "
                         f"got {start!r}, {stop!r}")
    net, _ = _network(variant, hidden, model)
    X, y = _test(data_dir, n_test)
    opts = dict(options, attack_seed=options.get("attack_seed", 0) + start)
    return local_curve(net, X[start:stop], y[start:stop], eps, progress=False, **opts)


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


_LOCAL_FRACTIONS = ("certified_fast", "certified_tight", "certified_global", "attack_accuracy")


def merge_local(parts, n_grid, stop_broken):
    """One :func:`.curves.local_curve` dict from its parts on consecutive image ranges (in order).

    Each part computed every budget (``stop_broken=None``); the merged fractions are the parts'
    counts over all images (so exactly the fractions one job would give), and the merged curve stops
    where one job would: after the first budget beyond the first ``n_grid`` (the grid) whose attack
    accuracy is at most ``1 - stop_broken``. The merged ``seconds`` are the parts' sums, the budgets the
    rule drops included.

    Raises
    ------
    ValueError
        No parts, or parts with different budgets.
    """
    if not parts:
        raise ValueError("merge_local needs at least one part")
    if not (isinstance(n_grid, int) and 0 < n_grid <= len(parts[0]["eps"])):
        raise ValueError(f"n_grid must be an integer in [1, {len(parts[0]['eps'])}], got {n_grid!r}")
    if stop_broken is not None and not 0 <= stop_broken <= 1:
        raise ValueError(f"stop_broken must be None or in [0, 1], got {stop_broken!r}")
    eps = parts[0]["eps"]
    if any(p["eps"] != eps for p in parts):
        raise ValueError(f"the parts computed different budgets: {[p['eps'] for p in parts]}")
    n = sum(int(p["n"]) for p in parts)

    def fraction(values):  # values[j]: part j's fraction of its n images
        return sum(round(v * p["n"]) for v, p in zip(values, parts)) / n

    out = {"eps": list(eps), "n": n, "clean_accuracy": fraction([p["clean_accuracy"] for p in parts]),
           "global_methods": parts[0]["global_methods"]}
    for key in _LOCAL_FRACTIONS:
        out[key] = [fraction([p[key][k] for p in parts]) for k in range(len(eps))]
    out["attacked_images"] = [sum(p["attacked_images"][k] for p in parts) for k in range(len(eps))]
    keep = len(eps)
    if stop_broken is not None:
        keep = next((k for k in range(n_grid, len(eps)) if out["attack_accuracy"][k - 1] <= 1 - stop_broken), keep)
    for key in ("eps", "attacked_images", *_LOCAL_FRACTIONS):
        out[key] = out[key][:keep]
    for level in ("fast", "tight"):
        out[f"gap_{level}"] = [a - c for a, c in zip(out["attack_accuracy"], out[f"certified_{level}"])]
    out["seconds"] = {k: round(sum(p["seconds"][k] for p in parts), 3) for k in parts[0]["seconds"]}
    return out
