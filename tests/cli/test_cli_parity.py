"""The command line matches the API and has no dead options (issue #20, deliverable 3).

* ``--backend`` on every command; options a command ignored (``attack --seed``, ``info --out``,
  ``import-onnx --seed/--out``) are gone; ``train --split`` is honoured;
* ``--method`` lists come from the library (``certify``: :data:`CERTIFY_METHODS`, with the per-image
  ``local`` certificate, ``--flow``, ``--tight``; ``bound``: every method but ``linear``);
* ``attack --target --batch-size`` and a progress bar that moves once per batch;
* one CSV row per image beside ``attack.json`` and ``certify.json``;
* a failed command leaves no output folder behind; ``stadv info`` shows the thread configuration.
"""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import stadv_ref
from stadv_ref import _io
from stadv_ref.cli import build_parser, main
from stadv_ref.upper_bounds import CERTIFY_METHODS, METHODS

COMMANDS = [["train"], ["attack"], ["lower-bound"], ["certify"], ["bound"], ["reproduce"], ["audit"], ["import-onnx"],
            ["info"], ["data", "download"], ["data", "check"]]


@pytest.fixture
def tiny(tmp_path):
    """A 3-class 8x8 network and 12 images it partly classifies right."""
    rng = np.random.default_rng(0)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((12, 64)) / 8, rng.standard_normal((3, 12)),
                                      c=np.array([0.3, 0.0, -0.3]))
    X = rng.uniform(0, 1, (12, 8, 8))
    y = net.predict(X)
    y[::5] = (y[::5] + 1) % 3
    y[:3] = [0, 1, 2]
    net.save(tmp_path / "net.npz")
    np.savez(tmp_path / "data.npz", X=X, y=y)
    return tmp_path / "net.npz", tmp_path / "data.npz", net, X, y


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return len(lines) == 1 and "Traceback" not in err


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _options(*command):
    parser = build_parser()
    for word in command:
        parser = next(a for a in parser._actions if a.dest in ("command", "data_command")).choices[word]
    return {s: a for a in parser._actions for s in a.option_strings}


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_takes_backend(command, capsys):
    assert "--backend" in _options(*command)
    rc, out, _ = _run(capsys, *command, "--help")
    assert rc == 0 and "--backend" in out


@pytest.mark.parametrize("command, dead", [
    (["attack"], "--seed"), (["info"], "--out"), (["info"], "--seed"), (["info"], "--quiet"),
    (["import-onnx"], "--seed"), (["import-onnx"], "--out"), (["data", "check"], "--out")])
def test_options_a_command_would_ignore_are_not_offered(command, dead):
    assert dead not in _options(*command)


def test_method_choices_come_from_the_library():
    assert tuple(_options("certify")["--method"].choices) == CERTIFY_METHODS
    assert tuple(_options("bound")["--method"].choices) == tuple(m for m in METHODS if m != "linear")
    assert "aabb" in _options("bound")["--method"].choices and "local" in CERTIFY_METHODS


@pytest.mark.parametrize("command", ["certify", "bound"])
def test_linear_is_a_usage_error_for_a_network(tiny, capsys, command):
    net, data = tiny[:2]
    rc, _, err = _run(capsys, command, "--model", net, "--data", data, "--eps", 0.1, "--method", "linear")
    assert rc == 2 and _one_line(err) and "invalid choice: 'linear'" in err


def test_bound_aabb_runs(tiny, capsys, tmp_path):
    rc, _, err = _run(capsys, "bound", "--model", tiny[0], "--eps", 0.1, "--method", "aabb", "spectral", "--out",
                      tmp_path / "b", "-q")
    assert rc == 0, err
    rows = json.loads((tmp_path / "b" / "bound.json").read_text())["bounds"]
    assert [r["method"] for r in rows] == ["aabb", "spectral"] and all(r["sound"] for r in rows)


