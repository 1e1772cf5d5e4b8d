"""Benchmark: per-image scipy L-BFGS-B stAdv (the reference) vs the batched attack.

Both minimise the same objective (:class:`stadv_ref.attacks.StadvObjective`,
untargeted, ``kappa = 0``, the same ``tau``, ``max_iter`` and L-BFGS memory)
on the same MNIST test images and the same network, in one run, on the current
backend (``STADV_BACKEND``, default numpy). Reported: images per second of each,
their ratio, the success rates on the common images, agreement of the success
flags and the objective values.

Usage::

    python benchmarks/bench_stadv.py [--n 1000] [--n-ref N] [--tau 0.05] [--quick]

``--n-ref`` runs the (slow) reference on the first ``N`` of the ``n`` images
only (say so in the report); the batched attack always runs on all ``n``.
Writes ``benchmarks/results/stadv.json`` (``--out`` to change).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "stadv.json"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--n-ref", type=int, default=None, help="reference on the first N images (default all n)")
    p.add_argument("--tau", type=float, default=0.05)
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--variant", default="nt")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--quick", action="store_true", help="quick network, n=100")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import stadv_ref
    from stadv_ref import stadv_attack
    from stadv_ref.training import load_or_train

    n = 100 if args.quick and args.n == 1000 else args.n
    n_ref = n if args.n_ref is None else min(args.n_ref, n)
    net, meta = load_or_train(args.variant, cache_dir=args.model_dir, hidden=args.hidden, quick=args.quick,
                              data_dir=args.data_dir, with_metadata=True)
    X, y = stadv_ref.load_mnist("test", data_dir=args.data_dir, limit=n)
    common = dict(max_iter=args.max_iter, progress=False)
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    bat = stadv_attack(net, X, y, args.tau, method="batched", **common)
    t_bat = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = stadv_attack(net, X[:n_ref], y[:n_ref], args.tau, method="lbfgs-b", **common)
    t_ref = time.perf_counter() - t0
    load_after = os.getloadavg()

    b = slice(0, n_ref)
    both_fail = ~ref.success & ~bat.success[b]
    rel = np.abs(bat.objective[b] - ref.objective) / np.maximum(np.abs(ref.objective), 1e-12)
    ips_bat, ips_ref = n / t_bat, n_ref / t_ref
    doc = {
        "benchmark": "stAdv: per-image scipy L-BFGS-B reference vs batched per-example L-BFGS",
        "network": {"variant": args.variant, "hidden": args.hidden, "quick": args.quick,
                    "test_accuracy": float(meta.get("test_accuracy", float("nan")))},
        "settings": {"tau": args.tau, "max_iter": args.max_iter, "memory": 10, "kappa": 0.0,
                     "n_batched": n, "n_reference": n_ref,
                     "reference_subset": n_ref < n,
                     "images": f"first {n} MNIST test images (reference: first {n_ref})",
                     "backend": stadv_ref.current_backend_name()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "threads_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                                   "NUMBA_NUM_THREADS")},
                    "loadavg_before": load_before, "loadavg_after": load_after,
                    "note": "shared machine: other jobs ran at the same time; the ratio is the measure"},
        "batched": {"seconds": t_bat, "images_per_second": ips_bat, "extrapolated_seconds_10000_images": 1e4 / ips_bat,
                    "success_rate_all": bat.success_rate,
                    "success_rate_common": float(bat.success[b].mean()),
                    "mean_iterations": float(bat.n_iter.mean()), "mean_evaluations": float(bat.n_eval.mean())},
        "reference": {"seconds": t_ref, "images_per_second": ips_ref, "extrapolated_seconds_10000_images": 1e4 / ips_ref,
                      "success_rate_common": ref.success_rate,
                      "mean_iterations": float(ref.n_iter.mean()), "mean_evaluations": float(ref.n_eval.mean())},
        "speedup_images_per_second": ips_bat / ips_ref,
        "agreement": {
            "success_flags_equal": float((bat.success[b] == ref.success).mean()),
            "batched_only_success": int((bat.success[b] & ~ref.success).sum()),
            "reference_only_success": int((~bat.success[b] & ref.success).sum()),
            "median_rel_objective_diff_both_fail": float(np.median(rel[both_fail])) if both_fail.any() else None,
            "batched_lower_objective_fraction_both_fail":
                float((bat.objective[b][both_fail] <= ref.objective[both_fail] + 1e-9).mean())
                if both_fail.any() else None,
        },
        "batched_reaches_reference_success": bool(bat.success[b].mean() >= ref.success_rate),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print(json.dumps({k: doc[k] for k in ("batched", "reference", "speedup_images_per_second", "agreement",
                                          "batched_reaches_reference_success")}, indent=1, default=float))
    return doc


if __name__ == "__main__":
    main()
