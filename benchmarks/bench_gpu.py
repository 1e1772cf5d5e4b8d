"""GPU benchmark of the CuPy backend (issue 7): warp, batched stAdv, SDP per class pair.

Needs a CUDA GPU, CuPy and (for the warp peer) PyTorch with CUDA. Run it with
``bash benchmarks/run_gpu.sh`` on a GPU machine, or directly::

    python benchmarks/bench_gpu.py [--quick] [--sections warp,stadv,sdp] [--out DIR]

Sections (peers measured in the same run, reported as ratios):

``warp``
    Eq. (1) forward and forward+backward (gradients w.r.t. ``x`` and the flow)
    on 100,000 28x28 single-channel images and on 256 3x224x224 images,
    float32, zero padding, flows ``N(0, 1)`` pixels. Ours: ``warp`` then the
    fused ``warp_vjp_both`` (and, for information, the two separate VJP
    kernels). Peer: ``torch.nn.functional.grid_sample(mode="bilinear",
    padding_mode="zeros", align_corners=True)`` with autograd
    (``torch.autograd.grad`` w.r.t. the input and the grid) on the same GPU;
    the normalised grid is built outside the timed region, which favours torch.
    Both results are cross-checked (the flow gradient is torch's grid gradient
    times ``2 / (W - 1)``). Achieved bandwidth counts the bytes each pass must
    move at least (forward: read ``x``, flow, write the output; fused backward:
    read ``x``, flow, cotangent, write both gradients) and is compared with the
    device's peak (memory clock x bus width x 2, from the driver) and with a
    device-to-device copy measured in the same run (read + write).
``stadv``
    Batched stAdv attack (:func:`stadv_ref.stadv_attack`, ``method="batched"``)
    on synthetic 28x28 images against a random 10-class one-hidden-layer
    network, under ``use_backend("cupy")`` and the NumPy (and Numba, when
    installed) backends: images per second.
``sdp``
    :func:`stadv_ref.solve_sdp` (``method="mixing"``) for the class pairs
    ``(i, 0)`` of a random 10-class network, ``A = diag(v_i - v_0) W
    diag(lambda)`` with ``lambda`` the AABB radii of Prop. 2: seconds per pair
    and the certified values, cupy vs numpy (and numba).

Floors (bytes / bandwidth, float32; H100 SXM peak 3.35 TB/s, about 3.0 TB/s
measured for a copy): ``mnist_100k`` (78.4 M pixels) forward 1.25 GB ->
0.37 ms, fused backward 2.20 GB -> 0.66 ms, forward+backward about 1.0 ms;
``imagenet_256`` (12.8 M pixels, 3 channels) forward 0.41 GB -> 0.12 ms,
fused backward 0.67 GB -> 0.20 ms. The issue's targets: forward+backward at
least as fast as torch's ``grid_sample`` and at least 50% of peak bandwidth on
the large case.

GPU times are medians of CUDA-event-timed repeats after warm-up. Writes
``benchmarks/results/gpu_<device>.json`` (and a copy to ``--out`` / ``$OUT``)
and prints a markdown summary last.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------
def gpu_median(fn, repeats=10, warmup=2):
    """Median GPU time (s) of ``fn()`` by CUDA events on the current stream, and all times."""
    import cupy

    for _ in range(warmup):
        fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
    return statistics.median(times), times


def torch_median(fn, repeats=10, warmup=2):
    """Median GPU time (s) of a torch callable by ``torch.cuda.Event``."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times), times


# ---------------------------------------------------------------------------
# Device
# ---------------------------------------------------------------------------
def peak_bandwidth(info):
    """Theoretical peak memory bandwidth (bytes/s) from the driver; NVML as a fallback."""
    if info.get("peak_bandwidth_bytes_per_s"):
        return info["peak_bandwidth_bytes_per_s"], "cudaDeviceGetAttribute (memory clock x bus width x 2)"
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(info["id"])
        clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM)
        bus = pynvml.nvmlDeviceGetMemoryBusWidth(h)
        return 2.0 * clock_mhz * 1e6 * bus / 8, "NVML (max memory clock x bus width x 2)"
    except Exception as exc:  # pragma: no cover - depends on the machine
        return None, f"unavailable ({exc})"


