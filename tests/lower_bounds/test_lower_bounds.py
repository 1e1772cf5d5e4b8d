"""Tests of Theorems 1-2 and Algorithms 1-2 (stadv_ref.lower_bounds, issue 3)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from _checks import dottest

import stadv_ref
from stadv_ref.adversarial_loss import adv_loss_exact, adv_loss_linearized, adv_loss_path_integral
from stadv_ref.lower_bounds import theorem1_input
from stadv_ref.lower_bounds.flows import ellipsoid_argmax, partial_adjoint, partial_apply
from stadv_ref.lower_bounds.linear import theorem2_operator
from stadv_ref.lower_bounds.objectives import LinearObjective, NetObjective, probe
from stadv_ref.operators import dense_smoothness_power, smoothness_norm


def _net(seed, m, H, W=None, K=None, bias=False):
    W = H if W is None else W
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(m) if K is None else rng.standard_normal((K, m))
    b = 0.1 * rng.standard_normal(m) if bias else None
    return stadv_ref.OneHiddenLayerNet(rng.standard_normal((m, H * W)), v, b=b, image_shape=(H, W))


def _check_feasible(res):
    """The returned pair is feasible: the reported norms pass without tolerance."""
    assert res.flow_norm <= res.eps
    assert res.x_inf_norm <= 1.0
    f = res.flow[None]
    # independent recomputation (possibly on another backend than the attack's): rounding only
    assert float(smoothness_norm(f)[0]) <= res.eps * (1 + 1e-13)
    assert np.abs(res.x).max() <= 1.0


def _exact_independent(net, res):
    if net.binary:
        return float(adv_loss_exact(net, res.x[None], res.flow[None])[0])
    return max(
        float(adv_loss_exact(net, res.x[None], res.flow[None], classes=(i, res.y))[0])
        for i in range(net.n_classes)
        if i != res.y
    )


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------
def test_partial_derivatives_match_tied_jacobian():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (3, 4, 5))
    r = rng.normal(0, 1.5, (3, 4, 5))
    r[0, 0, 0] = 0.0  # integer position: right derivative
    flows = np.stack([r, r], axis=1)
    ju = partial_apply(x, flows, 0)
    jv = partial_apply(x, flows, 1)
    np.testing.assert_allclose(ju + jv, stadv_ref.tied_jacobian_diag(x, r), atol=1e-13)
    np.testing.assert_allclose(ju, stadv_ref.tied_jacobian_diag(x, r, variant="paper"), atol=1e-13)
    for ax in (0, 1):  # partial_adjoint is the adjoint in x of partial_apply
        dottest(lambda z: partial_apply(z, flows, ax), lambda w: partial_adjoint(flows, w, ax), x.shape, x.shape,
                rng, rtol=1e-12)


def test_theorem2_operator_is_symmetric():
    """B = diag(v) M^-2 diag(v) of Theorem 2 (matrix-free): <B x, y> = <x, B y>, and B = its dense form."""
    rng = np.random.default_rng(5)
    v = rng.standard_normal((4, 5))
    op = theorem2_operator(v)
    dottest(op.matvec, op.rmatvec, (20,), (20,), rng, rtol=1e-12)
    B = np.diag(v.ravel()) @ dense_smoothness_power(4, 5, -1) @ np.diag(v.ravel())
    np.testing.assert_allclose(op.matvec(np.eye(20)[3]), B[:, 3], rtol=1e-10, atol=1e-12)


def test_compat_import_paths():
    """The pre-split module paths re-export the same objects."""
    from stadv_ref import impossibility
    from stadv_ref.lower_bounds import core, flows, objectives

    assert core.probe is objectives.probe and core.partial_adjoint is flows.partial_adjoint
    assert impossibility.theorem1_input is theorem1_input
    assert impossibility.LowerBoundResult is stadv_ref.LowerBoundResult


@pytest.mark.parametrize("tied,jac", [(True, "correct"), (True, "paper"), (False, "correct")])
def test_x_coefficients_are_the_exact_linear_form(tied, jac):
    """For a linear f, Eq. (13) is linear in x: alpha must equal its gradient, probed on e_j."""
    rng = np.random.default_rng(2)
    H, W = 3, 4
    v = rng.standard_normal((H, W))
    obj = LinearObjective(v)
    flow2 = rng.normal(0, 1.0, (2, H, W))
    if tied:
        flow2[1] = flow2[0]
    x = rng.uniform(-1, 1, (H, W))
    alpha, s, mid = probe(obj, x, flow2, 5, tied, jac)
    assert abs(float((alpha * x).sum()) - mid) < 1e-12
    grad = np.zeros(H * W)
    for j in range(H * W):
        e = np.zeros(H * W)
        e[j] = 1.0
        grad[j] = probe(obj, e.reshape(H, W), flow2, 5, tied, jac, want_alpha=False)[2]
    np.testing.assert_allclose(alpha.ravel(), grad, atol=1e-12)


def test_midpoint_matches_path_integral_and_alpha():
    net = _net(3, 7, 4)
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (4, 4))
    r = rng.normal(0, 0.8, (4, 4))
    obj = NetObjective(net)
    alpha, s, mid = probe(obj, x, np.stack([r, r]), 9, True, "correct")
    ref = float(adv_loss_path_integral(net, x[None], r[None], n=9)[0])
    assert abs(mid - ref) < 1e-10
    assert abs(float((alpha * x).sum()) - mid) < 1e-10


def test_ellipsoid_argmax_is_the_maximiser():
    rng = np.random.default_rng(4)
    s = rng.standard_normal((3, 5))
    r, val = ellipsoid_argmax(s, 2.0)
    Linv = dense_smoothness_power(3, 5, -1)
    assert abs(val - 2.0 * np.sqrt(s.ravel() @ Linv @ s.ravel())) < 1e-10
    assert abs(float(smoothness_norm(r[None])[0]) - 2.0) < 1e-10
    assert abs(float((s * r).sum()) - val) < 1e-10
    for _ in range(20):  # random feasible points do no better
        q = rng.standard_normal((3, 5))
        q *= 2.0 / float(smoothness_norm(q[None])[0])
        assert (s * q).sum() <= val + 1e-10


# ---------------------------------------------------------------------------
# Theorem 1 / Algorithm 1
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("flow", ["tied", "untied"])
@pytest.mark.parametrize("seed,m,H,W", [(0, 6, 4, 4), (1, 30, 3, 3), (2, 5, 2, 5)])
def test_feasible_and_exact_reproducible(flow, seed, m, H, W):
    net = _net(seed, m, H, W, bias=seed == 1)
    for eps in (0.0, 0.3, 2.5):
        res = stadv_ref.lower_bound_attack(net, eps, flow=flow, max_iter=8)
        _check_feasible(res)
        assert res.flow.shape == ((H, W) if flow == "tied" else (2, H, W))
        assert res.exact_loss == pytest.approx(_exact_independent(net, res), abs=1e-12, rel=1e-12)
        assert res.labels["exact_loss"].startswith("certified lower bound")
        assert res.labels["theorem_value"].startswith("estimate")
        if eps == 0.0:
            assert res.exact_loss == 0.0 and res.theorem_value == 0.0


@pytest.mark.parametrize("flow", ["tied", "untied"])
def test_theorem_pairs_feasible_without_tolerance(flow):
    """Eq. (6)/(12) put r* on the boundary ||M r*|| = eps; rounding must not leave it outside.

    Without the final rescaling about a third of these pairs had a computed norm one ulp above eps.
    """
    for seed in range(25):
        rng = np.random.default_rng(500 + seed)
        H, W, m = int(rng.integers(2, 6)), int(rng.integers(2, 6)), int(rng.integers(2, 9))
        net = _net(500 + seed, m, H, W)
        eps = float(rng.uniform(0.1, 8.0))
        res = stadv_ref.lower_bound_attack(net, eps, flow=flow, algorithm=False, n_restarts=1)
        assert all(h["flow_norm"] <= eps for h in res.history)
        _check_feasible(res)
        lin = stadv_ref.linear_lower_bound_attack(net.W[0], eps, image_shape=(H, W), flow=flow, max_iter=0)
        assert all(h["flow_norm"] <= eps for h in lin.history)
        _check_feasible(lin)


def test_theorem1_pair_and_value():
    """Eq. (6): l~ at (x*, r*) equals the Theorem 1 value eps ||M^-1 diag(x*) W^T diag(v) dsigma||."""
    net = _net(5, 8, 4)
    eps = 1.7
    res = stadv_ref.lower_bound_attack(net, eps, algorithm=False)
    assert res.method == "theorem1" and len(res.history) == 1
    x = res.x.ravel()
    assert any("pseudo-inverse used" in n and "[E9]" in n for n in res.notes)
    np.testing.assert_allclose(x, np.linalg.pinv(net.W) @ np.ones(8) / np.abs(np.linalg.pinv(net.W) @ np.ones(8)).max())
    assert np.all(net.W @ x > 0)  # every unit active (m < d, full row rank)
    a = x * (net.W.T @ net.v)
    Linv = dense_smoothness_power(4, 4, -1)
    assert res.theorem_value == pytest.approx(eps * np.sqrt(a @ Linv @ a), rel=1e-12)
    lin = float(adv_loss_linearized(net, res.x[None], res.flow[None])[0])
    assert lin == pytest.approx(res.theorem_value, rel=1e-12)
    assert res.linearized_loss == pytest.approx(lin, rel=1e-12)
    assert res.flow_norm == pytest.approx(eps, rel=1e-12)


def test_theorem1_submatrix_when_m_ge_d():
    net = _net(6, 12, 3)
    x, notes = theorem1_input(net)
    assert "rank-d submatrix" in notes[0]
    assert np.abs(x).max() == pytest.approx(1.0)
    assert (net.W @ x.ravel() > 0).sum() >= 9  # the d rows of W_d are active


@pytest.mark.parametrize("H,W", [(2, 2), (3, 3), (2, 4)])
def test_theorem1_below_brute_force_linearised_sup(H, W):
    """sup over cube vertices of eps ||M^-1 diag(x) grad f(x)|| (closed-form sup over r) >= Theorem 1."""
    d = H * W
    Linv = dense_smoothness_power(H, W, -1)
    V = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))
    for seed in range(8):
        for m in (2, 5, 2 * d):
            net = _net(100 + seed, m, H, W)
            res = stadv_ref.lower_bound_attack(net, 1.3, algorithm=False)
            A = V * net.input_gradient(V)
            brute = 1.3 * np.sqrt(np.einsum("ij,jk,ik->i", A, Linv, A)).max()
            assert brute >= res.theorem_value * (1 - 1e-12)


def test_algorithm1_never_below_initialisation():
    for seed in range(4):
        net = _net(20 + seed, 10, 5)
        res = stadv_ref.lower_bound_attack(net, 1.0, max_iter=10, n_restarts=1, seed=seed)
        inits = [h["exact_loss"] for h in res.history if h["kind"] == "init"]
        assert res.init_exact_loss == max(inits)
        assert res.exact_loss >= res.init_exact_loss
        assert res.exact_loss >= res.theorem_exact_loss
        assert res.exact_loss == max(h["exact_loss"] for h in res.history)
        h = res.history[res.best_step]
        np.testing.assert_array_equal(h["x"], res.x)
        np.testing.assert_array_equal(h["flow"], res.flow)
        assert {"init", "x", "r"} <= {h["kind"] for h in res.history}


def test_cycle_detected_on_absolute_value_network():
    """f(x) = relu(w.x) + relu(-w.x) = |w.x|: the active unit decides the sign of alpha,
    x <- sign(+-c) flips which unit is active, so the x-update alternates p, -p ([E10])."""
    w = np.array([1.0, -2.0, 0.5, 3.0])
    net = stadv_ref.OneHiddenLayerNet(np.stack([w, -w]), np.array([1.0, 1.0]))
    res = stadv_ref.lower_bound_attack(net, 1.0, max_iter=3)
    assert res.cycle_detected
    first = [c for c in res.cycles if c["kind"] == "x" and c["outer"] == 0]
    assert first and first[0]["period"] == 2
    xs = [h["x"] for h in res.history if h["kind"] == "x" and h["outer"] == 0]
    assert len(xs) == 2 and np.array_equal(xs[1], -xs[0])
    assert np.sign(w @ xs[0].ravel()) == -np.sign(w @ xs[1].ravel())
    assert any("[E10]" in n for n in res.notes)
    assert res.x_loop_outcomes["cycle"] >= 1
    assert sum(res.x_loop_outcomes.values()) == res.n_outer
    _check_feasible(res)


def test_cycle_period_bound_and_caps():
    net = _net(0, 6, 4)
    res = stadv_ref.lower_bound_attack(net, 1.0, max_iter=4, max_x_iter=3)
    assert res.n_outer <= 4
    per_outer = {}
    for h in res.history:
        if h["kind"] == "x":
            per_outer[h["outer"]] = per_outer.get(h["outer"], 0) + 1
    assert max(per_outer.values()) <= 3


def test_multiclass_runner_up_pairs():
    net = _net(7, 20, 5, K=4)
    res = stadv_ref.lower_bound_attack(net, 2.0, y=2, max_iter=8)
    _check_feasible(res)
    assert res.y == 2 and res.classes[1] == 2 and res.classes[0] != 2
    assert res.exact_loss == pytest.approx(_exact_independent(net, res), rel=1e-12, abs=1e-12)
    assert any("multi-class" in n for n in res.notes)
    step_pairs = {tuple(h["step_pair"]) for h in res.history}
    assert all(p[1] == 2 for p in step_pairs)
    # fixed pair
    res2 = stadv_ref.lower_bound_attack(net, 2.0, classes=(0, 2), max_iter=5)
    assert res2.classes == (0, 2)
    ref = float(adv_loss_exact(net, res2.x[None], res2.flow[None], classes=(0, 2))[0])
    assert res2.exact_loss == pytest.approx(ref, rel=1e-12, abs=1e-12)
    # default y: the class predicted at x*
    res3 = stadv_ref.lower_bound_attack(net, 1.0, max_iter=2)
    x1, _ = theorem1_input(net)
    assert res3.y == int(net.predict(x1[None])[0])


def test_untied_at_least_tied():
    """Tied flows with ||M r|| <= eps/sqrt(2) are the tied members of the untied ball of radius eps."""
    for seed in range(3):
        net = _net(40 + seed, 8, 4)
        eps = 1.5
        tied = stadv_ref.lower_bound_attack(net, eps / np.sqrt(2), max_iter=8)
        untied = stadv_ref.lower_bound_attack(net, eps, flow="untied", max_iter=8)
        _check_feasible(untied)
        assert untied.exact_loss >= tied.exact_loss - 1e-12
        assert untied.theorem_value == pytest.approx(tied.theorem_value, rel=1e-12)
        du, dv = untied.flow
        q = float(smoothness_norm(du[None])[0] ** 2 + smoothness_norm(dv[None])[0] ** 2)
        assert q <= eps**2 * (1 + 1e-13)


def test_paper_jacobian_option_runs():
    net = _net(8, 6, 4)
    a = stadv_ref.lower_bound_attack(net, 1.0, max_iter=5, jacobian="paper")
    b = stadv_ref.lower_bound_attack(net, 1.0, max_iter=5)
    _check_feasible(a)
    assert a.jacobian == "paper" and a.theorem_value == b.theorem_value
    obj = NetObjective(net)
    f2 = np.stack([b.init_flow, b.init_flow])
    u = stadv_ref.lower_bound_attack(net, 1.0, max_iter=2, flow="untied", jacobian="paper")
    assert any("concerns tied flows only" in n for n in u.notes)
    m_paper = probe(obj, b.init_x, f2, 16, True, "paper", want_alpha=False)[2]
    m_corr = probe(obj, b.init_x, f2, 16, True, "correct", want_alpha=False)[2]
    assert m_paper != pytest.approx(m_corr)


def test_deterministic():
    net = _net(9, 6, 4)
    a = stadv_ref.lower_bound_attack(net, 1.0, max_iter=6, n_restarts=2, seed=3)
    b = stadv_ref.lower_bound_attack(net, 1.0, max_iter=6, n_restarts=2, seed=3)
    assert a.exact_loss == b.exact_loss
    np.testing.assert_array_equal(a.flow, b.flow)


def test_bad_inputs():
    net = _net(0, 4, 3)
    with pytest.raises(ValueError, match="eps"):
        stadv_ref.lower_bound_attack(net, -1.0)
    with pytest.raises(ValueError, match="eps"):
        stadv_ref.lower_bound_attack(net, float("nan"))
    with pytest.raises(TypeError, match="net"):
        stadv_ref.lower_bound_attack(np.eye(3), 1.0)
    with pytest.raises(ValueError, match="x0"):
        stadv_ref.lower_bound_attack(net, 1.0, x0=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="x0"):
        stadv_ref.lower_bound_attack(net, 1.0, x0=2 * np.ones((3, 3)))
    with pytest.raises(ValueError, match="flow"):
        stadv_ref.lower_bound_attack(net, 1.0, flow="loose")
    with pytest.raises(ValueError, match="jacobian"):
        stadv_ref.lower_bound_attack(net, 1.0, jacobian="other")
    with pytest.raises(ValueError, match="n"):
        stadv_ref.lower_bound_attack(net, 1.0, n=0)
    with pytest.raises(ValueError, match="y"):
        stadv_ref.lower_bound_attack(net, 1.0, y=0)  # binary net
    netm = _net(0, 4, 3, K=3)
    with pytest.raises(ValueError, match="y"):
        stadv_ref.lower_bound_attack(netm, 1.0, y=3)
    with pytest.raises(ValueError, match="classes"):
        stadv_ref.lower_bound_attack(netm, 1.0, classes=(1, 1))
    with pytest.raises(ValueError, match="v"):
        stadv_ref.linear_lower_bound_attack(np.ones(10), 1.0)
    with pytest.raises(ValueError, match="v"):
        stadv_ref.linear_lower_bound_attack(np.ones((2, 3)), 1.0, image_shape=(3, 3))
    with pytest.raises(ValueError, match="eps"):
        stadv_ref.linear_lower_bound_attack(np.ones(9), -0.5)
    with pytest.raises(ValueError, match="v"):
        stadv_ref.linear_lower_bound_attack(np.array([1.0, np.inf, 0, 0]), 1.0)


@pytest.mark.parametrize("kw", [dict(classes=(0.1, 2)), dict(classes=(1.0, 2)), dict(classes=(True, 0)),
                                dict(classes=(0, np.bool_(True))), dict(classes="01"), dict(classes=1),
                                dict(classes=(0, 1, 2)), dict(y=1.0), dict(y=True)])
def test_float_bool_or_string_classes_are_refused_not_truncated(kw):
    """Issue #19: ``classes=(0.1, 2)`` used to run as ``(0, 2)``, ``(True, 0)`` as ``(1, 0)``, ``'01'`` as ``(0, 1)``."""
    with pytest.raises(TypeError, match=next(iter(kw))):
        stadv_ref.lower_bound_attack(_net(0, 4, 3, K=3), 1.0, max_iter=1, progress=False, **kw)


