r"""The experiments behind the figures, one curve per network: shared by ``stadv reproduce`` and the CLI.

* :func:`lower_bound_curve` -- Theorem 1 and Algorithm 1 (Eqs. (6)-(8), [E8], [E10]) for every budget
  ``eps`` (Fig. 2), with the per-iteration data of Fig. 4 (:func:`_convergence`);
* :func:`certify_curve` -- the 0/1 adversarial loss from an upper bound (Section 4.1, appendix 6.7,
  the [E13] margin rule) per budget (Figs. 5 and 11);
* :func:`soundness_spot_check` -- the projected-gradient flow attack on certified test points at
  their certified radius: no certified point may be flipped;
* :func:`attack_curve` -- stAdv success rate and adversarial accuracy per ``tau`` (Fig. 6);
* :func:`local_curve` -- certified accuracy from the per-image certificate (fast and tight), from the
  best global bound ([E13] rule), and accuracy under the flow attack (the ceiling) per budget (issue #21).

Each returns a JSON-ready dict (lists over the budgets); the plots are in :mod:`.plots`.
"""
from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..adversarial_loss import cw_margin
from ..attacks import flow_pgd_attack, flow_pgd_attack_images, stadv_attack
from ..lower_bounds import lower_bound_attack
from ..upper_bounds import certify, local_pair_bounds

__all__ = ["lower_bound_curve", "certify_curve", "soundness_spot_check", "attack_curve", "local_curve"]

_LB_FIELDS = ("exact_loss", "theorem_value", "theorem_exact_loss", "linearized_loss", "midpoint_loss",
              "init_exact_loss", "flow_norm", "x_inf_norm", "cycle_detected", "converged", "n_outer", "y", "classes")


def lower_bound_curve(net, eps_list, *, flow="tied", max_iter=30, n=16, n_restarts=0, seed=0, y=None,
                      classes=None, progress=True, keep_results=False):
    """Theorem 1 and Algorithm 1 (:func:`stadv_ref.lower_bound_attack`) for every budget.

    Parameters
    ----------
    net : OneHiddenLayerNet
    eps_list : sequence of float
    flow, max_iter, n, n_restarts, seed, y, classes
        Passed to :func:`stadv_ref.lower_bound_attack`.
    progress : bool
    keep_results : bool
        Also return the :class:`~stadv_ref.LowerBoundResult` objects.

    Returns
    -------
    dict
        ``eps`` and, per field of :data:`_LB_FIELDS`, a list over ``eps``; ``convergence``
        (exact loss after each outer iteration, per ``eps``); ``results`` if requested.
    """
    out = {"eps": [float(e) for e in eps_list], **{k: [] for k in _LB_FIELDS}, "convergence": [], "notes": None}
    results = []
    for eps in tqdm(list(eps_list), desc="lower bound", unit="eps", disable=not progress):
        res = lower_bound_attack(net, float(eps), flow=flow, max_iter=max_iter, n=n, n_restarts=n_restarts,
                                 seed=seed, y=y, classes=classes, progress=False)
        for k in _LB_FIELDS:
            out[k].append(getattr(res, k))
        out["convergence"].append(_convergence(res))
        out["notes"] = list(res.notes)
        results.append(res)
    if keep_results:
        out["results"] = results
    return out


def _convergence(res):
    """Fig. 4 data: the Theorem 1 pair's exact loss, then the best exact loss after each outer iteration.

    Uses the restart that produced the returned pair; entry 0 is its initialisation.
    """
    hist = res.history
    if not hist:
        return [float(res.exact_loss)]
    best_restart = hist[res.best_step]["restart"]
    entries = [h for h in hist if h.get("restart") == best_restart]
    init = [float(h["exact_loss"]) for h in entries if h.get("outer") is None]
    best = max(init) if init else -np.inf
    curve = [best]
    outers = sorted({h["outer"] for h in entries if h.get("outer") is not None})
    for k in outers:
        best = max([best] + [float(h["exact_loss"]) for h in entries if h.get("outer") == k])
        curve.append(best)
    return curve


