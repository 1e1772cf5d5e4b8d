"""Bad input raises ValueError (TypeError for non-numeric input) whose message starts with the argument's name."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stadv_ref as s
from stadv_ref import _validate as V

rng = np.random.default_rng(0)
N, H, W = 2, 4, 5
X = rng.uniform(size=(N, H, W))
X4 = rng.uniform(size=(N, 3, H, W))
FLOW = rng.normal(size=(N, 2, H, W))
R = rng.normal(size=(N, H, W))
NET = s.OneHiddenLayerNet(rng.normal(size=(3, H * W)), rng.normal(size=3), image_shape=(H, W))
NET_K = s.OneHiddenLayerNet(rng.normal(size=(3, H * W)), rng.normal(size=(4, 3)), image_shape=(H, W))


def _with(a, idx, value):
    a = np.array(a, dtype=float, copy=True)
    a[idx] = value
    return a


NAN_X, INF_X = _with(X, (0, 1, 1), np.nan), _with(X, (1, 0, 0), -np.inf)
NAN_FLOW, INF_FLOW = _with(FLOW, (1, 1, 2, 3), np.nan), _with(FLOW, (0, 0, 0, 0), np.inf)

# (id, callable, exception type, argument name)
CASES = [
    # --- Eq. (1) warp and its derivatives ---------------------------------
    ("warp-x-nan", lambda: s.warp(NAN_X, FLOW), ValueError, "x"),
    ("warp-x-inf", lambda: s.warp(INF_X, FLOW), ValueError, "x"),
    ("warp-x-2d", lambda: s.warp(X[0], FLOW), ValueError, "x"),
    ("warp-x-5d", lambda: s.warp(X4[None], FLOW), ValueError, "x"),
    ("warp-x-empty", lambda: s.warp(np.zeros((0, H, W)), FLOW[:0]), ValueError, "x"),
    ("warp-x-str", lambda: s.warp(np.full((N, H, W), "a"), FLOW), TypeError, "x"),
    ("warp-x-none", lambda: s.warp(None, FLOW), TypeError, "x"),
    ("warp-x-complex", lambda: s.warp(X + 1j, FLOW), TypeError, "x"),
    ("warp-x-object", lambda: s.warp(np.array([X, "a"], dtype=object), FLOW), TypeError, "x"),
    ("warp-flow-nan", lambda: s.warp(X, NAN_FLOW), ValueError, "flow"),
    ("warp-flow-inf", lambda: s.warp(X4, INF_FLOW), ValueError, "flow"),
    ("warp-flow-3d", lambda: s.warp(X, FLOW[0]), ValueError, "flow"),
    ("warp-flow-channels", lambda: s.warp(X, np.zeros((N, 3, H, W))), ValueError, "flow"),
    ("warp-flow-1-channel", lambda: s.warp(X, np.zeros((N, 1, H, W))), ValueError, "flow"),
    ("warp-flow-batch", lambda: s.warp(X, FLOW[:1]), ValueError, "flow"),
    ("warp-flow-batch4", lambda: s.warp(X4, np.zeros((N + 1, 2, H, W))), ValueError, "flow"),
    ("warp-flow-spatial", lambda: s.warp(X, np.zeros((N, 2, H, W + 1))), ValueError, "flow"),
    ("warp-flow-str", lambda: s.warp(X, FLOW.astype(str)), TypeError, "flow"),
    ("warp-padding", lambda: s.warp(X, FLOW, "reflect"), ValueError, "padding"),
    ("vjp_x-grad-nan", lambda: s.warp_vjp_x(FLOW, NAN_X), ValueError, "grad_out"),
    ("vjp_x-grad-1d", lambda: s.warp_vjp_x(FLOW, X.ravel()), ValueError, "grad_out"),
    ("vjp_x-flow-batch", lambda: s.warp_vjp_x(FLOW[:1], X), ValueError, "flow"),
    ("vjp_x-padding", lambda: s.warp_vjp_x(FLOW, X, "wrap"), ValueError, "padding"),
    ("vjp_flow-grad-nan", lambda: s.warp_vjp_flow(X, FLOW, NAN_X), ValueError, "grad_out"),
    ("vjp_flow-grad-shape", lambda: s.warp_vjp_flow(X4, FLOW, X), ValueError, "grad_out"),
    ("vjp_flow-grad-batch", lambda: s.warp_vjp_flow(X, FLOW, X[:1]), ValueError, "grad_out"),
    ("vjp_flow-x-nan", lambda: s.warp_vjp_flow(NAN_X, FLOW, X), ValueError, "x"),
    ("vjp_flow-flow-inf", lambda: s.warp_vjp_flow(X, INF_FLOW, X), ValueError, "flow"),
    ("tied-r-2d", lambda: s.tied(R[0]), ValueError, "r"),
    ("tied-r-nan", lambda: s.tied(_with(R, (0, 0, 0), np.nan)), ValueError, "r"),
    ("jac-r-shape", lambda: s.tied_jacobian_diag(X, R[:1]), ValueError, "r"),
    ("jac-r-spatial", lambda: s.tied_jacobian_diag(X, R[:, :-1]), ValueError, "r"),
    ("jac-r-inf", lambda: s.tied_jacobian_diag(X, _with(R, (0, 0, 0), np.inf)), ValueError, "r"),
    ("jac-x-nan", lambda: s.tied_jacobian_diag(NAN_X, R), ValueError, "x"),
    ("jac-variant", lambda: s.tied_jacobian_diag(X, R, variant="du"), ValueError, "variant"),
    ("jac-padding", lambda: s.tied_jacobian_diag(X, R, padding="edge"), ValueError, "padding"),
    ("warp_matrix-flow-4d", lambda: s.warp_matrix(FLOW), ValueError, "flow"),
    ("warp_matrix-flow-channels", lambda: s.warp_matrix(np.zeros((3, H, W))), ValueError, "flow"),
    ("warp_matrix-flow-nan", lambda: s.warp_matrix(NAN_FLOW[1]), ValueError, "flow"),
    ("warp_matrix-padding", lambda: s.warp_matrix(FLOW[0], "clip"), ValueError, "padding"),
    # --- Eq. (2), Prop. 1, stAdv loss -------------------------------------
    ("tv-flow-nan", lambda: s.flow_tv(NAN_FLOW), ValueError, "flow"),
    ("tv-flow-tied", lambda: s.flow_tv(R), ValueError, "flow"),
    ("tv-flow-channels", lambda: s.flow_tv(np.zeros((N, 3, H, W))), ValueError, "flow"),
    ("tv_grad-flow-inf", lambda: s.flow_tv_grad(INF_FLOW), ValueError, "flow"),
    ("stadv-flow-nan", lambda: s.stadv_flow_loss(NAN_FLOW), ValueError, "flow"),
    ("stadv-flow-channels", lambda: s.stadv_flow_loss(np.zeros((N, 1, H, W))), ValueError, "flow"),
    ("stadv-eps-neg", lambda: s.stadv_flow_loss(FLOW, eps=-1e-8), ValueError, "eps"),
    ("stadv-eps-zero", lambda: s.stadv_flow_loss(FLOW, eps=0.0), ValueError, "eps"),
    ("stadv-eps-nan", lambda: s.stadv_flow_loss(FLOW, eps=float("nan")), ValueError, "eps"),
    ("stadv-eps-inf", lambda: s.stadv_flow_loss(FLOW, eps=float("inf")), ValueError, "eps"),
    ("stadv-eps-str", lambda: s.stadv_flow_loss(FLOW, eps="1e-8"), TypeError, "eps"),
    ("stadv-eps-array", lambda: s.stadv_flow_loss(FLOW, eps=np.ones(2)), TypeError, "eps"),
    ("stadv-neighborhood", lambda: s.stadv_flow_loss(FLOW, neighborhood="6"), ValueError, "neighborhood"),
    ("stadv-padding", lambda: s.stadv_flow_loss(FLOW, padding="border"), ValueError, "padding"),
    ("neighbors-H-zero", lambda: s.neighbor_matrices(0, 3), ValueError, "H"),
    ("neighbors-W-neg", lambda: s.neighbor_matrices(3, -1), ValueError, "W"),
    ("neighbors-H-float", lambda: s.neighbor_matrices(2.5, 3), TypeError, "H"),
    ("L-W-zero", lambda: s.smoothness_matrix(3, 0), ValueError, "W"),
    ("path-n-zero", lambda: s.smoothness.path_matrix(0), ValueError, "n"),
    # --- Eq. (3), Prop. 2 ----------------------------------------------------
    ("m_power-fields-nan", lambda: s.m_power(_with(R, (0, 1, 1), np.nan), 1), ValueError, "fields"),
    ("m_power-fields-1d", lambda: s.m_power(np.ones(5), 1), ValueError, "fields"),
    ("m_power-fields-str", lambda: s.m_power(R.astype(str), 1), TypeError, "fields"),
    ("m_power-k", lambda: s.m_power(R, 3), ValueError, "k"),
    ("m_power-k-str", lambda: s.m_power(R, "1"), TypeError, "k"),
    ("norm-flow-2d", lambda: s.smoothness_norm(R[0]), ValueError, "flow"),
    ("norm-flow-inf", lambda: s.smoothness_norm(INF_FLOW), ValueError, "flow"),
    ("norm-flow-channels", lambda: s.smoothness_norm(np.zeros((N, 3, H, W))), ValueError, "flow"),
    ("aabb-eps-neg", lambda: s.aabb_radii(H, W, -1.0), ValueError, "eps"),
    ("aabb-eps-nan", lambda: s.aabb_radii(H, W, float("nan")), ValueError, "eps"),
    ("aabb-eps-inf", lambda: s.aabb_radii(H, W, float("inf")), ValueError, "eps"),
    ("aabb-eps-str", lambda: s.aabb_radii(H, W, "1"), TypeError, "eps"),
    ("aabb-eps-bool", lambda: s.aabb_radii(H, W, True), TypeError, "eps"),
    ("aabb-H-zero", lambda: s.aabb_radii(0, W), ValueError, "H"),
    ("aabb-W-neg", lambda: s.aabb_radii(H, -2), ValueError, "W"),
    ("dense-H-float", lambda: s.dense_smoothness_power(2.0, 3, 0.5), TypeError, "H"),
    ("operator-W-zero", lambda: s.SmoothnessOperator(3, 0), ValueError, "W"),
    # --- Eq. (4), [E8] ---------------------------------------------------------
    ("adv-x-nan", lambda: s.adv_loss_exact(NET, NAN_X, R), ValueError, "x"),
    ("adv-x-shape", lambda: s.adv_loss_exact(NET, np.ones((N, H, W + 1)), R), ValueError, "x"),
    ("adv-flow-nan", lambda: s.adv_loss_exact(NET, X, NAN_FLOW), ValueError, "flow"),
    ("adv-flow-batch", lambda: s.adv_loss_exact(NET, X, R[:1]), ValueError, "flow"),
    ("adv-flow-channels", lambda: s.adv_loss_exact(NET, X, np.zeros((N, 3, H, W))), ValueError, "flow"),
    ("adv-padding", lambda: s.adv_loss_exact(NET, X, R, padding="same"), ValueError, "padding"),
    ("path-n-neg", lambda: s.adv_loss_path_integral(NET, X, R, -3), ValueError, "n"),
    ("path-n-zero", lambda: s.adv_loss_path_integral(NET, X, R, 0), ValueError, "n"),
    ("path-n-float", lambda: s.adv_loss_path_integral(NET, X, R, 4.0), TypeError, "n"),
    ("path-n-bool", lambda: s.adv_loss_path_integral(NET, X, R, True), TypeError, "n"),
    ("lin-r-inf", lambda: s.adv_loss_linearized(NET, X, _with(R, (0, 0, 0), np.inf)), ValueError, "r"),
    ("lin-r-untied", lambda: s.adv_loss_linearized(NET, X, FLOW), ValueError, "r"),
    ("lin-r-batch", lambda: s.adv_loss_linearized(NET, X[:1], R), ValueError, "r"),
    ("first-flow-batch", lambda: s.adv_loss_first_order(NET, X, FLOW[:1]), ValueError, "flow"),
    ("grad-x-inf", lambda: s.flow_gradient(NET, INF_X, R), ValueError, "x"),
    ("multi-classes", lambda: s.adv_loss_exact(NET_K, X, R), ValueError, "classes"),
    ("cw-y", lambda: s.cw_margin(NET_K, X, np.array([0, 9])), ValueError, "y"),
    ("cw-kappa-neg", lambda: s.cw_margin(NET_K, X, np.array([0, 1]), kappa=-1.0), ValueError, "kappa"),
    ("cw-kappa-nan", lambda: s.cw_margin(NET_K, X, np.array([0, 1]), kappa=float("nan")), ValueError, "kappa"),
    ("cw-kappa-str", lambda: s.cw_margin(NET_K, X, np.array([0, 1]), kappa="0"), TypeError, "kappa"),
    ("cw-net", lambda: s.cw_margin("net", X, np.array([0, 1])), TypeError, "net"),
    # --- network -----------------------------------------------------------------
    ("net-X-nan", lambda: NET(NAN_X), ValueError, "X"),
    ("net-X-features", lambda: NET(np.ones((N, H * W + 1))), ValueError, "X"),
    ("net-weights-nan", lambda: NET_K.input_gradient(X, np.array([1.0, np.nan, 0, 0])), ValueError, "weights"),
    ("net-weights-shape", lambda: NET_K.input_gradient(X, np.ones((N, 3))), ValueError, "weights"),
    ("net-W-nan", lambda: s.OneHiddenLayerNet(np.full((2, 4), np.nan), np.ones(2)), ValueError, "W"),
    ("net-v-shape", lambda: s.OneHiddenLayerNet(np.ones((2, 4)), np.ones(3)), ValueError, "v"),
    # --- data ----------------------------------------------------------------------
    ("data-split", lambda: s.load_mnist("valid"), ValueError, "split"),
    ("data-dataset", lambda: s.load_dataset("test", "svhn"), ValueError, "dataset"),
]


@pytest.mark.parametrize("fn, exc, name", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_the_argument(fn, exc, name):
    with pytest.raises(exc, match=rf"^{name}\b"):
        fn()


def test_backend_error_is_value_and_import_error():
    with pytest.raises(ValueError, match="backend"):
        s.warp(X, FLOW, backend="no-such-backend")


# ---------------------------------------------------------------------------
# the helpers themselves
# ---------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, derandomize=True)
@given(eps=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10)))
def test_check_budget_property(eps):
    ok = np.isfinite(eps) and eps >= 0
    if ok:
        assert V.check_budget("eps", eps) == float(eps)
    else:
        with pytest.raises(ValueError, match="^eps"):
            V.check_budget("eps", eps)


@pytest.mark.parametrize("eps", [np.float32(0.5), np.float64(2.0), np.int64(3), 0, 1.5])
def test_check_budget_accepts_numpy_scalars(eps):
    assert V.check_budget("eps", eps) == float(eps)
    assert isinstance(V.check_budget("eps", eps), float)


def test_check_budget_zero_policy():
    assert V.check_budget("tau", 0.0) == 0.0
    with pytest.raises(ValueError, match="^tau must be > 0"):
        V.check_budget("tau", 0.0, allow_zero=False)


@pytest.mark.parametrize("n, exc", [(0, ValueError), (-1, ValueError), (1.0, TypeError), ("3", TypeError),
                                    (True, TypeError), (None, TypeError)])
def test_check_positive_int_rejects(n, exc):
    with pytest.raises(exc, match="^count"):
        V.check_positive_int("count", n)


def test_check_positive_int_accepts_numpy_ints():
    assert V.check_positive_int("count", np.int32(4)) == 4
    assert V.check_positive_int("count", 0, minimum=0) == 0


def test_as_float_array_dtypes():
    assert V.as_float_array("a", np.ones(3, np.float32)).dtype == np.float32
    assert V.as_float_array("a", np.ones(3, np.int64)).dtype == np.float64
    assert V.as_float_array("a", [True, False]).dtype == np.float64
    assert V.as_float_array("a", np.ones(3, np.float32), dtype=np.float64).dtype == np.float64
    assert V.as_float_array("a", [np.nan], finite=False).shape == (1,)
    with pytest.raises(ValueError, match="^a must have 2 or 3 dimensions"):
        V.as_float_array("a", np.ones(4), ndim=(2, 3))


@pytest.mark.parametrize("value, exc", [(1.9, TypeError), (2.0, TypeError), (np.float64(1.0), TypeError),
                                        (True, TypeError), (np.bool_(False), TypeError), ("1", TypeError),
                                        (None, TypeError), (np.array([1, 2]), TypeError), (-1, ValueError),
                                        (3, ValueError)])
def test_check_class_index_rejects(value, exc):
    with pytest.raises(exc, match="^label"):
        V.check_class_index("label", value, 3)


def test_check_class_index_accepts_integers():
    for k in (0, 2, np.int64(1), np.uint8(2), np.int32(0), np.array(1)):
        assert V.check_class_index("label", k, 3) == int(k)
        assert type(V.check_class_index("label", k, 3)) is int


@pytest.mark.parametrize("classes, exc", [((1.9, 2), TypeError), ((True, 0), TypeError), ((0.0, 1), TypeError),
                                          ((0, 0), ValueError), ((0, 4), ValueError), ((0,), TypeError),
                                          ("01", TypeError), ((0, 1, 2), TypeError)])
def test_classes_are_integers_never_truncated(classes, exc):
    """#19.7: classes=(1.9, 2) acted as (1, 2); float and bool class indices are refused."""
    with pytest.raises(exc, match="^classes"):
        s.adv_loss_exact(NET_K, X, R, classes=classes)
    assert np.isfinite(s.adv_loss_exact(NET_K, X, R, classes=(np.int64(1), 2))).all()


