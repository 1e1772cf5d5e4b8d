"""certify (appendix 6.7, [E13]): the margin rule, caching, and soundness against the attack."""
from __future__ import annotations

import numpy as np
import pytest

import stadv_ref
from stadv_ref.attacks import flow_pgd_attack
from stadv_ref.upper_bounds import upper_bound
from stadv_ref.upper_bounds.certification import (
    certify,
    clear_bound_cache,
    pair_bounds_cached,
)


def _net_and_data(seed=0, H=4, m=6, K=3, N=40):
    """A small multi-class network whose prediction we use as labels (so margins are >= 0)."""
    rng = np.random.default_rng(seed)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((m, H * H)) / H, rng.standard_normal((K, m)))
    X = rng.uniform(0, 1, (N, H, H))
    y = net.predict(X)
    y[:3] = (y[:3] + 1) % K  # a few misclassified points
    return net, X, y


def test_certified_flags_follow_the_margin_test():
    net, X, y = _net_and_data()
    eps = 0.02
    res = certify(net, X, y, eps, method="sdp", progress=False)
    out = net(X)
    K = net.n_classes
    for n in range(len(y)):
        ok = True
        for i in range(K):
            if i == y[n]:
                continue
            b = upper_bound(net, eps, "sdp", classes=(i, int(y[n])))
            ok &= out[n, y[n]] - out[n, i] > b.value * (1 + 1e-6) or (
                out[n, y[n]] - out[n, i] > b.value * (1 - 1e-6) and res.certified[n]
            )
        assert bool(res.certified[n]) == bool(ok)
    assert not res.certified[:3].any()  # misclassified points are never certified
    assert res.loss_01 == pytest.approx(1 - res.certified.mean())
    assert res.sound and 0 < res.certified.sum() < len(y)  # the test is not vacuous


def test_certified_examples_survive_the_strong_attack():
    net, X, y = _net_and_data(seed=1, N=30)
    eps = 0.05
    res = certify(net, X, y, eps, method="tight", progress=False)
    idx = np.flatnonzero(res.certified)[:4]
    assert idx.size > 0
    for n in idx:
        for i in range(net.n_classes):
            if i == y[n]:
                continue
            for tied in (True, False):
                att = flow_pgd_attack(net, eps, classes=(i, int(y[n])), x=X[n], tied=tied, restarts=8, steps=80)
                flow = att.flow[None]
                xadv = stadv_ref.warp(X[n][None], flow if not tied else np.stack([flow, flow], 1))
                out = net(xadv)[0]
                assert out[y[n]] > out[i]
                assert att.value < res.margins[n, i]


def test_loss_is_monotone_in_eps_and_methods_are_ordered():
    net, X, y = _net_and_data(seed=2)
    eps = np.array([0.0, 0.005, 0.01, 0.02, 0.05, 0.2])
    losses = {m: certify(net, X, y, eps, method=m, progress=False).loss_01 for m in ("sdp", "tight", "spectral")}
    for m, loss in losses.items():
        assert loss.shape == eps.shape
        assert np.all(np.diff(loss) >= 0)
        assert loss[0] == pytest.approx(1 - np.mean(net.predict(X) == y))
    assert np.all(losses["tight"] <= losses["sdp"]) and np.all(losses["tight"] <= losses["spectral"])


def test_certified_radius():
    net, X, y = _net_and_data(seed=3)
    res = certify(net, X, y, 0.01, method="spectral", progress=False)
    rad = res.certified_radius
    assert np.array_equal(rad > 0.01, res.certified)
    assert np.all(rad[:3] == 0)


def test_binary_network():
    rng = np.random.default_rng(4)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((5, 9)), rng.standard_normal(5))
    X = rng.uniform(0, 1, (20, 3, 3))
    y = net.predict(X)
    res = certify(net, X, y, 0.01, method="sdp", progress=False)
    B = upper_bound(net, 1.0, "sdp").per_unit
    margin = (2 * y - 1) * net(X)
    assert np.array_equal(res.certified, margin > 0.01 * B)