def certify_curve(net, X, y, eps_list, methods, *, input_range=(0.0, 1.0), cache_dir=None, gap_tol=1e-5,
                  seed=0, flow="tied", tightness="fast", progress=True, keep=False):
    """0/1 adversarial loss (fraction not certified) per method and budget (Figs. 5 and 11).

    Parameters
    ----------
    net : OneHiddenLayerNet
        Multi-class network.
    X, y : arrays
        Test images and labels.
    eps_list : sequence of float
    methods : sequence of str
        Methods of :func:`stadv_ref.certify` (:data:`stadv_ref.upper_bounds.CERTIFY_METHODS`): the global
        class-pair bounds of :func:`stadv_ref.upper_bound` or ``"local"`` (the per-image certificate).
    input_range : (float, float)
    cache_dir : path, optional
        On-disk cache of the class-pair bounds (:func:`stadv_ref.certify`).
    gap_tol : float
        Certified relative gap at which the SDP solvers stop (the bounds stay certified; a larger
        tolerance only makes them up to that fraction looser).
    seed : int
        Seed of the SDP solvers (:func:`stadv_ref.certify`).
    flow, tightness : str
        Options of ``method="local"`` (:func:`stadv_ref.certify`); the global methods certify tied flows.
    progress : bool
    keep : bool
        Also return the :class:`~stadv_ref.upper_bounds.CertificationResult` per method (``results``).

    Returns
    -------
    dict
        ``eps``, ``methods``, ``zero_one[method]`` (list over eps), ``certified_count[method]``,
        ``sound[method]``, ``pair_bounds[method]`` (per-unit bounds ``B_iy``; global methods only),
        ``clean_error``; ``results[method]`` with ``keep``.
    """
    eps_list = [float(e) for e in eps_list]
    out = {"eps": eps_list, "methods": list(methods), "zero_one": {}, "sound": {}, "certified_count": {},
           "pair_bounds": {}, "seconds": {}}
    out["clean_error"] = float((net.predict(X) != y).mean())
    out["n"] = int(len(y))
    results = {}
    for m in tqdm(list(methods), desc="certify", unit="bound", disable=not progress):
        t0 = time.perf_counter()
        local = dict(flow=flow, tightness=tightness) if m == "local" else {}
        res = certify(net, X, y, eps_list, method=m, input_range=tuple(input_range), cache_dir=cache_dir,
                      gap_tol=gap_tol, seed=seed, progress=progress, **local)
        flags = np.asarray(res.certified, dtype=bool).reshape(len(eps_list), -1)
        out["zero_one"][m] = [float(1 - f.mean()) for f in flags]
        out["certified_count"][m] = [int(f.sum()) for f in flags]
        out["sound"][m] = bool(res.sound)
        if m != "local":  # the per-image certificate has no class-pair table
            b = np.asarray(res.bounds, float)
            out["pair_bounds"][m] = np.where(np.isfinite(b), b, 0.0)
        out["seconds"][m] = round(time.perf_counter() - t0, 3)
        results[m] = res
    if keep:
        out["results"] = results
    return out


def soundness_spot_check(net, X, y, radius, *, n_points=3, eps_cap=10.0, restarts=4, steps=60, seed=0,
                         input_range=(0.0, 1.0)):
    """Attack certified test points just inside their certified radius: none may be flipped.

    For each of the first ``n_points`` examples with ``radius > 0`` the projected-gradient flow
    attack (:func:`stadv_ref.attacks.flow_pgd_attack`, tied and untied flows) maximises
    ``f_i - f_y`` for every ``i != y`` at ``eps = min(radius, eps_cap) (1 - 1e-9)``. A sound
    certificate ([E13] rule) means the attacked margin ``f_i - f_y`` stays negative.

    Parameters
    ----------
    net : OneHiddenLayerNet
        Multi-class network.
    X, y : arrays
        Test images and labels.
    radius : ndarray, shape (N,)
        Certified radii (:attr:`~stadv_ref.upper_bounds.CertificationResult.certified_radius`).
    n_points : int
    eps_cap : float
        Largest budget attacked (radii can be infinite).
    restarts, steps, seed, input_range
        Passed to :func:`stadv_ref.attacks.flow_pgd_attack`.

    Returns
    -------
    list of dict
        Per point: ``index``, ``eps``, ``max_attacked_margin_i_minus_y`` and ``flipped``.
    """
    rows = []
    for k in np.flatnonzero(np.asarray(radius) > 0)[:n_points]:
        eps = float(min(radius[k], eps_cap)) * (1 - 1e-9)
        clean = net(X[k][None])[0]
        worst = -np.inf
        for i in range(net.n_classes):
            if i == y[k]:
                continue
            for tied in (True, False):
                a = flow_pgd_attack(net, eps, classes=(i, int(y[k])), x=X[k], tied=tied, restarts=restarts,
                                    steps=steps, seed=seed, input_range=tuple(input_range))
                # margin f_i - f_y at the attacked image: clean margin plus the attack's gain
                worst = max(worst, a.value - (clean[y[k]] - clean[i]))
        rows.append({"index": int(k), "eps": eps, "max_attacked_margin_i_minus_y": float(worst),
                     "flipped": bool(worst >= 0)})
    return rows


