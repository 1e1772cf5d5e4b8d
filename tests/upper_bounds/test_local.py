"""Per-image certificates (issue #21, fast level): the per-pixel relaxations of Eq. (1) over
Proposition 2's box, the closed-form ellipsoid maximum of Eq. (3), the bound's basic
properties and input validation. Attack-based soundness: ``test_local_soundness.py``."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from _settings import SETTINGS, seeds
from hypothesis import given, settings
from hypothesis import strategies as st

import stadv_ref
from stadv_ref.upper_bounds.local import (
    _preactivation_bounds,
    box_radii,
    ellipsoid_max,
    local_pair_bounds,
)
from stadv_ref.upper_bounds.local_relax import Relaxation, extended_warp, relu_lines, tied_relaxation, untied_relaxation


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
    rel = tied_relaxation(X, R, padding)
    ts = np.linspace(-1, 1, 1601)
    r = np.stack([t * R for t in ts] + _integer_points(R))[:, None]
    v = _warp_at(X, r[:, 0], r[:, 0], padding)
    above, below = v - rel.lower[0] * r, v - rel.upper[0] * r
    assert (above >= rel.lo).all() and (below <= rel.hi).all()
    # exact up to the sampling: |d^2 x~/dr^2| <= 4 max|x|, sample spacing <= 2 * 3.5 / 1600
    tol = 4 * np.abs(X).max() * (3.5 / 1600) ** 2 + 1e-8
    assert (below.max(axis=0) >= rel.hi - tol).all() and (above.min(axis=0) <= rel.lo + tol).all()


@settings(SETTINGS, max_examples=120)
@given(seed=seeds, shape=shapes, padding=paddings, kind=radius_kinds, signed=st.booleans())
def test_untied_relaxation_encloses_the_warp_on_the_whole_box(seed, shape, padding, kind, signed):
    rng = np.random.default_rng(seed)
    H, W = shape
    X = _images(rng, 2, H, W, signed)
    R = _radii(rng, H, W, kind)
    rel = untied_relaxation(X, R, padding)
    axis = np.stack([t * R for t in np.linspace(-1, 1, 31)] + _integer_points(R))
    du = np.repeat(axis, len(axis), axis=0)[:, None]
    dv = np.tile(axis, (len(axis), 1, 1))[:, None]
    v = _warp_at(X, du[:, 0], dv[:, 0], padding)
    above = v - rel.lower[0] * du - rel.lower[1] * dv
    below = v - rel.upper[0] * du - rel.upper[1] * dv
    assert (above >= rel.lo).all() and (below <= rel.hi).all()
    # the grid holds every cell corner, where the bilinear difference is extreme: exact
    tol = 1e-8 * (1 + np.abs(X).max())
    assert (below.max(axis=0) >= rel.hi - tol).all() and (above.min(axis=0) <= rel.lo + tol).all()


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_extended_image_evaluator_is_the_warp(padding):
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 1, (3, 4, 7))
    du, dv = rng.uniform(-5, 5, (2, 3, 4, 7))
    expected = stadv_ref.warp(X, np.stack([du, dv], axis=1), padding)
    np.testing.assert_allclose(extended_warp(X, du, dv, padding), expected, atol=1e-15)


def test_zero_radius_relaxation_is_the_image():
    X = np.random.default_rng(0).uniform(0, 1, (2, 3, 3))
    rel = tied_relaxation(X, np.zeros((3, 3)), "zeros")
    assert (rel.lo <= X).all() and (rel.hi >= X).all()
    np.testing.assert_allclose(rel.hi - rel.lo, 0, atol=1e-8)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (6, 6)])
def test_box_radii_enclose_every_flow_and_are_attained(shape):
    """Prop. 2: r = eps L^-1 e_i / sqrt((L^-1)_ii) is feasible and has |r_i| = eps lambda_i."""
    H, W = shape
    eps = 1.3
    Linv = stadv_ref.dense_smoothness_power(H, W, -1.0)
    extremes = eps * Linv / np.sqrt(np.diag(Linv))[:, None]
    assert (stadv_ref.smoothness_norm(extremes.reshape(-1, H, W)) <= eps * (1 + 1e-12)).all()
    R = box_radii(H, W, eps).ravel()
    assert (np.abs(np.diag(extremes)) <= R).all() and (R <= np.abs(np.diag(extremes)) * (1 + 2e-9)).all()


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


@settings(SETTINGS, max_examples=60)
@given(seed=seeds)
def test_relu_lines_enclose_relu(seed):
    rng = np.random.default_rng(seed)
    lo = rng.standard_normal(50) * 3
    hi = lo + rng.exponential(2, 50)
    s, t, alpha = relu_lines(lo, hi)
    z = lo + np.linspace(0, 1, 101)[:, None] * (hi - lo)
    relu = np.maximum(z, 0)
    assert (alpha * z <= relu + 1e-12).all() and (s * z + t >= relu - 1e-12).all()


@pytest.mark.parametrize("flow", ["tied", "untied"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_preactivation_bounds_hold_for_sampled_flows(flow, padding):
    H, eps = 5, 1.7
    net = _net(seed=8, H=H, m=30)
    rng = np.random.default_rng(8)
    X = rng.uniform(0, 1, (3, H, H))
    R = box_radii(H, H, eps)
    rel = (tied_relaxation if flow == "tied" else untied_relaxation)(X, R, padding)
    flat = lambda arrs: tuple(a.reshape(3, -1) for a in arrs)  # noqa: E731
    rel = Relaxation(flat(rel.lower), rel.lo.reshape(3, -1), flat(rel.upper), rel.hi.reshape(3, -1))
    lo, hi = _preactivation_bounds(net, rel, R.ravel(), eps, stadv_ref.smoothness_operator(H, H))
    assert ((lo < 0) & (hi > 0)).any()  # some units are unstable: the ellipsoid part is exercised
    # flows on the budget's boundary: random directions, Prop. 2's extreme flows
    # r = +-eps L^-1 e_i / sqrt((L^-1)_ii) (|r_i| = eps lambda_i), and for every unit the
    # maximiser r = eps L^-1 g / ||M^-1 g|| of its relaxation's linear part (up and down)
    d, c = H * H, 1 if flow == "tied" else 2
    Linv = stadv_ref.dense_smoothness_power(H, H, -1.0)
    extremes = Linv / np.sqrt(np.diag(Linv))[:, None]
    parts = [rng.standard_normal((100, c, d)) @ Linv]
    for k in range(c):  # Prop. 2's extremes in one component, the other component zero
        e = np.zeros((2 * d, c, d))
        e[:, k] = np.vstack([extremes, -extremes])
        parts.append(e)
    for n in range(3):  # each unit's linear maximiser, both signs
        g = np.stack([net.W * a[n] for a in rel.upper], axis=1) @ Linv
        parts += [g, -g]
    r = np.concatenate(parts).reshape(-1, c, H, H)
    r *= eps / stadv_ref.smoothness_norm(r[:, 0] if c == 1 else r)[:, None, None, None]
    flows = np.concatenate([r, r], axis=1) if flow == "tied" else r
    for n in range(3):
        z = net.hidden(stadv_ref.warp(np.broadcast_to(X[n], (len(r), H, H)), flows, padding))
        assert (z >= lo[n] - 1e-12).all() and (z <= hi[n] + 1e-12).all()


def _reference_bound(net, x, y, eps, flow, padding):
    """The construction of local.py's docstring written out plainly for one image (dense L^-1,
    loops over units and classes): an oracle for the vectorised code."""
    H, W = net.image_shape
    R = box_radii(H, W, eps).ravel()
    rel = (tied_relaxation if flow == "tied" else untied_relaxation)(x[None], R.reshape(H, W), padding)
    up = [a.ravel() for a in rel.upper]
    low = [a.ravel() for a in rel.lower]
    lo, hi = rel.lo.ravel(), rel.hi.ravel()
    Linv = stadv_ref.dense_smoothness_power(H, W, -1.0)

    def linear_max(coef, slopes_pos, slopes_neg):
        """max over the budget of sum_k coef_k (slope_k . d_k), slope by the sign of coef_k."""
        gs = [np.where(coef > 0, coef * sp, coef * sn) for sp, sn in zip(slopes_pos, slopes_neg)]
        ell = eps * np.sqrt(sum(g @ Linv @ g for g in gs))
        return min(ell, sum(np.abs(g) @ R for g in gs))

    l_, u_ = np.empty(net.m), np.empty(net.m)
    for j, wj in enumerate(net.W):
        u_[j] = net.b[j] + np.where(wj > 0, wj * hi, wj * lo).sum() + linear_max(wj, up, low)
        l_[j] = net.b[j] + np.where(wj > 0, wj * lo, wj * hi).sum() - linear_max(-wj, up, low)
    out = []
    V = net.V if not net.binary else -(2 * y - 1) * net.V
    c = net.c if not net.binary else -(2 * y - 1) * net.c
    for i in range(V.shape[0]):
        cv = V[i] - (0 if net.binary else V[y])
        const = c[i] - (0 if net.binary else c[y])
        w = np.zeros(H * W)
        for j in range(net.m):
            if u_[j] <= 0 or cv[j] == 0:
                continue
            if l_[j] >= 0:
                slope, icpt = 1.0, 0.0
            elif cv[j] > 0:
                slope = u_[j] / (u_[j] - l_[j])
                icpt = -slope * l_[j]
            else:
                slope, icpt = float(u_[j] >= -l_[j]), 0.0
            w += cv[j] * slope * net.W[j]
            const += cv[j] * (slope * net.b[j] + icpt)
        out.append(const + np.where(w > 0, w * hi, w * lo).sum() + linear_max(w, up, low))
    return np.array(out)


@pytest.mark.parametrize("flow", ["tied", "untied"])
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("binary", [False, True])
def test_bound_matches_a_plain_reference(flow, padding, binary):
    net = _net(seed=11, H=5, m=16, binary=binary)
    rng = np.random.default_rng(11)
    X = rng.uniform(0, 1, (3, 5, 5))
    y = rng.integers(0, 2 if binary else 3, 3)
    for eps in (0.05, 0.6, 2.5):
        B = local_pair_bounds(net, X, y, eps, flow=flow, padding=padding)
        for n in range(3):
            ref = _reference_bound(net, X[n], y[n], eps, flow, padding)
            if not binary:
                ref[y[n]] = -np.inf
            np.testing.assert_allclose(B[n], ref, rtol=1e-6, atol=1e-6)


def test_bound_is_exact_for_one_unstable_unit():
    """One hidden unit, a ramp image, weights off the border (every relaxation exact):
    ``u = z0 + eps * 0.15 ||M^-1 w||``, ``l = z0 - ...``; the CROWN upper line is exact at
    ``z = u`` (class 1: ``2 relu(z)``, maximum ``2 u``) and the adaptive lower slope is 0 for
    ``u < -l`` (class 2: ``-relu(z)``, maximum 0)."""
    H, eps, z0 = 6, 0.5, -0.05
    w = np.random.default_rng(9).standard_normal((H, H))
    w[[0, -1], :] = 0.0
    w[:, [0, -1]] = 0.0
    rows, cols = np.mgrid[0:H, 0:H]
    X = (0.1 * cols + 0.05 * rows + 0.1)[None]
    b = z0 - np.sum(w * X[0])
    net = stadv_ref.OneHiddenLayerNet(w.reshape(1, -1), np.array([[0.0], [2.0], [-1.0]]), b=np.array([b]))
    spread = eps * float(ellipsoid_max(0.15 * w, 1.0))
    assert z0 + spread > 0 > z0  # unstable, with u < -l
    B = local_pair_bounds(net, X, [0], eps)
    assert B[0, 1] == pytest.approx(2 * (z0 + spread), rel=1e-6)  # the 1e-9 relative safety margins
    assert B[0, 2] == pytest.approx(0.0, abs=1e-6)


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
        (dict(y=np.array([0.0, 1.0])), TypeError, "y"),
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

