r"""Numerical audit of the paper's equations and claims (``stadv audit``).

Every check below *measures* something with the project's own code and turns
the measurement into a verdict with a threshold stated in the check (the
``criterion`` field); no verdict is written down in advance. The items follow
``EQUATIONS.md``: Eqs. (1)-(4), Propositions 1-3, Theorems 1-2, the Jacobian
range, the AABB, every upper bound's soundness against a strong attack, the
multi-class rules, and the errata [E1]..[E14].

Verdicts
--------
``holds``
    The claim as printed agrees with the measurement.
``holds with correction``
    The claim as printed disagrees, a stated correction agrees, and the
    correction itself is measured.
``fails``
    The claim is contradicted by a measured counter-example.
``ambiguous``
    The printed text admits several readings; the measurement says which one is
    consistent with the rest of the paper.
``not run``
    The check could not run (a missing optional module, or an error; the
    reason is in ``measured``).

Use :func:`run_audit` (or ``stadv audit --out DIR``); :func:`write_report`
writes ``audit.json`` and ``audit.md``. Every attack in the audit is
:func:`stadv_ref.attacks.flow_pgd.flow_pgd_attack`; :func:`strong_attack` is kept
as a deprecated alias of it.

Modules (checks register in this order, which is the report's):

* :mod:`._framework` -- :class:`Finding`, :data:`VERDICTS`, the :data:`CHECKS` registry and helpers;
* :mod:`.checks_transform` -- Eqs. (1)-(3), Propositions 1-3, [E1]-[E7], [E11];
* :mod:`.checks_lower` -- Eqs. (4)-(14), Theorems 1-2, Algorithm 1, [E8]-[E10], [E14];
* :mod:`.checks_upper` -- Eq. (16), the upper bounds, the SDP, certification, [E7], [E12], [E13];
* :mod:`.report` -- :func:`format_markdown`, :func:`write_report`.
"""
from __future__ import annotations

import time
import traceback

from tqdm.auto import tqdm

from ..._validate import check_positive_int
from ...attacks.flow_pgd import flow_pgd_attack
from ...transform import tied
from . import checks_lower, checks_transform, checks_upper  # noqa: F401  (registration order = report order)
from ._framework import CHECKS, VERDICTS, Finding, _Ctx, _jsonable
from .report import format_markdown, write_report

__all__ = [
    "VERDICTS",
    "Finding",
    "CHECKS",
    "run_audit",
    "write_report",
    "format_markdown",
    "strong_attack",
]


def run_audit(*, seed=0, quick=False, only=None, progress=True):
    """Run every registered check and return the findings.

    Parameters
    ----------
    seed : int
        Seeds every random network, input and attack restart.
    quick : bool
        Smaller attack budgets (for tests); the default is the reported audit.
    only : iterable of str, optional
        Keys of :data:`CHECKS` to run (default all).
    progress : bool
        tqdm progress bar.

    Returns
    -------
    list of Finding
        One per check; a check that raises is reported with verdict ``"not run"``
        and the error in ``measured`` (never silently dropped).
    """
    seed = check_positive_int("seed", seed, minimum=0)
    keys = [k for k, _ in CHECKS]
    if only is not None:
        only = list(only)
        unknown = sorted(set(only) - set(keys))
        if unknown:
            raise ValueError(f"unknown audit check(s) {unknown}; known: {keys}")
    ctx = _Ctx(seed, quick)
    todo = [(k, fn) for k, fn in CHECKS if only is None or k in only]
    findings = []
    bar = tqdm(todo, desc="audit", unit="check", disable=not progress)
    for key, fn in bar:
        bar.set_postfix_str(key)
        t0 = time.perf_counter()
        try:
            fnd = fn(ctx)
        except ImportError as exc:
            fnd = Finding(key, fn.__name__, "", measured=f"not run: {exc}", verdict="not run")
        except Exception as exc:  # report, never hide
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            fnd = Finding(key, fn.__name__, "", measured=f"error: {tb}", verdict="not run")
        fnd.seconds = round(time.perf_counter() - t0, 3)
        fnd.numbers = _jsonable(fnd.numbers)
        assert fnd.verdict in VERDICTS, fnd.verdict
        findings.append(fnd)
    return findings


def strong_attack(net, eps, *, tied_flow=True, classes=None, x=None, input_range=(0.0, 1.0),
                  restarts=8, steps=150, seed=0, x_starts=None, r_starts=None):
    """Deprecated alias: :func:`~stadv_ref.attacks.flow_pgd.flow_pgd_attack` with the cosine schedule.

    Calls ``flow_pgd_attack(net, eps, tied=tied_flow, ..., schedule="cosine")`` and returns its
    result as the tuple of the former audit attack.

    Parameters
    ----------
    net : OneHiddenLayerNet
    eps : float
        Budget of Eq. (3).
    tied_flow : bool
        Tied flows (the paper) or untied flows.
    classes, x, input_range, restarts, steps, seed, x_starts, r_starts
        As in :func:`~stadv_ref.attacks.flow_pgd.flow_pgd_attack`.

    Returns
    -------
    value : float
        The best exact ``l_adv`` found (a valid lower bound on the supremum).
    x_best : ndarray, shape (H, W)
    flow_best : ndarray, shape (2, H, W)
    """
    res = flow_pgd_attack(net, eps, tied=tied_flow, classes=classes, x=x, input_range=input_range,
                          restarts=restarts, steps=steps, seed=seed, x_starts=x_starts, r_starts=r_starts,
                          schedule="cosine")
    flow = tied(res.flow[None])[0] if tied_flow else res.flow
    return res.value, res.x, flow
