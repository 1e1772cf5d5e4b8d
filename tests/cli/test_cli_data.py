"""``stadv data download`` / ``stadv data check`` and the missing-data message (issue #20, deliverable 3).

No test touches the network: downloads come from a local HTTP server on 127.0.0.1 serving fake IDX
files (the published MD5 table is replaced by theirs), and "offline" is a mirror at 127.0.0.1:9,
where nothing listens. Before, no command could download the data, and the missing-data error said
``pass download=True``, which no CLI command accepts.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest

from stadv_ref import data
from stadv_ref.cli import main

NAMES = [n for split in ("train", "test") for n in data.FILES[split]]
OFFLINE = "http://127.0.0.1:9/"


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return len(lines) == 1 and "Traceback" not in err


def _idx(arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return gzip.compress(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes(), mtime=0)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request lines on stderr
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Fake MNIST files served on 127.0.0.1 (a free port); the MD5 table of 'mnist' made theirs."""
    src = tmp_path / "served"
    src.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 10)):
        (src / f"{split}-images-idx3-ubyte.gz").write_bytes(_idx(rng.integers(0, 256, (n, 28, 28))))
        (src / f"{split}-labels-idx1-ubyte.gz").write_bytes(_idx(np.arange(n) % 10))
    md5 = {n: hashlib.md5((src / n).read_bytes()).hexdigest() for n in NAMES}
    raw = {n[:-3]: hashlib.md5(gzip.decompress((src / n).read_bytes())).hexdigest() for n in NAMES}
    monkeypatch.setitem(data.DATASETS, "mnist", {"urls": (OFFLINE,), "md5": md5, "md5_raw": raw})
    handler = functools.partial(_QuietHandler, directory=str(src))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield src, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_fetches_and_verifies_then_reuses(tmp_path, served, capsys):
    src, url = served
    dest = tmp_path / "data" / "mnist"
    rc, out, err = _run(capsys, "data", "download", "--dir", dest, "--mirror", url)
    assert rc == 0, err
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES)
    assert all((dest / n).read_bytes() == (src / n).read_bytes() for n in NAMES)
    assert out.count("downloaded, MD5 verified") == 4 and f"--data-dir {dest}" in out
    rc, out, err = _run(capsys, "data", "download", "--dir", dest, "--mirror", OFFLINE)  # nothing to fetch
    assert rc == 0 and out.count("present, MD5 verified") == 4, err
    rc, out, err = _run(capsys, "data", "check", dest)
    assert rc == 0 and out.count("\nok ") + out.startswith("ok ") == 4, out
    X, y = data.load_mnist("test", data_dir=dest)
    assert X.shape == (10, 28, 28) and list(y) == list(range(10))


def test_download_offline_is_one_line_and_leaves_no_folder(tmp_path, served, capsys):
    dest = tmp_path / "new" / "mnist"
    rc, out, err = _run(capsys, "data", "download", "--dir", dest, "--mirror", OFFLINE)
    assert rc == 1 and _one_line(err), err
    assert "cannot download mnist" in err and "127.0.0.1:9" in err and "--mirror" in err
    assert not (tmp_path / "new").exists()  # the folder it created is removed again


def test_download_offline_through_the_library_default_urls(tmp_path, served, capsys, monkeypatch):
    """Without --mirror the library's URL table is used (here pointed at the unreachable address)."""
    rc, _, err = _run(capsys, "data", "download", "--dir", tmp_path / "d")
    assert rc == 1 and _one_line(err) and OFFLINE + "train-images-idx3-ubyte.gz" in err
    assert not (tmp_path / "d").exists()


def test_download_refuses_a_corrupted_file_from_the_mirror(tmp_path, served, capsys):
    src, url = served
    (src / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(np.zeros(10)))  # not what the MD5 table says
    dest = tmp_path / "d"
    rc, _, err = _run(capsys, "data", "download", "--dir", dest, "--mirror", url)
    assert rc == 1 and _one_line(err) and "MD5" in err
    assert not (dest / "t10k-labels-idx1-ubyte.gz").exists()
    assert (dest / "train-images-idx3-ubyte.gz").is_file()  # verified files are kept for the rerun


def test_check_names_each_file(tmp_path, served, capsys):
    src, _ = served
    rc, out, err = _run(capsys, "data", "check", src)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 5 and all(ln.startswith("ok") for ln in lines[:4])
    assert "20 images of 28x28 uint8" in lines[0] and "10 labels in [0, 9]" in lines[3]
    (src / "train-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    (src / "t10k-images-idx3-ubyte.gz").unlink()
    rc, out, err = _run(capsys, "data", "check", src)
    assert rc == 1 and _one_line(err) and "2 of 4 mnist file(s)" in err
    lines = out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == ["ok", "BAD", "MISSING", "ok"]
    assert "train-labels-idx1-ubyte.gz" in lines[1] and "MD5" in lines[1]


def test_check_with_the_real_files_if_present(capsys):
    """The real MNIST files (STADV_DATA_DIR) match the published checksums."""
    d = data.data_dir("mnist")
    if not all(data._find(d, n) for n in NAMES):
        pytest.skip("no MNIST files in STADV_DATA_DIR")
    rc, out, err = _run(capsys, "data", "check", d)
    assert rc == 0 and "60000 images" in out and "10000 labels" in out, err


@pytest.mark.parametrize("argv", [
    ["data"],
    ["data", "check"],
    ["data", "download", "--dataset", "cifar"],
])
def test_data_usage_errors(argv, capsys):
    rc, _, err = _run(capsys, *argv)
    assert rc == 2 and _one_line(err)


@pytest.mark.parametrize("command", [
    ["attack", "--model", "{net}", "--n", "2"],
    ["certify", "--model", "{net}", "--n", "2", "--eps", "0.1", "--method", "spectral"],
    ["train", "nt", "--epochs", "1", "--n", "20"],
    ["reproduce", "--only", "models"],
])
def test_missing_mnist_names_a_command_that_works(tmp_path, capsys, command, monkeypatch):
    from stadv_ref import OneHiddenLayerNet
    from stadv_ref.experiments import pipeline as rp

    monkeypatch.setattr(rp, "quick_config", lambda seed=0: rp.Config(mode="test", n_train=20, n_test=5))
    OneHiddenLayerNet(np.ones((2, 784)), np.ones((10, 2))).save(tmp_path / "net.npz")
    nowhere = tmp_path / "no where"
    argv = [a.format(net=tmp_path / "net.npz") for a in command]
    rc, _, err = _run(capsys, *argv, "--data-dir", nowhere, "--out", tmp_path / "out", "--no-progress", "-q")
    assert rc == 1 and _one_line(err), err
    assert f"stadv data download --dir '{nowhere}'" in err and "--data-dir" in err and "download=True" not in err
    assert not (tmp_path / "out").exists()
