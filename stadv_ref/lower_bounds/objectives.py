r"""What the lower-bound attacks maximise, and one evaluation of Eqs. (7)-(8) / (13)-(14) at a pair.

Objectives (what ``f`` is):

* :class:`NetObjective` -- a binary one-hidden-layer network ``f(x) = v^T relu(W x + b) + c``
  (Section 3, Eq. (5)), or a fixed class pair ``f_i - f_y`` of a multi-class one (appendix 6.6);
* :class:`MulticlassObjective` -- the CW margin with ``kappa = 0``: each step works on
  ``f_i - f_y`` for the current runner-up ``i`` (appendix 6.6, [E14]);
* :class:`LinearObjective` -- a linear classifier ``f(x) = v^T x + c`` (appendix 6.4).

The attacks alternate two updates on a pair ``(x, r)`` with ``||x||_inf <= 1`` and
``||M r|| <= eps``; :func:`probe` evaluates both at one pair:

* **x-update** (Eqs. (7)/(13)): with the ReLU pattern ``dsigma`` frozen at the
  current ``x``, the midpoint estimate

  .. math:: \frac1n \sum_{i=1}^n \nabla f(g(r^{(i)}; x))^T\, Dg(r^{(i)}; x)\, r,
            \qquad r^{(i)} = \tfrac{2i-1}{2n} r

  is linear in ``x`` (the warp is linear in ``x``); its coefficients are
  ``alpha = (1/n) sum_i J_i^T grad_i`` with ``J_i x = Dg(r^{(i)}; x) r``
  (:func:`~.flows.partial_adjoint`), and the update is ``x <- sign(alpha)``.
* **r-update** (Eqs. (8)/(14)): ``r <- eps M^-1 pi_2(M^-1 s)`` with
  ``s = (1/n) sum_i Dg(r^{(i)}; x)^T grad_i`` (:func:`~.flows.ellipsoid_argmax`).

:func:`linearized` is the paper's ``l~`` ([E8]) and :func:`theorem_flow` the Theorem
flow of Eqs. (6)/(12). ``Dg`` of a tied flow is ``dx~/ddu + dx~/ddv`` (``"correct"``)
or the printed ``du`` term alone (``"paper"``, [E6]).
"""
from __future__ import annotations

import numpy as np

from .._validate import check_class_index, check_class_pair
from ..backend import as_numpy as _np
from ..transform import tied_jacobian_diag, warp, warp_vjp_flow
from .flows import ellipsoid_argmax, midpoint_flows, partial_adjoint

__all__ = ["NetObjective", "MulticlassObjective", "LinearObjective", "probe", "linearized", "theorem_flow"]


class NetObjective:
    """A binary network, or a fixed class pair ``f_i - f_y`` (appendix 6.6).

    Raises
    ------
    TypeError
        ``classes`` is not a pair of integer class indices (floats and bools are refused, not truncated).
    ValueError
        ``classes`` out of ``[0, K)`` or ``i == y``; ``classes`` given for a binary network.
    """

    multiclass = False

    def __init__(self, net, classes=None):
        self.net = net
        self.classes = None if classes is None else check_class_pair("classes", classes, net.n_classes)
        self.f = net if classes is None else net.pair(*self.classes)
        self.shape = net.image_shape

    def select(self, x_adv):
        """Choose the class pair for the next step (no-op for a binary objective)."""

    @property
    def pair(self):
        return self.classes

    def grad(self, X):
        """``grad f`` at images ``X (N, H, W)``, shape (N, H, W)."""
        return _np(self.f.input_gradient(X)).reshape(X.shape)

    def exact(self, x, flow4):
        """True ``l_adv`` of one pair; returns ``(value, classes)``."""
        xa = _np(warp(x[None], flow4[None]))
        val = float(_np(self.f(xa))[0] - _np(self.f(x[None]))[0])
        return val, self.classes


