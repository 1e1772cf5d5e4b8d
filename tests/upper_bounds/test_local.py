"""Per-image certificates (issue #21, fast level): the per-pixel relaxations of Eq. (1) over
Proposition 2's box, the closed-form ellipsoid maximum of Eq. (3), the bound's basic
properties and input validation. Attack-based soundness: ``test_local_soundness.py``."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from conftest import SETTINGS, seeds
from hypothesis import given, settings
from hypothesis import strategies as st

import stadv_ref
from stadv_ref.upper_bounds.local import ellipsoid_max, local_pair_bounds
from stadv_ref.upper_bounds.local_relax import extended_warp, tied_relaxation, untied_relaxation


def _radii(rng, H, W, kind):
    """Prop. 2 radii at a random budget, or arbitrary per-pixel radii up to 3.5 pixels."""
    if kind == "aabb":
        return stadv_ref.aabb_radii(H, W, float(rng.uniform(0, 6)))
    R = rng.uniform(0, 3.5, (H, W))
    R[rng.random((H, W)) < 0.2] = 0.0  # zero radii (eps = 0) and integer radii too
    R[rng.random((H, W)) < 0.2] = rng.integers(1, 4)
    return R


def _images(rng, n, H, W, signed):
    X = rng.uniform(-1 if signed else 0, 1, (n, H, W))
    X[:, rng.random((H, W)) < 0.2] = 0.0  # flat regions (exact zeros, as in MNIST)
    return X


def _integer_points(R):
    """``clip(j, -R, R)`` for every integer ``j`` in reach: the breakpoints and both ends."""
    K = int(np.ceil(R.max()))
    return [np.clip(float(j), -R, R) for j in range(-K, K + 2)]


def _warp_at(X, du, dv, padding):
    """stadv_ref.warp (the library's Eq. (1)) at per-pixel displacements ``du, dv (S, H, W)``.

    Returns shape (S, N, H, W): every image of ``X (N, H, W)`` under every displacement.
    """
    S, (N, H, W) = len(du), X.shape
    du = np.broadcast_to(np.asarray(du)[:, None], (S, N, H, W)).reshape(-1, H, W)
    dv = np.broadcast_to(np.asarray(dv)[:, None], (S, N, H, W)).reshape(-1, H, W)
    Xs = np.broadcast_to(X, (S, N, H, W)).reshape(-1, H, W)
    return stadv_ref.warp(Xs, np.stack([du, dv], axis=1), padding).reshape(S, N, H, W)


shapes = st.tuples(st.integers(1, 6), st.integers(1, 6))
paddings = st.sampled_from(["zeros", "border"])
radius_kinds = st.sampled_from(["aabb", "free"])


# -- per-pixel relaxations -------------------------------------------------------------
@settings(SETTINGS, max_examples=120)
@given(seed=seeds, shape=shapes, padding=paddings, kind=radius_kinds, signed=st.booleans())
def test_tied_relaxation_encloses_the_warp_and_is_tight(seed, shape, padding, kind, signed):
    rng = np.random.default_rng(seed)
    H, W = shape
    X = _images(rng, 2, H, W, signed)
    R = _radii(rng, H, W, kind)
    a, lo, hi = tied_relaxation(X, R, padding)
    ts = np.linspace(-1, 1, 1601)
    r = np.stack([t * R for t in ts] + _integer_points(R))[:, None]
    h = _warp_at(X, r[:, 0], r[:, 0], padding) - a * r
    assert (h >= lo).all() and (h <= hi).all()
    # exact up to the sampling: |d^2 x~/dr^2| <= 4 max|x|, sample spacing <= 2 * 3.5 / 1600
    tol = 4 * np.abs(X).max() * (3.5 / 1600) ** 2 + 1e-8
    assert (h.max(axis=0) >= hi - tol).all() and (h.min(axis=0) <= lo + tol).all()


@settings(SETTINGS, max_examples=120)
@given(seed=seeds, shape=shapes, padding=paddings, kind=radius_kinds, signed=st.booleans())
def test_untied_relaxation_encloses_the_warp_on_the_whole_box(seed, shape, padding, kind, signed):
    rng = np.random.default_rng(seed)
    H, W = shape
    X = _images(rng, 2, H, W, signed)
    R = _radii(rng, H, W, kind)
    a, b, lo, hi = untied_relaxation(X, R, padding)
    axis = np.stack([t * R for t in np.linspace(-1, 1, 31)] + _integer_points(R))
    du = np.repeat(axis, len(axis), axis=0)[:, None]
    dv = np.tile(axis, (len(axis), 1, 1))[:, None]
    h = _warp_at(X, du[:, 0], dv[:, 0], padding) - a * du - b * dv
    assert (h >= lo).all() and (h <= hi).all()
    # the grid holds every cell corner, where the bilinear difference is extreme: exact
    tol = 1e-8 * (1 + np.abs(X).max())
    assert (h.max(axis=0) >= hi - tol).all() and (h.min(axis=0) <= lo + tol).all()


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_extended_image_evaluator_is_the_warp(padding):
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 1, (3, 4, 7))
    du, dv = rng.uniform(-5, 5, (2, 3, 4, 7))
    expected = stadv_ref.warp(X, np.stack([du, dv], axis=1), padding)
    np.testing.assert_allclose(extended_warp(X, du, dv, padding), expected, atol=1e-15)


def test_zero_radius_relaxation_is_the_image():
    X = np.random.default_rng(0).uniform(0, 1, (2, 3, 3))
    a, lo, hi = tied_relaxation(X, np.zeros((3, 3)), "zeros")
    assert (a == 0).all() and (lo <= X).all() and (hi >= X).all()
    np.testing.assert_allclose(hi - lo, 0, atol=1e-8)


# -- closed-form ellipsoid maximum --------------------------------------------------------
@SETTINGS
@given(seed=seeds, shape=shapes, eps=st.floats(0, 3), untied=st.booleans())
def test_ellipsoid_maximum_is_attained_and_matches_the_dense_form(seed, shape, eps, untied):
    rng = np.random.default_rng(seed)
    H, W = shape
    g = rng.standard_normal((2, H, W) if untied else (H, W))
    value = ellipsoid_max(g, eps, untied=untied)
    Linv = stadv_ref.dense_smoothness_power(H, W, -1.0)
    flat = g.reshape(-1, H * W)
    assert value == pytest.approx(eps * np.sqrt(np.einsum("ci,ij,cj->", flat, Linv, flat)), rel=1e-10, abs=1e-12)
    # the analytic maximiser r* = eps L^-1 g / sqrt(g^T L^-1 g) is feasible and attains it
    Lg = np.asarray(stadv_ref.m_power(g, -2))
    r_star = eps * Lg / np.sqrt(np.sum(g * Lg))
    budget = stadv_ref.smoothness_norm(r_star[None])[0]
    assert budget <= eps * (1 + 1e-10) + 1e-15
    assert np.sum(g * r_star) == pytest.approx(value, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("untied", [False, True])
def test_ellipsoid_maximum_equals_a_numerical_maximiser(untied):
    rng = np.random.default_rng(7)
    H, W, eps = 3, 4, 0.7
    g = rng.standard_normal((2, H, W) if untied else (H, W))
    L = stadv_ref.dense_smoothness_power(H, W, 1.0)
    d = H * W
    n = g.size

    def budget(r):
        parts = r.reshape(-1, d)
        return eps**2 - sum(p @ L @ p for p in parts)

    res = scipy.optimize.minimize(lambda r: -g.ravel() @ r, np.zeros(n), jac=lambda r: -g.ravel(),
                                  constraints=[{"type": "ineq", "fun": budget}], method="SLSQP",
                                  options={"ftol": 1e-12, "maxiter": 500})
    assert budget(res.x) >= -1e-9
    assert -res.fun == pytest.approx(ellipsoid_max(g, eps, untied=untied), rel=1e-6)


# -- the bound: basic properties ---------------------------------------------------------
def _net(seed=0, H=5, m=12, K=3, binary=False):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(m) if binary else rng.standard_normal((K, m))
    return stadv_ref.OneHiddenLayerNet(rng.standard_normal((m, H * H)) / 2, v, b=0.3 * rng.standard_normal(m),
                                       c=0.1 * rng.standard_normal(1 if binary else K))


@pytest.mark.parametrize("flow", ["tied", "untied"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_bound_at_zero_budget_is_the_clean_margin_and_grows_with_eps(flow, padding):
    net = _net()
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, (6, 5, 5))
    y = rng.integers(0, 3, 6)
    out = net(X)
    clean = out - out[np.arange(6), y][:, None]
    clean[np.arange(6), y] = -np.inf
    B0 = local_pair_bounds(net, X, y, 0.0, flow=flow, padding=padding)
    mask = np.isfinite(clean)
    assert np.array_equal(np.isfinite(B0), mask) and (B0[~mask] == -np.inf).all()
    assert (B0[mask] >= clean[mask]).all()
    np.testing.assert_allclose(B0[mask], clean[mask], rtol=0, atol=1e-6)  # the 1e-9 relative safety margin
    means = [local_pair_bounds(net, X, y, e, flow=flow, padding=padding)[mask].mean()
             for e in (0.0, 0.01, 0.1, 0.5, 1.0, 2.0)]
    assert np.all(np.diff(means) > 0)
    # not vacuous at small budgets: the gain at eps = 0.01 is a small fraction of that at eps = 1
    assert means[1] - means[0] < 0.05 * (means[4] - means[0])


def test_binary_network_bounds_the_signed_output():
    net = _net(binary=True)
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 1, (5, 5, 5))
    y = np.array([0, 1, 0, 1, 1])
    B = local_pair_bounds(net, X, y, 0.0)
    assert B.shape == (5, 1)
    np.testing.assert_allclose(B[:, 0], -(2 * y - 1) * net(X), atol=1e-6)
    assert (local_pair_bounds(net, X, y, 0.3) >= B).all()


def test_chunking_and_flat_images_do_not_change_the_bound():
    net = _net(seed=4)
    rng = np.random.default_rng(4)
    X = rng.uniform(0, 1, (7, 5, 5))
    y = rng.integers(0, 3, 7)
    ref = local_pair_bounds(net, X, y, 0.4, flow="untied")
    np.testing.assert_allclose(local_pair_bounds(net, X, y, 0.4, flow="untied", chunk_size=2), ref, rtol=1e-12)
    np.testing.assert_allclose(local_pair_bounds(net, X.reshape(7, -1), y, 0.4, flow="untied"), ref, rtol=1e-12)
    assert local_pair_bounds(net, X[:0], y[:0], 0.4).shape == (0, 3)


def test_non_square_images_and_large_budgets():
    rng = np.random.default_rng(5)
    H, W = 3, 7
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((9, H * W)), rng.standard_normal((4, 9)),
                                      image_shape=(H, W))
    X = rng.uniform(0, 1, (3, H, W))
    for eps in (0.0, 0.3, 5.0, 20.0):  # 20: Prop. 2's intervals span about 10 pixels
        B = local_pair_bounds(net, X, net.predict(X), eps, flow="tied", padding="border")
        assert B.shape == (3, 4) and not np.isnan(B).any()


# -- input validation --------------------------------------------------------------------
def test_bad_inputs_raise_with_the_argument_name():
    net = _net()
    X = np.full((2, 5, 5), 0.5)
    y = np.array([0, 1])
    cases = [
        (dict(X=X + 1.0), ValueError, "input_range"),
        (dict(X=np.where(np.eye(5, dtype=bool), np.nan, X)), ValueError, "X"),
        (dict(X=np.full((2, 4, 4), 0.5)), ValueError, "X"),
        (dict(X=np.full((2, 5, 5, 1), 0.5)), ValueError, "X"),
        (dict(X=np.full((2, 5, 5), "a")), TypeError, "X"),
        (dict(y=np.array([0, 3])), ValueError, "y"),
        (dict(y=np.array([0.0, 1.0])), ValueError, "y"),
        (dict(y=np.array([0, 1, 2])), ValueError, "y"),
        (dict(eps=-0.1), ValueError, "eps"),
        (dict(eps=float("inf")), ValueError, "eps"),
        (dict(eps="0.1"), TypeError, "eps"),
        (dict(flow="diagonal"), ValueError, "flow"),
        (dict(padding="reflect"), ValueError, "padding"),
        (dict(tightness="tightest"), ValueError, "tightness"),
        (dict(input_range=(1, 0)), ValueError, "input_range"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(net="net"), TypeError, "net"),
    ]
    for change, exc, name in cases:
        args = dict(net=net, X=X, y=y, eps=0.1)
        kwargs = {k: change.pop(k) for k in list(change) if k not in args}
        args.update(change)
        with pytest.raises(exc, match=name):
            local_pair_bounds(args["net"], args["X"], args["y"], args["eps"], **kwargs)
    # an image in a wider declared range is accepted
    assert local_pair_bounds(net, X * 2 - 1, y, 0.1, input_range=(-1, 1)).shape == (2, 3)


def test_tight_level_is_not_implemented_yet():
    net = _net()
    with pytest.raises(NotImplementedError, match="tight"):
        local_pair_bounds(net, np.zeros((1, 5, 5)), [0], 0.1, tightness="tight")
