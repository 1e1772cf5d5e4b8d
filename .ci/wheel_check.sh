#!/usr/bin/env bash
# Packaging check (issue #20, deliverable 2): `python -m build` makes an sdist and a wheel; the wheel,
# installed with its extras into a fresh venv, passes the tests of the unpacked sdist.
#
#   bash .ci/wheel_check.sh                              # the default selection below (~2 min of tests)
#   WHEEL_CHECK_PYTEST="-m 'not slow' tests" bash .ci/wheel_check.sh   # the whole suite (~8 min, 2 cores)
#
# Default selection (-m "not slow"): every top-level tests/test_*.py (the public API, bad inputs, loaders,
# install hints, layering, equations) and one module per test folder (backends/test_inventory: the numba
# backend from the wheel; upper_bounds/test_closed_form, attacks/test_flow_pgd, training/test_trainer,
# lower_bounds/test_lower_bounds, experiments/test_audit); MNIST tests run only with STADV_DATA_DIR set.
# The tests import the INSTALLED wheel: they run from the unpacked sdist with its stadv_ref/ sources and
# metadata removed (the checkout is never on sys.path), and the script checks where stadv_ref comes from.
# It also checks that the wheel holds every module of the sdist's packages, that the `stadv` command
# runs, and that the install hint printed by the installed package works (pip install --dry-run).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stadv-wheel-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH
SECONDS=0

echo "== wheel check: build (python -m build) from $ROOT"
"$PY" -m venv "$WORK/build-venv"
"$WORK/build-venv/bin/python" -m pip install -q build > "$WORK/pip-build.log" 2>&1 \
  || { tail -n 40 "$WORK/pip-build.log"; exit 1; }
"$WORK/build-venv/bin/python" -m build --outdir "$WORK/dist" "$ROOT" > "$WORK/build.log" 2>&1 \
  || { tail -n 40 "$WORK/build.log"; exit 1; }
WHEEL="$(ls "$WORK"/dist/*.whl)"
SDIST="$(ls "$WORK"/dist/*.tar.gz)"
echo "   $(basename "$WHEEL"), $(basename "$SDIST") (${SECONDS}s)"

echo "== wheel check: fresh venv, pip install \"<wheel>[test,numba,onnx,dev]\""
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q "$WHEEL[test,numba,onnx,dev]" > "$WORK/pip.log" 2>&1 || { tail -n 40 "$WORK/pip.log"; exit 1; }

echo "== wheel check: unpack the sdist; the wheel holds every module of its packages"
mkdir "$WORK/src"
tar -xzf "$SDIST" -C "$WORK/src"
SRC="$(ls -d "$WORK"/src/*/)"
for need in tests/conftest.py docs/EQUATIONS.md docs/EQUATION_INDEX.md README.md pyproject.toml; do
  [ -f "$SRC/$need" ] || { echo "sdist lacks $need"; exit 1; }
done
"$VPY" - "$WHEEL" "$SRC" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, src = sys.argv[1], Path(sys.argv[2])
in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
dirs = {"stadv_ref": src / "stadv_ref", "stadv_numba": src / "backends" / "stadv_numba",
        "stadv_cupy": src / "backends" / "stadv_cupy"}
in_sdist = {f"{pkg}/{p.relative_to(d).as_posix()}" for pkg, d in dirs.items() for p in d.rglob("*.py")}
missing = sorted(in_sdist - in_wheel)
assert not missing, f"modules of the sdist missing from the wheel: {missing}"
print(f"   {len(in_sdist)} modules in both")
PY
# the tests must import the installed wheel, never these sources (nor read the sdist's metadata)
rm -rf "$SRC/stadv_ref" "$SRC"/*.egg-info

cd "$SRC"
echo "== wheel check: the installed package and its install hint"
"$VPY" - "$WORK/venv" "$WHEEL" <<'PY'
import importlib.util, sys
from pathlib import Path
venv, wheel = Path(sys.argv[1]).resolve(), sys.argv[2]
import stadv_ref
from stadv_ref._install import install_hint
for name in ("stadv_ref", "stadv_numba", "stadv_cupy", "stadv_ref.upper_bounds", "stadv_ref.experiments.audit"):
    origin = Path(importlib.util.find_spec(name).origin).resolve()
    assert venv in origin.parents, f"{name} imported from {origin}, not from the installed wheel"
hint = install_hint("numba")
assert hint == f'pip install "{wheel}[numba]"', hint
print(f"   stadv_ref {stadv_ref.__version__} from {Path(stadv_ref.__file__).parent}; hint: {hint}")
PY
HINT="$("$VPY" -c 'from stadv_ref._install import install_hint; print(install_hint("onnx"))')"
echo "   $HINT --dry-run"
( . "$WORK/venv/bin/activate" && eval "$HINT --dry-run -q" > "$WORK/pip-hint.log" 2>&1 ) \
  || { tail -n 40 "$WORK/pip-hint.log"; exit 1; }

"$WORK/venv/bin/stadv" --help > /dev/null
"$WORK/venv/bin/stadv" info > /dev/null

if [ -n "${WHEEL_CHECK_PYTEST:-}" ]; then
  eval "set -- $WHEEL_CHECK_PYTEST"
else
  set -- -m "not slow" tests/test_*.py tests/backends/test_inventory.py tests/upper_bounds/test_closed_form.py \
    tests/attacks/test_flow_pgd.py tests/training/test_trainer.py tests/lower_bounds/test_lower_bounds.py \
    tests/experiments/test_audit.py
fi
echo "== wheel check: pytest $* (tests of the sdist, installed wheel)"
"$WORK/venv/bin/pytest" -q -p no:cacheprovider "$@"
echo "== wheel check passed in ${SECONDS}s"
