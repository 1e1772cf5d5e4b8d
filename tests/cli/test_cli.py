"""End-to-end tests of the ``stadv`` command on tiny inputs (issue 8).

Every subcommand runs in-process through :func:`stadv_ref.cli.main` on tiny
networks and data written to ``tmp_path``; one test runs the installed
``stadv --help`` in a subprocess. The reproduction driver is run on a fake
MNIST directory (random images in IDX format) with a tiny configuration,
including resuming after a deleted output and after an interrupted step.
"""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stadv_ref
from stadv_ref._install import install_hint
from stadv_ref.cli import main
from stadv_ref.experiments import pipeline as rp

SUBCOMMANDS = ("train", "attack", "lower-bound", "certify", "bound", "reproduce", "audit", "import-onnx", "info")


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------
@pytest.fixture
def tiny(tmp_path):
    """A random 3-class 8x8 network, a binary one, and a data .npz that the 3-class net classifies partly right."""
    rng = np.random.default_rng(0)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((12, 64)) / 8, rng.standard_normal((3, 12)),
                                      c=np.array([0.3, 0.0, -0.3]))
    X = rng.uniform(0, 1, (30, 8, 8))
    y = net.predict(X)
    y[::5] = (y[::5] + 1) % 3  # a few misclassified points
    y[:3] = [0, 1, 2]  # every class present
    paths = {"net": tmp_path / "net.npz", "bin": tmp_path / "bin.npz", "data": tmp_path / "data.npz"}
    net.save(paths["net"])
    stadv_ref.OneHiddenLayerNet(net.W, net.V[0] - net.V[1]).save(paths["bin"])
    np.savez(paths["data"], X=X, y=y)
    return paths, net, X, y


def _write_idx(path, arr):
    arr = np.ascontiguousarray(arr)
    code = {np.uint8: 0x08}[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.tobytes())


