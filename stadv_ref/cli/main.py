"""The ``stadv`` console script: :func:`build_parser` (one sub-parser per command) and :func:`main`.

The commands themselves are in :mod:`.commands`, the shared argument types, data and model
loading in :mod:`._common`; the file formats are described in :mod:`stadv_ref.cli`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings

from .. import __version__
from ..backend import BackendError, use_backend
from ..experiments.audit import CHECKS
from ..experiments.pipeline import STEP_NAMES
from ..onnx_import import import_onnx
from ..training import VARIANTS
from ._common import PROG, CLIError, _nonneg_float, _option, _Parser, _pos_int, load_data
from .commands import (
    cmd_attack,
    cmd_audit,
    cmd_bound,
    cmd_certify,
    cmd_import_onnx,
    cmd_info,
    cmd_lower_bound,
    cmd_reproduce,
    cmd_train,
)

__all__ = ["main", "build_parser", "load_data", "import_onnx"]


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


def _warn_in_one_line(where):
    """A ``warnings.showwarning`` that prints ``<where>: warning: <message>`` as one line on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{where}: warning: {_one_line(message)}", file=sys.stderr)

    return show


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
    debug = os.environ.get("STADV_DEBUG", "").strip() not in ("", "0")
    where = f"{PROG} {args.command}"
    try:
        ctx = use_backend(args.backend) if getattr(args, "backend", None) else contextlib.nullcontext()
        with ctx, warnings.catch_warnings():
            if not debug:  # e.g. a damaged cache file that is recomputed: one line, not two
                warnings.showwarning = _warn_in_one_line(where)
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
