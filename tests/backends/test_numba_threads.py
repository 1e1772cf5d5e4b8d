"""Thread use of the Numba backend (#20, "threads that never hurt"); no timing here.

The network kernels of :mod:`stadv_numba._net` run between two BLAS products; a parallel
region there leaves Numba's OpenMP workers spinning on the cores BLAS needs (the network case
of ``benchmarks/bench_threads.py`` was 1.16-1.44x slower than NumPy). They are serial: a fresh
interpreter that runs the network pass and its input gradient on the numba backend has not
started Numba's thread pool (``numba.threading_layer()`` still raises), while one parallel
kernel (the warp) does start it -- the control that shows the probe can see a pool.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stadv_ref._provenance import THREAD_ENV_VARS

pytest.importorskip("stadv_numba", reason="the numba extra is not installed")

_PROBE = r"""
import numba
import numpy as np
import stadv_numba
from stadv_ref.reference.network import net_forward_reference, net_input_grad_reference

def pool_started():
    try:
        numba.threading_layer()
    except ValueError:  # "Threading layer is not initialized."
        return False
    return True

rng = np.random.default_rng(0)
W, b = rng.standard_normal((50, 64)), rng.standard_normal(50)
V, c = rng.standard_normal((10, 50)), rng.standard_normal(10)
X, weights = rng.standard_normal((300, 64)), rng.standard_normal((300, 10))
be = stadv_numba.backend
Z, out = be.net_forward(W, b, V, c, X)
G = be.net_input_grad(W, b, V, X, weights)
Zr, outr = net_forward_reference(W, b, V, c, X)
assert np.allclose(Z, Zr) and np.allclose(out, outr) and np.allclose(G, net_input_grad_reference(W, b, V, X, weights))
print("network", pool_started())
be.warp(rng.standard_normal((4, 1, 8, 8)), rng.standard_normal((4, 2, 8, 8)), "zeros")
print("warp", pool_started())
"""


def test_network_kernels_start_no_thread_pool():
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV_VARS}  # the defaults
    res = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["network", "False", "warp", "True"], res.stdout


_WAIT_PROBE = r"""
import os
import stadv_numba
print(os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_numba_backend_makes_idle_openmp_workers_sleep_unless_told_otherwise(given, expected):
    # idle libgomp workers that spin take the cores of the next BLAS product (the flow PGD attack:
    # 3.9x NumPy's time with OMP_WAIT_POLICY=ACTIVE, benchmarks/results/threads_active_wait.json)
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    res = subprocess.run([sys.executable, "-c", _WAIT_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [expected]
