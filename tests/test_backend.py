"""Tests of backend dispatch (stadv_ref.backend): argument > context manager > STADV_BACKEND > numpy."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

import stadv_ref
from stadv_ref import backend as backend_mod
from stadv_ref._install import install_hint
from stadv_ref.backend import BackendError, available_backends, current_backend_name, get_backend, use_backend
from stadv_ref.kernels import KERNELS, Backend, numpy_backend


class FakeEntryPoint:
    def __init__(self, name, obj=None, error=None):
        self.name, self.obj, self.error = name, obj, error

    def load(self):
        if self.error is not None:
            raise self.error
        return self.obj


def counting_backend(name="fake"):
    """The numpy reference under another name, counting calls per kernel."""
    calls = {}

    def wrap(kernel, fn):
        def inner(*args, **kwargs):
            calls[kernel] = calls.get(kernel, 0) + 1
            return fn(*args, **kwargs)
        return inner

    attrs = {k: wrap(k, getattr(numpy_backend, k)) for k in KERNELS}
    attrs.update(name=name, xp=np, calls=calls)
    return SimpleNamespace(**attrs)


@pytest.fixture
def registry(monkeypatch):
    """Isolated registry: numpy + a counting 'fake' backend, a broken 'numba', an incomplete 'partial'."""
    monkeypatch.delenv("STADV_BACKEND", raising=False)
    fake = counting_backend("fake")
    partial = SimpleNamespace(name="partial", xp=np, warp=numpy_backend.warp)
    eps = {
        "numpy": FakeEntryPoint("numpy", numpy_backend),
        "fake": FakeEntryPoint("fake", fake),
        "numba": FakeEntryPoint("numba", error=ImportError("No module named 'numba'")),
        "partial": FakeEntryPoint("partial", partial),
    }
    monkeypatch.setattr(backend_mod, "_entry_points", lambda: eps)
    monkeypatch.setattr(backend_mod, "_cache", {})
    return fake


def _warp_once(**kw):
    x = np.random.default_rng(0).normal(size=(1, 3, 3))
    return stadv_ref.warp(x, np.full((1, 2, 3, 3), 0.5), **kw)


def test_default_is_numpy(registry):
    assert current_backend_name() == "numpy"
    assert get_backend() is numpy_backend
    _warp_once()
    assert registry.calls == {}


@pytest.mark.parametrize("value", ["fake", " FAKE ", "Fake"])
def test_env_var_selects(registry, monkeypatch, value):
    monkeypatch.setenv("STADV_BACKEND", value)
    assert current_backend_name() == "fake"
    assert get_backend() is registry
    _warp_once()
    assert registry.calls["warp"] == 1


def test_empty_env_var_means_numpy(registry, monkeypatch):
    monkeypatch.setenv("STADV_BACKEND", "  ")
    assert current_backend_name() == "numpy"


def test_context_manager_nests_and_restores(registry, monkeypatch):
    monkeypatch.setenv("STADV_BACKEND", "fake")
    with use_backend("numpy") as be:
        assert be is numpy_backend and current_backend_name() == "numpy"
        with use_backend("fake") as inner:
            assert inner is registry and current_backend_name() == "fake"
            with use_backend("numpy"):
                assert get_backend() is numpy_backend
            assert get_backend() is registry
        assert current_backend_name() == "numpy"
        _warp_once()
        assert "warp" not in registry.calls
    assert current_backend_name() == "fake"  # back to the environment's choice
    monkeypatch.delenv("STADV_BACKEND")
    assert current_backend_name() == "numpy"


def test_context_manager_restores_after_exception(registry):
    with pytest.raises(RuntimeError):
        with use_backend("fake"):
            raise RuntimeError("boom")
    assert current_backend_name() == "numpy"


def test_argument_wins_over_context_and_env(registry, monkeypatch):
    monkeypatch.setenv("STADV_BACKEND", "fake")
    with use_backend("fake"):
        _warp_once(backend="numpy")
        assert "warp" not in registry.calls
    with use_backend("numpy"):
        _warp_once(backend="fake")
        assert registry.calls["warp"] == 1
    monkeypatch.delenv("STADV_BACKEND")
    _warp_once(backend="fake")
    assert registry.calls["warp"] == 2


def test_backend_objects_pass_through(registry):
    obj = counting_backend("object")
    assert get_backend(obj) is obj
    with use_backend(obj) as be:
        assert be is obj and get_backend() is obj and current_backend_name() == "object"
        _warp_once()
    assert obj.calls["warp"] == 1
    assert current_backend_name() == "numpy"


def test_unknown_backend_error(registry, monkeypatch):
    with pytest.raises(BackendError) as info:
        get_backend("nonsense")
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, ImportError)
    assert "nonsense" in str(err) and "registered backends" in str(err)
    for name in ("numpy", "fake", "numba"):
        assert name in str(err)
    with pytest.raises(BackendError, match="registered backends"):
        with use_backend("nonsense"):
            pass  # pragma: no cover - fails on entry
    assert current_backend_name() == "numpy"
    # an unknown name in the environment is an error too, never a silent fallback
    monkeypatch.setenv("STADV_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        _warp_once()
    with pytest.raises(ImportError, match="nonsense"):
        _warp_once()


def test_not_installed_backend_names_install_command(registry, monkeypatch):
    with pytest.raises(BackendError, match=re.escape(install_hint("numba"))):  # the command for this install
        get_backend("numba")
    # a known backend without an entry point at all
    with pytest.raises(BackendError, match=r"not installed.*" + re.escape(install_hint("cupy"))):
        get_backend("cupy")


def test_incomplete_backend_is_rejected(registry):
    with pytest.raises(BackendError, match="does not implement"):
        get_backend("partial")


def test_available_backends_lists_numpy_first(registry):
    assert available_backends() == ["numpy", "fake", "numba", "partial"]


def test_real_registry_has_numpy_first():
    names = available_backends()
    assert names[0] == "numpy" and len(names) == len(set(names))


def test_numpy_backend_implements_the_contract():
    assert isinstance(numpy_backend, Backend)
    for k in KERNELS + ("name", "xp"):
        assert hasattr(numpy_backend, k), k
    assert numpy_backend.name == "numpy" and numpy_backend.xp is np


def test_every_public_kernel_dispatches(registry):
    """Each public function reaches its kernel through the current backend."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 4, 4))
    flow = rng.normal(size=(2, 2, 4, 4))
    net = stadv_ref.OneHiddenLayerNet(rng.normal(size=(3, 16)), rng.normal(size=(2, 3)))
    with use_backend("fake"):
        stadv_ref.warp(x, flow)
        stadv_ref.warp_vjp_x(flow, x)
        stadv_ref.warp_vjp_flow(x, flow, x)
        stadv_ref.tied_jacobian_diag(x, flow[:, 0])
        stadv_ref.flow_tv(flow)
        stadv_ref.flow_tv_grad(flow)
        stadv_ref.stadv_flow_loss(flow)
        stadv_ref.m_power(flow, -1)
        net(x)
        net.input_gradient(x, np.array([1.0, -1.0]))
    want = {"warp", "warp_vjp_x", "warp_vjp_flow", "tied_jacobian_diag", "flow_tv", "flow_tv_grad",
            "stadv_flow_loss", "smoothness_power", "net_forward", "net_input_grad"}
    assert want <= set(registry.calls)


