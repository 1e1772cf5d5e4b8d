"""Small stAdv test problems shared by test_stadv.py and test_stadv_engine.py."""
from __future__ import annotations

import numpy as np

import stadv_ref

H = W = 10
K = 4


def _images(n, seed=0):
    """Smooth random images in [0, 1] (sums of Gaussian blobs)."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:H, 0:W]
    X = np.zeros((n, H, W))
    for i in range(n):
        for _ in range(3):
            r0, c0 = rng.uniform(2, H - 3, 2)
            X[i] += np.exp(-((rr - r0) ** 2 + (cc - c0) ** 2) / rng.uniform(1.5, 4))
    return np.clip(X, 0, 1)


def _net(seed=0, m=30):
    """A random 100-m-4 network, scaled so that its logits are of order 1."""
    rng = np.random.default_rng(seed)
    return stadv_ref.OneHiddenLayerNet(rng.standard_normal((m, H * W)) / np.sqrt(H * W),
                                       rng.standard_normal((K, m)) / np.sqrt(m),
                                       c=rng.standard_normal(K) * 0.1, image_shape=(H, W))
