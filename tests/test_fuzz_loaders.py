"""Fuzz targets, one per loader (issue #19 deliverable 3): never a traceback from below, never a silent reuse.

Each target feeds a loader mutated or random files (Hypothesis, at most 50 examples each,
derandomized, so the whole module runs in seconds and the same way every time) and requires
either a valid result or a ``ValueError``/``TypeError`` -- or, for caches and step outputs,
the documented warning and a recomputation -- never another exception type:

* IDX files (:func:`stadv_ref.data.read_idx`, :func:`stadv_ref.load_mnist`): random headers, type
  codes, dimensions, truncated and oversized data, gzip-compressed or not;
* model files (:meth:`OneHiddenLayerNet.load`): mutated and truncated valid files (a network that
  loads is the saved one, bit for bit), random arrays under random names;
* ONNX files (:func:`stadv_ref.import_onnx`): random bytes, mutated valid models (skipped
  without ``onnx``);
* training checkpoints: a mutated checkpoint is refused, or resumes to the uninterrupted model;
* the bound cache: a mutated cache file gives the true bounds (from disk or recomputed);
* ``stadv reproduce`` step outputs and markers, ``run.json``, sealed JSON and ``--data`` files.
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import stadv_ref
from stadv_ref import _io
from stadv_ref.cli._common import load_data
from stadv_ref.data import read_idx
from stadv_ref.experiments import pipeline as rp
from stadv_ref.training import train
from stadv_ref.training.checkpoint import CheckpointMismatch
from stadv_ref.upper_bounds import clear_bound_cache, pair_bounds_cached

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=25)
EXPECTED = (ValueError, TypeError)

# A list of edits: (kind, position, bytes). Positions wrap around the file's length.
edits = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "delete"]), st.integers(0, 2**31),
                           st.binary(min_size=1, max_size=8)), min_size=1, max_size=3)


def mutate(raw, ops):
    """``raw`` with the edits ``ops`` applied (a byte flipped, cut, inserted or deleted)."""
    b = bytearray(raw)
    for kind, pos, data in ops:
        i = pos % (len(b) + 1)
        if kind == "flip" and i < len(b):
            b[i] ^= data[0] or 0xFF
        elif kind == "truncate":
            del b[i:]
        elif kind == "insert":
            b[i:i] = data
        else:
            del b[i : i + len(data)]
    return bytes(b)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _quiet(fn, *a, **kw):
    """``fn(*a, **kw)`` and the messages of the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*a, **kw)
    return out, [str(w.message) for w in caught]


# ---------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------
@st.composite
def idx_files(draw):
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x07, 0xFF]))
    ndim = draw(st.integers(0, 4))
    dims = draw(st.lists(st.one_of(st.integers(0, 6), st.sampled_from([28, 2**31, 2**32 - 1])),
                         min_size=ndim, max_size=ndim))
    magic = draw(st.sampled_from([b"\0\0", b"\0\0", b"\0\1", b"PK"]))
    header = magic + bytes([code, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
    itemsize = {0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
    n = int(np.prod([d for d in dims if d < 100], dtype=np.int64)) * itemsize
    size = max(0, n + draw(st.sampled_from([0, 0, 0, -1, 1, -n])))
    raw = header + draw(st.binary(min_size=min(size, 64), max_size=min(size, 64))) + bytes(max(0, size - 64))
    if draw(st.booleans()):
        raw = mutate(raw, draw(edits))
    return raw, draw(st.sampled_from(["", ".gz", ".gz-mutated"]))


@FUZZ
@given(idx_files())
def test_fuzz_read_idx(work, case):
    raw, how = case
    path = work / ("f.idx" + (".gz" if how else ""))
    if how:
        raw = gzip.compress(raw, mtime=0)
        if how == ".gz-mutated":
            raw = mutate(raw, [("flip", len(raw) // 2, b"\x55"), ("truncate", len(raw) - 3, b"\0")])
    path.write_bytes(raw)
    try:
        a = read_idx(path)
    except EXPECTED:
        return
    assert isinstance(a, np.ndarray) and a.ndim == raw[3] if not how else isinstance(a, np.ndarray)


@FEW
@given(idx_files(), st.booleans())
def test_fuzz_load_mnist(work, case, as_labels):
    raw, _ = case
    d = work / "mnist"
    d.mkdir(exist_ok=True)
    good_images = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 28, 28)) + bytes(2 * 784)
    good_labels = bytes([0, 0, 8, 1, 0, 0, 0, 2, 3, 4])
    (d / "t10k-images-idx3-ubyte").write_bytes(good_images if as_labels else raw)
    (d / "t10k-labels-idx1-ubyte").write_bytes(raw if as_labels else good_labels)
    try:
        X, y = stadv_ref.load_mnist("test", data_dir=d)
    except EXPECTED:
        return
    assert X.shape == (len(y), 28, 28) and X.dtype == np.float64 and 0 <= X.min() <= X.max() <= 1
    assert y.dtype == np.int64 and 0 <= y.min() and y.max() <= 9


# ---------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------
NET = stadv_ref.OneHiddenLayerNet(np.random.default_rng(0).standard_normal((5, 16)),
                                  np.random.default_rng(1).standard_normal((3, 5)), c=np.array([0.1, 0.0, -0.1]))


def _same_net(a, b):
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("W", "V", "b", "c")) and \
        a.image_shape == b.image_shape


@FUZZ
@given(edits)
def test_fuzz_model_file_mutated(work, ops):
    path = work / "net.npz"
    NET.save(path, note="fuzz")
    path.write_bytes(mutate(path.read_bytes(), ops))
    try:
        net = stadv_ref.OneHiddenLayerNet.load(path)
    except EXPECTED:
        return
    assert _same_net(net, NET)  # whatever loads is the saved network, bit for bit


MODEL_NAMES = ["W", "v", "b", "c", "image_shape", "format_version", "sha256", "library_version", "meta_x", "V"]
any_array = hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_, np.complex128,
                                        np.dtype("<U4")]),
                       hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))


