"""Benchmark of the warp of Eq. (1), forward and forward+backward, on the CPU.

Side by side in one run (the peers are measured in the same process, results
are reported as ratios ``peer time / numba time``):

* ``numba``: :mod:`stadv_numba` -- ``warp`` and the fused ``warp_vjp_both``
  (gradients w.r.t. ``x`` and the flow);
* ``numpy``: the NumPy reference kernels of :mod:`stadv_ref.transform`;
* ``scipy``: ``scipy.ndimage.map_coordinates(order=1, mode="grid-constant")``
  per image and channel (forward only; it has no gradient);
* ``torch``: ``torch.nn.functional.grid_sample(align_corners=True)`` on the CPU,
  forward+backward with autograd (gradients w.r.t. the input and the grid),
  when torch is installed (optional, never a dependency). The normalised grid
  is built outside the timed region, which favours torch. Torch uses as many
  threads as Numba.

Cases: 1,000 28x28 single-channel images and 16 3x224x224 images, zero
padding, flows ``N(0, 1)`` pixels (stAdv-sized). Each timing is the median of
several repeats (other processes share the machine; the load average is
recorded). Effective bandwidth counts the bytes each pass must move at least
(forward: read ``x``, flow, write the output; backward: read ``x``, flow, the
output cotangent, write both gradients) and is compared with a NumPy copy of a
256 MiB array (read + write) timed right before and right after each case
(medians compared with medians; the best copy run is recorded too).

Run ``python benchmarks/bench_warp.py`` (``--quick`` for a smoke run); writes
``benchmarks/results/warp_cpu.json`` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.ndimage as ndi

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "warp_cpu.json"
CASES = {"mnist": (1000, 1, 28, 28), "imagenet": (16, 3, 224, 224)}
PADDING = "zeros"


def _median_time(fn, repeats):
    """Median wall time of ``fn()`` over ``repeats`` runs (after one warm-up call), and all times."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


COPY_BYTES = 256 * 2**20


