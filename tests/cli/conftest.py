"""Every CLI test runs in its own temporary directory: a default output folder (``stadv-out/``) or any
other relative path lands there, never in the checkout (issue #20, deliverable 3)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
