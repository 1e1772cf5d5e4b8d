r"""The batched stAdv engine: a per-image L-BFGS for a whole batch at once.

It minimises, for every image of a batch, the stAdv objective ``L_adv + tau L_flow``
(Xiao et al. 2018; :mod:`.objective`, over the warp of Eq. (1)) with an L-BFGS whose state
is the image's own -- curvature pairs, line search, stopping tests -- while the expensive
part, the objective and its gradient, is evaluated for all running images in one call:

* each *round* evaluates every running image once, at its current trial point
  (:class:`~.objective._KernelObjective`: the network passes as two batched GEMMs through
  BLAS, the warp, its flow VJP and ``L_flow`` through the backend's kernels);
* :func:`~.lbfgs_round.lbfgs_round` then moves each image's state machine on by that one
  evaluation (accept and take the next L-BFGS direction, or backtrack, or stop), in
  parallel over the images (Numba, when installed);
* images that stop (converged, ``max_iter`` iterations, failed line search) drop out of the
  batch, so the work of a round is proportional to the images still running.

Threads. :func:`run_chunks` cuts the batch into chunks of at most ``batch_size`` images (at
least one per worker) and runs one engine per chunk on a pool of ``workers`` Python threads
(default: one per core), each engine single-threaded: BLAS limited to one thread
(``threadpoolctl``) and Numba to one thread in each worker (Numba's thread count is per
thread). The kernels and the GEMMs release the GIL, so the workers use the cores in
parallel; no two thread pools compete for the cores (issue #20: a Numba pool and a BLAS
pool, each sized to the machine, made stAdv 4-8x slower on 2 cores) and no parallel region
waits at a barrier for a core that another process holds (on a shared machine a 2-thread
Numba region made the engine up to 7x slower). Only under Numba's ``workqueue`` threading
layer, which cannot launch kernels from two threads at once, does one engine run at a time,
with Numba's threads.

The engine works in ``dtype`` (float32 by default in :func:`~.stadv.stadv_attack`). Its
results are deterministic for the same inputs and chunking (``batch_size``, ``workers``);
the chunking changes them only through rounding (BLAS uses other kernels for products with
few rows), and the thread counts not at all.
"""
from __future__ import annotations

import contextlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .lbfgs import _Best
from .lbfgs_round import RUNNING, lbfgs_round, round_kernel

__all__ = ["batched_lbfgs", "run_chunks", "default_workers", "core_limit"]

_CORE_LIMIT = []  # innermost :func:`core_limit` last


def _empty_round(dt):
    """Arguments of a round with no image in dtype ``dt`` (launches the compiled kernel once)."""
    i, f, r = np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 1), dt)
    return (i, r, f, r, r, f, r, r, np.zeros((0, 1, 1), dt), np.zeros((0, 1, 1), dt), np.zeros((0, 1)), i, i,
            f, f, f, i, i, np.zeros(0, bool), r, r, f, i, i, 1, 0.0, 0.0, 1, 1e-4)


def default_workers():
    """The CPU cores this process may use (at most the innermost :func:`core_limit`)."""
    try:
        n = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        n = max(1, os.cpu_count() or 1)
    return min([n] + _CORE_LIMIT[-1:])


@contextlib.contextmanager
def core_limit(n):
    """Inside the block :func:`default_workers` returns at most ``n`` and BLAS and Numba run ``n`` threads.

    A reproduction job (:mod:`stadv_ref.experiments.jobs`) runs under ``core_limit(1)``: its numbers
    then do not depend on the machine or on how many jobs share it.
    """
    _CORE_LIMIT.append(max(1, int(n)))
    try:
        with threadpool_limits(limits=_CORE_LIMIT[-1], user_api="blas"), _numba_threads(_CORE_LIMIT[-1]):
            yield
    finally:
        _CORE_LIMIT.pop()


@contextlib.contextmanager
def _numba_threads(n):
    """Numba's thread count for this thread inside the block (a no-op without Numba)."""
    if "numba" not in sys.modules:
        yield
        return
    import numba
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _concurrent_launches_ok():
    """Whether Numba's parallel kernels may run from several threads at once (not with "workqueue")."""
    if "numba" not in sys.modules:
        return True
    import numba
    try:
        return numba.threading_layer() != "workqueue"
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return numba.config.THREADING_LAYER not in ("workqueue",)


