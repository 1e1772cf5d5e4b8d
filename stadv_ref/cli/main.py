"""The ``stadv`` console script: :func:`build_parser` (one sub-parser per command) and :func:`main`.

The computing commands are in :mod:`.commands`, the others (reproduce, audit, info, import-onnx,
data) in :mod:`.tools`, the shared argument types, data and model loading in :mod:`._common`; the
file formats are described in :mod:`stadv_ref.cli`. Each command takes only the options it uses
(``--backend`` everywhere); the choices of ``--method`` come from the library's lists. A command
that fails removes the output directory it created (:func:`._common._discard_created`).
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import sys
import warnings

from .. import __version__
from ..attacks import METHODS as STADV_METHODS
from ..attacks import stadv_attack
from ..backend import BackendError, use_backend
from ..data import DATASETS
from ..experiments.audit import CHECKS
from ..experiments.pipeline import STEP_NAMES
from ..onnx_import import import_onnx
from ..training import VARIANTS
from ..upper_bounds import CERTIFY_METHODS, METHODS
from ._common import PROG, CLIError, _discard_created, _nonneg_float, _option, _Parser, _pos_int, load_data
from .commands import cmd_attack, cmd_bound, cmd_certify, cmd_lower_bound, cmd_train
from .tools import cmd_audit, cmd_data_check, cmd_data_download, cmd_import_onnx, cmd_info, cmd_reproduce

__all__ = ["main", "build_parser", "load_data", "import_onnx"]

RESUMABLE = ("train", "reproduce", "data")
"""Commands whose partial outputs resume a rerun: a failure removes their new directory only when it holds no file."""
BOUND_METHODS = tuple(m for m in METHODS if m != "linear")
"""``stadv bound``'s methods: every :func:`stadv_ref.upper_bound` method but ``"linear"`` (linear classifiers only)."""


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------
_EPILOG = """examples:
  stadv data download                          # MNIST into STADV_DATA_DIR or ~/.cache/stadv_ref/mnist
  stadv reproduce --quick --out repro          # Figures 2-6 and 11 + report.md (minutes on 2 cores)
  stadv audit --out audit                      # numerical audit table (audit.md, audit.json)
  stadv train nt --quick --out models          # train a network variant (MNIST)
  stadv certify --model models/nt.npz --eps 0.01 0.05 --method sdp spectral local
  stadv lower-bound --model models/nt.npz --eps 0.5 2 7.84
  stadv attack --model models/nt.npz --tau 0.05 --n 100
  stadv import-onnx net.onnx net.npz           # certify your own network (needs the onnx extra)
  stadv info                                   # versions, backends and thread configuration
"""


def _common(parser, *, seed=True, out=True, progress=True, quiet=True):
    """The common options a command uses: ``--backend`` always; ``--seed``, ``--out``, ``--no-progress``, ``-q``."""
    g = parser.add_argument_group("common options")
    g.add_argument("--backend", help="compute backend: numpy (default), numba, cupy (or STADV_BACKEND)")
    if seed:
        g.add_argument("--seed", type=_pos_int("--seed", 0), default=0, help="random seed (default 0)")
    if out:
        g.add_argument("--out", metavar="DIR", help="output directory (created if needed; removed again if the "
                       "command fails before finishing)")
    if progress:
        g.add_argument("--no-progress", action="store_true", help="no progress bars")
    if quiet:
        g.add_argument("-q", "--quiet", action="store_true", help="no summary lines on stdout")


def _data_options(parser, split="test"):
    """``--data`` or MNIST (``--data-dir``, ``--split``, ``--n``, ``--offset``)."""
    d = parser.add_argument_group("data (an .npz with X and y, or MNIST)")
    d.add_argument("--data", metavar="FILE.npz", help="arrays X (N,H,W) in [0,1] and y (N,) int")
    d.add_argument("--data-dir", metavar="DIR", help="MNIST IDX directory (default STADV_DATA_DIR; fill it with "
                   "'stadv data download')")
    d.add_argument("--split", choices=("train", "test"), default=split, help=f"MNIST split (default {split})")
    d.add_argument("--n", type=_pos_int("--n"), help="number of examples (default all)")
    d.add_argument("--offset", type=_pos_int("--offset", 0), default=0, help="skip the first OFFSET examples")


def _model_option(parser, required=True):
    parser.add_argument("--model", required=required, metavar="FILE.npz",
                        help="network .npz: W (m,d), v (m,) or (K,m), optional b, c, image_shape")


