"""One-hidden-layer ReLU network reference kernels: ``f(x) = V relu(W x + b) + c`` and its input gradient.

Canonical arrays: ``W (m, d)``, ``b (m,)``, ``V (K, m)``, ``c (K,)``, inputs ``X (N, d)``.
:class:`stadv_ref.network.OneHiddenLayerNet` validates and dispatches.
"""
from __future__ import annotations

import numpy as np

__all__ = ["relu_derivative", "net_forward_reference", "net_input_grad_reference"]


def relu_derivative(z):
    """``dsigma(z)``: 1 where ``z > 0`` and 0 elsewhere (sub-gradient 0 at 0)."""
    return (z > 0).astype(z.dtype)


def net_forward_reference(W, b, V, c, X):
    """Reference kernel: ``Z = X W^T + b``, ``out = relu(Z) V^T + c``."""
    Z = X @ W.T + b
    return Z, np.maximum(Z, 0) @ V.T + c


def net_input_grad_reference(W, b, V, X, weights):
    """Reference kernel: ``grad_x sum_k weights[n,k] f_k(x_n) = ((weights V) * dsigma(Z)) W``."""
    Z = X @ W.T + b
    return ((weights @ V) * relu_derivative(Z)) @ W
