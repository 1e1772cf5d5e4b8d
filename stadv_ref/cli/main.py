r"""The ``stadv`` command: train, attack, bound, certify, reproduce and audit.

Run ``stadv --help`` or ``stadv COMMAND --help``. Every subcommand reads and
writes plain files: models and data as ``.npz`` (no pickle), results as JSON,
figures as PNG, all into ``--out DIR``.

Errors in the arguments or the inputs print one line on stderr and exit with
status 1 (usage errors: status 2); set ``STADV_DEBUG=1`` for a traceback.

Models
------
A model is an ``.npz`` with arrays ``W`` (m, d), ``v`` ((m,) binary or (K, m)),
optional ``b`` (m,), ``c`` ((K,) or scalar) and ``image_shape`` (2,): the
network ``f(x) = v relu(W x + b) + c`` on ``H x W`` images flattened row-major
(:class:`stadv_ref.OneHiddenLayerNet`). Networks trained elsewhere can be saved
in that form with NumPy alone, or converted from ONNX with ``stadv import-onnx``
(needs ``pip install "stadv-ref[onnx]"``).

Data
----
``--data FILE.npz`` with arrays ``X`` ((N, H, W) or (N, d), values in [0, 1])
and ``y`` ((N,) integer labels), or MNIST from ``--data-dir`` /
``STADV_DATA_DIR`` with ``--split`` and ``--n``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..onnx_import import import_onnx

__all__ = ["main", "build_parser", "load_data", "import_onnx"]


PROG = "stadv"


class CLIError(ValueError):
    """A user-facing error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------
# Argument types
# ---------------------------------------------------------------------------
def _nonneg_float(name):
    def parse(text):
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(x) or x < 0:
            raise argparse.ArgumentTypeError(f"{name} must be finite and >= 0, got {text!r}")
        return x

    parse.__name__ = name
    return parse