def _copy_fn(nbytes=COPY_BYTES):
    """A ``np.copyto`` of a large float32 array (the machine's copy bandwidth)."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    b = np.empty_like(a)
    return lambda: np.copyto(b, a)


def copy_bandwidth(copy_fn, repeats):
    """Samples of the GB/s of ``copy_fn`` (from :func:`_copy_fn`), counting read + write."""
    _, times = _median_time(copy_fn, repeats)
    return [2 * COPY_BYTES / t / 1e9 for t in times]


def _scipy_warp(x, flow):
    N, C, H, W = x.shape
    rows, cols = np.meshgrid(np.arange(H, dtype=x.dtype), np.arange(W, dtype=x.dtype), indexing="ij")
    out = np.empty_like(x)
    for n in range(N):
        coords = np.stack([rows + flow[n, 1], cols + flow[n, 0]])
        for c in range(C):
            out[n, c] = ndi.map_coordinates(x[n, c], coords, order=1, mode="grid-constant")
    return out


def _torch_fns(x, flow, g, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    N, C, H, W = x.shape
    xt = torch.from_numpy(x)
    gt = torch.from_numpy(g)
    rows = np.arange(H, dtype=x.dtype)[:, None] + flow[:, 1]
    cols = np.arange(W, dtype=x.dtype)[None, :] + flow[:, 0]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels
    grid = np.stack([2 * cols / (W - 1) - 1, 2 * rows / (H - 1) - 1], axis=-1)
    gridt = torch.from_numpy(np.ascontiguousarray(grid))

    def fwd():
        with torch.no_grad():
            return F.grid_sample(xt, gridt, mode="bilinear", padding_mode=PADDING, align_corners=True)

    xr = xt.clone().requires_grad_(True)
    gr = gridt.clone().requires_grad_(True)

    def fwd_bwd():
        xr.grad = None
        gr.grad = None
        out = F.grid_sample(xr, gr, mode="bilinear", padding_mode=PADDING, align_corners=True)
        out.backward(gt)
        return out, xr.grad, gr.grad

    def grads_in_pixels():
        out, gx, ggrid = fwd_bwd()
        gflow = np.stack(
            [ggrid[..., 0].numpy() * 2 / (W - 1), ggrid[..., 1].numpy() * 2 / (H - 1)], axis=1
        )
        return out.detach().numpy(), gx.numpy(), gflow

    return fwd, fwd_bwd, grads_in_pixels, torch.__version__


def make_flow(rng, N, H, W, kind, dtype):
    """Benchmark flows in pixels: ``"normal"`` i.i.d. N(0, 1) per pixel, or ``"smooth"``
    (white noise blurred by a Gaussian of 2 pixels, rescaled to standard deviation 1,
    the kind of field stAdv produces)."""
    flow = rng.standard_normal((N, 2, H, W))
    if kind == "smooth":
        flow = ndi.gaussian_filter(flow, (0, 0, 2, 2), mode="wrap")
        flow /= flow.std()
    return flow.astype(dtype)


def bench_case(name, shape, dtype, repeats, threads, rng, flow_kind="normal", with_torch=True, log=print,
               copy_fn=None):
    """Time every method on one case; return a dict of medians, ratios and bandwidths.

    ``copy_fn`` (a large ``np.copyto``) is timed right before and right after the
    case's rounds, so the fraction of copy bandwidth compares medians taken under
    the same machine conditions (this VM's bandwidth drifts by up to 2x within a
    minute). It is not interleaved with the kernels: it would flush the cache
    and let the threads fall asleep before whichever method comes next.
    """
    import stadv_numba
    from stadv_ref import transform as T

    N, C, H, W = shape
    x = rng.uniform(0, 1, shape).astype(dtype)
    flow = make_flow(rng, N, H, W, flow_kind, dtype)
    g = rng.standard_normal(shape).astype(dtype)
    nb = stadv_numba.backend

    def numba_fwd():
        return nb.warp(x, flow, PADDING)

    def numba_fwd_bwd():
        out = nb.warp(x, flow, PADDING)
        gx, gflow = nb.warp_vjp_both(x, flow, g, PADDING)
        return out, gx, gflow

    def numpy_fwd():
        return T.warp_reference(x, flow, PADDING)

    def numpy_fwd_bwd():
        out = T.warp_reference(x, flow, PADDING)
        return out, T.warp_vjp_x_reference(flow, g, PADDING), T.warp_vjp_flow_reference(x, flow, g, PADDING)

    # correctness of what is timed (against the reference, and torch against us)
    out_nb, gx_nb, gf_nb = numba_fwd_bwd()
    out_np, gx_np, gf_np = numpy_fwd_bwd()
    check = {
        "numba_vs_numpy_max_abs": float(
            max(np.abs(out_nb - out_np).max(), np.abs(gx_nb - gx_np).max(), np.abs(gf_nb - gf_np).max())
        ),
        "scipy_vs_numpy_max_abs": float(np.abs(_scipy_warp(x, flow) - out_np).max()),
    }

    methods = {
        ("numba", "forward"): numba_fwd,
        ("numba", "forward+backward"): numba_fwd_bwd,
        ("numpy", "forward"): numpy_fwd,
        ("numpy", "forward+backward"): numpy_fwd_bwd,
        ("scipy", "forward"): lambda: _scipy_warp(x, flow),
    }
    torch_version = None
    if with_torch:
        try:
            t_fwd, t_fwd_bwd, t_grads, torch_version = _torch_fns(x, flow, g, threads)
        except ImportError:
            t_fwd = None
        if t_fwd is not None:
            methods[("torch", "forward")] = t_fwd
            methods[("torch", "forward+backward")] = t_fwd_bwd
            o, gx, gf = t_grads()
            # torch recomputes pixel positions from the normalised grid (float32 rounding of
            # ~1e-5 px at 224 px); the flow gradient jumps where a position crosses an integer,
            # so compare it by the share of entries that differ, not by the maximum.
            dflow = np.abs(gf - gf_nb)
            check["torch_vs_numba_max_abs_out"] = float(np.abs(o - out_nb).max())
            check["torch_vs_numba_max_abs_grad_x"] = float(np.abs(gx - gx_nb).max())
            check["torch_vs_numba_grad_flow_frac_above_1e-3"] = float((dflow > 1e-3).mean())
            check["torch_vs_numba_grad_flow_median_abs"] = float(np.median(dflow))

    times = {}
    # The fast methods (numba, torch) are timed in interleaved rounds so that a
    # change of machine load hits them alike; the slow references run fewer times.
    fast = [key for key in methods if key[0] in ("numba", "torch")]
    slow = [key for key in methods if key not in fast]
    for key in fast:
        methods[key]()  # warm-up (compilation from cache, allocator)
    copy_bw = copy_bandwidth(copy_fn, max(5, repeats // 3)) if copy_fn is not None else None
    samples = {key: [] for key in fast}
    cpu = {key: [] for key in fast}  # process CPU time (all threads): robust to a busy machine
    for _ in range(repeats):
        for key in fast:
            c0 = time.process_time()
            t0 = time.perf_counter()
            methods[key]()
            samples[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
    for key in slow:
        samples[key] = _median_time(methods[key], max(3, repeats // 5))[1]
    if copy_fn is not None:
        copy_bw += copy_bandwidth(copy_fn, max(5, repeats // 3))
    for (lib, op), ts in samples.items():
        med = statistics.median(ts)
        times.setdefault(lib, {})[op] = {"median_s": med, "min_s": min(ts), "runs": len(ts)}
        if (lib, op) in cpu:
            times[lib][op]["cpu_median_s"] = statistics.median(cpu[(lib, op)])
        log(f"  {name:9s} {lib:6s} {op:17s} {med * 1e3:9.2f} ms (min {min(ts) * 1e3:.2f}, {len(ts)} runs)")

    item = np.dtype(dtype).itemsize
    img = N * C * H * W * item
    flw = N * 2 * H * W * item
    bytes_moved = {"forward": 2 * img + flw, "forward+backward": (2 * img + flw) + (4 * img + 2 * flw)}
    result = {"shape": list(shape), "flow": flow_kind, "dtype": np.dtype(dtype).name, "times": times,
              "check": check}
    ratios = {}
    for op in ("forward", "forward+backward"):
        base = times["numba"][op]["median_s"]
        ratios[op] = {lib: times[lib][op]["median_s"] / base for lib in times if lib != "numba" and op in times[lib]}
    result["speedup_of_numba"] = ratios
    result["cpu_time_ratio_torch_over_numba"] = {
        op: times["torch"][op]["cpu_median_s"] / times["numba"][op]["cpu_median_s"]
        for op in ("forward", "forward+backward")
        if "torch" in times
    }
    result["effective_GBps"] = {op: bytes_moved[op] / times["numba"][op]["median_s"] / 1e9 for op in bytes_moved}
    if copy_bw is not None:
        bw = {"median": statistics.median(copy_bw), "best": max(copy_bw)}
        result["copy_bandwidth_GBps"] = bw
        result["fraction_of_copy_bw"] = {op: result["effective_GBps"][op] / bw["median"] for op in bytes_moved}
        log(f"  {name:9s} copy {bw['median']:.1f} GB/s (best {bw['best']:.1f}) before and after")
    result["bytes_moved"] = bytes_moved
    result["torch_version"] = torch_version
    return result


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def markdown_table(res):
    """The README table: times and ratios ``peer / numba`` (higher = numba faster)."""
    lines = [
        f"dtype {res['dtype']}, {res['threads']} threads, {res['cpu']}, "
        f"load average {res['loadavg_start'][0]:.2f} (start) / {res['loadavg_end'][0]:.2f} (end), "
        f"OMP_WAIT_POLICY={res['env']['OMP_WAIT_POLICY'] or 'default'}; "
        f"NumPy copy bandwidth (256 MiB np.copyto, timed right before and after each case): "
        + ", ".join(f"{c['copy_bandwidth_GBps']['median']:.1f}" for c in res["cases"].values())
        + " GB/s (medians per case).",
        "",
        "| case | pass | numba | vs NumPy ref | vs scipy map_coordinates | vs torch grid_sample "
        "| (CPU time) | numba GB/s (% of copy, of best copy) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, case in res["cases"].items():
        N, C, H, W = case["shape"]
        label = f"{N}x{C}x{H}x{W}, {case['flow']} flow"
        for op in ("forward", "forward+backward"):
            t = case["times"]["numba"][op]["median_s"]
            r = case["speedup_of_numba"][op]
            fmt = lambda lib: f"{r[lib]:.1f}x" if lib in r else "-"  # noqa: E731
            gbps = case["effective_GBps"][op]
            bw = case["copy_bandwidth_GBps"]
            cr = case["cpu_time_ratio_torch_over_numba"].get(op)
            lines.append(
                f"| {label} | {op} | {t * 1e3:.2f} ms | {fmt('numpy')} | {fmt('scipy')} | {fmt('torch')} "
                f"| {'-' if cr is None else f'{cr:.1f}x'} | {gbps:.1f} ({100 * gbps / bw['median']:.0f}%, {100 * gbps / bw['best']:.0f}%) |"
            )
    lines.append("")
    lines.append(
        "Ratios are peer time / numba time in the same run (medians of wall-clock repeats; numba and "
        "torch interleaved); (CPU time): the same for process CPU time of torch vs numba; "
        "forward+backward = warp, then the gradients w.r.t. the images and the flow."
    )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    ap.add_argument("--quick", action="store_true", help="few repeats, smaller cases (smoke run)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--no-torch", action="store_true", help="skip torch even if installed")
    ap.add_argument("--threads", type=int, default=None, help="numba and torch threads (default: numba's)")
    ap.add_argument("--flows", nargs="+", choices=["normal", "smooth"], default=["normal", "smooth"])
    args = ap.parse_args(argv)

    import numba

    if args.threads is not None:
        numba.set_num_threads(args.threads)
    threads = numba.get_num_threads()
    repeats = 3 if args.quick else args.repeats
    cases = {"mnist": (100, 1, 28, 28), "imagenet": (2, 3, 224, 224)} if args.quick else CASES
    rng = np.random.default_rng(0)
    res = {
        "benchmark": "warp (Eq. 1) forward and forward+backward, CPU",
        "dtype": args.dtype,
        "padding": PADDING,
        "flows": args.flows,
        "quick": args.quick,
        "threads": threads,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "versions": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "numba": numba.__version__,
        },
    }
    res["env"] = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS")}
    copy_fn = _copy_fn()
    print(f"copy bandwidth {statistics.median(copy_bandwidth(copy_fn, 5)):.1f} GB/s (start), {threads} threads",
          flush=True)
    res["cases"] = {}
    for flow_kind in args.flows:
        for name, shape in cases.items():
            key = f"{name}/{flow_kind}"
            res["cases"][key] = bench_case(
                key, shape, np.dtype(args.dtype), repeats, threads, rng, flow_kind=flow_kind,
                with_torch=not args.no_torch, log=lambda s: print(s, flush=True), copy_fn=copy_fn,
            )
            tv = res["cases"][key].pop("torch_version")
            if tv:
                res["versions"]["torch"] = tv
    res["loadavg_end"] = list(os.getloadavg())
    res["numba_threading_layer"] = numba.threading_layer()
    targets = {}
    cases_all = list(res["cases"].values())
    if all("torch" in c["speedup_of_numba"]["forward+backward"] for c in cases_all):
        targets["fwd_bwd_vs_torch_min_ratio"] = min(
            c["speedup_of_numba"]["forward+backward"]["torch"] for c in cases_all
        )
        targets["fwd_bwd_vs_torch_ge_1.5"] = targets["fwd_bwd_vs_torch_min_ratio"] >= 1.5
    for op in ("forward", "forward+backward"):
        large = [res["cases"][f"imagenet/{k}"] for k in args.flows]
        targets[f"large_{op}_min_fraction_of_copy_bw"] = min(c["fraction_of_copy_bw"][op] for c in large)
        targets[f"large_{op}_min_fraction_of_best_copy_bw"] = min(
            c["effective_GBps"][op] / c["copy_bandwidth_GBps"]["best"] for c in large
        )
    targets["large_fraction_of_copy_bw_ge_0.4"] = {
        op: targets[f"large_{op}_min_fraction_of_copy_bw"] >= 0.4 for op in ("forward", "forward+backward")
    }
    res["targets"] = targets
    table = markdown_table(res)
    res["markdown"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print()
    print(table)
    print()
    print("targets:", json.dumps(targets, indent=2))
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
