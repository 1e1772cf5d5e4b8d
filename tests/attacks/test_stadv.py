"""Tests of the stAdv attack (stadv_ref.attacks): objective, gradient, both optimisers."""
from __future__ import annotations

import numpy as np
import pytest
from _checks import fd_check
from _stadv_cases import H, K, W, _images, _net  # noqa: F401

import stadv_ref
from stadv_ref.attacks import STADV_CODE_OPTIONS, StadvObjective, stadv_attack, stadv_objective
from stadv_ref.attacks.objective import _KernelObjective


@pytest.fixture(scope="module")
def setup():
    net = _net()
    X = _images(12)
    y = net.predict(X)  # attack the network's own predictions: every image starts correct
    return net, X, y


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"kappa": 0.5},
        {"target": "next"},
        dict(STADV_CODE_OPTIONS),
        {"neighborhood": "8", "flow_padding": "symmetric"},
    ],
)
def test_objective_gradient_matches_finite_differences(setup, options):
    net, X, y = setup
    options = dict(options)
    if options.get("target") == "next":
        options["target"] = (y + 1) % K
    rng = np.random.default_rng(1)
    # a generic point: no sampling coordinate is an integer (the warp is smooth there)
    flow = rng.uniform(-0.8, 0.8, (X.shape[0], 2, H, W)) + 0.0137
    tau = 0.05
    val, grad = stadv_objective(net, X, y, flow, tau, **options)
    assert val.shape == (X.shape[0],) and grad.shape == flow.shape
    for _ in range(3):
        fd_check(lambda fl: stadv_objective(net, X, y, fl, tau, **options)[0], grad, flow, rng,
                 eps=1e-6, rtol=1e-5, atol=1e-6, batch=True)


def test_objective_parts(setup):
    net, X, y = setup
    obj = StadvObjective(net, X, y, 0.3, kappa=0.2)
    flow = np.zeros((X.shape[0], 2, H, W))
    out = obj(flow)
    logits = net(X)
    other = logits.copy()
    other[np.arange(len(y)), y] = -np.inf
    expected = np.maximum(logits[np.arange(len(y)), y] - other.max(axis=1), -0.2)
    np.testing.assert_allclose(out["adv_loss"], expected)
    # zero flow: L_flow = (#pixels)(#neighbours inside or zero-padded) sqrt(1e-8)
    np.testing.assert_allclose(out["flow_loss"], 4 * H * W * 1e-4)
    np.testing.assert_allclose(out["objective"], out["adv_loss"] + 0.3 * out["flow_loss"])
    assert not out["success"].any()


@pytest.mark.parametrize("method", ["batched", "lbfgs-b"])
def test_successful_example_changes_prediction(setup, method):
    net, X, y = setup
    X, y = X[:6], y[:6]
    res = stadv_attack(net, X, y, 0.001, method=method, max_iter=30, progress=False)
    assert res.success.sum() >= X.shape[0] // 2
    # the returned images are the warp of x by the returned flow
    np.testing.assert_allclose(res.x_adv, stadv_ref.warp(X, res.flow), atol=1e-12)
    pred = net.predict(res.x_adv)
    np.testing.assert_array_equal(pred, res.pred)
    assert np.all(pred[res.success] != y[res.success])
    assert np.all(pred[~res.success] == y[~res.success])
    # reported diagnostics
    np.testing.assert_allclose(res.l_diff, stadv_ref.flow_tv(res.flow))
    np.testing.assert_allclose(res.flow_norm, stadv_ref.smoothness_norm(res.flow))
    assert np.all(res.flow_norm[res.success] > 0)


def test_targeted_attack_reaches_target(setup):
    net, X, y = setup
    t = (y + 1) % K
    res = stadv_attack(net, X, y, 0.001, target=t, max_iter=80, progress=False)
    assert res.success.any()
    np.testing.assert_array_equal(net.predict(res.x_adv)[res.success], t[res.success])


def test_batched_and_per_image_agree(setup):
    net, X, y = setup
    tau = 0.02
    ref = stadv_attack(net, X, y, tau, method="lbfgs-b", max_iter=100, progress=False)
    bat = stadv_attack(net, X, y, tau, method="batched", max_iter=100, progress=False)
    assert 0 < ref.success.sum() < len(y) or ref.success.all()
    # same success flags on (nearly) every image, and batched at least as successful
    assert (ref.success == bat.success).mean() >= 0.75
    assert bat.success.sum() >= ref.success.sum() - 1
    # where neither succeeds both minimise the same smooth objective: close optima
    both_fail = ~ref.success & ~bat.success
    if both_fail.any():
        np.testing.assert_allclose(bat.objective[both_fail], ref.objective[both_fail], rtol=0.05, atol=0.05)
    # both optimisers descend: an unsuccessful final iterate is no worse than the zero flow
    zero = StadvObjective(net, X, y, tau)(np.zeros_like(bat.flow))["objective"]
    assert np.all(bat.objective[~bat.success] <= zero[~bat.success] + 1e-12)
    assert np.all(ref.objective[~ref.success] <= zero[~ref.success] + 1e-12)


