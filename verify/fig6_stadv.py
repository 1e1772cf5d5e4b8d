"""Figure 6: stAdv attack success rate and adversarial test accuracy vs tau, every variant.

For each trained network (``nt, rand, fro, spe, stn, at, sdp``; 500 hidden units,
:func:`stadv_ref.training.load_or_train`) the untargeted stAdv attack
(:func:`stadv_ref.stadv_attack`, batched L-BFGS) is run on the first ``n`` MNIST
test images for every ``tau`` in ``{0, 0.025, 0.05, 0.075, 0.1}``.

* success rate = fraction of the correctly classified test images whose
  adversarial image is misclassified;
* adversarial accuracy = fraction of all ``n`` test images still classified
  correctly after the attack (misclassified images count as errors); the
  benign accuracy (the paper's ``tau = infinity``) is drawn at the right.

The paper's claim (Section 4.2): ``sdp`` has about 0.1 lower success rate and
0.08 higher adversarial accuracy than the other training objectives. We compare
``sdp`` with the mean and with the best of ``nt, fro, spe, stn, at`` (``rand`` is
not a training objective) over ``tau > 0``, and call the claim reproduced when
the mean differences reach at least half the claimed sizes (success rate
``<= -0.05``, adversarial accuracy ``>= +0.04``); the stricter reading (better
than *every* other objective by that much) is reported too. The JSON also gives
each network's median clean logit margin ``f_y - max_{i != y} f_i``: at a fixed
``tau`` the CW term competes with ``tau L_flow``, so networks with small logit
margins (hinge-loss training: ``fro, spe, stn, sdp``) look harder to attack than
cross-entropy ones (``nt, at``) for that reason alone.

Usage::

    python verify/fig6_stadv.py --quick [--out DIR] [--code-options]

Writes ``fig6_stadv.png`` and ``fig6_stadv.json``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "fig6"
VARIANTS = ("nt", "rand", "fro", "spe", "stn", "at", "sdp")
TAUS = (0.0, 0.025, 0.05, 0.075, 0.1)
CLAIM = {"success_rate_diff": -0.1, "adv_accuracy_diff": 0.08}

try:  # imported as verify.fig6_stadv
    from verify._common import output_dir, parse_variants, pyplot, save_figure, script_parser, write_text_atomic
except ImportError:  # run as a script: verify/ is on sys.path
    sys.path.insert(0, str(HERE))
    from _common import output_dir, parse_variants, pyplot, save_figure, script_parser, write_text_atomic


def parse_args(argv):
    p = script_parser(__doc__, DEFAULT_OUT,
                      quick_help="quick networks (5,000 training images, few epochs), 100 test images, 100 iterations")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--taus", default=",".join(map(str, TAUS)))
    p.add_argument("--n", type=int, default=None, help="test images (default 1000, quick 100)")
    p.add_argument("--max-iter", type=int, default=None, help="L-BFGS iterations (default 200, quick 100)")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--model-dir", default=None, help="model cache (default STADV_MODEL_DIR or ~/.cache)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--code-options", action="store_true",
                   help="the public stAdv code's choices: diagonal neighbours, symmetric flow padding, "
                        "border warp padding")
    p.add_argument("--progress", action="store_true")
    return p.parse_args(argv)


def write_json(path, obj):
    """``obj`` as indented JSON (unknown types through ``float``; NaN kept as ``NaN``), written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=1, default=float) + "\n")


def evaluate(net, X, y, taus, max_iter, options, progress=False):
    """Success rate and adversarial accuracy of ``net`` under stAdv for each tau."""
    from stadv_ref import stadv_attack

    correct = net.predict(X) == y
    Xc, yc = X[correct], y[correct]
    rows = []
    for tau in taus:
        t0 = time.perf_counter()
        res = stadv_attack(net, Xc, yc, tau, max_iter=max_iter, progress=progress, **options)
        dt = time.perf_counter() - t0
        ok = res.success
        rows.append({
            "tau": tau,
            "success_rate": float(ok.mean()) if ok.size else float("nan"),
            "adv_accuracy": float((~ok).sum() / len(y)),
            "n_attacked": int(ok.size),
            "mean_flow_norm_success": float(res.flow_norm[ok].mean()) if ok.any() else None,
            "mean_l_diff_success": float(res.l_diff[ok].mean()) if ok.any() else None,
            "mean_flow_loss_success": float(res.flow_loss[ok].mean()) if ok.any() else None,
            "seconds": dt,
        })
    return float(correct.mean()), rows


