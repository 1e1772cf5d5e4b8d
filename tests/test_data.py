"""Tests of the IDX reader and the MNIST / Fashion-MNIST loader (stadv_ref.data).

Everything except the ``mnist``-marked test works on small synthetic IDX files
written into ``tmp_path``; downloads go to ``file://`` URLs, never the network.
"""
from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from stadv_ref import data, load_dataset, load_mnist, read_idx

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
         np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr):
    """Serialise ``arr`` in the IDX format: 0, 0, type code, ndim, big-endian dims, big-endian data."""
    arr = np.asarray(arr)
    dt = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    header = bytes([0, 0, CODES[np.dtype(dt)], arr.ndim]) + b"".join(struct.pack(">I", n) for n in arr.shape)
    return header + arr.astype(dt).tobytes()


def write_idx(path, arr_or_bytes, gz=None):
    raw = arr_or_bytes if isinstance(arr_or_bytes, bytes) else idx_bytes(arr_or_bytes)
    gz = str(path).endswith(".gz") if gz is None else gz
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def fake_split(directory, n=5, seed=0, gz=True, names=TEST_FILES):
    """Write a small fake split (n 28x28 ubyte images and their labels); return the arrays."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    img_name, lab_name = (nm if gz else nm[:-3] for nm in names)
    write_idx(directory / img_name, images)
    write_idx(directory / lab_name, labels)
    return images, labels


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# read_idx
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_round_trip(tmp_path, gz, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.normal(size=(4, 3, 2)) * 50).astype(dtype)
    got = read_idx(write_idx(tmp_path / ("a.idx" + (".gz" if gz else "")), arr))
    assert got.shape == (4, 3, 2)
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_ubyte_images_and_labels(tmp_path, gz):
    images, labels = fake_split(tmp_path, n=7, gz=gz)
    suffix = ".gz" if gz else ""
    got_i = read_idx(tmp_path / ("t10k-images-idx3-ubyte" + suffix))
    got_l = read_idx(tmp_path / ("t10k-labels-idx1-ubyte" + suffix))
    assert got_i.dtype == np.uint8 and got_i.shape == (7, 28, 28)
    assert got_l.dtype == np.uint8 and got_l.shape == (7,)
    np.testing.assert_array_equal(got_i, images)
    np.testing.assert_array_equal(got_l, labels)


def _malformed(tmp_path, which):
    good = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    cases = {
        "bad_magic": (b"\x01\x02" + good[2:], "magic"),
        "bad_magic_gz": (b"\x08\x08" + good[2:], "magic"),
        "unknown_type": (good[:2] + b"\x07" + good[3:], "type code"),
        "empty": (b"", "magic"),
        "truncated_header": (good[:6], "truncated"),
        "truncated_data": (good[:-1], "holds 11 bytes"),
        "too_long": (good + b"\x00", "holds 13 bytes"),
        "wrong_size": (good[:4] + struct.pack(">II", 5, 4) + good[12:], "shape"),
    }
    raw, match = cases[which]
    gz = which.endswith("_gz")
    return write_idx(tmp_path / ("f.idx" + (".gz" if gz else "")), raw, gz=gz), match


@pytest.mark.parametrize("which", ["bad_magic", "bad_magic_gz", "unknown_type", "empty",
                                   "truncated_header", "truncated_data", "too_long", "wrong_size"])
def test_read_idx_malformed(tmp_path, which):
    path, match = _malformed(tmp_path, which)
    with pytest.raises(ValueError, match=match):
        read_idx(path)


def test_read_idx_broken_gzip_and_missing_file(tmp_path):
    p = tmp_path / "broken.gz"
    p.write_bytes(b"this is not gzip data")
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(p)
    p = tmp_path / "cut.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((10, 10), np.uint8)))[:-12])
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(p)
    with pytest.raises(ValueError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")


# ---------------------------------------------------------------------------
# load_mnist / load_dataset
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_data_dir(tmp_path, gz, monkeypatch):
    monkeypatch.delenv("STADV_DATA_DIR", raising=False)
    images, labels = fake_split(tmp_path, n=6, gz=gz)
    X, y = load_mnist("test", data_dir=tmp_path)
    assert X.shape == (6, 28, 28) and X.dtype == np.float64
    assert y.shape == (6,) and y.dtype == np.int64
    assert 0.0 <= X.min() and X.max() <= 1.0
    np.testing.assert_allclose(X, images / 255.0)
    np.testing.assert_array_equal(y, labels)
    X2, y2 = load_mnist("test", data_dir=str(tmp_path), limit=2)
    np.testing.assert_array_equal(X2, X[:2])
    np.testing.assert_array_equal(y2, y[:2])


def test_load_mnist_from_env_var_and_argument_wins(tmp_path, monkeypatch):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    _, labels_env = fake_split(env_dir, n=4, seed=1)
    _, labels_arg = fake_split(arg_dir, n=3, seed=2)
    fake_split(env_dir, n=2, seed=3, names=TRAIN_FILES)
    monkeypatch.setenv("STADV_DATA_DIR", str(env_dir))
    X, y = load_mnist("test")
    np.testing.assert_array_equal(y, labels_env)
    assert load_mnist("train")[0].shape == (2, 28, 28)
    _, y = load_mnist("test", data_dir=arg_dir)
    np.testing.assert_array_equal(y, labels_arg)
    assert data.data_dir("mnist") == env_dir


def test_default_cache_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("STADV_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.data_dir("mnist") == tmp_path / "stadv_ref" / "mnist"
    assert data.data_dir("fashion-mnist") == tmp_path / "stadv_ref" / "fashion-mnist"


def test_missing_files_without_download_give_helpful_error(tmp_path, monkeypatch):
    monkeypatch.delenv("STADV_DATA_DIR", raising=False)
    with pytest.raises(ValueError) as info:
        load_mnist("test", data_dir=tmp_path)
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and str(tmp_path) in msg
    assert "STADV_DATA_DIR" in msg and "download=True" in msg
    # only the images present: the labels are reported missing
    write_idx(tmp_path / TEST_FILES[0], np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        load_mnist("test", data_dir=tmp_path)


def test_inconsistent_files(tmp_path):
    write_idx(tmp_path / TEST_FILES[0], np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / TEST_FILES[1], np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="inconsistent"):
        load_mnist("test", data_dir=tmp_path)


def test_download_md5_mismatch(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    fake_split(mirror)  # fake files: their MD5 is not the published one
    with pytest.raises(ValueError, match="MD5") as info:
        load_mnist("test", data_dir=cache, download=True, base_urls=[mirror.as_uri() + "/"])
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)
    assert not (cache / TEST_FILES[0]).exists()
    assert not list(cache.glob("*.part"))  # the partial download is removed


def test_download_unreachable_mirror(tmp_path):
    with pytest.raises(ValueError, match="could not download"):
        load_mnist("test", data_dir=tmp_path / "cache", download=True,
                   base_urls=[(tmp_path / "empty").as_uri() + "/"])


def test_download_with_matching_md5(tmp_path, monkeypatch):
    """A fake dataset entry whose MD5 table matches the mirror's files downloads and loads."""
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    images, labels = fake_split(mirror, n=4)
    entry = {"urls": (mirror.as_uri() + "/",), "md5": {nm: md5(mirror / nm) for nm in TEST_FILES}}
    monkeypatch.setitem(data.DATASETS, "fake", entry)
    X, y = load_dataset("test", "fake", data_dir=cache, download=True)
    np.testing.assert_allclose(X, images / 255.0)
    np.testing.assert_array_equal(y, labels)
    for nm in TEST_FILES:
        assert (cache / nm).read_bytes() == (mirror / nm).read_bytes()
    # second call: files are there, verify=True checks them
    X2, _ = load_dataset("test", "fake", data_dir=cache, verify=True)
    np.testing.assert_array_equal(X2, X)
    # a tampered cached file fails verification
    (cache / TEST_FILES[1]).write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(ValueError, match="MD5"):
        load_dataset("test", "fake", data_dir=cache, verify=True)


