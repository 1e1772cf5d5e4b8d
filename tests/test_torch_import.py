"""stadv_ref.from_torch (issue #20, deliverable 6): PyTorch ``Flatten -> Linear -> ReLU -> Linear`` models.

The imported network's logits equal torch's forward (float32 to 1e-5, float64 to 1e-12) with and without
an input normalisation folded into the first layer; every unsupported module is refused naming its layer.
Skips without torch (``pip install torch==2.13.0``); the missing-torch message is tested with torch hidden.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import stadv_ref as s

torch = pytest.importorskip("torch", reason="from_torch needs torch (pip install torch==2.13.0)")
nn = torch.nn

H, W, M, K = 5, 4, 7, 3


class Normalize(nn.Module):
    """The usual hand-written normalisation: per-channel buffers ``(C, 1, 1)``."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class NotNormalize(Normalize):
    def forward(self, x):
        return x * self.std + self.mean


def mlp(d=H * W, m=M, k=K, seed=0, flatten=True):
    torch.manual_seed(seed)
    layers = [nn.Flatten()] if flatten else []
    return nn.Sequential(*layers, nn.Linear(d, m), nn.ReLU(), nn.Linear(m, k)).eval()


def images(n=64, seed=1):
    return torch.rand(n, 1, H, W, generator=torch.Generator().manual_seed(seed))


def assert_same_logits(net, model, x, *, flat=False):
    """float32: our forward vs torch's; float64: the folding is exact up to rounding."""
    with torch.no_grad():
        ref32 = model(x.reshape(len(x), -1) if flat else x).numpy()
        ref64 = model.double()(x.double().reshape(len(x), -1) if flat else x.double()).numpy()
    model.float()
    X = x.numpy()[:, 0]
    ours32 = net(X)
    assert ours32.dtype == np.float32
    np.testing.assert_allclose(ours32.reshape(ref32.shape), ref32, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net(X.astype(np.float64)).reshape(ref64.shape), ref64, rtol=1e-12, atol=1e-12)


def test_plain_mlp_matches_torch():
    model = mlp()
    net = s.from_torch(model, image_shape=(H, W))
    assert (net.m, net.d, net.n_classes, net.image_shape) == (M, H * W, K, (H, W))
    assert_same_logits(net, model, images())


@pytest.mark.parametrize("mean, std", [(0.1307, 0.3081), ([0.5], [0.25]), (np.linspace(0, 0.5, H * W),
                                                                          np.linspace(0.2, 1.0, H * W))])
def test_mean_std_arguments_are_folded_exactly(mean, std):
    model = mlp(seed=2)
    net = s.from_torch(model, image_shape=(H, W), mean=mean, std=std)
    m = torch.tensor(np.asarray(mean, dtype=np.float32)).reshape(-1, 1, 1) if np.size(mean) == 1 else \
        torch.tensor(np.asarray(mean, dtype=np.float32)).reshape(1, H, W)
    sd = torch.tensor(np.asarray(std, dtype=np.float32)).reshape(m.shape)
    x = images()
    with torch.no_grad():
        ref = model((x - m) / sd).numpy()
    np.testing.assert_allclose(net(x.numpy()[:, 0]), ref, rtol=1e-5, atol=1e-5)
    W0 = model[1].weight.detach().double().numpy()
    b0 = model[1].bias.detach().double().numpy()
    mean_px, std_px = np.broadcast_to(mean, (H * W,)), np.broadcast_to(std, (H * W,))
    np.testing.assert_allclose(net.W, W0 / std_px, rtol=1e-15)
    np.testing.assert_allclose(net.b, b0 - W0 @ (mean_px / std_px), rtol=1e-12, atol=1e-15)


def test_normalisation_module_is_folded():
    model = nn.Sequential(Normalize([0.1307], [0.3081]), mlp(seed=3)).eval()
    net = s.from_torch(model, image_shape=(H, W))
    assert_same_logits(net, model, images())


def test_nested_identity_dropout_binary_and_flat_inputs():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Identity(), nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(H * W, M)),
                          nn.ReLU(), nn.Dropout(0.2), nn.Linear(M, 1)).eval()
    net = s.from_torch(model, image_shape=(H, W))
    assert net.binary
    assert_same_logits(net, model, images())
    flat = mlp(d=16, seed=5, flatten=False)  # no Flatten: reads (N, d); square image_shape by default
    net = s.from_torch(flat)
    assert net.image_shape == (4, 4)
    x = torch.rand(8, 1, 4, 4)
    with torch.no_grad():
        np.testing.assert_allclose(net(x.numpy()), flat(x.reshape(8, 16)).numpy(), rtol=1e-5, atol=1e-5)


def test_imported_net_is_a_full_network():
    """The result is an ordinary network: it saves, loads and certifies like any other."""
    net = s.from_torch(mlp(seed=6), image_shape=(H, W), mean=0.5, std=0.5)
    x = images(4).numpy()[:, 0]
    y = net.predict(x)
    result = s.certify(net, x, y, 0.01, method="spectral", cache=False, progress=False)
    assert len(result.certified) == 4


class CustomMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(H * W, M), nn.Linear(M, K)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class DoubledLinear(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


def _seq(*layers):
    return nn.Sequential(*layers)


L1, L2, L3 = (lambda: nn.Linear(H * W, M)), (lambda: nn.Linear(M, K)), (lambda: nn.Linear(M, M))
BAD = {
    "conv": (lambda: _seq(nn.Conv2d(1, 1, 3, padding=1), nn.Flatten(), L1(), nn.ReLU(), L2()),
             r"layer '0' \(Conv2d\): a convolution"),
    "tanh": (lambda: _seq(nn.Flatten(), L1(), nn.Tanh(), L2()), r"layer '2' \(Tanh\): an activation other than ReLU"),
    "batchnorm": (lambda: _seq(nn.Flatten(), nn.BatchNorm1d(H * W), L1(), nn.ReLU(), L2()),
                  r"layer '1' \(BatchNorm1d\): a normalisation layer"),
    "deeper": (lambda: _seq(nn.Flatten(), L1(), nn.ReLU(), L3(), nn.ReLU(), L2()),
               r"layer '4' \(ReLU\): a ReLU after the second linear layer: deeper"),
    "third linear": (lambda: _seq(nn.Flatten(), L1(), nn.ReLU(), L3(), L2()), r"layer '4' \(Linear\): a third"),
    "no relu": (lambda: _seq(nn.Flatten(), L1(), L2()), r"layer '2' \(Linear\): the second linear layer must follow"),
    "one layer": (lambda: _seq(nn.Flatten(), L1()), r"Sequential has 1 linear layer\(s\) and 0 ReLU"),
    "relu first": (lambda: _seq(nn.Flatten(), nn.ReLU(), L1(), L2()), r"layer '1' \(ReLU\): ReLU before"),
    "flatten late": (lambda: _seq(L1(), nn.Flatten(), nn.ReLU(), L2()), r"layer '1' \(Flatten\): Flatten is only"),
    "flatten axes": (lambda: _seq(nn.Flatten(2), L1(), nn.ReLU(), L2()), r"start_dim=1, end_dim=-1"),
    "custom forward": (lambda: CustomMLP(), r"CustomMLP is not an nn.Sequential"),
    "linear subclass": (lambda: _seq(nn.Flatten(), DoubledLinear(H * W, M), nn.ReLU(), L2()),
                        r"layer '1' \(DoubledLinear\)"),
    "chain mismatch": (lambda: _seq(nn.Flatten(), L1(), nn.ReLU(), nn.Linear(M + 1, K)),
                       r"layer '3' \(Linear\): 8 inputs do not match the first layer's 7"),
    "not normalize": (lambda: _seq(NotNormalize([0.5], [0.5]), nn.Flatten(), L1(), nn.ReLU(), L2()),
                      r"layer '0' \(NotNormalize\): has mean and std, but does not compute"),
    "softmax": (lambda: _seq(nn.Flatten(), L1(), nn.ReLU(), L2(), nn.Softmax(1)),
                r"layer '4' \(Softmax\): an activation other than ReLU after the second"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_unsupported_modules_are_refused_naming_the_layer(case):
    build, pattern = BAD[case]
    with pytest.raises(ValueError, match=pattern) as info:
        s.from_torch(build(), image_shape=(H, W))
    assert "from_torch supports only nn.Sequential(nn.Flatten(), nn.Linear(d, m), nn.ReLU(), nn.Linear(m, K))" in \
        str(info.value)


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(mean=0.5), ValueError, r"mean: the module normalises its input already \(layer '0' \(Normalize\)\)"),
    (dict(std=[0.0]), ValueError, r"std must be > 0"),
    (dict(std=-1.0), ValueError, r"std must be > 0"),
    (dict(mean=np.zeros(3)), ValueError, r"mean must be a scalar, one value for the single channel"),
    (dict(mean=np.zeros((1, 1, 1, 1))), ValueError, r"mean must have 0 or 1 or 2 or 3 dimensions"),
    (dict(std=np.nan), ValueError, r"std contains NaN"),
    (dict(mean="a"), TypeError, r"mean must be a numeric array"),
    (dict(image_shape=(4, 4)), ValueError, r"image_shape \(4, 4\) does not multiply to the first layer's d = 20"),
    (dict(image_shape=None), ValueError, r"image_shape: the first layer's d = 20 inputs are not a square"),
    (dict(image_shape=(5.0, 4)), TypeError, r"image_shape must be an integer"),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, pattern):
    normalised = "already" in pattern
    model = nn.Sequential(Normalize([0.5], [0.5]), mlp()) if normalised else mlp()
    kwargs = {"image_shape": (H, W), **kwargs}
    with pytest.raises(error, match=pattern):
        s.from_torch(model, **kwargs)


@pytest.mark.parametrize("module", [None, 3, "model.pt", np.eye(3), {"0.weight": 1}])
def test_a_non_module_is_a_type_error(module):
    with pytest.raises(TypeError, match=r"module must be a torch.nn.Module"):
        s.from_torch(module)


def test_missing_torch_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match=r"from_torch needs PyTorch: pip install torch==2\.13\.0 \(or: pip install "
                                          r".*\[torch\]"):
        s.from_torch(object())


def test_importing_stadv_ref_does_not_import_torch():
    code = "import sys, stadv_ref; stadv_ref.from_torch; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert "from_torch" in s.__all__
