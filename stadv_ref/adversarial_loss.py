r"""The adversarial loss ``l_adv(x, r) = f(g(r; x)) - f(x)`` and its approximations.

* :func:`adv_loss_exact` -- the definition (Section 2.2).
* :func:`adv_loss_path_integral` -- Eq. (4), the path integral
  ``int_0^1 grad(f o g)(z r; x)^T r dz`` by the midpoint rule of Eqs. (7)/(13).
* :func:`adv_loss_linearized` -- the paper's linearisation as printed (Eq. (5)
  with ``Dg(0; x) = diag(x)``, [E8]): ``dsigma(Wx)^T diag(v) W diag(x) r``.
* :func:`adv_loss_first_order` -- the correct first-order term at ``r = 0``:
  one-sided (forward for ``r > 0``, backward for ``r < 0``) image differences.

All take a binary network or, for a multi-class one, ``classes=(i, y)``: the
margin ``f_i - f_y`` of the class pair (appendix 6.6).
"""
from __future__ import annotations

import numpy as np

from ._validate import (
    as_float_array,
    as_images,
    check_choice,
    check_class_pair,
    check_labels,
    check_positive_int,
    check_real,
)
from .backend import get_backend
from .network import OneHiddenLayerNet, relu_derivative
from .transform import PADDINGS, warp, warp_vjp_flow

__all__ = [
    "adv_loss_exact",
    "adv_loss_path_integral",
    "adv_loss_linearized",
    "adv_loss_first_order",
    "flow_gradient",
    "binary_view",
    "cw_margin",
]


def binary_view(net, classes=None):
    """The scalar function the loss is about: ``net`` itself, or ``f_i - f_y``.

    Parameters
    ----------
    net : OneHiddenLayerNet
    classes : tuple (i, y), optional
        Required for multi-class networks: two different integer class indices
        (NumPy integers yes; floats and bools are refused, never truncated).

    Raises
    ------
    TypeError
        ``net`` is not a :class:`OneHiddenLayerNet`; ``classes`` is not a pair of integers.
    ValueError
        ``classes`` given for a binary network, missing for a multi-class one, out of
        range or equal.
    """
    if not isinstance(net, OneHiddenLayerNet):
        raise TypeError(f"net must be a OneHiddenLayerNet, got {type(net).__name__}")
    if net.binary:
        if classes is not None:
            raise ValueError("classes is only for multi-class networks")
        return net
    if classes is None:
        raise ValueError("classes=(i, y) is required for a multi-class network")
    i, y = check_class_pair("classes", classes, net.n_classes)
    return net.pair(i, y)


