"""The ``stadv`` command line (the top layer: it may import every other part of the package)."""
from __future__ import annotations

from .main import build_parser, load_data, main

__all__ = ["main", "build_parser", "load_data"]
