"""The ``stadv`` subcommands around the computations: ``reproduce``, ``audit``, ``info``, ``import-onnx``, ``data``.

* ``reproduce`` runs (or resumes) :func:`stadv_ref.experiments.pipeline.reproduce`, ``audit`` the
  numerical audit (:mod:`stadv_ref.experiments.audit`);
* ``info`` prints the environment (library version, git commit, backends, package versions and the
  thread configuration of :func:`stadv_ref._provenance.thread_config`) and, with ``--model``, a
  model's shapes, norms and stored metadata, as JSON;
* ``import-onnx`` converts an ONNX one-hidden-layer network to the model ``.npz``;
* ``data download`` fetches the MNIST / Fashion-MNIST IDX files, checked against their published MD5
  checksums (:func:`stadv_ref.data.load_dataset` with ``download=True, verify=True``), ``data check``
  verifies a folder of them, one line per file.

No paper equation lives here.
"""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from .._provenance import provenance
from ..backend import available_backends, current_backend_name
from ..data import FILES, _find, _verify, data_dir, load_dataset, read_idx
from ..experiments import pipeline
from ..experiments.audit import run_audit, write_report
from ..onnx_import import import_onnx
from ._common import CLIError, _default_out, _make_dir, _mnist_hint, _out_dir, _progress, _say, load_model

__all__ = ["cmd_reproduce", "cmd_audit", "cmd_info", "cmd_import_onnx", "cmd_data_download", "cmd_data_check"]


def cmd_reproduce(args):
    """``stadv reproduce``: run (or resume) :func:`stadv_ref.experiments.pipeline.reproduce`.

    With ``--only``, also prints the files of the chosen steps (the ``verify/`` scripts run single steps).
    """
    # the presets are looked up on the module at call time (tests replace quick_config there)
    cfg = pipeline.full_config(args.seed) if args.full else pipeline.quick_config(args.seed)
    out = _out_dir(args, _default_out("reproduce-full" if args.full else "reproduce-quick"))
    if args.report_only:
        if args.only or args.force:
            raise CLIError("--report-only runs nothing: it takes no --only or --force")
        _say(args, f"report of the finished steps -> {pipeline.write_report(out, cfg, cache_dir=args.cache_dir)}")
        return 0
    t0 = time.perf_counter()
    with _mnist_hint(args.data_dir):
        status = pipeline.reproduce(out, cfg, data_dir=args.data_dir, cache_dir=args.cache_dir, only=args.only,
                                    force=args.force or (), progress=_progress(args),
                                    log=None if args.quiet else print, workers=args.workers,
                                    dask_scheduler=args.dask_scheduler)
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
    out = _out_dir(args, _default_out("audit"))
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


def _environment():
    """Library version, git commit, backends, package versions and thread configuration of this process.

    Numba is imported when installed, so that its thread count and threading layer are shown.
    """
    if importlib.util.find_spec("numba") is not None:
        try:
            import numba  # noqa: F401  (thread_config reads numba's thread count once it is imported)
        except Exception:  # a broken Numba install: shown as no Numba threads
            pass
    env = provenance(backend=current_backend_name())
    for key in ("seed", "command_line"):
        env.pop(key)
    env["available_backends"] = available_backends()
    return env


def cmd_info(args):
    """``stadv info``: the environment and thread configuration, and with ``--model`` the model, as JSON."""
    info = {}
    if args.model:
        net, meta = load_model(args.model)
        info = {"model": str(args.model), "m": net.m, "d": net.d, "image_shape": list(net.image_shape),
                "classes": net.n_classes if not net.binary else "binary",
                "has_hidden_bias": bool(np.any(net.b != 0)), "norm_W_F": float(np.linalg.norm(net.W)),
                "norm_W_2": float(np.linalg.norm(net.W, 2)), "norm_v_F": float(np.linalg.norm(net.V))}
        for k, v in meta.items():
            if np.ndim(v) == 0:
                info[f"meta.{k}"] = v.item() if hasattr(v, "item") else v
    info["environment"] = _environment()
    print(json.dumps({k: (v if not isinstance(v, (np.generic,)) else v.item()) for k, v in info.items()}, indent=2,
                     default=str))
    return 0


