r"""The projected-gradient flow attack on many fixed images at once (Section 3: the exact
``l_adv`` of Eq. (4) maximised over the budget ``||M r|| <= eps`` of Eq. (3)).

:func:`flow_pgd_attack_images` runs :func:`.flow_pgd.flow_pgd_attack` with ``x`` fixed on a
batch of images, each with its own class pair and seed, in lockstep: the same starts (image
``n``'s random flows come from ``default_rng(seeds[n])`` exactly as in the one-image attack),
the same steps, the same best-value bookkeeping and the same exact re-evaluation at the end.
What changes is the arithmetic's shape: all restarts of all images pass through the network as
one matrix product per step (hundreds of rows instead of ``restarts``), and the image term
``f(x)``, constant when ``x`` is fixed, is computed once. Images can leave the batch as soon as
their best value exceeds a threshold (``stop_above``, by more than rounding can undo): then the
value returned is the first one found above it, which is all a caller that asks "is this image
broken?" needs.

The result of image ``n`` equals ``flow_pgd_attack(net, eps, classes=classes[n], x=X[n],
seed=seeds[n], ...)`` up to floating-point rounding (tested).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .._validate import as_float_array, as_images, check_budget, check_choice, check_positive_int, check_seed
from ..network import LinearClassifier, OneHiddenLayerNet
from ..operators import m_power
from ..transform import PADDINGS, warp, warp_vjp_flow
from .flow_pgd import SCHEDULES, _flow_of, _flow_starts, _project_ball, _step

__all__ = ["ImagesAttackResult", "flow_pgd_attack_images", "STOP_MARGIN"]


@dataclasses.dataclass
class ImagesAttackResult:
    """Result of :func:`flow_pgd_attack_images`, one entry per image.

    Attributes
    ----------
    values : ndarray, shape (N,)
        Exact ``l_adv = f(g(r; x_n)) - f(x_n)`` at the returned flow (a valid lower bound on the
        supremum over the budget); with ``stop_above``, the first best value above the threshold
        for the images that stopped early.
    flows : ndarray, shape (N, H, W) (tied) or (N, 2, H, W) (untied)
        The returned flows, ``||M r|| <= eps`` up to rounding.
    budgets : ndarray, shape (N,)
        ``||M r||`` (tied) or ``sqrt(||M du||^2 + ||M dv||^2)`` of each returned flow.
    steps_run : ndarray, shape (N,)
        Steps each image ran (``steps`` unless it stopped early).
    """

    values: np.ndarray
    flows: np.ndarray
    budgets: np.ndarray
    steps_run: np.ndarray


def _pairs(classes, net, N):
    """``(N, 2)`` class pairs ``(i, y)`` of a multi-class net (``None`` for a binary one)."""
    if net.binary:
        if classes is not None:
            raise ValueError("classes is only for multi-class networks")
        return None
    if classes is None:
        raise ValueError("classes, one pair (i, y) per image, is required for a multi-class network")
    c = np.asarray(classes)
    if N == 0 and c.size == 0:
        return np.zeros((0, 2), np.int64)
    if c.dtype == bool or not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"classes must be integer class indices, got dtype {c.dtype}")
    if c.shape != (N, 2):
        raise ValueError(f"classes must have shape ({N}, 2), one pair (i, y) per image, got {c.shape}")
    if c.size and (c.min() < 0 or c.max() >= net.n_classes):
        raise ValueError(f"classes must lie in [0, {net.n_classes}), got values in [{c.min()}, {c.max()}]")
    if np.any(c[:, 0] == c[:, 1]):
        raise ValueError(f"classes: i and y must differ, equal in rows {np.flatnonzero(c[:, 0] == c[:, 1])[:5]}")
    return c.astype(np.int64)


STOP_MARGIN = 1e-9
"""An image leaves the batch once its best value exceeds ``stop_above`` by ``STOP_MARGIN (1 + |stop_above|)``:
far above the rounding between the value seen in the loop and the one recomputed at the end, so
that the returned value is above ``stop_above`` too."""


def _thresholds(stop_above, N):
    """The values above which each image leaves the batch (``inf``: never)."""
    if stop_above is None:
        return np.full(N, np.inf)
    if np.asarray(stop_above).dtype == bool:
        raise TypeError("stop_above must be real numbers, got booleans")
    thr = as_float_array("stop_above", stop_above, ndim=(0, 1), finite=False, dtype=np.float64)
    if np.isnan(thr).any():
        raise ValueError("stop_above must not be NaN")
    if thr.ndim == 0:
        thr = np.full(N, float(thr))
    if thr.shape != (N,):
        raise ValueError(f"stop_above must be a scalar or have shape ({N},), got {thr.shape}")
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(thr), thr + STOP_MARGIN * (1.0 + np.abs(thr)), thr)


def _per_image(name, a, N, check):
    """An integer or one integer per image, each checked by ``check``."""
    if np.ndim(a) == 0:
        return np.full(N, check(name, a.item() if isinstance(a, np.generic) else a), dtype=np.int64)
    a = np.asarray(a)
    if a.shape != (N,):
        raise ValueError(f"{name} must be a scalar or have shape ({N},), got {a.shape}")
    return np.array([check(f"{name}[{n}]", v.item()) for n, v in enumerate(a)], dtype=np.int64)


class _Margin:
    """The margins ``f_i - f_y`` (or ``f``) of a batch of rows with per-row output weights.

    One hidden layer: ``f(x) = v . relu(W x + b) + c`` with ``v = V[i] - V[y]``, ``c = c[i] - c[y]``
    per row; its input gradient ``W^T (1[W x + b > 0] * v)`` (``dsigma(0) = 0``, as
    :meth:`OneHiddenLayerNet.input_gradient`).
    """

    def __init__(self, net, pairs):
        self.net = net
        if pairs is None:
            self.v, self.c = net.V[:1], net.c[:1]
        else:
            with np.errstate(over="ignore"):
                self.v = self._finite(net.V[pairs[:, 0]] - net.V[pairs[:, 1]], "output weights v_i - v_y")
                self.c = self._finite(net.c[pairs[:, 0]] - net.c[pairs[:, 1]], "output bias c_i - c_y")

    def rows(self, idx):
        """Output weights of the rows of images ``idx``."""
        if len(self.v) == 1:
            return self.v[np.zeros(len(idx), int)], self.c[np.zeros(len(idx), int)]
        return self.v[idx], self.c[idx]

    @staticmethod
    def _finite(a, what):
        if not np.isfinite(a).all():
            raise ValueError(f"net: the margin's {what} is not finite (overflow): the network's weights or the "
                             "images are too large for float64 arithmetic")
        return a

    def value(self, X, v, c):
        z = self.net.hidden(X.reshape(len(X), -1))
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below
            return self._finite(np.einsum("bm,bm->b", np.maximum(z, 0.0), v) + c, "value")

    def value_and_grad(self, X, v, c):
        z = self.net.hidden(X.reshape(len(X), -1))
        with np.errstate(over="ignore", invalid="ignore"):
            val = self._finite(np.einsum("bm,bm->b", np.maximum(z, 0.0), v) + c, "value")
            return val, self._finite(((z > 0) * v) @ self.net.W, "input gradient")


def flow_pgd_attack_images(net, eps, X, classes=None, *, tied=True, restarts=32, steps=200, padding="zeros",
                           step_size=0.25, seeds=0, schedule="linear", stop_above=None, batch_images=128):
    """:func:`.flow_pgd.flow_pgd_attack` with ``x`` fixed, for many images at once.

    Parameters
    ----------
    net : OneHiddenLayerNet or LinearClassifier
    eps : float
    X : array_like, shape (N, H, W)
        Fixed images (any finite values: as with ``x`` of the one-image attack, the image is not
        optimised, so ``input_range`` does not enter).
    classes : array_like of int, shape (N, 2), optional
        Image ``n`` is attacked on the margin ``f_i - f_y`` with ``(i, y) = classes[n]``
        (multi-class networks; ``None`` for binary ones).
    tied, restarts, steps, padding, step_size, schedule
        As :func:`.flow_pgd.flow_pgd_attack`.
    seeds : int or array_like of int, shape (N,)
        Image ``n``'s starts come from ``numpy.random.default_rng(seeds[n])`` as in the one-image
        attack with ``seed=seeds[n]``.
    stop_above : float or array_like, shape (N,), optional
        Image ``n`` leaves the batch once its best value exceeds ``stop_above[n]`` by more than
        :data:`STOP_MARGIN` ``(1 + |stop_above[n]|)`` (its value is then the first found there, its
        flow the one that gave it, and the returned exact value is above ``stop_above[n]``).
    batch_images : int
        Images attacked together (``batch_images * restarts`` rows per matrix product).

    Returns
    -------
    ImagesAttackResult

    Raises
    ------
    TypeError
        ``net`` is not a network; ``tied`` not a bool; ``X`` not numeric; ``classes`` not integers;
        ``seeds`` not integers; ``eps``, ``step_size``, ``stop_above`` not real numbers.
    ValueError
        ``X`` not ``(N, H, W)`` of the net's image shape or not finite; ``classes`` of the wrong
        shape, out of range or with ``i == y`` (or given for a binary network, missing for a
        multi-class one); ``eps``, ``step_size`` negative or not finite; ``restarts``, ``steps``,
        ``batch_images < 1``; a seed ``< 0``; ``stop_above`` NaN or of the wrong shape; unknown
        ``padding`` or ``schedule``.

    Notes
    -----
    In ``M``-coordinates ``s = M r`` the budget ``||M r|| <= eps`` is a ball, so each step is
    ``s <- P(s + alpha eps g / ||g||)`` with ``g = M^-1 grad_r l_adv`` and ``P`` the rescaling
    onto the ball (Eq. (3); Section 3, Eq. (4) for ``l_adv``); ``alpha`` decays from
    ``step_size + 0.01`` to ``0.01``.
    """
    if isinstance(net, LinearClassifier):
        net = net.as_network()
    if not isinstance(tied, (bool, np.bool_)):
        raise TypeError(f"tied must be a bool, got {type(tied).__name__}")
    if not isinstance(net, OneHiddenLayerNet):
        raise TypeError(f"net must be a OneHiddenLayerNet, got {type(net).__name__}")
    eps = check_budget("eps", eps)
    restarts = check_positive_int("restarts", restarts)
    steps = check_positive_int("steps", steps)
    batch_images = check_positive_int("batch_images", batch_images)
    check_choice("padding", padding, PADDINGS)
    check_choice("schedule", schedule, SCHEDULES)
    step_size = check_budget("step_size", step_size)
    H, W = net.image_shape
    X = as_images("X", X, ndim=3, dtype=np.float64)
    if X.shape[1:] != (H, W):
        raise ValueError(f"X must have shape (N, {H}, {W}), got {X.shape}")
    N = len(X)
    pairs = _pairs(classes, net, N)
    seeds = _per_image("seeds", seeds, N, check_seed)
    thr = _thresholds(stop_above, N)
    shape = (H, W) if tied else (2, H, W)
    out = ImagesAttackResult(values=np.zeros(N), flows=np.zeros((N, *shape)), budgets=np.zeros(N),
                             steps_run=np.full(N, steps, dtype=np.int64))
    margin = _Margin(net, pairs)
    for start in range(0, N, batch_images):
        _attack_chunk(margin, eps, X, np.arange(start, min(N, start + batch_images)), seeds, thr, shape, tied,
                      restarts, steps, padding, step_size, schedule, out)
    return out


def _attack_chunk(margin, eps, X, idx, seeds, thr, shape, tied, R, steps, padding, step_size, schedule, out):
    """Attack images ``idx`` in lockstep (rows ``n * R + k``: restart ``k`` of image ``n``); fill ``out``."""
    H, W = margin.net.image_shape
    s = np.empty((len(idx), R, *shape))
    for j, n in enumerate(idx):  # the one-image attack's starts, seed by seed
        s[j] = _flow_starts(np.random.default_rng(int(seeds[n])), (R, *shape), eps)
    v_img, c_img = margin.rows(idx)
    f_x = margin.value(X[idx], v_img, c_img)
    best_val = np.full((len(idx), R), -np.inf)
    best_s = s.copy()
    live = np.arange(len(idx))  # positions in idx still attacked
    for t in range(steps + 1):
        n_live = len(live)
        Xr = np.repeat(X[idx[live]], R, axis=0)
        v, c = np.repeat(v_img[live], R, axis=0), np.repeat(c_img[live], R, axis=0)
        sl = s[live].reshape(n_live * R, *shape)
        flow = _flow_of(sl, tied)
        xt = warp(Xr, flow, padding)
        if t == steps:
            val = margin.value(xt, v, c)
        else:
            val, gxt = margin.value_and_grad(xt, v, c)
        val = (val - np.repeat(f_x[live], R)).reshape(n_live, R)
        bv, bs = best_val[live], best_s[live]
        better = val > bv
        bv[better] = val[better]
        bs[better] = sl.reshape(n_live, R, *shape)[better]
        best_val[live], best_s[live] = bv, bs
        done = bv.max(axis=1) > thr[idx[live]]
        out.steps_run[idx[live[done]]] = t
        if t == steps:
            break
        gflow = warp_vjp_flow(Xr, flow, gxt.reshape(n_live * R, H, W), padding)
        gr = gflow[:, 0] + gflow[:, 1] if tied else gflow
        gs = np.asarray(m_power(gr, -1))
        nrm = np.sqrt((gs * gs).sum(axis=tuple(range(1, gs.ndim)), keepdims=True))
        alpha = _step(step_size, t, steps, schedule)
        s_new = _project_ball(sl + alpha * eps * gs / np.maximum(nrm, 1e-300), eps)
        s[live] = s_new.reshape(n_live, R, *shape)
        live = live[~done]
        if not len(live):
            break
    k = best_val.argmax(axis=1)
    flow = _flow_of(best_s[np.arange(len(idx)), k], tied)
    r = flow[:, 0] if tied else flow
    # Re-evaluate exactly at the returned pair.
    out.values[idx] = margin.value(warp(X[idx], flow, padding), v_img, c_img) - f_x
    out.flows[idx] = r
    out.budgets[idx] = np.sqrt(np.sum((r * np.asarray(m_power(r, 2))).reshape(len(idx), -1), axis=1))
