"""Same seed, same bits (issue #19 item 3 / deliverable 4) and resuming only what may be resumed (item 4).

For every training variant on a tiny problem (300 random 6x6 images, 3 classes, 2 epochs):
two trainings in one process, one in another process (a subprocess), and one killed with
``SIGKILL`` in the middle of its second epoch and resumed from its checkpoint all give the
same weights bit for bit (``np.array_equal``), and so do the SDP bounds of a trained network.
A checkpoint is resumed only with the data, settings and library version it was written
with: another ``--data`` (the issue's case: it silently continued), other settings, a damaged
file or counters beyond the settings are refused by name; ``load_or_train`` warns and retrains.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from stadv_ref import _io
from stadv_ref.training import VARIANTS, load_or_train, train
from stadv_ref.training import cache as cache_module
from stadv_ref.training.checkpoint import CheckpointMismatch, blas_threads, data_fingerprint
from stadv_ref.upper_bounds import class_pair_bounds

REPO = Path(__file__).resolve().parents[2]
TRAINED = [v for v in VARIANTS if v != "rand"]

# the problem, the trainings and the weights' names, shared with the subprocesses (as source)
SETUP = textwrap.dedent('''
    import numpy as np
    from stadv_ref.training import train

    def problem():
        rng = np.random.default_rng(7)
        return rng.uniform(0, 1, (300, 6, 6)), rng.integers(0, 3, 300)

    OPTS = dict(hidden=8, epochs=2, batch_size=50, seed=3, progress=False, n_classes=3, image_shape=(6, 6))
    FAST = {"at": dict(at_pool_size=30, at_max_iter=4, at_every=1), "sdp": dict(sdp_pairs_per_step=2),
            "stn": dict(stn_hidden=6)}

    def tiny_train(variant, **kw):
        X, y = problem()
        return train(variant, X, y, return_result=True, **{**OPTS, **FAST.get(variant, {}), **kw})

    def weights(res):
        out = {n: getattr(res.net, n) for n in ("W", "V", "b", "c")}
        out.update({"extra_" + k: v for k, v in res.extras.items()})
        out.update({"history_" + k: v for k, v in res.history.items()})
        return out
''')
_ns = {}
exec(SETUP, _ns)  # the same definitions in this process
tiny_train, weights, problem = _ns["tiny_train"], _ns["weights"], _ns["problem"]


def _python(code, **kw):
    """Run ``code`` (after :data:`SETUP`) in a fresh interpreter; the completed process."""
    env = dict(os.environ, PYTHONHASHSEED="12345")  # another hash seed: set/dict order must not matter
    return subprocess.run([sys.executable, "-c", SETUP + textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, **kw)


def _assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs (max |diff| {np.max(np.abs(a[k] - b[k])):.3g})"


@pytest.fixture(scope="module")
def reference():
    """Every variant trained once in this process, and the SDP bounds of the trained ``nt`` net."""
    res = {v: weights(tiny_train(v)) for v in VARIANTS}
    net = tiny_train("nt").net
    res["bounds"] = class_pair_bounds(net, "sdp", gap_tol=1e-4, progress=False)[0]
    return res


@pytest.fixture(scope="module")
def other_process(tmp_path_factory):
    """The same trainings and bounds in a subprocess (``.npz`` per variant)."""
    out = tmp_path_factory.mktemp("subprocess")
    proc = _python(f'''
        from stadv_ref.training import VARIANTS
        from stadv_ref.upper_bounds import class_pair_bounds
        for v in VARIANTS:
            np.savez({str(out)!r} + f"/{{v}}.npz", **weights(tiny_train(v)))
        b = class_pair_bounds(tiny_train("nt").net, "sdp", gap_tol=1e-4, progress=False)[0]
        np.save({str(out)!r} + "/bounds.npy", b)
    ''')
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_weights_in_one_process(reference, variant):
    _assert_same(weights(tiny_train(variant)), reference[variant])


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_weights_in_another_process(reference, other_process, variant):
    with np.load(other_process / f"{variant}.npz") as f:
        _assert_same(dict(f), reference[variant])


def test_same_network_same_sdp_bounds_in_another_process(reference, other_process):
    assert np.array_equal(np.load(other_process / "bounds.npy"), reference["bounds"])


@pytest.mark.parametrize("variant", TRAINED)
def test_stopped_after_epoch_one_then_resumed_equals_uninterrupted(tmp_path, reference, variant):
    class Stop(Exception):
        pass

    def stop(epoch, step, info):
        if epoch == 1 and step == 2:
            raise Stop

    ckpt = tmp_path / "c.npz"
    with pytest.raises(Stop):
        tiny_train(variant, checkpoint=ckpt, callback=stop)
    _assert_same(weights(tiny_train(variant, checkpoint=ckpt)), reference[variant])


@pytest.mark.parametrize("variant", TRAINED)
def test_killed_with_sigkill_then_resumed_equals_uninterrupted(tmp_path, reference, variant):
    ckpt = tmp_path / "c.npz"
    proc = _python(f'''
        import os, signal
        def die(epoch, step, info):
            if epoch == 1 and step == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        tiny_train({variant!r}, checkpoint={str(ckpt)!r}, callback=die)
    ''')
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert ckpt.is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    _assert_same(weights(tiny_train(variant, checkpoint=ckpt)), reference[variant])


# ---------------------------------------------------------------------------
# What a checkpoint may be resumed with
# ---------------------------------------------------------------------------
@pytest.fixture
def half_done(tmp_path):
    """The checkpoint of an ``nt`` training stopped after its first epoch."""
    def stop(epoch, step, info):
        if epoch == 1:
            raise KeyboardInterrupt

    ckpt = tmp_path / "nt.ckpt.npz"
    with pytest.raises(KeyboardInterrupt):
        tiny_train("nt", checkpoint=ckpt, callback=stop)
    return ckpt


def test_resume_with_other_data_is_refused(half_done):
    X, y = problem()
    X2 = X.copy()
    X2[0, 0, 0] = 1 - X2[0, 0, 0]
    with pytest.raises(CheckpointMismatch, match="other training data") as exc:
        train("nt", X2, y, checkpoint=half_done, return_result=True, **_ns["OPTS"])
    assert str(half_done) in str(exc.value) and "resume=False" in str(exc.value)
    with pytest.raises(CheckpointMismatch, match="other training data"):
        train("nt", X, (y + 1) % 3, checkpoint=half_done, **_ns["OPTS"])
    train("nt", X2, y, checkpoint=half_done, resume=False, **_ns["OPTS"])  # starting afresh is allowed


def test_checkpoint_records_the_data_fingerprint(half_done):
    X, y = problem()
    with np.load(half_done) as f:
        assert str(f["data_sha256"]) == data_fingerprint(X, y)
        assert int(f["format_version"]) == 2 and "sha256" in f.files and "library_version" in f.files
    # (N, H, W) images and their flattened rows, float32 or float64 pixels: one fingerprint
    assert data_fingerprint(X.reshape(300, -1), y.astype(np.int32)) == data_fingerprint(X, y)


def test_resuming_with_another_blas_thread_count_warns(half_done):
    with np.load(half_done) as f:
        assert json.loads(str(f["blas_threads"])) == blas_threads()
    n = max(t for _, t in blas_threads())
    with threadpool_limits(limits=n + 1, user_api="blas"), pytest.warns(UserWarning, match="BLAS threads"):
        tiny_train("nt", checkpoint=half_done)


def _edit(path, **changes):
    """Rewrite a checkpoint with some arrays changed and a fresh, valid seal."""
    data, _ = _io.unseal_arrays(_io.read_npz(path, "x"), "x", path, 2)
    data.update(changes)
    _io.atomic_savez(path, **_io.seal_arrays(data, 2))


@pytest.mark.parametrize("changes, needle", [
    (dict(epoch=np.int64(5), t=np.int64(30)), "do not fit 2 epochs"),  # epoch beyond the setting
    (dict(t=np.int64(4)), "do not fit"),
    (dict(p_W=np.zeros((3, 3))), "'p_W'"),
    (dict(h_loss=np.zeros(4)), "history"),
    (dict(p_extra=np.zeros(3)), "does not have"),
    (dict(rng_state=np.asarray('{"bit_generator": "MT19937"}')), "cannot be resumed"),
    (dict(settings=np.asarray("[1, 2]")), "not a JSON object"),
])
def test_inconsistent_checkpoint_is_refused(half_done, changes, needle):
    _edit(half_done, **changes)
    with pytest.raises(CheckpointMismatch, match=needle.replace("(", r"\(")) as exc:
        tiny_train("nt", checkpoint=half_done)
    assert str(half_done) in str(exc.value)


@pytest.mark.parametrize("damage", ["truncated", "empty", "changed_under_its_hash", "old_format", "other_version"])
def test_damaged_or_foreign_checkpoint_is_refused(half_done, damage):
    raw = half_done.read_bytes()
    if damage == "truncated":
        half_done.write_bytes(raw[: len(raw) // 3])
    elif damage == "empty":
        half_done.write_bytes(b"")
    elif damage == "changed_under_its_hash":
        data = dict(np.load(half_done))
        data["p_W"] = data["p_W"] + 1e-9
        np.savez(half_done, **data)
    elif damage == "old_format":
        data = dict(np.load(half_done))
        for k in ("sha256", "library_version", "data_sha256"):
            data.pop(k)
        data["format_version"] = np.int64(1)
        np.savez(half_done, **data)
    else:  # a valid seal, written by another library version
        data = dict(np.load(half_done))
        data.pop("sha256")
        data["library_version"] = np.asarray("0.0.1")
        np.savez(half_done, sha256=np.asarray(_io.sha256_arrays(data)), **data)
    with pytest.raises(CheckpointMismatch) as exc:
        tiny_train("nt", checkpoint=half_done)
    assert str(half_done) in str(exc.value)


def test_load_or_train_warns_and_retrains_on_a_bad_checkpoint_or_model(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    fake = {"train": (rng.uniform(0, 1, (60, 28, 28)), rng.integers(0, 10, 60)),
            "test": (rng.uniform(0, 1, (20, 28, 28)), rng.integers(0, 10, 20))}
    monkeypatch.setattr(cache_module, "load_mnist", lambda split, data_dir=None, limit=None: fake[split])
    kw = dict(cache_dir=tmp_path, n_train=60, hidden=4, epochs=1, progress=False, with_metadata=True)
    ckpt = tmp_path / "checkpoints" / "nt-h4-n60-s0-e1.ckpt.npz"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="training nt from the start"):
        net, meta = load_or_train("nt", **kw)
    assert meta["data_sha256"] == data_fingerprint(*fake["train"]) and not ckpt.exists()
    path = tmp_path / "nt-h4-n60-s0-e1.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again, _ = load_or_train("nt", **kw)  # the sealed cached model, no warning
    assert np.array_equal(again.W, net.W)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.warns(UserWarning, match="cannot be used"):
        again, _ = load_or_train("nt", **kw)
    assert np.array_equal(again.W, net.W)  # retrained: the same bits
    data = dict(np.load(path))
    data["meta_hidden"] = np.int64(5)  # a file whose metadata contradict its name
    data.pop("sha256")
    np.savez(path, sha256=np.asarray(_io.sha256_arrays(data)), **data)
    with pytest.warns(UserWarning, match="contradict its name"):
        load_or_train("nt", **kw)
    assert json.loads(str(np.load(path)["meta_settings"]))["hidden"] == 4
