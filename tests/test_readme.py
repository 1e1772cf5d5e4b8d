"""Every Python snippet of README.md runs as written (issue #20: the README cannot rot).

Each ```python block runs in a fresh interpreter in a temporary directory (so files it writes
stay out of the checkout), with ``STADV_DATA_DIR`` passed through and a private model cache.
A block that needs the MNIST files is skipped when they are absent, one that imports torch is
skipped without torch, and a block that trains a full-scale network (``load_or_train`` without
``quick=True``) is marked slow and runs only with ``STADV_RUN_SLOW=1``. A block that is only a
fragment (it uses names it does not define) says so with a ``# fragment`` comment and is only
compiled.

The numbers the README quotes from a committed output (a ``<!-- numbers from PATH -->`` block:
docs/quick/report.md of ``stadv reproduce --quick``, docs/audit.md of ``stadv audit``) must appear
in that file, so an edited or stale number fails.
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


# Numbers the README quotes from a committed output (issue #20: one figure pipeline). A line
# ``<!-- numbers from PATH -->`` marks the next block (paragraph or table); every number in it must
# appear verbatim in PATH. Signs count where written ("-0.098", "+0.078"); a hyphen between two
# numbers is a range ("1.39-1.76"), not a sign.
_MARKER = re.compile(r"^<!-- numbers from (\S+) -->$", re.M)
_NUMBER = re.compile(r"(?:(?<=[\s(|,:])[-+])?(?<![\d.])(?<!Section )\d+\.\d+|(?<![\d.])\d+%|(?<![\d.])\d+/\d+(?![\d.])")
_SOURCED_SECTIONS = ("## Impossibility: Theorems 1-2", "## stAdv attack, trained networks and Figure 6")


def _marked_blocks():
    """(source path, README line, block text) of every marked block."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in _MARKER.finditer(text):
        rest = text[m.end():].lstrip("\n")
        block = rest.split("\n\n", 1)[0]
        out.append((m.group(1), text.count("\n", 0, m.start()) + 1, block))
    return out


def _section(text, heading):
    start = text.index(heading)
    nxt = text.find("\n## ", start + 1)
    return text[start:] if nxt < 0 else text[start:nxt]


def test_readme_numbers_come_from_committed_outputs():
    text = README.read_text(encoding="utf-8")
    for heading in _SOURCED_SECTIONS:  # each section quotes the main job's report, through a marked block
        sec = _section(text, heading)
        assert "<!-- numbers from docs/quick/report.md -->" in sec, heading
        for img in re.findall(r"!\[[^]]*\]\(([^)]+)\)", sec):  # its figures are the main job's
            assert img.startswith("docs/quick/") and (REPO / img).exists(), (heading, img)
    blocks = _marked_blocks()
    assert len(blocks) >= 4
    for source, line, block in blocks:
        numbers = _NUMBER.findall(block)
        assert numbers, f"README.md:{line}: a marked block without numbers"
        ref = (REPO / source).read_text(encoding="utf-8")
        missing = [n for n in numbers if not re.search(r"(?<![\d.])" + re.escape(n) + r"(?![\d])", ref)]
        assert not missing, f"README.md:{line}: {missing} not in {source}"
