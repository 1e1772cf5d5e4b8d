r"""The stAdv spatial-transformation attack (Xiao et al. 2018), used in Section 4.2.

For an image ``x`` with label ``y`` the attack looks for an untied flow
``f = (du, dv)`` minimising

.. math:: L(f) = L_{adv}(g(f; x)) + \tau L_{flow}(f),

* ``g`` the bilinear warp of Eq. (1) (:func:`stadv_ref.warp`);
* ``L_adv`` the Carlini-Wagner margin loss with confidence ``kappa``:
  untargeted ``max(Z_y - max_{i != y} Z_i, -kappa)``, targeted at ``t``
  ``max(max_{i != t} Z_i - Z_t, -kappa)`` (``Z`` the logits);
* ``L_flow = sum_p sum_{q in N(p)} sqrt(||f_p - f_q||^2 + 1e-8)``
  (:func:`stadv_ref.stadv_flow_loss`).

Conventions. The stAdv paper's text uses the four neighbours ``N(p)`` and says
nothing about the border; the public stAdv code (``rakutentech/stAdv``) uses the
four *diagonal* neighbours (``neighborhood="diagonal"``), mirrors the flow at
the border (``flow_padding="symmetric"``) and clips sampling coordinates
(``warp_padding="border"``). Our defaults follow the paper text and the
project's zero padding (``"4"``, ``"zeros"``, ``"zeros"``); pass
``**STADV_CODE_OPTIONS`` for the code's choices.

Two optimisers minimise the same objective:

* ``method="lbfgs-b"`` -- the reference: :func:`scipy.optimize.minimize`
  (``method="L-BFGS-B"``, unbounded) per image, as in stAdv;
* ``method="batched"`` (default) -- one vectorised objective/gradient for the
  whole batch and a per-example L-BFGS (two-loop recursion, per-example
  backtracking Armijo line search) in NumPy.

Both return, per image, the successful point with the smallest objective among
all points they evaluated, if any (so an optimiser that oscillates across the
decision boundary still reports its adversarial example), else the optimiser's
final iterate. The
objective and its gradient go through the public dispatched functions
(:func:`~stadv_ref.warp`, :func:`~stadv_ref.warp_vjp_flow`,
:meth:`~stadv_ref.OneHiddenLayerNet.input_gradient`, :func:`~stadv_ref.stadv_flow_loss`),
so the attack runs on whichever backend is current.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validate import as_float_array, check_budget, check_choice, check_positive_int
from ..backend import get_backend
from ..network import OneHiddenLayerNet
from ..operators import smoothness_norm
from ..smoothness import FLOW_PADDINGS, NEIGHBORHOODS, flow_tv, stadv_flow_loss
from ..transform import PADDINGS, warp, warp_vjp_flow

__all__ = [
    "StadvResult",
    "StadvObjective",
    "stadv_objective",
    "stadv_attack",
    "STADV_CODE_OPTIONS",
    "METHODS",
]

METHODS = ("batched", "lbfgs-b")

#: Options reproducing the public stAdv code's choices (see module docstring).
STADV_CODE_OPTIONS = {"neighborhood": "diagonal", "flow_padding": "symmetric", "warp_padding": "border"}


def _np(a):
    return np.asarray(get_backend().to_numpy(a))


# ---------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------
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
        x = as_float_array("x", x, ndim=(2, 3), dtype=np.float64)
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
        if a.shape != (N,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be integer labels of shape ({N},), got shape {a.shape} dtype {a.dtype}")
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


# ---------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------
@dataclass
class StadvResult:
    """Result of :func:`stadv_attack` (one entry per image).

    Attributes
    ----------
    x_adv : ndarray, shape (N, H, W)
        Adversarial (warped) images ``g(flow; x)``.
    flow : ndarray, shape (N, 2, H, W)
        The flows (``flow[:, 0] = du``, ``flow[:, 1] = dv``).
    success : ndarray of bool, shape (N,)
        Prediction on ``x_adv`` differs from ``y`` (untargeted) / equals the target.
    pred : ndarray of int, shape (N,)
        Prediction on ``x_adv``.
    objective, adv_loss, flow_loss : ndarray, shape (N,)
        ``L_adv + tau L_flow``, ``L_adv`` and ``L_flow`` at the returned flow.
    l_diff : ndarray, shape (N,)
        Eq. (2) quadratic smoothness :func:`stadv_ref.flow_tv` of each flow.
    flow_norm : ndarray, shape (N,)
        Budget norm ``||M r||`` of Eq. (3) (:func:`stadv_ref.smoothness_norm`).
    n_iter, n_eval : ndarray of int, shape (N,)
        Optimiser iterations and objective evaluations per image.
    tau : float
    method : str
    options : dict
    """

    x_adv: np.ndarray
    flow: np.ndarray
    success: np.ndarray
    pred: np.ndarray
    objective: np.ndarray
    adv_loss: np.ndarray
    flow_loss: np.ndarray
    l_diff: np.ndarray
    flow_norm: np.ndarray
    n_iter: np.ndarray
    n_eval: np.ndarray
    tau: float
    method: str
    options: dict = field(default_factory=dict)

    @property
    def success_rate(self):
        """Fraction of successful images."""
        return float(np.mean(self.success))


class _Best:
    """Per image, the successful evaluated point with the lowest objective (if any)."""

    def __init__(self, n, shape):
        self.flow = np.zeros((n,) + shape)
        self.obj = np.full(n, np.inf)
        self.ok = np.zeros(n, dtype=bool)

    def update(self, idx, flow, out):
        better = out["success"] & (out["objective"] < self.obj[idx])
        j = idx[better]
        self.flow[j] = flow[better]
        self.obj[j] = out["objective"][better]
        self.ok[j] = True

    def result(self, final_flow):
        """Best successful point where there is one, else the optimiser's final iterate."""
        out = final_flow.copy()
        out[self.ok] = self.flow[self.ok]
        return out


