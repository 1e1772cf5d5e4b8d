"""The ``stadv`` subcommands that compute on a model: one ``cmd_<name>(args) -> exit status`` per command.

Each reads plain files (model and data ``.npz``), runs the library and writes JSON, CSV, ``.npz`` and
PNG files into ``--out``: ``train`` (appendix 6.8), ``attack`` (stAdv, Fig. 6), ``lower-bound``
(Theorem 1 and Algorithm 1, Figs. 2-4), ``certify`` and ``bound`` (Section 4.1, Eq. (16), [E12],
[E13]; Figs. 5/11). The per-image commands (``attack``, ``certify``) write a CSV table beside their
JSON (one row per image and setting). Every command validates its inputs before it creates its
output directory. The experiments and plots are those of :mod:`stadv_ref.experiments`; the other
commands (``reproduce``, ``audit``, ``info``, ``import-onnx``, ``data``) are in :mod:`.tools`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .._io import atomic_savez, seal_arrays
from ..attacks import STADV_CODE_OPTIONS
from ..experiments.curves import attack_curve, certify_curve, lower_bound_curve
from ..experiments.plots import (
    plot_attack,
    plot_certify,
    plot_convergence,
    plot_lower_bound,
    plot_samples,
    plot_training,
)
from ..lower_bounds import LABELS
from ..training import QUICK_EPOCHS, VARIANTS, train
from ..training.checkpoint import blas_threads, data_fingerprint
from ..upper_bounds import class_pair_bounds, upper_bound
from ._common import (
    OUTPUT_VERSION,
    CLIError,
    _default_out,
    _labelled_data,
    _load_net,
    _out_dir,
    _progress,
    _say,
    _write_csv,
    _write_json,
    load_data,
)

__all__ = ["cmd_train", "cmd_attack", "cmd_lower_bound", "cmd_certify", "cmd_bound", "ATTACK_CSV", "CERTIFY_CSV"]

ATTACK_CSV = ("index", "label", "prediction", "tau", "target", "success", "adv_prediction", "objective",
              "flow_norm", "l_diff")
"""Columns of ``attack.csv``: one row per image and ``tau``."""
CERTIFY_CSV = ("index", "label", "prediction", "margin", "method", "eps", "certified", "bound", "radius")
"""Columns of ``certify.csv``: one row per image, method and ``eps``. ``margin`` is the clean margin
``f_y - max_{i != y} f_i``; ``bound`` an upper bound on ``max_{i != y} f_i - f_y`` over every flow of the
budget (certified iff ``bound < 0``); ``radius`` the largest certified ``eps`` (global methods)."""


def cmd_train(args):
    """``stadv train VARIANT``: train one network variant (appendix 6.8), resumable per epoch."""
    if args.variant not in VARIANTS:
        raise CLIError(f"unknown variant {args.variant!r}; choose one of {', '.join(VARIANTS)}")
    if args.n is None and not args.data:
        args.n = 5000 if args.quick else 60000
    X, y, source = load_data(args)
    K = int(y.max()) + 1 if args.classes is None else args.classes
    options = dict(args.option or [])
    held_out = bool(args.test_data) or (not args.data and args.split == "train")
    out = _out_dir(args, _default_out(f"train-{args.variant}"))
    model_path = Path(args.model) if args.model else out / f"{args.variant}.npz"
    epochs = args.epochs
    if epochs is None and args.quick:
        epochs = QUICK_EPOCHS[args.variant]
    t0 = time.perf_counter()
    res = train(args.variant, X, y, hidden=args.hidden, epochs=epochs, batch_size=args.batch_size, seed=args.seed,
                checkpoint=out / f"{args.variant}.ckpt.npz", resume=not args.restart, progress=_progress(args),
                return_result=True, n_classes=max(K, 2), image_shape=X.shape[1:], **options)
    secs = time.perf_counter() - t0
    net = res.net
    summary = {"variant": args.variant, "data": source, "data_sha256": data_fingerprint(X, y),
               "n_train": int(len(y)), "seconds": round(secs, 2),
               "train_accuracy": float((net.predict(X) == y).mean()), "settings": res.settings,
               "blas_threads": blas_threads(),
               "history": {k: np.asarray(v).tolist() for k, v in res.history.items()}}
    if held_out:
        targs = argparse.Namespace(data=args.test_data, data_dir=args.data_dir, split="test", n=args.test_n, offset=0)
        Xt, yt, tsrc = load_data(targs, net.image_shape)
        summary["test_accuracy"] = float((net.predict(Xt) == yt).mean())
        summary["test_data"] = tsrc
    else:
        summary["test_data"] = None  # trained on the MNIST test split (or --data): pass --test-data
    meta = {k: summary[k] for k in ("variant", "n_train", "train_accuracy", "data_sha256") if k in summary}
    if "test_accuracy" in summary:
        meta["test_accuracy"] = summary["test_accuracy"]
    meta["settings"] = json.dumps(res.settings, sort_keys=True)
    for k, v in res.extras.items():
        meta[k] = v
    net.save(model_path, **meta)  # atomic, sealed
    summary["model"] = str(model_path)
    _write_json(args, out / "train.json", summary)
    plot_training(res.history, out / "train_history.png", args.variant)
    ckpt = out / f"{args.variant}.ckpt.npz"
    if ckpt.is_file() and not args.keep_checkpoint:
        ckpt.unlink()
    acc = f", test accuracy {summary['test_accuracy']:.4f}" if "test_accuracy" in summary else \
        " (no held-out accuracy: pass --test-data)"
    _say(args, f"trained {args.variant} on {len(y)} images ({source}) in {secs:.1f} s: train accuracy "
               f"{summary['train_accuracy']:.4f}{acc}; model -> {model_path}")
    return 0


def cmd_attack(args):
    """``stadv attack``: stAdv success rate and adversarial accuracy per ``tau`` (Fig. 6); per-image CSV."""
    net = _load_net(args, multiclass="stadv attack needs a multi-class model (v of shape (K, m))")
    X, y, source = _labelled_data(args, net)
    index = args.offset + np.arange(len(y))
    options = dict(STADV_CODE_OPTIONS) if args.stadv_code else {}
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    skipped = 0
    if args.target is not None:
        if args.target >= net.n_classes:
            raise CLIError(f"--target must be a class of the model, in [0, {net.n_classes}), got {args.target}")
        keep = y != args.target  # an image of the target class has nothing to attack
        skipped = int((~keep).sum())
        X, y, index = X[keep], y[keep], index[keep]
        if not len(y):
            raise CLIError(f"every selected image has label {args.target}: nothing to attack towards --target")
    out = _out_dir(args, _default_out("attack"))
    curve = attack_curve(net, X, y, args.tau, method=args.method, max_iter=args.max_iter, kappa=args.kappa,
                         target=args.target, progress=_progress(args), keep=True, **options)
    results = curve.pop("results")
    pred = net.predict(X)
    rows = []
    for tau, res in zip(args.tau, results):
        atomic_savez(out / f"adversarial_tau{tau:g}.npz", **seal_arrays(dict(
            x_adv=res.x_adv, flow=res.flow, success=res.success, pred=res.pred, l_diff=res.l_diff,
            flow_norm=res.flow_norm, y=y, index=index), OUTPUT_VERSION))
        rows += [(index[i], y[i], pred[i], tau, args.target, res.success[i], res.pred[i], res.objective[i],
                  res.flow_norm[i], res.l_diff[i]) for i in range(len(y))]
    curve.update(model=str(args.model), data=source, method=args.method, kappa=args.kappa, target=args.target,
                 skipped_target_class=skipped, options=options,
                 per_image=_write_csv(out / "attack.csv", ATTACK_CSV, rows))
    _write_json(args, out / "attack.json", curve)
    plot_attack({Path(args.model).stem: curve}, out / "attack.png")
    res = results[-1]
    idx = np.flatnonzero(res.success & (pred == y))[:4]
    if idx.size:
        samples = [dict(x=X[i], flow=res.flow[i], label=f"y={y[i]} -> {res.pred[i]}") for i in idx]
        plot_samples(samples, out / "attack_samples.png", title=f"stAdv adversarial examples (tau = {args.tau[-1]:g})")
    rates = ", ".join(f"tau={t:g}: {s:.3f}" for t, s in zip(curve["tau"], curve["success_rate"]))
    aim = f" towards class {args.target} ({skipped} image(s) of that class left out)" if args.target is not None else ""
    _say(args, f"benign accuracy {curve['benign_accuracy']:.4f}; success rate{aim} {rates}; results -> {out}")
    return 0


def cmd_lower_bound(args):
    """``stadv lower-bound``: Theorem 1 and Algorithm 1 per ``eps`` (Figs. 2-4)."""
    net = _load_net(args)
    classes = tuple(args.classes) if args.classes else None
    if net.binary and (classes or args.y is not None):
        raise CLIError("--classes/--y are for multi-class models only")
    out = _out_dir(args, _default_out("lower-bound"))
    curve = lower_bound_curve(net, args.eps, flow=args.flow, max_iter=args.max_iter, n=args.midpoints,
                              n_restarts=args.restarts, seed=args.seed, y=args.y, classes=classes,
                              progress=_progress(args), keep_results=True)
    results = curve.pop("results")
    name = Path(args.model).stem
    arrays = {}
    for e, r in zip(curve["eps"], results):
        arrays[f"eps{e:g}_x"] = r.x
        arrays[f"eps{e:g}_flow"] = r.flow
    atomic_savez(out / "pairs.npz", **seal_arrays(arrays, OUTPUT_VERSION))
    curve.update(model=str(args.model), flow=args.flow, labels=LABELS)
    _write_json(args, out / "lower_bound.json", curve)
    plot_lower_bound({name: curve}, out / "lower_bound.png", title=f"Lower bounds for {name}")
    plot_samples([dict(x=r.x, flow=r.flow, label=f"eps = {e:g}") for e, r in zip(curve["eps"], results)][:4],
                 out / "samples.png", title=f"Algorithm 1 on {name}")
    plot_convergence({f"eps = {e:g}": c for e, c in zip(curve["eps"], curve["convergence"])},
                     out / "convergence.png")
    for e, ex, th in zip(curve["eps"], curve["exact_loss"], curve["theorem_value"]):
        _say(args, f"eps = {e:g}: certified lower bound (exact l_adv) {ex:.6g}; Theorem 1 value (l~ estimate) {th:.6g}")
    _say(args, f"results -> {out}")
    return 0


def _certify_rows(net, X, y, index, curve, results):
    """The rows of ``certify.csv`` (:data:`CERTIFY_CSV`) from :func:`certify_curve`'s results."""
    pred = net.predict(X)
    rows = []
    for m, res in results.items():
        margins = np.asarray(res.margins, float)  # (N, K): f_y - f_i, +inf at i = y
        clean = margins.min(axis=1)
        radius = res.certified_radius if res.required is not None else None
        cert = np.asarray(res.certified, bool).reshape(len(curve["eps"]), -1)
        for k, eps in enumerate(curve["eps"]):
            if res.required is None:  # "local": per-image bounds on f_i - f_y at this eps, -inf at i = y
                bound = np.asarray(res.bounds).reshape(len(curve["eps"]), len(y), -1)[k].max(axis=1)
            else:  # global: f_i - f_y <= -(f_y - f_i) + eps B_iy
                with np.errstate(invalid="ignore"):
                    bound = (eps * res.required - margins).max(axis=1)
            rows += [(index[i], y[i], pred[i], clean[i], m, eps, cert[k, i], bound[i],
                      None if radius is None else radius[i]) for i in range(len(y))]
    return rows