@FUZZ
@given(st.dictionaries(st.sampled_from(MODEL_NAMES), any_array, min_size=1, max_size=6), st.booleans())
def test_fuzz_model_file_random_arrays(work, arrays, sealed):
    path = work / "random.npz"
    if sealed and not set(arrays) & set(_io.SEAL_FIELDS):
        arrays = _io.seal_arrays(arrays, 2)
    np.savez(path, **arrays)
    try:
        net, meta = stadv_ref.OneHiddenLayerNet.load(path, with_metadata=True)
    except EXPECTED:
        return
    assert isinstance(net, stadv_ref.OneHiddenLayerNet) and np.isfinite(net.W).all()


# ---------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------
def _valid_onnx(path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    f32 = np.float32
    inits = [numpy_helper.from_array(a, n) for n, a in (("W", NET.W.astype(f32)), ("b", NET.b.astype(f32)),
                                                       ("V", NET.V.astype(f32)), ("c", NET.c.astype(f32)))]
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "W", "b"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Gemm", ["r", "V", "c"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    onnx.save(helper.make_model(graph), str(path))
    return path.read_bytes()


@FUZZ
@given(st.one_of(st.binary(max_size=200), edits))
def test_fuzz_import_onnx(work, case):
    path = work / "m.onnx"
    raw = _valid_onnx(path)
    path.write_bytes(case if isinstance(case, bytes) else mutate(raw, case))
    try:
        net = stadv_ref.import_onnx(path)
    except EXPECTED:
        return
    assert isinstance(net, stadv_ref.OneHiddenLayerNet) and np.isfinite(net.W).all()


# ---------------------------------------------------------------------------
# Training checkpoints
# ---------------------------------------------------------------------------
_rng = np.random.default_rng(2)
CX, CY = _rng.uniform(0, 1, (60, 4, 4)), _rng.integers(0, 3, 60)
COPTS = dict(hidden=4, epochs=2, batch_size=20, seed=0, progress=False, n_classes=3, image_shape=(4, 4))


@pytest.fixture(scope="module")
def checkpoint(work):
    """The bytes of an ``nt`` checkpoint after epoch 1, and the uninterrupted model."""
    def stop(epoch, step, info):
        if epoch == 1:
            raise KeyboardInterrupt

    path = work / "ckpt.npz"
    with pytest.raises(KeyboardInterrupt):
        train("nt", CX, CY, checkpoint=path, callback=stop, **COPTS)
    return path.read_bytes(), train("nt", CX, CY, **COPTS)


@FUZZ
@given(edits)
def test_fuzz_checkpoint(work, checkpoint, ops):
    raw, full = checkpoint
    path = work / "mutated.ckpt.npz"
    path.write_bytes(mutate(raw, ops))
    try:
        net = train("nt", CX, CY, checkpoint=path, **COPTS)
    except CheckpointMismatch as exc:
        assert str(path) in str(exc)
        return
    assert _same_net(net, full)  # resumed from an intact checkpoint: the uninterrupted model


# ---------------------------------------------------------------------------
# Bound cache
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bound_file(work):
    d = work / "bc"
    clear_bound_cache()
    b, _ = pair_bounds_cached(NET, "spectral", progress=False, cache_dir=d)
    (path,) = d.glob("*.npz")
    return path, path.read_bytes(), b


@FUZZ
@given(edits)
def test_fuzz_bound_cache(bound_file, ops):
    path, raw, truth = bound_file
    mutated = mutate(raw, ops)
    path.write_bytes(mutated)
    clear_bound_cache()
    (b, info), warned = _quiet(pair_bounds_cached, NET, "spectral", progress=False, cache_dir=path.parent)
    assert np.array_equal(b, truth)  # from an intact file or recomputed: never the mutated numbers
    if info["source"] == "computed":
        assert len(warned) == 1 and str(path) in warned[0]
    else:
        assert not warned


# ---------------------------------------------------------------------------
# Step outputs and markers of ``stadv reproduce``
# ---------------------------------------------------------------------------
def _fake_step(name):
    def run(ctx):
        d = ctx.dir(name)
        (d / f"{name}.txt").write_text(f"output of {name}\n")
        if name == "report":
            (ctx.out / "report.md").write_text("# report\n")
        return {"name": name, "values": [1.5, 2, None]}

    return run


@pytest.fixture(scope="module")
def finished_run(work):
    """A reproduction folder made with cheap stand-ins for every step (the real markers and checks)."""
    out = work / "repro"
    with pytest.MonkeyPatch.context() as mp:
        for step in rp.STEPS:
            mp.setattr(step, "run", _fake_step(step.name))
        rp.reproduce(out, rp.Config(mode="test", epochs={}), progress=False, log=None)
    return out


def _files(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                                                     max_size=3), max_leaves=10)


