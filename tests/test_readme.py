"""Every Python snippet of README.md runs as written (issue #20: the README cannot rot).

Each ```python block runs in a fresh interpreter in a temporary directory (so files it writes
stay out of the checkout), with ``STADV_DATA_DIR`` passed through and a private model cache.
A block that needs the MNIST files is skipped when they are absent, one that imports torch is
skipped without torch, and a block that trains a full-scale network (``load_or_train`` without
``quick=True``) is marked slow and runs only with ``STADV_RUN_SLOW=1``. A block that is only a
fragment (it uses names it does not define) says so with a ``# fragment`` comment and is only
compiled.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _snippets():
    text = README.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        line = text.count("\n", 0, m.start()) + 1
        out.append(pytest.param(m.group(1), id=f"README.md:{line}"))
    return out


SNIPPETS = _snippets()


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 3


def _mnist_dir():
    d = Path(os.environ.get("STADV_DATA_DIR", REPO.parent / "shared" / "data" / "mnist"))
    return d if (d / "t10k-images-idx3-ubyte.gz").exists() else None


@pytest.mark.parametrize("code", SNIPPETS)
def test_readme_snippet_runs(code, tmp_path):
    compile(code, "README.md", "exec")  # every block is at least valid Python
    if "# fragment" in code:
        return
    if re.search(r"^\s*import torch|, torch\b", code, re.M) and importlib.util.find_spec("torch") is None:
        pytest.skip("snippet needs torch (pip install torch==2.13.0)")
    data = _mnist_dir()
    if "load_mnist" in code and data is None:
        pytest.skip("snippet needs the MNIST files (STADV_DATA_DIR)")
    if "load_or_train(" in code and "quick=True" not in code and os.environ.get("STADV_RUN_SLOW") != "1":
        pytest.skip("snippet trains a full-scale network (tens of minutes): set STADV_RUN_SLOW=1")
    env = dict(os.environ, STADV_MODEL_DIR=str(tmp_path / "models"), MPLBACKEND="Agg")
    if data is not None:
        env["STADV_DATA_DIR"] = str(data)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"snippet failed:\n{code}\n--- stderr ---\n{proc.stderr[-3000:]}"