def test_numpy_integer_classes_and_seed_are_accepted():
    net = _net(0, 4, 3, K=3)
    a = stadv_ref.lower_bound_attack(net, 1.0, classes=(np.int64(2), np.int32(0)), max_iter=2, seed=np.int64(1))
    b = stadv_ref.lower_bound_attack(net, 1.0, classes=(2, 0), max_iter=2, seed=1)
    assert a.exact_loss == b.exact_loss and a.classes == b.classes == (2, 0)


@pytest.mark.parametrize("seed, exc", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_seed_is_refused_by_name(seed, exc):
    with pytest.raises(exc, match="seed"):
        stadv_ref.lower_bound_attack(_net(0, 4, 3), 1.0, seed=seed)


# ---------------------------------------------------------------------------
# Theorem 2 / Algorithm 2
# ---------------------------------------------------------------------------
def test_theorem2_eigenvector_matches_dense():
    rng = np.random.default_rng(11)
    H, W = 5, 6
    v = rng.standard_normal(H * W)
    res = stadv_ref.linear_lower_bound_attack(v, 2.0, image_shape=(H, W), algorithm=False)
    Linv = dense_smoothness_power(H, W, -1)
    B = v[:, None] * Linv * v[None, :]
    lam, Q = np.linalg.eigh(B)
    top = Q[:, -1] / np.abs(Q[:, -1]).max()
    top *= np.sign(top[np.argmax(np.abs(top))])
    np.testing.assert_allclose(res.x.ravel(), top, atol=1e-8)
    a = v * res.x.ravel()
    assert res.theorem_value == pytest.approx(2.0 * np.sqrt(a @ Linv @ a), rel=1e-10)
    assert res.linearized_loss == pytest.approx(res.theorem_value, rel=1e-10)
    assert any("eigsh" in n for n in res.notes)


@pytest.mark.parametrize("H,W", [(2, 2), (3, 3), (2, 4), (4, 4)])
def test_theorem2_below_brute_force(H, W):
    d = H * W
    Linv = dense_smoothness_power(H, W, -1)
    V = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))
    for seed in range(5):
        v = np.random.default_rng(200 + seed).standard_normal(d)
        res = stadv_ref.linear_lower_bound_attack(v, 0.9, image_shape=(H, W), algorithm=False)
        A = V * v
        brute = 0.9 * np.sqrt(np.einsum("ij,jk,ik->i", A, Linv, A)).max()
        assert brute >= res.theorem_value * (1 - 1e-12)