@pytest.fixture
def fake_mnist(tmp_path):
    """A directory of MNIST-format IDX files: 300 training and 60 test random 28x28 images with labels 0..9."""
    d = tmp_path / "mnist"
    d.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 300), ("t10k", 60)):
        labels = np.arange(n) % 10
        protos = rng.uniform(0, 255, (10, 28, 28))
        imgs = np.clip(protos[labels] * 0.7 + rng.uniform(0, 80, (n, 28, 28)), 0, 255).astype(np.uint8)
        _write_idx(d / f"{split}-images-idx3-ubyte.gz", imgs)
        _write_idx(d / f"{split}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return d


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return len(lines) == 1 and "Traceback" not in err


# ---------------------------------------------------------------------------
# Help
# ---------------------------------------------------------------------------
def test_installed_console_script_help():
    exe = shutil.which("stadv") or str(Path(sys.executable).with_name("stadv"))
    if not Path(exe).exists():
        pytest.skip("the stadv console script is not installed")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for cmd in SUBCOMMANDS:
        assert cmd in res.stdout


def test_python_dash_m_runs_the_command():
    # `python -m stadv_ref` is the console script without the script; exit statuses pass through
    res = subprocess.run([sys.executable, "-m", "stadv_ref", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("usage: stadv")
    assert "RuntimeWarning" not in res.stderr
    bad = subprocess.run([sys.executable, "-m", "stadv_ref", "no-such-command"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_every_subcommand_has_help(cmd, capsys):
    rc, out, _ = _run(capsys, cmd, "--help")
    assert rc == 0
    assert out.startswith(f"usage: stadv {cmd}")


def test_no_command_prints_help_and_fails(capsys):
    rc, out, _ = _run(capsys)
    assert rc == 2 and "COMMAND" in out


# ---------------------------------------------------------------------------
# Subcommands on tiny inputs
# ---------------------------------------------------------------------------
def test_train_on_npz_data_writes_model_json_png(tmp_path, tiny, capsys):
    paths, _, X, y = tiny
    out = tmp_path / "tr"
    rc, stdout, err = _run(capsys, "train", "nt", "--data", paths["data"], "--epochs", 2, "--hidden", 8,
                           "--batch-size", 10, "--out", out, "--no-progress")
    assert rc == 0, err
    net, meta = stadv_ref.OneHiddenLayerNet.load(out / "nt.npz", with_metadata=True)
    assert net.m == 8 and net.n_classes == 3 and net.image_shape == (8, 8)
    summary = json.loads((out / "train.json").read_text())
    assert summary["n_train"] == 30 and len(summary["history"]["loss"]) == 2
    assert summary["history"]["loss"][-1] < summary["history"]["loss"][0]
    assert abs(meta["train_accuracy"] - float((net.predict(X) == y).mean())) < 1e-12
    assert (out / "train_history.png").stat().st_size > 1000
    assert not (out / "nt.ckpt.npz").exists()  # removed after a finished run


def test_train_resumes_after_interruption(tmp_path, tiny, capsys, monkeypatch):
    """An interrupted training run keeps its checkpoint; the rerun resumes and equals an uninterrupted run."""
    from stadv_ref.training import trainer as training

    paths = tiny[0]
    args = ["train", "fro", "--data", paths["data"], "--epochs", 3, "--hidden", 8, "--batch-size", 10,
            "--no-progress"]
    assert _run(capsys, *args, "--out", tmp_path / "ref")[0] == 0
    ref = stadv_ref.OneHiddenLayerNet.load(tmp_path / "ref" / "fro.npz")

    original = training._Trainer.run_epoch
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(training._Trainer, "run_epoch", flaky)
    rc, _, err = _run(capsys, *args, "--out", tmp_path / "int")
    assert rc == 130 and "interrupted" in err
    assert (tmp_path / "int" / "fro.ckpt.npz").is_file() and not (tmp_path / "int" / "fro.npz").exists()
    monkeypatch.setattr(training._Trainer, "run_epoch", original)
    rc, _, err = _run(capsys, *args, "--out", tmp_path / "int")
    assert rc == 0, err
    got = stadv_ref.OneHiddenLayerNet.load(tmp_path / "int" / "fro.npz")
    np.testing.assert_allclose(got.W, ref.W, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.V, ref.V, rtol=0, atol=1e-12)


def test_lower_bound_pairs_are_feasible(tmp_path, tiny, capsys):
    paths, net, _, _ = tiny
    out = tmp_path / "lb"
    rc, stdout, err = _run(capsys, "lower-bound", "--model", paths["net"], "--eps", 0.5, 2, "--max-iter", 2,
                           "--midpoints", 4, "--out", out, "--no-progress")
    assert rc == 0, err
    res = json.loads((out / "lower_bound.json").read_text())
    assert res["eps"] == [0.5, 2.0]
    with np.load(out / "pairs.npz") as f:
        for eps, exact in zip(res["eps"], res["exact_loss"]):
            x, r = f[f"eps{eps:g}_x"], f[f"eps{eps:g}_flow"]
            assert np.abs(x).max() <= 1 + 1e-12
            assert stadv_ref.smoothness_norm(r[None])[0] <= eps * (1 + 1e-9)
            # the certified value is the true change of the CW margin pair at this (x, r)
            k = res["eps"].index(eps)
            y0 = res["y"][k]
            xa = stadv_ref.warp(x[None], stadv_ref.tied(r[None]))
            change = (net(xa) - net(x[None]))[0]
            assert exact == pytest.approx(max(change[i] - change[y0] for i in range(3) if i != y0), abs=1e-9)
    for png in ("lower_bound.png", "samples.png", "convergence.png"):
        assert (out / png).stat().st_size > 1000
    assert "certified lower bound" in stdout


def test_attack_success_flags_mean_a_changed_prediction(tmp_path, tiny, capsys):
    paths, net, X, y = tiny
    out = tmp_path / "atk"
    rc, stdout, err = _run(capsys, "attack", "--model", paths["net"], "--data", paths["data"], "--n", 12,
                           "--tau", 0, 0.05, "--max-iter", 30, "--out", out, "--no-progress")
    assert rc == 0, err
    res = json.loads((out / "attack.json").read_text())
    assert res["tau"] == [0.0, 0.05] and res["n"] == 12
    assert abs(res["benign_accuracy"] - float((net.predict(X[:12]) == y[:12]).mean())) < 1e-12
    with np.load(out / "adversarial_tau0.05.npz") as f:
        pred = net.predict(f["x_adv"])
        assert np.array_equal(f["success"], pred != f["y"])
        np.testing.assert_allclose(f["x_adv"], stadv_ref.warp(X[:12], f["flow"]), atol=1e-12)
    assert 0 <= res["success_rate"][1] <= res["success_rate"][0] + 1e-12 <= 1 + 1e-12
    assert (out / "attack.png").stat().st_size > 1000


def test_certify_zero_one_loss(tmp_path, tiny, capsys):
    pytest.importorskip("stadv_ref.upper_bounds.certification")
    paths, net, X, y = tiny
    out = tmp_path / "cert"
    rc, stdout, err = _run(capsys, "certify", "--model", paths["net"], "--data", paths["data"], "--eps", 0, 0.01,
                           0.1, "--method", "spectral", "sdp", "--out", out, "--bound-cache", tmp_path / "bc",
                           "--no-progress")
    assert rc == 0, err
    assert len(list((tmp_path / "bc").glob("*.npz"))) == 2  # one per method, reused by later runs
    res = json.loads((out / "certify.json").read_text())
    clean_err = float((net.predict(X) != y).mean())
    for m in ("spectral", "sdp"):
        z = res["zero_one"][m]
        assert abs(z[0] - clean_err) < 1e-12  # eps = 0: certified iff correctly classified
        assert all(a <= b + 1e-12 for a, b in zip(z, z[1:]))  # monotone in eps
    assert (out / "certify.png").stat().st_size > 1000


def test_bound_binary_model(tmp_path, tiny, capsys):
    pytest.importorskip("stadv_ref.upper_bounds")
    paths = tiny[0]
    out = tmp_path / "b"
    rc, stdout, err = _run(capsys, "bound", "--model", paths["bin"], "--eps", 0.1, 1, "--method", "spectral",
                           "paper-spectral", "sdp", "--gap-tol", 1e-4, "--out", out)
    assert rc == 0, err
    rows = json.loads((out / "bound.json").read_text())["bounds"]
    val = {(r["method"], r["eps"]): r for r in rows}
    assert val[("spectral", 1.0)]["value"] == pytest.approx(10 * val[("spectral", 0.1)]["value"])
    assert val[("spectral", 1.0)]["sound"] and not val[("paper-spectral", 1.0)]["sound"]
    assert val[("sdp", 1.0)]["sound"] and val[("sdp", 1.0)]["gap"] <= 1e-4


def test_bound_multiclass_every_pair_and_one_pair(tmp_path, tiny, capsys):
    pytest.importorskip("stadv_ref.upper_bounds")
    paths = tiny[0]
    rc, _, err = _run(capsys, "bound", "--model", paths["net"], "--eps", 0.5, "--method", "spectral", "--out",
                      tmp_path / "all")
    assert rc == 0, err
    row = json.loads((tmp_path / "all" / "bound.json").read_text())["bounds"][0]
    table = np.array(row["pair_values"])
    assert table.shape == (3, 3) and np.allclose(table, table.T) and row["value"] == pytest.approx(table.max())
    rc, _, err = _run(capsys, "bound", "--model", paths["net"], "--eps", 0.5, "--method", "spectral", "--classes",
                      2, 0, "--out", tmp_path / "one")
    assert rc == 0, err
    one = json.loads((tmp_path / "one" / "bound.json").read_text())["bounds"][0]["value"]
    assert one == pytest.approx(table[2, 0])


def test_info_prints_model_summary(tiny, capsys):
    rc, out, _ = _run(capsys, "info", "--model", tiny[0]["net"])
    assert rc == 0
    info = json.loads(out)
    assert info["m"] == 12 and info["d"] == 64 and info["classes"] == 3


# ---------------------------------------------------------------------------
# Model import
# ---------------------------------------------------------------------------
def test_npz_from_plain_arrays_is_a_model(tmp_path, capsys):
    """A network trained elsewhere, saved with numpy only (W, v, b, c), is usable by every command."""
    rng = np.random.default_rng(3)
    W, b, V, c = rng.standard_normal((6, 36)), rng.standard_normal(6), rng.standard_normal((4, 6)), np.zeros(4)
    np.savez(tmp_path / "ext.npz", W=W, v=V, b=b, c=c)
    rc, out, _ = _run(capsys, "info", "--model", tmp_path / "ext.npz")
    assert rc == 0 and json.loads(out)["image_shape"] == [6, 6]


def _onnx_model(path, W, b, V, c, matmul=False):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    f32 = np.float32
    if matmul:
        inits = [numpy_helper.from_array(W.T.astype(f32), "W"), numpy_helper.from_array(b.astype(f32), "b"),
                 numpy_helper.from_array(V.T.astype(f32), "V"), numpy_helper.from_array(c.astype(f32), "c")]
        nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["h0"]),
                 helper.make_node("Add", ["h0", "b"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("MatMul", ["r", "V"], ["y0"]), helper.make_node("Add", ["y0", "c"], ["y"])]
    else:  # what torch.onnx.export writes for Flatten-Linear-ReLU-Linear
        inits = [numpy_helper.from_array(W.astype(f32), "W"), numpy_helper.from_array(b.astype(f32), "b"),
                 numpy_helper.from_array(V.astype(f32), "V"), numpy_helper.from_array(c.astype(f32), "c")]
        nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "W", "b"], ["h"], transB=1),
                 helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "V", "c"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, V.shape[0]])], inits)
    model = helper.make_model(graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.mark.parametrize("matmul", [False, True])
def test_import_onnx_matches_the_graph(tmp_path, capsys, matmul):
    rng = np.random.default_rng(4)
    W, b = rng.standard_normal((7, 20)), rng.standard_normal(7)
    V, c = rng.standard_normal((3, 7)), rng.standard_normal(3)
    _onnx_model(tmp_path / "m.onnx", W, b, V, c, matmul)
    rc, _, err = _run(capsys, "import-onnx", tmp_path / "m.onnx", tmp_path / "m.npz")
    assert rc == 0, err
    net = stadv_ref.OneHiddenLayerNet.load(tmp_path / "m.npz")
    assert net.image_shape == (4, 5)  # from the graph input (1, 1, 4, 5)
    x = rng.uniform(0, 1, (5, 4, 5))
    ref = np.maximum(x.reshape(5, -1) @ W.T + b, 0) @ V.T + c
    np.testing.assert_allclose(net(x), ref, rtol=1e-5, atol=1e-5)


def test_import_onnx_without_onnx_gives_install_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes "import onnx" raise ImportError
    (tmp_path / "m.onnx").write_bytes(b"not really")
    rc, _, err = _run(capsys, "import-onnx", tmp_path / "m.onnx", tmp_path / "m.npz")
    assert rc == 1 and _one_line_error(err)
    assert install_hint("onnx") in err  # the pip command for this installation


def test_import_onnx_rejects_other_graphs(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), str(tmp_path / "s.onnx"))
    rc, _, err = _run(capsys, "import-onnx", tmp_path / "s.onnx", tmp_path / "s.npz")
    assert rc == 1 and _one_line_error(err) and "Sigmoid" in err