# ---------------------------------------------------------------------------
# certify: the per-image certificate and the per-image CSV
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("flow", ["tied", "untied"])
def test_certify_local_and_its_csv(tiny, capsys, tmp_path, flow):
    net_path, data, net, X, y = tiny
    methods = ["local"] if flow == "untied" else ["spectral", "local"]
    rc, stdout, err = _run(capsys, "certify", "--model", net_path, "--data", data, "--eps", 0, 0.05, "--method",
                           *methods, "--flow", flow, "--offset", 2, "--out", tmp_path / "c", "--no-progress")
    assert rc == 0, err
    body = _io.read_sealed_json(tmp_path / "c" / "certify.json", "result")
    assert body["flow"] == flow and body["tightness"] == "fast" and "pair_bounds" not in body or \
        "local" not in body["pair_bounds"]
    rows = _csv(tmp_path / "c" / "certify.csv")
    assert body["per_image"]["sha256"] == _io.sha256_file(tmp_path / "c" / "certify.csv")
    assert list(rows[0]) == body["per_image"]["columns"]
    assert len(rows) == len(methods) * 2 * 10
    pred = net.predict(X[2:])
    for m in methods:
        for k, eps in enumerate((0.0, 0.05)):
            sel = [r for r in rows if r["method"] == m and float(r["eps"]) == eps]
            assert [int(r["index"]) for r in sel] == list(range(2, 12))
            assert [int(r["label"]) for r in sel] == list(y[2:]) and [int(r["prediction"]) for r in sel] == list(pred)
            cert = [r["certified"] == "true" for r in sel]
            assert sum(cert) == body["certified_count"][m][k]
            assert cert == [float(r["bound"]) < 0 for r in sel]  # certified iff the bound is negative
            if eps == 0:
                assert cert == list(pred == y[2:])
            assert all((r["radius"] == "") == (m == "local") for r in sel)


def test_certify_option_errors_leave_no_folder(tiny, capsys, tmp_path, monkeypatch):
    net, data = tiny[:2]
    base = ["certify", "--model", net, "--data", data, "--eps", 0.1, "--out", tmp_path / "new" / "c"]
    for extra, needle in ((["--method", "sdp", "local", "--flow", "untied"], "--flow untied needs --method local"),
                          (["--method", "spectral", "--tight"], "--tight is an option of --method local")):
        rc, _, err = _run(capsys, *base, *extra)
        assert rc == 1 and _one_line(err) and needle in err, err
        assert not (tmp_path / "new").exists()

    def not_yet(*a, **k):
        raise NotImplementedError("tightness='tight' is not implemented yet")

    monkeypatch.setattr("stadv_ref.upper_bounds.certification.local_pair_bounds", not_yet)
    rc, _, err = _run(capsys, *base, "--method", "local", "--tight", "--no-progress")
    assert rc == 1 and _one_line(err) and "--tight" in err and "not implemented" in err
    assert not (tmp_path / "new").exists()  # created for the results, removed when the command failed


def test_default_output_folder_is_in_the_current_directory_and_removed_on_failure(tiny, capsys, tmp_path):
    net, data = tiny[:2]
    rc, _, err = _run(capsys, "certify", "--model", net, "--data", data, "--eps", 1, "--input-range", -1, -2)
    assert rc == 1 and not Path("stadv-out").exists()
    rc, _, err = _run(capsys, "attack", "--model", net, "--data", tmp_path / "missing.npz")
    assert rc == 1 and not Path("stadv-out").exists()
    rc, _, err = _run(capsys, "certify", "--model", net, "--data", data, "--eps", 0.1, "--method", "spectral",
                      "--no-progress", "-q")
    assert rc == 0 and Path.cwd() == tmp_path and (tmp_path / "stadv-out" / "certify" / "certify.csv").is_file()


def test_an_existing_output_folder_is_kept_when_a_command_fails(tiny, capsys, tmp_path, monkeypatch):
    net, data = tiny[:2]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")

    def boom(*a, **k):
        raise ValueError("solver failed")

    monkeypatch.setattr("stadv_ref.cli.commands.certify_curve", boom)
    rc, _, err = _run(capsys, "certify", "--model", net, "--data", data, "--eps", 0.1, "--out", tmp_path / "mine")
    assert rc == 1 and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    rc, _, err = _run(capsys, "certify", "--model", net, "--data", data, "--eps", 0.1, "--out", tmp_path / "n" / "c")
    assert rc == 1 and "solver failed" in err and not (tmp_path / "n").exists()


