"""Single-channel images (issue #20, deliverable 6): ``(N, 1, H, W)`` is accepted wherever ``(N, H, W)`` is.

The rule lives in one validator, :func:`stadv_ref._validate.as_images`; every public function that takes
a batch of images must give the same result for the batch with and without its channel axis of length 1.
``PENDING`` lists the functions whose input check does not call ``as_images`` yet (files of other helpers);
they are ``xfail(strict=True)``: when one gets fixed its test XPASSes and the entry must go.
"""
from __future__ import annotations

import numpy as np
import pytest

import stadv_ref as s
from stadv_ref._validate import as_images

H = W = 4
M, K, N = 6, 3, 3
_rng = np.random.default_rng(7)
NET = s.OneHiddenLayerNet(_rng.normal(size=(M, H * W)), _rng.normal(size=(K, M)), 0.1 * _rng.normal(size=M),
                          0.1 * _rng.normal(size=K))
X = _rng.uniform(size=(N, H, W))
Y = np.array([0, 2, 1])
FLOW = _rng.uniform(-0.3, 0.3, size=(N, 2, H, W))
XT, YT = _rng.uniform(size=(6, H, W)), np.array([0, 1, 2, 0, 1, 2])

CALLS = {
    "OneHiddenLayerNet.forward": lambda x: NET(x),
    "OneHiddenLayerNet.predict": lambda x: NET.predict(x),
    "OneHiddenLayerNet.hidden": lambda x: NET.hidden(x),
    "OneHiddenLayerNet.input_gradient": lambda x: NET.input_gradient(x, np.ones(K)),
    "cw_margin": lambda x: s.cw_margin(NET, x, Y),
    "certify": lambda x: s.certify(NET, x, Y, 0.1, method="spectral", cache=False, progress=False).certified,
    "certify-local": lambda x: s.certify(NET, x, Y, 0.1, method="local", cache=False, progress=False).certified,
    "warp": lambda x: s.warp(x, FLOW).reshape(N, H, W),  # warp keeps the channel axis it is given
    "local_pair_bounds": lambda x: s.local_pair_bounds(NET, x, Y, 0.1),
    "stadv_attack": lambda x: s.stadv_attack(NET, x, Y, 0.05, max_iter=3, progress=False).x_adv,
    "adv_loss_exact": lambda x: s.adv_loss_exact(NET, x, FLOW, classes=(0, 1)),
    "adv_loss_first_order": lambda x: s.adv_loss_first_order(NET, x, FLOW, classes=(0, 1)),
    "adv_loss_linearized": lambda x: s.adv_loss_linearized(NET, x, FLOW[:, 0], classes=(0, 1)),
    "adv_loss_path_integral": lambda x: s.adv_loss_path_integral(NET, x, FLOW, n=4, classes=(0, 1)),
    "flow_gradient": lambda x: s.flow_gradient(NET, x, FLOW, classes=(0, 1)),
}
_AS_IMAGES = "needs as_images (stadv_ref._validate) instead of as_float_array for its image batch"
PENDING = {
}


def _params(names):
    return [pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason=PENDING[n], raises=ValueError)]
                         if n in PENDING else []) for n in names]


def _same(a, b):
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _same(u, v)
        return
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", _params(CALLS))
def test_single_channel_batch_gives_the_same_result(name):
    call = CALLS[name]
    _same(call(X[:, None]), call(X))


@pytest.mark.parametrize("name", _params(["train"]))
def test_train_accepts_single_channel_batches(name):
    kw = dict(hidden=4, epochs=1, batch_size=3, progress=False, n_classes=K, image_shape=(H, W))
    a, b = s.train("nt", XT[:, None], YT, **kw), s.train("nt", XT, YT, **kw)
    np.testing.assert_array_equal(a.W, b.W)


def test_more_than_one_channel_is_refused_by_name():
    with pytest.raises(ValueError, match=r"X must be grey-scale images: \(N, 1, H, W\) has one channel"):
        NET(np.stack([X, X], axis=1))
    with pytest.raises(ValueError, match=r"X must have 1 or 2 or 3 or 4 dimensions"):
        NET(X[:, None, None])
    with pytest.raises(ValueError, match=r"X images must be 4x4"):
        NET(np.zeros((2, 1, 3, 4)))


def test_as_images_is_a_view_and_keeps_other_forms():
    x4 = X[:, None]
    out = as_images("x", x4)
    assert out.shape == (N, H, W) and np.shares_memory(out, x4)
    assert as_images("x", X) is X or np.shares_memory(as_images("x", X), X)
    assert as_images("x", X[0]).shape == (H, W)
    assert as_images("x", np.zeros((0, 1, H, W))).shape == (0, H, W)
    assert as_images("x", X.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match=r"x must have 2 or 3 or 4 dimensions"):
        as_images("x", X.reshape(-1))
