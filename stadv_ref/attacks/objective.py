r"""The stAdv objective (Xiao et al. 2018): ``L(f) = L_adv(g(f; x)) + tau L_flow(f)``.

* ``g`` the bilinear warp of Eq. (1) (:func:`stadv_ref.warp`);
* ``L_adv`` the Carlini-Wagner margin loss with confidence ``kappa``:
  untargeted ``max(Z_y - max_{i != y} Z_i, -kappa)``, targeted at ``t``
  ``max(max_{i != t} Z_i - Z_t, -kappa)`` (``Z`` the logits);
* ``L_flow = sum_p sum_{q in N(p)} sqrt(||f_p - f_q||^2 + 1e-8)``
  (:func:`stadv_ref.stadv_flow_loss`; not the quadratic Eq. (2), see [E1]).

Conventions. The stAdv paper's text uses the four neighbours ``N(p)`` and says
nothing about the border; the public stAdv code (``rakutentech/stAdv``) uses the
four *diagonal* neighbours (``neighborhood="diagonal"``), mirrors the flow at
the border (``flow_padding="symmetric"``) and clips sampling coordinates
(``warp_padding="border"``). Our defaults follow the paper text and the
project's zero padding (``"4"``, ``"zeros"``, ``"zeros"``); pass
``**STADV_CODE_OPTIONS`` for the code's choices.

:class:`StadvObjective` (and :func:`stadv_objective`) evaluate the objective and its
gradient through the public dispatched functions (:func:`~stadv_ref.warp`,
:func:`~stadv_ref.warp_vjp_flow`, :meth:`~stadv_ref.OneHiddenLayerNet.input_gradient`,
:func:`~stadv_ref.stadv_flow_loss`), so they run on whichever backend is current;
:class:`_KernelObjective` is the same objective through the backend kernels, for the
batched optimiser.
"""
from __future__ import annotations

import numpy as np

from .._validate import as_float_array, as_images, check_budget, check_choice
from ..backend import as_numpy as _np
from ..backend import get_backend
from ..network import OneHiddenLayerNet
from ..smoothness import FLOW_PADDINGS, NEIGHBORHOODS, stadv_flow_loss
from ..transform import PADDINGS, warp, warp_vjp_flow

__all__ = ["StadvObjective", "stadv_objective", "STADV_CODE_OPTIONS"]

#: Options reproducing the public stAdv code's choices (see module docstring).
STADV_CODE_OPTIONS = {"neighborhood": "diagonal", "flow_padding": "symmetric", "warp_padding": "border"}