@pytest.mark.parametrize("flow", ["tied", "untied"])
def test_algorithm2_feasible_exact_and_monotone(flow):
    rng = np.random.default_rng(12)
    v = rng.standard_normal((6, 6))
    for eps in (0.5, 3.0):
        res = stadv_ref.linear_lower_bound_attack(v, eps, flow=flow, max_iter=10)
        _check_feasible(res)
        f4 = res.flow if flow == "untied" else np.stack([res.flow, res.flow])
        exact = float((v * (stadv_ref.warp(res.x[None], f4[None])[0] - res.x)).sum())
        assert res.exact_loss == pytest.approx(exact, rel=1e-12, abs=1e-12)
        assert res.exact_loss >= res.init_exact_loss >= res.theorem_exact_loss
        assert res.method == "algorithm2"
        # Eq. (13)'s coefficients do not depend on x: every x-loop ends at a fixed point
        assert res.x_loop_outcomes["fixed_point"] == res.n_outer
        # the true loss of a linear f is bounded: |v^T (g - x)| <= 2 ||v||_1 for ||x||_inf <= 1
        assert abs(res.exact_loss) <= 2 * np.abs(v).sum()


def test_algorithm2_as_relu_network_agrees():
    """v^T x = relu(x)^T v - relu(-x)^T v: Algorithm 1 on that net sees the same objective."""
    rng = np.random.default_rng(13)
    v = rng.standard_normal(9)
    x = rng.choice([-1.0, 1.0], size=(3, 3))
    net = stadv_ref.OneHiddenLayerNet(np.vstack([np.eye(9), -np.eye(9)]), np.concatenate([v, -v]))
    lin = stadv_ref.linear_lower_bound_attack(v, 1.0, x0=x, max_iter=0)
    rel = stadv_ref.lower_bound_attack(net, 1.0, x0=x, max_iter=0)
    assert lin.theorem_value == pytest.approx(rel.theorem_value, rel=1e-12)
    assert lin.exact_loss == pytest.approx(rel.exact_loss, rel=1e-12)
    np.testing.assert_allclose(lin.flow, rel.flow, atol=1e-13)


def test_runs_on_backend(backend):
    net = _net(14, 6, 4)
    ref = stadv_ref.lower_bound_attack(net, 1.0, algorithm=False)
    with stadv_ref.use_backend(backend):
        res = stadv_ref.lower_bound_attack(net, 1.0, max_iter=4)
        lin = stadv_ref.linear_lower_bound_attack(net.W[0], 1.0, max_iter=3)
    assert res.theorem_value == pytest.approx(ref.theorem_value, rel=1e-9)
    _check_feasible(res)
    _check_feasible(lin)
    assert res.exact_loss == pytest.approx(_exact_independent(net, res), rel=1e-9, abs=1e-12)