def claim_check(results, taus):
    """Compare sdp with the other training objectives over tau > 0."""
    others = [v for v in ("nt", "fro", "spe", "stn", "at") if v in results]
    if "sdp" not in results or not others:
        return {"verdict": "not evaluated (sdp or the other variants missing)"}
    pos = [k for k, t in enumerate(taus) if t > 0]

    def col(v, key):
        return np.array([results[v]["per_tau"][k][key] for k in pos], dtype=float)

    out = {"compared_with": others, "taus": [taus[k] for k in pos], "claim": CLAIM}
    for key, name in (("success_rate", "success_rate_diff"), ("adv_accuracy", "adv_accuracy_diff")):
        sdp = col("sdp", key)
        mean_others = np.mean([col(v, key) for v in others], axis=0)
        best = (np.min if key == "success_rate" else np.max)([col(v, key) for v in others], axis=0)
        out[name + "_vs_mean_per_tau"] = (sdp - mean_others).tolist()
        out[name + "_vs_best_per_tau"] = (sdp - best).tolist()
        out[name + "_vs_mean"] = float(np.mean(sdp - mean_others))
        out[name + "_vs_best"] = float(np.mean(sdp - best))
    ok_s = out["success_rate_diff_vs_mean"] <= CLAIM["success_rate_diff"] / 2
    ok_a = out["adv_accuracy_diff_vs_mean"] >= CLAIM["adv_accuracy_diff"] / 2
    out["reproduces_vs_mean"] = bool(ok_s and ok_a)
    # the stricter reading: better than EVERY other objective
    out["reproduces_vs_each"] = bool(out["success_rate_diff_vs_best"] <= CLAIM["success_rate_diff"] / 2
                                     and out["adv_accuracy_diff_vs_best"] >= CLAIM["adv_accuracy_diff"] / 2)
    best_s = min(others, key=lambda v: np.mean(col(v, "success_rate")))
    out["most_robust_other"] = best_s
    out["verdict_short"] = (
        f"sdp - mean(others): success {out['success_rate_diff_vs_mean']:+.3f} (paper -0.1), "
        f"adv. acc. {out['adv_accuracy_diff_vs_mean']:+.3f} (paper +0.08); "
        f"sdp - best other ({best_s}): {out['success_rate_diff_vs_best']:+.3f}, "
        f"{out['adv_accuracy_diff_vs_best']:+.3f}"
    )
    out["verdict"] = (
        f"Over tau>0, sdp minus the mean of {'/'.join(others)}: success rate "
        f"{out['success_rate_diff_vs_mean']:+.3f} (paper about -0.1), adversarial accuracy "
        f"{out['adv_accuracy_diff_vs_mean']:+.3f} (paper about +0.08) -> "
        + ("reproduces against the mean" if out["reproduces_vs_mean"] else "does NOT reproduce against the mean")
        + f". Against the best other objective ({best_s}): success rate {out['success_rate_diff_vs_best']:+.3f}, "
        f"adversarial accuracy {out['adv_accuracy_diff_vs_best']:+.3f} -> "
        + ("reproduces against every other objective." if out["reproduces_vs_each"]
           else "does NOT reproduce against every other objective.")
    )
    return out


