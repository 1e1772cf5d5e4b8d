"""Deprecated import path: the backend contract now lives in :mod:`stadv_ref.kernels`.

Kept as a re-export so code written against ``stadv_ref.interface`` keeps working.
"""
from .kernels import KERNELS, Backend, collect_kernels  # noqa: F401

__all__ = ["KERNELS", "Backend", "collect_kernels"]
