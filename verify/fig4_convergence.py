"""Figure 4: convergence of Algorithm 1 (adversarial loss per outer iteration).

For each network (``nt``, ``rand``, ``at``; 512 hidden units) and a few eps,
runs :func:`stadv_ref.lower_bound_attack` and plots, per outer iteration (after
its r-update, Eq. (8)), the exact ``l_adv`` of the current pair, the best so far
(the certified lower bound the attack returns) and the midpoint estimate of
Eq. (7). Iteration 0 is the Theorem 1 pair. The JSON also counts how the
x-update loops ended (fixed point, cycle [E10], or the cap), how many pixels each
x-update flips and how close (Hamming distance) the patterns of one loop come to repeating.

Usage::

    python verify/fig4_convergence.py --quick [--out DIR]

Writes ``fig4_convergence.png`` and ``fig4_convergence.json``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "fig4"

try:  # imported as verify.fig4_convergence
    from verify._common import close_record, output_dir, pyplot, save_figure, script_parser
    from verify.fig2_lower_bound import add_network_options, networks_from_args
except ImportError:  # run as a script
    sys.path.insert(0, str(HERE))
    from _common import close_record, output_dir, pyplot, save_figure, script_parser
    from fig2_lower_bound import add_network_options, networks_from_args


def parse_args(argv):
    p = script_parser(__doc__, DEFAULT_OUT)
    p.add_argument("--variants", default="nt,rand,at")
    p.add_argument("--eps", default="0.5,2,7.84")
    p.add_argument("--max-iter", type=int, default=None, help="default 50, quick 20")
    p.add_argument("--max-x-iter", type=int, default=20)
    p.add_argument("--n", type=int, default=16)
    add_network_options(p)
    return p.parse_args(argv)


def curves(res):
    """Per outer iteration: exact loss after the r-update, best so far, midpoint estimate."""
    init = [h for h in res.history if h["kind"] == "init"][-1]
    r_steps = [h for h in res.history if h["kind"] == "r"]
    exact = [init["exact_loss"]] + [h["exact_loss"] for h in r_steps]
    mid = [init["midpoint_loss"]] + [h["midpoint_loss"] for h in r_steps]
    best, b = [], -np.inf
    outer_best = {}
    for h in res.history:
        b = max(b, h["exact_loss"])
        o = -1 if h["outer"] is None else h["outer"]
        outer_best[o] = b
    best = [outer_best.get(-1)] + [outer_best[h["outer"]] for h in r_steps]
    return {"iteration": list(range(len(exact))), "exact_loss": exact, "best_exact_loss": best,
            "midpoint_loss": mid}


def x_loop_statistics(res):
    """How the x-updates behave ([E10]): pixels flipped per update and, per x-loop, the smallest
    Hamming distance between two visited sign patterns (0 = an exact cycle)."""
    xs = [h for h in res.history if h["kind"] == "x"]
    flips = [h["n_flips"] for h in xs]
    min_ham = []
    for o in sorted({h["outer"] for h in xs}):
        X = np.array([h["x"].ravel() for h in xs if h["outer"] == o])
        if len(X) > 1:
            D = (X[:, None, :] != X[None, :, :]).sum(-1)
            min_ham.append(int(D[np.triu_indices(len(X), 1)].min()))
    for h in res.history:  # keep memory small
        h.pop("x", None)
        h.pop("flow", None)
    return {"x_update_mean_flips": float(np.mean(flips)) if flips else None,
            "x_update_flips_first": flips[:5],
            "x_loop_min_hamming": min_ham}


def main(argv=None):
    """Run Figure 4; returns the JSON-ready result dict."""
    plt = pyplot()

    import stadv_ref
    from stadv_ref.impossibility import LABELS

    args = parse_args(argv)
    outdir = output_dir(args.out)
    quick = args.quick
    eps_list = [float(e) for e in args.eps.split(",")]
    max_iter = args.max_iter if args.max_iter is not None else (20 if quick else 50)
    variants, nets, info = networks_from_args(args)
    out = {"figure": "Figure 4: convergence of Algorithm 1", "quick": quick,
           "settings": {"eps": eps_list, "max_iter": max_iter, "max_x_iter": args.max_x_iter, "n": args.n,
                        "flow": "tied", "y": "class predicted at the Theorem 1 input"},
           "labels": dict(LABELS), "networks": info, "results": {}}
    t0 = time.time()
    k = max(1, len(nets))
    fig, axes = plt.subplots(1, k, figsize=(4.2 * k, 3.6), squeeze=False)
    for ax, (v, net) in zip(axes[0], nets.items()):
        out["results"][v] = {}
        for j, eps in enumerate(eps_list):
            t1 = time.time()
            res = stadv_ref.lower_bound_attack(net, eps, n=args.n, max_iter=max_iter,
                                               max_x_iter=args.max_x_iter, tol=1e-9, store_iterates=True)
            c = curves(res)
            c.update(x_loop_statistics(res))
            c.update({"y": res.y, "final_exact_loss": res.exact_loss, "theorem_value": res.theorem_value,
                      "converged": res.converged, "n_outer": res.n_outer, "x_loop_outcomes": res.x_loop_outcomes,
                      "cycle_periods": [cy["period"] for cy in res.cycles if cy["kind"] == "x"],
                      "seconds": time.time() - t1})
            final = c["best_exact_loss"][-1]
            reach = [i for i, b in enumerate(c["best_exact_loss"]) if b >= 0.95 * final] if final > 0 else [0]
            c["iterations_to_95pct_of_final"] = reach[0]
            out["results"][v][f"{eps:g}"] = c
            col = f"C{j}"
            ax.plot(c["iteration"], c["exact_loss"], "-", color=col, lw=1, alpha=0.7)
            ax.plot(c["iteration"], c["best_exact_loss"], "--", color=col, lw=1.8, label=f"eps = {eps:g}")
            print(f"[fig4] {v} eps={eps:g}: final {res.exact_loss:.4g}, 95% at iteration "
                  f"{c['iterations_to_95pct_of_final']}, outcomes {res.x_loop_outcomes} "
                  f"({time.time() - t0:.0f}s)", flush=True)
        ax.set_title(f"$f_{{{v}}}$", fontsize=10)
        ax.set_xlabel("outer iteration of Algorithm 1")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("exact $\\ell_{adv}$ (solid: current, dashed: best)")
    axes[0][0].legend(fontsize=8)
    save_figure(fig, outdir / "fig4_convergence.png",
                "Figure 4: convergence of Algorithm 1" + (" [quick]" if quick else ""), dpi=90)
    close_record(out, variants, nets, info, t0, outdir / "fig4_convergence.json")
    print(f"[fig4] wrote {outdir}")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
