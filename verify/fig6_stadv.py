"""Figure 6: stAdv attack success rate and adversarial test accuracy vs tau, every variant.

Runs the ``fig6`` step of ``stadv reproduce`` (:func:`stadv_ref.experiments.steps.step_fig6`):
for each trained network :func:`stadv_ref.experiments.curves.attack_curve` runs the untargeted
stAdv attack (:func:`stadv_ref.stadv_attack`, batched L-BFGS) on the first test images for every
``tau`` and records the success rate (among correctly classified images), the adversarial
accuracy (all images), the benign accuracy and the median clean logit margin
``f_y - max_{i != y} f_i`` (at a fixed ``tau`` the CW term competes with ``tau L_flow``, so
small-margin networks look harder to attack). The ``report.md`` of a full ``stadv reproduce``
compares ``f_sdp`` with the other training objectives (the paper: about 0.1 lower success rate,
0.08 higher adversarial accuracy). The public stAdv code's options are ``stadv attack --stadv-code``.

Writes ``<out>/fig6/fig6_stadv.png`` and ``fig6.json``.

Usage::

    python verify/fig6_stadv.py [--quick | --full] [--out DIR] [--data-dir DIR] [--cache-dir DIR]
                                [--seed N] [--force fig6] [--no-progress] [-q]

This is ``stadv reproduce --only fig6`` with the same options: the same step(s), the same
settings (:func:`stadv_ref.experiments.pipeline.quick_config` / ``full_config``) and the same
numbers as the full reproduction. The default ``--out`` is that of ``stadv reproduce``
(``stadv-out/reproduce-quick``, ``--full``: ``stadv-out/reproduce-full``), so the networks,
the bound cache and the finished steps are shared with it: a step already computed with the
same settings is skipped (``--force fig6`` recomputes it). The last lines printed name the
files written.
"""
from __future__ import annotations

import sys

from stadv_ref.cli import main as stadv

STEPS = ("fig6",)


def main(argv=None):
    """``stadv reproduce --only fig6 ARGV...``; returns the exit status."""
    return stadv(["reproduce", "--only", *STEPS, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
