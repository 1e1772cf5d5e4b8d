"""The ``stadv`` subcommands: one ``cmd_<name>(args) -> exit status`` per command.

Each reads plain files (model and data ``.npz``), runs the library and writes JSON, ``.npz`` and PNG
files into ``--out``: ``train`` (appendix 6.8), ``attack`` (stAdv, Fig. 6), ``lower-bound``
(Theorem 1 and Algorithm 1, Figs. 2-4), ``certify`` and ``bound`` (Section 4.1, Eq. (16), [E12],
[E13]; Figs. 5/11), ``reproduce`` (every figure, :mod:`stadv_ref.experiments.pipeline`), ``audit``,
``info`` and ``import-onnx``. The experiments and plots are those of :mod:`stadv_ref.experiments`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .._io import atomic_savez, seal_arrays
from ..attacks import STADV_CODE_OPTIONS
from ..experiments import pipeline
from ..experiments.audit import run_audit, write_report
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
from ..onnx_import import import_onnx
from ..training import QUICK_EPOCHS, VARIANTS, train
from ..training.checkpoint import blas_threads, data_fingerprint
from ..upper_bounds import class_pair_bounds, upper_bound
from ._common import (
    OUTPUT_VERSION,
    CLIError,
    _labelled_data,
    _model_and_out,
    _out_dir,
    _progress,
    _say,
    _write_json,
    load_data,
    load_model,
)


def cmd_train(args):
    """``stadv train VARIANT``: train one network variant (appendix 6.8), resumable per epoch."""
    if args.variant not in VARIANTS:
        raise CLIError(f"unknown variant {args.variant!r}; choose one of {', '.join(VARIANTS)}")
    out = _out_dir(args, Path("stadv-out") / f"train-{args.variant}")
    if args.n is None and not args.data:
        args.n = 5000 if args.quick else 60000
    args.split = "train"
    X, y, source = load_data(args)
    K = int(y.max()) + 1 if args.classes is None else args.classes
    options = dict(args.option or [])
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
    if args.test_data or not args.data:
        targs = argparse.Namespace(data=args.test_data, data_dir=args.data_dir, split="test", n=args.test_n, offset=0)
        Xt, yt, tsrc = load_data(targs, net.image_shape)
        summary["test_accuracy"] = float((net.predict(Xt) == yt).mean())
        summary["test_data"] = tsrc
    meta = {k: summary[k] for k in ("variant", "n_train", "train_accuracy", "data_sha256") if k in summary}
    if "test_accuracy" in summary:
        meta["test_accuracy"] = summary["test_accuracy"]
    meta["settings"] = json.dumps(res.settings, sort_keys=True)
    for k, v in res.extras.items():
        meta[k] = v
    net.save(model_path, **meta)  # atomic, sealed
    summary["model"] = str(model_path)
    _write_json(out / "train.json", summary)
    plot_training(res.history, out / "train_history.png", args.variant)
    ckpt = out / f"{args.variant}.ckpt.npz"
    if ckpt.is_file() and not args.keep_checkpoint:
        ckpt.unlink()
    acc = f", test accuracy {summary['test_accuracy']:.4f}" if "test_accuracy" in summary else ""
    _say(args, f"trained {args.variant} on {len(y)} images in {secs:.1f} s: train accuracy "
               f"{summary['train_accuracy']:.4f}{acc}; model -> {model_path}")
    return 0


def cmd_attack(args):
    """``stadv attack``: stAdv success rate and adversarial accuracy per ``tau`` (Fig. 6)."""
    net, out = _model_and_out(args, "attack", multiclass="stadv attack needs a multi-class model (v of shape (K, m))")
    X, y, source = _labelled_data(args, net)
    options = {}
    if args.stadv_code:
        options.update(STADV_CODE_OPTIONS)
    curve = attack_curve(net, X, y, args.tau, method=args.method, max_iter=args.max_iter, kappa=args.kappa,
                         progress=_progress(args), keep=True, **options)
    results = curve.pop("results")
    curve.update(model=str(args.model), data=source, method=args.method, kappa=args.kappa, options=options)
    for tau, res in zip(args.tau, results):
        atomic_savez(out / f"adversarial_tau{tau:g}.npz", **seal_arrays(dict(
            x_adv=res.x_adv, flow=res.flow, success=res.success, pred=res.pred, l_diff=res.l_diff,
            flow_norm=res.flow_norm, y=y), OUTPUT_VERSION))
    _write_json(out / "attack.json", curve)
    plot_attack({Path(args.model).stem: curve}, out / "attack.png")
    res = results[-1]
    idx = np.flatnonzero(res.success & (net.predict(X) == y))[:4]
    if idx.size:
        samples = [dict(x=X[i], flow=res.flow[i], label=f"y={y[i]} -> {res.pred[i]}") for i in idx]
        plot_samples(samples, out / "attack_samples.png", title=f"stAdv adversarial examples (tau = {args.tau[-1]:g})")
    rates = ", ".join(f"tau={t:g}: {s:.3f}" for t, s in zip(curve["tau"], curve["success_rate"]))
    _say(args, f"benign accuracy {curve['benign_accuracy']:.4f}; success rate {rates}; results -> {out}")
    return 0


def cmd_lower_bound(args):
    """``stadv lower-bound``: Theorem 1 and Algorithm 1 per ``eps`` (Figs. 2-4)."""
    net, out = _model_and_out(args, "lower-bound")
    classes = tuple(args.classes) if args.classes else None
    if net.binary and (classes or args.y is not None):
        raise CLIError("--classes/--y are for multi-class models only")
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
    _write_json(out / "lower_bound.json", curve)
    plot_lower_bound({name: curve}, out / "lower_bound.png", title=f"Lower bounds for {name}")
    plot_samples([dict(x=r.x, flow=r.flow, label=f"eps = {e:g}") for e, r in zip(curve["eps"], results)][:4],
                 out / "samples.png", title=f"Algorithm 1 on {name}")
    plot_convergence({f"eps = {e:g}": c for e, c in zip(curve["eps"], curve["convergence"])},
                     out / "convergence.png")
    for e, ex, th in zip(curve["eps"], curve["exact_loss"], curve["theorem_value"]):
        _say(args, f"eps = {e:g}: certified lower bound (exact l_adv) {ex:.6g}; Theorem 1 value (l~ estimate) {th:.6g}")
    _say(args, f"results -> {out}")
    return 0


def cmd_certify(args):
    """``stadv certify``: 0/1 adversarial loss per ``eps`` and bound ([E13] rule; Figs. 5/11)."""
    net, out = _model_and_out(args, "certify",
                              multiclass="stadv certify needs a multi-class model; for a binary one use 'stadv bound'")
    X, y, source = _labelled_data(args, net)
    lo, hi = args.input_range
    if not lo < hi:
        raise CLIError(f"--input-range needs LO < HI, got {lo} {hi}")
    if X.min() < lo - 1e-9 or X.max() > hi + 1e-9:
        raise CLIError(f"the data lie in [{X.min():.3g}, {X.max():.3g}], outside --input-range {lo:g} {hi:g}")
    curve = certify_curve(net, X, y, args.eps, args.method, input_range=(lo, hi), cache_dir=args.bound_cache,
                          gap_tol=args.gap_tol, progress=_progress(args))
    curve.update(model=str(args.model), data=source, input_range=[lo, hi])
    _write_json(out / "certify.json", curve)
    name = Path(args.model).stem
    plot_certify({name: curve}, out / "certify.png", by="network", title=f"0/1 adversarial loss of {name}")
    for m in args.method:
        vals = ", ".join(f"eps={e:g}: {z:.3f}" for e, z in zip(curve["eps"], curve["zero_one"][m]))
        flag = "" if curve["sound"].get(m, True) else " (NOT a sound bound)"
        _say(args, f"{m}: 0/1 adversarial loss {vals}{flag}")
    _say(args, f"results -> {out}")
    return 0


def cmd_bound(args):
    """``stadv bound``: upper bounds on ``sup l_adv`` (Section 4.1, Eq. (16), [E12])."""
    net, out = _model_and_out(args, "bound")
    classes = tuple(args.classes) if args.classes else None
    if net.binary and classes is not None:
        raise CLIError("--classes is for multi-class models only")
    lo, hi = args.input_range
    rows = []
    if not net.binary and classes is None:  # every class pair: bounds are linear in eps, computed once per pair
        for m in args.method:
            per_unit, res = class_pair_bounds(net, m, input_range=(lo, hi), gap_tol=args.gap_tol,
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
                r = upper_bound(net, e, method=m, classes=classes, input_range=(lo, hi),
                                          gap_tol=args.gap_tol)
                extra = {k: getattr(r, k, None) for k in ("per_unit", "constant", "how", "gap", "time")}
                rows.append(dict(method=m, eps=e, value=float(r.value), sound=bool(r.sound),
                                 **{k: v for k, v in extra.items() if isinstance(v, (int, float, str, type(None)))}))
                _say(args, f"{m} eps={e:g}: l_adv <= {r.value:.6g}" + ("" if r.sound else " (NOT sound: as printed)"))
    _write_json(out / "bound.json", dict(model=str(args.model), classes=classes, input_range=[lo, hi], bounds=rows))
    return 0


def cmd_reproduce(args):
    """``stadv reproduce``: run (or resume) :func:`stadv_ref.experiments.pipeline.reproduce`.

    With ``--only``, also prints the files of the chosen steps (the ``verify/`` scripts run single steps).
    """
    # the presets are looked up on the module at call time (tests replace quick_config there)
    cfg = pipeline.full_config(args.seed) if args.full else pipeline.quick_config(args.seed)
    out = _out_dir(args, Path("stadv-out") / ("reproduce-full" if args.full else "reproduce-quick"))
    t0 = time.perf_counter()
    status = pipeline.reproduce(out, cfg, data_dir=args.data_dir, cache_dir=args.cache_dir, only=args.only,
                                force=args.force or (), progress=_progress(args), log=None if args.quiet else print)
    ran = [k for k, v in status.items() if v != "skipped"]
    report = f"; report -> {out / 'report.md'}" if "report" in status else ""
    _say(args, f"reproduce ({cfg.mode}) finished in {time.perf_counter() - t0:.1f} s; ran {len(ran)} step(s), "
               f"skipped {len(status) - len(ran)}{report}")
    for name in args.only or ():
        d = out / name
        files = sorted(f.name for f in d.iterdir() if f.is_file()) if d.is_dir() else []
        _say(args, f"{name} -> {d}: {', '.join(files)}")
    return 0


def cmd_audit(args):
    """``stadv audit``: the numerical audit of every equation and claim (audit.md, audit.json)."""
    out = _out_dir(args, Path("stadv-out") / "audit")
    t0 = time.perf_counter()
    findings = run_audit(seed=args.seed, quick=args.quick, only=args.only, progress=_progress(args))
    paths = write_report(findings, out, seed=args.seed, quick=args.quick)
    counts = {}
    for f in findings:
        counts[f.verdict] = counts.get(f.verdict, 0) + 1
    if not args.quiet:
        w = max(len(f.id) for f in findings)
        for f in findings:
            print(f"{f.id:<{w}}  {f.verdict}")
    _say(args, f"audit: {len(findings)} checks in {time.perf_counter() - t0:.1f} s ("
               + ", ".join(f"{n} {v}" for v, n in counts.items()) + f"); table -> {paths['markdown']}")
    return 1 if counts.get("not run") else 0


def cmd_info(args):
    """``stadv info``: a model's shapes, norms and stored metadata as JSON."""
    net, meta = load_model(args.model)
    info = {"model": str(args.model), "m": net.m, "d": net.d, "image_shape": list(net.image_shape),
            "classes": net.n_classes if not net.binary else "binary",
            "has_hidden_bias": bool(np.any(net.b != 0)), "norm_W_F": float(np.linalg.norm(net.W)),
            "norm_W_2": float(np.linalg.norm(net.W, 2)), "norm_v_F": float(np.linalg.norm(net.V))}
    for k, v in meta.items():
        if np.ndim(v) == 0:
            info[f"meta.{k}"] = v.item() if hasattr(v, "item") else v
    print(json.dumps({k: (v if not isinstance(v, (np.generic,)) else v.item()) for k, v in info.items()}, indent=2,
                     default=str))
    return 0


def cmd_import_onnx(args):
    """``stadv import-onnx``: convert an ONNX one-hidden-layer network to the model ``.npz``."""
    net = import_onnx(args.onnx, tuple(args.image_shape) if args.image_shape else None)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    net.save(out, source=str(args.onnx))  # atomic, sealed
    _say(args, f"imported {net!r} from {args.onnx} -> {out}")
    return 0