class MulticlassObjective:
    """CW margin with ``kappa = 0`` (appendix 6.6): each step uses ``f_i - f_y`` for the
    current runner-up ``i`` at the adversarial input ([E14]: ascent on the margin).

    Raises
    ------
    TypeError
        ``y`` is not an integer class index (floats and bools are refused, not truncated).
    ValueError
        ``y`` out of ``[0, K)``.
    """

    multiclass = True

    def __init__(self, net, y):
        self.net = net
        self.y = check_class_index("y", y, net.n_classes)
        self.shape = net.image_shape
        self._pairs = {}
        self.i = None
        self.f = None

    def select(self, x_adv):
        out = _np(self.net(x_adv[None]))[0].copy()
        out[self.y] = -np.inf
        i = int(np.argmax(out))
        if i not in self._pairs:
            self._pairs[i] = self.net.pair(i, self.y)
        self.i, self.f = i, self._pairs[i]

    @property
    def pair(self):
        return None if self.i is None else (self.i, self.y)

    def grad(self, X):
        return _np(self.f.input_gradient(X)).reshape(X.shape)

    def exact(self, x, flow4):
        """Largest margin change ``max_{i != y} (f_i - f_y)(g) - (f_i - f_y)(x)``."""
        xa = _np(warp(x[None], flow4[None]))
        out_a = _np(self.net(xa))[0]
        out_x = _np(self.net(x[None]))[0]
        change = (out_a - out_a[self.y]) - (out_x - out_x[self.y])
        change[self.y] = -np.inf
        i = int(np.argmax(change))
        return float(change[i]), (i, self.y)


class LinearObjective:
    """Linear classifier ``f(x) = v^T x + c`` (appendix 6.4)."""

    multiclass = False
    pair = None

    def __init__(self, v_img):
        self.v = v_img
        self.shape = v_img.shape

    def select(self, x_adv):
        pass

    def grad(self, X):
        return np.broadcast_to(self.v, X.shape)

    def exact(self, x, flow4):
        """``v^T (g(r; x) - x)``."""
        xa = _np(warp(x[None], flow4[None]))[0]
        return float((self.v * (xa - x)).sum()), None


def probe(obj, x, flow2, n, tied, jacobian, want_alpha=True):
    """Midpoint machinery at ``(x, flow)`` with ``dsigma`` frozen at ``x``.

    Returns
    -------
    alpha : ndarray (H, W) or None
        Coefficients of ``x`` in Eq. (7)/(13).
    s : ndarray (H, W) tied or (2, H, W) untied
        ``(1/n) sum_i Dg(r^(i); x)^T grad_i`` (the direction of Eq. (8)/(14)).
    midpoint : float
        Eq. (7)/(13): ``s^T r`` ( = ``alpha^T x``).
    """
    flows = midpoint_flows(flow2, n)
    x_rep = np.broadcast_to(x, (n,) + x.shape).copy()
    X_mid = _np(warp(x_rep, flows))
    G = obj.grad(X_mid)
    if tied:
        r = flow2[0]
        jac = _np(tied_jacobian_diag(x_rep, flows[:, 0], variant=jacobian))
        s = (jac * G).mean(axis=0)
        mid = float((s * r).sum())
    else:
        s = _np(warp_vjp_flow(x_rep, flows, G)).mean(axis=0)
        mid = float((s * flow2).sum())
    alpha = None
    if want_alpha:
        axes = (0,) if (tied and jacobian == "paper") else (0, 1)
        alpha = np.zeros(x.shape)
        for ax in axes:
            w = G * flow2[ax][None]
            alpha += partial_adjoint(flows, w, ax).mean(axis=0)
    return alpha, s, mid


def linearized(obj, x, flow2, tied):
    """The paper's ``l~ = grad f(x)^T diag(x) r`` ([E8]); untied: ``(l~(du) + l~(dv)) / 2``."""
    gx = obj.grad(x[None])[0]
    if tied:
        return float((gx * x * flow2[0]).sum())
    return float(0.5 * (gx * x * (flow2[0] + flow2[1])).sum())


def theorem_flow(obj, x, eps, tied):
    """Eqs. (6)/(12): ``r* = eps M^-1 pi_2(M^-1 a)``, ``a = diag(x) grad f(x)``.

    Untied: ``(r*, r*) / sqrt(2)`` at budget ``eps``, the maximiser of the symmetric
    extension ``(l~(du) + l~(dv)) / 2``; its value is ``eps ||M^-1 a|| / sqrt(2)``.

    Returns ``(flow2 (2, H, W), value)``.
    """
    a = x * obj.grad(x[None])[0]
    r, val = ellipsoid_argmax(a, eps)
    if tied:
        return np.stack([r, r]), val
    return np.stack([r, r]) / np.sqrt(2.0), val / np.sqrt(2.0)
