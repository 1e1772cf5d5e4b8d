#!/usr/bin/env bash
# Test and benchmark the CuPy backend on a bare GPU machine, in one command.
#
#   bash benchmarks/run_gpu.sh [all|test|bench|quick]     (default: all)
#
#   test   pytest tests/backends/test_cupy_*.py (GPU tests included) and the
#          generic cross-checks with STADV_BACKEND=cupy (fails, never skips,
#          when the backend cannot load)
#   bench  python benchmarks/bench_gpu.py (warp vs torch grid_sample, stAdv
#          throughput, SDP per class pair)
#   quick  test, then bench_gpu.py --quick
#   all    test, then the full benchmark
#
# Needs python3 with numpy, scipy, pytest, hypothesis, tqdm, CuPy and (for the
# warp peer) PyTorch: the lent GPU image has them all (CuPy as cupy-cuda13x).
# Wheels of anything missing can be carried in the repository's ignored .whl/
# folder (see the README section "GPU backend"); they are installed into
# /tmp/site first. The project itself is put on the path without pip: the
# repository root and backends/ on PYTHONPATH and a generated dist-info that
# registers the backend entry points from pyproject.toml.
#
# Logs and the benchmark JSON go to $OUT (default /tmp/stadv_gpu_run/);
# the JSON also to benchmarks/results/gpu_<device>.json. Exit status: non-zero
# if a test run or the benchmark failed (the benchmark runs even after failed tests).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-all}"
PY="${PYTHON:-python3}"
OUT="${OUT:-/tmp/stadv_gpu_run}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
LOG="$OUT/run_gpu.log"
: > "$LOG"
log() { echo "[run_gpu] $*" | tee -a "$LOG"; }

# -- 1. environment ------------------------------------------------------------
SITE=/tmp/stadv_site
mkdir -p "$SITE"
if ls .whl/*.whl >/dev/null 2>&1; then
  log "installing carried wheels: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    >>"$LOG" 2>&1 || log "WARNING: pip install of .whl/ failed (see log)"
fi
export PYTHONPATH="$PWD:$PWD/backends:$SITE${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - "$SITE" <<'EOF' >>"$LOG" 2>&1 || log "WARNING: could not write the entry-point metadata"
# Register the stadv_ref.backends entry points of pyproject.toml without pip.
import pathlib, sys, tomllib
site = pathlib.Path(sys.argv[1])
proj = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
dist = site / f"stadv_ref-{proj['version']}.dist-info"
dist.mkdir(parents=True, exist_ok=True)
(dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {proj['name']}\nVersion: {proj['version']}\n")
eps = proj["entry-points"]["stadv_ref.backends"]
(dist / "entry_points.txt").write_text("[stadv_ref.backends]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
print("entry points:", eps)
EOF

{
  echo "== date"; date -u
  echo "== nvidia-smi"; nvidia-smi 2>&1 | head -20
  echo "== python"; "$PY" -c 'import sys; print(sys.version)'
  "$PY" - <<'EOF' 2>&1
import importlib
for m in ("numpy", "scipy", "cupy", "torch", "hypothesis", "pytest", "numba", "tqdm", "cvxpy"):
    try:
        print(f"{m:12s}", importlib.import_module(m).__version__)
    except Exception as exc:
        print(f"{m:12s} MISSING ({type(exc).__name__}: {exc})")
import stadv_ref
print("backends:", stadv_ref.available_backends())
be = stadv_ref.get_backend("cupy")
print("cupy backend device:", be.device_name)
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee -a "$LOG"

status=0
run_tests() {
  log "pytest tests/backends/test_cupy_*.py"
  "$PY" -m pytest tests/backends/test_cupy_emulated.py tests/backends/test_cupy_import.py tests/backends/test_cupy_gpu.py -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/pytest_cupy_backend.log" | tail -25
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  log "STADV_BACKEND=cupy pytest tests/backends/test_crosscheck.py tests/backends/test_inventory.py"
  STADV_BACKEND=cupy "$PY" -m pytest tests/backends/test_crosscheck.py tests/backends/test_inventory.py -q -rs -p no:cacheprovider 2>&1 \
    | tee "$OUT/pytest_crosscheck_cupy.log" | tail -25
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  log "tests done (status $status)"
}

run_bench() {
  log "python benchmarks/bench_gpu.py $*"
  "$PY" benchmarks/bench_gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench_gpu.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

case "$MODE" in
  test) run_tests ;;
  bench) run_bench ;;
  quick) run_tests; run_bench --quick ;;
  all) run_tests; run_bench ;;
  *) echo "usage: $0 [all|test|bench|quick]" >&2; exit 2 ;;
esac
log "finished mode=$MODE status=$status; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $status