def test_download_via_patched_md5_table_first_mirror_fails(tmp_path, monkeypatch):
    """Patching the real MNIST MD5 table; a bad first mirror falls through to a good one."""
    bad, good, cache = tmp_path / "bad", tmp_path / "good", tmp_path / "cache"
    fake_split(bad, seed=1)
    images, _ = fake_split(good, seed=2)
    for nm in TEST_FILES:
        monkeypatch.setitem(data.DATASETS["mnist"]["md5"], nm, md5(good / nm))
    X, _ = load_mnist("test", data_dir=cache, download=True,
                      base_urls=[bad.as_uri() + "/", good.as_uri() + "/"])
    np.testing.assert_allclose(X, images / 255.0)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(split="validation"), ValueError, "split"),
    (dict(dataset="cifar"), ValueError, "dataset"),
    (dict(limit=0), ValueError, "limit"),
    (dict(limit=2.5), TypeError, "limit"),
])
def test_load_dataset_argument_errors(tmp_path, kwargs, exc, match):
    fake_split(tmp_path)
    with pytest.raises(exc, match=match):
        load_dataset(data_dir=tmp_path, **kwargs)


@pytest.mark.mnist
def test_real_mnist_test_split(mnist_dir):
    for nm, want in data.DATASETS["mnist"]["md5"].items():
        if (mnist_dir / nm).is_file():
            assert md5(mnist_dir / nm) == want, nm
    X, y = load_mnist("test", data_dir=mnist_dir, verify=True)
    assert X.shape == (10000, 28, 28) and X.dtype == np.float64
    assert y.shape == (10000,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.unique(y), np.arange(10))
    np.testing.assert_array_equal(np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


# ---------------------------------------------------------------------------
# #19.7: the loader refuses files that are not MNIST-format data; verify covers uncompressed files
# ---------------------------------------------------------------------------
def _bad_split(tmp_path, case):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (4, 28, 28)).astype(np.uint8), np.arange(4, dtype=np.uint8)
    if case == "int32-images":
        images = images.astype(np.int32) * 20
    elif case == "int8-images":
        images = images.astype(np.int8)
    elif case == "float-images-nan":
        images = images.astype(">f4")
        images[0, 0, 0] = np.nan
    elif case == "float-images-3.9":
        images = np.full((4, 28, 28), 3.9, ">f8")
    elif case == "7x112-images":
        images = images.reshape(4, 7, 112)
    elif case == "flat-images":
        images = images.reshape(4, 784)
    elif case == "label-200":
        labels[1] = 200
    elif case == "label-10":
        labels[1] = 10
    elif case == "int32-labels":
        labels = labels.astype(np.int32)
    elif case == "2d-labels":
        labels = labels.reshape(2, 2)
    elif case == "no-images":
        images, labels = images[:0], labels[:0]
    write_idx(tmp_path / TEST_FILES[0], images)
    write_idx(tmp_path / TEST_FILES[1], labels)