def _add_gap_tol(parser):
    """The ``--gap-tol`` option of the commands that solve SDPs (certify, bound)."""
    parser.add_argument("--gap-tol", type=_nonneg_float("--gap-tol"), default=1e-3,
                        help="certified relative gap at which the SDP solvers stop (default 1e-3; the bound is "
                        "certified either way, a smaller value makes it up to that fraction tighter and slower)")


def _input_range(parser, help=None):
    parser.add_argument("--input-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LO", "HI"), help=help)


def _add_train(sub):
    s = sub.add_parser("train", help="train a network variant (appendix 6.8)",
                       description="Train one of the paper's network variants on MNIST (or --data). Resumes from "
                       "the per-epoch checkpoint in --out after an interruption.")
    _data_options(s, split="train")
    _common(s)
    s.add_argument("variant", metavar="VARIANT", help=f"one of {', '.join(VARIANTS)}")
    s.add_argument("--model", metavar="FILE.npz", help="where to write the model (default OUT/VARIANT.npz)")
    s.add_argument("--hidden", type=_pos_int("--hidden"), default=500, help="hidden units (default 500)")
    s.add_argument("--epochs", type=_pos_int("--epochs", 0), help="epochs (default: the variant's)")
    s.add_argument("--batch-size", type=_pos_int("--batch-size"), default=100)
    s.add_argument("--classes", type=_pos_int("--classes", 2), help="number of classes (default max(y)+1)")
    s.add_argument("--quick", action="store_true", help="5000 images and few epochs")
    s.add_argument("--test-data", metavar="FILE.npz", help="test set for the reported accuracy (default MNIST test "
                   "when training on the MNIST train split)")
    s.add_argument("--test-n", type=_pos_int("--test-n"), help="test examples (default all)")
    s.add_argument("--option", type=_option, action="append", metavar="KEY=VALUE",
                   help="training option override (e.g. lr=0.001, fro_weight=0.08); repeatable")
    s.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    s.add_argument("--keep-checkpoint", action="store_true", help="keep OUT/VARIANT.ckpt.npz after training")
    s.set_defaults(func=cmd_train)


def _add_attack(sub):
    s = sub.add_parser("attack", help="stAdv attack (Xiao et al. 2018)",
                       description="stAdv attack on a multi-class model: success rate and adversarial accuracy "
                       "per tau; adversarial images and flows as .npz, one CSV row per image and tau.")
    _model_option(s)
    _data_options(s)
    _common(s, seed=False)  # the attack is deterministic
    s.add_argument("--tau", type=_nonneg_float("--tau"), nargs="+", default=[0.05], help="flow-loss weight(s)")
    s.add_argument("--kappa", type=_nonneg_float("--kappa"), default=0.0, help="CW confidence")
    s.add_argument("--target", type=_pos_int("--target", 0), metavar="CLASS",
                   help="targeted attack towards CLASS (images of that class are left out)")
    s.add_argument("--method", choices=STADV_METHODS, default=STADV_METHODS[0])
    s.add_argument("--max-iter", type=_pos_int("--max-iter"), default=200)
    default_bs = inspect.signature(stadv_attack).parameters["batch_size"].default
    s.add_argument("--batch-size", type=_pos_int("--batch-size"), metavar="N",
                   help=f"images per batch of the batched method (default {default_bs}); the progress bar "
                   "moves once per batch")
    s.add_argument("--stadv-code", action="store_true",
                   help="the public stAdv code's choices (diagonal neighbours, symmetric flow padding, border warp)")
    s.set_defaults(func=cmd_attack)


def _add_lower_bound(sub):
    s = sub.add_parser("lower-bound", help="Theorem 1 / Algorithm 1 lower bounds",
                       description="Certified lower bounds on sup l_adv (the exact loss of a feasible pair) and the "
                       "Theorem 1 value (an estimate about l~), per eps.")
    _model_option(s)
    _common(s)
    s.add_argument("--eps", type=_nonneg_float("--eps"), nargs="+", required=True, help="budget(s) ||M r|| <= eps")
    s.add_argument("--flow", choices=("tied", "untied"), default="tied")
    s.add_argument("--max-iter", type=_pos_int("--max-iter", 0), default=30, help="outer iterations (0: Theorem 1)")
    s.add_argument("--midpoints", type=_pos_int("--midpoints"), default=16, help="n of Eq. (7)")
    s.add_argument("--restarts", type=_pos_int("--restarts", 0), default=0, help="extra random starts")
    s.add_argument("--y", type=_pos_int("--y", 0), help="true class (multi-class; default the predicted one)")
    s.add_argument("--classes", type=_pos_int("--classes", 0), nargs=2, metavar=("I", "Y"),
                   help="attack the fixed margin f_I - f_Y")
    s.set_defaults(func=cmd_lower_bound)


