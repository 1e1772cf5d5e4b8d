"""What a result was computed with: the ``provenance`` block of every JSON file the library writes.

Issue #20 (deliverable 4): the numbers depend on the library version, the backend, the thread
counts (OpenBLAS splits products differently with 1 and 2 threads), the package versions and
the seed, so every JSON output records them together with the command line:

* :func:`provenance` -- the block itself (library version, git commit when run from a source
  checkout, backend, thread configuration, numpy/scipy/numba versions, Python, seed, command line);
* :func:`thread_config` -- the thread configuration alone (also shown by ``stadv info``): Numba's
  thread count and threading layer (only when Numba is already imported: it is never imported
  here), the BLAS libraries and their thread counts (``threadpoolctl``), the CPUs this process
  may use and the environment variables that set the pools;
* :func:`blas_threads` -- ``[[library, threads], ...]`` of the loaded BLAS libraries (recorded
  by training checkpoints, which warn when resumed with another count).

Nothing here raises: a value that cannot be found is ``None``. A bottom-layer module (it
imports nothing of the package). No paper equation lives here.
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

try:  # a dependency of stadv-ref; without it the environment variables still tell the story
    from threadpoolctl import threadpool_info
except ImportError:  # pragma: no cover - threadpoolctl is installed with stadv-ref
    threadpool_info = None

__all__ = ["provenance", "thread_config", "blas_threads", "THREAD_ENV_VARS", "PACKAGES"]

THREAD_ENV_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables that size the thread pools (read at the libraries' import)."""
PACKAGES = ("numpy", "scipy", "numba")
"""Packages whose versions the provenance block records (``None`` when not installed)."""

_ROOT = Path(__file__).resolve().parent.parent
_GIT_TIMEOUT_S = 2.0


@functools.lru_cache(maxsize=None)
def _dist_version(name):
    """The installed version of distribution ``name`` (``importlib.metadata``; ``None`` if absent)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def _git_commit():
    """``git rev-parse HEAD`` of the source checkout this package is imported from, else ``None``.

    Only a checkout of stadv-ref counts (its ``.git`` and ``pyproject.toml`` beside the package),
    never a repository that merely contains an installed copy; git missing, slow (more than
    two seconds) or failing gives ``None``.
    """
    try:
        if not (_ROOT / ".git").exists() or 'name = "stadv-ref"' not in (_ROOT / "pyproject.toml").read_text():
            return None
        res = subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=_GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    commit = res.stdout.strip()
    return commit if res.returncode == 0 and len(commit) >= 40 else None


def blas_threads():
    """``[[library, threads], ...]`` of the BLAS libraries loaded (e.g. ``[["openblas", 2]]``).

    Results are bit-identical only for the same count: OpenBLAS splits products differently
    with 1 and 2 threads (the last bits differ, and training amplifies them). ``[]`` without
    ``threadpoolctl``.
    """
    found = {(d.get("internal_api"), d.get("num_threads")) for d in _blas_info()}
    return [list(t) for t in sorted(found, key=str)]


def _blas_info():
    if threadpool_info is None:
        return []
    try:
        return [d for d in threadpool_info() if d.get("user_api") == "blas"]
    except Exception:  # pragma: no cover - threadpoolctl inspects loaded shared libraries
        return []


def _cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count()


def thread_config():
    """The thread configuration of this process.

    Returns
    -------
    dict
        ``numba_threads`` (:func:`numba.get_num_threads`) and ``numba_threading_layer`` when
        Numba is imported, else ``None`` (Numba is not imported for this); ``blas`` (one entry
        per loaded BLAS library: ``library``, ``version``, ``threads``, ``threading_layer``;
        ``None`` without ``threadpoolctl``); ``cpus`` (CPUs this process may run on); ``env``
        (:data:`THREAD_ENV_VARS`, ``None`` where unset).
    """
    numba = sys.modules.get("numba")
    n_numba = layer = None
    if numba is not None:
        try:
            n_numba = int(numba.get_num_threads())
        except Exception:  # pragma: no cover - a broken Numba install
            n_numba = None
        try:
            layer = numba.threading_layer()
        except Exception:  # ValueError: no parallel region has run yet, the layer is not chosen
            layer = None
    blas = None if threadpool_info is None else [
        {"library": d.get("internal_api"), "version": d.get("version"), "threads": d.get("num_threads"),
         "threading_layer": d.get("threading_layer")} for d in _blas_info()]
    return {"numba_threads": n_numba, "numba_threading_layer": layer, "blas": blas, "cpus": _cpus(),
            "env": {k: os.environ.get(k) for k in THREAD_ENV_VARS}}


def provenance(*, backend=None, seed=None, argv=None):
    """The ``provenance`` block of a JSON output: what the result was computed with.

    Parameters
    ----------
    backend : str, optional
        Name of the compute backend used (the caller knows it; e.g.
        :func:`stadv_ref.backend.current_backend_name`).
    seed : int, optional
        The random seed of the computation (``None`` when it has none).
    argv : sequence of str, optional
        The command line (default ``sys.argv``).

    Returns
    -------
    dict
        ``library_version``, ``git_commit`` (``None`` unless run from a source checkout),
        ``backend``, ``threads`` (:func:`thread_config`), ``versions`` (:data:`PACKAGES`),
        ``python``, ``platform``, ``seed`` and ``command_line``. JSON-ready; never raises.
    """
    return {
        "library_version": _dist_version("stadv-ref"),
        "git_commit": _git_commit(),
        "backend": backend,
        "threads": thread_config(),
        "versions": {name: _dist_version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seed": None if seed is None else int(seed),
        "command_line": _command_line(sys.argv if argv is None else argv),
    }


def _command_line(argv):
    """``argv`` as strings; ``python -m stadv_ref`` instead of the path of ``stadv_ref/__main__.py``."""
    cmd = [str(a) for a in argv]
    if cmd and Path(cmd[0]).name == "__main__.py" and Path(cmd[0]).parent.name == "stadv_ref":
        cmd[0] = "python -m stadv_ref"
    return cmd
