"""Every JSON the library writes says what it was computed with (issue #20, deliverable 4).

:func:`stadv_ref._provenance.provenance` collects the library version, the git commit (from a
checkout only, never an error), the backend, the thread configuration, the numpy/scipy/numba
versions, the seed and the command line; the CLI's JSON results, ``train.json``, the audit's
``audit.json`` and (in ``test_outputs.py``) the reproduction's markers, ``run.json`` and
``report.md`` carry it. It sits inside the sealed content: changing it breaks the seal.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stadv_ref
from stadv_ref import _io, _provenance
from stadv_ref.cli import main
from stadv_ref.experiments.audit import write_report
from stadv_ref.experiments.audit._framework import Finding

KEYS = {"library_version", "git_commit", "backend", "threads", "versions", "python", "platform", "seed",
        "command_line"}


def _check_block(p, *, backend="numpy", seed=None):
    assert set(p) == KEYS
    assert p["library_version"] == stadv_ref.__version__ and p["backend"] == backend and p["seed"] == seed
    assert p["git_commit"] is None or re.fullmatch("[0-9a-f]{40}", p["git_commit"])
    assert set(p["versions"]) == {"numpy", "scipy", "numba"} and p["versions"]["numpy"] == np.__version__
    t = p["threads"]
    assert set(t) == {"numba_threads", "numba_threading_layer", "blas", "cpus", "env"}
    assert set(t["env"]) == set(_provenance.THREAD_ENV_VARS) and t["cpus"] >= 1
    json.dumps(p, allow_nan=False)  # JSON-ready


def test_provenance_block():
    p = _provenance.provenance(backend="numpy", seed=7, argv=["stadv", "certify"])
    _check_block(p, seed=7)
    assert p["command_line"] == ["stadv", "certify"]
    assert _provenance.provenance()["command_line"] == sys.argv
    main_py = str(Path(stadv_ref.__file__).with_name("__main__.py"))
    assert _provenance.provenance(argv=[main_py, "reproduce"])["command_line"] == ["python -m stadv_ref", "reproduce"]


def test_git_commit_of_this_checkout():
    commit = _provenance.provenance()["git_commit"]
    if commit is None:
        pytest.skip("not run from a git checkout (or git is not installed)")
    res = subprocess.run(["git", "-C", str(_provenance._ROOT), "cat-file", "-t", commit], capture_output=True,
                         text=True, timeout=30)
    assert res.stdout.strip() == "commit"


def test_git_commit_is_none_outside_a_checkout_and_never_an_error(tmp_path, monkeypatch):
    _provenance._git_commit.cache_clear()
    try:
        monkeypatch.setattr(_provenance, "_ROOT", tmp_path)  # e.g. site-packages: no .git, no pyproject
        assert _provenance.provenance()["git_commit"] is None
        _provenance._git_commit.cache_clear()
        monkeypatch.undo()

        def broken(*a, **k):
            raise subprocess.TimeoutExpired("git", 2)

        monkeypatch.setattr(_provenance.subprocess, "run", broken)
        assert _provenance.provenance()["git_commit"] is None
    finally:
        _provenance._git_commit.cache_clear()


def test_thread_environment_variables_are_recorded(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = _provenance.thread_config()["env"]
    assert env["OPENBLAS_NUM_THREADS"] == "3" and env["OMP_NUM_THREADS"] is None


def test_numba_is_never_imported_for_the_provenance():
    code = ("import sys; from stadv_ref._provenance import provenance; p = provenance(); "
            "print(json.dumps([p['threads']['numba_threads'], 'numba' in sys.modules]))")
    res = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [None, False]


def test_numba_threads_once_numba_is_imported():
    numba = pytest.importorskip("numba")
    assert _provenance.thread_config()["numba_threads"] == numba.get_num_threads()


def test_blas_threads_are_those_of_the_checkpoints():
    from stadv_ref.training.checkpoint import blas_threads

    assert blas_threads is _provenance.blas_threads  # one function: checkpoints and provenance agree
    blas = _provenance.thread_config()["blas"]
    assert sorted({(b["library"], b["threads"]) for b in blas}) == sorted(tuple(t) for t in blas_threads())


# ---------------------------------------------------------------------------
# The files
# ---------------------------------------------------------------------------
@pytest.fixture
def tiny(tmp_path):
    rng = np.random.default_rng(0)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((6, 36)) / 6, rng.standard_normal((3, 6)))
    X = rng.uniform(0, 1, (9, 6, 6))
    y = net.predict(X)
    y[:3] = [0, 1, 2]
    net.save(tmp_path / "net.npz")
    np.savez(tmp_path / "data.npz", X=X, y=y)
    return tmp_path / "net.npz", tmp_path / "data.npz"


@pytest.mark.parametrize("command, name, seed", [
    (["train", "nt", "--data", "{data}", "--epochs", "1", "--hidden", "4", "--seed", "5"], "train.json", 5),
    (["attack", "--model", "{net}", "--data", "{data}", "--max-iter", "5"], "attack.json", None),
    (["certify", "--model", "{net}", "--data", "{data}", "--eps", "0.1", "--method", "spectral", "--seed", "2"],
     "certify.json", 2),
    (["bound", "--model", "{net}", "--eps", "0.1", "--method", "spectral"], "bound.json", 0),
    (["lower-bound", "--model", "{net}", "--eps", "0.5", "--max-iter", "1", "--midpoints", "2"],
     "lower_bound.json", 0),
])
def test_every_cli_json_carries_the_provenance_inside_its_seal(tmp_path, tiny, capsys, command, name, seed):
    argv = [a.format(net=tiny[0], data=tiny[1]) for a in command] + ["--out", str(tmp_path / "o"), "--no-progress",
                                                                     "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    path = tmp_path / "o" / name
    body = _io.read_sealed_json(path, "result")
    _check_block(body["provenance"], seed=seed)
    assert body["provenance"]["command_line"] == ["stadv", *argv]
    body["provenance"]["backend"] = "cupy"  # a changed provenance no longer matches the seal
    path.write_text(json.dumps(body))
    with pytest.raises(ValueError, match="content hash"):
        _io.read_sealed_json(path, "result")


def test_the_backend_is_the_one_selected(tmp_path, tiny, capsys):
    pytest.importorskip("numba")
    argv = ["bound", "--model", str(tiny[0]), "--eps", "0.1", "--method", "spectral", "--backend", "numba",
            "--out", str(tmp_path / "o"), "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    assert _io.read_sealed_json(tmp_path / "o" / "bound.json", "result")["provenance"]["backend"] == "numba"


def test_audit_json_carries_the_provenance(tmp_path):
    f = Finding(id="X", claim="c", paper="p", measured="m", verdict="holds", criterion="k", numbers={}, seconds=0.1)
    paths = write_report([f], tmp_path, seed=3, quick=True)
    body = json.loads(open(paths["json"]).read())
    _check_block(body["provenance"], seed=3)
