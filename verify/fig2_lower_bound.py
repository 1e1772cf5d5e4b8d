"""Figure 2: lower bounds on the adversarial loss vs eps (Theorem 1 and Algorithm 1).

Runs the ``fig2`` step of ``stadv reproduce``
(:func:`stadv_ref.experiments.steps.step_fig2`, after the ``models`` step when the networks are
not cached): for the ``nt``, ``rand`` and ``at`` networks and each budget ``eps`` up to 7.84,
:func:`stadv_ref.experiments.curves.lower_bound_curve` records Theorem 1's value (an estimate
about the linearisation ``l~``, [E8]), the exact ``l_adv`` at the Theorem 1 pair and Algorithm 1's
exact ``l_adv`` (certified lower bounds, Eqs. (6)-(8)).

Writes ``<out>/fig2/fig2_lower_bound.png``, ``fig2.json`` (the numbers: one curve per network)
and ``pairs.npz`` (the pairs ``x*``, ``r*`` that Figures 3 and 4 use).

The [E5] (untied vs tied budget) and [E10] (x-update cycles) checks that an earlier version of
this script ran are rows of the audit (``stadv audit --only E5 E10``).

Usage::

    python verify/fig2_lower_bound.py [--quick | --full] [--out DIR] [--data-dir DIR] [--cache-dir DIR]
                                      [--seed N] [--force fig2] [--no-progress] [-q]

This is ``stadv reproduce --only fig2`` with the same options: the same step(s), the same
settings (:func:`stadv_ref.experiments.pipeline.quick_config` / ``full_config``) and the same
numbers as the full reproduction. The default ``--out`` is that of ``stadv reproduce``
(``stadv-out/reproduce-quick``, ``--full``: ``stadv-out/reproduce-full``), so the networks,
the bound cache and the finished steps are shared with it: a step already computed with the
same settings is skipped (``--force fig2`` recomputes it). The last lines printed name the
files written.
"""
from __future__ import annotations

import sys

from stadv_ref.cli import main as stadv

STEPS = ("fig2",)


def main(argv=None):
    """``stadv reproduce --only fig2 ARGV...``; returns the exit status."""
    return stadv(["reproduce", "--only", *STEPS, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
