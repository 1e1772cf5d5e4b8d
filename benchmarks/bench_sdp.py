"""Benchmark: the Section 4.1 SDP per class pair, cvxpy+SCS vs the fast mixing solver, in one run.

For each size (``m`` hidden units, ``d = H*W`` pixels, ``n = m + d``) the same
matrix ``A = diag(v) W diag(lambda)`` is solved by

* cvxpy + SCS, the problem exactly as printed (``max tr(ZP) s.t. diag(Z) <= 1,
  Z psd``) with a time limit; its status, objective and time are recorded and its
  dual ``c`` is pushed through the rigorous dual inequality;
* :func:`stadv_ref.solve_sdp` (mixing method, certified relative gap ``<= gap_tol``)
  with the default certificate (Cholesky proof) and with the dense-eigenvalue
  route (``certificate="eigvalsh"``).

Reported per size: seconds per class pair, the speed ratio SCS/fast (a LOWER
bound when SCS stopped at its limit), the certified gap
``(value - primal) / primal`` of the fast solver, and ``|fast - SCS| / SCS``.
The 784-500 case uses a trained MNIST network when one is cached/trainable
(:func:`stadv_ref.training.load_or_train`, quick) and several class pairs for
the fast solver; smaller sizes use random networks where SCS finishes.

This is not a test. The machine is shared (2 cores, other jobs running): the
load average at start and end is recorded; both solvers are measured in the
same run under the same conditions.

Usage::

    python benchmarks/bench_sdp.py [--quick] [--scs-limit SECONDS] [--threads 1] [--repeat 3]
                                   [--out benchmarks/results/sdp.json]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path


def _threads_from_argv(argv):
    args = sys.argv[1:] if argv is None else list(argv)
    if "--threads" in args:
        return args[args.index("--threads") + 1]
    return "1"


# BLAS threads must be fixed before NumPy loads (default 1: the 2 cores are shared with other jobs,
# and two BLAS threads competing with them made both solvers erratic). Same setting for both solvers.
if __name__ == "__main__":
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _threads_from_argv(None))

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def _A_random(m, H, seed):
    from stadv_ref import aabb_radii

    rng = np.random.default_rng(seed)
    d = H * H
    W = rng.standard_normal((m, d)) / np.sqrt(d)
    v = rng.standard_normal(m) / np.sqrt(m)
    return (v[:, None] * W) * aabb_radii(H, H).reshape(-1)[None, :]


def _A_trained(pairs, quick_model=True):
    from stadv_ref import aabb_radii
    from stadv_ref.training import load_or_train

    net = load_or_train("nt", hidden=500, quick=quick_model, progress=False)
    lam = aabb_radii(28, 28).reshape(-1)
    return [((net.V[i] - net.V[y])[:, None] * net.W) * lam[None, :] for i, y in pairs]


def _fast(A, gap_tol, certificate, seed=0, repeat=3):
    from stadv_ref import solve_sdp

    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = solve_sdp(A, gap_tol=gap_tol, certificate=certificate, seed=seed)
        walls.append(time.perf_counter() - t0)
    wall = float(np.median(walls))
    return {"seconds": wall, "seconds_all_repeats": walls, "value": r.value, "primal": r.primal,
            "certified_gap": r.gap, "n_iter": r.n_iter,
            "rank": r.rank, "certificate": r.certificate, "status": r.status, "solve_seconds": r.time_solve,
            "certificate_seconds": r.time_certificate}


def _scs(A, limit, eps):
    from stadv_ref import solve_sdp

    t0 = time.perf_counter()
    r = solve_sdp(A, method="scs", scs_eps=eps, time_limit=limit, scs_max_iters=10**7)
    wall = time.perf_counter() - t0
    return {"seconds": wall, "status": r.status, "objective": r.details.get("scs_objective"),
            "iterations": r.details.get("scs_iters"), "scs_solve_seconds": r.details.get("scs_solve_time"),
            "certified_value_from_scs_dual": r.value, "feasible_primal": r.primal, "time_limit": limit,
            "hit_limit": bool(wall >= 0.95 * limit) or r.status != "optimal"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes only and short SCS limits")
    p.add_argument("--scs-limit", type=float, default=None, help="SCS time limit in seconds for the 784-500 case")
    p.add_argument("--scs-eps", type=float, default=1e-6)
    p.add_argument("--gap-tol", type=float, default=1e-4)
    p.add_argument("--pairs", type=int, default=5, help="class pairs timed for the fast solver at 784-500")
    p.add_argument("--repeat", type=int, default=3, help="repeats of each fast solve (median reported)")
    p.add_argument("--threads", default="1", help="BLAS threads for both solvers (set before NumPy loads)")
    p.add_argument("--out", default=str(HERE / "results" / "sdp.json"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from stadv_ref._io import atomic_write_json as write_json

    sizes = [(20, 7), (50, 10), (100, 14)] if args.quick else [(20, 7), (50, 10), (100, 14), (200, 20), (500, 28)]
    big_limit = args.scs_limit or (60.0 if args.quick else 600.0)
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    rows = []
    for m, H in sizes:
        d = H * H
        name = f"{d}-{m}"
        source = "random network"
        pairs = [(0, 1)]
        As = None
        if (m, H) == (500, 28):
            all_pairs = [(i, y) for i in range(10) for y in range(i + 1, 10)]
            pairs = all_pairs[:: max(1, len(all_pairs) // args.pairs)][: args.pairs]
            try:
                As = _A_trained(pairs)
                source = "MNIST nt network (stadv_ref.training.load_or_train, quick)"
            except Exception as exc:  # pragma: no cover - depends on MNIST / training
                source = f"random network (trained one unavailable: {type(exc).__name__}: {exc})"
        if As is None:
            As = [_A_random(m, H, seed) for seed in range(len(pairs))]
        print(f"[{name}] n = {m + d}: fast solver on {len(As)} pair(s) ...", flush=True)
        fast = [_fast(A, args.gap_tol, "auto", repeat=args.repeat) for A in As]
        fast_eig = [_fast(A, args.gap_tol, "eigvalsh", repeat=args.repeat) for A in As[:2]]
        tight = []
        if (m, H) == (500, 28) and source.startswith("MNIST"):
            from stadv_ref import upper_bound
            from stadv_ref.training import load_or_train

            net = load_or_train("nt", hidden=500, quick=True, progress=False)
            for pr in pairs:
                t0 = time.perf_counter()
                ub = upper_bound(net, 1.0, "tight", classes=pr, gap_tol=args.gap_tol)
                sd = upper_bound(net, 1.0, "sdp", classes=pr, gap_tol=args.gap_tol)
                tight.append({"pair": pr, "seconds": time.perf_counter() - t0, "tight_per_eps": ub.per_unit,
                              "sdp_per_eps": sd.per_unit, "tight_over_sdp": ub.per_unit / sd.per_unit,
                              "tight_winner": ub.details.get("winner"), "ellipsoid_gap": ub.gap})
        limit = big_limit if m >= 500 else (30.0 if args.quick else 300.0)
        print(f"[{name}] cvxpy+SCS (limit {limit:.0f} s) ...", flush=True)
        scs = _scs(As[0], limit, args.scs_eps)
        f0 = fast[0]
        ratio = scs["seconds"] / f0["seconds"]
        agree = None if scs["objective"] is None else abs(f0["value"] - scs["objective"]) / abs(scs["objective"])
        row = {
            "size": name, "m": m, "d": d, "n": m + d, "network": source, "pairs": pairs,
            "fast": fast, "fast_eigvalsh_certificate": fast_eig, "scs": scs,
            "tight_vs_sdp_info": tight,
            "fast_seconds_per_pair_mean": float(np.mean([f["seconds"] for f in fast])),
            "fast_seconds_per_pair_max": float(np.max([f["seconds"] for f in fast])),
            "fast_eigvalsh_seconds_per_pair_mean": float(np.mean([f["seconds"] for f in fast_eig])),
            "max_certified_gap": float(np.max([f["certified_gap"] for f in fast])),
            "ratio_scs_over_fast": ratio,
            "ratio_is_lower_bound": scs["hit_limit"],
            "rel_diff_fast_value_vs_scs_objective": agree,
            "scs_objective_below_fast_certified_value": None if scs["objective"] is None
            else bool(scs["objective"] <= f0["value"]),
        }
        rows.append(row)
        print(f"[{name}] fast {row['fast_seconds_per_pair_mean']:.3f} s/pair (gap <= {row['max_certified_gap']:.1e}); "
              f"SCS {scs['seconds']:.1f} s ({scs['status']}); ratio {'>=' if row['ratio_is_lower_bound'] else '='} "
              f"{ratio:.0f}; |fast - SCS|/SCS = {agree}", flush=True)
    result = {
        "benchmark": "Section 4.1 SDP per class pair: cvxpy+SCS vs stadv_ref.solve_sdp (mixing + certificate)",
        "quick": args.quick,
        "gap_tol": args.gap_tol,
        "scs_eps": args.scs_eps,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "load_average_start": load0, "load_average_end": os.getloadavg(),
                    "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
                    "note": "2-core machine shared with other jobs during the run; both solvers measured in the same "
                            "run under the same load and BLAS thread setting; fast-solver times are the median of "
                            "--repeat runs, SCS runs once"},
        "rows": rows,
        "seconds": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
