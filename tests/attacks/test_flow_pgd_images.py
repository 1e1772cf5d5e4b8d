"""Tests of :func:`stadv_ref.attacks.flow_pgd_attack_images`: the one-image attack with ``x`` fixed is its
specification (same starts, steps and values image by image), ``stop_above`` only stops early, and bad
arguments are refused by name."""
from __future__ import annotations

import numpy as np
import pytest

import stadv_ref
from stadv_ref.attacks import flow_pgd_attack, flow_pgd_attack_images

H = W = 7
K = 4


def _net(seed=0, m=12, k=K):
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((k, m)) if k > 1 else rng.standard_normal(m)
    return stadv_ref.OneHiddenLayerNet(rng.standard_normal((m, H * W)) / 5, V, rng.standard_normal(m) / 4,
                                       image_shape=(H, W))


def _images(n, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, H, W))


def _pairs(n):
    return np.array([[(k + 1 + k // K) % K, k % K] for k in range(n)])


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_each_image_gets_the_one_image_attack(tied, padding):
    net, eps, X, pairs = _net(), 0.4, _images(6), _pairs(6)
    seeds = np.arange(6) * 7 + 2
    res = flow_pgd_attack_images(net, eps, X, pairs, tied=tied, restarts=5, steps=15, padding=padding,
                                 seeds=seeds, batch_images=4)
    for n in range(6):
        a = flow_pgd_attack(net, eps, classes=tuple(pairs[n]), x=X[n], tied=tied, restarts=5, steps=15,
                            padding=padding, seed=int(seeds[n]))
        np.testing.assert_allclose(res.values[n], a.value, rtol=0, atol=1e-10)
        np.testing.assert_allclose(res.flows[n], a.flow, rtol=0, atol=1e-10)
        np.testing.assert_allclose(res.budgets[n], a.budget, rtol=0, atol=1e-10)
    assert res.flows.shape == ((6, H, W) if tied else (6, 2, H, W))
    assert np.all(res.steps_run == 15)


def test_binary_network_scalar_seed_and_schedule():
    net, eps, X = _net(3, k=1), 0.3, _images(3, seed=5)
    res = flow_pgd_attack_images(net, eps, X, restarts=4, steps=10, seeds=11, schedule="cosine", step_size=0.5)
    for n in range(3):
        a = flow_pgd_attack(net, eps, x=X[n], restarts=4, steps=10, seed=11, schedule="cosine", step_size=0.5)
        np.testing.assert_allclose(res.values[n], a.value, rtol=0, atol=1e-10)


def test_values_are_true_losses_inside_the_budget_and_the_batch_size_does_not_matter():
    net, eps, X, pairs = _net(2), 0.5, _images(5, seed=2), _pairs(5)
    a = flow_pgd_attack_images(net, eps, X, pairs, restarts=3, steps=8, seeds=np.arange(5))
    b = flow_pgd_attack_images(net, eps, X, pairs, restarts=3, steps=8, seeds=np.arange(5), batch_images=1)
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-12)
    assert np.all(a.budgets <= eps * (1 + 1e-9))
    for n in range(5):
        exact = stadv_ref.adv_loss_exact(net, X[n], stadv_ref.tied(a.flows[n][None]), classes=tuple(pairs[n]))[0]
        np.testing.assert_allclose(a.values[n], exact, rtol=0, atol=1e-12)
    assert np.any(a.values > 0)  # the attack moved the margins up (its starts alone need not)


def test_stop_above_only_stops_early():
    net, eps, X, pairs = _net(4), 0.6, _images(8, seed=3), _pairs(8)
    full = flow_pgd_attack_images(net, eps, X, pairs, restarts=4, steps=20, seeds=np.arange(8))
    thr = np.median(full.values) * np.ones(8)
    thr[0] = -np.inf  # image 0 stops at the starts
    res = flow_pgd_attack_images(net, eps, X, pairs, restarts=4, steps=20, seeds=np.arange(8), stop_above=thr)
    above = full.values > thr
    assert above.any() and (~above).any()
    np.testing.assert_array_equal(res.values > thr, above)  # the same images broken
    np.testing.assert_allclose(res.values[~above], full.values[~above], rtol=0, atol=1e-10)  # never stopped
    assert np.all(res.steps_run[~above] == 20) and res.steps_run[0] == 0
    assert np.all(res.values[above] <= full.values[above] + 1e-10)  # the first value above, not the best
    assert np.all(res.budgets <= eps * (1 + 1e-9))


@pytest.mark.parametrize("classes", [np.zeros((0, 2), int), []])
def test_no_images_gives_empty_results(classes):
    res = flow_pgd_attack_images(_net(), 0.2, np.zeros((0, H, W)), classes, restarts=2, steps=2)
    assert res.values.shape == (0,) and res.flows.shape == (0, H, W)


def test_a_stopped_image_is_above_its_threshold_after_the_exact_recomputation():
    """An image leaves the batch only when its value passes the threshold by more than rounding, so the
    exact value recomputed at the end is above the threshold too (the "broken" test of the caller)."""
    net, eps, X, pairs = _net(5), 0.5, _images(10, seed=6), _pairs(10)
    full = flow_pgd_attack_images(net, eps, X, pairs, restarts=3, steps=12, seeds=np.arange(10))
    for k, thr in enumerate((full.values, full.values - 1e-12, full.values - 1e-3)):  # at, just below, below the best
        res = flow_pgd_attack_images(net, eps, X, pairs, restarts=3, steps=12, seeds=np.arange(10), stop_above=thr)
        stopped = res.steps_run < 12
        assert stopped.any() == (k == 2)  # within the margin an image goes on to the end
        assert np.all(res.values[stopped] > thr[stopped])
        np.testing.assert_array_equal(res.values > thr, full.values > thr)


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(classes=np.array([[0, 1]])), ValueError, "classes"),  # one pair for two images
    (dict(classes=np.array([[0, 0], [1, 2]])), ValueError, "classes"),  # i == y
    (dict(classes=np.array([[0, K], [1, 2]])), ValueError, "classes"),  # out of range
    (dict(classes=np.array([[0.0, 1.0], [1.0, 2.0]])), TypeError, "classes"),
    (dict(classes=None), ValueError, "classes"),
    (dict(seeds=-1), ValueError, "seeds"),
    (dict(seeds=[0, 1, 2]), ValueError, "seeds"),
    (dict(seeds=1.5), TypeError, "seeds"),
    (dict(stop_above=[np.nan, 0.0]), ValueError, "stop_above"),
    (dict(stop_above=[0.0]), ValueError, "stop_above"),
    (dict(stop_above="abc"), TypeError, "stop_above"),
    (dict(stop_above=True), TypeError, "stop_above"),
    (dict(stop_above=np.array([0.0, None], dtype=object)), TypeError, "stop_above"),
    (dict(tied=1), TypeError, "tied"),
    (dict(eps=-0.1), ValueError, "eps"),
    (dict(restarts=0), ValueError, "restarts"),
    (dict(batch_images=0), ValueError, "batch_images"),
    (dict(padding="reflect"), ValueError, "padding"),
    (dict(X=np.zeros((2, H, W + 1))), ValueError, "X"),
    (dict(X=np.full((2, H, W), np.nan)), ValueError, "X"),
])
def test_bad_arguments_are_refused_by_name(kwargs, exc, name):
    args = dict(net=_net(), eps=0.2, X=_images(2), classes=_pairs(2), restarts=2, steps=2)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        flow_pgd_attack_images(**args)


def test_classes_for_a_binary_network_are_refused():
    with pytest.raises(ValueError, match="classes"):
        flow_pgd_attack_images(_net(k=1), 0.2, _images(2), _pairs(2), restarts=2, steps=2)
