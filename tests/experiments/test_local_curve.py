"""``local_curve``'s attack ceiling (all images of a budget attacked at once by
:func:`stadv_ref.attacks.flow_pgd_attack_images`) against its naive specification: the one-image attack
image by image, classes largest tight bound first, stopping at the first class that breaks the image."""
from __future__ import annotations

import numpy as np
import pytest

import stadv_ref
from stadv_ref.attacks import flow_pgd_attack
from stadv_ref.experiments.curves import local_curve

H = W = 6
K = 4


def _naive_attack_accuracy(net, X, y, budgets, restarts, steps, max_classes, attack_seed):
    clean = net(X)
    broken = net.predict(X) != y
    acc = []
    for eps in budgets:
        fast = np.zeros(len(y), bool)
        live = np.flatnonzero(~broken)
        fast[live] = stadv_ref.local_pair_bounds(net, X[live], y[live], eps, tightness="fast").max(axis=1) < 0
        todo = np.flatnonzero(~broken & ~fast)
        T = stadv_ref.local_pair_bounds(net, X[todo], y[todo], eps, tightness="tight")
        for row, n in enumerate(todo):
            if T[row].max() < 0:
                continue
            for i in [int(i) for i in np.argsort(-T[row], kind="stable") if T[row, i] >= 0][:max_classes]:
                a = flow_pgd_attack(net, eps, classes=(i, int(y[n])), x=X[n], restarts=restarts, steps=steps,
                                    seed=attack_seed + int(n))
                if a.value + clean[n, i] - clean[n, y[n]] > 0:
                    broken[n] = True
                    break
        acc.append(float(np.mean(~broken)))
    return acc


def test_the_attack_ceiling_equals_the_image_by_image_attack():
    rng = np.random.default_rng(5)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((10, H * W)) / 3, rng.standard_normal((K, 10)),
                                      rng.standard_normal(10) / 4, image_shape=(H, W))
    X = rng.uniform(0, 1, (16, H, W))
    y = net.predict(X)
    y[:2] = (y[:2] + 1) % K  # two misclassified images: broken at every budget
    budgets = [0.05, 0.3, 1.0]
    out = local_curve(net, X, y, budgets, stop_broken=1.0, restarts=3, steps=10, max_classes=2, attack_seed=4,
                      progress=False)
    want = _naive_attack_accuracy(net, X, y, budgets, restarts=3, steps=10, max_classes=2, attack_seed=4)
    assert out["attack_accuracy"] == want
    assert want[-1] < want[0] and sum(out["attacked_images"]) > 0  # the attack breaks images as the budget grows
    assert all(c >= a for c, a in zip(out["attack_accuracy"], out["certified_tight"]))


def test_parts_merged_give_the_numbers_of_one_job():
    """``local`` runs one job per network and range of images (stop rule off) and merges them
    (:func:`stadv_ref.experiments.shards.merge_local`): the numbers of one ``local_curve`` on all images,
    stop rule included."""
    from stadv_ref.experiments.shards import merge_local

    rng = np.random.default_rng(5)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((10, H * W)) / 3, rng.standard_normal((K, 10)),
                                      rng.standard_normal(10) / 4, image_shape=(H, W))
    X = rng.uniform(0, 1, (16, H, W))
    y = net.predict(X)
    y[:2] = (y[:2] + 1) % K
    kw = dict(extra_eps=(0.3, 1.0, 2.0), restarts=3, steps=10, max_classes=2, progress=False)
    one = local_curve(net, X, y, [0.0, 0.05], stop_broken=0.15, attack_seed=4, **kw)
    assert one["eps"] == [0.0, 0.05, 0.3]  # the rule stopped it before 1.0
    parts = [local_curve(net, X[a:b], y[a:b], [0.0, 0.05], stop_broken=None, attack_seed=4 + a, **kw)
             for a, b in ((0, 5), (5, 11), (11, 16))]
    assert parts[0]["eps"] == [0.0, 0.05, 0.3, 1.0, 2.0]
    merged = merge_local(parts, 2, 0.15)
    for key in set(one) - {"seconds"}:
        assert merged[key] == one[key], key
    assert merge_local(parts, 2, None)["eps"] == parts[0]["eps"]


def test_local_network_seeds_each_image_as_one_job_would(monkeypatch):
    """``local_network`` on ranges of the images (the ``local`` step's jobs) seeds the attack on test image ``n``
    with ``attack_seed + n`` wherever its range starts: its parts merged equal one ``local_curve``."""
    from stadv_ref.experiments import shards

    rng = np.random.default_rng(5)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((10, H * W)) / 3, rng.standard_normal((K, 10)),
                                      rng.standard_normal(10) / 4, image_shape=(H, W))
    X = rng.uniform(0, 1, (16, H, W))
    y = net.predict(X)
    monkeypatch.setattr(shards, "_network", lambda variant, hidden, model: (net, {}))
    monkeypatch.setattr(shards, "_test", lambda data_dir, n: (X[:n], y[:n]))
    opts = dict(extra_eps=[1.0, 2.0], stop_broken=None, restarts=3, steps=10, max_classes=2, attack_seed=7)
    args = dict(variant="nt", hidden=10, model={}, model_sha256=None, data_dir=None, n_test=16, eps=[0.3])
    parts = [shards.local_network(**args, options=opts, start=a, stop=b) for a, b in ((0, 6), (6, 16))]
    one = local_curve(net, X, y, [0.3], **opts, progress=False)
    assert 0 < sum(one["attacked_images"]) and one["attack_accuracy"][-1] < 1  # the attack is exercised
    merged = shards.merge_local(parts, 1, None)
    for key in set(one) - {"seconds"}:
        assert merged[key] == one[key], key
    with pytest.raises(ValueError, match="start, stop"):
        shards.local_network(**args, options=opts, start=6, stop=6)
    with pytest.raises(ValueError, match="n_grid"):
        shards.merge_local(parts, 0, None)
