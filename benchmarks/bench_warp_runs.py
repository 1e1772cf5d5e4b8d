"""Repeat ``bench_warp.py`` and summarise the runs (this VM's speed drifts between runs).

Run ``python benchmarks/bench_warp_runs.py --runs 6 --label "what changed"``: runs
the full benchmark ``--runs`` times in a row (fresh processes), keeps the last
run as ``benchmarks/results/warp_cpu.json`` (``--last-out``), and writes per-run
numbers with medians and ranges of the targets to
``benchmarks/results/warp_cpu_runs.json`` (``--out``). The summary that file held
before moves to its ``previous_code_runs`` list, so the history of earlier
kernel versions is kept. Options it does not know (``--dtype float64``,
``--threads 1``, ...) are passed on to ``bench_warp.py``. If a run fails, the
runs done so far are written, marked ``"incomplete": true``, and the error is
raised.
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
    ap.add_argument("--last-out", type=Path, default=LAST_OUT, help="where the last run's full JSON goes")
    args, bench_args = ap.parse_known_args(argv)
    if args.runs < 1:
        raise ValueError(f"--runs must be >= 1, got {args.runs}")
    runs = []
    error = None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            path = Path(tmp) / f"run{i}.json"
            print(f"run {i + 1}/{args.runs}", flush=True)
            try:
                subprocess.run([sys.executable, str(HERE / "bench_warp.py"), "--out", str(path), *bench_args],
                               check=True, stdout=subprocess.DEVNULL)
            except subprocess.CalledProcessError as exc:
                error = exc
                break
            runs.append(run_summary(json.loads(path.read_text())))
            print(json.dumps(runs[-1]["targets"]), flush=True)
            args.last_out.write_text(path.read_text())
    if runs:
        write_runs(args.out, args.label, runs, bench_args, args.last_out.name, incomplete=error is not None)
        print(f"wrote {args.out} and {args.last_out}")
    if error is not None:
        raise SystemExit(f"run {len(runs) + 1} of bench_warp.py failed ({error}); {len(runs)} runs kept")


def write_runs(out, label, runs, bench_args, last_name, incomplete=False):
    """Write the runs file ``out``: these runs as ``final_code``, the file's older summaries after."""
    previous = []
    if out.exists():
        old = json.loads(out.read_text())
        previous = ([old["final_code"]] if "final_code" in old else []) + old.get("previous_code_runs", [])
    doc = {
        "benchmark": f"bench_warp.py {' '.join(bench_args)}".rstrip()
                     + f", {len(runs)} runs in a row on {datetime.date.today()}; "
                     f"the last run of the final code is {last_name}",
        "final_code": summarise(label, runs),
        "previous_code_runs": previous,
    }
    if incomplete:
        doc["incomplete"] = True
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["final_code"]["medians"], indent=1))


if __name__ == "__main__":
    main()