# ---------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------
def _reference_lbfgsb(obj, max_iter, memory, progress):
    """Per-image ``scipy.optimize.minimize(method="L-BFGS-B")`` (the stAdv reference)."""
    from scipy.optimize import minimize
    from tqdm.auto import tqdm

    N, _, H, W = obj.shape
    best = _Best(N, (2, H, W))
    final = np.zeros((N, 2, H, W))
    n_iter = np.zeros(N, dtype=np.int64)
    n_eval = np.zeros(N, dtype=np.int64)
    for i in tqdm(range(N), desc="stAdv L-BFGS-B", disable=not progress, leave=False):
        idx = np.array([i])

        def fun(z):
            f = z.reshape(1, 2, H, W)
            out = obj(f, idx)
            best.update(idx, f, out)
            return float(out["objective"][0]), out["grad"].reshape(-1)

        res = minimize(fun, np.zeros(2 * H * W), jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "maxcor": memory})
        n_iter[i], n_eval[i] = res.nit, res.nfev
        final[i] = res.x.reshape(2, H, W)
    return best.result(final), n_iter, n_eval


class _KernelObjective:
    """The batched optimiser's objective: :class:`StadvObjective` through the backend kernels.

    Same objective, gradient and operation order as :meth:`StadvObjective.__call__`
    (warp of Eq. (1), network, CW margin, ``L_flow``, warp VJP), but the
    inputs are validated once (by :class:`StadvObjective`), the backend and the
    network weights are fetched once, and the hidden pre-activations of the
    forward pass are reused for the input gradient (two GEMMs per evaluation
    instead of three). Images ``(N, 1, H, W)`` stay on the backend.
    """

    def __init__(self, obj):
        be = get_backend()
        net = obj.net
        self.obj, self.be = obj, be
        self.W, self.b, self.V, self.c = (be.asarray(np.ascontiguousarray(a, dtype=np.float64))
                                          for a in (net.W, net.b, net.V, net.c))
        N, _, H, W = obj.shape
        self.x4 = be.asarray(np.ascontiguousarray(obj.x.reshape(N, 1, H, W)))
        self.N, self.H, self.Wd = N, H, W

    def __call__(self, flow, idx):
        """``objective``, ``success`` and ``grad`` (n, 2HW) for flows ``(n, 2HW)`` of images ``idx``."""
        be, obj = self.be, self.obj
        n = flow.shape[0]
        H, W = self.H, self.Wd
        x4 = self.x4 if n == self.N and idx[0] == 0 and idx[-1] == n - 1 else self.x4[idx]
        fl = be.asarray(flow.reshape(n, 2, H, W))
        xa = be.warp(x4, fl, obj.warp_padding)
        Z, logits = be.net_forward(self.W, self.b, self.V, self.c, xa.reshape(n, H * W))
        ladv, weights, success = obj.margin_terms(np.asarray(be.to_numpy(logits)), idx)
        lf, gf = be.stadv_flow_loss(fl, obj.flow_eps, obj.neighborhood, obj.flow_padding)
        G = (be.asarray(weights) @ self.V) * (Z > 0)        # ReLU derivative 0 at 0, as net_input_grad
        gx = (G @ self.W).reshape(n, 1, H, W)
        g = np.asarray(be.to_numpy(be.warp_vjp_flow(x4, fl, gx, obj.warp_padding))).reshape(n, -1)
        g += obj.tau * np.asarray(be.to_numpy(gf)).reshape(n, -1)
        return {"objective": ladv + obj.tau * np.asarray(be.to_numpy(lf)), "success": success, "grad": g}


