"""Soundness of the per-image certificate (issue #21, item 3): the strong projected-gradient
flow attack, run with many restarts and then restarted from its own best flow, never
exceeds :func:`local_pair_bounds` on random and trained networks and on real MNIST, for
tied and untied flows, both paddings and budgets from 0.01 to 4 (Prop. 2's intervals then
span several pixels)."""
from __future__ import annotations

import numpy as np
import pytest

import stadv_ref
from stadv_ref.attacks import flow_pgd_attack
from stadv_ref.training import train
from stadv_ref.upper_bounds.local import local_pair_bounds

EPS = (0.01, 0.1, 0.5, 1.0, 2.0, 4.0)


def _worst_margin(net, x, classes, eps, flow, padding, restarts=12, steps=60, seed=0):
    """Best ``f_i(g(r; x)) - f_y(g(r; x))`` (or ``f(g(r; x))``, binary) the attack finds."""
    tied = flow == "tied"
    kw = dict(classes=classes, x=x, tied=tied, padding=padding)
    att = flow_pgd_attack(net, eps, restarts=restarts, steps=steps, seed=seed, **kw)
    again = flow_pgd_attack(net, eps, restarts=2, steps=steps, step_size=0.05, seed=seed + 1,
                            r_starts=att.flow[None], **kw)
    clean = net(x[None])[0]
    base = clean if net.binary else clean[classes[0]] - clean[classes[1]]
    assert att.budget <= eps * (1 + 1e-9) + 1e-12
    return max(att.value, again.value) + base


def _net(seed, H, m, K, trained_like=False):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(m) if K == 1 else rng.standard_normal((K, m))
    W = rng.standard_normal((m, H * H)) / H
    if trained_like:  # smooth, spatially coherent filters, as a trained network's
        W = W.reshape(m, H, H)
        W = (W + np.roll(W, 1, 1) + np.roll(W, 1, 2) + np.roll(W, (1, 1), (1, 2))).reshape(m, -1)
    return stadv_ref.OneHiddenLayerNet(W, v, b=0.2 * rng.standard_normal(m), c=0.1 * rng.standard_normal(K))


def _check(net, X, y, flow, padding, eps_list=EPS, tightness="fast", **attack):
    """Attack every class pair at every budget; return the smallest slack (bound - attack)."""
    slack = np.inf
    for eps in eps_list:
        B = local_pair_bounds(net, X, y, eps, flow=flow, padding=padding, tightness=tightness)
        for n in range(len(X)):
            for i in range(B.shape[1]):
                if not net.binary and i == y[n]:
                    continue
                classes = None if net.binary else (i, int(y[n]))
                worst = _worst_margin(net, X[n], classes, eps, flow, padding, **attack)
                assert worst <= B[n, i] + 1e-9, (eps, n, i, worst, B[n, i])
                slack = min(slack, B[n, i] - worst)
    return slack


@pytest.mark.parametrize("flow", ["tied", "untied"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("seed,H,m,trained_like", [(0, 5, 12, False), (1, 6, 20, True)])
def test_attack_never_exceeds_the_bound_on_random_networks(flow, padding, seed, H, m, trained_like):
    net = _net(seed, H, m, 3, trained_like)
    rng = np.random.default_rng(seed + 10)
    X = rng.uniform(0, 1, (2, H, H))
    X[1] = (X[1] > 0.6).astype(float)  # a binary image: large jumps between pixels
    y = net.predict(X)
    y[1] = (y[1] + 1) % 3  # one misclassified image
    _check(net, X, y, flow, padding)


@pytest.mark.parametrize("flow", ["tied", "untied"])
def test_attack_never_exceeds_the_bound_on_binary_networks(flow):
    net = _net(2, 5, 10, 1)
    neg = stadv_ref.OneHiddenLayerNet(net.W, -net.v, net.b, -net.c)  # max -f for label 1
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 1, (2, 5, 5))
    for padding in ("zeros", "border"):
        for eps in (0.01, 0.5, 2.0):
            B = local_pair_bounds(net, X, np.array([0, 1]), eps, flow=flow, padding=padding)
            assert B.shape == (2, 1)
            assert _worst_margin(net, X[0], None, eps, flow, padding) <= B[0, 0] + 1e-9
            assert _worst_margin(neg, X[1], None, eps, flow, padding) <= B[1, 0] + 1e-9


def test_bound_is_close_to_the_attack_at_small_budgets():
    """Not vacuous: at eps = 0.01 the bound exceeds the attack by a small fraction of the margin's scale."""
    net = _net(0, 5, 12, 3)
    X = np.random.default_rng(5).uniform(0, 1, (2, 5, 5))
    y = net.predict(X)
    slack = _check(net, X, y, "tied", "zeros", eps_list=(0.01,))
    out = net(X)
    assert 0 <= slack < 0.02 * np.abs(out).max()


@pytest.mark.parametrize("flow", ["tied", "untied"])
def test_bound_is_exact_where_the_relaxations_are(flow):
    """A ramp image (the warp is linear in the flow away from the border), a network that ignores
    the border pixels and whose units are all active: every relaxation is exact, so the bound is
    the true maximum, which the attack reaches (a concave problem)."""
    H, m = 6, 8
    rng = np.random.default_rng(6)
    W = rng.standard_normal((m, H, H))
    W[:, [0, -1], :] = 0.0
    W[:, :, [0, -1]] = 0.0
    net = stadv_ref.OneHiddenLayerNet(W.reshape(m, -1), rng.standard_normal((3, m)), b=np.full(m, 50.0))
    rows, cols = np.mgrid[0:H, 0:H]
    X = ((0.1 * cols + 0.05 * rows + 0.1) / 1.0)[None]
    y = np.array([0])
    for eps in (0.1, 1.0):  # radii below one pixel: no sample leaves the image
        B = local_pair_bounds(net, X, y, eps, flow=flow, padding="zeros")
        for i in (1, 2):
            worst = _worst_margin(net, X[0], (i, 0), eps, flow, "zeros", restarts=4, steps=200)
            assert worst <= B[0, i] + 1e-9
            assert B[0, i] - worst < 1e-5 * (1 + abs(B[0, i]))


@pytest.mark.mnist
def test_attack_never_exceeds_the_bound_on_mnist(mnist_dir):
    Xtr, ytr = stadv_ref.load_mnist("train", mnist_dir, limit=2000)
    net = train("nt", Xtr, ytr, hidden=50, epochs=5, seed=0, progress=False)
    X, y = stadv_ref.load_mnist("test", mnist_dir, limit=20)
    certified = 0
    for eps, flow, padding in ((0.05, "tied", "zeros"), (0.5, "tied", "zeros"), (0.5, "untied", "border")):
        B = local_pair_bounds(net, X, y, eps, flow=flow, padding=padding)
        certified += int((B.max(axis=1) < 0).sum())
        out = net(X)
        for n in range(len(X)):
            # the two classes the bound fears most and the runner-up logit
            runner = np.argsort(np.where(np.arange(10) == y[n], -np.inf, out[n]))[-1]
            for i in set(np.argsort(B[n])[-2:].tolist()) | {int(runner)}:
                worst = _worst_margin(net, X[n], (i, int(y[n])), eps, flow, padding, restarts=6, steps=40)
                assert worst <= B[n, i] + 1e-9, (eps, flow, padding, n, i, worst, B[n, i])
    assert certified > 0  # the bound certifies some images: the test is not vacuous