def _same_json(a, b):
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
        return False


@FEW
@given(st.data())
def test_fuzz_step_outputs_and_markers(finished_run, data):
    files = _files(finished_run)
    target = data.draw(st.sampled_from(files))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        shutil.copytree(finished_run, out)
        raw = (out / target).read_bytes()
        if data.draw(st.booleans()):
            new = mutate(raw, data.draw(edits))
        else:
            new = json.dumps(data.draw(json_values)).encode()
        (out / target).write_bytes(new)
        with pytest.MonkeyPatch.context() as mp:
            for step in rp.STEPS:
                mp.setattr(step, "run", _fake_step(step.name))
            cfg = rp.Config(mode="test", epochs={})
            status, warned = _quiet(rp.reproduce, out, cfg, progress=False, log=None)
            owner = Path(target).parts[0]
            # A step's marker is sealed over its parsed content: an edit that leaves the same JSON
            # (e.g. a deleted newline) changes nothing a reader sees, so reusing the step is right.
            same_marker = target == f"{owner}/{owner}.json" and _same_json(raw, new)
            if new != raw and owner in rp.STEP_NAMES and not same_marker:
                assert status[owner] != "skipped" and any(target.split("/")[-1] in w for w in warned)
            again, warned = _quiet(rp.reproduce, out, cfg, progress=False, log=None)
        assert set(again.values()) == {"skipped"} and not warned  # the folder is consistent again


@FUZZ
@given(st.one_of(st.binary(max_size=120), json_values.map(lambda v: json.dumps(v).encode())))
def test_fuzz_read_sealed_json(work, raw):
    path = work / "sealed.json"
    path.write_bytes(raw)
    try:
        body = _io.read_sealed_json(path, "file")
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(body, dict) and body["sha256"] == _io.sha256_json({k: v for k, v in body.items()
                                                                          if k != "sha256"})


# ---------------------------------------------------------------------------
# --data files of the CLI
# ---------------------------------------------------------------------------
@FUZZ
@given(st.one_of(edits, st.dictionaries(st.sampled_from(["X", "y", "z"]), any_array, max_size=3)))
def test_fuzz_cli_data_file(work, case):
    path = work / "data.npz"
    if isinstance(case, dict):
        np.savez(path, **case)
    else:
        np.savez(path, X=np.random.default_rng(0).uniform(0, 1, (4, 4, 4)), y=np.arange(4))
        path.write_bytes(mutate(path.read_bytes(), case))
    try:
        X, y, _ = load_data(argparse.Namespace(data=str(path), n=None, offset=0))
    except EXPECTED:
        return
    assert X.ndim == 3 and X.dtype == np.float64 and np.isfinite(X).all() and y.shape == (len(X),)
