"""Reporting of the audit: the markdown table (:func:`format_markdown`) and the files (:func:`write_report`)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..._io import atomic_write_text
from ..._provenance import provenance
from ...backend import current_backend_name
from ._framework import VERDICTS, _jsonable

__all__ = ["format_markdown", "write_report"]


def _md_cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def format_markdown(findings, *, title="Numerical audit of the paper"):
    """The audit table as markdown (claim, paper, measured, verdict) plus the criteria."""
    counts = {v: sum(f.verdict == v for f in findings) for v in VERDICTS}
    lines = [f"# {title}", "",
             "Every verdict below is computed from the measurement with the stated criterion "
             "(`stadv audit`, see `stadv_ref/experiments/audit/`).", "",
             "Summary: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n), "",
             "| # | Item | Claim | Paper says | Measured | Verdict |", "|---|---|---|---|---|---|"]
    for k, f in enumerate(findings, 1):
        lines.append(f"| {k} | {_md_cell(f.id)} | {_md_cell(f.claim)} | {_md_cell(f.paper)} | "
                     f"{_md_cell(f.measured)} | **{f.verdict}** |")
    lines += ["", "## Criteria", ""]
    for k, f in enumerate(findings, 1):
        lines.append(f"{k}. **{f.id}** ({f.seconds:.1f} s): {f.criterion or '-'}")
    return "\n".join(lines) + "\n"


def write_report(findings, out, *, seed=None, quick=None):
    """Write ``audit.json`` (with the ``provenance`` block of :func:`stadv_ref._provenance.provenance`) and
    ``audit.md`` into ``out`` (atomically).

    Returns
    -------
    dict
        ``{"json": path, "markdown": path}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = dict(seed=seed, quick=quick, verdicts={v: sum(f.verdict == v for f in findings) for v in VERDICTS},
                   findings=[asdict(f) for f in findings],
                   provenance=provenance(backend=current_backend_name(), seed=seed))
    pj, pm = out / "audit.json", out / "audit.md"
    atomic_write_text(pj, json.dumps(_jsonable(payload), indent=2) + "\n")
    atomic_write_text(pm, format_markdown(findings))
    return {"json": str(pj), "markdown": str(pm)}
