"""Hypothesis settings and strategies shared by the property tests.

Import them with ``from _settings import SETTINGS, seeds`` (``pythonpath = ["tests"]`` in
``pyproject.toml``). They live here, not in ``conftest.py``: several folders have a
``conftest.py``, and ``from _settings import ...`` would pick whichever was imported first.
"""
from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)
"""Hypothesis settings of the core property tests: 30 examples, no deadline, reproducible."""
seeds = st.integers(0, 2**32 - 1)
"""Seeds for ``numpy.random.default_rng``."""