def _images_and_flow(net, x, flow, name="flow"):
    """Images ``(N, H, W)`` and untied flows ``(N, 2, H, W)`` from the documented forms.

    The rule (no guessing): ``x`` is ``(N, H, W)`` or one image ``(H, W)``; a 3-D flow is
    always ``N`` tied flows ``(N, H, W)`` and a 4-D flow always ``N`` untied flows
    ``(N, 2, H, W)``. So ``(2, H, W)`` with one image is two tied flows, and is refused
    (batch mismatch) rather than read as one untied flow.
    """
    H, W = net.image_shape
    x = as_images("x", x, ndim=(2, 3), dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.shape[1:] != (H, W):
        raise ValueError(f"x must hold {H}x{W} images, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one image (N = 0 is refused, as by warp)")
    flow = as_float_array(name, flow, ndim=(3, 4), dtype=np.float64)
    n = x.shape[0]
    if flow.ndim == 3:  # tied flows r
        if flow.shape[1:] == (H, W) and flow.shape[0] != n:
            hint = " (one untied flow for one image has shape (1, 2, H, W))" if flow.shape[0] == 2 else ""
            raise ValueError(f"{name} holds {flow.shape[0]} tied flows (N, H, W) but x holds {n} image(s){hint}")
        flow = np.stack([flow, flow], axis=1)
    if flow.shape != (n, 2, H, W):
        raise ValueError(
            f"{name} must have shape (N, H, W) (tied) or (N, 2, H, W) matching x {x.shape}, got {flow.shape}"
        )
    return x, flow


def adv_loss_exact(net, x, flow, *, classes=None, padding="zeros"):
    """Exact adversarial loss ``l_adv = f(g(r; x)) - f(x)``.

    Parameters
    ----------
    net : OneHiddenLayerNet
    x : array_like, shape (N, H, W) or (H, W)
    flow : array_like, shape (N, H, W) (tied ``r``) or (N, 2, H, W)
    classes : tuple (i, y), optional
        For multi-class networks: the margin ``f_i - f_y``.
    padding : {"zeros", "border"}

    Returns
    -------
    ndarray, shape (N,)
        A true value of the loss; for any feasible ``(x, r)`` it is a valid
        lower bound on the supremum of Section 3.

    Raises
    ------
    TypeError
        ``net`` is not a :class:`OneHiddenLayerNet`; ``classes`` is not a pair of integers;
        ``x`` or ``flow`` is not a real numeric array.
    ValueError
        ``x`` is not ``(N, H, W)`` (or one ``(H, W)`` image) of the net's image shape with
        ``N >= 1``; ``flow`` is not ``(N, H, W)`` (tied; a 3-D flow is always tied) or
        ``(N, 2, H, W)`` with the same ``N``; NaN/inf; ``classes`` missing, given for a binary
        net, out of range or equal; unknown ``padding``; the net's output overflows.
    """
    f = binary_view(net, classes)
    check_choice("padding", padding, PADDINGS)
    x, flow = _images_and_flow(f, x, flow)
    return f(warp(x, flow, padding)) - f(x)


def flow_gradient(net, x, flow, *, classes=None, padding="zeros"):
    """Gradient of ``f(g(flow; x))`` w.r.t. the flow, shape (N, 2, H, W): the integrand of Eq. (4).

    ``grad_flow f(g) = Dg(flow; x)^T grad f(g(flow; x))`` (Eqs. (1), (5)); right derivatives at
    integer sampling positions (see :mod:`stadv_ref.transform`).

    Raises
    ------
    TypeError, ValueError
        As :func:`adv_loss_exact`.
    """
    f = binary_view(net, classes)
    check_choice("padding", padding, PADDINGS)
    x, flow = _images_and_flow(f, x, flow)
    gx = f.input_gradient(warp(x, flow, padding)).reshape(x.shape)
    return warp_vjp_flow(x, flow, gx, padding)


def adv_loss_path_integral(net, x, flow, n=64, *, classes=None, padding="zeros"):
    """Eq. (4) by the midpoint rule, ``z_i = (2i - 1) / (2n)`` (Eqs. (7), (13)).

    .. math:: l_{adv} = \\int_0^1 \\nabla (f\\circ g)(z r; x)^T r \\, dz
              \\approx \\frac1n \\sum_{i=1}^n \\nabla (f\\circ g)(z_i r; x)^T r

    Parameters
    ----------
    net, x, flow, classes, padding
        As in :func:`adv_loss_exact`.
    n : int
        Number of midpoints; the error vanishes as ``n`` grows (``f o g`` is
        piecewise smooth along the path).

    Returns
    -------
    ndarray, shape (N,)

    Raises
    ------
    TypeError, ValueError
        As :func:`adv_loss_exact`; ``n`` not an integer ``>= 1``.
    """
    n = check_positive_int("n", n)
    f = binary_view(net, classes)
    x, flow = _images_and_flow(f, x, flow)
    be = get_backend()
    x, flow = be.asarray(x), be.asarray(flow)  # the gradients come back as backend arrays
    total = 0.0
    for i in range(1, n + 1):
        z = (2 * i - 1) / (2 * n)
        g = flow_gradient(f, x, z * flow, padding=padding)
        total = total + (g * flow).sum(axis=(1, 2, 3))
    return total / n


def adv_loss_linearized(net, x, r, *, classes=None):
    """The paper's linearisation of ``l_adv`` for a tied flow, as printed ([E8]).

    .. math:: \\tilde l = d\\sigma(W x)^T \\operatorname{diag}(v) W \\operatorname{diag}(x) r

    Parameters
    ----------
    net : OneHiddenLayerNet
    x : array_like, shape (N, H, W) or (H, W)
    r : array_like, shape (N, H, W)
        Tied flow.
    classes : tuple (i, y), optional

    Returns
    -------
    ndarray, shape (N,)

    Raises
    ------
    TypeError, ValueError
        As :func:`adv_loss_exact`, with ``r`` a tied flow ``(N, H, W)`` only; the value overflows.

    Notes
    -----
    It replaces ``Dg(0; x)`` by ``diag(x)``, which is not a derivative of ``g``
    at 0 ([E8]); it is what Theorems 1-2 bound. Use :func:`adv_loss_exact` for
    the true value. Hidden biases ``b`` enter ``dsigma(W x + b)``.
    """
    f = binary_view(net, classes)
    r = as_float_array("r", r, ndim=3, dtype=np.float64)
    x, flow = _images_and_flow(f, x, r, name="r")
    if r.shape != (x.shape[0],) + tuple(f.image_shape):
        raise ValueError(f"r must be a tied flow of shape {(x.shape[0],) + tuple(f.image_shape)}, got {r.shape}")
    X = x.reshape(x.shape[0], -1)
    R = flow[:, 0].reshape(x.shape[0], -1)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
        ds = relu_derivative(X @ f.W.T + f.b)
        out = ((ds * f.V[0]) @ f.W * X * R).sum(axis=1)
    if not np.isfinite(out).all():
        raise ValueError("the linearised loss is not finite (overflow): the net weights or the inputs x, r are too large")
    return out


def adv_loss_first_order(net, x, flow, *, classes=None, padding="zeros"):
    """Correct first-order term of ``l_adv`` at ``flow = 0`` (directional derivative).

    ``d/dt f(g(t flow; x))`` at ``t = 0+``: one-sided image differences, forward
    where the flow component is positive and backward where it is negative
    (the warp is piecewise linear in the flow, [E8]).

    Returns
    -------
    ndarray, shape (N,)

    Raises
    ------
    TypeError, ValueError
        As :func:`adv_loss_exact`.
    """
    f = binary_view(net, classes)
    check_choice("padding", padding, PADDINGS)
    x, flow = _images_and_flow(f, x, flow)
    be = get_backend()
    x, flow = be.asarray(x), be.asarray(flow)  # input_gradient returns backend arrays
    gx = f.input_gradient(x).reshape(x.shape)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="constant" if padding == "zeros" else "edge")
    centre = xp[:, 1:-1, 1:-1]
    fwd_u, bwd_u = xp[:, 1:-1, 2:] - centre, centre - xp[:, 1:-1, :-2]
    fwd_v, bwd_v = xp[:, 2:, 1:-1] - centre, centre - xp[:, :-2, 1:-1]
    du, dv = flow[:, 0], flow[:, 1]
    dg = np.where(du > 0, fwd_u, bwd_u) * du + np.where(dv > 0, fwd_v, bwd_v) * dv
    return (gx * dg).sum(axis=(1, 2))