def _add_certify(sub):
    s = sub.add_parser("certify", help="certify test points (0/1 adversarial loss)",
                       description="Certify each example against every flow with ||M r|| <= eps using the chosen "
                       "upper bounds; writes the 0/1 adversarial loss per eps and method (certify.json) and one "
                       "CSV row per image, method and eps (certify.csv).")
    _model_option(s)
    _data_options(s)
    _common(s)
    s.add_argument("--eps", type=_nonneg_float("--eps"), nargs="+", required=True)
    s.add_argument("--method", nargs="+", default=["sdp"], choices=CERTIFY_METHODS, metavar="METHOD",
                   help=f"bound(s): {', '.join(CERTIFY_METHODS)} (default sdp; local: the per-image certificate)")
    s.add_argument("--flow", choices=("tied", "untied"), default="tied",
                   help="flows certified against (untied: --method local only)")
    s.add_argument("--tight", action="store_true", help="--method local at its tight level (slower)")
    _input_range(s, "pixel range of the inputs: 0 1 (constant 2) or -1 1 (constant 4)")
    _add_gap_tol(s)
    s.add_argument("--bound-cache", metavar="DIR",
                   help="keep the per-network class-pair bounds here (.npz) and reuse them on later runs")
    s.set_defaults(func=cmd_certify)


def _add_bound(sub):
    s = sub.add_parser("bound", help="upper bounds on l_adv for a model",
                       description="Upper bounds on sup l_adv: a binary model's output, the margin f_I - f_Y of a "
                       "multi-class model (--classes I Y), or every class pair (the default for multi-class).")
    _model_option(s)
    _common(s)
    s.add_argument("--eps", type=_nonneg_float("--eps"), nargs="+", required=True)
    s.add_argument("--method", nargs="+", default=["sdp"], choices=BOUND_METHODS, metavar="METHOD",
                   help=f"bound(s): {', '.join(BOUND_METHODS)} (default sdp)")
    s.add_argument("--classes", type=_pos_int("--classes", 0), nargs=2, metavar=("I", "Y"))
    _input_range(s)
    _add_gap_tol(s)
    s.set_defaults(func=cmd_bound)


def _add_reproduce_audit(sub):
    s = sub.add_parser("reproduce", help="regenerate Figures 2-6 and 11 with report.md",
                       description="Train (or reuse cached) networks and regenerate Figures 2-6 and 11 and a "
                       "report.md that puts the paper's claims beside our numbers. Interrupted runs resume: "
                       "finished steps are skipped.")
    _common(s)
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="few thousand images, fewer eps/tau (default)")
    mode.add_argument("--full", action="store_true", help="the paper's scale (hours)")
    s.add_argument("--data-dir", metavar="DIR", help="MNIST IDX directory (default STADV_DATA_DIR)")
    s.add_argument("--cache-dir", metavar="DIR", help="trained-model cache (default OUT/models)")
    s.add_argument("--only", nargs="+", choices=STEP_NAMES, metavar="STEP",
                   help=f"run only these steps (and missing prerequisites): {', '.join(STEP_NAMES)}")
    s.add_argument("--force", nargs="+", choices=STEP_NAMES, metavar="STEP", help="recompute these steps")
    s.add_argument("--report-only", action="store_true",
                   help="write OUT/report.md from the steps already finished in OUT (runs nothing; the report "
                   "names the steps not computed)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_pos_int("--workers", 1), metavar="N",
                       help="processes of the local pool that runs the steps' jobs (default: one per core; "
                       "1: in this process); the numbers do not depend on it")
    where.add_argument("--dask-scheduler", metavar="ADDRESS",
                       help="run the jobs on this Dask cluster (tcp://host:8786; needs the [dask] extra; its "
                       "workers must see the same data, cache and output paths)")
    s.set_defaults(func=cmd_reproduce)

    s = sub.add_parser("audit", help="numerical audit of every equation and claim",
                       description="Check every equation and claim of the paper numerically and write a table "
                       "(audit.md, audit.json): claim, what the paper says, what was measured, verdict.")
    _common(s)
    s.add_argument("--quick", action="store_true", help="smaller attack budgets (seconds)")
    s.add_argument("--only", nargs="+", choices=[k for k, _ in CHECKS], metavar="CHECK",
                   help="run only these checks")
    s.set_defaults(func=cmd_audit)