def attack_curve(net, X, y, taus, *, method="batched", max_iter=200, kappa=0.0, target=None, progress=True,
                 keep=False, **options):
    """stAdv success rate and adversarial accuracy per ``tau`` (Fig. 6).

    Parameters
    ----------
    net, X, y, method, max_iter, kappa
        As in :func:`stadv_ref.stadv_attack`.
    taus : sequence of float
        The flow-loss weights, one attack each.
    target : int or array_like of int, optional
        Targeted attack: one class for every image, or one per image (must differ from ``y``).
    progress : bool
        The attack's progress bar (it moves once per batch of images), under a bar over ``tau``
        when there are several.
    keep : bool
    **options
        Further keywords of :func:`stadv_ref.stadv_attack` (e.g. ``batch_size``).

    Returns
    -------
    dict
        ``tau``, ``success_rate`` (among correctly classified images), ``adv_accuracy`` (fraction of all
        images still correctly classified after the attack), ``benign_accuracy``, mean ``l_diff`` and
        ``flow_norm`` of successful flows, ``median_clean_margin`` (median logit margin
        ``f_y - max_{i != y} f_i`` of the correctly classified clean images: at a fixed ``tau`` the CW
        term competes with ``tau L_flow``, so small-margin networks look harder to attack); with ``keep``
        also ``results`` (the :class:`StadvResult` objects). A targeted attack succeeds on an image when
        it is classified as its target; ``adv_accuracy`` counts the images still classified correctly.
    """
    if target is not None and np.ndim(target) == 0:
        target = np.full(len(y), target)
    pred = net.predict(X)
    correct = pred == y
    margin = -cw_margin(net, X, y, kappa=float("inf"))[0]
    out = {"tau": [float(t) for t in taus], "benign_accuracy": float(correct.mean()), "n": int(len(y)),
           "median_clean_margin": float(np.median(margin[correct])) if correct.any() else None,
           "success_rate": [], "adv_accuracy": [], "mean_l_diff": [], "mean_flow_norm": []}
    results = []
    for tau in tqdm(list(taus), desc="stAdv", unit="tau", disable=not progress or len(out["tau"]) == 1):
        res = stadv_attack(net, X, y, float(tau), method=method, max_iter=max_iter, kappa=kappa, target=target,
                           progress=progress, **options)
        succ = np.asarray(res.success, bool)
        # an image already misclassified counts as "attack succeeded" in stadv_attack; Fig. 6 reports the
        # success rate among the images the network classifies correctly
        out["success_rate"].append(float(succ[correct].mean()) if correct.any() else float("nan"))
        kept = ~succ if target is None else np.asarray(res.pred) == y  # still classified correctly
        out["adv_accuracy"].append(float((kept & correct).mean()))
        out["mean_l_diff"].append(float(np.mean(res.l_diff[succ])) if succ.any() else 0.0)
        out["mean_flow_norm"].append(float(np.mean(res.flow_norm[succ])) if succ.any() else 0.0)
        results.append(res)
    if keep:
        out["results"] = results
    return out


