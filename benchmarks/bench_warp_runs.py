"""Repeat ``bench_warp.py`` and summarise the runs (this VM's speed drifts between runs).

Run ``python benchmarks/bench_warp_runs.py --runs 6 --label "what changed"``: runs
the full benchmark ``--runs`` times in a row (fresh processes), keeps the last
run as ``benchmarks/results/warp_cpu.json``, and writes per-run numbers with
medians and ranges of the targets to ``benchmarks/results/warp_cpu_runs.json``.
The summary that file held before moves to its ``previous_code_runs`` list, so
the history of earlier kernel versions is kept.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS_OUT = HERE / "results" / "warp_cpu_runs.json"
LAST_OUT = HERE / "results" / "warp_cpu.json"
SUMMARISED = (
    "fwd_bwd_vs_torch_min_ratio",
    "large_forward_min_fraction_of_copy_bw",
    "large_forward+backward_min_fraction_of_copy_bw",
    "large_forward_min_fraction_of_best_copy_bw",
    "large_forward+backward_min_fraction_of_best_copy_bw",
)


def run_summary(res):
    """The per-run record kept in the runs file (targets, copy bandwidths, numba times, torch ratios)."""
    cases = res["cases"]
    return {
        "env": "default" if not any(res.get("env", {}).values()) else res["env"],
        "loadavg_start": res.get("loadavg_start"),
        "targets": res["targets"],
        "copy_bandwidth_GBps_per_case": {k: c.get("copy_bandwidth_GBps") for k, c in cases.items()},
        "numba_ms": {k: {op: t["median_s"] * 1e3 for op, t in c["times"]["numba"].items()} for k, c in cases.items()},
        "fwd_bwd_vs_torch": {
            k: c["speedup_of_numba"]["forward+backward"]["torch"]
            for k, c in cases.items() if "torch" in c["speedup_of_numba"]["forward+backward"]
        },
    }


def summarise(label, runs):
    """Medians and ranges over the runs of the :data:`SUMMARISED` targets."""
    out = {"commit": label, "runs": runs, "medians": {}, "ranges": {}}
    for key in SUMMARISED:
        vals = [r["targets"][key] for r in runs if key in r["targets"]]
        if vals:
            out["medians"][key] = statistics.median(vals)
            out["ranges"][key] = [min(vals), max(vals)]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=6, help="full benchmark runs (default 6)")
    ap.add_argument("--label", required=True, help="what code is measured (kept in the runs file)")
    ap.add_argument("--out", type=Path, default=RUNS_OUT, help="runs file")
    args = ap.parse_args(argv)
    if args.runs < 1:
        raise ValueError(f"--runs must be >= 1, got {args.runs}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            path = Path(tmp) / f"run{i}.json"
            print(f"run {i + 1}/{args.runs}", flush=True)
            subprocess.run([sys.executable, str(HERE / "bench_warp.py"), "--out", str(path)], check=True,
                           stdout=subprocess.DEVNULL)
            res = json.loads(path.read_text())
            runs.append(run_summary(res))
            print(json.dumps(runs[-1]["targets"]), flush=True)
        LAST_OUT.write_text(path.read_text())
    previous = []
    if args.out.exists():
        old = json.loads(args.out.read_text())
        previous = [old["final_code"]] + old.get("previous_code_runs", [])
    doc = {
        "benchmark": f"bench_warp.py, {args.runs} full runs in a row on {datetime.date.today()}; "
                     f"the last run of the final code is warp_cpu.json",
        "final_code": summarise(args.label, runs),
        "previous_code_runs": previous,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["final_code"]["medians"], indent=1))
    print(f"wrote {args.out} and {LAST_OUT}")


if __name__ == "__main__":
    main()
