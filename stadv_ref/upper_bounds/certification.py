r"""Certification with the upper bounds (appendix 6.7, [E13]) and a strong flow attack to test it.

Rule ([E13]). For an input ``x`` with label ``y`` and each class ``i != y``, the pair
bound ``B_iy`` (per unit ``eps``, :func:`stadv_ref.upper_bounds.class_pair_bounds`)
satisfies ``f_i(g(r; x)) - f_y(g(r; x)) <= f_i(x) - f_y(x) + eps B_iy`` for every
``||M r|| <= eps``. So ``x`` is **certified** when

.. math:: f_y(x) - f_i(x) > \varepsilon\, B_{iy}\quad \text{for all } i \ne y ,

("if", not the printed "if and only if": the printed test ``max_i q_iy <= 0`` can never
pass because every ``q_iy`` is positive). The 0/1 adversarial loss at ``eps`` is the
fraction of points *not* certified. For a binary network (``f > 0`` is class 1) the
rule is ``(2y - 1) f(x) > eps B``.

Class-pair bounds are computed once per network and cached: in memory, keyed by a
hash of the weights (``W``, ``V``, ``b``, image shape) and of every option that
changes the bound; optionally also on disk (``cache_dir``) as sealed ``.npz`` files
(:mod:`.bound_cache`: a damaged or changed file is recomputed with a warning).

The strong attack the bounds are tested against is
:func:`stadv_ref.attacks.flow_pgd.flow_pgd_attack`.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from .._validate import check_budget, check_choice, check_labels
from ..network import OneHiddenLayerNet
from .bound_cache import clear_bound_cache, pair_bounds_cached
from .closed_form import METHODS, SOUND_METHODS, input_constant
from .local import FLOWS, TIGHTNESS, local_pair_bounds
from .sdp_result import _check_solver_options

CERTIFY_METHODS = tuple(m for m in METHODS if m != "linear") + ("local",)
"""Methods of :func:`certify`: the global class-pair bounds of :func:`~stadv_ref.upper_bounds.upper_bound`
and ``"local"``, the per-image certificate :func:`~stadv_ref.upper_bounds.local.local_pair_bounds`."""

__all__ = [
    "CERTIFY_METHODS",
    "CertificationResult",
    "certify",
    "pair_bounds_cached",
    "clear_bound_cache",
]

# ---------------------------------------------------------------------------
# certify
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class CertificationResult:
    """Result of :func:`certify`.

    Attributes
    ----------
    certified : ndarray of bool, shape (N,) or (E, N)
        Per example (and per ``eps`` when several were given).
    loss_01 : float or ndarray, shape (E,)
        0/1 adversarial loss: the fraction of examples not certified.
    eps : float or ndarray
    method : str
    sound : bool
        Whether the bound used is proven (``False`` for the paper's naive bounds).
    margins : ndarray, shape (N, K) (or (N,) binary)
        ``f_y(x) - f_i(x)`` (``+inf`` at ``i = y``); binary: ``(2y - 1) f(x)``.
    bounds : ndarray, shape (K, K); for ``method="local"``: (N, K) or (E, N, K)
        Per-unit class-pair bounds ``B_iy``; for ``"local"``, the per-image bounds on
        ``max f_i(g(r; x)) - f_y(g(r; x))`` at each ``eps`` (``-inf`` at ``i = y``; one column
        for a binary network), certified where the whole row is ``< 0``.
    required : ndarray, shape (N, K), or None for ``method="local"``
        ``B_iy`` for each example's label (the margin test is ``margins > eps * required``).
    accuracy : float
        Clean accuracy.
    info : dict
        Cache information and timings.
    """

    certified: np.ndarray
    loss_01: object
    eps: object
    method: str
    sound: bool
    margins: np.ndarray
    bounds: np.ndarray
    required: np.ndarray
    accuracy: float
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def certified_radius(self):
        """Largest ``eps`` each example is certified for: ``min_i margin_i / B_iy`` (0 if misclassified).

        Only for the global methods, whose bound is linear in ``eps``; a ``"local"`` result raises
        ``ValueError`` (certify at several ``eps`` instead).
        """
        if self.required is None:
            raise ValueError("certified_radius needs a bound linear in eps (a global method); the 'local' "
                             "certificate is not: call certify with a list of eps instead")
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(self.required > 0, self.margins / self.required, np.where(self.margins > 0, np.inf, 0.0))
        rad = q.min(axis=-1) if q.ndim == 2 else q
        return np.maximum(rad, 0.0)


def certify(net, X, y, eps, method="sdp", *, input_range=(0.0, 1.0), padding="zeros", solver="mixing",
            gap_tol=1e-5, seed=0, cache=True, cache_dir=None, progress=True, flow="tied", tightness="fast",
            **solver_options):
    """Certify examples against every flow with ``||M r|| <= eps`` (appendix 6.7, [E13]).

    Parameters
    ----------
    net : OneHiddenLayerNet
    X : array_like, shape (N, H, W) or (N, d)
    y : array_like of int, shape (N,)
        Labels (``{0, 1}`` for a binary network).
    eps : float or array_like of float
        One budget or several (the bounds are computed once; the margin test is
        repeated per ``eps``).
    method : str
        A method of :func:`stadv_ref.upper_bound` (not ``"linear"``): one global class-pair
        bound ``B_iy`` for every input in the box; or ``"local"``: the per-image certificate
        :func:`~stadv_ref.upper_bounds.local.local_pair_bounds`, which uses the image and is far
        tighter at large ``eps`` (computed once per ``eps``). See :data:`CERTIFY_METHODS`.
    flow : {"tied", "untied"}
        The flows certified against. The global bounds are for tied flows only; ``"untied"``
        (``||M du||^2 + ||M dv||^2 <= eps^2``) needs ``method="local"``.
    tightness : {"fast", "tight"}
        For ``method="local"`` only (see :func:`~stadv_ref.upper_bounds.local.local_pair_bounds`).
    input_range, padding, solver, gap_tol, seed, **solver_options
        As in :func:`stadv_ref.upper_bound`. Every pixel of ``X`` must lie in
        ``input_range``: the bounds hold only inside that box.
    cache : bool
        Use / fill the in-memory (and, with ``cache_dir``, on-disk) bound cache.
    cache_dir : path, optional
    progress : bool

    Returns
    -------
    CertificationResult

    Raises
    ------
    TypeError
        ``net`` is not a :class:`OneHiddenLayerNet`; ``X`` not numeric; ``y`` not integer
        labels (floats and bools are refused); ``eps``, ``gap_tol`` not real numbers (bools
        refused); ``seed`` not an integer.
    ValueError
        ``X`` not finite, of the wrong shape, empty (``N = 0`` is refused: there is nothing to
        certify, and an accuracy or 0/1 loss of no example is undefined) or outside
        ``input_range`` (a certificate for such an image would be false); ``X`` and ``y``
        holding different numbers of examples (the message names both); ``y`` not of shape
        ``(N,)`` or outside ``[0, K)``; ``eps`` negative, not finite, or not a number or 1-D
        sequence; ``method`` not one of :data:`CERTIFY_METHODS` (``"linear"``
        is refused: it bounds linear classifiers only); ``flow="untied"`` with a global
        method; ``flow``/``tightness`` not one of their choices; bad ``input_range`` or ``padding``;
        ``solver`` not ``"mixing"``/``"scs"``; ``gap_tol`` not positive finite; ``seed < 0``.
    """
    if not isinstance(net, OneHiddenLayerNet):
        raise TypeError(f"net must be a OneHiddenLayerNet, got {type(net).__name__}")
    if isinstance(method, str) and method == "linear":
        raise ValueError("method 'linear' (Eq. 16) bounds linear classifiers f = v^T x only; certify a network "
                         f"with one of {[m for m in METHODS if m != 'linear']}")
    check_choice("method", method, CERTIFY_METHODS)
    check_choice("flow", flow, FLOWS)
    check_choice("tightness", tightness, TIGHTNESS)
    if method != "local" and flow != "tied":
        raise ValueError(f"flow={flow!r} needs method='local': the global bounds ({method!r}) hold for tied flows")
    if method != "local" and tightness != "fast":
        raise ValueError("tightness is an option of method='local' only")
    check_choice("solver", solver, ("mixing", "scs"))
    gap_tol, _, seed = _check_solver_options(gap_tol, 1, seed)[:3]
    input_constant(input_range, padding)  # validates input_range / padding
    lo, hi = (float(t) for t in input_range)
    scalar = np.ndim(eps) == 0
    eps_arr = np.atleast_1d(np.asarray(eps, dtype=object))
    if eps_arr.ndim != 1 or eps_arr.size == 0:
        raise ValueError(f"eps must be a number or a 1-D sequence of numbers, got {eps!r}")
    eps_arr = np.array([check_budget("eps", float(e) if isinstance(e, (np.floating, np.integer)) else e)
                        for e in eps_arr])
    Xf = net.flatten(X, "X")
    N = Xf.shape[0]
    if N == 0:
        raise ValueError(f"X must hold at least one example (N = 0 is refused), got shape {np.shape(X)}")
    if np.ndim(y) == 1 and len(y) != N:
        raise ValueError(f"X and y disagree: X holds {N} example(s), y holds {len(y)} label(s)")
    if Xf.min() < lo or Xf.max() > hi:
        # The bounds hold only for images in the input box: an image outside it
        # would get a certificate that a flow attack can break ([E7], issue #19).
        raise ValueError(
            f"X must lie in input_range=({lo:g}, {hi:g}); got values in [{Xf.min():g}, {Xf.max():g}] "
            "(rescale the images, e.g. X / 255, or pass the input_range the network was trained on)")
    y = check_labels("y", y, N, 2 if net.binary else net.n_classes)
    if method == "local":
        return _certify_local(net, Xf, y, eps_arr, scalar, flow=flow, tightness=tightness, padding=padding,
                              input_range=input_range)
    bounds, info = pair_bounds_cached(net, method, input_range=input_range, padding=padding, solver=solver,
                                      gap_tol=gap_tol, seed=seed, cache=cache, cache_dir=cache_dir,
                                      progress=progress, **solver_options)
    out = net(Xf)
    if net.binary:
        margins = (2 * y - 1) * out
        required = np.full(N, bounds[0, 0])
        pred = (out > 0).astype(np.int64)
        cert = margins[None, :] > eps_arr[:, None] * required[None, :]
    else:
        rows = np.arange(N)
        margins = out[rows, y][:, None] - out
        margins[rows, y] = np.inf
        required = bounds[:, y].T.copy()  # required[n, i] = B_{i, y_n}
        pred = out.argmax(axis=1)
        cert = np.all(margins[None, :, :] > eps_arr[:, None, None] * required[None, :, :], axis=2)
    loss = 1.0 - cert.mean(axis=1)
    if scalar:
        cert, loss, eps_out = cert[0], float(loss[0]), float(eps_arr[0])
    else:
        eps_out = eps_arr
    return CertificationResult(
        certified=cert, loss_01=loss, eps=eps_out, method=method, sound=method in SOUND_METHODS,
        margins=margins, bounds=bounds, required=required, accuracy=float(np.mean(pred == y)),
        info=info,
    )


def _certify_local(net, Xf, y, eps_arr, scalar, *, flow, tightness, padding, input_range):
    """``certify(method="local")``: one per-image bound per ``eps``; certified when every entry is ``< 0``."""
    t0 = time.perf_counter()
    X = Xf.reshape((-1,) + tuple(net.image_shape))
    per_eps = np.stack([local_pair_bounds(net, X, y, float(e), flow=flow, padding=padding, tightness=tightness,
                                          input_range=input_range) for e in eps_arr])  # (E, N, K) or (E, N, 1)
    cert = np.all(per_eps < 0, axis=2)
    out = net(Xf)
    if net.binary:
        margins = (2 * y - 1) * out
        pred = (out > 0).astype(np.int64)
    else:
        rows = np.arange(len(y))
        margins = out[rows, y][:, None] - out
        margins[rows, y] = np.inf
        pred = out.argmax(axis=1)
    loss = 1.0 - cert.mean(axis=1)
    info = {"method": "local", "flow": flow, "tightness": tightness, "padding": padding,
            "time": time.perf_counter() - t0, "sound": True, "source": "computed"}
    if scalar:
        cert, loss, eps_out, per_eps = cert[0], float(loss[0]), float(eps_arr[0]), per_eps[0]
    else:
        eps_out = eps_arr
    return CertificationResult(
        certified=cert, loss_01=loss, eps=eps_out, method="local", sound=True, margins=margins, bounds=per_eps,
        required=None, accuracy=float(np.mean(pred == y)), info=info)