def _pos_int(name, minimum=1):
    def parse(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {n}")
        return n

    parse.__name__ = name
    return parse


def _option(text):
    """``KEY=VALUE`` with VALUE parsed as JSON when possible (numbers, true/false), else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option must look like KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        v = json.loads(v)
    except ValueError:
        pass
    return k.strip(), v


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------
def _out_dir(args, default):
    out = Path(args.out if args.out else default)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _progress(args):
    return not getattr(args, "no_progress", False)


def load_model(path):
    """Load a model ``.npz`` (see the module docstring); one clear error when missing or malformed."""
    from ..network import OneHiddenLayerNet

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file {str(p)!r} does not exist")
    return OneHiddenLayerNet.load(p, with_metadata=True)


def load_data(args, image_shape=None):
    """Images and labels from ``--data FILE.npz`` or MNIST (``--data-dir``, ``--split``, ``--n``, ``--offset``).

    Returns
    -------
    X : ndarray, shape (N, H, W), float64
    y : ndarray, shape (N,), int64
    source : str
    """
    n = getattr(args, "n", None)
    offset = getattr(args, "offset", 0) or 0
    if getattr(args, "data", None):
        p = Path(args.data)
        if not p.is_file():
            raise FileNotFoundError(f"data file {str(p)!r} does not exist")
        try:
            with np.load(p, allow_pickle=False) as f:
                missing = [k for k in ("X", "y") if k not in f.files]
                if missing:
                    raise CLIError(f"data file {str(p)!r} lacks the arrays {missing} (needs X and y)")
                X, y = f["X"], f["y"]
        except CLIError:
            raise
        except ValueError as exc:
            raise CLIError(f"data file {str(p)!r} is not a valid .npz without pickles ({exc})") from exc
        except OSError as exc:
            raise CLIError(f"cannot read data file {str(p)!r}: {exc}") from exc
        X = X[offset:]
        y = y[offset:]
        if n is not None:
            X, y = X[:n], y[:n]
        source = str(p)
    else:
        from ..data import load_mnist

        limit = None if n is None else offset + n
        X, y = load_mnist(getattr(args, "split", "test"), data_dir=getattr(args, "data_dir", None), limit=limit)
        X, y = X[offset:], y[offset:]
        source = f"MNIST {getattr(args, 'split', 'test')} [{offset}:{offset + len(y)}]"
    X = np.asarray(X)
    y = np.asarray(y)
    if X.dtype.kind not in "fiub":
        raise CLIError(f"X must be numeric, got dtype {X.dtype}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise CLIError(f"y must be a 1-d integer array, got shape {y.shape} dtype {y.dtype}")
    if X.shape[0] != y.shape[0]:
        raise CLIError(f"X has {X.shape[0]} examples but y has {y.shape[0]}")
    if X.shape[0] == 0:
        raise CLIError("no examples selected (check --n / --offset)")
    X = X.astype(np.float64)
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        raise CLIError("X contains NaN or inf")
    if image_shape is not None:
        H, W = image_shape
        if X.ndim == 2 and X.shape[1] == H * W:
            X = X.reshape(-1, H, W)
        if X.shape[1:] != (H, W):
            raise CLIError(f"X has images of shape {X.shape[1:]}, the model expects {H}x{W}")
    elif X.ndim == 2:
        s = int(round(math.sqrt(X.shape[1])))
        if s * s != X.shape[1]:
            raise CLIError(f"X has {X.shape[1]} features, not a square image; save X as (N, H, W)")
        X = X.reshape(-1, s, s)
    if X.ndim != 3:
        raise CLIError(f"X must have shape (N, H, W) or (N, d), got {X.shape}")
    return X, y.astype(np.int64), source


def _labels_fit(net, y):
    if not net.binary and (y.min() < 0 or y.max() >= net.n_classes):
        raise CLIError(f"labels must be in [0, {net.n_classes}) for this model, got range [{y.min()}, {y.max()}]")


def _model_and_out(args, name, *, multiclass=None):
    """``--model`` and the command's output directory (``--out``, default ``stadv-out/NAME``).

    ``multiclass``: for a command that needs a multi-class model, the error message for a
    binary one (raised before the output directory is made).
    """
    net, _ = load_model(args.model)
    if multiclass and net.binary:
        raise CLIError(multiclass)
    return net, _out_dir(args, Path("stadv-out") / name)


def _labelled_data(args, net):
    """The data options' images and labels for ``net`` (:func:`load_data`), labels checked against its classes."""
    X, y, source = load_data(args, net.image_shape)
    _labels_fit(net, y)
    return X, y, source


def _write_json(path, obj):
    from ..experiments.pipeline import atomic_write_json

    atomic_write_json(path, obj)
    return path


def _say(args, msg):
    if not getattr(args, "quiet", False):
        print(msg)


# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------
def cmd_train(args):
    from ..training.trainer import VARIANTS, train

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
        from ..training.trainer import QUICK_EPOCHS

        epochs = QUICK_EPOCHS[args.variant]
    t0 = time.perf_counter()
    res = train(args.variant, X, y, hidden=args.hidden, epochs=epochs, batch_size=args.batch_size, seed=args.seed,
                checkpoint=out / f"{args.variant}.ckpt.npz", resume=not args.restart, progress=_progress(args),
                return_result=True, n_classes=max(K, 2), image_shape=X.shape[1:], **options)
    secs = time.perf_counter() - t0
    net = res.net
    summary = {"variant": args.variant, "data": source, "n_train": int(len(y)), "seconds": round(secs, 2),
               "train_accuracy": float((net.predict(X) == y).mean()), "settings": res.settings,
               "history": {k: np.asarray(v).tolist() for k, v in res.history.items()}}
    if args.test_data or not args.data:
        targs = argparse.Namespace(data=args.test_data, data_dir=args.data_dir, split="test", n=args.test_n, offset=0)
        Xt, yt, tsrc = load_data(targs, net.image_shape)
        summary["test_accuracy"] = float((net.predict(Xt) == yt).mean())
        summary["test_data"] = tsrc
    meta = {k: summary[k] for k in ("variant", "n_train", "train_accuracy") if k in summary}
    if "test_accuracy" in summary:
        meta["test_accuracy"] = summary["test_accuracy"]
    meta["settings"] = json.dumps(res.settings, sort_keys=True)
    for k, v in res.extras.items():
        meta[k] = v
    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_name(f".{model_path.stem}.part.npz")
    net.save(tmp, **meta)
    os.replace(tmp, model_path)
    summary["model"] = str(model_path)
    _write_json(out / "train.json", summary)
    _plot_history(res.history, out / "train_history.png", args.variant)
    ckpt = out / f"{args.variant}.ckpt.npz"
    if ckpt.is_file() and not args.keep_checkpoint:
        ckpt.unlink()
    acc = f", test accuracy {summary['test_accuracy']:.4f}" if "test_accuracy" in summary else ""
    _say(args, f"trained {args.variant} on {len(y)} images in {secs:.1f} s: train accuracy "
               f"{summary['train_accuracy']:.4f}{acc}; model -> {model_path}")
    return 0


def _plot_history(history, path, variant):
    from ..experiments.pipeline import _pyplot, atomic_savefig

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for k in ("loss", "data_loss", "reg"):
        if k in history and len(history[k]):
            axes[0].plot(np.arange(1, len(history[k]) + 1), history[k], "o-", ms=3, label=k)
    if "train_acc" in history and len(history["train_acc"]):
        axes[1].plot(np.arange(1, len(history["train_acc"]) + 1), history["train_acc"], "o-", ms=3)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("epoch")
    axes[0].set_title(f"{variant}: training loss")
    axes[1].set_title("training accuracy")
    axes[0].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    atomic_savefig(fig, path)


def cmd_attack(args):
    from ..experiments.pipeline import atomic_savez, attack_curve, plot_attack, plot_samples

    net, out = _model_and_out(args, "attack", multiclass="stadv attack needs a multi-class model (v of shape (K, m))")
    X, y, source = _labelled_data(args, net)
    options = {}
    if args.stadv_code:
        from ..attacks.stadv import STADV_CODE_OPTIONS

        options.update(STADV_CODE_OPTIONS)
    curve = attack_curve(net, X, y, args.tau, method=args.method, max_iter=args.max_iter, kappa=args.kappa,
                         progress=_progress(args), keep=True, **options)
    results = curve.pop("results")
    curve.update(model=str(args.model), data=source, method=args.method, kappa=args.kappa, options=options)
    for tau, res in zip(args.tau, results):
        atomic_savez(out / f"adversarial_tau{tau:g}.npz", x_adv=res.x_adv, flow=res.flow, success=res.success,
                     pred=res.pred, l_diff=res.l_diff, flow_norm=res.flow_norm, y=y)
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
    from ..experiments.pipeline import atomic_savez, lower_bound_curve, plot_convergence, plot_lower_bound, plot_samples

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
    atomic_savez(out / "pairs.npz", **arrays)
    curve.update(model=str(args.model), flow=args.flow)
    try:
        from ..lower_bounds.attack import LABELS

        curve["labels"] = LABELS
    except ImportError:
        pass
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
    from ..experiments.pipeline import atomic_savez, certify_curve, plot_certify

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
    import stadv_ref

    net, out = _model_and_out(args, "bound")
    classes = tuple(args.classes) if args.classes else None
    if net.binary and classes is not None:
        raise CLIError("--classes is for multi-class models only")
    lo, hi = args.input_range
    rows = []
    if not net.binary and classes is None:  # every class pair: bounds are linear in eps, computed once per pair
        from ..upper_bounds.closed_form import class_pair_bounds

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
                r = stadv_ref.upper_bound(net, e, method=m, classes=classes, input_range=(lo, hi),
                                          gap_tol=args.gap_tol)
                extra = {k: getattr(r, k, None) for k in ("per_unit", "constant", "how", "gap", "time")}
                rows.append(dict(method=m, eps=e, value=float(r.value), sound=bool(r.sound),
                                 **{k: v for k, v in extra.items() if isinstance(v, (int, float, str, type(None)))}))
                _say(args, f"{m} eps={e:g}: l_adv <= {r.value:.6g}" + ("" if r.sound else " (NOT sound: as printed)"))
    _write_json(out / "bound.json", dict(model=str(args.model), classes=classes, input_range=[lo, hi], bounds=rows))
    return 0


def cmd_reproduce(args):
    from ..experiments.pipeline import full_config, quick_config, reproduce

    cfg = full_config(args.seed) if args.full else quick_config(args.seed)
    out = _out_dir(args, Path("stadv-out") / ("reproduce-full" if args.full else "reproduce-quick"))
    t0 = time.perf_counter()
    status = reproduce(out, cfg, data_dir=args.data_dir, cache_dir=args.cache_dir, only=args.only,
                       force=args.force or (), progress=_progress(args), log=None if args.quiet else print)
    ran = [k for k, v in status.items() if v != "skipped"]
    _say(args, f"reproduce ({cfg.mode}) finished in {time.perf_counter() - t0:.1f} s; ran {len(ran)} step(s), "
               f"skipped {len(status) - len(ran)}; report -> {out / 'report.md'}")
    return 0


def cmd_audit(args):
    from ..experiments.audit import run_audit, write_report

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
    net = import_onnx(args.onnx, tuple(args.image_shape) if args.image_shape else None)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    net.save(out, source=str(args.onnx))
    _say(args, f"imported {net!r} from {args.onnx} -> {out}")
    return 0


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------
_EPILOG = """examples:
  stadv reproduce --quick --out repro          # Figures 2-6 and 11 + report.md (minutes on 2 cores)
  stadv audit --out audit                      # numerical audit table (audit.md, audit.json)
  stadv train nt --quick --out models          # train a network variant (MNIST)
  stadv certify --model models/nt.npz --eps 0.01 0.05 --method sdp spectral
  stadv lower-bound --model models/nt.npz --eps 0.5 2 7.84
  stadv attack --model models/nt.npz --tau 0.05 --n 100
  stadv import-onnx net.onnx net.npz           # certify your own network (pip install "stadv-ref[onnx]")
"""


def _add_gap_tol(parser):
    """The ``--gap-tol`` option of the commands that solve SDPs (certify, bound)."""
    parser.add_argument("--gap-tol", type=_nonneg_float("--gap-tol"), default=1e-3,
                        help="certified relative gap at which the SDP solvers stop (default 1e-3; the bound is "
                        "certified either way, a smaller value makes it up to that fraction tighter and slower)")


def build_parser():
    """The ``stadv`` argument parser (one sub-parser per command)."""
    from .. import __version__

    common = _Parser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument("--backend", help="compute backend: numpy (default), numba, cupy (or STADV_BACKEND)")
    g.add_argument("--seed", type=_pos_int("--seed", 0), default=0, help="random seed (default 0)")
    g.add_argument("--out", metavar="DIR", help="output directory (created if needed)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("-q", "--quiet", action="store_true", help="no summary lines on stdout")

    data = _Parser(add_help=False)
    d = data.add_argument_group("data (an .npz with X and y, or MNIST)")
    d.add_argument("--data", metavar="FILE.npz", help="arrays X (N,H,W) in [0,1] and y (N,) int")
    d.add_argument("--data-dir", metavar="DIR", help="MNIST IDX directory (default STADV_DATA_DIR)")
    d.add_argument("--split", choices=("train", "test"), default="test", help="MNIST split (default test)")
    d.add_argument("--n", type=_pos_int("--n"), help="number of examples (default all)")
    d.add_argument("--offset", type=_pos_int("--offset", 0), default=0, help="skip the first OFFSET examples")

    model = _Parser(add_help=False)
    model.add_argument("--model", required=True, metavar="FILE.npz",
                       help="network .npz: W (m,d), v (m,) or (K,m), optional b, c, image_shape")

    p = _Parser(prog=PROG, description="Spatially transformed adversarial inputs: attacks, lower bounds, "
                "certificates, reproduction and audit of the paper.", epilog=_EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    from ..training.trainer import VARIANTS

    s = sub.add_parser("train", parents=[common, data], help="train a network variant (appendix 6.8)",
                       description="Train one of the paper's network variants on MNIST (or --data). Resumes from "
                       "the per-epoch checkpoint in --out after an interruption.")
    s.add_argument("variant", metavar="VARIANT", help=f"one of {', '.join(VARIANTS)}")
    s.add_argument("--model", metavar="FILE.npz", help="where to write the model (default OUT/VARIANT.npz)")
    s.add_argument("--hidden", type=_pos_int("--hidden"), default=500, help="hidden units (default 500)")
    s.add_argument("--epochs", type=_pos_int("--epochs", 0), help="epochs (default: the variant's)")
    s.add_argument("--batch-size", type=_pos_int("--batch-size"), default=100)
    s.add_argument("--classes", type=_pos_int("--classes", 2), help="number of classes (default max(y)+1)")
    s.add_argument("--quick", action="store_true", help="5000 images and few epochs")
    s.add_argument("--test-data", metavar="FILE.npz", help="test set for the reported accuracy (default MNIST test)")
    s.add_argument("--test-n", type=_pos_int("--test-n"), help="test examples (default all)")
    s.add_argument("--option", type=_option, action="append", metavar="KEY=VALUE",
                   help="training option override (e.g. lr=0.001, fro_weight=0.08); repeatable")
    s.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    s.add_argument("--keep-checkpoint", action="store_true", help="keep OUT/VARIANT.ckpt.npz after training")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("attack", parents=[common, model, data], help="stAdv attack (Xiao et al. 2018)",
                       description="stAdv attack on a multi-class model: success rate and adversarial accuracy "
                       "per tau; adversarial images and flows as .npz.")
    s.add_argument("--tau", type=_nonneg_float("--tau"), nargs="+", default=[0.05], help="flow-loss weight(s)")
    s.add_argument("--kappa", type=_nonneg_float("--kappa"), default=0.0, help="CW confidence")
    s.add_argument("--method", choices=("batched", "lbfgs-b"), default="batched")
    s.add_argument("--max-iter", type=_pos_int("--max-iter"), default=200)
    s.add_argument("--stadv-code", action="store_true",
                   help="the public stAdv code's choices (diagonal neighbours, symmetric flow padding, border warp)")
    s.set_defaults(func=cmd_attack)

    s = sub.add_parser("lower-bound", parents=[common, model], help="Theorem 1 / Algorithm 1 lower bounds",
                       description="Certified lower bounds on sup l_adv (the exact loss of a feasible pair) and the "
                       "Theorem 1 value (an estimate about l~), per eps.")
    s.add_argument("--eps", type=_nonneg_float("--eps"), nargs="+", required=True, help="budget(s) ||M r|| <= eps")
    s.add_argument("--flow", choices=("tied", "untied"), default="tied")
    s.add_argument("--max-iter", type=_pos_int("--max-iter", 0), default=30, help="outer iterations (0: Theorem 1)")
    s.add_argument("--midpoints", type=_pos_int("--midpoints"), default=16, help="n of Eq. (7)")
    s.add_argument("--restarts", type=_pos_int("--restarts", 0), default=0, help="extra random starts")
    s.add_argument("--y", type=_pos_int("--y", 0), help="true class (multi-class; default the predicted one)")
    s.add_argument("--classes", type=_pos_int("--classes", 0), nargs=2, metavar=("I", "Y"),
                   help="attack the fixed margin f_I - f_Y")
    s.set_defaults(func=cmd_lower_bound)

    methods = ("linear", "spectral", "frobenius", "sdp", "tight", "paper-spectral", "paper-frobenius")
    s = sub.add_parser("certify", parents=[common, model, data], help="certify test points (0/1 adversarial loss)",
                       description="Certify each example against every flow with ||M r|| <= eps using the chosen "
                       "upper bounds; writes the 0/1 adversarial loss per eps and method.")
    s.add_argument("--eps", type=_nonneg_float("--eps"), nargs="+", required=True)
    s.add_argument("--method", nargs="+", default=["sdp"], choices=methods, metavar="METHOD",
                   help=f"bound(s): {', '.join(methods)} (default sdp)")
    s.add_argument("--input-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LO", "HI"),
                   help="pixel range of the inputs: 0 1 (constant 2) or -1 1 (constant 4)")
    _add_gap_tol(s)
    s.add_argument("--bound-cache", metavar="DIR",
                   help="keep the per-network class-pair bounds here (.npz) and reuse them on later runs")
    s.set_defaults(func=cmd_certify)

    s = sub.add_parser("bound", parents=[common, model], help="upper bounds on l_adv for a model",
                       description="Upper bounds on sup l_adv: a binary model's output, the margin f_I - f_Y of a "
                       "multi-class model (--classes I Y), or every class pair (the default for multi-class).")
    s.add_argument("--eps", type=_nonneg_float("--eps"), nargs="+", required=True)
    s.add_argument("--method", nargs="+", default=["sdp"], choices=methods, metavar="METHOD")
    s.add_argument("--classes", type=_pos_int("--classes", 0), nargs=2, metavar=("I", "Y"))
    s.add_argument("--input-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LO", "HI"))
    _add_gap_tol(s)
    s.set_defaults(func=cmd_bound)

    from ..experiments.pipeline import STEP_NAMES

    s = sub.add_parser("reproduce", parents=[common], help="regenerate Figures 2-6 and 11 with report.md",
                       description="Train (or reuse cached) networks and regenerate Figures 2-6 and 11 and a "
                       "report.md that puts the paper's claims beside our numbers. Interrupted runs resume: "
                       "finished steps are skipped.")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="few thousand images, fewer eps/tau (default)")
    mode.add_argument("--full", action="store_true", help="the paper's scale (hours)")
    s.add_argument("--data-dir", metavar="DIR", help="MNIST IDX directory (default STADV_DATA_DIR)")
    s.add_argument("--cache-dir", metavar="DIR", help="trained-model cache (default OUT/models)")
    s.add_argument("--only", nargs="+", choices=STEP_NAMES, metavar="STEP",
                   help=f"run only these steps (and missing prerequisites): {', '.join(STEP_NAMES)}")
    s.add_argument("--force", nargs="+", choices=STEP_NAMES, metavar="STEP", help="recompute these steps")
    s.set_defaults(func=cmd_reproduce)

    from ..experiments.audit import CHECKS

    s = sub.add_parser("audit", parents=[common], help="numerical audit of every equation and claim",
                       description="Check every equation and claim of the paper numerically and write a table "
                       "(audit.md, audit.json): claim, what the paper says, what was measured, verdict.")
    s.add_argument("--quick", action="store_true", help="smaller attack budgets (seconds)")
    s.add_argument("--only", nargs="+", choices=[k for k, _ in CHECKS], metavar="CHECK",
                   help="run only these checks")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("import-onnx", parents=[common], help="convert an ONNX one-hidden-layer net to .npz",
                       description="Convert (Flatten) Gemm/MatMul -> Relu -> Gemm/MatMul ONNX graphs to the model "
                       ".npz format. Needs: pip install \"stadv-ref[onnx]\".")
    s.add_argument("onnx", metavar="MODEL.onnx")
    s.add_argument("output", metavar="MODEL.npz")
    s.add_argument("--image-shape", type=_pos_int("--image-shape"), nargs=2, metavar=("H", "W"))
    s.set_defaults(func=cmd_import_onnx)

    s = sub.add_parser("info", parents=[common, model], help="describe a model .npz",
                       description="Print a model's shapes, norms and stored metadata as JSON.")
    s.set_defaults(func=cmd_info)
    return p


def _one_line(exc):
    msg = str(exc).strip() or type(exc).__name__
    return " ".join(msg.split())


def main(argv=None):
    """Entry point of the ``stadv`` console script; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from ..backend import BackendError, use_backend

    debug = os.environ.get("STADV_DEBUG", "").strip() not in ("", "0")
    where = f"{PROG} {args.command}"
    try:
        ctx = use_backend(args.backend) if getattr(args, "backend", None) else contextlib.nullcontext()
        with ctx:
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{where}: interrupted (finished outputs are kept; rerun to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. "stadv info ... | head": not an error of ours
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except (CLIError, BackendError, ValueError, TypeError, FileNotFoundError, ImportError, OSError) as exc:
        if debug:
            raise
        print(f"{where}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