def _two_loop(g, S, Y, rho, gamma, slots):
    """L-BFGS two-loop recursion ``H g`` for every row of ``g (n, D)``.

    ``slots`` lists the ring slots newest first; ``S, Y (memory, n, D)``,
    ``rho (memory, n)`` (0 drops a pair), ``gamma (n,)`` the initial scaling.
    Each step works on the contiguous views ``S[k], Y[k]`` (no gathers) with
    one preallocated temporary.
    """
    q = g.copy()
    t = np.empty_like(q)
    alphas = np.empty((len(slots), q.shape[0]))
    for j, k in enumerate(slots):
        a_k = rho[k] * np.einsum("nd,nd->n", S[k], q)
        alphas[j] = a_k
        q -= np.multiply(Y[k], a_k[:, None], out=t)
    q *= gamma[:, None]
    for j in range(len(slots) - 1, -1, -1):
        k = slots[j]
        b_k = rho[k] * np.einsum("nd,nd->n", Y[k], q)
        q += np.multiply(S[k], (alphas[j] - b_k)[:, None], out=t)
    return q


def _batched_lbfgs(obj, max_iter, memory, progress, gtol=1e-5, ftol=2.2e-9, max_ls=20, c1=1e-4):
    """Per-example L-BFGS (two-loop recursion) run on the whole batch at once.

    Every image has its own curvature pairs, step and stopping test; the
    objective and gradient of all images still running are evaluated in one
    vectorised call per line-search trial. Stopping rules as scipy's L-BFGS-B:
    ``max |g| <= gtol`` or relative decrease ``<= ftol``.

    Implementation notes (speed). The state of the images still running is kept
    *compacted* (finished images are dropped from every array), so the work
    shrinks with the active set and no per-iteration gathers are needed. The
    curvature pairs live in a ring ``S, Y (memory, n, 2HW)`` whose write
    position is shared by all images, so each two-loop step works on contiguous
    ``S[k], Y[k]`` views; a pair an image rejects (``s^T y <= 1e-10 y^T y``)
    is stored with ``rho = 0`` (it drops out of the recursion) and a restart
    sets all of that image's ``rho`` to 0. The initial scaling ``gamma`` is
    ``s^T y / y^T y`` of the image's newest accepted pair.
    """
    from tqdm.auto import tqdm

    N, _, H, W = obj.shape
    D = 2 * H * W
    shp = (2, H, W)
    fobj = _KernelObjective(obj)
    best = _Best(N, shp)
    x_final = np.zeros((N, D))
    n_iter = np.zeros(N, dtype=np.int64)
    n_eval = np.ones(N, dtype=np.int64)

    ids = np.arange(N)
    x = np.zeros((N, D))
    out = fobj(x, ids)
    best.update(ids, x.reshape((-1,) + shp), out)
    f = out["objective"].copy()
    g = out["grad"]
    S = np.zeros((memory, N, D))
    Y = np.zeros((memory, N, D))
    rho = np.zeros((memory, N))
    gamma = np.ones(N)
    n_pairs = np.zeros(N, dtype=np.int64)   # accepted pairs since the last restart
    pos = 0                                  # shared ring write position (pairs written so far)

    def compact(keep):
        nonlocal ids, x, f, g, S, Y, rho, gamma, n_pairs
        gone = ~keep
        x_final[ids[gone]] = x[gone]
        ids, x, f, g = ids[keep], x[keep], f[keep], g[keep]
        S, Y, rho = S[:, keep], Y[:, keep], rho[:, keep]
        gamma, n_pairs = gamma[keep], n_pairs[keep]

    keep = np.abs(g).max(axis=1) > gtol
    if not keep.all():
        compact(keep)
    bar = tqdm(range(max_iter), desc="stAdv batched L-BFGS", disable=not progress, leave=False)
    for _ in bar:
        n = ids.size
        if n == 0:
            break
        # two-loop recursion, newest pair first (slots never written are skipped)
        q = _two_loop(g, S, Y, rho, gamma, [(pos - 1 - back) % memory for back in range(min(pos, memory))])
        d = np.negative(q, out=q)
        gd = np.einsum("nd,nd->n", g, d)
        bad = ~(gd < 0)
        if bad.any():  # not a descent direction: restart from steepest descent
            d[bad] = -g[bad]
            gd[bad] = -np.einsum("nd,nd->n", g[bad], g[bad])
            n_pairs[bad] = 0
            rho[:, bad] = 0.0
            gamma[bad] = 1.0
        # first step without curvature information: scipy's 1/||g|| scaling
        step = np.where(n_pairs > 0, 1.0, 1.0 / np.maximum(np.linalg.norm(g, axis=1), 1e-12))
        # backtracking Armijo line search, per example
        accepted = np.zeros(n, dtype=bool)
        new_f = f.copy()
        new_g = g.copy()
        pending = np.arange(n)
        for _ls in range(max_ls):
            if pending.size == 0:
                break
            if pending.size == n:
                xt = x + step[:, None] * d
            else:
                xt = x[pending] + step[pending, None] * d[pending]
            ii = ids[pending]
            o = fobj(xt, ii)
            n_eval[ii] += 1
            best.update(ii, xt.reshape((-1,) + shp), o)
            ok = o["objective"] <= f[pending] + c1 * step[pending] * gd[pending]
            acc = pending[ok]
            accepted[acc] = True
            new_f[acc] = o["objective"][ok]
            new_g[acc] = o["grad"][ok]
            pending = pending[~ok]
            step[pending] *= 0.5
        # curvature pair into the shared ring slot (rho = 0: rejected / failed line search)
        k = pos % memory
        s_new = np.multiply(step[:, None], d, out=S[k])
        s_new[~accepted] = 0.0
        y_new = np.subtract(new_g, g, out=Y[k])
        sy = np.einsum("nd,nd->n", s_new, y_new)
        yy = np.einsum("nd,nd->n", y_new, y_new)
        store = accepted & (sy > 1e-10 * yy)
        rho[k] = 0.0
        rho[k, store] = 1.0 / sy[store]
        gamma[store] = sy[store] / yy[store]
        n_pairs[store] += 1
        pos += 1
        x += s_new
        fold = f
        f, g = new_f, new_g
        n_iter[ids[accepted]] += 1
        # stopping tests (scipy L-BFGS-B: pgtol and factr * eps); failed line search stops too
        rel = (fold - f) / np.maximum(np.maximum(np.abs(fold), np.abs(f)), 1.0)
        done = (rel <= ftol) | (np.abs(g).max(axis=1) <= gtol) | ~accepted
        if done.any():
            compact(~done)
        if progress:
            bar.set_postfix(running=int(ids.size), success=f"{best.ok.mean():.3f}")
    x_final[ids] = x
    return best.result(x_final.reshape(obj.shape)), n_iter, n_eval