@pytest.mark.parametrize("case, which", [
    ("int32-images", "images"), ("int8-images", "images"), ("float-images-nan", "images"),
    ("float-images-3.9", "images"), ("7x112-images", "images"), ("flat-images", "images"),
    ("label-200", "labels"), ("label-10", "labels"), ("int32-labels", "labels"), ("2d-labels", "labels"),
    ("no-images", "images"),
])
def test_load_mnist_refuses_non_mnist_idx_data(tmp_path, case, which):
    _bad_split(tmp_path, case)
    name = TEST_FILES[0] if which == "images" else TEST_FILES[1]
    with pytest.raises(ValueError, match=name):
        load_mnist("test", data_dir=tmp_path)


def test_verify_checks_uncompressed_files(tmp_path, monkeypatch):
    """#19.7: verify=True used to skip uncompressed files; now they are checked (or refused when no MD5 is known)."""
    images, labels = fake_split(tmp_path, n=3, gz=False)
    raw = {nm[:-3]: md5(tmp_path / nm[:-3]) for nm in TEST_FILES}
    with pytest.raises(ValueError, match="MD5"):  # fake files are not the published MNIST
        load_mnist("test", data_dir=tmp_path, verify=True)
    for nm, want in raw.items():
        monkeypatch.setitem(data.DATASETS["mnist"]["md5_raw"], nm, want)
    X, y = load_mnist("test", data_dir=tmp_path, verify=True)
    np.testing.assert_array_equal(y, labels)
    write_idx(tmp_path / TEST_FILES[1][:-3], np.zeros(3, np.uint8))  # tampered
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte' does not match its published MD5"):
        load_mnist("test", data_dir=tmp_path, verify=True)
    monkeypatch.setitem(data.DATASETS, "fake", {"urls": (), "md5": {}})  # no checksum known at all
    with pytest.raises(ValueError, match="no published MD5"):
        load_dataset("test", "fake", data_dir=tmp_path, verify=True)
    assert load_dataset("test", "fake", data_dir=tmp_path)[0].shape == (3, 28, 28)  # verify=False reads it


def test_raw_md5_table_matches_the_real_gz_files(mnist_dir):
    for nm, want in data.DATASETS["mnist"]["md5_raw"].items():
        if (mnist_dir / (nm + ".gz")).is_file() and nm.startswith("t10k"):
            assert hashlib.md5(gzip.decompress((mnist_dir / (nm + ".gz")).read_bytes())).hexdigest() == want, nm


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(verify="yes"), TypeError, "^verify"),
    (dict(download=1), TypeError, "^download"),
    (dict(base_urls="file:///x/"), TypeError, "^base_urls"),
    (dict(base_urls=["file:///x"]), TypeError, "^base_urls"),
    (dict(data_dir=3), TypeError, "^data_dir"),
    (dict(limit=True), TypeError, "^limit"),
    (dict(split=["test"]), ValueError, "^split"),
    (dict(dataset=None), ValueError, "^dataset"),
])
def test_load_dataset_argument_types(tmp_path, kwargs, exc, match):
    fake_split(tmp_path)
    kwargs.setdefault("data_dir", tmp_path)
    with pytest.raises(exc, match=match):
        load_dataset(**kwargs)


def test_read_idx_path_type():
    with pytest.raises(TypeError, match="^path"):
        read_idx(None)