# ---------------------------------------------------------------------------
# attack: --target, --batch-size, progress per batch, CSV
# ---------------------------------------------------------------------------
class _Bar:
    """A stand-in for tqdm that records its updates."""

    made = []

    def __init__(self, *a, total=None, disable=False, **k):
        self.total, self.disable, self.updates = total, disable, []
        _Bar.made.append(self)

    def update(self, n=1):
        self.updates.append(n)

    def __getattr__(self, name):  # close, set_postfix, ...
        return lambda *a, **k: None


def test_attack_target_batch_size_progress_and_csv(tiny, capsys, tmp_path, monkeypatch):
    net_path, data, net, X, y = tiny
    _Bar.made = []
    monkeypatch.setattr("stadv_ref.attacks.engine.tqdm", _Bar)
    rc, stdout, err = _run(capsys, "attack", "--model", net_path, "--data", data, "--tau", 0, 0.05, "--target", 1,
                           "--batch-size", 3, "--max-iter", 20, "--out", tmp_path / "a")
    assert rc == 0, err
    keep = np.flatnonzero(y != 1)
    bars = [b for b in _Bar.made if not b.disable]
    assert len(bars) == 2  # one per tau, each moving once per batch of at most 3 images
    assert all(sum(b.updates) == len(keep) and len(b.updates) >= -(-len(keep) // 3) and max(b.updates) <= 3
               for b in bars)
    body = _io.read_sealed_json(tmp_path / "a" / "attack.json", "result")
    assert body["target"] == 1 and body["skipped_target_class"] == int((y == 1).sum()) and body["n"] == len(keep)
    assert body["options"]["batch_size"] == 3 and "towards class 1" in stdout
    rows = _csv(tmp_path / "a" / "attack.csv")
    assert len(rows) == 2 * len(keep) and list(rows[0]) == body["per_image"]["columns"]
    with np.load(tmp_path / "a" / "adversarial_tau0.05.npz") as f:
        assert list(f["index"]) == list(keep) and np.array_equal(f["success"], f["pred"] == 1)
        last = [r for r in rows if float(r["tau"]) == 0.05]
        assert [int(r["index"]) for r in last] == list(keep) and all(r["target"] == "1" for r in last)
        assert [r["success"] == "true" for r in last] == list(f["success"])
        assert [int(r["adv_prediction"]) for r in last] == list(f["pred"])
        np.testing.assert_array_equal([float(r["flow_norm"]) for r in last], f["flow_norm"])  # exact (repr)
        adv_pred = f["pred"]
    pred = net.predict(X[keep])
    assert [int(r["prediction"]) for r in last] == list(pred)
    assert body["adv_accuracy"][1] == pytest.approx(np.mean((adv_pred == y[keep]) & (pred == y[keep])))


def test_attack_target_errors(tiny, capsys, tmp_path):
    net, data = tiny[:2]
    rc, _, err = _run(capsys, "attack", "--model", net, "--data", data, "--target", 3, "--out", tmp_path / "a")
    assert rc == 1 and _one_line(err) and "--target must be a class of the model" in err
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------------------
# train --split, info
# ---------------------------------------------------------------------------
def _idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def test_train_split_is_honoured(tmp_path, capsys):
    d = tmp_path / "mnist"
    d.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 40), ("t10k", 30)):
        _idx(d / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(d / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    assert _options("train")["--split"].default == "train"
    args = ["train", "nt", "--data-dir", d, "--epochs", 1, "--hidden", 4, "--batch-size", 10, "--no-progress"]
    rc, out, err = _run(capsys, *args, "--out", tmp_path / "tr")
    assert rc == 0, err
    summary = json.loads((tmp_path / "tr" / "train.json").read_text())
    assert summary["n_train"] == 40 and summary["data"].startswith("MNIST train") and summary["test_data"]
    rc, out, err = _run(capsys, *args, "--split", "test", "--out", tmp_path / "te")
    assert rc == 0, err
    summary = json.loads((tmp_path / "te" / "train.json").read_text())
    assert summary["n_train"] == 30 and summary["data"].startswith("MNIST test") and summary["test_data"] is None
    assert "test_accuracy" not in summary and "no held-out accuracy" in out


def test_info_shows_the_thread_configuration(tiny, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    rc, out, err = _run(capsys, "info")
    assert rc == 0, err
    env = json.loads(out)["environment"]
    threads = env["threads"]
    assert threads["env"]["OMP_NUM_THREADS"] == "1" and threads["env"]["NUMBA_NUM_THREADS"] is None
    assert set(threads["env"]) >= {"NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}
    assert threads["cpus"] >= 1 and isinstance(threads["blas"], list)
    assert all({"library", "threads"} <= set(b) for b in threads["blas"])
    if env["versions"]["numba"]:
        assert threads["numba_threads"] >= 1  # info imports Numba to show its pool
    assert env["library_version"] == stadv_ref.__version__ and "numpy" in env["available_backends"]
    rc, out, _ = _run(capsys, "info", "--model", tiny[0])
    info = json.loads(out)
    assert rc == 0 and info["m"] == 12 and info["environment"]["threads"]["cpus"] == threads["cpus"]


def test_reproduce_job_options(tmp_path, capsys, monkeypatch):
    """``--workers`` and ``--dask-scheduler`` (issue #15): checked by name, exclusive, and a missing ``[dask]``
    extra is one clear line that names it (and no output folder is left)."""
    args = build_parser().parse_args(["reproduce", "--workers", "3", "--out", str(tmp_path / "a")])
    assert args.workers == 3 and args.dask_scheduler is None
    args = build_parser().parse_args(["reproduce", "--dask-scheduler", "tcp://10.0.0.1:8786"])
    assert args.dask_scheduler == "tcp://10.0.0.1:8786" and args.workers is None
    for bad in (["--workers", "0"], ["--workers", "2", "--dask-scheduler", "tcp://x:1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["reproduce", *bad])
        assert ("--workers" in capsys.readouterr().err)
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)  # as if the extra were not installed
    out = tmp_path / "dask"
    assert main(["reproduce", "--quick", "--dask-scheduler", "tcp://127.0.0.1:1", "--out", str(out),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "[dask]" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_reproduce_report_only_writes_the_finished_steps_and_runs_nothing(tmp_path, capsys, monkeypatch):
    """``--report-only`` (a stopped long run): report.md of the finished steps, naming the others; nothing runs."""
    from stadv_ref.experiments import pipeline as rp

    out = tmp_path / "empty"
    assert main(["reproduce", "--report-only", "--out", str(out)]) == 1
    assert "holds no finished step" in capsys.readouterr().err and not out.exists()
    cfg = rp.quick_config()
    run = rp._Run(tmp_path / "r", cfg, None, None, False)
    models = rp.STEPS[0]
    rp.atomic_write_sealed_json(run.dir("models") / "models.json", {
        "step": "models", "complete": True, "config": cfg.key(models.config_fields),
        "summary": {"models": [], "cache_dir": "somewhere"}, "outputs": {}}, rp.MARKER_VERSION)
    monkeypatch.setattr(rp, "reproduce", lambda *a, **k: pytest.fail("--report-only must not run steps"))
    assert main(["reproduce", "--report-only", "--out", str(tmp_path / "r")]) == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## Networks" in report and "Figure 6" not in report
    assert report.split("**Not computed**")[1].split("\n")[0].endswith("fig2, fig3, fig4, fig5, fig11, local, fig6.")
    assert main(["reproduce", "--report-only", "--only", "fig2", "--out", str(tmp_path / "r")]) == 1
    assert "takes no --only" in capsys.readouterr().err
