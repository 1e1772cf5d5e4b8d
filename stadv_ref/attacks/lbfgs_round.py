r"""One round of the batched L-BFGS engine: every running image advances by one evaluation.

The engine (:mod:`.engine`) keeps, per image ``k``, its own L-BFGS state -- iterate ``x[k]``,
value ``f[k]``, gradient ``g[k]``, search direction ``d[k]``, step, a ring of up to ``m``
curvature pairs ``S[k], Y[k]`` (``(m, D)``, the image's own write position and count) --
and evaluates the objective of all running images at their trial points ``x[k] + step[k] d[k]``
in one batched call. :func:`lbfgs_round` then moves each image's state machine on by that one
evaluation:

* the first evaluation (at the zero flow) sets ``f, g`` and the first direction ``-g`` with
  scipy's first step ``1 / ||g||``;
* a line-search trial that meets the Armijo condition ``f_t <= f + c1 step g^T d`` while the
  slope there is still steep (``g_t^T d < 0.9 g^T d``, the curvature condition fails) is kept
  and the step multiplied by 4 (at most 10 times; a later trial that is not better takes the
  kept point), as a Wolfe line search would extrapolate; otherwise it is accepted;
* on acceptance the pair ``s = x_t - x``, ``y = g_t - g`` is kept when ``s^T y > eps y^T y``
  (else skipped, as in L-BFGS-B; it is written to the ring's next slot in the same pass, so
  with a full memory a skipped pair also drops the oldest one); the stopping tests of scipy's
  L-BFGS-B follow (``max |g| <= gtol``; relative decrease ``<= ftol`` after every accepted
  step, backtracked or not, as in scipy -- testing only steps accepted at their first trial kept
  images whose line searches backtrack every iteration (a failing attack on a kinked objective)
  running to ``max_iter`` at ~10 evaluations per iteration; ``max_iter`` iterations); the next
  direction is the two-loop recursion ``-H g`` (Nocedal & Wright, Alg. 7.4; ``H_0 = gamma I``,
  ``gamma = s^T y / y^T y`` of the newest pair) with step 1, and a direction that does not
  descend restarts from ``-g`` with an empty memory;
* a rejected trial backtracks: the minimiser of the quadratic through ``f, g^T d`` and ``f_t``,
  kept in ``[0.1, 0.5]`` times the step; after ``max_ls`` rejections the image stops.

So no image ever waits for another: every call evaluates each running image exactly once and
the images whose state machine stops drop out of the batch (:mod:`.engine` compacts it).

:func:`lbfgs_round` is plain Python over NumPy; :func:`round_kernel` returns it compiled by
Numba (``parallel=True``, images spread over Numba's threads, the vector helpers as the SIMD
loops of :data:`_LOOPS`) when Numba is installed, else the Python function
itself -- one source for both.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

__all__ = ["lbfgs_round", "round_kernel", "RUNNING", "GTOL", "FTOL", "MAX_ITER", "LINE_SEARCH_FAILED"]

RUNNING, GTOL, FTOL, MAX_ITER, LINE_SEARCH_FAILED = 0, 1, 2, 3, 4
"""Per-image status after a round: running, or why the image stopped (``max |g| <= gtol``,
relative decrease ``<= ftol``, ``max_iter`` steps, ``max_ls`` rejected trials)."""

# ---------------------------------------------------------------------------
# vector helpers: NumPy here, SIMD loops in the compiled kernel (_LOOPS)
# ---------------------------------------------------------------------------
def _dot(a, b):
    """``a . b`` of two 1-D arrays (a float)."""
    return float(np.dot(a, b))


def _axpy(alpha, x, y):
    """In place ``y += alpha x``."""
    y += alpha * x


def _axpy_dot(alpha, x, q, z):
    """In place ``q += alpha x``, then ``z . q`` (one pass)."""
    q += alpha * x
    return float(np.dot(z, q))


def _scale_dot(c, q, z):
    """In place ``q *= c``, then ``z . q`` (one pass)."""
    q *= c
    return float(np.dot(z, q))


def _take_step(xn, x, gn, g, s_out, y_out):
    """``s_out = xn - x``, ``y_out = gn - g``, then ``x = xn``, ``g = gn`` (one pass).

    Returns ``(s^T y, y^T y, max |gn|)``.
    """
    np.subtract(xn, x, out=s_out)
    np.subtract(gn, g, out=y_out)
    x[:] = xn
    g[:] = gn
    return float(np.dot(s_out, y_out)), float(np.dot(y_out, y_out)), float(np.max(np.abs(gn)))


def _step_point(x, alpha, d, out):
    """``out = x + alpha d`` (one pass)."""
    out[:] = x
    out += alpha * d


def _direction(k, g, d, S, Y, rho, head, cnt, gamma, alphas):
    """``d[k] = -H g[k]`` (two-loop recursion, image ``k``'s pairs newest first); returns ``g^T d``.

    The dot product each update of ``q`` is followed by is taken in the same pass.
    """
    m = S.shape[1]
    c = cnt[k]
    q = d[k]
    q[:] = g[k]
    r = _dot(S[k, (head[k] - 1) % m], q)
    for j in range(c):
        sl = (head[k] - 1 - j) % m
        a = rho[k, sl] * r
        alphas[j] = a
        if j + 1 < c:
            r = _axpy_dot(-a, Y[k, sl], q, S[k, (sl - 1) % m])
        else:
            _axpy(-a, Y[k, sl], q)
    r = _scale_dot(gamma[k], q, Y[k, (head[k] - c) % m])
    for j in range(c - 1, -1, -1):
        sl = (head[k] - 1 - j) % m
        b = rho[k, sl] * r
        if j > 0:
            r = _axpy_dot(alphas[j] - b, S[k, sl], q, Y[k, (sl + 1) % m])
        else:
            _axpy(alphas[j] - b, S[k, sl], q)
    return _scale_dot(-1.0, q, g[k])


def _steepest(k, g, d, cnt, step, gd):
    """Restart image ``k`` from ``-g`` with scipy's first step ``1 / ||g||`` and an empty memory."""
    d[k] = g[k]
    gg = _scale_dot(-1.0, d[k], d[k])
    gd[k] = -gg
    step[k] = 1.0 / max(np.sqrt(gg), 1e-12)
    cnt[k] = 0


def lbfgs_round(act, xt, ft, gt, x, f, g, d, S, Y, rho, head, cnt, gamma, step, gd, n_ls, n_iter,
                started, xc, gc, fc, n_ext, status, max_iter, gtol, ftol, max_ls, c1):
    """Advance the images ``act`` by the evaluation ``ft, gt`` at their trial points ``xt``.

    Parameters
    ----------
    act : ndarray of int64, shape (n,)
        The running images (row ``i`` of ``xt, ft, gt`` belongs to image ``act[i]``).
    xt : ndarray, shape (n, D)
        In: the evaluated trial points. Out: the next trial points (rows of stopped images unused).
    ft : ndarray of float64, shape (n,)
    gt : ndarray, shape (n, D)
        Objective values and gradients at ``xt``.
    x, g, d : ndarray, shape (N, D)
        Per image: iterate, gradient at it, search direction.
    f, gamma, step, gd : ndarray of float64, shape (N,)
        Value at ``x``, initial inverse-Hessian scaling, current step, ``g^T d``.
    S, Y : ndarray, shape (N, m, D); rho : ndarray of float64, shape (N, m)
        Curvature-pair rings, ``rho = 1 / s^T y``.
    head, cnt, n_ls, n_iter : ndarray of int64, shape (N,)
        Ring write position, stored pairs, rejected trials of the current line search,
        accepted steps.
    started : ndarray of bool, shape (N,)
        Whether the image has its first evaluation.
    xc, gc : ndarray, shape (N, D); fc : ndarray of float64, shape (N,); n_ext : ndarray of int64
        The line search's acceptable point while it extrapolates, and the extrapolations so far.
    status : ndarray of int64, shape (n,)
        Out: :data:`RUNNING` or why the image stopped.
    max_iter, gtol, ftol, max_ls, c1
        Stopping and line-search settings (see :mod:`.engine`).
    """
    for i in range(act.shape[0]):
        _image_step(i, act, xt, ft, gt, x, f, g, d, S, Y, rho, head, cnt, gamma, step, gd, n_ls, n_iter,
                    started, xc, gc, fc, n_ext, status, max_iter, gtol, ftol, max_ls, c1)


C2 = 0.9
"""Curvature constant: a step with ``g_t^T d < C2 g^T d`` (still steep) is extrapolated."""
MAX_EXTRAPOLATIONS, EXTRAPOLATION = 10, 4.0
"""At most this many extrapolations per line search, each multiplying the step by ``EXTRAPOLATION``."""


def _image_step(i, act, xt, ft, gt, x, f, g, d, S, Y, rho, head, cnt, gamma, step, gd, n_ls, n_iter,
                started, xc, gc, fc, n_ext, status, max_iter, gtol, ftol, max_ls, c1):
    """One image's part of :func:`lbfgs_round` (row ``i``, image ``act[i]``)."""
    k = act[i]
    st = RUNNING
    if not started[k]:
        started[k] = True
        x[k] = xt[i]
        f[k] = ft[i]
        g[k] = gt[i]
        if np.max(np.abs(g[k])) <= gtol:
            st = GTOL
        else:
            _steepest(k, g, d, cnt, step, gd)
    elif ft[i] <= f[k] + c1 * step[k] * gd[k] and (n_ext[k] == 0 or ft[i] < fc[k]):    # Armijo
        if n_ext[k] < MAX_EXTRAPOLATIONS and _dot(gt[i], d[k]) < C2 * gd[k]:
            xc[k] = xt[i]                              # still steep: keep the point, try further
            gc[k] = gt[i]
            fc[k] = ft[i]
            n_ext[k] += 1
            step[k] *= EXTRAPOLATION
        else:
            st = _accept(k, xt[i], ft[i], gt[i], x, f, g, d, S, Y, rho, head, cnt, gamma, step, gd, n_ls,
                         n_iter, n_ext, max_iter, gtol, ftol)
    elif n_ext[k] > 0:                                  # an extrapolation went too far: take the last point
        st = _accept(k, xc[k], fc[k], gc[k], x, f, g, d, S, Y, rho, head, cnt, gamma, step, gd, n_ls,
                     n_iter, n_ext, max_iter, gtol, ftol)
    else:                                               # reject: backtrack
        n_ls[k] += 1
        if n_ls[k] >= max_ls:
            st = LINE_SEARCH_FAILED
        else:
            a = step[k]
            curv = ft[i] - f[k] - gd[k] * a
            new = -gd[k] * a * a / (2.0 * curv) if curv > 0 else 0.5 * a
            step[k] = min(max(new, 0.1 * a), 0.5 * a)
    status[i] = st
    if st == RUNNING:
        _step_point(x[k], step[k], d[k], xt[i])


def _accept(k, xn, fn, gn, x, f, g, d, S, Y, rho, head, cnt, gamma, step, gd, n_ls, n_iter, n_ext,
            max_iter, gtol, ftol):
    """Move image ``k`` to the accepted point ``xn`` (value ``fn``, gradient ``gn``); its new status."""
    m = S.shape[1]
    h = head[k]
    sy, yy, gmax = _take_step(xn, x[k], gn, g[k], S[k, h], Y[k, h])   # the pair goes to the next slot
    if sy > 2.2e-16 * yy:
        rho[k, h] = 1.0 / sy
        gamma[k] = sy / yy
        head[k] = (h + 1) % m
        cnt[k] = min(cnt[k] + 1, m)
    elif cnt[k] == m:  # a skipped pair overwrote the oldest one: it leaves the memory
        cnt[k] = m - 1
    f_old = f[k]
    f[k] = fn
    n_iter[k] += 1
    n_ls[k] = 0
    n_ext[k] = 0
    if gmax <= gtol:
        return GTOL
    if (f_old - f[k]) <= ftol * max(abs(f_old), abs(f[k]), 1.0):
        return FTOL
    if n_iter[k] >= max_iter:
        return MAX_ITER
    if cnt[k] > 0:
        gd[k] = _direction(k, g, d, S, Y, rho, head, cnt, gamma, np.empty(m))
        step[k] = 1.0
    if cnt[k] == 0 or not gd[k] < 0:
        _steepest(k, g, d, cnt, step, gd)
    return RUNNING


# ---------------------------------------------------------------------------
# the compiled kernel (Numba, optional)
# ---------------------------------------------------------------------------
def _loop_dot(a, b):
    s = a.dtype.type(0)
    for t in range(a.shape[0]):
        s += a[t] * b[t]
    return float(s)


def _loop_axpy(alpha, x, y):
    a = y.dtype.type(alpha)
    for t in range(x.shape[0]):
        y[t] += a * x[t]


def _loop_axpy_dot(alpha, x, q, z):
    a = q.dtype.type(alpha)
    s = q.dtype.type(0)
    for t in range(x.shape[0]):
        v = q[t] + a * x[t]
        q[t] = v
        s += z[t] * v
    return float(s)


def _loop_scale_dot(c, q, z):
    a = q.dtype.type(c)
    s = q.dtype.type(0)
    for t in range(q.shape[0]):
        v = q[t] * a
        q[t] = v
        s += z[t] * v
    return float(s)


def _loop_take_step(xn, x, gn, g, s_out, y_out):
    sy = xn.dtype.type(0)
    yy = xn.dtype.type(0)
    gmax = xn.dtype.type(0)
    for t in range(xn.shape[0]):
        s = xn[t] - x[t]
        y = gn[t] - g[t]
        s_out[t] = s
        y_out[t] = y
        x[t] = xn[t]
        g[t] = gn[t]
        sy += s * y
        yy += y * y
        gmax = max(gmax, abs(gn[t]))
    return float(sy), float(yy), float(gmax)


def _loop_step_point(x, alpha, d, out):
    a = out.dtype.type(alpha)
    for t in range(x.shape[0]):
        out[t] = x[t] + a * d[t]


_LOOPS = {_dot: _loop_dot, _axpy: _loop_axpy, _axpy_dot: _loop_axpy_dot, _scale_dot: _loop_scale_dot,
          _take_step: _loop_take_step, _step_point: _loop_step_point}
"""The compiled kernel's loop for each vector helper (same result up to rounding)."""


def _returns(impl):
    """An overload typing function (same parameters as ``impl``) that returns ``impl``."""
    def typer(*args):
        return impl
    typer.__signature__ = inspect.signature(impl)
    return typer


@functools.lru_cache(maxsize=2)
def round_kernel(compiled=True):
    """:func:`lbfgs_round`, compiled by Numba when ``compiled`` and Numba is installed.

    The compiled kernel (cached on disk) runs the images of a round in parallel on Numba's
    threads, the vector loops of :func:`_dot` and :func:`_axpy` as SIMD loops; each image is
    handled by one thread, so its results do not depend on the number of threads. Without
    Numba (or ``compiled=False``) this is :func:`lbfgs_round` itself.
    """
    if not compiled:
        return lbfgs_round
    try:
        import numba
        from numba.extending import overload, register_jitable
    except ImportError:
        return lbfgs_round
    fast = dict(fastmath={"reassoc", "contract"})
    for helper, loop in _LOOPS.items():
        overload(helper, jit_options=fast)(_returns(loop))
    for fn in (_steepest, _direction, _accept, _image_step):
        register_jitable(fn)
    prange_ = numba.prange

    @numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
    def compiled_round(act, xt, ft, gt, x, f, g, d, S, Y, rho, head, cnt, gamma, step, gd, n_ls, n_iter,
                       started, xc, gc, fc, n_ext, status, max_iter, gtol, ftol, max_ls, c1):
        for i in prange_(act.shape[0]):
            _image_step(i, act, xt, ft, gt, x, f, g, d, S, Y, rho, head, cnt, gamma, step, gd, n_ls, n_iter,
                        started, xc, gc, fc, n_ext, status, max_iter, gtol, ftol, max_ls, c1)

    return compiled_round