def _add_files(sub):
    s = sub.add_parser("import-onnx", help="convert an ONNX one-hidden-layer net to .npz",
                       description="Convert (Flatten) Gemm/MatMul -> Relu -> Gemm/MatMul ONNX graphs to the model "
                       ".npz format. Needs the onnx package (the [onnx] extra).")
    _common(s, seed=False, out=False, progress=False)
    s.add_argument("onnx", metavar="MODEL.onnx")
    s.add_argument("output", metavar="MODEL.npz")
    s.add_argument("--image-shape", type=_pos_int("--image-shape"), nargs=2, metavar=("H", "W"))
    s.set_defaults(func=cmd_import_onnx)

    s = sub.add_parser("info", help="versions, backends, threads; describe a model .npz",
                       description="Print the environment (library version, git commit, backends, package "
                       "versions, thread configuration) and, with --model, a model's shapes, norms and stored "
                       "metadata, as JSON.")
    _model_option(s, required=False)
    _common(s, seed=False, out=False, progress=False, quiet=False)
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("data", help="download or check the MNIST / Fashion-MNIST IDX files",
                       description="Download the IDX files (checked against their published MD5 checksums) or "
                       "check a folder of them.")
    dsub = s.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser, required=True)
    d = dsub.add_parser("download", help="fetch the four IDX files (MD5-checked) into --dir",
                        description="Fetch the missing IDX files of the data set into --dir (default "
                        "STADV_DATA_DIR, else ~/.cache/stadv_ref/DATASET), each checked against its published "
                        "MD5 checksum; files already there are verified the same way. Needs internet.")
    d.add_argument("--dataset", choices=tuple(DATASETS), default="mnist")
    d.add_argument("--dir", metavar="DIR", help="target folder (default STADV_DATA_DIR or the cache)")
    d.add_argument("--mirror", action="append", metavar="URL", help="base URL to fetch from instead of the "
                   "published mirrors (repeatable)")
    _common(d, seed=False, out=False, progress=False)
    d.set_defaults(func=cmd_data_download)
    d = dsub.add_parser("check", help="verify the four IDX files in DIR (one line per file)",
                        description="Verify the four IDX files of the data set in DIR: published MD5 checksum, "
                        "uint8 images of 28x28 and labels in [0, 9], as many labels as images.")
    d.add_argument("dir", metavar="DIR")
    d.add_argument("--dataset", choices=tuple(DATASETS), default="mnist")
    _common(d, seed=False, out=False, progress=False)
    d.set_defaults(func=cmd_data_check)


def build_parser():
    """The ``stadv`` argument parser (one sub-parser per command)."""
    p = _Parser(prog=PROG, description="Spatially transformed adversarial inputs: attacks, lower bounds, "
                "certificates, reproduction and audit of the paper.", epilog=_EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_train, _add_attack, _add_lower_bound, _add_certify, _add_bound, _add_reproduce_audit,
                _add_files):
        add(sub)
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
    args.command_line = [PROG, *map(str, sys.argv[1:] if argv is None else argv)]  # for the provenance block
    debug = os.environ.get("STADV_DEBUG", "").strip() not in ("", "0")
    where = f"{PROG} {args.command}" + (f" {args.data_command}" if args.command == "data" else "")
    resumable = args.command in RESUMABLE
    finished = False
    try:
        ctx = use_backend(args.backend) if getattr(args, "backend", None) else contextlib.nullcontext()
        with ctx, warnings.catch_warnings():
            if not debug:  # e.g. a damaged cache file that is recomputed: one line, not two
                warnings.showwarning = _warn_in_one_line(where)
            status = int(args.func(args) or 0)
        finished = True
        return status
    except KeyboardInterrupt:
        kept = "finished outputs are kept; rerun to resume" if resumable else "its output directory is removed"
        print(f"{where}: interrupted ({kept})", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. "stadv info ... | head": not an error of ours
        finished = True
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
    finally:
        if not finished:  # no output folder is left behind by a failed command
            _discard_created(args, keep_files=resumable)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
