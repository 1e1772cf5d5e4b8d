"""Figures 3, 9 and 10: benign input x*, adversarial input g(r*; x*) and flow r* from Algorithm 1.

Runs the ``fig3`` step of ``stadv reproduce`` (:func:`stadv_ref.experiments.steps.step_fig3`),
which draws the pairs Algorithm 1 found in the ``fig2`` step (run first when its outputs are
missing) at the sample budgets: Figure 3 is ``f_nt``, Figure 9 ``f_rand``, Figure 10 ``f_at``.
``x*`` lies in ``[-1, 1]^d`` (the impossibility analysis allows any ``||x||_inf <= 1``).

Writes ``<out>/fig3/fig3_samples_<variant>.png`` and ``fig3.json``.

Usage::

    python verify/fig3_samples.py [--quick | --full] [--out DIR] [--data-dir DIR] [--cache-dir DIR]
                                  [--seed N] [--force fig3] [--no-progress] [-q]

This is ``stadv reproduce --only fig3`` with the same options: the same step(s), the same
settings (:func:`stadv_ref.experiments.pipeline.quick_config` / ``full_config``) and the same
numbers as the full reproduction. The default ``--out`` is that of ``stadv reproduce``
(``stadv-out/reproduce-quick``, ``--full``: ``stadv-out/reproduce-full``), so the networks,
the bound cache and the finished steps are shared with it: a step already computed with the
same settings is skipped (``--force fig3`` recomputes it). The last lines printed name the
files written.
"""
from __future__ import annotations

import sys

from stadv_ref.cli import main as stadv

STEPS = ("fig3",)


def main(argv=None):
    """``stadv reproduce --only fig3 ARGV...``; returns the exit status."""
    return stadv(["reproduce", "--only", *STEPS, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
