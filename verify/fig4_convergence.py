"""Figure 4: convergence of Algorithm 1 (best exact adversarial loss per outer iteration).

Runs the ``fig4`` step of ``stadv reproduce`` (:func:`stadv_ref.experiments.steps.step_fig4`),
which plots the per-iteration histories recorded by the ``fig2`` step (run first when its outputs
are missing): iteration 0 is the Theorem 1 pair, then the best exact ``l_adv`` after each outer
iteration (Eq. (8)). How the x-update loops end (fixed point, cycle, cap: [E10]) is a row of the
audit (``stadv audit --only E10``).

Writes ``<out>/fig4/fig4_convergence.png`` and ``fig4.json``.

Usage::

    python verify/fig4_convergence.py [--quick | --full] [--out DIR] [--data-dir DIR] [--cache-dir DIR]
                                      [--seed N] [--force fig4] [--no-progress] [-q]

This is ``stadv reproduce --only fig4`` with the same options: the same step(s), the same
settings (:func:`stadv_ref.experiments.pipeline.quick_config` / ``full_config``) and the same
numbers as the full reproduction. The default ``--out`` is that of ``stadv reproduce``
(``stadv-out/reproduce-quick``, ``--full``: ``stadv-out/reproduce-full``), so the networks,
the bound cache and the finished steps are shared with it: a step already computed with the
same settings is skipped (``--force fig4`` recomputes it). The last lines printed name the
files written.
"""
from __future__ import annotations

import sys

from stadv_ref.cli import main as stadv

STEPS = ("fig4",)


def main(argv=None):
    """``stadv reproduce --only fig4 ARGV...``; returns the exit status."""
    return stadv(["reproduce", "--only", *STEPS, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