# ---------------------------------------------------------------------------
# Public entry
# ---------------------------------------------------------------------------
def stadv_attack(net, x, y, tau, *, target=None, kappa=0.0, method="batched", max_iter=200, memory=10,
                 batch_size=500, neighborhood="4", flow_padding="zeros", warp_padding="zeros",
                 flow_eps=1e-8, progress=True):
    """stAdv attack (Xiao et al. 2018): minimise ``L_adv + tau * L_flow`` over an untied flow.

    Parameters
    ----------
    net : OneHiddenLayerNet
        Multi-class network.
    x : array_like, shape (N, H, W)
        Images in ``[0, 1]``.
    y : array_like of int, shape (N,)
        True labels.
    tau : float
        Weight of the flow loss (``0.05`` in stAdv; Figure 6 uses ``[0, 0.1]``).
    target : array_like of int, shape (N,), optional
        Target classes for a targeted attack.
    kappa : float
        CW confidence (``L_adv`` is clipped below at ``-kappa``).
    method : {"batched", "lbfgs-b"}
        ``"batched"``: one vectorised objective and a per-example L-BFGS for all
        images of a chunk; ``"lbfgs-b"``: the reference, ``scipy.optimize.minimize
        (method="L-BFGS-B")`` image by image.
    max_iter : int
        L-BFGS iterations per image (both methods).
    memory : int
        L-BFGS memory (scipy's ``maxcor``).
    batch_size : int
        Chunk size of the batched method (bounds memory: ``2 memory batch_size 2HW`` floats).
    neighborhood : {"4", "diagonal", "8"}
    flow_padding : {"zeros", "symmetric"}
    warp_padding : {"zeros", "border"}
        See the module docstring; ``**STADV_CODE_OPTIONS`` gives the public stAdv
        code's choices.
    flow_eps : float
        The ``1e-8`` under each square root of ``L_flow``.
    progress : bool
        tqdm progress bar.

    Returns
    -------
    StadvResult

    Examples
    --------
    >>> res = stadv_attack(net, X[:100], y[:100], tau=0.05)   # doctest: +SKIP
    >>> res.success_rate, res.l_diff.mean()                   # doctest: +SKIP
    """
    opts = dict(target=target, kappa=kappa, neighborhood=neighborhood, flow_padding=flow_padding,
                warp_padding=warp_padding, flow_eps=flow_eps)
    obj = StadvObjective(net, x, y, tau, **opts)
    check_choice("method", method, METHODS)
    max_iter = check_positive_int("max_iter", max_iter)
    memory = check_positive_int("memory", memory)
    batch_size = check_positive_int("batch_size", batch_size)
    N, _, H, W = obj.shape
    if method == "lbfgs-b":
        flow, n_iter, n_eval = _reference_lbfgsb(obj, max_iter, memory, progress)
    else:
        flow = np.zeros(obj.shape)
        n_iter = np.zeros(N, dtype=np.int64)
        n_eval = np.zeros(N, dtype=np.int64)
        chunks = range(0, N, batch_size)
        for start in chunks:
            sl = slice(start, min(start + batch_size, N))
            sub = StadvObjective(net, obj.x[sl], obj.y[sl], tau,
                                 **{**opts, "target": None if obj.target is None else obj.target[sl]})
            flow[sl], n_iter[sl], n_eval[sl] = _batched_lbfgs(sub, max_iter, memory, progress)
    final = obj(flow, need_grad=False)
    return StadvResult(
        x_adv=final["x_adv"].reshape(N, H, W),
        flow=flow,
        success=final["success"],
        pred=final["pred"],
        objective=final["objective"],
        adv_loss=final["adv_loss"],
        flow_loss=final["flow_loss"],
        l_diff=_np(flow_tv(flow)),
        flow_norm=_np(smoothness_norm(flow)),
        n_iter=n_iter,
        n_eval=n_eval,
        tau=obj.tau,
        method=method,
        options={k: v for k, v in opts.items() if k != "target"} | {"max_iter": max_iter, "memory": memory,
                                                                      "targeted": target is not None},
    )