def local_curve(net, X, y, eps_list, *, extra_eps=(), stop_broken=0.5, global_methods=("spectral",), cache_dir=None,
                gap_tol=1e-5, seed=0, attack_seed=0, restarts=3, steps=40, max_classes=2, progress=True):
    """Certified accuracy (per-image fast and tight, best global) and accuracy under attack per budget.

    The budgets are ``eps_list`` (all of them), then those of ``extra_eps`` above it in increasing
    order until the attack breaks at least ``stop_broken`` of the images. Per budget (tied flows,
    zero padding): the fast per-image certificate (:func:`stadv_ref.local_pair_bounds`) on every
    image not yet broken; the tight one on those the fast one leaves (it is elementwise at most
    the fast bound); then the projected-gradient flow attack (:func:`stadv_ref.attacks.flow_pgd_attack_images`:
    :func:`stadv_ref.attacks.flow_pgd_attack` with ``x`` fixed, all images of a budget at once, an image
    leaving the batch once it is broken) on the images neither certifies, against their classes with a tight bound ``>= 0``
    (largest first, at most ``max_classes``). A misclassified image is broken at every budget and
    an image broken at one budget at every larger one (the budget sets are nested): neither is
    certified by a sound bound nor computed again. The best global bound certifies with the
    elementwise minimum of the class-pair bounds of ``global_methods`` (:func:`stadv_ref.certify`,
    on-disk cache ``cache_dir``).

    Parameters
    ----------
    net : OneHiddenLayerNet
        Multi-class network.
    X, y : arrays
        Test images ``(N, H, W)`` in ``[0, 1]`` and labels.
    eps_list, extra_eps : sequences of float
    stop_broken : float or None
        Fraction of broken images after which no further ``extra_eps`` is computed (``None``: all of
        them; a job on part of the images does so, and :func:`.shards.merge_local` applies the rule
        to the merged ceiling).
    global_methods : sequence of str
        Sound global methods of :func:`stadv_ref.certify`.
    cache_dir, gap_tol, seed
        Passed to :func:`stadv_ref.certify` (the defaults of :func:`certify_curve`, so the bounds that
        Fig. 11 cached are found).
    attack_seed : int
        The attack on image ``n`` is seeded with ``attack_seed + n``.
    restarts, steps, max_classes : int
        Attack settings.
    progress : bool

    Returns
    -------
    dict
        ``eps``, ``n``, ``clean_accuracy``, ``global_methods``; per budget ``certified_fast``,
        ``certified_tight``, ``certified_global``, ``attack_accuracy``, ``gap_fast`` and ``gap_tight``
        (attack minus certified), ``attacked_images``; ``seconds`` per part.
    """
    grid = sorted(float(e) for e in eps_list)
    budgets = grid + sorted(float(e) for e in extra_eps if float(e) > grid[-1])
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    N = len(y)
    clean = net(X)
    broken = net.predict(X) != y
    out = {"eps": [], "n": int(N), "clean_accuracy": float(np.mean(~broken)), "global_methods": list(global_methods),
           "certified_fast": [], "certified_tight": [], "certified_global": [], "attack_accuracy": [],
           "attacked_images": [], "seconds": {"fast": 0.0, "tight": 0.0, "attack": 0.0, "global": 0.0}}
    sec = out["seconds"]
    for k, eps in enumerate(tqdm(budgets, desc="local", unit="eps", disable=not progress)):
        if k >= len(grid) and stop_broken is not None and out["attack_accuracy"][-1] <= 1 - stop_broken:
            break
        fast, tight = np.zeros(N, bool), np.zeros(N, bool)
        live = np.flatnonzero(~broken)
        t0 = time.perf_counter()
        if live.size:
            fast[live] = local_pair_bounds(net, X[live], y[live], eps, tightness="fast").max(axis=1) < 0
        todo = np.flatnonzero(~broken & ~fast)
        t1 = time.perf_counter()
        T = local_pair_bounds(net, X[todo], y[todo], eps, tightness="tight") if todo.size else np.zeros((0, 1))
        tight[todo] = T.max(axis=1) < 0
        tight |= fast
        t2 = time.perf_counter()
        rows = np.flatnonzero(~tight[todo])  # rows of T: the images neither certificate certifies
        attacked = len(rows)
        order = np.argsort(-T[rows], axis=1, kind="stable")[:, :max_classes]  # classes, largest bound first
        for rank in range(order.shape[1]):  # every image's rank-th class at once, while it is not broken
            cls = order[:, rank]
            sel = np.flatnonzero((T[rows, cls] >= 0) & ~broken[todo[rows]])
            if not sel.size:
                break
            n, i = todo[rows[sel]], cls[sel]
            label = y[n].astype(np.int64)
            need = clean[n, label] - clean[n, i]  # broken when l_adv + f_i(x) - f_y(x) > 0
            a = flow_pgd_attack_images(net, eps, X[n], np.stack([i, label], axis=1), restarts=restarts, steps=steps,
                                       seeds=attack_seed + n, stop_above=need)
            broken[n[a.values > need]] = True
        sec["fast"] += t1 - t0
        sec["tight"] += t2 - t1
        sec["attack"] += time.perf_counter() - t2
        out["eps"].append(eps)
        out["certified_fast"].append(float(fast.mean()))
        out["certified_tight"].append(float(tight.mean()))
        out["attack_accuracy"].append(float(np.mean(~broken)))
        out["attacked_images"].append(attacked)
    t0 = time.perf_counter()
    res = [certify(net, X, y, out["eps"], method=m, cache_dir=cache_dir, gap_tol=gap_tol, seed=seed, progress=False)
           for m in global_methods]
    required = np.minimum.reduce([r.required for r in res])  # (N, K): min over the methods of B_{i, y_n}
    eps_arr = np.asarray(out["eps"])[:, None, None]
    cert = np.all(res[0].margins[None] > eps_arr * required[None], axis=2)
    out["certified_global"] = [float(c.mean()) for c in cert]
    sec["global"] = time.perf_counter() - t0
    for level in ("fast", "tight"):
        out[f"gap_{level}"] = [a - c for a, c in zip(out["attack_accuracy"], out[f"certified_{level}"])]
    out["seconds"] = {k: round(v, 3) for k, v in sec.items()}
    return out
