"""Benchmark (#15): the per-image scipy L-BFGS-B stAdv reference, the batched engine and a batched torch Adam.

All three minimise the identical objective (:class:`stadv_ref.attacks.StadvObjective`: CW margin
with ``kappa = 0``, untargeted, plus ``tau`` times the stAdv flow loss; the defaults' neighbour
and padding conventions) on the first ``n`` MNIST test images and the project's 784-500-10 ``nt``
network trained on the full training set, in ONE run:

(a) ``stadv_attack(method="lbfgs-b")``: scipy L-BFGS-B image by image (float64), on the first
    ``n_ref`` images (slow; the shared subset every comparison is made on);
(b) ``stadv_attack(method="batched")``: the batched engine (float32, all cores), on all ``n``;
(b') the engine on the numpy backend (``--numpy-row``), for comparison;
(c) a batched torch Adam (``max_iter`` steps, learning rate ``--adam-lr``, float32, torch's
    threads = the cores) on the same objective, written in torch (``grid_sample`` for Eq. (1));
    its value is checked against :func:`stadv_ref.attacks.stadv_objective` before it runs, and it
    reports, as the others do, the best successful point it evaluated, else its last iterate.
    Skipped with a message when torch is not installed (``pip install torch==2.13.0``).

Every method's objective is re-evaluated in float64 by :class:`StadvObjective` at its returned
flows. Reported per method: images/s, success rate, mean and median objective (all its images
and the shared subset), and the agreement with the reference on the shared subset (the fraction
of images where its objective <= the reference's + 1e-3). The targets of #15 are checked and
recorded: engine >= 10x the reference's images/s and >= torch Adam's, with success >= the
reference's and median objective <= the reference's on the shared subset. The machine's load
(``os.getloadavg`` before and after) and the thread settings are recorded beside the numbers.

Usage::

    python benchmarks/bench_stadv.py [--n 1000] [--n-ref 100] [--tau 0.05] [--backend numba]

The network is cached under ``runs/models/`` (``--model-dir``; trained on first use, and the
training time recorded). Writes ``benchmarks/results/stadv.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import threadpoolctl

import stadv_ref
from stadv_ref import stadv_attack
from stadv_ref.attacks import StadvObjective
from stadv_ref.attacks.engine import default_workers
from stadv_ref.training import load_or_train, model_path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "stadv.json"
DEFAULT_MODELS = HERE.parent / "runs" / "models"
AGREE_TOL = 1e-3


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--n-ref", type=int, default=100, help="reference on the first N images")
    p.add_argument("--tau", type=float, default=0.05)
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--variant", default="nt")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--quick", action="store_true", help="quick network (5,000 training images)")
    p.add_argument("--backend", default="numba")
    p.add_argument("--adam-lr", type=float, default=0.01)
    p.add_argument("--no-torch", action="store_true", help="skip (c)")
    p.add_argument("--n-profile", type=int, default=200, help="profile the engine on N images, one worker (0: no)")
    p.add_argument("--numpy-row", type=int, default=1000,
                   help="also time the engine on the numpy backend on the first N images (0: no)")
    p.add_argument("--model-dir", default=str(DEFAULT_MODELS))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    return p.parse_args(argv)


def _summary(seconds, n, obj_all, succ_all, ref=None, n_ref=None, **extra):
    """images/s, success and objective statistics; agreement with ``ref`` on the shared subset."""
    out = {"seconds": seconds, "images": n, "images_per_second": n / seconds,
           "success_rate": float(np.mean(succ_all)),
           "mean_objective": float(np.mean(obj_all)), "median_objective": float(np.median(obj_all))}
    if n_ref is not None:
        o, s = obj_all[:n_ref], succ_all[:n_ref]
        out["shared_subset"] = {"success_rate": float(np.mean(s)), "mean_objective": float(np.mean(o)),
                                "median_objective": float(np.median(o))}
        if ref is not None:
            out["agreement_with_reference"] = float(np.mean(o <= ref.objective + AGREE_TOL))
            out["success_flags_equal_reference"] = float(np.mean(s == ref.success))
    out.update(extra)
    return out


def _torch_objective(torch, F, x, flow, net_t, y, tau, opts, eps=1e-8):
    """The stAdv objective (untargeted, CW margin, ``L_flow``) in torch; returns (values, success)."""
    Wt, bt, Vt, ct = net_t
    N, _, H, W = x.shape
    rows = torch.arange(H, dtype=x.dtype).view(1, H, 1) + flow[:, 1]
    cols = torch.arange(W, dtype=x.dtype).view(1, 1, W) + flow[:, 0]
    grid = torch.stack((2 * cols / (W - 1) - 1, 2 * rows / (H - 1) - 1), dim=-1)
    xa = F.grid_sample(x, grid, mode="bilinear", padding_mode=opts["warp_padding"], align_corners=True)
    logits = torch.relu(xa.reshape(N, -1) @ Wt.T + bt) @ Vt.T + ct
    zy = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).max(1).values
    ladv = torch.clamp(zy - other, min=-opts["kappa"])
    mode = "constant" if opts["flow_padding"] == "zeros" else "replicate"
    padded = F.pad(flow, (1, 1, 1, 1), mode=mode)
    lf = 0.0
    for dr, dc in stadv_ref.smoothness.NEIGHBORHOODS[opts["neighborhood"]]:
        diff = flow - padded[:, :, 1 + dr:1 + dr + H, 1 + dc:1 + dc + W]
        lf = lf + torch.sqrt((diff ** 2).sum(1) + eps).sum((1, 2))
    return ladv + tau * lf, logits.argmax(1) != y


def run_torch_adam(net, X, y, tau, steps, lr, threads):
    """Batched Adam on the stAdv objective in torch (float32); ``None`` and a message without torch."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None, "torch is not installed (pip install torch==2.13.0): (c) skipped"
    torch.set_num_threads(threads)
    opts = {"kappa": 0.0, "neighborhood": "4", "flow_padding": "zeros", "warp_padding": "zeros"}
    dt = torch.float32
    n, H, W = X.shape
    x = torch.tensor(X[:, None], dtype=dt)
    net_t = tuple(torch.tensor(np.asarray(a), dtype=dt) for a in (net.W, net.b, net.V, net.c))
    yt = torch.tensor(y, dtype=torch.int64)
    # the torch objective is the project's objective (checked at a generic point)
    probe = np.random.default_rng(0).uniform(-0.7, 0.7, (min(n, 50), 2, H, W)) + 0.013
    ref = StadvObjective(net, X[:len(probe)], y[:len(probe)], tau)(probe, need_grad=False)["objective"]
    with torch.no_grad():
        val, _ = _torch_objective(torch, F, x[:len(probe)], torch.tensor(probe, dtype=dt), net_t,
                                  yt[:len(probe)], tau, opts)
    check = float(np.max(np.abs(val.numpy() - ref) / np.maximum(1.0, np.abs(ref))))
    if check > 1e-4:
        raise AssertionError(f"torch objective differs from StadvObjective by {check:.2e}")
    t0, c0 = time.perf_counter(), time.process_time()
    flow = torch.zeros((n, 2, H, W), dtype=dt, requires_grad=True)
    opt = torch.optim.Adam([flow], lr=lr)
    best = torch.full((n,), float("inf"))
    best_flow = torch.zeros((n, 2, H, W), dtype=dt)
    for _ in range(steps):
        opt.zero_grad()
        val, succ = _torch_objective(torch, F, x, flow, net_t, yt, tau, opts)
        with torch.no_grad():
            better = succ & (val < best)
            best[better] = val[better]
            best_flow[better] = flow[better]
        val.sum().backward()
        opt.step()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    ok = torch.isfinite(best)
    out = torch.where(ok[:, None, None, None], best_flow, flow.detach()).numpy().astype(np.float64)
    info = {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads(), "lr": lr,
            "steps": steps, "objective_check_max_rel_diff": check, "cpu_seconds": cpu}
    return (out, seconds, info), None