# ---------------------------------------------------------------------------
# Error paths: one line on stderr, non-zero status, never a traceback
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv, code, needle", [
    (["lower-bound", "--model", "{tmp}/missing.npz", "--eps", "1"], 1, "does not exist"),
    (["lower-bound", "--model", "{net}", "--eps", "-1"], 2, "--eps must be finite and >= 0"),
    (["lower-bound", "--model", "{net}", "--eps", "nan"], 2, "--eps must be finite"),
    (["certify", "--model", "{net}", "--data", "{data}", "--eps", "abc"], 2, "--eps must be a number"),
    (["lower-bound", "--model", "{net}", "--eps", "1", "--backend", "nosuch"], 1, "unknown backend 'nosuch'"),
    (["train", "nosuch", "--data", "{data}"], 1, "unknown variant 'nosuch'"),
    (["attack", "--model", "{net}", "--data", "{tmp}/missing.npz"], 1, "does not exist"),
    (["attack", "--model", "{net}", "--data", "{bad}"], 1, "lacks the arrays ['y']"),
    (["attack", "--model", "{net}", "--data", "{wrongshape}"], 1, "the model expects 8x8"),
    (["attack", "--model", "{bin}", "--data", "{data}"], 1, "needs a multi-class model"),
    (["certify", "--model", "{net}", "--data", "{data}", "--eps", "1", "--input-range", "1", "0"], 1, "LO < HI"),
    (["lower-bound", "--model", "{data}", "--eps", "1"], 1, "lacks the arrays"),
    (["reproduce", "--quick", "--full"], 2, "not allowed with argument"),
    (["audit", "--only", "nosuch"], 2, "invalid choice"),
    (["attack", "--model", "{net}", "--data", "{data}", "--n", "0"], 2, "--n must be >= 1"),
])
def test_error_paths(tmp_path, tiny, capsys, argv, code, needle):
    paths = tiny[0]
    np.savez(tmp_path / "bad.npz", X=np.zeros((3, 8, 8)))
    np.savez(tmp_path / "wrongshape.npz", X=np.zeros((3, 5, 5)), y=np.zeros(3, int))
    subs = dict(tmp=tmp_path, net=paths["net"], data=paths["data"], bin=paths["bin"], bad=tmp_path / "bad.npz",
                wrongshape=tmp_path / "wrongshape.npz")
    rc, out, err = _run(capsys, *[a.format(**subs) for a in argv])
    assert rc == code
    assert _one_line_error(err), err
    assert needle in err


