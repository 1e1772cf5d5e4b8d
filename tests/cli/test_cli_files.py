"""The ``stadv`` command and bad files, option values and resumes (issue #19 items 4, 6, 7; deliverable 3).

* ``--option hidden_bias=False`` (or ``=no``) turned the bias *on* (``bool("False")``): a boolean
  option now takes exactly true/false/yes/no/1/0 in any case, anything else is a usage error
  naming the option;
* a 0-byte ``--data`` file gave an ``EOFError`` traceback: every bad data or model file is one
  line on stderr naming the file, exit status 1;
* ``stadv train nt --data A.npz`` killed with SIGKILL and rerun with ``--data B.npz`` silently
  continued on B: it is refused (``--restart`` starts afresh) and ``train.json`` records the
  data fingerprint;
* a damaged ``--bound-cache`` file crashed ``stadv certify`` (``zipfile.BadZipFile``): it is
  recomputed with a one-line warning and the same result;
* every JSON result is sealed (format version, library version, sha256).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import stadv_ref
from stadv_ref import _io
from stadv_ref.cli import main
from stadv_ref.training.checkpoint import data_fingerprint
from stadv_ref.upper_bounds import clear_bound_cache

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def files(tmp_path):
    """A 3-class 8x8 network, a data file for it, and a second data file with other images."""
    rng = np.random.default_rng(0)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((12, 64)) / 8, rng.standard_normal((3, 12)))
    X = rng.uniform(0, 1, (30, 8, 8))
    y = net.predict(X)
    y[:3] = [0, 1, 2]
    p = {"net": tmp_path / "net.npz", "A": tmp_path / "A.npz", "B": tmp_path / "B.npz"}
    net.save(p["net"])
    np.savez(p["A"], X=X, y=y)
    np.savez(p["B"], X=X[::-1].copy(), y=y[::-1].copy())
    return p, net, X, y


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return len(lines) == 1 and "Traceback" not in err


def _train(capsys, data, out, *extra):
    return _run(capsys, "train", "nt", "--data", data, "--epochs", 2, "--hidden", 6, "--batch-size", 10,
                "--out", out, "--no-progress", *extra)


# ---------------------------------------------------------------------------
# Boolean options
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, bias", [("False", False), ("no", False), ("0", False), ("FALSE", False),
                                        ("true", True), ("Yes", True), ("1", True)])
def test_boolean_option_parses_strictly(tmp_path, files, capsys, text, bias):
    rc, _, err = _train(capsys, files[0]["A"], tmp_path / "o", "--option", f"hidden_bias={text}")
    assert rc == 0, err
    summary = json.loads((tmp_path / "o" / "train.json").read_text())
    assert summary["settings"]["hidden_bias"] is bias


@pytest.mark.parametrize("text", ["maybe", "2", "", "nein", "[]"])
def test_other_boolean_option_values_are_refused_by_name(tmp_path, files, capsys, text):
    rc, _, err = _train(capsys, files[0]["A"], tmp_path / "o", "--option", f"hidden_bias={text}")
    assert rc == 2 and _one_line(err) and "hidden_bias" in err and "true/false" in err


def test_numeric_options_keep_their_json_values(tmp_path, files, capsys):
    rc, _, err = _train(capsys, files[0]["A"], tmp_path / "o", "--option", "lr=0.01", "--option", "init_scale=1")
    assert rc == 0, err
    s = json.loads((tmp_path / "o" / "train.json").read_text())["settings"]
    assert s["lr"] == 0.01 and s["init_scale"] == 1


# ---------------------------------------------------------------------------
# Bad files: one line naming the file, status 1
# ---------------------------------------------------------------------------
def _bad_file(tmp_path, kind, good):
    p = tmp_path / f"{kind}.npz"
    raw = Path(good).read_bytes()
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        p.write_bytes(raw[: len(raw) // 2])
    elif kind == "text":
        p.write_text("X = 1\n")
    elif kind == "npy":
        with open(p, "wb") as fh:
            np.save(fh, np.zeros(3))
    elif kind == "pickled":
        obj = np.empty(1, dtype=object)
        obj[0] = {"a": 1}
        np.savez(p, X=obj, y=np.zeros(1, int))
    elif kind == "scalar_X":
        np.savez(p, X=np.float64(1.0), y=np.zeros(1, int))
    elif kind == "string_X":
        np.savez(p, X=np.array([["a"] * 64]), y=np.zeros(1, int))
    elif kind == "non_npy_member":
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("X", b"not an array")
    return p


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "npy", "pickled", "scalar_X", "string_X",
                                  "non_npy_member"])
def test_bad_data_file_is_one_line_naming_it(tmp_path, files, capsys, kind):
    p = _bad_file(tmp_path, kind, files[0]["A"])
    for argv in (["attack", "--model", files[0]["net"], "--max-iter", 1], ["train", "nt", "--epochs", 1]):
        rc, _, err = _run(capsys, *argv, "--data", p, "--out", tmp_path / "o", "--no-progress")
        assert rc == 1 and _one_line(err), err
        assert str(p) in err


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "changed_weights"])
def test_bad_model_file_is_one_line_naming_it(tmp_path, files, capsys, kind):
    if kind == "changed_weights":
        p = tmp_path / "changed.npz"
        data = dict(np.load(files[0]["net"]))
        data["W"] = data["W"] * 2  # under the old content hash
        np.savez(p, **data)
    else:
        p = _bad_file(tmp_path, kind, files[0]["net"])
    rc, _, err = _run(capsys, "info", "--model", p)
    assert rc == 1 and _one_line(err) and str(p) in err
    if kind == "changed_weights":
        assert "content hash" in err


def test_model_of_the_previous_format_still_loads(tmp_path, files, capsys):
    net = files[1]
    p = tmp_path / "v1.npz"
    np.savez(p, format_version=np.int64(1), W=net.W, v=net.V, b=net.b, c=net.c, image_shape=np.array([8, 8]))
    rc, out, err = _run(capsys, "info", "--model", p)
    assert rc == 0, err
    assert json.loads(out)["m"] == 12


# ---------------------------------------------------------------------------
# Resume on other data; the data fingerprint
# ---------------------------------------------------------------------------
def test_train_killed_then_rerun_on_other_data_is_refused(tmp_path, files, capsys):
    p = files[0]
    out = tmp_path / "o"
    code = (
        "import os, signal, sys\n"
        "from stadv_ref.training import trainer\n"
        "from stadv_ref.cli import main\n"
        "run = trainer._Trainer.run_epoch\n"
        "def die(self, *a, **k):\n"
        "    if self.epoch == 1:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return run(self, *a, **k)\n"
        "trainer._Trainer.run_epoch = die\n"
        f"main(['train', 'nt', '--data', {str(p['A'])!r}, '--epochs', '2', '--hidden', '6', '--batch-size', '10',"
        f" '--out', {str(out)!r}, '--no-progress'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "nt.ckpt.npz").is_file()
    rc, _, err = _train(capsys, p["B"], out)
    assert rc == 1 and _one_line(err) and "other training data" in err and "--restart" in err
    assert not (out / "nt.npz").exists()
    rc, _, err = _train(capsys, p["A"], out)  # the same data: resumes and finishes
    assert rc == 0, err
    summary = json.loads((out / "train.json").read_text())
    X, y = files[2], files[3]
    assert summary["data_sha256"] == data_fingerprint(X, y) and summary["data"] == str(p["A"])
    assert stadv_ref.OneHiddenLayerNet.load(out / "nt.npz", with_metadata=True)[1]["data_sha256"] == \
        summary["data_sha256"]
    rc, _, err = _train(capsys, p["B"], out, "--restart")
    assert rc == 0, err
    assert json.loads((out / "train.json").read_text())["data_sha256"] == data_fingerprint(X[::-1], y[::-1])


def test_json_results_are_sealed(tmp_path, files, capsys):
    rc, _, err = _train(capsys, files[0]["A"], tmp_path / "o")
    assert rc == 0, err
    body = _io.read_sealed_json(tmp_path / "o" / "train.json", "result")
    assert body["library_version"] == stadv_ref.__version__ and body["format_version"] == 1


# ---------------------------------------------------------------------------
# Bound cache through the CLI
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_certify_with_a_damaged_bound_cache_warns_in_one_line_and_recomputes(tmp_path, files, capsys, damage):
    p = files[0]
    argv = ["certify", "--model", p["net"], "--data", p["A"], "--eps", 0, 0.05, "--method", "spectral",
            "--bound-cache", tmp_path / "bc", "--no-progress", "-q"]
    clear_bound_cache()
    assert _run(capsys, *argv, "--out", tmp_path / "c1")[0] == 0
    (cache,) = (tmp_path / "bc").glob("*.npz")
    cache.write_bytes(cache.read_bytes()[:100] if damage == "truncated" else b"")
    clear_bound_cache()
    rc, _, err = _run(capsys, *argv, "--out", tmp_path / "c2")
    assert rc == 0 and _one_line(err) and "warning" in err and str(cache) in err and "BadZipFile" not in err
    first, second = (json.loads((tmp_path / c / "certify.json").read_text()) for c in ("c1", "c2"))
    assert first["zero_one"] == second["zero_one"]
