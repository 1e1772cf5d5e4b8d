r"""The stAdv spatial-transformation attack (Xiao et al. 2018), used in Section 4.2.

For an image ``x`` with label ``y`` the attack looks for an untied flow
``f = (du, dv)`` minimising

.. math:: L(f) = L_{adv}(g(f; x)) + \tau L_{flow}(f),

``g`` the bilinear warp of Eq. (1), ``L_adv`` the Carlini-Wagner margin and ``L_flow``
the stAdv flow loss (:mod:`.objective`, which also documents the conventions and
:data:`STADV_CODE_OPTIONS`).

Two optimisers minimise the same objective:

* ``method="lbfgs-b"`` -- the reference (:mod:`.lbfgs`): :func:`scipy.optimize.minimize`
  (``method="L-BFGS-B"``, unbounded) per image, as in stAdv, in float64 and on one thread;
* ``method="batched"`` (default) -- the batched engine (:mod:`.engine`, :mod:`.lbfgs_round`):
  a per-image L-BFGS (own curvature pairs, line search and stopping tests per image) for
  the whole batch at once, one batched objective evaluation per round, converged images
  dropping out, chunks on one single-threaded worker per core; float32 by default
  (``dtype="float64"`` on request), images that stall in float32 rerun in float64.

Both return, per image, the successful point with the smallest objective among
all points they evaluated, if any (so an optimiser that oscillates across the
decision boundary still reports its adversarial example), else the optimiser's
final iterate; the reported objective, success and prediction are evaluated again in
float64 at the returned flow. The objective and its gradient go through the backend's
kernels, so the attack runs on whichever backend is current. This module holds
the public entry :func:`stadv_attack` and its :class:`StadvResult`, and re-exports
:class:`StadvObjective`, :func:`stadv_objective` and :data:`STADV_CODE_OPTIONS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validate import check_choice, check_positive_int
from ..backend import as_numpy as _np
from ..backend import current_backend_name
from ..operators import smoothness_norm
from ..smoothness import flow_tv
from .engine import core_limit, default_workers, run_chunks
from .lbfgs import _reference_lbfgsb
from .lbfgs_round import FTOL, LINE_SEARCH_FAILED
from .objective import STADV_CODE_OPTIONS, StadvObjective, _KernelObjective, stadv_objective

__all__ = [
    "StadvResult",
    "StadvObjective",
    "stadv_objective",
    "stadv_attack",
    "STADV_CODE_OPTIONS",
    "METHODS",
]

METHODS = ("batched", "lbfgs-b")
DTYPES = ("float32", "float64")


def _check_dtype(dtype):
    """The engine's working precision: float32 or float64 (a name, numpy type or dtype)."""
    if dtype is None:
        raise TypeError("dtype must be float32 or float64, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt.name not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dt.name}")
    return dt


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


def _run_engine(obj, dt, batch_size, workers, max_iter, memory, progress):
    """The batched engine on every image of ``obj``; in float32, a float64 rerun where it stalls.

    In float32 an objective change below ~1e-7 of its value is invisible, so an image whose
    descent only continues in that regime (the stiff ``sqrt(. + 1e-8)`` of ``L_flow`` near a
    zero flow difference, with a large ``tau``) stalls: a step without a visible decrease
    (the ``ftol`` test) or a failed line search. Such images are attacked again in float64,
    and each keeps the better result: a success over a failure, else the lower objective
    (in float64).
    """
    def objective(idx, dtype):
        sub = StadvObjective(obj.net, obj.x[idx], obj.y[idx], obj.tau, **_sub_options(obj, idx))
        return _KernelObjective(sub, dtype)

    N = obj.shape[0]
    flow, n_iter, n_eval, status, plan = run_chunks(lambda idx: objective(idx, dt), np.arange(N), batch_size,
                                                    workers, max_iter, memory, progress)
    stalled = (status == FTOL) | (status == LINE_SEARCH_FAILED)
    redo = np.flatnonzero(stalled) if dt == np.float32 else np.zeros(0, dtype=np.int64)
    if redo.size:
        f64, it64, ev64, _, _ = run_chunks(lambda idx: objective(redo[idx], np.float64), np.arange(redo.size),
                                           batch_size, workers, max_iter, memory, False)
        a, b = obj(flow[redo], redo, need_grad=False), obj(f64, redo, need_grad=False)
        take = (b["success"] & ~a["success"]) | ((b["success"] == a["success"]) & (b["objective"] < a["objective"]))
        flow[redo[take]] = f64[take]
        n_iter[redo] += it64
        n_eval[redo] += ev64
    return flow, n_iter, n_eval, plan | {"float64_reruns": int(redo.size)}


def _sub_options(obj, idx):
    """The options of :class:`StadvObjective` ``obj`` for its images ``idx``."""
    return dict(target=None if obj.target is None else obj.target[idx], kappa=obj.kappa,
                neighborhood=obj.neighborhood, flow_padding=obj.flow_padding, warp_padding=obj.warp_padding,
                flow_eps=obj.flow_eps)