def copy_bandwidth(nbytes=2 * 2**30, repeats=10):
    """Device-to-device copy of a large float32 array, bytes/s counting read + write."""
    import cupy

    a = cupy.random.random(nbytes // 4, dtype=cupy.float32)
    b = cupy.empty_like(a)
    t, _ = gpu_median(lambda: b.__setitem__(Ellipsis, a), repeats)
    a = b = None  # free the device buffers
    cupy.get_default_memory_pool().free_all_blocks()
    return 2 * nbytes / t


# ---------------------------------------------------------------------------
# Warp
# ---------------------------------------------------------------------------
WARP_CASES = {"mnist_100k": (100_000, 1, 28, 28), "imagenet_256": (256, 3, 224, 224)}


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def bench_warp(be, case, shape, repeats, peak, copy_bw, use_torch=True):
    import cupy

    N, C, H, W = shape
    rng = cupy.random.default_rng(0)
    x = rng.random((N, C, H, W), dtype=cupy.float32)
    flow = rng.standard_normal((N, 2, H, W), dtype=cupy.float32)
    g = rng.standard_normal((N, C, H, W), dtype=cupy.float32)
    nhw, item = N * H * W, 4
    bytes_fwd = (2 * C + 2) * nhw * item
    bytes_bwd = (3 * C + 4) * nhw * item
    res = {"shape": [N, C, H, W], "dtype": "float32", "padding": "zeros",
           "bytes_fwd": bytes_fwd, "bytes_bwd_fused": bytes_bwd}

    t_fwd, _ = gpu_median(lambda: be.warp(x, flow, "zeros"), repeats)
    t_bwd, _ = gpu_median(lambda: be.warp_vjp_both(x, flow, g, "zeros"), repeats)
    t_both, _ = gpu_median(lambda: (be.warp(x, flow, "zeros"), be.warp_vjp_both(x, flow, g, "zeros")), repeats)
    t_sep, _ = gpu_median(
        lambda: (be.warp(x, flow, "zeros"), be.warp_vjp_x(flow, g, "zeros"), be.warp_vjp_flow(x, flow, g, "zeros")),
        repeats,
    )
    ours = {
        "fwd_s": t_fwd,
        "bwd_fused_s": t_bwd,
        "fwd_bwd_fused_s": t_both,
        "fwd_bwd_separate_s": t_sep,
        "fwd_bandwidth_Bps": bytes_fwd / t_fwd,
        "bwd_bandwidth_Bps": bytes_bwd / t_bwd,
        "fwd_bwd_bandwidth_Bps": (bytes_fwd + bytes_bwd) / t_both,
    }
    if peak:
        ours["fwd_bwd_fraction_of_peak"] = ours["fwd_bwd_bandwidth_Bps"] / peak
        ours["fwd_fraction_of_peak"] = ours["fwd_bandwidth_Bps"] / peak
    ours["fwd_bwd_fraction_of_copy"] = ours["fwd_bwd_bandwidth_Bps"] / copy_bw
    res["cupy"] = ours

    # float64 reference check on a slice (first 64 images) against the NumPy kernels
    from stadv_ref import transform

    k = min(N, 64)
    xs, fs, gs = (cupy.asnumpy(a[:k]).astype(np.float64) for a in (x, flow, g))
    res["check_vs_numpy_float64"] = {
        "warp_rel_err": _rel(cupy.asnumpy(be.warp(x[:k], flow[:k], "zeros")), transform.warp_reference(xs, fs, "zeros")),
        "vjp_x_rel_err": _rel(cupy.asnumpy(be.warp_vjp_both(x[:k], flow[:k], g[:k], "zeros")[0]),
                              transform.warp_vjp_x_reference(fs, gs, "zeros")),
        "vjp_flow_rel_err": _rel(cupy.asnumpy(be.warp_vjp_both(x[:k], flow[:k], g[:k], "zeros")[1]),
                                 transform.warp_vjp_flow_reference(xs, fs, gs, "zeros")),
    }

    if use_torch:
        try:
            res["torch"] = _bench_torch(x, flow, g, repeats, be)
            res["speedup_vs_torch_fwd"] = res["torch"]["fwd_s"] / t_fwd
            res["speedup_vs_torch_fwd_bwd"] = res["torch"]["fwd_bwd_s"] / t_both
        except Exception as exc:
            res["torch"] = {"error": f"{type(exc).__name__}: {exc}"}
    x = flow = g = None  # free the device buffers
    cupy.get_default_memory_pool().free_all_blocks()
    return res


def _bench_torch(x, flow, g, repeats, be):
    import cupy
    import torch
    import torch.nn.functional as F

    N, C, H, W = x.shape
    xt = torch.from_dlpack(x).detach().clone().requires_grad_(True)
    ft = torch.from_dlpack(flow)
    gt = torch.from_dlpack(g).detach().clone()
    cols = torch.arange(W, device=ft.device, dtype=ft.dtype)
    rows = torch.arange(H, device=ft.device, dtype=ft.dtype)
    sx = 2.0 / (W - 1) if W > 1 else 0.0
    sy = 2.0 / (H - 1) if H > 1 else 0.0
    grid = torch.stack([(cols[None, None, :] + ft[:, 0]) * sx - 1, (rows[None, :, None] + ft[:, 1]) * sy - 1], dim=-1)
    grid = grid.contiguous().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            return F.grid_sample(xt, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def fwd_bwd():
        out = F.grid_sample(xt, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return torch.autograd.grad(out, (xt, grid), gt)

    t_fwd, _ = torch_median(fwd, repeats)
    t_fb, _ = torch_median(fwd_bwd, repeats)
    # independent check of our kernels against torch
    out_t = fwd()
    gx_t, gg_t = fwd_bwd()
    out_c = be.warp(x, flow, "zeros")
    gx_c, gflow_c = be.warp_vjp_both(x, flow, g, "zeros")
    gflow_t = torch.stack([gg_t[..., 0] * sx, gg_t[..., 1] * sy], dim=1)
    check = {
        "warp_rel_diff": _rel(cupy.asnumpy(out_c), out_t.cpu().numpy()),
        "vjp_x_rel_diff": _rel(cupy.asnumpy(gx_c), gx_t.cpu().numpy()),
        "vjp_flow_rel_diff": _rel(cupy.asnumpy(gflow_c), gflow_t.cpu().numpy()),
    }
    xt = gt = grid = out_t = gx_t = gg_t = None  # free the device buffers
    torch.cuda.empty_cache()
    return {"fwd_s": t_fwd, "fwd_bwd_s": t_fb, "torch_version": torch.__version__, "check": check}


# ---------------------------------------------------------------------------
# stAdv throughput
# ---------------------------------------------------------------------------
def _random_net(rng, m, d, K, image_shape):
    import stadv_ref

    W = rng.standard_normal((m, d)) / math.sqrt(d)
    V = rng.standard_normal((K, m)) / math.sqrt(m)
    return stadv_ref.OneHiddenLayerNet(W, V, image_shape=image_shape)


def _smooth_images(rng, N, H, W):
    """Synthetic images in [0, 1]: blurred noise (so the warp has gradients)."""
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(rng.random((N, H, W)), sigma=(0, 1.5, 1.5))
    x -= x.min(axis=(1, 2), keepdims=True)
    x /= x.max(axis=(1, 2), keepdims=True)
    return x


def bench_stadv(backends, N, max_iter, hidden):
    import stadv_ref

    try:
        attack = stadv_ref.stadv_attack  # lazy import of stadv_ref.attacks
    except Exception as exc:
        return {"skipped": f"stadv_ref.stadv_attack is not available ({type(exc).__name__}: {exc})"}
    rng = np.random.default_rng(1)
    net = _random_net(rng, hidden, 784, 10, (28, 28))
    x = _smooth_images(rng, N, 28, 28)
    y = np.asarray(stadv_ref.get_backend("numpy").to_numpy(net.predict(x, backend="numpy")))
    out = {"N": N, "max_iter": max_iter, "hidden": hidden, "tau": 0.05}
    for name in backends:
        try:
            with stadv_ref.use_backend(name):
                # warm-up: JIT / NVRTC compilation and constant caches stay out of the timing
                attack(net, x[:4], y[:4], tau=0.05, max_iter=2, batch_size=4, progress=False)
                t0 = time.perf_counter()
                res = attack(net, x, y, tau=0.05, max_iter=max_iter, batch_size=N, progress=False)
                t = time.perf_counter() - t0
            out[name] = {
                "seconds": t,
                "images_per_s": N / t,
                "success_rate": float(np.mean(res.success)),
                "mean_n_eval": float(np.mean(res.n_eval)),
                "mean_objective": float(np.mean(res.objective)),
            }
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    if "seconds" in out.get("cupy", {}):
        for name in backends:
            if name != "cupy" and "seconds" in out.get(name, {}):
                out[f"speedup_cupy_vs_{name}"] = out[name]["seconds"] / out["cupy"]["seconds"]
    return out


# ---------------------------------------------------------------------------
# SDP per class pair
# ---------------------------------------------------------------------------
def bench_sdp(backends, hidden, n_pairs, max_iter, time_limit):
    import stadv_ref
    from stadv_ref.operators import aabb_radii

    rng = np.random.default_rng(2)
    net = _random_net(rng, hidden, 784, 10, (28, 28))
    lam = aabb_radii(28, 28, 1.0).ravel()
    pairs = [(i, 0) for i in range(1, 1 + n_pairs)]
    out = {"hidden": hidden, "d": 784, "pairs": pairs, "max_iter": max_iter, "time_limit_s": time_limit,
           "gap_tol": 1e-5}
    for name in backends:
        try:
            times, values, iters, status = [], [], [], []
            for i, yy in pairs:
                A = (net.V[i] - net.V[yy])[:, None] * net.W * lam[None, :]
                if not times:  # warm-up (kernel compilation, constant caches)
                    stadv_ref.solve_sdp(A, method="mixing", max_iter=20, backend=name)
                t0 = time.perf_counter()
                r = stadv_ref.solve_sdp(A, method="mixing", max_iter=max_iter, gap_tol=1e-5,
                                        time_limit=time_limit, backend=name)
                times.append(time.perf_counter() - t0)
                values.append(float(r.value))
                iters.append(int(r.n_iter))
                status.append(str(r.status))
            out[name] = {
                "seconds_per_pair_median": statistics.median(times),
                "seconds_per_pair": times,
                "seconds_per_iteration_median": statistics.median(t / max(i, 1) for t, i in zip(times, iters)),
                "certified_values": values,
                "n_iter": iters,
                "status": status,
            }
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
    if "seconds_per_pair_median" in out.get("cupy", {}):
        for name in backends:
            if name != "cupy" and "seconds_per_pair_median" in out.get(name, {}):
                out[f"speedup_cupy_vs_{name}"] = (
                    out[name]["seconds_per_pair_median"] / out["cupy"]["seconds_per_pair_median"]
                )
                a, b = np.array(out["cupy"]["certified_values"]), np.array(out[name]["certified_values"])
                out[f"max_rel_value_diff_vs_{name}"] = float(np.max(np.abs(a - b) / np.abs(b)))
                out[f"per_iteration_speedup_cupy_vs_{name}"] = (
                    out[name]["seconds_per_iteration_median"] / out["cupy"]["seconds_per_iteration_median"]
                )
    return out


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------
def _loadable(name):
    import stadv_ref

    try:
        stadv_ref.get_backend(name)
        return True
    except Exception:
        return False


def _gb(v):
    return f"{v / 1e9:.0f} GB/s" if v else "n/a"


def _ratios(section):
    r = [f"{k} = {v:.2f}" for k, v in section.items() if k.startswith(("speedup", "per_iteration_speedup"))]
    return ("; " + ", ".join(r)) if r else ""


def summary(results):
    lines = [f"## GPU benchmark: {results['device']['name']}", ""]
    dev = results["device"]
    lines.append(f"peak bandwidth {_gb(dev.get('peak_bandwidth_Bps'))} ({dev.get('peak_source')}), "
                 f"measured D2D copy {_gb(dev.get('copy_bandwidth_Bps'))}")
    lines.append("")
    if "warp" in results:
        lines.append("| case | ours fwd | torch fwd | ours fwd+bwd | torch fwd+bwd | speedup fwd+bwd | BW fwd+bwd (% peak) |")
        lines.append("|---|---|---|---|---|---|---|")
        for case, r in results["warp"].items():
            if "cupy" not in r:
                lines.append(f"| {case} | error: {r.get('error')} | | | | | |")
                continue
            c, t = r["cupy"], r.get("torch", {})
            frac = c.get("fwd_bwd_fraction_of_peak")
            lines.append(
                f"| {case} | {c['fwd_s'] * 1e3:.2f} ms | {t.get('fwd_s', float('nan')) * 1e3:.2f} ms | "
                f"{c['fwd_bwd_fused_s'] * 1e3:.2f} ms | {t.get('fwd_bwd_s', float('nan')) * 1e3:.2f} ms | "
                f"{r.get('speedup_vs_torch_fwd_bwd', float('nan')):.2f}x | "
                f"{_gb(c['fwd_bwd_bandwidth_Bps'])} ({(frac or float('nan')) * 100:.0f}%) |"
            )
        lines.append("")
    if "stadv" in results:
        s = results["stadv"]
        lines.append("stAdv: " + ", ".join(
            f"{k}: {v['images_per_s']:.1f} img/s" if "images_per_s" in v else f"{k}: {v.get('error', v)}"
            for k, v in s.items() if k in ("cupy", "numpy", "numba")) + _ratios(s))
    if "sdp" in results:
        s = results["sdp"]
        lines.append("SDP per pair: " + ", ".join(
            f"{k}: {v['seconds_per_pair_median']:.3f} s ({statistics.median(v['n_iter']):.0f} it)"
            if "seconds_per_pair_median" in v else f"{k}: {v.get('error', v)}"
            for k, v in s.items() if k in ("cupy", "numpy", "numba")) + _ratios(s))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--sections", default="warp,stadv,sdp")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", default=os.environ.get("OUT"), help="also copy the JSON here (default $OUT)")
    p.add_argument("--stadv-n", type=int, default=None)
    p.add_argument("--stadv-iter", type=int, default=None)
    p.add_argument("--hidden", type=int, default=100, help="hidden units of the random networks")
    p.add_argument("--sdp-pairs", type=int, default=None)
    p.add_argument("--sdp-time-limit", type=float, default=20.0, help="seconds per pair (solve_sdp time_limit)")
    args = p.parse_args(argv)
    sections = set(args.sections.split(","))

    import stadv_ref

    be = stadv_ref.get_backend("cupy")
    info = be.device_info()
    peak, peak_src = peak_bandwidth(info)
    copy_bw = copy_bandwidth(2**28 if args.quick else 2 * 2**30)
    results = {
        "device": dict(info, device_name=be.device_name, peak_bandwidth_Bps=peak, peak_source=peak_src,
                       copy_bandwidth_Bps=copy_bw),
        "host": {"python": sys.version.split()[0], "platform": platform.platform(), "numpy": np.__version__,
                 "cpus": os.cpu_count()},
        "quick": args.quick,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    backends = ["cupy", "numpy"] + (["numba"] if _loadable("numba") else [])

    if "warp" in sections:
        cases = {"mnist_10k": (10_000, 1, 28, 28), "imagenet_16": (16, 3, 224, 224)} if args.quick else WARP_CASES
        results["warp"] = {}
        for case, shape in cases.items():
            print(f"[bench_gpu] warp {case} {shape}", flush=True)
            try:
                results["warp"][case] = bench_warp(be, case, shape, args.repeats, peak, copy_bw, not args.no_torch)
            except Exception as exc:
                results["warp"][case] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    if "stadv" in sections:
        N = args.stadv_n or (100 if args.quick else 1000)
        it = args.stadv_iter or (10 if args.quick else 50)
        print(f"[bench_gpu] stadv N={N} max_iter={it} backends={backends}", flush=True)
        results["stadv"] = bench_stadv(backends, N, it, args.hidden)
    if "sdp" in sections:
        n_pairs = args.sdp_pairs or (2 if args.quick else 3)
        print(f"[bench_gpu] sdp pairs={n_pairs} backends={backends}", flush=True)
        results["sdp"] = bench_sdp(backends, args.hidden, n_pairs, 2000 if args.quick else 20000,
                                   5.0 if args.quick else args.sdp_time_limit)

    slug = re.sub(r"[^a-z0-9]+", "_", info["name"].lower()).strip("_")
    name = f"gpu_{slug}{'_quick' if args.quick else ''}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, default=float)
    (RESULTS / name).write_text(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / name).write_text(text)
    print(summary(results))
    print(f"[bench_gpu] wrote {RESULTS / name}")
    return results


if __name__ == "__main__":
    main()
