r"""A small, committable copy of a reproduction (``docs/quick/``, ``docs/full/``): :func:`export_docs`.

The copy holds what a reader compares with the paper and nothing heavy (no model weights, no data):
``report.md`` with its links made flat, the PNG figures, ``summaries.json`` (each finished step's
summary, wall and CPU seconds and provenance, read from its sealed marker) and ``jobs.json`` (every
stored job's wall and CPU seconds, and the numbers of the stored ``fig6`` jobs, so the finished
(network, tau) attacks of a stopped run are kept too). Every file read is checked against its seal
(:func:`stadv_ref._io.read_sealed_json`): a damaged marker or job file is an error, never copied.
"""
from __future__ import annotations

from pathlib import Path

from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_sealed_json
from .jobs import JOB_VERSION
from .steps import MARKER_VERSION

__all__ = ["export_docs"]


def _summaries(out):
    """``{step: {seconds, cpu_seconds, summary, provenance}}`` of every step marker in ``out``."""
    found = {}
    for marker in sorted(out.glob("*/*.json")):
        if marker.stem != marker.parent.name:
            continue
        m = read_sealed_json(marker, f"marker of step {marker.stem!r}", MARKER_VERSION)
        found[marker.stem] = {k: m.get(k) for k in ("seconds", "cpu_seconds", "summary", "provenance")}
    return found


def _jobs(out):
    """``({step: {job: {seconds, cpu_seconds}}}, {fig6 job: its result})`` of every stored job in ``out``."""
    timings, fig6 = {}, {}
    for path in sorted(out.glob("*/jobs/*.json")):
        step = path.parent.parent.name
        rec = read_sealed_json(path, "job result", JOB_VERSION)
        timings.setdefault(step, {})[path.stem] = {"seconds": rec.get("seconds"),
                                                   "cpu_seconds": rec.get("cpu_seconds")}
        if step == "fig6":
            fig6[path.stem] = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v)
                               for k, v in rec["result"].items()}
    return timings, fig6


def export_docs(out, dest):
    """Copy a reproduction's ``report.md``, figures and small JSON summaries into ``dest`` (flat).

    For committing a small copy (e.g. ``docs/quick/``) that the README can show; the figures are
    saved at 100 dpi (well under 300 KB each).

    Parameters
    ----------
    out : path
        The ``--out`` directory of ``stadv reproduce`` (finished, or stopped and rendered with
        ``--report-only``).
    dest : path
        Where to write; created if needed. Files of an earlier export with the same names are replaced.

    Returns
    -------
    list of str
        The files written: the PNGs, ``report.md``, ``summaries.json`` and ``jobs.json``.

    Raises
    ------
    ValueError
        ``out`` holds no ``report.md``, or a step marker or stored job there is damaged.
    """
    out, dest = Path(out), Path(dest)
    if not (out / "report.md").is_file():
        raise ValueError(f"{str(out)!r} holds no report.md; run stadv reproduce first")
    summaries = _summaries(out)
    timings, fig6 = _jobs(out)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    text = (out / "report.md").read_text()
    for png in sorted(p for p in out.glob("*/*.png") if p.parent.name != "models"):
        atomic_write_bytes(dest / png.name, png.read_bytes())
        text = text.replace(f"({png.parent.name}/{png.name})", f"({png.name})")
        written.append(str(dest / png.name))
    text = text.replace(f"`{out / 'models'}`", "`<out>/models`")
    atomic_write_text(dest / "report.md", text)
    written.append(str(dest / "report.md"))
    atomic_write_json(dest / "summaries.json", summaries)
    atomic_write_json(dest / "jobs.json", {"jobs": timings, "fig6_finished_jobs": fig6})
    written += [str(dest / "summaries.json"), str(dest / "jobs.json")]
    return written
