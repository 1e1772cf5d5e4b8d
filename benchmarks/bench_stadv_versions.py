"""Benchmark: the batched stAdv attack of an earlier ``stadv_ref/attacks.py`` vs the current one.

Runs ``stadv_attack(..., method="batched")`` of both versions on the same MNIST
test images, network and settings, in one run, on the current backend
(``STADV_BACKEND``), and reports images per second, their ratio and whether the
results match (success rate, objective values). The old version is read with
``git show REV:stadv_ref/attacks.py`` and imported as ``stadv_ref._attacks_rev``
(its relative imports resolve against the current package).

Usage::

    python benchmarks/bench_stadv_versions.py [--rev 5275081] [--n 1000] [--out FILE]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def load_old(rev):
    src = subprocess.run(["git", "show", f"{rev}:stadv_ref/attacks.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    fd, path = tempfile.mkstemp(suffix=".py")
    with os.fdopen(fd, "w") as fh:
        fh.write(src)
    name = "stadv_ref._attacks_rev"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    os.unlink(path)
    return mod


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rev", default="5275081", help="git revision of the old attacks.py")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--tau", type=float, default=0.05)
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--out", default=None, help="JSON file (default: print only)")
    args = p.parse_args(argv)
    import stadv_ref
    from stadv_ref import attacks as new
    from stadv_ref.training import load_or_train

    old = load_old(args.rev)
    net = load_or_train("nt", hidden=500)
    X, y = stadv_ref.load_mnist("test", limit=args.n)
    doc = {"benchmark": "batched stAdv attack: attacks.py at an earlier revision vs now",
           "old_revision": args.rev, "backend": stadv_ref.current_backend_name(),
           "settings": {"n": args.n, "tau": args.tau, "max_iter": args.max_iter, "memory": 10,
                        "batch_size": 500, "network": "nt, 500 hidden, 60000 training images",
                        "images": f"first {args.n} MNIST test images"},
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_before": os.getloadavg(),
                       "threads_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                                      "NUMBA_NUM_THREADS")},
                       "note": "shared machine: other jobs ran at the same time; the ratio is the measure"}}
    objs = {}
    for name, mod in (("old", old), ("new", new)):
        mod.stadv_attack(net, X[:4], y[:4], args.tau, max_iter=3, progress=False)  # warm-up (JIT)
        t0 = time.perf_counter()
        r = mod.stadv_attack(net, X, y, args.tau, max_iter=args.max_iter, progress=False)
        dt = time.perf_counter() - t0
        objs[name] = r
        doc[name] = {"seconds": dt, "images_per_second": args.n / dt,
                     "extrapolated_seconds_10000_images": 10000 * dt / args.n,
                     "success_rate": r.success_rate, "mean_objective": float(r.objective.mean()),
                     "mean_iterations": float(r.n_iter.mean()), "mean_evaluations": float(r.n_eval.mean())}
    a, b = objs["new"], objs["old"]
    doc["machine"]["loadavg_after"] = os.getloadavg()
    doc["speedup_images_per_second"] = doc["new"]["images_per_second"] / doc["old"]["images_per_second"]
    doc["agreement"] = {
        "success_flags_equal": float((a.success == b.success).mean()),
        "new_objective_lower_or_equal_fraction": float((a.objective <= b.objective + 1e-9).mean()),
        "median_rel_objective_diff": float(np.median(np.abs(a.objective - b.objective)
                                                     / np.maximum(np.abs(b.objective), 1e-12))),
        "max_rel_objective_diff": float(np.max(np.abs(a.objective - b.objective)
                                               / np.maximum(np.abs(b.objective), 1e-12))),
    }
    text = json.dumps(doc, indent=1, default=float) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return doc


if __name__ == "__main__":
    main()
