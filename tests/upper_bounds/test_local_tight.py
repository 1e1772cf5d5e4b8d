"""Per-image certificates, tight level (issue #21, deliverable 2(b)): the kink relaxations enclose
the warp on the whole box, the V-lemma holds and is attained, the kernel's quadratic forms
equal the dense ones, the tight bound is at most the fast one and never below what the strong
projected-gradient flow attack reaches (random networks, tied and untied, both paddings,
budgets 0.01 to 2; real MNIST on a quickly trained net)."""
from __future__ import annotations

import numpy as np
import pytest
from _settings import SETTINGS, seeds
from hypothesis import given, settings
from hypothesis import strategies as st
from test_local import _images, _integer_points, _radii, _warp_at, paddings, radius_kinds, shapes
from test_local_soundness import _check, _net, _worst_margin

import stadv_ref
from stadv_ref.reference.local import kink_forms_reference
from stadv_ref.training import train
from stadv_ref.upper_bounds.local import box_radii, local_pair_bounds
from stadv_ref.upper_bounds.local_tight import (
    KinkRelaxation,
    kink_maximum,
    quad_margin,
    tied_kinks,
    tight_chunk_bounds,
    untied_kinks,
)

EPS = (0.01, 0.1, 0.5, 1.0, 2.0)
"""Budgets of the comparisons with the fast bound (Prop. 2's intervals span several pixels from 2 on)."""


def _kink_value(side, X, d):
    """``b + sum_k a_k d_k + c_k |d_k|`` of one side at displacements ``d`` (list of (S, H, W))."""
    a, c, b = side
    shape = X.shape
    out = b.reshape(shape) + 0.0 * d[0][:, None]
    for ak, ck, dk in zip(a, c, d):
        out = out + ak.reshape(shape) * dk[:, None] + ck.reshape(shape) * np.abs(dk[:, None])
    return out


def _sides(kr):
    return (kr.a_up, kr.c_up, kr.b_up), (kr.a_lo, kr.c_lo, kr.b_lo)


# -- kink relaxations ------------------------------------------------------------------
@settings(SETTINGS, max_examples=80)
@given(seed=seeds, shape=shapes, padding=paddings, kind=radius_kinds, signed=st.booleans())
def test_tied_kinks_enclose_the_warp_and_are_tight(seed, shape, padding, kind, signed):
    rng = np.random.default_rng(seed)
    H, W = shape
    X = _images(rng, 2, H, W, signed)
    R = _radii(rng, H, W, kind)
    kr = tied_kinks(X, R, padding)
    assert all((c >= 0).all() for c in kr.c_up + kr.c_lo)
    r = np.stack([t * R for t in np.linspace(-1, 1, 1601)] + _integer_points(R))
    v = _warp_at(X, r, r, padding)
    up, lo = _sides(kr)
    gap_up, gap_lo = _kink_value(up, X, [r]) - v, _kink_value(lo, X, [r]) + v
    assert (gap_up >= 0).all() and (gap_lo >= 0).all()
    # the offsets are exact maxima: attained up to the sampling (|d^2 x~/dr^2| <= 4 max|x|)
    tol = 4 * np.abs(X).max() * (3.5 / 1600) ** 2 + 1e-8
    assert (gap_up.min(axis=0) <= tol).all() and (gap_lo.min(axis=0) <= tol).all()


@settings(SETTINGS, max_examples=80)
@given(seed=seeds, shape=shapes, padding=paddings, kind=radius_kinds, signed=st.booleans())
def test_untied_kinks_enclose_the_warp_on_the_whole_box(seed, shape, padding, kind, signed):
    rng = np.random.default_rng(seed)
    H, W = shape
    X = _images(rng, 2, H, W, signed)
    R = _radii(rng, H, W, kind)
    kr = untied_kinks(X, R, padding)
    assert all((c >= 0).all() for c in kr.c_up + kr.c_lo)
    axis = np.stack([t * R for t in np.linspace(-1, 1, 31)] + _integer_points(R))
    du, dv = np.repeat(axis, len(axis), axis=0), np.tile(axis, (len(axis), 1, 1))
    v = _warp_at(X, du, dv, padding)
    up, lo = _sides(kr)
    gap_up, gap_lo = _kink_value(up, X, [du, dv]) - v, _kink_value(lo, X, [du, dv]) + v
    assert (gap_up >= 0).all() and (gap_lo >= 0).all()
    tol = 1e-8 * (1 + np.abs(X).max())  # the grid holds every corner where the difference is extreme
    assert (gap_up.min(axis=0) <= tol).all() and (gap_lo.min(axis=0) <= tol).all()