class StadvObjective:
    """The stAdv objective ``L_adv + tau * L_flow`` for a batch of images.

    Parameters
    ----------
    net : OneHiddenLayerNet
        Multi-class network (``K >= 2`` logits).
    x : array_like, shape (N, H, W)
        Images.
    y : array_like of int, shape (N,)
        True labels.
    tau : float
        Flow-loss weight ``tau >= 0``.
    target : array_like of int, shape (N,), optional
        Target classes (targeted attack); ``None`` for untargeted.
    kappa : float
        CW confidence ``>= 0``.
    neighborhood : {"4", "diagonal", "8"}
    flow_padding : {"zeros", "symmetric"}
    warp_padding : {"zeros", "border"}
    flow_eps : float
        The ``1e-8`` under the square roots of ``L_flow``.
    """

    def __init__(self, net, x, y, tau, *, target=None, kappa=0.0, neighborhood="4",
                 flow_padding="zeros", warp_padding="zeros", flow_eps=1e-8):
        if not isinstance(net, OneHiddenLayerNet):
            raise TypeError(f"net must be a OneHiddenLayerNet, got {type(net).__name__}")
        if net.binary:
            raise ValueError("net must be a multi-class network (stAdv uses the CW margin over logits)")
        H, W = net.image_shape
        x = as_images("x", x, ndim=(2, 3), dtype=np.float64)
        if x.ndim == 2:
            if x.shape == (H, W):
                x = x[None]
            else:
                x = x.reshape(x.shape[0], H, W) if x.shape[1] == H * W else x
        if x.ndim != 3 or x.shape[1:] != (H, W):
            raise ValueError(f"x must hold {H}x{W} images, shape (N, {H}, {W}); got {x.shape}")
        N = x.shape[0]
        if N < 1:
            raise ValueError("x must hold at least one image")
        self.y = self._labels("y", y, N, net.n_classes)
        self.target = None if target is None else self._labels("target", target, N, net.n_classes)
        if self.target is not None and np.any(self.target == self.y):
            raise ValueError("target must differ from y for every image")
        self.tau = check_budget("tau", tau)
        self.kappa = check_budget("kappa", kappa)
        self.neighborhood = check_choice("neighborhood", neighborhood, tuple(NEIGHBORHOODS))
        self.flow_padding = check_choice("flow_padding", flow_padding, FLOW_PADDINGS)
        self.warp_padding = check_choice("warp_padding", warp_padding, PADDINGS)
        self.flow_eps = check_budget("flow_eps", flow_eps, allow_zero=False)
        self.net, self.x = net, x
        self.shape = (N, 2, H, W)

    @staticmethod
    def _labels(name, a, N, K):
        a = np.asarray(a)
        if a.ndim == 0:
            a = np.full(N, a)
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must be integer labels, got dtype {a.dtype}")
        if a.shape != (N,):
            raise ValueError(f"{name} must hold one label per image of x: x has {N} images, "
                             f"{name} has shape {a.shape}")
        if a.min() < 0 or a.max() >= K:
            raise ValueError(f"{name} must be in [0, {K})")
        return a.astype(np.int64)

    def margin_terms(self, logits, idx):
        """``L_adv``, its logit weights and the success flags for logits ``(n, K)``."""
        n = logits.shape[0]
        rows = np.arange(n)
        good = self.y[idx] if self.target is None else self.target[idx]
        other = logits.copy()
        other[rows, good] = -np.inf
        r = other.argmax(axis=1)
        if self.target is None:
            raw = logits[rows, good] - logits[rows, r]          # Z_y - max_{i!=y} Z_i
            w_pos, w_neg = good, r
            success = logits.argmax(axis=1) != good
        else:
            raw = logits[rows, r] - logits[rows, good]          # max_{i!=t} Z_i - Z_t
            w_pos, w_neg = r, good
            success = logits.argmax(axis=1) == good
        ladv = np.maximum(raw, -self.kappa)
        active = raw > -self.kappa
        weights = np.zeros_like(logits)
        weights[rows[active], w_pos[active]] += 1.0
        weights[rows[active], w_neg[active]] -= 1.0
        return ladv, weights, success

    def __call__(self, flow, idx=None, *, need_grad=True):
        """Objective values (and gradients) for the flows of images ``idx``.

        Parameters
        ----------
        flow : ndarray, shape (n, 2, H, W)
        idx : ndarray of int, shape (n,), optional
            Which images (default all).

        Returns
        -------
        dict
            ``objective``, ``adv_loss``, ``flow_loss``, ``success``, ``pred``,
            ``x_adv`` (each per image) and ``grad`` (n, 2, H, W) when requested.
        """
        idx = np.arange(self.shape[0]) if idx is None else np.asarray(idx)
        x = self.x[idx]
        xa = warp(x, flow, self.warp_padding)
        logits = _np(self.net(xa))
        ladv, weights, success = self.margin_terms(logits, idx)
        lf, gf = stadv_flow_loss(flow, self.flow_eps, self.neighborhood, self.flow_padding)
        lf = _np(lf)
        out = {
            "objective": ladv + self.tau * lf,
            "adv_loss": ladv,
            "flow_loss": lf,
            "success": success,
            "pred": logits.argmax(axis=1),
            "x_adv": _np(xa),
        }
        if need_grad:
            gx = self.net.input_gradient(xa, weights)
            gx = gx.reshape(x.shape)
            g = _np(warp_vjp_flow(x, flow, gx, self.warp_padding)) + self.tau * _np(gf)
            out["grad"] = g
        return out