def test_bounds_cached_in_memory_and_on_disk(tmp_path):
    net, X, y = _net_and_data(seed=5)
    clear_bound_cache()
    b1, i1 = pair_bounds_cached(net, "sdp", progress=False)
    b2, i2 = pair_bounds_cached(net, "sdp", progress=False)
    assert i1["source"] == "computed" and i2["source"] == "memory"
    np.testing.assert_array_equal(b1, b2)
    assert np.allclose(b1, b1.T) and np.all(np.diag(b1) == 0)
    b3, i3 = pair_bounds_cached(net, "sdp", progress=False, cache_dir=tmp_path)
    assert i3["source"] == "memory"
    clear_bound_cache()
    b4, i4 = pair_bounds_cached(net, "sdp", progress=False, cache_dir=tmp_path)
    assert i4["source"] == "computed" and list(tmp_path.glob("*.npz"))
    clear_bound_cache()
    b5, i5 = pair_bounds_cached(net, "sdp", progress=False, cache_dir=tmp_path)
    assert i5["source"] == "disk"
    np.testing.assert_array_equal(b4, b5)
    # different weights -> different key
    net2 = stadv_ref.OneHiddenLayerNet(net.W * 1.01, net.V)
    _, i6 = pair_bounds_cached(net2, "sdp", progress=False)
    assert i6["key"] != i5["key"] and i6["source"] == "computed"
    # unsound method is marked
    r = certify(net, X, y, 0.01, method="paper-spectral", progress=False)
    assert not r.sound


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eps": -1.0}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"method": "linear"}, "method"),
        ({"method": "nope"}, "method"),
        ({"y": np.zeros(3, dtype=int)}, "y"),
        ({"y": np.full(40, 7)}, "y"),
        ({"input_range": (0, 0)}, "input_range"),
    ],
)
def test_bad_input(kwargs, match):
    net, X, y = _net_and_data()
    args = {"eps": 0.1, "method": "spectral", "y": y}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        certify(net, X, args.pop("y"), args.pop("eps"), progress=False, **args)


def test_certify_batch_mismatch_names_x_and_y():
    net, X, y = _net_and_data()
    with pytest.raises(ValueError, match=r"X and y disagree.*X holds 40.*y holds 39"):
        certify(net, X, y[:-1], 0.1, method="spectral", progress=False)


def test_certify_refuses_an_empty_batch_by_name():
    """N = 0 is refused (it used to return accuracy=nan and loss_01=0.0)."""
    net, X, y = _net_and_data()
    with pytest.raises(ValueError, match=r"X must hold at least one example"):
        certify(net, X[:0], y[:0], 0.1, method="spectral", progress=False)


def test_certify_refuses_linear_up_front():
    net, X, y = _net_and_data()
    with pytest.raises(ValueError, match=r"method 'linear'.*linear classifiers"):
        certify(net, X, y, 0.1, method="linear", progress=False)