def test_kinks_of_a_bright_pixel_match_the_closed_form():
    """A bright pixel between dark ones: the tied warp ``x~(r) = (1 - |r|)^2`` falls on both
    sides of ``r = 0`` (a concave kink of ``x~``, a convex one of ``-x~``)."""
    X = np.zeros((1, 3, 3))
    X[0, 1, 1] = 1.0
    R = np.full((3, 3), 0.5)
    kr = tied_kinks(X, R, "zeros")
    centre = 4
    assert kr.c_up[0][0, centre] == 0 and kr.a_up[0][0, centre] == 0  # concave: flat line, slope 0
    assert kr.b_up[0, centre] == pytest.approx(1.0, abs=1e-8)
    assert kr.a_lo[0][0, centre] == 0 and kr.c_lo[0][0, centre] == pytest.approx(1.5)  # the half-secants +-1.5
    # max over |r| <= 1/2 of -(1 - |r|)^2 - 1.5 |r|: at |r| = 1/4
    assert kr.b_lo[0, centre] == pytest.approx(-0.9375, abs=1e-8)


# -- the V-lemma and its quadratic forms -----------------------------------------------
def _dense(H, W):
    return stadv_ref.dense_smoothness_power(H, W, -1.0)


@settings(SETTINGS, max_examples=40)
@given(seed=seeds, shape=st.tuples(st.integers(1, 5), st.integers(1, 5)), with_c=st.booleans())
def test_kink_forms_reference_equals_the_dense_forms(seed, shape, with_c):
    rng = np.random.default_rng(seed)
    H, W = shape
    d, m, N, B = H * W, 4, 3, 9
    P, Q = rng.standard_normal((m, d)), rng.standard_normal((m, d))
    A1, A2, C1, C2 = (rng.standard_normal((N, d)) for _ in range(4))
    n_idx, j_idx = rng.integers(0, N, B), rng.integers(0, m, B)
    qa, cross, qc = kink_forms_reference(P, Q, A1, A2, C1 if with_c else None, C2 if with_c else None,
                                         n_idx, j_idx, H, W)
    Linv = _dense(H, W)
    assert (Linv >= -1e-12).all()  # L is an M-matrix: its inverse is entrywise nonnegative
    for b, (n, j) in enumerate(zip(n_idx, j_idx)):
        a = P[j] * A1[n] + Q[j] * A2[n]
        c = P[j] * C1[n] + Q[j] * C2[n] if with_c else np.zeros(d)
        np.testing.assert_allclose([qa[b], cross[b], qc[b]], [a @ Linv @ a, c @ np.abs(Linv @ a), c @ Linv @ c],
                                   rtol=1e-10, atol=1e-10)


@settings(SETTINGS, max_examples=40)
@given(seed=seeds, shape=st.tuples(st.integers(2, 5), st.integers(2, 5)), eps=st.floats(0.05, 3.0))
def test_v_lemma_holds_and_is_attained_without_a_linear_part(seed, shape, eps):
    """``max a^T r + c^T |r|`` over ``||M r|| <= eps`` is at most ``eps sqrt(Q)``; with ``a = 0``
    it equals ``eps ||M^-1 c||``, attained at ``r = eps L^-1 c / ||M^-1 c||``."""
    rng = np.random.default_rng(seed)
    H, W = shape
    d = H * W
    Linv = _dense(H, W)
    L = stadv_ref.dense_smoothness_power(H, W, 1.0)
    a = rng.standard_normal(d) * rng.integers(0, 2)
    c = np.abs(rng.standard_normal(d)) * (rng.random(d) < 0.7)
    La = Linv @ a
    bound = eps * np.sqrt(a @ La + 2 * c @ np.abs(La) + c @ Linv @ c)
    # every sign pattern's maximiser (a + c o sigma is the gradient in its orthant) stays below
    for _ in range(200):
        g = a + c * rng.choice([-1.0, 1.0], d)
        r = eps * Linv @ g / np.sqrt(max(g @ Linv @ g, 1e-300))
        assert a @ r + c @ np.abs(r) <= bound * (1 + 1e-9) + 1e-12
        assert r @ L @ r <= eps**2 * (1 + 1e-9)
    if not a.any() and c.any():
        r = eps * Linv @ c / np.sqrt(c @ Linv @ c)
        assert c @ np.abs(r) == pytest.approx(bound, rel=1e-9)