def stadv_attack(net, x, y, tau, *, target=None, kappa=0.0, method="batched", max_iter=200, memory=10,
                 batch_size=250, neighborhood="4", flow_padding="zeros", warp_padding="zeros",
                 flow_eps=1e-8, progress=True, dtype="float32", workers=None):
    """stAdv attack (Xiao et al. 2018): minimise ``L_adv + tau * L_flow`` over an untied flow.

    Parameters
    ----------
    net : OneHiddenLayerNet
        Multi-class network.
    x : array_like, shape (N, H, W)
        Images in ``[0, 1]``.
    y : array_like of int, shape (N,)
        True labels.
    tau : float or sequence of float
        Weight of the flow loss (``0.05`` in stAdv; Figure 6 uses ``[0, 0.1]``). A 1-D
        sequence runs the attack once per value and returns a list of results.
    target : array_like of int, shape (N,), optional
        Target classes for a targeted attack.
    kappa : float
        CW confidence (``L_adv`` is clipped below at ``-kappa``).
    method : {"batched", "lbfgs-b"}
        ``"batched"``: the batched engine (:mod:`.engine`), a per-image L-BFGS for all
        images of a chunk at once; ``"lbfgs-b"``: the reference, ``scipy.optimize.minimize
        (method="L-BFGS-B")`` image by image (float64).
    max_iter : int
        L-BFGS iterations per image (both methods).
    memory : int
        L-BFGS memory (scipy's ``maxcor``).
    batch_size : int
        Chunk size of the batched method (bounds memory: ``2 memory batch_size 2HW`` floats);
        the results depend on it only through rounding (BLAS's kernels for small products).
    neighborhood : {"4", "diagonal", "8"}
    flow_padding : {"zeros", "symmetric"}
    warp_padding : {"zeros", "border"}
        See the module docstring; ``**STADV_CODE_OPTIONS`` gives the public stAdv
        code's choices.
    flow_eps : float
        The ``1e-8`` under each square root of ``L_flow``.
    progress : bool
        tqdm progress bar.
    dtype : {"float32", "float64"}
        Working precision of the batched engine (the reference always works in float64).
        The returned objective values are re-evaluated in float64 at the returned flows.
    workers : int, optional
        Chunks the batched method runs at once, each in its own thread with single-threaded
        BLAS (default: the CPU cores this process may use; 1 on the cupy backend). The
        results do not depend on it.

    Returns
    -------
    StadvResult, or list of StadvResult (one per value when ``tau`` is a sequence)

    Examples
    --------
    >>> res = stadv_attack(net, X[:100], y[:100], tau=0.05)   # doctest: +SKIP
    >>> res.success_rate, res.l_diff.mean()                   # doctest: +SKIP
    """
    if isinstance(tau, (list, tuple, np.ndarray)):
        taus = np.asarray(tau, dtype=object)
        if taus.ndim != 1 or taus.size == 0:
            raise ValueError(f"tau must be a number or a non-empty 1-D sequence of numbers, got {tau!r}")
        return [stadv_attack(net, x, y, t.item() if isinstance(t, np.generic) else t, target=target, kappa=kappa,
                             method=method, max_iter=max_iter, memory=memory, batch_size=batch_size,
                             neighborhood=neighborhood, flow_padding=flow_padding, warp_padding=warp_padding,
                             flow_eps=flow_eps, progress=progress, dtype=dtype, workers=workers) for t in taus]
    opts = dict(target=target, kappa=kappa, neighborhood=neighborhood, flow_padding=flow_padding,
                warp_padding=warp_padding, flow_eps=flow_eps)
    obj = StadvObjective(net, x, y, tau, **opts)
    check_choice("method", method, METHODS)
    max_iter = check_positive_int("max_iter", max_iter)
    memory = check_positive_int("memory", memory)
    batch_size = check_positive_int("batch_size", batch_size)
    dt = _check_dtype(dtype)
    if workers is None:
        workers = 1 if current_backend_name() == "cupy" else default_workers()
    workers = check_positive_int("workers", workers)
    plan = {}
    N, _, H, W = obj.shape
    if method == "lbfgs-b":
        with core_limit(1):  # the per-image reference: too little work per call to share
            flow, n_iter, n_eval = _reference_lbfgsb(obj, max_iter, memory, progress)
        plan = {"workers": 1, "blas_threads": 1, "numba_threads": 1}
    else:
        flow, n_iter, n_eval, plan = _run_engine(obj, dt, batch_size, workers, max_iter, memory, progress)
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
        options={k: v for k, v in opts.items() if k != "target"} | {
            "max_iter": max_iter, "memory": memory, "targeted": target is not None,
            "dtype": "float64" if method == "lbfgs-b" else dt.name} | plan,
    )
