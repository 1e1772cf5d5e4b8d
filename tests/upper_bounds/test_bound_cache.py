"""The on-disk bound cache (stadv_ref.upper_bounds.bound_cache, issue #19 item 6 / deliverable 3).

A cache file is written atomically and sealed (format version, library version, sha256 of the
bounds, the key and the info); the key includes the library version. A file that cannot be
trusted -- truncated, empty, changed after it was written, of another network, format or library
version, the unsealed format of earlier versions -- is never used: a warning naming it, then the
bounds are recomputed (and the file rewritten). Before, a truncated file crashed ``certify`` with
``zipfile.BadZipFile`` and a changed one certified what it should not.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import stadv_ref
from stadv_ref import _io
from stadv_ref.upper_bounds import bound_cache, certification, clear_bound_cache, pair_bounds_cached
from stadv_ref.upper_bounds.certification import certify


def _net_and_data(seed=0, H=4, m=6, K=3, N=40):
    rng = np.random.default_rng(seed)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((m, H * H)) / H, rng.standard_normal((K, m)))
    X = rng.uniform(0, 1, (N, H, H))
    return net, X, net.predict(X)


@pytest.fixture
def cached(tmp_path):
    """A network, its freshly computed spectral bounds, and the one cache file they were written to."""
    net, X, y = _net_and_data()
    clear_bound_cache()
    b, info = pair_bounds_cached(net, "spectral", progress=False, cache_dir=tmp_path)
    assert info["source"] == "computed"
    (path,) = tmp_path.glob("bounds-spectral-*.npz")
    clear_bound_cache()
    yield net, X, y, b, path
    clear_bound_cache()


def _again(net, path):
    """Bounds from the cache directory of ``path`` with an empty memory cache; the warnings raised."""
    clear_bound_cache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b, info = pair_bounds_cached(net, "spectral", progress=False, cache_dir=path.parent)
    return b, info, [str(w.message) for w in caught]


def _reseal(path, **changes):
    """Rewrite the cache file with some arrays changed and a valid seal (a consistent but wrong file)."""
    data, _ = _io.unseal_arrays(_io.read_npz(path, "x"), "x", path, 1)
    data.update(changes)
    _io.atomic_savez(path, **_io.seal_arrays(data, 1))


def test_names_stay_importable_from_certification():
    assert certification.pair_bounds_cached is bound_cache.pair_bounds_cached
    assert certification.clear_bound_cache is bound_cache.clear_bound_cache
    assert stadv_ref.upper_bounds.pair_bounds_cached is pair_bounds_cached


def test_cache_file_is_sealed_and_reused(cached):
    net, _, _, b, path = cached
    with np.load(path) as f:
        assert {"bounds", "key", "info", "format_version", "library_version", "sha256"} == set(f.files)
        assert str(f["library_version"]) == stadv_ref.__version__
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left
    b2, info, warned = _again(net, path)
    assert info["source"] == "disk" and not warned
    np.testing.assert_array_equal(b2, b)


def test_key_includes_the_library_version(cached, monkeypatch):
    net, _, _, _, path = cached
    key = bound_cache._cache_key(net, "spectral", {})
    monkeypatch.setattr(bound_cache, "library_version", lambda: "99.0")
    assert bound_cache._cache_key(net, "spectral", {}) != key
    _, info, warned = _again(net, path)
    assert info["source"] == "computed" and not warned  # another file name: no stale reuse


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "flipped_byte"])
def test_damaged_file_warns_and_recomputes(cached, damage):
    net, _, _, b, path = cached
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 2], "empty": b"", "text": b"bounds = 0\n",
                      "flipped_byte": raw[:60] + bytes([raw[60] ^ 0xFF]) + raw[61:]}[damage])
    b2, info, warned = _again(net, path)
    assert info["source"] == "computed"
    assert len(warned) == 1 and str(path) in warned[0] and "recomputing" in warned[0]
    np.testing.assert_array_equal(b2, b)
    _, info, warned = _again(net, path)  # the file was rewritten
    assert info["source"] == "disk" and not warned


def test_tampered_bounds_never_certify(cached):
    """Smaller bounds under the old hash (the issue's case) are detected; certify uses the true bounds."""
    net, X, y, b, path = cached
    data = dict(np.load(path))
    data["bounds"] = b * 0.0
    np.savez(path, **data)
    clear_bound_cache()
    with pytest.warns(UserWarning, match="content hash"):
        res = certify(net, X, y, 0.05, method="spectral", progress=False, cache_dir=path.parent)
    clear_bound_cache()
    clean = certify(net, X, y, 0.05, method="spectral", progress=False)
    np.testing.assert_array_equal(res.certified, clean.certified)
    np.testing.assert_array_equal(res.bounds, b)


@pytest.mark.parametrize("changes, needle", [
    (dict(key=np.asarray("0" * 32)), "key mismatch"),
    (dict(bounds=np.zeros((2, 2))), "shape (3, 3)"),
    (dict(bounds=np.full((3, 3), np.nan)), "non-negative float64"),
    (dict(bounds=-np.ones((3, 3))), "non-negative float64"),
    (dict(info=np.asarray("[1, 2]")), "not a JSON object"),
    (dict(info=np.asarray("{not json")), "bound cache"),
])
def test_consistent_but_wrong_file_warns_and_recomputes(cached, changes, needle):
    net, _, _, b, path = cached
    _reseal(path, **changes)
    b2, info, warned = _again(net, path)
    assert info["source"] == "computed" and len(warned) == 1 and needle in warned[0] and str(path) in warned[0]
    np.testing.assert_array_equal(b2, b)


def test_file_of_another_library_version_or_format_is_recomputed(cached, monkeypatch):
    net, _, _, b, path = cached
    data, _ = _io.unseal_arrays(_io.read_npz(path, "x"), "x", path, 1)
    monkeypatch.setattr(_io, "library_version", lambda: "0.0.1")
    _io.atomic_savez(path, **_io.seal_arrays(data, 1))  # same name, written by "0.0.1"
    monkeypatch.undo()
    _, info, warned = _again(net, path)
    assert info["source"] == "computed" and "0.0.1" in warned[0]
    np.savez(path, bounds=b, info=np.asarray(json.dumps({"key": "k"})))  # the unsealed format of before
    _, info, warned = _again(net, path)
    assert info["source"] == "computed" and "format_version" in warned[0]
