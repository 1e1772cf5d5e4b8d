"""Upper bounds of Section 4: soundness against a strong attack, orderings, the paper's failing bounds."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stadv_ref
from stadv_ref.attacks import flow_pgd_attack
from stadv_ref.operators import aabb_radii, smoothness_operator
from stadv_ref.upper_bounds import (
    METHODS,
    SOUND_METHODS,
    LinearClassifier,
    input_constant,
    upper_bound,
)

NET_METHODS = [m for m in METHODS if m != "linear"]
SOUND_NET = [m for m in SOUND_METHODS if m != "linear"]


def _random_net(seed, H, m, K):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, H * H))
    v = rng.standard_normal(m) if K == 1 else rng.standard_normal((K, m))
    return stadv_ref.OneHiddenLayerNet(W, v, b=0.5 * rng.standard_normal(m))


def _checkerboard(H):
    return (np.add.outer(np.arange(H), np.arange(H)) % 2).astype(float)


def _checkerboard_net(H):
    """``f(x) = -relu(w^T x)`` with a +-1 checkerboard ``w``: a one-pixel diagonal shift of the
    checkerboard image flips its pattern, so l_adv grows like ``eps * H^1.5`` while the printed
    bounds are ``eps * ||w||_2 = eps * H``."""
    w = (2 * _checkerboard(H) - 1).reshape(1, -1)
    return stadv_ref.OneHiddenLayerNet(w, -np.ones(1))


# -- soundness -------------------------------------------------------------------
@settings(max_examples=16, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 100_000),
    H=st.integers(3, 5),
    m=st.integers(3, 8),
    K=st.sampled_from([1, 3]),
    eps=st.sampled_from([0.2, 1.0, 3.0]),
    padding=st.sampled_from(["zeros", "border"]),
)
def test_strong_attack_never_exceeds_sound_bounds(seed, H, m, K, eps, padding):
    net = _random_net(seed, H, m, K)
    classes = None if K == 1 else (0, 2)
    bounds = {meth: upper_bound(net, eps, meth, classes=classes, padding=padding) for meth in NET_METHODS}
    for tied in (True, False):
        att = flow_pgd_attack(net, eps, classes=classes, tied=tied, restarts=16, steps=120, seed=seed,
                              padding=padding)
        assert att.budget <= eps * (1 + 1e-9)
        exact = stadv_ref.adv_loss_exact(net, att.x[None], att.flow[None], classes=classes, padding=padding)[0]
        assert exact == pytest.approx(att.value, abs=1e-12)
        for meth in SOUND_NET:
            assert bounds[meth].sound
            assert att.value <= bounds[meth].value, (meth, tied, att.value, bounds[meth].value)
    for meth in ("paper-spectral", "paper-frobenius"):
        assert not bounds[meth].sound


@pytest.mark.parametrize("input_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_sound_bounds_hold_on_the_checkerboard(input_range):
    H, eps = 5, 0.5
    net = _checkerboard_net(H)
    lo, hi = input_range
    x0 = np.where(_checkerboard(H) > 0, hi, lo)
    att = flow_pgd_attack(net, eps, x=x0, restarts=8, steps=200, input_range=input_range)
    att2 = flow_pgd_attack(net, eps, restarts=24, steps=200, input_range=input_range)
    best = max(att.value, att2.value)
    for meth in SOUND_NET:
        assert best <= upper_bound(net, eps, meth, input_range=input_range).value


def test_paper_printed_bounds_fail_on_checkerboard():
    """[E12]: ``eps ||W||_2 ||v||_2`` and ``eps ||W||_F ||v||_2`` are exceeded by a true loss."""
    H, eps = 5, 0.5
    net = _checkerboard_net(H)
    att = flow_pgd_attack(net, eps, x=_checkerboard(H), restarts=8, steps=200)
    # the pair is feasible and its loss is exact
    assert smoothness_operator(H, H) is not None and att.budget <= eps * (1 + 1e-9)
    assert att.value == pytest.approx(
        stadv_ref.adv_loss_exact(net, att.x[None], att.flow[None])[0], abs=1e-12
    )
    for meth in ("paper-spectral", "paper-frobenius"):
        b = upper_bound(net, eps, meth)
        assert not b.sound
        assert att.value > 1.5 * b.value, (meth, att.value, b.value)


def test_paper_printed_bounds_fail_on_a_random_network():
    net = _random_net(0, 5, 6, 1)
    att = flow_pgd_attack(net, 0.3, restarts=32, steps=200)
    assert att.value > upper_bound(net, 0.3, "paper-spectral").value


# -- orderings -----------------------------------------------------------------------
@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 100_000), H=st.integers(3, 6), m=st.integers(2, 12))
def test_tight_never_looser_than_sdp_and_spectral(seed, H, m):
    net = _random_net(seed, H, m, 3)
    for classes in ((0, 1), (2, 0)):
        t = upper_bound(net, 1.0, "tight", classes=classes)
        s = upper_bound(net, 1.0, "sdp", classes=classes)
        sp = upper_bound(net, 1.0, "spectral", classes=classes)
        assert t.sound and t.value <= s.value and t.value <= sp.value
        assert s.value <= upper_bound(net, 1.0, "aabb", classes=classes).value
        assert sp.value <= upper_bound(net, 1.0, "frobenius", classes=classes).value


def test_tight_on_mnist_sized_random_network_is_much_tighter():
    rng = np.random.default_rng(0)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((60, 784)) / 28, rng.standard_normal(60))
    t = upper_bound(net, 1.0, "tight", gap_tol=1e-4)
    s = upper_bound(net, 1.0, "sdp", gap_tol=1e-4)
    assert t.value < 0.5 * s.value
    assert t.gap <= 1e-4 and s.gap <= 1e-4


def test_bounds_are_linear_in_eps_and_symmetric_in_classes():
    net = _random_net(3, 4, 5, 3)
    for meth in NET_METHODS:
        a = upper_bound(net, 0.5, meth, classes=(0, 1))
        b = upper_bound(net, 2.0, meth, classes=(1, 0))
        assert b.value == pytest.approx(4 * a.value, rel=1e-5)
        assert a.per_unit == pytest.approx(a.value / 0.5)
    assert upper_bound(net, 0.0, "sdp", classes=(0, 1)).value == 0.0


def test_constant_for_input_range():
    assert input_constant((0, 1)) == 2.0
    assert input_constant((-1, 1)) == 4.0
    net = _random_net(4, 4, 5, 1)
    for meth in ("sdp", "spectral", "aabb", "tight"):
        a = upper_bound(net, 1.0, meth)
        b = upper_bound(net, 1.0, meth, input_range=(-1, 1))
        assert b.value == pytest.approx(2 * a.value, rel=1e-5)
        assert a.constant == 2.0 and b.constant == 4.0


def test_sdp_bound_is_eps_times_sdp_value():
    net = _random_net(5, 4, 6, 1)
    lam = aabb_radii(4, 4).reshape(-1)
    A = (net.v[:, None] * net.W) * lam[None, :]
    ref = stadv_ref.solve_sdp(A, method="scs")
    b = upper_bound(net, 0.7, "sdp", gap_tol=1e-7)
    assert b.value == pytest.approx(0.7 * ref.details["scs_objective"], rel=1e-4)
    assert b.value >= 0.7 * ref.primal
    assert b.certificate is not None and b.certificate.certified


def test_aabb_uses_prop2_radii_with_eps():
    net = _random_net(6, 3, 4, 1)
    eps = 0.4
    lam_eps = aabb_radii(3, 3, eps).reshape(-1)
    expected = 2 * np.sum(np.abs(net.v[:, None] * net.W) * lam_eps[None, :])
    assert upper_bound(net, eps, "aabb").value == pytest.approx(expected, rel=1e-8)


# -- linear classifiers --------------------------------------------------------------------
def test_linear_classifier_bounds():
    rng = np.random.default_rng(9)
    H = 4
    v = rng.standard_normal(H * H)
    lam = aabb_radii(H, H).reshape(-1)
    lin = upper_bound(v, 0.5, "linear")
    assert lin.value == pytest.approx(2 * 0.5 * np.sum(np.abs(v) * lam), rel=1e-8)  # Eq. (16)
    tight = upper_bound(LinearClassifier(v), 0.5, "tight")
    spec = upper_bound(v, 0.5, "spectral")
    assert tight.value <= lin.value and tight.value <= spec.value
    net = LinearClassifier(v).as_network()
    x = rng.uniform(0, 1, (3, H, H))
    np.testing.assert_allclose(net(x), LinearClassifier(v)(x))
    att = flow_pgd_attack(LinearClassifier(v), 0.5, restarts=16, steps=150)
    assert att.value <= tight.value
    with pytest.raises(ValueError, match="method"):
        upper_bound(v, 0.5, "frobenius")
    with pytest.raises(ValueError, match="linear"):
        upper_bound(_random_net(0, 3, 3, 1), 0.5, "linear")


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf")])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        upper_bound(_random_net(0, 3, 3, 1), eps, "spectral")


@pytest.mark.parametrize("classes, error", [
    (None, ValueError), ((0, 0), ValueError), ((0, 5), ValueError), ((0, -1), ValueError),
    ((0,), TypeError), ("01", TypeError), (("a", 1), TypeError), ((0.5, 1), TypeError), ((1.0, 2), TypeError),
    ((True, 0), TypeError), ((0, np.bool_(True)), TypeError),
])
def test_bad_classes_are_refused_not_truncated(classes, error):
    with pytest.raises(error, match="classes"):
        upper_bound(_random_net(0, 3, 3, 3), 1.0, "spectral", classes=classes)


def test_numpy_integer_classes_are_accepted():
    net = _random_net(0, 3, 3, 3)
    a = upper_bound(net, 1.0, "spectral", classes=(np.int64(0), np.int32(2)))
    assert a.classes == (0, 2) and a.value == upper_bound(net, 1.0, "spectral", classes=(0, 2)).value


@pytest.mark.parametrize("kw, name", [
    (dict(gap_tol=True), "gap_tol"), (dict(gap_tol=10**400), "gap_tol"), (dict(gap_tol=0.0), "gap_tol"),
    (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"), (dict(max_iter=0), "max_iter"),
])
def test_bad_solver_options_are_refused_by_name(kw, name):
    with pytest.raises((ValueError, TypeError), match=name):
        upper_bound(_random_net(0, 3, 3, 3), 1.0, "sdp", classes=(0, 1), **kw)


@pytest.mark.parametrize("net", ["net", None, {"W": 1}])
def test_upper_bound_bad_net_names_net(net):
    with pytest.raises((ValueError, TypeError), match="net"):
        upper_bound(net, 1.0, "spectral")


@pytest.mark.parametrize("method", ["sdp", "tight", "spectral", "aabb", "frobenius"])
def test_upper_bound_overflow_is_refused_by_name(method):
    net = _random_net(0, 3, 3, 3)
    huge = stadv_ref.OneHiddenLayerNet(net.W * 1e200, net.V * 1e200, net.b, net.c, image_shape=net.image_shape)
    with pytest.raises(ValueError, match="net"):
        upper_bound(huge, 1.0, method, classes=(0, 1))


def test_bad_method_and_range():
    net = _random_net(0, 3, 3, 1)
    with pytest.raises(ValueError, match="method"):
        upper_bound(net, 1.0, "sdpp")
    with pytest.raises(ValueError, match="input_range"):
        upper_bound(net, 1.0, "sdp", input_range=(1, 0))
    with pytest.raises(ValueError, match="classes"):
        upper_bound(net, 1.0, "sdp", classes=(0, 1))
    with pytest.raises(TypeError, match="eps"):
        upper_bound(net, "1", "sdp")


def test_public_names():
    assert stadv_ref.upper_bound is upper_bound
    assert stadv_ref.UpperBoundResult.__name__ == "UpperBoundResult"
