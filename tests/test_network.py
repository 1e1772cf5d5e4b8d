"""Tests of the one-hidden-layer ReLU network (stadv_ref.network)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from _settings import SETTINGS, seeds
from hypothesis import given
from hypothesis import strategies as st

from stadv_ref import OneHiddenLayerNet
from stadv_ref.network import relu_derivative

BE = "numpy"


def _net(rng, m=6, H=3, W=3, K=None, biases=True):
    d = H * W
    Wm = rng.normal(size=(m, d))
    v = rng.normal(size=(m,) if K is None else (K, m))
    b = rng.normal(size=m) if biases else None
    c = (rng.normal() if K is None else rng.normal(size=K)) if biases else None
    shape = None if H == W else (H, W)
    return OneHiddenLayerNet(Wm, v, b, c, image_shape=shape)


def _manual(net, X):
    """v^T relu(W x + b) + c with explicit loops over samples and hidden units."""
    X = X.reshape(X.shape[0], -1)
    out = np.zeros((X.shape[0], net.n_classes))
    for n in range(X.shape[0]):
        for j in range(net.m):
            z = sum(net.W[j, i] * X[n, i] for i in range(net.d)) + net.b[j]
            out[n] += net.V[:, j] * max(z, 0.0)
        out[n] += net.c
    return out[:, 0] if net.binary else out


@SETTINGS
@given(seed=seeds, m=st.integers(1, 6), H=st.integers(1, 4), W=st.integers(1, 4),
       K=st.sampled_from([None, 2, 4]), biases=st.booleans(), N=st.integers(1, 3))
def test_forward_matches_manual_numpy(seed, m, H, W, K, biases, N):
    rng = np.random.default_rng(seed)
    net = _net(rng, m, H, W, K, biases)
    X = rng.normal(size=(N, H, W))
    out = net(X, backend=BE)
    assert out.shape == ((N,) if K is None else (N, K))
    np.testing.assert_allclose(out, _manual(net, X), atol=1e-12)
    np.testing.assert_allclose(net.forward(X.reshape(N, -1), backend=BE), out, atol=1e-14)
    np.testing.assert_allclose(net.hidden(X, backend=BE), X.reshape(N, -1) @ net.W.T + net.b, atol=1e-12)
    # single inputs (d,) and (H, W) are a batch of one
    np.testing.assert_allclose(net(X[0].ravel(), backend=BE), out[:1], atol=1e-14)
    np.testing.assert_allclose(net(X[0], backend=BE), out[:1], atol=1e-14)
    pred = net.predict(X, backend=BE)
    if K is None:
        np.testing.assert_array_equal(pred, (out > 0).astype(np.int64))
    else:
        np.testing.assert_array_equal(pred, out.argmax(axis=1))


@SETTINGS
@given(seed=seeds, m=st.integers(1, 8), K=st.sampled_from([None, 3]), N=st.integers(1, 3))
def test_input_gradient_matches_finite_differences(seed, m, K, N):
    rng = np.random.default_rng(seed)
    net = _net(rng, m, 3, 3, K)
    X = rng.normal(size=(N, 9))
    weights = None if K is None else rng.normal(size=(N, K))
    g = net.input_gradient(X, weights, backend=BE)
    assert g.shape == (N, 9)
    # ReLU nets are piecewise linear: central differences are exact unless a
    # pre-activation changes sign within the step; keep the step well inside.
    Z = net.hidden(X, backend=BE)
    h = 1e-3 * float(np.abs(Z).min()) / (1 + float(np.abs(net.W).sum(axis=1).max()))
    if h == 0:
        return  # a pre-activation exactly 0 (probability 0 with random data)
    wts = np.ones((N, 1)) if K is None else weights

    def obj(Xp):
        out = net(Xp, backend=BE)
        out = out[:, None] if K is None else out
        return (wts * out).sum(axis=1)

    for i in range(9):
        e = np.zeros(9)
        e[i] = h
        fd = (obj(X + e) - obj(X - e)) / (2 * h)
        np.testing.assert_allclose(g[:, i], fd, rtol=1e-6, atol=1e-8)
    # the printed formula W^T diag(dsigma(W x + b)) V^T w
    want = ((wts @ net.V) * (Z > 0)) @ net.W
    np.testing.assert_allclose(g, want, atol=1e-12)


def test_relu_derivative_is_zero_at_zero():
    z = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(relu_derivative(z), [0.0, 0.0, 1.0])


def test_multiclass_gradient_needs_weights():
    net = _net(np.random.default_rng(0), K=3)
    with pytest.raises(ValueError, match="weights"):
        net.input_gradient(np.zeros((1, 9)), backend=BE)
    with pytest.raises(ValueError, match="weights"):
        net.input_gradient(np.zeros((2, 9)), np.ones((2, 4)), backend=BE)
    # a (K,) weight vector broadcasts over the batch
    X = np.random.default_rng(1).normal(size=(2, 9))
    w = np.array([1.0, -1.0, 0.0])
    np.testing.assert_allclose(net.input_gradient(X, w, backend=BE),
                               net.input_gradient(X, np.tile(w, (2, 1)), backend=BE))


@SETTINGS
@given(seed=seeds, K=st.integers(2, 5), N=st.integers(1, 4))
def test_pair_is_difference_of_logits(seed, K, N):
    rng = np.random.default_rng(seed)
    net = _net(rng, 5, 3, 3, K)
    i, y = (int(a) for a in rng.choice(K, size=2, replace=False))
    X = rng.normal(size=(N, 3, 3))
    pair = net.pair(i, y)
    assert pair.binary and pair.v.shape == (5,)
    out = net(X, backend=BE)
    np.testing.assert_allclose(pair(X, backend=BE), out[:, i] - out[:, y], atol=1e-12)
    w = np.zeros(K)
    w[i], w[y] = 1.0, -1.0
    np.testing.assert_allclose(pair.input_gradient(X, backend=BE), net.input_gradient(X, w, backend=BE),
                               atol=1e-12)


def test_pair_errors():
    net = _net(np.random.default_rng(0), K=3)
    with pytest.raises(ValueError, match="differ"):
        net.pair(1, 1)
    with pytest.raises(ValueError, match="out of range"):
        net.pair(3, 0)
    with pytest.raises(ValueError, match="multi-class"):
        _net(np.random.default_rng(0)).pair(0, 1)


def test_shapes_and_repr():
    net = _net(np.random.default_rng(0), m=4, H=2, W=5, K=3)
    assert (net.m, net.d, net.n_classes, net.image_shape, net.binary) == (4, 10, 3, (2, 5), False)
    assert "m=4" in repr(net) and "3 classes" in repr(net)
    b = OneHiddenLayerNet(np.ones((2, 4)), np.ones(2))
    assert b.binary and b.image_shape == (2, 2) and b.v.shape == (2,) and b.V.shape == (1, 2)


@pytest.mark.parametrize("K", [None, 3])
def test_save_load_round_trip(tmp_path, K, monkeypatch):
    rng = np.random.default_rng(3)
    net = _net(rng, 5, 2, 3, K)
    path = tmp_path / "net.npz"

    def no_pickle(*a, **k):
        raise AssertionError("pickle must not be used")

    for name in ("load", "loads", "dump", "dumps", "Unpickler", "Pickler"):
        monkeypatch.setattr(pickle, name, no_pickle)
    net.save(path, test_accuracy=0.98, name="nt", epochs=3, hist=np.arange(3.0))
    back, meta = OneHiddenLayerNet.load(path, with_metadata=True)
    monkeypatch.undo()
    for attr in ("W", "V", "b", "c"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(net, attr))
    assert back.binary == net.binary and back.image_shape == net.image_shape
    assert meta["test_accuracy"] == 0.98 and meta["name"] == "nt" and meta["epochs"] == 3
    np.testing.assert_array_equal(meta["hist"], np.arange(3.0))
    X = rng.normal(size=(4, 2, 3))
    np.testing.assert_array_equal(back(X, backend=BE), net(X, backend=BE))
    assert isinstance(OneHiddenLayerNet.load(str(path)), OneHiddenLayerNet)
    # every stored array is plain numeric/string data, loadable without pickle
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)


def test_save_rejects_object_metadata(tmp_path):
    with pytest.raises(TypeError, match="metadata"):
        _net(np.random.default_rng(0)).save(tmp_path / "x.npz", bad={"a": 1})


def test_load_foreign_npz_with_only_W_and_v(tmp_path):
    rng = np.random.default_rng(4)
    W, v = rng.normal(size=(3, 16)), rng.normal(size=3)
    np.savez(tmp_path / "f.npz", W=W, v=v)
    net = OneHiddenLayerNet.load(tmp_path / "f.npz")
    assert net.image_shape == (4, 4)
    np.testing.assert_array_equal(net.b, 0.0)


def _malformed(tmp_path):
    rng = np.random.default_rng(5)
    W, v = rng.normal(size=(3, 16)), rng.normal(size=3)
    cases = {}
    p = tmp_path / "missing_v.npz"
    np.savez(p, W=W)
    cases["missing_v"] = (p, "lacks")
    p = tmp_path / "missing_all.npz"
    np.savez(p, other=np.ones(2))
    cases["missing_all"] = (p, "lacks")
    p = tmp_path / "v_wrong.npz"
    np.savez(p, W=W, v=np.ones(4))
    cases["v_wrong_shape"] = (p, "malformed")
    p = tmp_path / "b_wrong.npz"
    np.savez(p, W=W, v=v, b=np.ones(5))
    cases["b_wrong_shape"] = (p, "malformed")
    p = tmp_path / "c_wrong.npz"
    np.savez(p, W=W, v=np.ones((2, 3)), c=np.ones(3))
    cases["c_wrong_shape"] = (p, "malformed")
    p = tmp_path / "W_1d.npz"
    np.savez(p, W=np.ones(16), v=v)
    cases["W_1d"] = (p, "malformed")
    p = tmp_path / "not_square.npz"
    np.savez(p, W=np.ones((3, 15)), v=v)
    cases["d_not_square"] = (p, "malformed")
    p = tmp_path / "bad_image_shape.npz"
    np.savez(p, W=W, v=v, image_shape=np.array([3, 5]))
    cases["image_shape_product"] = (p, "malformed")
    p = tmp_path / "nan.npz"
    Wn = W.copy()
    Wn[0, 0] = np.nan
    np.savez(p, W=Wn, v=v)
    cases["nan_weights"] = (p, "malformed")
    p = tmp_path / "strings.npz"
    np.savez(p, W=np.array([["a"] * 16] * 3), v=v)
    cases["string_weights"] = (p, "malformed")
    p = tmp_path / "pickled.npz"
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = {"a": 1}, [1, 2]
    np.savez(p, W=obj, v=v)
    cases["pickled_object_array"] = (p, "pickle")
    p = tmp_path / "text.npz"
    p.write_text("W = [[1, 2], [3, 4]]\n")
    cases["text_file"] = (p, "not a valid .npz")
    p = tmp_path / "plain.npy"
    np.save(p, W)
    cases["npy_not_npz"] = (p, "not a valid .npz")
    p = tmp_path / "extra_layer.npz"
    np.savez(p, W=W, v=v, W2=np.ones((3, 3)))
    cases["extra_array"] = (p, r"does not have: \['W2'\]")
    p = tmp_path / "future.npz"
    np.savez(p, format_version=np.int64(2), W=W, v=v)
    cases["unknown_format_version"] = (p, "format_version")
    p = tmp_path / "version_str.npz"
    np.savez(p, format_version=np.array("1"), W=W, v=v)
    cases["format_version_not_int"] = (p, "format_version")
    p = tmp_path / "truncated.npz"
    np.savez(p, W=W, v=v)
    p.write_bytes(p.read_bytes()[:100])
    cases["truncated_zip"] = (p, "not a valid .npz")
    cases["missing_file"] = (tmp_path / "nope.npz", "does not exist")
    return cases


@pytest.mark.parametrize("case", [
    "missing_v", "missing_all", "v_wrong_shape", "b_wrong_shape", "c_wrong_shape", "W_1d",
    "d_not_square", "image_shape_product", "nan_weights", "string_weights", "pickled_object_array",
    "text_file", "npy_not_npz", "truncated_zip", "missing_file", "extra_array", "unknown_format_version",
    "format_version_not_int",
])
def test_load_malformed_raises_value_error(tmp_path, case):
    path, match = _malformed(tmp_path)[case]
    with pytest.raises(ValueError, match=match):
        OneHiddenLayerNet.load(path)


@pytest.mark.parametrize("kwargs, match", [
    (dict(W=np.ones((3, 4)), v=np.ones(2)), "v"),
    (dict(W=np.ones((3, 4)), v=np.ones(3), b=np.ones(2)), "b"),
    (dict(W=np.ones((3, 4)), v=np.ones((2, 3)), c=np.ones(3)), "c"),
    (dict(W=np.ones((3, 5)), v=np.ones(3)), "square"),
    (dict(W=np.ones((3, 6)), v=np.ones(3), image_shape=(2, 2)), "image_shape"),
    (dict(W=np.ones((3, 6)), v=np.ones(3), image_shape=(-2, -3)), "image_shape"),
    (dict(W=np.ones(4), v=np.ones(3)), "W"),
    (dict(W=np.full((3, 4), np.inf), v=np.ones(3)), "W"),
    (dict(W=np.ones((3, 4)), v=np.full(3, np.nan)), "v"),
    (dict(W=np.zeros((0, 4)), v=np.ones(0)), "W"),
    (dict(W=np.ones((3, 4)), v=np.ones((0, 3))), "v"),
])
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OneHiddenLayerNet(**kwargs)


def test_forward_input_validation():
    net = _net(np.random.default_rng(0), 4, 3, 3)
    with pytest.raises(ValueError, match="X"):
        net(np.ones((2, 8)), backend=BE)
    with pytest.raises(ValueError, match="X"):
        net(np.ones((2, 4, 4)), backend=BE)
    with pytest.raises(ValueError, match="X"):
        net(np.array([[np.nan] * 9]), backend=BE)
    with pytest.raises(TypeError, match="X"):
        net(np.array([["a"] * 9]), backend=BE)


def test_save_writes_exactly_the_given_path(tmp_path):
    net = _net(np.random.default_rng(6))
    net.save(tmp_path / "model")  # no suffix: numpy alone would write model.npz
    assert (tmp_path / "model").is_file() and not (tmp_path / "model.npz").exists()
    np.testing.assert_array_equal(OneHiddenLayerNet.load(tmp_path / "model").W, net.W)


def test_net_does_not_alias_caller_arrays():
    """#19.8: the network keeps private read-only copies, so mutating the caller's arrays cannot bypass validation."""
    rng = np.random.default_rng(7)
    W, v, b, c = rng.normal(size=(4, 9)), rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=3)
    net = OneHiddenLayerNet(W, v, b, c)
    X = rng.normal(size=(2, 3, 3))
    before = net(X, backend=BE)
    for a in (W, v, b, c):
        a[...] = np.nan
    np.testing.assert_array_equal(net(X, backend=BE), before)
    for a in (net.W, net.V, net.b, net.c, net.v):
        assert not np.shares_memory(a, W) and not a.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        net.W[0, 0] = np.nan
    pair = net.pair(0, 1)  # the pair shares the frozen W, never a writable one
    assert not pair.W.flags.writeable and not pair.V.flags.writeable
    from stadv_ref import LinearClassifier

    vv = rng.normal(size=9)
    lin = LinearClassifier(vv)
    vv[:] = np.nan
    assert np.isfinite(lin.v).all() and not lin.v.flags.writeable


