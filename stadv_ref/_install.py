"""Install hints: the ``pip`` command that adds an optional extra *where the message is printed*.

The package is not on PyPI, so ``pip install "stadv-ref[numba]"`` fails for most users. The
command depends on how this copy of :mod:`stadv_ref` got here:

* imported from a source checkout (``pyproject.toml`` of ``stadv-ref`` next to the package,
  an editable install included): ``pip install -e ".[numba]"`` when the current directory is
  the checkout, else ``pip install -e "/path/to/checkout[numba]"``;
* installed from a wheel, an sdist or a directory (``direct_url.json`` of the installed
  distribution, PEP 610): ``pip install "/path/to/stadv_ref-0.1.0-py3-none-any.whl[numba]"``;
* otherwise (an index): ``pip install "stadv-ref[numba]"``.

Every install hint of the package and of its backends (``stadv_numba``, ``stadv_cupy``) comes
from :func:`install_hint`. No paper equation lives here.
"""
from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["DIST_NAME", "TORCH_PIN", "install_hint", "torch_hint"]

DIST_NAME = "stadv-ref"
TORCH_PIN = "torch==2.13.0"
"""The PyTorch version :func:`stadv_ref.from_torch` is tested with (the ``[torch]`` extra pins it)."""

_PACKAGE_DIR = Path(__file__).resolve().parent


def _checkout_root():
    """The source checkout this package is imported from, or ``None`` (an installed copy)."""
    root = _PACKAGE_DIR.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if f'name = "{DIST_NAME}"' in text else None


def _installed_from():
    """The local file or folder this installed copy came from (PEP 610 ``direct_url.json``), or ``None``.

    Only the distribution that holds this very package counts (an unpacked sdist's ``.egg-info`` in
    the current directory is another distribution of the same name).
    """
    for dist in metadata.distributions(name=DIST_NAME):
        try:
            if Path(dist.locate_file("stadv_ref")).resolve() != _PACKAGE_DIR:
                continue
            raw = dist.read_text("direct_url.json")
            url = urlparse(json.loads(raw)["url"]) if raw else None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return unquote(url.path) if url is not None and url.scheme == "file" else None
    return None


def install_hint(extra):
    """The ``pip`` command that installs ``stadv-ref`` with the optional ``extra`` from where it came.

    Parameters
    ----------
    extra : str
        An optional-dependency group of ``pyproject.toml`` (``"numba"``, ``"onnx"``, ``"torch"``...).

    Returns
    -------
    str
        For example ``pip install -e ".[numba]"`` (source checkout, current directory) or
        ``pip install "/tmp/dist/stadv_ref-0.1.0-py3-none-any.whl[numba]"`` (installed wheel).

    Examples
    --------
    >>> install_hint("numba")  # doctest: +SKIP
    'pip install -e ".[numba]"'
    """
    root = _checkout_root()
    if root is not None:
        try:
            here = Path(os.getcwd()).resolve() == root
        except OSError:  # the current directory was removed
            here = False
        return f'pip install -e "{"." if here else root}[{extra}]"'
    source = _installed_from()
    if source is not None:
        return f'pip install "{source}[{extra}]"'
    return f'pip install "{DIST_NAME}[{extra}]"'


def torch_hint():
    """How to install the pinned PyTorch: ``pip install torch==2.13.0`` or the ``[torch]`` extra."""
    return f"pip install {TORCH_PIN} (or: {install_hint('torch')})"