def stadv_objective(net, x, y, flow, tau, **options):
    """Value and gradient of the stAdv objective ``L_adv + tau * L_flow`` at ``flow``.

    Parameters
    ----------
    net, x, y, tau
        As in :func:`stadv_attack`.
    flow : array_like, shape (N, 2, H, W)
    **options
        ``target``, ``kappa``, ``neighborhood``, ``flow_padding``,
        ``warp_padding``, ``flow_eps`` (see :class:`StadvObjective`).

    Returns
    -------
    values : ndarray, shape (N,)
    grad : ndarray, shape (N, 2, H, W)
    """
    obj = StadvObjective(net, x, y, tau, **options)
    flow = as_float_array("flow", flow, ndim=4, dtype=np.float64)
    if flow.shape != obj.shape:
        raise ValueError(f"flow must have shape {obj.shape}, got {flow.shape}")
    out = obj(flow)
    return out["objective"], out["grad"]


class _KernelObjective:
    """The batched engine's objective: :class:`StadvObjective` through the backend kernels.

    Same objective, gradient and operation order as :meth:`StadvObjective.__call__`
    (warp of Eq. (1), network, CW margin, ``L_flow``, warp VJP), but in the working
    precision ``dtype`` (float32 or float64), with the inputs validated once (by
    :class:`StadvObjective`), the backend and the network weights fetched once, the two
    network passes as batched GEMMs (``Z = X W^T + b``, logits ``relu(Z) V^T + c``;
    backward ``((w V) * [Z > 0]) W``, the pre-activations reused) and the warp and its
    flow VJP through the backend's kernels. Images ``(N, 1, H, W)`` stay on the backend.
    Flows are flat, ``(n, 2HW)``, as the engine (:mod:`.engine`) holds them.
    """

    def __init__(self, obj, dtype=np.float64):
        be = get_backend()
        net = obj.net
        self.obj, self.be, self.dtype = obj, be, np.dtype(dtype)
        self.W, self.b, self.V, self.c = (be.asarray(np.ascontiguousarray(a, dtype=self.dtype))
                                          for a in (net.W, net.b, net.V, net.c))
        N, _, H, W = obj.shape
        self.shape = obj.shape
        self.x4 = be.asarray(np.ascontiguousarray(obj.x.reshape(N, 1, H, W), dtype=self.dtype))
        self.N, self.H, self.Wd = N, H, W

    def __call__(self, flow, idx):
        """``objective`` (float64), ``success`` and ``grad`` (n, 2HW) for flows ``(n, 2HW)`` of images ``idx``."""
        be, obj = self.be, self.obj
        n = flow.shape[0]
        H, W = self.H, self.Wd
        x4 = self.x4 if n == self.N else self.x4[idx]
        fl = be.asarray(flow.reshape(n, 2, H, W))
        xa = be.warp(x4, fl, obj.warp_padding)
        Z = xa.reshape(n, H * W) @ self.W.T
        Z += self.b
        logits = be.xp.maximum(Z, 0) @ self.V.T
        logits += self.c
        ladv, weights, success = obj.margin_terms(np.asarray(be.to_numpy(logits)), idx)
        G = be.asarray(weights) @ self.V
        G *= Z > 0                                           # ReLU derivative 0 at 0, as net_input_grad
        gx = (G @ self.W).reshape(n, 1, H, W)
        g = np.asarray(be.to_numpy(be.warp_vjp_flow(x4, fl, gx, obj.warp_padding))).reshape(n, -1)
        lf, gf = be.stadv_flow_loss(fl, obj.flow_eps, obj.neighborhood, obj.flow_padding)
        g += obj.tau * np.asarray(be.to_numpy(gf)).reshape(n, -1)
        value = ladv.astype(np.float64) + obj.tau * np.asarray(be.to_numpy(lf), dtype=np.float64)
        return {"objective": value, "success": success, "grad": g}