def cmd_certify(args):
    """``stadv certify``: 0/1 adversarial loss per ``eps`` and bound ([E13] rule; Figs. 5/11); per-image CSV."""
    net = _load_net(args, multiclass="stadv certify needs a multi-class model; for a binary one use 'stadv bound'")
    lo, hi = args.input_range
    if not lo < hi:
        raise CLIError(f"--input-range needs LO < HI, got {lo} {hi}")
    glob = [m for m in args.method if m != "local"]
    if args.flow != "tied" and glob:
        raise CLIError(f"--flow {args.flow} needs --method local only: the global bounds {glob} hold for tied flows")
    if args.tight and "local" not in args.method:
        raise CLIError("--tight is an option of --method local")
    X, y, source = _labelled_data(args, net)
    if X.min() < lo - 1e-9 or X.max() > hi + 1e-9:
        raise CLIError(f"the data lie in [{X.min():.3g}, {X.max():.3g}], outside --input-range {lo:g} {hi:g}")
    out = _out_dir(args, _default_out("certify"))
    tightness = "tight" if args.tight else "fast"
    try:
        curve = certify_curve(net, X, y, args.eps, args.method, input_range=(lo, hi), cache_dir=args.bound_cache,
                              gap_tol=args.gap_tol, seed=args.seed, flow=args.flow, tightness=tightness,
                              progress=_progress(args), keep=True)
    except NotImplementedError as exc:
        raise CLIError(f"--method local --tight: {exc}") from exc
    results = curve.pop("results")
    rows = _certify_rows(net, X, y, args.offset + np.arange(len(y)), curve, results)
    curve.update(model=str(args.model), data=source, input_range=[lo, hi], flow=args.flow,
                 tightness=tightness if "local" in args.method else None,
                 per_image=_write_csv(out / "certify.csv", CERTIFY_CSV, rows))
    _write_json(args, out / "certify.json", curve)
    name = Path(args.model).stem
    plot_certify({name: curve}, out / "certify.png", by="network", title=f"0/1 adversarial loss of {name}")
    for m in args.method:
        vals = ", ".join(f"eps={e:g}: {z:.3f}" for e, z in zip(curve["eps"], curve["zero_one"][m]))
        flag = "" if curve["sound"].get(m, True) else " (NOT a sound bound)"
        _say(args, f"{m}: 0/1 adversarial loss {vals}{flag}")
    _say(args, f"results -> {out} (per image: certify.csv)")
    return 0