def test_debug_env_var_shows_the_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STADV_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["info", "--model", str(tmp_path / "missing.npz")])


# ---------------------------------------------------------------------------
# Reproduction: tiny configuration on fake MNIST, resume
# ---------------------------------------------------------------------------
def _tiny_config():
    return rp.Config(mode="test", n_train=300, n_test=20, epochs={"nt": 1, "fro": 1}, hidden_lower=8, hidden_upper=8,
                     lower_variants=("nt", "rand"), lower_eps=(0.5, 2.0), lower_max_iter=1, lower_n=2,
                     sample_eps=(0.5,), cert_variants=("nt",), cert_eps=(0.0, 0.05),
                     paper_methods=("paper-spectral", "spectral"), sound_methods=("spectral", "frobenius"),
                     tight_variants=("nt",), tight_method="aabb",
                     attack_variants=("nt", "fro"), taus=(0.05,), n_attack=8, attack_max_iter=5,
                     local_variants=("nt",), local_n=8, local_eps_extra=(0.5,), local_stop_broken=1.0, local_restarts=2,
                     local_steps=5, local_max_classes=2)


def _markers(out):
    return {s: (out / s / f"{s}.json").stat().st_mtime_ns for s in rp.STEP_NAMES if (out / s / f"{s}.json").is_file()}