def cmd_import_onnx(args):
    """``stadv import-onnx``: convert an ONNX one-hidden-layer network to the model ``.npz``."""
    net = import_onnx(args.onnx, tuple(args.image_shape) if args.image_shape else None)
    out = Path(args.output)
    _make_dir(args, out.parent)
    net.save(out, source=str(args.onnx))  # atomic, sealed
    _say(args, f"imported {net!r} from {args.onnx} -> {out}")
    return 0


def cmd_data_download(args):
    """``stadv data download``: fetch the missing IDX files (MD5-checked) and verify the present ones."""
    directory = data_dir(args.dataset, args.dir)
    if directory.exists() and not directory.is_dir():
        raise CLIError(f"--dir {str(directory)!r} exists and is not a directory")
    present = {name: _find(directory, name) is not None for names in FILES.values() for name in names}
    mirrors = [u if u.endswith("/") else u + "/" for u in args.mirror] if args.mirror else None
    _make_dir(args, directory)
    for split in FILES:
        try:
            X, _ = load_dataset(split, args.dataset, directory, download=True, verify=True, base_urls=mirrors)
        except ValueError as exc:
            if "could not download" not in str(exc):
                raise
            why = "a file that does not match its published MD5" if "MD5" in str(exc) else "offline, or the " \
                "mirrors are down?"
            raise CLIError(f"cannot download {args.dataset} into {str(directory)!r} ({why}): {exc}. Put the four IDX "
                           "files there by hand, or try --mirror URL") from exc
        for name in FILES[split]:
            how = "present, MD5 verified" if present[name] else "downloaded, MD5 verified"
            _say(args, f"{name}: {how}" + (f" ({len(X)} images)" if "images" in name else ""))
    _say(args, f"{args.dataset} is ready in {directory}; use --data-dir {directory} (or set STADV_DATA_DIR)")
    return 0


def _check_file(directory, name, dataset):
    """One file of ``data check``: (ok, line, count)."""
    path = _find(directory, name)
    if path is None:
        return False, f"MISSING {name} (nor {name[:-3]})", None
    try:
        _verify(path, name, dataset)
        arr = read_idx(path)
    except ValueError as exc:
        return False, f"BAD     {path.name}: {exc}", None
    if "images" in name:
        ok = arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[1:] == (28, 28)
        what = f"{arr.shape[0]} images of {'x'.join(map(str, arr.shape[1:]))} {arr.dtype}"
    else:
        ok = arr.dtype == np.uint8 and arr.ndim == 1 and arr.size > 0 and int(arr.max()) <= 9
        what = f"{arr.size} labels in [{int(arr.min()) if arr.size else '-'}, {int(arr.max()) if arr.size else '-'}]"
    if not ok:
        return False, f"BAD     {path.name}: unexpected content ({what}, shape {arr.shape})", None
    return True, f"ok      {path.name}: published MD5; {what}", arr.shape[0]


def cmd_data_check(args):
    """``stadv data check DIR``: the four IDX files' MD5 checksums and shapes, one line per file."""
    directory = Path(args.dir)
    if not directory.is_dir():
        raise CLIError(f"{str(directory)!r} is not a directory")
    bad = 0
    for split in FILES:
        counts = []
        for name in FILES[split]:
            ok, line, n = _check_file(directory, name, args.dataset)
            if ok and counts and counts[0] is not None and n != counts[0]:
                ok, line = False, f"BAD     {name}: {n} labels for {counts[0]} images"
            counts.append(n)
            bad += not ok
            _say(args, line)
    if bad:
        raise CLIError(f"{bad} of {2 * len(FILES)} {args.dataset} file(s) in {str(directory)!r} failed the check")
    _say(args, f"{args.dataset} in {directory}: all {2 * len(FILES)} files match their published MD5 checksums")
    return 0

