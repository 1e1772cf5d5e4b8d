r"""The two optimisers of the stAdv attack, both minimising one objective per image.

* :func:`_reference_lbfgsb` -- the reference: :func:`scipy.optimize.minimize`
  (``method="L-BFGS-B"``, unbounded) per image, as in stAdv;
* :func:`_batched_lbfgs` -- one vectorised objective/gradient for the whole batch and a
  per-example L-BFGS (two-loop recursion :func:`_two_loop`, per-example backtracking
  Armijo line search) in NumPy.

Both report, per image, the successful point with the smallest objective among all the
points they evaluated, if any (:class:`_Best`: an optimiser that oscillates across the
decision boundary still reports its adversarial example), else their final iterate.
The objective itself (the stAdv loss over the warp of Eq. (1)) is :mod:`.objective`.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from tqdm.auto import tqdm


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


def _reference_lbfgsb(obj, max_iter, memory, progress):
    """Per-image ``scipy.optimize.minimize(method="L-BFGS-B")`` (the stAdv reference).

    ``obj(flow (1, 2, H, W), idx)`` returns ``objective``, ``grad`` and ``success``
    (a :class:`~.objective.StadvObjective`); ``obj.shape = (N, 2, H, W)``.
    """
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


def _batched_lbfgs(fobj, max_iter, memory, progress, gtol=1e-5, ftol=2.2e-9, max_ls=20, c1=1e-4):
    """Per-example L-BFGS (two-loop recursion) run on the whole batch at once.

    ``fobj(x (n, 2HW), idx)`` returns ``objective``, ``grad (n, 2HW)`` and ``success`` for
    the flat flows of images ``idx`` (a :class:`~.objective._KernelObjective`);
    ``fobj.shape = (N, 2, H, W)``.

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
    N, _, H, W = fobj.shape
    D = 2 * H * W
    shp = (2, H, W)
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
    return best.result(x_final.reshape(fobj.shape)), n_iter, n_eval