def test_kink_maximum_adds_the_rounding_margin_and_sums_components():
    rng = np.random.default_rng(3)
    H, W, m, N = 4, 3, 5, 2
    d = H * W
    P, Q = np.abs(rng.standard_normal((m, d))), np.abs(rng.standard_normal((m, d)))
    f = [rng.standard_normal((N, d)) for _ in range(8)]
    c = [np.abs(x) for x in f[4:]]
    kr = KinkRelaxation((f[0], f[1]), (c[0], c[1]), np.zeros((N, d)), (f[2], f[3]), (c[2], c[3]), np.zeros((N, d)))
    n_idx, j_idx = np.array([0, 1, 1]), np.array([4, 0, 2])
    be = stadv_ref.get_backend("numpy")
    val, root = kink_maximum(be, P, Q, kr, False, n_idx, j_idx, 0.7, H, W)
    Linv = _dense(H, W)
    for b, (n, j) in enumerate(zip(n_idx, j_idx)):
        q = scale = 0.0
        for k in range(2):
            a = P[j] * f[k][n] + Q[j] * f[2 + k][n]
            cc = P[j] * c[k][n] + Q[j] * c[2 + k][n]
            q += a @ Linv @ a + 2 * cc @ np.abs(Linv @ a) + cc @ Linv @ cc
            scale += (np.sqrt(a @ Linv @ a) + np.sqrt(cc @ Linv @ cc)) ** 2
        assert val[b] >= 0.7 * np.sqrt(q)
        assert val[b] == pytest.approx(0.7 * np.sqrt(q + quad_margin(H, W) * scale), rel=1e-9)
    assert 0 < quad_margin(28, 28) < 1e-6


