"""Backend dispatch: select the compute backend per call, per block, or per process.

Resolution order (first match wins):

1. the ``backend=`` argument of a public function,
2. the innermost :func:`use_backend` context manager,
3. the environment variable ``STADV_BACKEND``,
4. ``"numpy"`` (the reference).

Backends are discovered through the entry-point group ``stadv_ref.backends``
and loaded lazily, so importing :mod:`stadv_ref` never imports Numba or CuPy.
An unknown name or a backend whose dependencies are missing raises
:class:`BackendError` with the install command; there is never a silent
fallback to another backend.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from importlib import metadata

import numpy as np

from ._install import install_hint
from .kernels import KERNELS, numpy_backend

__all__ = [
    "BackendError",
    "available_backends",
    "current_backend_name",
    "get_backend",
    "use_backend",
    "as_numpy",
    "ENTRY_POINT_GROUP",
]

ENTRY_POINT_GROUP = "stadv_ref.backends"
ENV_VAR = "STADV_BACKEND"

_INSTALL_HINTS = {
    "numba": lambda: install_hint("numba"),
    "cupy": lambda: f"{install_hint('cupy')} (CUDA 12) or {install_hint('cupy13')} (CUDA 13); needs an NVIDIA GPU",
}
"""Install commands of the known optional backends, built when a message needs them (see :mod:`._install`)."""

_current = contextvars.ContextVar("stadv_backend", default=None)
_cache: dict = {}


class BackendError(ImportError, ValueError):
    """An unknown backend, or a known one that cannot be loaded here."""


def _entry_points():
    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return eps


def available_backends():
    """Names of registered backends (installed or not; loading may still fail).

    Returns
    -------
    list of str
        ``"numpy"`` first, then the other entry points in alphabetical order.
    """
    names = set(_entry_points()) | {"numpy"}
    return ["numpy"] + sorted(names - {"numpy"})


def _load(name):
    if name == "numpy":
        return numpy_backend
    eps = _entry_points()
    hint = _INSTALL_HINTS[name]() if name in _INSTALL_HINTS else None
    if name not in eps:
        if hint is None:
            raise BackendError(
                f"unknown backend {name!r}; registered backends: {available_backends()}. "
                f"Backends register under the entry-point group {ENTRY_POINT_GROUP!r}."
            )
        raise BackendError(
            f"backend {name!r} is not installed; install it with: {hint}"
        )
    try:
        be = eps[name].load()
    except ImportError as exc:
        how = hint or "the package that provides it"
        tail = "" if "install it with" in str(exc) else f"; install it with: {how}"  # the backend may say it
        raise BackendError(f"backend {name!r} cannot be loaded ({exc}){tail}") from exc
    missing = [k for k in KERNELS + ("name", "xp") if not hasattr(be, k)]
    if missing:
        raise BackendError(f"backend {name!r} does not implement {missing}")
    return be


def current_backend_name():
    """Name of the backend a call without ``backend=`` would use now."""
    sel = _current.get()
    if sel is None:
        return os.environ.get(ENV_VAR, "").strip().lower() or "numpy"
    return sel if isinstance(sel, str) else sel.name


def get_backend(name=None):
    """Return the backend object for ``name`` (or the current one).

    Parameters
    ----------
    name : str or backend object, optional
        A registered name, or an object implementing
        :class:`stadv_ref.interface.Backend` (returned unchanged).

    Raises
    ------
    BackendError
        Unknown name, or the backend's dependencies are not installed.
    """
    if name is not None and not isinstance(name, str):
        missing = [k for k in KERNELS + ("name", "xp") if not hasattr(name, k)]
        if missing:
            raise TypeError(f"backend must be a registered name or implement the backend interface; missing {missing}")
        return name
    if name is None:
        sel = _current.get()
        if sel is not None and not isinstance(sel, str):
            return sel
        name = current_backend_name()
    name = name.strip().lower()
    if name not in _cache:
        _cache[name] = _load(name)
    return _cache[name]


def as_numpy(a):
    """A dispatched function's result as a NumPy array (the current backend's ``to_numpy``).

    Parameters
    ----------
    a : array
        An array of the current backend (NumPy, or CuPy for the cupy backend).

    Returns
    -------
    numpy.ndarray
    """
    return np.asarray(get_backend().to_numpy(a))


@contextlib.contextmanager
def use_backend(name):
    """Context manager selecting the backend for every call in its block.

    Raises
    ------
    BackendError
        (a ``ValueError``) Unknown name, or the backend's dependencies are not installed.
    TypeError
        ``name`` is neither a string nor a backend object.

    Examples
    --------
    >>> import stadv_ref
    >>> with stadv_ref.use_backend("numpy"):
    ...     stadv_ref.current_backend_name()
    'numpy'
    """
    be = get_backend(name)  # fail early on unknown / missing backends
    token = _current.set(name.strip().lower() if isinstance(name, str) else be)
    try:
        yield be
    finally:
        _current.reset(token)