PROFILE_PARTS = {  # cProfile entries (file, function) -> part of the engine
    "network GEMMs and objective bookkeeping": ("attacks/objective.py", "__call__"),
    "L_flow (backend stadv_flow_loss kernel)": ("_smooth.py", "stadv_flow_loss_kernel"),
    "L-BFGS round kernel": ("attacks/lbfgs_round.py", "compiled_round"),
    "warp (backend kernel)": ("_warp.py", "warp_kernel"),
    "warp flow VJP (backend kernel)": ("_warp.py", "warp_vjp_flow_kernel"),
    "best-point record": ("attacks/lbfgs.py", "update"),
}


def profile_engine(net, X, y, tau, max_iter):
    """Where the engine's time goes: cProfile of one worker, own time per part per image-evaluation."""
    if len(y) == 0:
        return None
    prof = cProfile.Profile()
    t0 = time.process_time()
    prof.enable()
    res = stadv_attack(net, X, y, tau, max_iter=max_iter, progress=False, workers=1)
    prof.disable()
    cpu = time.process_time() - t0
    evals = int(res.n_eval.sum())
    stats = pstats.Stats(prof).stats
    parts = {}
    for name, (file, func) in PROFILE_PARTS.items():
        own = sum(v[2] for (f, _, fn), v in stats.items() if f.replace(os.sep, "/").endswith(file) and fn == func)
        parts[name] = {"seconds": own, "us_per_image_evaluation": own / evals * 1e6, "share": own / cpu}
    rest = cpu - sum(p["seconds"] for p in parts.values())
    parts["other (Python, NumPy glue)"] = {"seconds": rest, "us_per_image_evaluation": rest / evals * 1e6,
                                           "share": rest / cpu}
    return {"images": len(y), "workers": 1, "cpu_seconds_profiled": cpu, "image_evaluations": evals,
            "us_per_image_evaluation": cpu / evals * 1e6, "parts": parts,
            "note": "own (exclusive) time under cProfile, one worker; the objective's own time is mostly the "
                    "two BLAS GEMMs"}