# -- the tight bound -------------------------------------------------------------------
@pytest.mark.parametrize("flow", ["tied", "untied"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("binary", [False, True])
def test_tight_is_at_most_fast_and_at_least_the_clean_margin(flow, padding, binary):
    net = _net(4, 5, 16, 1 if binary else 3, trained_like=True)
    rng = np.random.default_rng(4)
    X = rng.uniform(0, 1, (5, 5, 5))
    X[2] = (X[2] > 0.5).astype(float)
    y = rng.integers(0, 2 if binary else 3, 5)
    out = net(X)
    clean = out[:, None] * -(2.0 * y[:, None] - 1) if binary else out - out[np.arange(5), y][:, None]
    for eps in (0.0,) + EPS + (4.0,):
        F = local_pair_bounds(net, X, y, eps, flow=flow, padding=padding)
        T = local_pair_bounds(net, X, y, eps, flow=flow, padding=padding, tightness="tight")
        assert T.shape == F.shape and (T <= F).all()
        finite = np.isfinite(F)
        assert np.array_equal(finite, np.isfinite(T))
        assert (T[finite] >= clean[finite] - 1e-12).all()
        if eps == 0.0:
            np.testing.assert_allclose(T[finite], clean[finite], atol=1e-6)


def test_tight_is_tighter_at_large_budgets_and_alpha_steps_only_lower_it():
    net = _net(5, 6, 24, 3, trained_like=True)
    rng = np.random.default_rng(5)
    X = rng.uniform(0, 1, (4, 6, 6))
    y = net.predict(X)
    F = local_pair_bounds(net, X, y, 1.0)
    T = local_pair_bounds(net, X, y, 1.0, tightness="tight")
    mask = np.isfinite(F)
    assert (F[mask] - T[mask]).mean() > 0.05 * np.abs(F[mask]).mean()
    H, W = net.image_shape
    z = X.reshape(4, -1) @ net.W.T + net.b
    wide = np.full_like(z, 1e3)
    for eps in (0.3, 1.0):
        R = box_radii(H, W, eps)
        none = tight_chunk_bounds(net, X, y, eps, R, "tied", "zeros", z - wide, z + wide, alpha_steps=0)
        some = tight_chunk_bounds(net, X, y, eps, R, "tied", "zeros", z - wide, z + wide, alpha_steps=10)
        assert (some <= none).all()


def test_tight_is_the_same_on_every_backend(backend):
    net = _net(6, 5, 12, 3)
    rng = np.random.default_rng(6)
    X = rng.uniform(0, 1, (3, 5, 5))
    y = net.predict(X)
    for flow in ("tied", "untied"):
        ref = local_pair_bounds(net, X, y, 0.8, flow=flow, tightness="tight", backend="numpy")
        got = local_pair_bounds(net, X, y, 0.8, flow=flow, tightness="tight", backend=backend)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("flow", ["tied", "untied"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("seed,H,m,trained_like", [(0, 5, 12, False), (1, 6, 20, True)])
def test_attack_never_exceeds_the_tight_bound_on_random_networks(flow, padding, seed, H, m, trained_like):
    net = _net(seed, H, m, 3, trained_like)
    rng = np.random.default_rng(seed + 20)
    X = rng.uniform(0, 1, (2, H, H))
    X[1] = (X[1] > 0.6).astype(float)  # a binary image: large jumps between pixels
    y = net.predict(X)
    y[1] = (y[1] + 1) % 3  # one misclassified image
    _check(net, X, y, flow, padding, eps_list=(0.01, 0.5, 1.0, 2.0), tightness="tight")


@pytest.mark.parametrize("flow", ["tied", "untied"])
def test_attack_never_exceeds_the_tight_bound_on_binary_networks(flow):
    net = _net(2, 5, 10, 1, trained_like=True)
    neg = stadv_ref.OneHiddenLayerNet(net.W, -net.v, net.b, -net.c)  # max -f for label 1
    X = np.random.default_rng(7).uniform(0, 1, (2, 5, 5))
    for padding in ("zeros", "border"):
        for eps in (0.01, 0.5, 2.0):
            B = local_pair_bounds(net, X, np.array([0, 1]), eps, flow=flow, padding=padding, tightness="tight")
            assert _worst_margin(net, X[0], None, eps, flow, padding) <= B[0, 0] + 1e-9
            assert _worst_margin(neg, X[1], None, eps, flow, padding) <= B[1, 0] + 1e-9


@pytest.mark.mnist
def test_attack_never_exceeds_the_tight_bound_on_mnist(mnist_dir):
    Xtr, ytr = stadv_ref.load_mnist("train", mnist_dir, limit=2000)
    net = train("nt", Xtr, ytr, hidden=50, epochs=5, seed=0, progress=False)
    X, y = stadv_ref.load_mnist("test", mnist_dir, limit=12)
    gained = 0
    cases = ((0.1, "tied", "zeros"), (1.0, "tied", "border"), (0.5, "untied", "zeros"), (2.0, "untied", "border"))
    for eps, flow, padding in cases:
        F = local_pair_bounds(net, X, y, eps, flow=flow, padding=padding)
        T = local_pair_bounds(net, X, y, eps, flow=flow, padding=padding, tightness="tight")
        assert (T <= F).all()
        gained += int((T.max(axis=1) < 0).sum() - (F.max(axis=1) < 0).sum())
        out = net(X)
        for n in range(len(X)):
            # the class the tight bound fears most and the runner-up logit
            runner = np.argsort(np.where(np.arange(10) == y[n], -np.inf, out[n]))[-1]
            for i in {int(np.argmax(T[n])), int(runner)}:
                worst = _worst_margin(net, X[n], (i, int(y[n])), eps, flow, padding, restarts=6, steps=40)
                assert worst <= T[n, i] + 1e-9, (eps, flow, padding, n, i, worst, T[n, i])
    assert gained > 0  # the tight level certifies images the fast one does not: the test is not vacuous
