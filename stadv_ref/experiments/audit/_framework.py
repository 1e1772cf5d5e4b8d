r"""The audit's framework: findings, verdicts, the check registry and shared helpers.

A check is a function ``fn(ctx, fnd)`` registered with :func:`_check`: it measures
something with the project's own code and fills the :class:`Finding` ``fnd`` (numbers,
criterion, verdict, measured). :data:`CHECKS` lists the registered checks in report order
(the order in which the ``checks_*`` modules are imported by the package ``__init__``).
The helpers build the random networks and the linear classifiers the checks measure on
(Section 2's one-hidden-layer net ``f(x) = v^T sigma(W x + b)``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..._io import _jsonable as _io_jsonable
from ...network import OneHiddenLayerNet

__all__ = ["VERDICTS", "Finding", "CHECKS"]

VERDICTS = ("holds", "holds with correction", "fails", "ambiguous", "not run")


@dataclass
class Finding:
    """One row of the audit table.

    Attributes
    ----------
    id : str
        Short label: the paper's item (``"Prop. 1"``) and the erratum (``"[E2]"``).
    claim : str
        The claim or equation under audit.
    paper : str
        What the paper says (as printed).
    measured : str
        What was measured, with the numbers.
    verdict : str
        One of :data:`VERDICTS`, computed from ``numbers`` with ``criterion``.
    criterion : str
        The stated threshold that turns the numbers into the verdict.
    numbers : dict
        The raw measurements (JSON-serialisable).
    seconds : float
        Wall time of the check.
    """

    id: str
    claim: str
    paper: str
    measured: str = ""
    verdict: str = "not run"
    criterion: str = ""
    numbers: dict = field(default_factory=dict)
    seconds: float = 0.0


class _Ctx:
    """Shared state of one audit run: the seed and the size preset."""

    def __init__(self, seed, quick):
        self.seed = int(seed)
        self.quick = bool(quick)

    def rng(self, salt):
        """A generator seeded from the run seed and a per-check salt (reproducible, independent)."""
        return np.random.default_rng([self.seed, int(salt)])


CHECKS = []
"""Registered checks, in report order: ``(key, function)``."""


def _check(key, item, claim, paper):
    """Register a check under ``key`` for the audit row ``item`` (its claim, and what the paper prints).

    The decorated ``fn(ctx, fnd)`` measures and fills the row ``fnd`` (a :class:`Finding`
    made from ``item``, ``claim``, ``paper``): ``numbers``, ``criterion``, ``verdict``,
    ``measured``. What is registered is the check ``ctx -> Finding``.
    """
    def deco(fn):
        @functools.wraps(fn)
        def check(ctx):
            fnd = Finding(item, claim, paper)
            fn(ctx, fnd)
            return fnd

        CHECKS.append((key, check))
        return check

    return deco


def _graded(as_printed, corrected):
    """Verdict of a claim measured both as printed and with its stated correction.

    ``"holds"`` if the printed claim passes its criterion, ``"holds with correction"``
    if only the corrected one does, ``"fails"`` if neither.
    """
    if as_printed:
        return "holds"
    return "holds with correction" if corrected else "fails"


def _also_require(fnd, failed, criterion, measured, **numbers):
    """Add a further condition to the row ``fnd``: its numbers, criterion and measurement; ``failed`` fails it."""
    fnd.numbers.update(numbers)
    fnd.criterion += "; and " + criterion
    fnd.measured += "; " + measured
    if failed:
        fnd.verdict = "fails"


def _rel(a, b):
    """Relative difference ``|a - b| / max(|b|, tiny)`` (elementwise max)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _g(x, digits=3):
    """Compact number formatting for the table."""
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def _random_net(rng, H, W, m, K=None, scale=1.0, bias=False):
    """A random one-hidden-layer net on ``H x W`` images (binary when ``K`` is None)."""
    d = H * W
    Wm = rng.standard_normal((m, d)) * scale / np.sqrt(d)
    v = rng.standard_normal(m) if K is None else rng.standard_normal((K, m))
    b = 0.1 * rng.standard_normal(m) if bias else None
    c = None if K is None else 0.5 * rng.standard_normal(K)
    return OneHiddenLayerNet(Wm, v, b, c, image_shape=(H, W))


def _linear_net(v, image_shape, offset=2.0):
    """``f(x) = v^T x`` as a one-hidden-layer net: ``W = I``, ``b = offset``.

    ``relu(x + b) = x + b`` for ``x >= -b``, so the net is linear on the inputs used here.
    """
    v = np.asarray(v, float).ravel()
    return OneHiddenLayerNet(np.eye(v.size), v, np.full(v.size, offset), None, image_shape=image_shape)


def _jsonable(obj):
    """JSON-ready copy of audit numbers (the networks kept in the soundness suite left out)."""
    return _io_jsonable(obj, skip=("net_obj",))
