"""Shared fixtures: the backend under test and the MNIST directory; shared Hypothesis settings.

Every test that takes the ``backend`` fixture runs once per available backend
(the reference ``numpy`` always; ``numba`` when installed; ``cupy`` when a GPU
is present). Setting ``STADV_BACKEND`` restricts the run to that backend, and
then a backend that cannot load is a failure, not a skip.

The property tests import :data:`SETTINGS` and :data:`seeds` with
``from _settings import SETTINGS, seeds`` (``tests/`` is on ``sys.path``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import stadv_ref
from stadv_ref.backend import BackendError

REPO = Path(__file__).resolve().parents[1]

from _settings import SETTINGS, seeds  # noqa: E402,F401  (re-exported for old imports)


def _loadable(name):
    try:
        stadv_ref.get_backend(name)
        return True, ""
    except BackendError as exc:
        return False, str(exc)


def _backend_params():
    requested = os.environ.get("STADV_BACKEND", "").strip().lower()
    if requested:
        return [requested]
    params = []
    for name in stadv_ref.available_backends():
        ok, why = _loadable(name)
        params.append(name if ok else pytest.param(name, marks=pytest.mark.skip(reason=why)))
    return params


@pytest.fixture(params=_backend_params())
def backend(request):
    """Name of the backend under test (fails if explicitly requested and missing)."""
    name = request.param
    stadv_ref.get_backend(name)  # raises BackendError -> test error when requested explicitly
    return name


def _mnist_dir():
    env = os.environ.get("STADV_DATA_DIR")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir():
    """Directory with the real MNIST IDX files; skips when it is absent."""
    d = _mnist_dir()
    if not (d / "t10k-images-idx3-ubyte.gz").exists() and not (d / "t10k-images-idx3-ubyte").exists():
        pytest.skip(f"MNIST not found in {d} (set STADV_DATA_DIR)")
    return d