def plot(results, taus, path, title):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    inf_x = max(taus) + 0.03
    for v, r in results.items():
        t = [row["tau"] for row in r["per_tau"]]
        style = dict(marker="o", lw=2.2 if v == "sdp" else 1.2, ms=4)
        axes[0].plot(t, [row["success_rate"] for row in r["per_tau"]], label=v, **style)
        line, = axes[1].plot(t, [row["adv_accuracy"] for row in r["per_tau"]], label=v, **style)
        axes[1].plot([inf_x], [r["benign_accuracy"]], marker="*", ms=9, color=line.get_color())
    axes[0].set_xlabel(r"$\tau$")
    axes[0].set_ylabel("attack success rate")
    axes[0].set_title("(a) stAdv success rate")
    axes[1].set_xlabel(r"$\tau$  ($\star$ at right: benign, $\tau=\infty$)")
    axes[1].set_ylabel("adversarial test accuracy")
    axes[1].set_title("(b) accuracy on stAdv images")
    axes[1].set_xticks(list(taus) + [inf_x])
    axes[1].set_xticklabels([f"{t:g}" for t in taus] + [r"$\infty$"])
    for ax in axes:
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    save_figure(fig, path, title, dpi=80, fontsize=9)


def main(argv=None):
    args = parse_args(argv)
    import stadv_ref
    from stadv_ref.attacks import STADV_CODE_OPTIONS
    from stadv_ref.training import load_or_train

    out = output_dir(args.out)
    variants = parse_variants(args.variants)
    taus = [float(t) for t in args.taus.split(",")]
    n = args.n or (100 if args.quick else 1000)
    max_iter = args.max_iter or (100 if args.quick else 200)
    options = dict(STADV_CODE_OPTIONS) if args.code_options else {}
    X, y = stadv_ref.load_mnist("test", data_dir=args.data_dir, limit=n)
    t_start = time.perf_counter()
    results, networks = {}, {}
    for v in variants:
        t0 = time.perf_counter()
        net, meta = load_or_train(v, cache_dir=args.model_dir, hidden=args.hidden, seed=args.seed,
                                  quick=args.quick, data_dir=args.data_dir, progress=args.progress,
                                  with_metadata=True)
        networks[v] = {
            "test_accuracy_full_test_set": float(meta.get("test_accuracy", float("nan"))),
            "n_train": int(meta.get("n_train", -1)),
            "epochs": int(meta.get("epochs", -1)),
            "hidden": args.hidden,
            "load_or_train_seconds": time.perf_counter() - t0,
        }
        if "test_accuracy_with_stn" in meta:
            networks[v]["test_accuracy_with_stn"] = float(meta["test_accuracy_with_stn"])
        from stadv_ref import cw_margin

        margin = -cw_margin(net, X, y, kappa=float("inf"))[0]  # f_y - max_{i != y} f_i, clean images
        networks[v]["median_clean_margin_correct"] = (
            float(np.median(margin[margin > 0])) if np.any(margin > 0) else None)
        benign, rows = evaluate(net, X, y, taus, max_iter, options, args.progress)
        results[v] = {"benign_accuracy": benign, "per_tau": rows}
        print(f"{v:5s} benign {benign:.3f} | " + " ".join(
            f"tau={r['tau']:g}: succ {r['success_rate']:.3f} acc {r['adv_accuracy']:.3f}" for r in rows),
            flush=True)
    claim = claim_check(results, taus)
    print(claim["verdict"])
    settings = {
        "quick": args.quick, "n_test": n, "max_iter": max_iter, "taus": taus, "hidden": args.hidden,
        "seed": args.seed, "attack": "stadv_attack(method='batched'), untargeted, kappa=0",
        "attack_options": options or "defaults: neighborhood='4', flow_padding='zeros', warp_padding='zeros'",
        "backend": stadv_ref.current_backend_name(),
    }
    doc = {
        "figure": "6",
        "settings": settings,
        "networks": networks,
        "results": results,
        "claim_check": claim,
        "seconds_total": time.perf_counter() - t_start,
        "definitions": {
            "success_rate": "among correctly classified test images, fraction whose stAdv image is misclassified",
            "adv_accuracy": "among all n test images, fraction classified correctly after the attack",
            "benign_accuracy": "accuracy on the same n clean test images (tau = infinity)",
        },
    }
    write_json(out / "fig6_stadv.json", doc)
    title = (f"Figure 6 ({'quick' if args.quick else 'full'}): first {n} MNIST test images, stAdv max_iter="
             f"{max_iter}\n{claim.get('verdict_short', claim['verdict'])}")
    plot(results, taus, out / "fig6_stadv.png", title)
    return doc


if __name__ == "__main__":
    main()
