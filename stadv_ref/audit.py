"""Deprecated import path: re-exports :mod:`stadv_ref.experiments.audit` (the module moved there in the layered tree)."""
from __future__ import annotations

from .experiments.audit import (  # noqa: F401
    CHECKS,
    VERDICTS,
    Finding,
    format_markdown,
    run_audit,
    strong_attack,
    write_report,
)

__all__ = ["VERDICTS", "Finding", "CHECKS", "run_audit", "write_report", "format_markdown", "strong_attack"]