def test_import_does_not_load_numba_or_cupy():
    """``import stadv_ref`` and numpy-backend calls never import numba or cupy (fresh interpreter)."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import stadv_ref
        assert "numba" not in sys.modules and "cupy" not in sys.modules, "import"
        x = np.random.default_rng(0).uniform(size=(1, 5, 5))
        f = np.full((1, 2, 5, 5), 0.3)
        stadv_ref.warp(x, f, backend="numpy")
        stadv_ref.warp(x, f)
        stadv_ref.m_power(x, -1)
        stadv_ref.flow_tv(f)
        stadv_ref.available_backends()
        with stadv_ref.use_backend("numpy"):
            stadv_ref.warp_vjp_flow(x, f, x)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "cupy", "stadv_numba", "stadv_cupy"))
        print("LOADED:", bad)
        assert not bad, bad
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "STADV_BACKEND"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LOADED: []" in proc.stdout


def test_collect_kernels_builds_backend_and_names_missing_kernels():
    from stadv_ref.kernels import KERNELS, collect_kernels, numpy_backend

    ns = {k: getattr(numpy_backend, k) for k in KERNELS}
    be = collect_kernels("copy", np, ns, extra_attr=1)
    assert be.name == "copy" and be.xp is np and be.extra_attr == 1
    assert all(getattr(be, k) is ns[k] for k in KERNELS)
    del ns["warp_vjp_x"]
    with pytest.raises(TypeError, match="warp_vjp_x"):
        collect_kernels("broken", np, ns)
