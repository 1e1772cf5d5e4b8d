"""Experiments: the reproduction pipeline (``stadv reproduce``), its curves and plots, and the audit."""
from __future__ import annotations

__all__ = []