def main(argv=None):
    args = parse_args(argv)
    n, n_ref = args.n, min(args.n_ref, args.n)
    cores = default_workers()
    path = model_path(args.variant, args.model_dir, hidden=args.hidden, quick=args.quick)
    trained_now = not path.is_file()
    t0, c0 = time.perf_counter(), time.process_time()
    net, meta = load_or_train(args.variant, cache_dir=args.model_dir, hidden=args.hidden, quick=args.quick,
                              data_dir=args.data_dir, with_metadata=True, progress=False)
    timing = path.with_suffix(".timing.json")
    if trained_now:
        training = {"wall_seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                    "loadavg": os.getloadavg(), "when": "in this run"}
        timing.write_text(json.dumps(training) + "\n")
    else:
        training = json.loads(timing.read_text()) if timing.is_file() else None
    X, y = stadv_ref.load_mnist("test", data_dir=args.data_dir, limit=n)
    common = dict(max_iter=args.max_iter, progress=False)
    doc = {"benchmark": "stAdv (#15): per-image scipy L-BFGS-B reference vs batched engine vs batched torch Adam"}
    with stadv_ref.use_backend(args.backend):
        for dt in ("float32", "float64"):  # compile / load the kernels (the engine reruns stalled images in float64)
            stadv_attack(net, X[:8], y[:8], args.tau, max_iter=3, progress=False, dtype=dt)
        load_before = os.getloadavg()
        t0, c0 = time.perf_counter(), time.process_time()
        ref = stadv_attack(net, X[:n_ref], y[:n_ref], args.tau, method="lbfgs-b", **common)
        t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        eng = stadv_attack(net, X, y, args.tau, method="batched", **common)
        t_eng, c_eng = time.perf_counter() - t0, time.process_time() - c0
    numpy_row = None
    if args.numpy_row and args.backend != "numpy":
        k = min(args.numpy_row, n)
        with stadv_ref.use_backend("numpy"):
            t0, c0 = time.perf_counter(), time.process_time()
            eng_np = stadv_attack(net, X[:k], y[:k], args.tau, method="batched", **common)
            numpy_row = _summary(time.perf_counter() - t0, k, eng_np.objective, eng_np.success, ref, n_ref,
                                 method="stadv_attack(method='batched') on the numpy backend, float32",
                                 cpu_seconds=time.process_time() - c0,
                                 threads={k: eng_np.options[k] for k in ("workers", "blas_threads", "numba_threads")})
    adam, skipped = (None, "--no-torch: (c) skipped") if args.no_torch else run_torch_adam(
        net, X, y, args.tau, args.max_iter, args.adam_lr, cores)
    load_after = os.getloadavg()
    with stadv_ref.use_backend(args.backend):
        profile = profile_engine(net, X[:args.n_profile], y[:args.n_profile], args.tau, args.max_iter)

    methods = {
        "reference": _summary(t_ref, n_ref, ref.objective, ref.success, n_ref=n_ref,
                              method="stadv_attack(method='lbfgs-b'): scipy L-BFGS-B per image, float64",
                              cpu_seconds=c_ref,
                              mean_iterations=float(ref.n_iter.mean()), mean_evaluations=float(ref.n_eval.mean())),
        "engine": _summary(t_eng, n, eng.objective, eng.success, ref, n_ref,
                           method="stadv_attack(method='batched'): batched per-image L-BFGS, float32",
                           cpu_seconds=c_eng, float64_reruns=eng.options.get("float64_reruns"),
                           mean_iterations=float(eng.n_iter.mean()), mean_evaluations=float(eng.n_eval.mean()),
                           threads={k: eng.options[k] for k in ("workers", "blas_threads", "numba_threads")}),
    }
    if numpy_row is not None:
        methods["engine_numpy_backend"] = numpy_row
    if adam is not None:
        flow, t_adam, info = adam
        final = StadvObjective(net, X, y, args.tau)(flow, need_grad=False)
        methods["torch_adam"] = _summary(t_adam, n, final["objective"], final["success"], ref, n_ref,
                                         method="batched torch Adam on the same objective, float32", **info)
    else:
        methods["torch_adam"] = {"skipped": skipped}
        print(skipped, file=sys.stderr)

    r, e, a = methods["reference"], methods["engine"], methods["torch_adam"]
    targets = {
        "engine_vs_reference_images_per_second": e["images_per_second"] / r["images_per_second"],
        "engine_at_least_10x_reference": e["images_per_second"] >= 10 * r["images_per_second"],
        "engine_vs_torch_adam_images_per_second": (e["images_per_second"] / a["images_per_second"]
                                                   if "images_per_second" in a else None),
        "engine_at_least_torch_adam": (e["images_per_second"] >= a["images_per_second"]
                                       if "images_per_second" in a else None),
        "engine_success_at_least_reference": e["shared_subset"]["success_rate"] >= r["success_rate"],
        "engine_median_objective_at_most_reference":
            e["shared_subset"]["median_objective"] <= r["median_objective"],
    }
    targets["all_met"] = all(v is not False for k, v in targets.items() if isinstance(v, bool) or v is None)
    doc.update({
        "network": {"variant": args.variant, "hidden": args.hidden, "quick": args.quick, "model": path.name,
                    "n_train": int(meta.get("n_train", 0)), "test_accuracy": float(meta.get("test_accuracy", np.nan)),
                    "trained_in_this_run": trained_now, "training": training},
        "settings": {"tau": args.tau, "max_iter": args.max_iter, "memory": 10, "kappa": 0.0, "targeted": False,
                     "options": "neighborhood='4', flow_padding='zeros', warp_padding='zeros', flow_eps=1e-8",
                     "n": n, "n_reference": n_ref, "images": f"first {n} MNIST test images",
                     "shared_subset": f"first {n_ref} images (the reference runs on these only)",
                     "backend": args.backend, "agreement_tolerance": AGREE_TOL},
        "machine": {"cpus": os.cpu_count(), "cores_available": cores, "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg_after": load_after,
                    "threads_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                                   "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")},
                    "threadpools": [{k: d.get(k) for k in ("user_api", "internal_api", "num_threads", "version")}
                                    for d in threadpoolctl.threadpool_info()],
                    "versions": {"python": platform.python_version(), "numpy": np.__version__,
                                 "scipy": scipy.__version__, "numba": _version("numba"),
                                 "threadpoolctl": threadpoolctl.__version__}},
        "methods": methods,
        "targets": targets,
        "engine_profile": profile,
    })
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print(json.dumps({"methods": methods, "targets": targets, "load": [load_before, load_after]}, indent=1,
                     default=float))
    return doc


def _version(name):
    try:
        return __import__(name).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    main()
