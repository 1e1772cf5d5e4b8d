"""Figures 5 and 11: 0/1 adversarial loss from the upper bounds vs eps, per trained network.

Runs the ``fig5`` and ``fig11`` steps of ``stadv reproduce``
(:func:`stadv_ref.experiments.steps.step_fig5`, ``step_fig11``): for each network of Section 4.2
:func:`stadv_ref.experiments.curves.certify_curve` computes the class-pair bounds once and
certifies a test point at ``eps`` iff ``f_y(x) - f_i(x) > eps B_iy`` for all ``i != y``
(appendix 6.7 with the [E13] correction). Figure 5 uses the paper's bounds (the printed
Frobenius and spectral bounds, NOT sound [E12], and the SDP of Section 4.1), Figure 11 the
sound ones (plus ``tight``, ours, on some networks). The ``fig11`` step also attacks a few
certified test points at their certified radius with the projected-gradient flow attack
(:func:`stadv_ref.experiments.curves.soundness_spot_check`): none may be flipped.

Writes ``<out>/fig5/fig5_certification.png``, ``fig5.json``, ``<out>/fig11/fig11_certification.png``
and ``fig11.json`` (with ``spot_check``). The 28x28 checkerboard that breaks the printed bounds
([E12]) is a row of the audit (``stadv audit --only E12-paper-spectral E12-paper-frobenius``).

Usage::

    python verify/fig5_certification.py [--quick | --full] [--out DIR] [--data-dir DIR] [--cache-dir DIR]
                                        [--seed N] [--force fig5 fig11] [--no-progress] [-q]

This is ``stadv reproduce --only fig5 fig11`` with the same options: the same step(s), the same
settings (:func:`stadv_ref.experiments.pipeline.quick_config` / ``full_config``) and the same
numbers as the full reproduction. The default ``--out`` is that of ``stadv reproduce``
(``stadv-out/reproduce-quick``, ``--full``: ``stadv-out/reproduce-full``), so the networks,
the bound cache and the finished steps are shared with it: a step already computed with the
same settings is skipped (``--force fig5 fig11`` recomputes them). The last lines printed name the
files written.
"""
from __future__ import annotations

import sys

from stadv_ref.cli import main as stadv

STEPS = ("fig5", "fig11")


def main(argv=None):
    """``stadv reproduce --only fig5 fig11 ARGV...``; returns the exit status."""
    return stadv(["reproduce", "--only", *STEPS, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