def test_tau_controls_flow_size(setup):
    """A large tau keeps the flow near zero where the attack fails (a success is reported as found)."""
    net, X, y = setup
    small = stadv_attack(net, X, y, 0.001, max_iter=60, progress=False)
    large = stadv_attack(net, X, y, 1.0, max_iter=60, progress=False)
    assert large.success.sum() <= small.success.sum()
    fail = ~large.success
    assert fail.any()
    assert np.all(large.flow_loss[fail] < small.flow_loss[fail])


def test_attack_runs_on_backend(setup, backend):
    net, X, y = setup
    flow = np.random.default_rng(3).uniform(-0.5, 0.5, (X.shape[0], 2, H, W)) + 0.01
    ref_v, ref_g = stadv_objective(net, X, y, flow, 0.05)
    with stadv_ref.use_backend(backend):
        v, g = stadv_objective(net, X, y, flow, 0.05)
        res = stadv_attack(net, X[:3], y[:3], 0.01, max_iter=10, progress=False)
    np.testing.assert_allclose(v, ref_v, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(g, ref_g, rtol=1e-7, atol=1e-9)
    assert res.flow.shape == (3, 2, H, W) and isinstance(res.flow, np.ndarray)


@pytest.mark.parametrize("options", [{}, {"kappa": 0.3, "target": "next"}, dict(STADV_CODE_OPTIONS)])
def test_batched_kernel_objective_matches_public_objective(setup, backend, options):
    """The batched optimiser's kernel-level objective equals StadvObjective (values, gradients, flags)."""
    net, X, y = setup
    options = dict(options)
    if options.get("target") == "next":
        options["target"] = (y + 1) % K
    flow = np.random.default_rng(4).uniform(-0.7, 0.7, (X.shape[0], 2, H, W)) + 0.013
    idx = np.array([0, 2, 3, 7, 11])
    with stadv_ref.use_backend(backend):
        obj = StadvObjective(net, X, y, 0.05, **options)
        ref_all, ref_sub = obj(flow), obj(flow[idx], idx)
        kern = _KernelObjective(obj)
        out_all = kern(flow.reshape(len(y), -1), np.arange(len(y)))
        out_sub = kern(flow[idx].reshape(len(idx), -1), idx)
    for ref, out in ((ref_all, out_all), (ref_sub, out_sub)):
        np.testing.assert_allclose(out["objective"], ref["objective"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["grad"], ref["grad"].reshape(len(out["grad"]), -1), rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(out["success"], ref["success"])


@pytest.mark.mnist
def test_attack_on_trained_mnist_net(mnist_dir):
    X, y = stadv_ref.load_mnist("train", data_dir=mnist_dir, limit=1000)
    Xt, yt = stadv_ref.load_mnist("test", data_dir=mnist_dir, limit=20)
    net = stadv_ref.train("nt", X, y, epochs=2, progress=False)
    res = stadv_attack(net, Xt, yt, 0.0, max_iter=30, progress=False)
    # tau = 0: the flow is free, so the attack succeeds on (nearly) every image
    assert res.success.mean() >= 0.9
    assert np.all(net.predict(res.x_adv)[res.success] != yt[res.success])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"tau": -0.1}, "tau"),
        ({"tau": float("nan")}, "tau"),
        ({"kappa": -1.0}, "kappa"),
        ({"method": "adam"}, "method"),
        ({"max_iter": 0}, "max_iter"),
        ({"neighborhood": "5"}, "neighborhood"),
        ({"flow_padding": "reflect"}, "flow_padding"),
        ({"warp_padding": "reflect"}, "warp_padding"),
        ({"y": np.zeros(3, dtype=np.int64)}, "y"),
        ({"y": np.full(12, K, dtype=np.int64)}, "y"),
        ({"target": "same"}, "target"),
        ({"x": "nan"}, "x"),
        ({"x": np.zeros((12, 9, 9))}, "x"),
    ],
)
def test_bad_input(setup, kwargs, name):
    net, X, y = setup
    args = {"x": X, "y": y, "tau": 0.05}
    args.update(kwargs)
    if isinstance(args["x"], str):
        args["x"] = X.copy()
        args["x"][0, 0, 0] = np.nan
    if args.get("target") == "same":
        args["target"] = y
    with pytest.raises((ValueError, TypeError), match=name):
        stadv_attack(net, args.pop("x"), args.pop("y"), args.pop("tau"), progress=False, **args)


def test_bad_net():
    with pytest.raises(TypeError, match="net"):
        stadv_attack(object(), np.zeros((1, 4, 4)), [0], 0.05)
    binary = stadv_ref.OneHiddenLayerNet(np.ones((2, 16)), np.ones(2))
    with pytest.raises(ValueError, match="net"):
        stadv_attack(binary, np.zeros((1, 4, 4)), [0], 0.05)


def test_tau_as_a_list_runs_once_per_value():
    """#20: tau may be a list in the API; each result equals the single-tau call."""
    rng = np.random.default_rng(3)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((8, 25)), rng.standard_normal((3, 8)))
    X = rng.uniform(0, 1, (4, 5, 5))
    y = net.predict(X)
    several = stadv_attack(net, X, y, [0.0, 0.05], max_iter=20, progress=False)
    assert isinstance(several, list) and len(several) == 2
    for t, res in zip([0.0, 0.05], several):
        one = stadv_attack(net, X, y, t, max_iter=20, progress=False)
        np.testing.assert_array_equal(res.flow, one.flow)
    with pytest.raises(ValueError, match="tau"):
        stadv_attack(net, X, y, [], progress=False)