def cw_margin(net, X, y, kappa=0.0):
    """Carlini-Wagner margin ``max_{i != y} f_i(x) - f_y(x)`` (clipped below at ``-kappa``), appendix 6.6.

    Parameters
    ----------
    net : OneHiddenLayerNet
        Multi-class network.
    X : array_like, shape (N, d) or (N, H, W)
    y : array_like of int, shape (N,)
    kappa : float
        ``>= 0`` (the paper uses 0; ``inf`` returns the raw margin).

    Returns
    -------
    margin : ndarray, shape (N,)
        Positive where the prediction differs from ``y``.
    runner_up : ndarray of int, shape (N,)
        The maximising ``i != y``.

    Raises
    ------
    TypeError
        ``net`` is not a :class:`OneHiddenLayerNet`; ``kappa`` is not a real number;
        ``X`` is not a real numeric array.
    ValueError
        ``net`` is binary; ``X`` has the wrong shape or holds NaN/inf; ``y`` is not integer
        labels of shape ``(N,)`` in ``[0, K)``; ``kappa`` is negative or NaN. ``N = 0``
        gives empty results.
    """
    if not isinstance(net, OneHiddenLayerNet):
        raise TypeError(f"net must be a OneHiddenLayerNet, got {type(net).__name__}")
    if net.binary:
        raise ValueError("cw_margin needs a multi-class network")
    kappa = check_real("kappa", kappa)
    if np.isnan(kappa) or kappa < 0:
        raise ValueError(f"kappa must be >= 0 (inf: no clipping), got {kappa}")
    out = net(X)
    y = check_labels("y", y, out.shape[0], net.n_classes)
    rows = np.arange(out.shape[0])
    other = out.copy()
    other[rows, y] = -np.inf
    runner_up = other.argmax(axis=1)
    margin = other[rows, runner_up] - out[rows, y]
    return np.maximum(margin, -float(kappa)), runner_up