def test_reproduce_runs_every_step_then_resumes(tmp_path, fake_mnist, monkeypatch):
    pytest.importorskip("stadv_ref.upper_bounds.certification")
    out = tmp_path / "repro"
    cfg = _tiny_config()
    status = rp.reproduce(out, cfg, data_dir=fake_mnist, progress=False, log=None)
    assert list(status) == list(rp.STEP_NAMES) and all(v != "skipped" for v in status.values())
    for f in ("fig2/fig2_lower_bound.png", "fig3/fig3_samples_nt.png", "fig4/fig4_convergence.png",
              "fig5/fig5_certification.png", "fig11/fig11_certification.png", "local/local_certification.png",
              "fig6/fig6_stadv.png", "report.md"):
        assert (out / f).stat().st_size > 500, f
    report = (out / "report.md").read_text()
    for heading in ("Figure 2", "Figure 4", "Figure 5", "Figure 11", "Figure 6", "paper's claim"):
        assert heading in report
    spot = json.loads((out / "fig11" / "fig11.json").read_text())["summary"]["spot_check"]
    assert spot["network"] == "nt" and spot["points"] and not any(p["flipped"] for p in spot["points"])
    assert "a certified point cannot be attacked" in report and "median margin" in report
    before = _markers(out)

    # 1) nothing missing: every step is skipped
    status = rp.reproduce(out, cfg, data_dir=fake_mnist, progress=False, log=None)
    assert set(status.values()) == {"skipped"}
    assert _markers(out) == before

    # 2) one output deleted: only that step and the report (which reads it) run again
    (out / "fig4" / "fig4.json").unlink()
    status = rp.reproduce(out, cfg, data_dir=fake_mnist, progress=False, log=None)
    ran = {k for k, v in status.items() if v != "skipped"}
    assert ran == {"fig4", "report"}
    after = _markers(out)
    assert all(after[s] == before[s] for s in rp.STEP_NAMES if s not in ran)

    # export for the docs: flat PNGs, links in report.md rewritten to them
    files = rp.export_docs(out, tmp_path / "docs")
    text = (tmp_path / "docs" / "report.md").read_text()
    assert "(fig2_lower_bound.png)" in text and "(fig2/" not in text
    assert all(Path(f).is_file() for f in files) and len(files) >= 8
    summaries = json.loads((tmp_path / "docs" / "summaries.json").read_text())
    assert set(summaries) == set(rp.STEP_NAMES)
    assert summaries["fig6"]["summary"] == json.loads((out / "fig6" / "fig6.json").read_text())["summary"]
    jobs = json.loads((tmp_path / "docs" / "jobs.json").read_text())
    stored = sorted(p.stem for p in (out / "fig6" / "jobs").glob("*.json"))
    assert sorted(jobs["jobs"]["fig6"]) == stored == sorted(jobs["fig6_finished_jobs"]) and stored
    assert all(t["cpu_seconds"] >= 0 for t in jobs["jobs"]["fig6"].values())
    damaged = out / "fig6" / "jobs" / f"{stored[0]}.json"
    keep = damaged.read_text()
    damaged.write_text(keep.replace('"seconds"', '"secondz"', 1))
    with pytest.raises(ValueError, match="job result"):
        rp.export_docs(out, tmp_path / "docs2")
    damaged.write_text(keep)

    # 3) other settings: the affected steps are recomputed
    status = rp.reproduce(out, rp.Config(**{**cfg.__dict__, "taus": (0.0,)}), data_dir=fake_mnist,
                          progress=False, log=None)
    assert {k for k, v in status.items() if v != "skipped"} == {"fig6", "report"}