@pytest.mark.parametrize("i, y, exc", [(1.9, 2, TypeError), (True, 0, TypeError), (np.float64(1.0), 0, TypeError),
                                       (0, -1, ValueError), (0, 3, ValueError)])
def test_pair_refuses_non_integer_class_indices(i, y, exc):
    net = _net(np.random.default_rng(0), K=3)
    with pytest.raises(exc, match="^[iy]"):
        net.pair(i, y)
    assert net.pair(np.int64(1), np.int32(2)).binary


def test_pair_overflow_is_refused():
    net = OneHiddenLayerNet(np.ones((2, 4)), np.array([[1e308, 1e308], [-1e308, 0.0]]))
    with pytest.raises(ValueError, match="overflows"):
        net.pair(0, 1)


def test_empty_batch_gives_empty_outputs():
    net = _net(np.random.default_rng(1), K=3)
    assert net(np.zeros((0, 3, 3)), backend=BE).shape == (0, 3)
    assert net(np.zeros((0, 9)), backend=BE).shape == (0, 3)
    assert net.predict(np.zeros((0, 3, 3)), backend=BE).shape == (0,)
    assert net.input_gradient(np.zeros((0, 3, 3)), np.ones(3), backend=BE).shape == (0, 9)


def test_overflowing_output_is_refused():
    """#19.9: finite but huge weights used to give NaN logits silently; the overflow is refused by name."""
    rng = np.random.default_rng(2)
    net = OneHiddenLayerNet(1e200 * rng.normal(size=(4, 9)), 1e200 * rng.normal(size=(3, 4)))
    X = rng.uniform(size=(2, 3, 3))
    for call in (lambda: net(X, backend=BE), lambda: net.hidden(1e200 * X, backend=BE),
                 lambda: net.input_gradient(X, np.ones(3), backend=BE)):
        with pytest.raises(ValueError, match="^X: the net's .* is not finite"):
            call()
