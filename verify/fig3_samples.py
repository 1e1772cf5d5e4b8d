"""Figures 3, 9 and 10: benign input x*, adversarial input g(r*; x*) and flow r* from Algorithm 1.

Figure 3 of the paper uses the normally trained network, Figure 9 the randomly
initialised one and Figure 10 the adversarially trained one, at eps = 0.05, 0.5
and 5. ``x*`` lies in ``[-1, 1]^d`` (the impossibility analysis allows any
``||x||_inf <= 1``; it is not an MNIST image) and is shown on a grey scale from
-1 (black) to 1 (white). The flow is tied (``du = dv = r``): the colour shows
``r`` and the arrows ``(du, dv) = (r, r)`` (rescaled for visibility, factor in the
title). The true class ``y`` is the class the network predicts at the Theorem 1
input (``lower_bound_attack``'s default).

Usage::

    python verify/fig3_samples.py --quick [--out DIR]

Writes ``fig3_<variant>.png`` per network and ``fig3_samples.json``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "fig3"
PAPER_FIGURE = {"nt": "Figure 3", "rand": "Figure 9", "at": "Figure 10"}

try:  # imported as verify.fig3_samples
    from verify._common import close_record, output_dir, pyplot, save_figure, script_parser
    from verify.fig2_lower_bound import add_network_options, networks_from_args
except ImportError:  # run as a script: verify/ is on sys.path
    sys.path.insert(0, str(HERE))
    from _common import close_record, output_dir, pyplot, save_figure, script_parser
    from fig2_lower_bound import add_network_options, networks_from_args


def parse_args(argv):
    p = script_parser(__doc__, DEFAULT_OUT, quick_help="quick networks and fewer iterations")
    p.add_argument("--variants", default="nt,rand,at")
    p.add_argument("--eps", default="0.05,0.5,5")
    p.add_argument("--max-iter", type=int, default=None, help="default 30, quick 10")
    p.add_argument("--n", type=int, default=16)
    add_network_options(p)
    return p.parse_args(argv)


def plot_variant(variant, samples, path, quick):
    plt = pyplot()
    k = len(samples)
    fig, axes = plt.subplots(k, 3, figsize=(8.4, 2.8 * k), squeeze=False)
    for row, s in zip(axes, samples):
        x, xa, r = s["_x"], s["_x_adv"], s["_r"]
        row[0].imshow(x, cmap="gray", vmin=-1, vmax=1)
        row[0].set_title(f"benign x*: class {s['pred_benign']}", fontsize=8)
        row[1].imshow(xa, cmap="gray", vmin=-1, vmax=1)
        row[1].set_title(f"adversarial g(r*;x*): class {s['pred_adv']}\nexact l_adv = {s['exact_loss']:.3g}",
                         fontsize=8)
        lim = max(float(np.abs(r).max()), 1e-12)
        row[2].imshow(r, cmap="RdBu_r", vmin=-lim, vmax=lim)
        H, W = r.shape
        step = 2
        rows, cols = np.mgrid[0:H:step, 0:W:step]
        rr = r[::step, ::step]
        scale = 1.5 / lim  # longest arrow 1.5 px
        row[2].quiver(cols, rows, rr * scale, rr * scale, angles="xy", scale_units="xy", scale=1,
                      width=0.004, color="k")
        row[2].set_xlim(-0.5, W - 0.5)
        row[2].set_ylim(H - 0.5, -0.5)
        row[2].set_title(f"flow r* (du = dv), |r| <= {lim:.2g} px\narrows x{scale:.3g}", fontsize=8)
        row[0].set_ylabel(f"eps = {s['eps']:g}")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    save_figure(fig, path, f"{PAPER_FIGURE.get(variant, '')}: Algorithm 1 samples, $f_{{{variant}}}$"
                + (" [quick]" if quick else ""), dpi=80)


def main(argv=None):
    """Run Figures 3/9/10; returns the JSON-ready result dict."""
    import stadv_ref
    from stadv_ref.impossibility import LABELS

    args = parse_args(argv)
    outdir = output_dir(args.out)
    quick = args.quick
    eps_list = [float(e) for e in args.eps.split(",")]
    max_iter = args.max_iter if args.max_iter is not None else (10 if quick else 30)
    variants, nets, info = networks_from_args(args)
    out = {"figure": "Figures 3, 9, 10: samples found by Algorithm 1", "quick": quick,
           "settings": {"eps": eps_list, "max_iter": max_iter, "n": args.n, "flow": "tied"},
           "labels": dict(LABELS), "networks": info, "results": {}}
    t0 = time.time()
    for v, net in nets.items():
        samples = []
        for eps in eps_list:
            res = stadv_ref.lower_bound_attack(net, eps, n=args.n, max_iter=max_iter, store_iterates=False,
                                               record_estimates=False)
            xa = np.asarray(stadv_ref.warp(res.x[None], stadv_ref.tied(res.flow[None])))[0]
            out_b, out_a = net(res.x[None])[0], net(xa[None])[0]
            s = {
                "eps": eps, "y": res.y, "classes": res.classes,
                "pred_benign": int(np.argmax(out_b)), "pred_adv": int(np.argmax(out_a)),
                "exact_loss": res.exact_loss, "theorem_value": res.theorem_value,
                "theorem_exact_loss": res.theorem_exact_loss, "midpoint_loss": res.midpoint_loss,
                "flow_norm": res.flow_norm, "max_abs_flow_px": float(np.abs(res.flow).max()),
                "x_inf_norm": res.x_inf_norm, "fraction_x_at_pm1": float(np.mean(np.abs(res.x) == 1)),
                "_x": res.x, "_x_adv": xa, "_r": res.flow,
            }
            samples.append(s)
            print(f"[fig3] {v} eps={eps:g}: exact {res.exact_loss:.4g}, class {s['pred_benign']} -> "
                  f"{s['pred_adv']}, max|r| {s['max_abs_flow_px']:.3g} px ({time.time() - t0:.0f}s)", flush=True)
        plot_variant(v, samples, outdir / f"fig3_{v}.png", quick)
        out["results"][v] = {"paper_figure": PAPER_FIGURE.get(v),
                             "samples": [{k: val for k, val in s.items() if not k.startswith("_")}
                                         for s in samples]}
    close_record(out, variants, nets, info, t0, outdir / "fig3_samples.json")
    print(f"[fig3] wrote {outdir}")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