def run_chunks(make_objective, images, batch_size, workers, max_iter, memory, progress, **options):
    """Run :func:`batched_lbfgs` on chunks of consecutive entries of ``images`` (see the module docstring).

    Parameters
    ----------
    make_objective : callable
        ``make_objective(idx)`` returns the :class:`~.objective._KernelObjective` of the images
        ``idx`` (called in the calling thread: the objective binds the backend selected there).
    images : ndarray of int
        The images to attack.
    batch_size : int
        Images per chunk at most.
    workers : int
        Chunks run at once (Python threads); 1 runs them one after the other.
    max_iter, memory, progress, **options
        As in :func:`batched_lbfgs` (``progress``: one bar over the images).

    Returns
    -------
    flow : ndarray of float64, shape (len(images), 2, H, W)
    n_iter, n_eval, status : ndarray of int64, shape (len(images),)
    plan : dict
        ``workers``, ``blas_threads`` and ``numba_threads`` (per worker) used.
    """
    N = len(images)
    kernel = round_kernel(options.get("compiled", True))
    if kernel is not lbfgs_round:  # compile here, and Numba picks its threading layer at the first launch
        kernel(*_empty_round(make_objective(images[:1]).dtype))
    numba_threads = 1
    if workers > 1 and not _concurrent_launches_ok():
        workers, numba_threads = 1, default_workers()
    n_chunks = max(-(-N // batch_size), min(int(workers), N))
    bounds = np.linspace(0, N, n_chunks + 1).round().astype(np.int64)
    chunks = [images[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    workers = max(1, min(int(workers), len(chunks)))
    plan = {"workers": workers, "chunks": len(chunks), "blas_threads": 1, "numba_threads": numba_threads}
    bar = tqdm(total=N, desc="stAdv batched L-BFGS", unit="img", disable=not progress, leave=False)

    def job(fobj):
        with _numba_threads(numba_threads):
            out = batched_lbfgs(fobj, max_iter, memory, False, **options)
        bar.update(fobj.shape[0])
        return out

    objectives = [make_objective(idx) for idx in chunks]

    with threadpool_limits(limits=1, user_api="blas"):
        if workers == 1:
            results = [job(fobj) for fobj in objectives]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(job, objectives))
    bar.close()
    flow = np.concatenate([r[0] for r in results]).astype(np.float64)
    n_iter = np.concatenate([r[1] for r in results])
    n_eval = np.concatenate([r[2] for r in results])
    status = np.concatenate([r[3] for r in results])
    return flow, n_iter, n_eval, status, plan


def batched_lbfgs(fobj, max_iter, memory, progress, *, gtol=1e-5, ftol=2.2e-9, max_ls=20, c1=1e-4,
                  compiled=True):
    """Per-image L-BFGS for the whole batch of ``fobj`` (see the module docstring).

    Parameters
    ----------
    fobj : _KernelObjective
        ``fobj(flow (n, 2HW), idx)`` returns ``objective``, ``grad`` and ``success`` for
        images ``idx``; ``fobj.shape = (N, 2, H, W)``, ``fobj.dtype`` the working precision.
    max_iter : int
        Accepted L-BFGS steps per image at most.
    memory : int
        Curvature pairs kept per image (scipy's ``maxcor``).
    progress : bool
        tqdm bar over the rounds.
    gtol, ftol : float
        Stopping tests of scipy's L-BFGS-B (``pgtol``; ``factr * eps``).
    max_ls : int
        Line-search trials per iteration at most.
    c1 : float
        Armijo constant.
    compiled : bool
        Use the Numba kernel when Numba is installed.

    Returns
    -------
    flow : ndarray, shape (N, 2, H, W)
        Per image the best successful evaluated flow if any, else the last iterate.
    n_iter, n_eval : ndarray of int64, shape (N,)
    status : ndarray of int64, shape (N,)
        Why each image stopped (:data:`~.lbfgs_round.GTOL`, ``FTOL``, ``MAX_ITER``, ``LINE_SEARCH_FAILED``).
    """
    N, _, H, W = fobj.shape
    D = 2 * H * W
    dt = fobj.dtype
    kernel = round_kernel(compiled)
    best = _Best(N, (2, H, W), dt)
    x, g, d = (np.zeros((N, D), dtype=dt) for _ in range(3))
    S = np.zeros((N, memory, D), dtype=dt)
    Y = np.zeros((N, memory, D), dtype=dt)
    rho = np.zeros((N, memory))
    f, gamma, step, gd = np.zeros(N), np.ones(N), np.ones(N), np.zeros(N)
    head, cnt, n_ls, n_iter, n_eval = (np.zeros(N, dtype=np.int64) for _ in range(5))
    started = np.zeros(N, dtype=bool)
    xc, gc = np.zeros((N, D), dtype=dt), np.zeros((N, D), dtype=dt)
    fc, n_ext = np.zeros(N), np.zeros(N, dtype=np.int64)
    act = np.arange(N, dtype=np.int64)
    xt = np.zeros((N, D), dtype=dt)
    status = np.zeros(N, dtype=np.int64)
    final = np.zeros(N, dtype=np.int64)
    settings = (int(max_iter), float(gtol), float(ftol), int(max_ls), float(c1))
    bar = tqdm(desc="stAdv batched L-BFGS", unit="round", disable=not progress, leave=False)
    while act.size:
        out = fobj(xt, act)
        n_eval[act] += 1
        best.update(act, xt.reshape(-1, 2, H, W), out)
        gt = np.ascontiguousarray(out["grad"], dtype=dt)
        ft = np.ascontiguousarray(out["objective"], dtype=np.float64)
        st = status[:act.size]
        kernel(act, xt, ft, gt, x, f, g, d, S, Y, rho, head, cnt, gamma, step, gd, n_ls, n_iter,
               started, xc, gc, fc, n_ext, st, *settings)
        keep = st == RUNNING
        if not keep.all():
            final[act[~keep]] = st[~keep]
            act, xt = act[keep], np.ascontiguousarray(xt[keep])
        bar.update()
        bar.set_postfix(running=int(act.size), success=f"{best.ok.mean():.3f}", refresh=False)
    bar.close()
    return best.result(x.reshape(N, 2, H, W)), n_iter, n_eval, final