def test_reproduce_interrupted_step_is_redone_and_nothing_else(tmp_path, fake_mnist, monkeypatch):
    pytest.importorskip("stadv_ref.upper_bounds.certification")
    out = tmp_path / "repro"
    cfg = _tiny_config()
    step = next(s for s in rp.STEPS if s.name == "fig5")
    real = step.run

    def boom(run):
        real(run)  # writes its figure ...
        raise RuntimeError("simulated crash before the marker")  # ... but dies before finishing

    monkeypatch.setattr(step, "run", boom)
    with pytest.raises(RuntimeError):
        rp.reproduce(out, cfg, data_dir=fake_mnist, progress=False, log=None)
    done = set(_markers(out))
    assert {"models", "fig2", "fig3", "fig4"} <= done and "fig5" not in done
    monkeypatch.setattr(step, "run", real)
    status = rp.reproduce(out, cfg, data_dir=fake_mnist, progress=False, log=None)
    assert {k for k, v in status.items() if v != "skipped"} == {"fig5", "fig11", "local", "fig6", "report"}
    assert not list(out.rglob("*.part*"))  # no half-written files left behind


def test_reproduce_cli_uses_the_preset_and_resumes(tmp_path, fake_mnist, capsys, monkeypatch):
    monkeypatch.setattr(rp, "quick_config", lambda seed=0: _tiny_config())
    out = tmp_path / "r"
    args = ["reproduce", "--quick", "--out", out, "--data-dir", fake_mnist, "--only", "fig4", "--no-progress"]
    rc, stdout, err = _run(capsys, *args)
    assert rc == 0, err
    assert "[fig2]" in stdout and "[fig4] done" in stdout and (out / "fig4" / "fig4_convergence.png").is_file()
    assert f"fig4 -> {out / 'fig4'}: fig4.json, fig4_convergence.png" in stdout and "report ->" not in stdout
    rc, stdout, _ = _run(capsys, *args)
    assert rc == 0 and "[fig4] outputs exist, skipped" in stdout and "ran 0 step(s)" in stdout


def test_reproduce_missing_data_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rp, "quick_config", lambda seed=0: _tiny_config())
    rc, _, err = _run(capsys, "reproduce", "--out", tmp_path / "r", "--data-dir", tmp_path / "nowhere",
                      "--no-progress", "-q")
    assert rc == 1 and _one_line_error(err) and "not found" in err


def test_presets_match_the_paper_scale():
    q, f = rp.quick_config(), rp.full_config()
    assert f.n_train == 60000 and f.n_test == 10000 and f.n_attack == 10000
    assert (f.hidden_lower, f.hidden_upper) == (512, 500)  # Sections 3 and 4
    assert f.lower_eps[-1] == 7.84 and f.cert_eps[-1] == 0.1 and f.taus == (0.0, 0.025, 0.05, 0.075, 0.1)
    assert set(f.tight_variants) == set(f.cert_variants) and f.cert_gap_tol <= 1e-5
    assert set(q.cert_variants) == set(f.cert_variants) and set(q.attack_variants) == set(f.attack_variants)
    assert q.n_train <= 5000 and len(q.taus) < len(f.taus) and len(q.lower_eps) < len(f.lower_eps)