@pytest.mark.parametrize("kw, exc, name", [
    (dict(gap_tol=True), TypeError, "gap_tol"), (dict(gap_tol=10**400), ValueError, "gap_tol"),
    (dict(gap_tol=0.0), ValueError, "gap_tol"), (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"), (dict(solver="cvx"), ValueError, "solver"),
    (dict(y=np.zeros(40)), TypeError, "y"), (dict(y=np.zeros(40, dtype=bool)), TypeError, "y"),
])
def test_certify_refuses_bad_options_before_the_cache(kw, exc, name):
    """seed=1.5 used to be truncated to 1 in the cache key, so a cached bound was silently reused."""
    net, X, y = _net_and_data()
    certify(net, X, y, 0.1, method="spectral", progress=False, seed=1)  # fills the cache
    with pytest.raises(exc, match=name):
        certify(net, X, kw.pop("y", y), 0.1, method="spectral", progress=False, **kw)


def test_public_name():
    assert stadv_ref.certify is certify


# -- issue #19 items 1-2: soundness regressions ------------------------------------
@pytest.mark.parametrize("scale", [255.0, -1.0])
def test_certify_refuses_images_outside_input_range(scale):
    """A false certificate: images in [0, 255] (or [-1, 0]) were certified with the (0, 1) box bounds."""
    net, X, y = _net_and_data(seed=2, N=10)
    with pytest.raises(ValueError, match=r"X must lie in input_range"):
        certify(net, X * scale, y, 2.0, method="spectral", progress=False)
    # the same images inside the declared box are accepted
    lo, hi = (0.0, 255.0) if scale > 0 else (-1.0, 0.0)
    res = certify(net, X * scale, y, 0.01, method="spectral", input_range=(lo, hi), progress=False)
    assert res.certified.shape == (10,)


def test_certify_refuses_non_finite_images():
    net, X, y = _net_and_data(seed=3, N=5)
    X[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or inf"):
        certify(net, X, y, 0.1, method="spectral", progress=False)


@pytest.mark.parametrize("tied", [True, False])
def test_flow_pgd_attack_border_value_uses_border_padding(tied):
    """The attack optimised with border padding but re-evaluated ``value`` with zero padding."""
    rng = np.random.default_rng(5)
    H = 4
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((6, H * H)), rng.standard_normal(6),
                                      b=0.3 * rng.standard_normal(6))
    x = rng.uniform(0.5, 1.0, (H, H))  # bright borders: zero and border padding differ a lot
    att = flow_pgd_attack(net, 1.0, x=x, tied=tied, restarts=6, steps=40, padding="border", seed=1)
    border = stadv_ref.adv_loss_exact(net, att.x[None], att.flow[None], padding="border")[0]
    zeros = stadv_ref.adv_loss_exact(net, att.x[None], att.flow[None], padding="zeros")[0]
    assert abs(border - zeros) > 1e-3  # the case distinguishes the two paddings
    assert att.value == pytest.approx(border, abs=1e-12)
    assert att.value == pytest.approx(att.values.max(), abs=1e-9)


def test_certified_examples_survive_the_border_attack():
    """Soundness with border padding: the border bound is never beaten by the border attack."""
    net, X, y = _net_and_data(seed=4, N=30)
    eps = 0.05
    res = certify(net, X, y, eps, method="tight", padding="border", progress=False)
    idx = np.flatnonzero(res.certified)[:3]
    assert idx.size > 0
    for n in idx:
        for i in range(net.n_classes):
            if i == y[n]:
                continue
            for tied in (True, False):
                att = flow_pgd_attack(net, eps, classes=(i, int(y[n])), x=X[n], tied=tied, restarts=8,
                                      steps=80, padding="border")
                margin = res.margins[n, i]
                assert att.value < margin, (n, i, tied, att.value, margin)
                assert att.value <= eps * res.required[n, i] * (1 + 1e-9)


# -- issue #21: certify(method="local") -----------------------------------------------
def test_certify_local_matches_local_pair_bounds_and_beats_global():
    """``certify(method="local")`` certifies exactly where every per-image bound is < 0,
    certifies everything a global bound certifies here, and survives the attack."""
    net, X, y = _net_and_data(seed=6, N=25)
    y = net.predict(X)  # correctly classified points
    for eps in (0.05, 0.3):
        res = certify(net, X, y, eps, method="local", progress=False)
        B = stadv_ref.local_pair_bounds(net, X, y, eps)
        np.testing.assert_array_equal(res.certified, np.all(B < 0, axis=1))
        np.testing.assert_array_equal(res.bounds, B)
        glob = certify(net, X, y, eps, method="spectral", progress=False)
        assert res.certified.sum() >= glob.certified.sum()
        for n in np.flatnonzero(res.certified)[:2]:
            for i in range(net.n_classes):
                if i != y[n]:
                    att = flow_pgd_attack(net, eps, classes=(i, int(y[n])), x=X[n], restarts=6, steps=60)
                    assert att.value < res.margins[n, i]
    several = certify(net, X, y, [0.05, 0.3], method="local", flow="untied", progress=False)
    assert several.certified.shape == (2, 25) and several.bounds.shape == (2, 25, net.n_classes)
    assert several.loss_01[0] <= several.loss_01[1]
    with pytest.raises(ValueError, match="certified_radius"):
        several.certified_radius


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "spectral", "flow": "untied"}, "needs method='local'"),
    ({"method": "local", "flow": "diagonal"}, "flow must be one of"),
    ({"method": "local", "tightness": "loose"}, "tightness must be one of"),
    ({"method": "sdp", "tightness": "tight"}, "tightness is an option"),
])
def test_certify_local_options_are_checked(kwargs, match):
    net, X, y = _net_and_data(seed=7, N=4)
    with pytest.raises(ValueError, match=match):
        certify(net, X, y, 0.1, progress=False, **kwargs)
