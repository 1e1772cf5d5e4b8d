"""Install hints (issue #20, deliverable 2): every message names a ``pip`` command that works where it is printed.

``stadv_ref._install.install_hint`` gives ``pip install -e ".[extra]"`` in a source checkout, the wheel's
(or sdist's, or folder's) path for an installed copy (PEP 610 ``direct_url.json``), and the package name
otherwise; the backend dispatcher, the ONNX and torch importers and the backends use it. ``.ci/wheel_check.sh``
runs the printed command of an installed wheel with ``pip install --dry-run``.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

import stadv_ref
from stadv_ref import _install, backend
from stadv_ref._install import install_hint, torch_hint

PACKAGE = Path(stadv_ref.__file__).resolve().parent
SOURCES = [PACKAGE, *(Path(importlib.util.find_spec(m).origin).resolve().parent for m in ("stadv_numba", "stadv_cupy"))]


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A fake source checkout: ``pyproject.toml`` of stadv-ref next to the package folder."""
    (tmp_path / "stadv_ref").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "stadv-ref"\n')
    monkeypatch.setattr(_install, "_PACKAGE_DIR", tmp_path / "stadv_ref")
    return tmp_path


class _Dist:
    def __init__(self, site, direct_url):
        self.site, self.direct_url = site, direct_url

    def locate_file(self, path):
        return self.site / path

    def read_text(self, name):
        assert name == "direct_url.json"
        return None if self.direct_url is None else json.dumps(self.direct_url)


def _installed(monkeypatch, tmp_path, direct_url):
    """This package installed in ``site-packages``; beside it, an unpacked sdist's ``.egg-info`` (no direct_url)."""
    site = tmp_path / "site-packages"
    (site / "stadv_ref").mkdir(parents=True)
    monkeypatch.setattr(_install, "_PACKAGE_DIR", (site / "stadv_ref").resolve())
    dists = [_Dist(tmp_path / "sdist", None)] + ([] if direct_url == "missing" else [_Dist(site, direct_url)])
    monkeypatch.setattr(_install.metadata, "distributions", lambda name: iter(dists))


def test_checkout_hint_is_an_editable_install(checkout, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(checkout)
    assert install_hint("numba") == 'pip install -e ".[numba]"'
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert install_hint("onnx") == f'pip install -e "{checkout}[onnx]"'


@pytest.mark.parametrize("direct_url, hint", [
    ({"url": "file:///tmp/dist/stadv_ref-0.1.0-py3-none-any.whl", "archive_info": {}},
     'pip install "/tmp/dist/stadv_ref-0.1.0-py3-none-any.whl[numba]"'),
    ({"url": "file:///tmp/my%20dist/stadv_ref-0.1.0.tar.gz", "archive_info": {}},
     'pip install "/tmp/my dist/stadv_ref-0.1.0.tar.gz[numba]"'),
    ({"url": "file:///home/u/stadv-ref", "dir_info": {}}, 'pip install "/home/u/stadv-ref[numba]"'),
    ({"url": "https://example.org/stadv_ref-0.1.0-py3-none-any.whl", "archive_info": {}},
     'pip install "stadv-ref[numba]"'),
    (None, 'pip install "stadv-ref[numba]"'),
    ("missing", 'pip install "stadv-ref[numba]"'),
])
def test_installed_copy_names_where_it_came_from(monkeypatch, tmp_path, direct_url, hint):
    _installed(monkeypatch, tmp_path, direct_url)
    assert install_hint("numba") == hint


def test_the_real_installation_gives_a_pip_command():
    assert re.fullmatch(r'pip install (-e )?"[^"]+\[numba\]"', install_hint("numba"))


def test_backend_errors_name_the_hint(monkeypatch, checkout):
    monkeypatch.chdir(checkout)
    monkeypatch.setattr(backend, "_entry_points", lambda: {})
    with pytest.raises(backend.BackendError, match=re.escape('install it with: pip install -e ".[numba]"')):
        backend._load("numba")
    with pytest.raises(backend.BackendError, match=re.escape('pip install -e ".[cupy]" (CUDA 12) or pip install -e '
                                                             '".[cupy13]" (CUDA 13); needs an NVIDIA GPU')):
        backend._load("cupy")


def test_onnx_and_torch_hints(monkeypatch, checkout, tmp_path):
    monkeypatch.chdir(checkout)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=re.escape('ONNX import needs the onnx package: pip install -e ".[onnx]"')):
        stadv_ref.import_onnx(tmp_path / "m.onnx")
    assert torch_hint() == 'pip install torch==2.13.0 (or: pip install -e ".[torch]")'


def test_no_message_spells_out_the_package_name_install():
    """Every hint goes through install_hint: no source outside _install.py writes pip install "stadv-ref[...]"."""
    found = set()
    for root in SOURCES:
        for path in root.rglob("*.py"):
            if path.name != "_install.py" and re.search(r'stadv-ref\[', path.read_text(encoding="utf-8")):
                found.add(path.relative_to(root).as_posix())
    assert found == set(), "use stadv_ref._install.install_hint for these install hints"
