"""Benchmark (#20, deliverable 5): numpy vs numba backend with DEFAULT threads, one run.

"Threads that never hurt": with the thread pools as a user gets them -- no ``NUMBA_NUM_THREADS``,
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` or ``MKL_NUM_THREADS`` in the environment, no thread
option anywhere -- the numba backend must never be slower than the NumPy reference backend. Each
case times a PUBLIC call of :mod:`stadv_ref` once with ``backend="numpy"`` and once with
``backend="numba"`` (``backend=`` where the function takes it, else
``with stadv_ref.use_backend(...)``):

* ``warp``: :func:`stadv_ref.transform.warp` (Eq. 1) on 1,000 28x28 float32 images with
  ``N(0, 1)`` pixel flows, zero padding; ``warp+vjp``: the same warp, then
  :func:`~stadv_ref.transform.warp_vjp_x` and :func:`~stadv_ref.transform.warp_vjp_flow`;
* ``flow_loss``: :func:`stadv_ref.stadv_flow_loss` (value and gradient) on the same flows;
* ``network``: ``net.forward`` and ``net.input_gradient`` (BLAS products and the backend's
  parallel loops in turn: where two thread pools meet) on 1,000 MNIST test images;
* ``local fast`` / ``local tight``: :func:`stadv_ref.local_pair_bounds` at ``eps = 0.1`` (tied
  flow) on the first 100 MNIST test images and the 784-500-10 ``nt`` network trained on the full
  training set (``runs/models/nt-h500-n60000-s0.npz``, loaded, never trained here; the
  ``network`` case uses it too);
* ``upper sdp`` / ``upper spectral``: :func:`stadv_ref.upper_bound` at ``eps = 0.05`` for the
  class pair ``(1, 0)`` of that network (``method="sdp"``: the mixing solver and its Cholesky
  certificate; ``"spectral"``: the closed form);
* ``stadv attack``: :func:`stadv_ref.stadv_attack` (batched engine, ``tau = 0.05``, defaults
  otherwise) on the first 200 test images;
* ``flow pgd``: :func:`stadv_ref.attacks.flow_pgd_attack` (4 restarts, 60 steps, ``eps = 0.05``) on
  the first test image for two class pairs, tied and untied (the soundness spot check's attack:
  small parallel kernels and BLAS products in turn, where idle OpenMP workers spin; see
  :mod:`stadv_numba`'s ``OMP_WAIT_POLICY``).

How: each call runs once per backend before any timing (Numba's compilation -- or loading from
its on-disk cache -- and first-call allocations are excluded; the slow cases warm up on a smaller
call through the same kernels: 4 images, or ``max_iter=2`` for the SDP), then interleaved rounds
(``--fast-repeats`` 25 for the millisecond cases, ``--repeats`` 9 for ``local fast``,
``--slow-repeats`` 3 for ``local tight``, ``upper sdp`` and ``stadv attack``: seconds each),
the order of the two backends alternating from round to round, so a change of machine
load hits both alike; the median wall time per backend is reported with the ratio
``numba / numpy`` (below 1: numba faster), and the ratio of the fastest runs (less sensitive to
the other jobs' load). A case passes (``numba_not_slower``) when the ratio of the medians is at
most ``1 + TOLERANCE`` (5%: an allowance for timing noise; the machine is shared).
The results of the two backends are compared (largest absolute difference) so that the timed
calls are known to compute the same thing. Recorded with the numbers: the load average before
and after every case, the CPU count, the environment's thread variables, the BLAS and OpenMP
pools (``threadpoolctl.threadpool_info()``), Numba's thread count and threading layer. The run
refuses to start when a thread variable is set (``--allow-env`` overrides, and the JSON then
says ``default_threads: false``).

Usage::

    STADV_DATA_DIR=/path/to/mnist python benchmarks/bench_threads.py
        [--fast-repeats 25] [--repeats 9] [--slow-repeats 3] [--cases NAME ...]
        [--model runs/models/nt-h500-n60000-s0.npz] [--out benchmarks/results/threads.json]

Writes ``benchmarks/results/threads.json`` and prints a markdown table. Not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import threadpoolctl

import stadv_ref
from stadv_ref import transform
from stadv_ref._io import atomic_write_json
from stadv_ref._provenance import THREAD_ENV_VARS, provenance
from stadv_ref.attacks import flow_pgd_attack

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "threads.json"
DEFAULT_MODEL = HERE.parent / "runs" / "models" / "nt-h500-n60000-s0.npz"
BACKENDS = ("numpy", "numba")
TOLERANCE = 0.05
"""``numba_not_slower`` means ``numba / numpy <= 1 + TOLERANCE`` (medians of the same run)."""
OTHER_ENV = ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER", "STADV_BACKEND")


def _pools():
    """Summary of ``threadpoolctl.threadpool_info()``: one entry per BLAS/OpenMP library."""
    return [{k: d.get(k) for k in ("user_api", "internal_api", "num_threads", "version", "threading_layer")}
            | {"library": Path(d.get("filepath", "")).name} for d in threadpoolctl.threadpool_info()]


def _numba_info():
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = None
    return {"numba_threads": numba.get_num_threads(), "numba_config_threads": numba.config.NUMBA_NUM_THREADS,
            "numba_threading_layer": layer, "numba_version": numba.__version__}


def _max_diff(a, b):
    """Largest absolute difference of two results (arrays, tuples of arrays, result objects)."""
    if isinstance(a, (tuple, list)):
        return max(_max_diff(u, v) for u, v in zip(a, b))
    for attr in ("value", "objective"):  # UpperBoundResult / StadvResult (its objective per image)
        if hasattr(a, attr):
            return _max_diff(getattr(a, attr), getattr(b, attr))
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf
        return float(np.max(np.where(a == b, 0.0, np.abs(a - b))))  # equal infinities count as 0


class Case(NamedTuple):
    what: str
    fn: Callable  # fn(backend) -> result: the timed call
    speed: str = "fast"  # "fast" (ms per call): --fast-repeats rounds; "medium": --repeats; "slow": --slow-repeats
    warm: Callable | None = None  # a cheaper call that compiles the same kernels (default: fn)


def make_cases(net, X, y, n_attack, rng):
    """``{name: Case}``: the public calls timed."""
    x = rng.uniform(0, 1, (1000, 1, 28, 28)).astype(np.float32)
    flow = rng.standard_normal((1000, 2, 28, 28)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    Xl, yl = X[:100], y[:100]
    Xn = X[:1000].reshape(len(X[:1000]), -1)
    wts = rng.standard_normal((len(Xn), net.n_classes))
    Xa, ya = X[:n_attack], y[:n_attack]

    def warp_vjp(be):
        out = transform.warp(x, flow, backend=be)
        return out, transform.warp_vjp_x(flow, g, backend=be), transform.warp_vjp_flow(x, flow, g, backend=be)

    def network(be):
        return net.forward(Xn, backend=be), net.input_gradient(Xn, wts, backend=be)

    def local(tightness, n=100):
        return lambda be: stadv_ref.local_pair_bounds(net, Xl[:n], yl[:n], 0.1, tightness=tightness, backend=be)

    def upper(method, **kw):
        def fn(be):
            with stadv_ref.use_backend(be):
                return stadv_ref.upper_bound(net, 0.05, method=method, classes=(1, 0), **kw)
        return fn

    def attack(n):
        def fn(be):
            with stadv_ref.use_backend(be):
                return stadv_ref.stadv_attack(net, Xa[:n], ya[:n], tau=0.05, progress=False)
        return fn

    def flow_pgd(be):
        with stadv_ref.use_backend(be):
            return [flow_pgd_attack(net, 0.05, classes=(i, int(y[0])), x=X[0], tied=tied,
                                                      restarts=4, steps=60, seed=0).value
                    for i in (1, 2) for tied in (True, False)]

    model = "nt 784-500-10"
    return {
        "warp": Case("transform.warp, 1000x1x28x28 float32, N(0,1) flow",
                     lambda be: transform.warp(x, flow, backend=be)),
        "warp+vjp": Case("warp, warp_vjp_x, warp_vjp_flow (same arrays)", warp_vjp),
        "flow_loss": Case("stadv_flow_loss (value + gradient), 1000x2x28x28 float32",
                          lambda be: stadv_ref.stadv_flow_loss(flow, backend=be)),
        "network": Case(f"net.forward + net.input_gradient, {len(Xn)} MNIST images, {model}", network),
        "local fast": Case(f"local_pair_bounds eps=0.1 fast, 100 MNIST images, {model}", local("fast"), "medium"),
        "local tight": Case(f"local_pair_bounds eps=0.1 tight, 100 MNIST images, {model}", local("tight"), "slow",
                            local("tight", 4)),
        "upper sdp": Case(f"upper_bound eps=0.05 method=sdp classes=(1,0), {model}", upper("sdp"), "slow",
                          upper("sdp", max_iter=2)),
        "upper spectral": Case("upper_bound eps=0.05 method=spectral classes=(1,0)", upper("spectral")),
        "stadv attack": Case(f"stadv_attack tau=0.05 batched engine, {len(Xa)} MNIST images", attack(len(Xa)),
                             "slow", attack(4)),
        "flow pgd": Case(f"flow_pgd_attack eps=0.05, 1 MNIST image, 2 class pairs x tied/untied, {model}",
                         flow_pgd, "medium"),
    }


def time_case(case, repeats):
    """Warm-up once per backend, then ``repeats`` interleaved rounds (order alternating)."""
    for be in BACKENDS:  # warm-up: compile / load the cache, allocate
        (case.warm or case.fn)(be)
    wall = {be: [] for be in BACKENDS}
    cpu = {be: [] for be in BACKENDS}
    results = {}
    for r in range(repeats):
        for be in (BACKENDS if r % 2 == 0 else BACKENDS[::-1]):
            c0, t0 = time.process_time(), time.perf_counter()
            results[be] = case.fn(be)
            wall[be].append(time.perf_counter() - t0)
            cpu[be].append(time.process_time() - c0)
    out = {f"seconds_{be}": statistics.median(wall[be]) for be in BACKENDS}
    out["ratio_numba_over_numpy"] = out["seconds_numba"] / out["seconds_numpy"]
    out["ratio_best_runs"] = min(wall["numba"]) / min(wall["numpy"])
    out["numba_not_slower"] = bool(out["ratio_numba_over_numpy"] <= 1 + TOLERANCE)
    out["repeats"] = repeats
    out["cpu_seconds"] = {be: statistics.median(cpu[be]) for be in BACKENDS}
    out["all_seconds"] = wall
    out["max_abs_diff_numba_vs_numpy"] = _max_diff(results["numba"], results["numpy"])
    return out


def markdown_table(res):
    lines = ["| case | numpy | numba | numba / numpy | numba not slower (<= 1.05) | best runs: numba / numpy "
             "| runs | load before / after |",
             "|---|---:|---:|---:|---|---:|---:|---|"]
    for name, c in res["cases"].items():
        lo = c["loadavg_before"][0], c["loadavg_after"][0]
        lines.append(f"| {name} | {c['seconds_numpy'] * 1e3:.1f} ms | {c['seconds_numba'] * 1e3:.1f} ms "
                     f"| {c['ratio_numba_over_numpy']:.2f} | {'yes' if c['numba_not_slower'] else 'NO'} "
                     f"| {c['ratio_best_runs']:.2f} | {c['repeats']} | {lo[0]:.2f} / {lo[1]:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast-repeats", type=int, default=25, help="repeats of the millisecond cases")
    ap.add_argument("--repeats", type=int, default=9, help="repeats of local fast")
    ap.add_argument("--slow-repeats", type=int, default=3,
                    help="repeats of the slow cases (local tight, upper sdp, attack)")
    ap.add_argument("--attack-images", type=int, default=200)
    ap.add_argument("--cases", nargs="+", default=None, help="only these cases (names of the table)")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--data-dir", default=os.environ.get("STADV_DATA_DIR"))
    ap.add_argument("--allow-env", action="store_true", help="run even with a thread variable set")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)

    env = {k: os.environ.get(k) for k in THREAD_ENV_VARS + OTHER_ENV}
    default_threads = all(env[k] is None for k in THREAD_ENV_VARS)
    if not default_threads and not args.allow_env:
        sys.exit(f"thread variables set ({ {k: v for k, v in env.items() if v is not None} }): "
                 "this benchmark measures the defaults (--allow-env to run anyway)")
    import stadv_numba  # noqa: F401  (the numba backend must be installed)

    t_start = time.perf_counter()

    net = stadv_ref.OneHiddenLayerNet.load(args.model)
    X, y = stadv_ref.load_mnist("test", args.data_dir, limit=max(1000, args.attack_images))
    cases = make_cases(net, X, y, args.attack_images, np.random.default_rng(0))
    if args.cases:
        cases = {k: cases[k] for k in args.cases}
    repeats = {"fast": args.fast_repeats, "medium": args.repeats, "slow": args.slow_repeats}
    res = {"benchmark": "numpy vs numba backend, default threads (#20 deliverable 5)",
           "tolerance": TOLERANCE,
           "repeats": repeats,
           "default_threads": default_threads,
           "cpu_count": os.cpu_count(), "env": env, "model": args.model,
           # stadv_numba sets OMP_WAIT_POLICY=PASSIVE at import unless the environment sets it
           "omp_wait_policy_in_effect": os.environ.get("OMP_WAIT_POLICY"),
           "loadavg_start": list(os.getloadavg()), "cases": {}}
    print(f"cpu_count {os.cpu_count()}, load {os.getloadavg()[0]:.2f}, env {env}", flush=True)
    for name, case in cases.items():
        before = list(os.getloadavg())
        row = {"what": case.what, "loadavg_before": before, **time_case(case, repeats[case.speed])}
        row["loadavg_after"] = list(os.getloadavg())
        res["cases"][name] = row
        print(f"{name:15s} numpy {row['seconds_numpy'] * 1e3:9.1f} ms  numba {row['seconds_numba'] * 1e3:9.1f} ms"
              f"  ratio {row['ratio_numba_over_numpy']:.2f}  diff {row['max_abs_diff_numba_vs_numpy']:.1e}"
              f"  load {before[0]:.2f}->{row['loadavg_after'][0]:.2f}", flush=True)
    res["loadavg_end"] = list(os.getloadavg())
    res["wall_seconds"] = time.perf_counter() - t_start
    res["thread_pools"] = _pools()
    res["numba"] = _numba_info()
    res["all_numba_not_slower"] = all(c["numba_not_slower"] for c in res["cases"].values())
    res["markdown"] = markdown_table(res)
    res["provenance"] = provenance(backend="numpy+numba")
    atomic_write_json(args.out, res)
    print()
    print(res["markdown"])
    print(f"\nthreads: numba {res['numba']}, pools {res['thread_pools']}")
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