def test_two_tied_flows_for_one_image_are_refused():
    """#19.7: a 3-D flow is always N tied flows; (2, H, W) with one image is a batch mismatch, not an untied flow."""
    two_tied = R[:2]
    for x in (X[0], X[:1]):
        with pytest.raises(ValueError, match=r"^flow holds 2 tied flows .* x holds 1 image.*\(1, 2, H, W\)"):
            s.adv_loss_exact(NET, x, two_tied)
    one_untied = FLOW[:1]  # the unambiguous form of one untied flow
    want = NET(s.warp(X[:1], one_untied)) - NET(X[:1])
    np.testing.assert_allclose(s.adv_loss_exact(NET, X[0], one_untied), want)
    np.testing.assert_allclose(s.adv_loss_exact(NET, X[:2], two_tied), NET(s.warp(X[:2], s.tied(two_tied))) - NET(X[:2]))


def test_check_input_range_rejects_strings_and_bools():
    with pytest.raises(ValueError, match="^input_range"):
        V.check_input_range("input_range", "01")
    with pytest.raises(TypeError, match="^input_range"):
        V.check_input_range("input_range", (False, True))
    with pytest.raises(ValueError, match="^input_range"):
        V.check_input_range("input_range", (0, 10**400))
    assert V.check_input_range("input_range", np.array([0, 1])) == (0.0, 1.0)


@pytest.mark.parametrize("seed, exc", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("0", TypeError),
                                       (None, TypeError)])
def test_check_seed_rejects(seed, exc):
    with pytest.raises(exc, match="^seed"):
        V.check_seed("seed", seed)
    assert V.check_seed("seed", np.uint32(7)) == 7


@pytest.mark.parametrize("y, exc", [(np.array([0.0, 1.0]), TypeError), (np.array([True, False]), TypeError),
                                    (np.array(["0", "1"]), TypeError), (np.array([0, 3]), ValueError),
                                    (np.array([-1, 0]), ValueError), (np.array([0]), ValueError),
                                    (np.array([[0, 1]]), ValueError)])
def test_check_labels_rejects(y, exc):
    with pytest.raises(exc, match="^labels"):
        V.check_labels("labels", y, 2, 3)
    assert V.check_labels("labels", np.array([2, 0], np.uint8), 2, 3).dtype == np.int64
