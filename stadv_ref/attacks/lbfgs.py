r"""The reference optimiser of the stAdv attack and the record both optimisers report from.

* :func:`_reference_lbfgsb` -- the reference: :func:`scipy.optimize.minimize`
  (``method="L-BFGS-B"``, unbounded) per image, as in stAdv (float64);
* :class:`_Best` -- per image, the successful point with the smallest objective among all
  the points an optimiser evaluated, if any (an optimiser that oscillates across the
  decision boundary still reports its adversarial example), else its final iterate. The
  batched engine (:mod:`.engine`) reports through it too.

The objective itself (the stAdv loss over the warp of Eq. (1)) is :mod:`.objective`.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from tqdm.auto import tqdm


class _Best:
    """Per image, the successful evaluated point with the lowest objective (if any)."""

    def __init__(self, n, shape, dtype=np.float64):
        self.flow = np.zeros((n,) + shape, dtype=dtype)
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