def cmd_bound(args):
    """``stadv bound``: upper bounds on ``sup l_adv`` (Section 4.1, Eq. (16), [E12])."""
    net = _load_net(args)
    classes = tuple(args.classes) if args.classes else None
    if net.binary and classes is not None:
        raise CLIError("--classes is for multi-class models only")
    lo, hi = args.input_range
    if not lo < hi:
        raise CLIError(f"--input-range needs LO < HI, got {lo} {hi}")
    out = _out_dir(args, _default_out("bound"))
    rows = []
    if not net.binary and classes is None:  # every class pair: bounds are linear in eps, computed once per pair
        for m in args.method:
            per_unit, res = class_pair_bounds(net, m, input_range=(lo, hi), gap_tol=args.gap_tol, seed=args.seed,
                                              progress=_progress(args))
            sound = all(bool(r.sound) for r in res.values())
            iu = np.triu_indices(net.n_classes, 1)
            worst = float(per_unit[iu].max())
            for e in args.eps:
                rows.append(dict(method=m, eps=e, value=e * worst, sound=sound, per_unit=worst,
                                 pair_values=(e * per_unit).tolist()))
                _say(args, f"{m} eps={e:g}: f_i - f_y changes by at most {e * worst:.6g} over all class pairs "
                           f"(pairwise table in bound.json)" + ("" if sound else " (NOT sound: as printed)"))
    else:
        for m in args.method:
            for e in args.eps:
                r = upper_bound(net, e, method=m, classes=classes, input_range=(lo, hi), gap_tol=args.gap_tol,
                                seed=args.seed)
                extra = {k: getattr(r, k, None) for k in ("per_unit", "constant", "how", "gap", "time")}
                rows.append(dict(method=m, eps=e, value=float(r.value), sound=bool(r.sound),
                                 **{k: v for k, v in extra.items() if isinstance(v, (int, float, str, type(None)))}))
                _say(args, f"{m} eps={e:g}: l_adv <= {r.value:.6g}" + ("" if r.sound else " (NOT sound: as printed)"))
    _write_json(args, out / "bound.json", dict(model=str(args.model), classes=classes, input_range=[lo, hi],
                                               bounds=rows))
    return 0
