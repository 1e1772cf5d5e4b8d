r"""The figures of the reproduction, drawn from the dicts of :mod:`.curves` and saved atomically.

* :func:`plot_lower_bound` -- Fig. 2: Algorithm 1's exact loss and Theorem 1's value vs ``eps``
  (Eqs. (6)-(8); the linearisation ``l~`` of [E8] in its own panel);
* :func:`plot_samples` -- Figs. 3, 9, 10: benign input ``x*``, adversarial input ``g(r*; x*)``
  (Eq. (1)) and the flow;
* :func:`plot_convergence` -- Fig. 4: best exact loss per outer iteration of Algorithm 1;
* :func:`plot_certify` -- Figs. 5 and 11: 0/1 adversarial loss from the upper bounds vs ``eps``;
* :func:`plot_attack` -- Fig. 6: stAdv success rate and adversarial accuracy vs ``tau``;
* :func:`plot_training` -- the loss and accuracy per epoch of ``stadv train``.

matplotlib is imported only when a figure is drawn.
"""
from __future__ import annotations

import numpy as np

from .._io import _pyplot, atomic_savefig
from ..transform import tied, warp

__all__ = ["plot_lower_bound", "plot_samples", "plot_convergence", "plot_certify", "plot_attack", "plot_training"]


def plot_lower_bound(curves, path, *, title="Lower bounds of the adversarial loss (Fig. 2)"):
    """Fig. 2: Algorithm 1's exact loss and Theorem 1's value vs ``eps``, one colour per network."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, (name, c) in enumerate(curves.items()):
        col = f"C{k}"
        axes[0].plot(c["eps"], c["exact_loss"], "o-", color=col, label=f"{name}: Algorithm 1 (exact l_adv)")
        axes[0].plot(c["eps"], c["theorem_exact_loss"], "s:", color=col, label=f"{name}: Theorem 1 pair (exact)")
        axes[1].plot(c["eps"], c["theorem_value"], "s--", color=col, label=f"{name}: Theorem 1 value (l~)")
        axes[1].plot(c["eps"], c["linearized_loss"], "o-", color=col, label=f"{name}: Algorithm 1 pair (l~)")
    axes[0].set_title("certified: true l_adv = f(g(r*;x*)) - f(x*)")
    axes[1].set_title("estimates: the paper's linearisation l~ [E8]")
    for ax in axes:
        ax.set_xlabel("transformation threshold eps")
        ax.set_ylabel("adversarial loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return atomic_savefig(fig, path)


def plot_samples(samples, path, *, title="Benign and adversarial inputs found by Algorithm 1 (Fig. 3)"):
    """Fig. 3/9/10: rows of (benign x*, adversarial g(r*; x*), flow field)."""
    plt = _pyplot()
    n = len(samples)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for row, s in enumerate(samples):
        x = np.asarray(s["x"], float)
        flow = np.asarray(s["flow"], float)
        flow4 = tied(flow[None]) if flow.ndim == 2 else flow[None]
        xadv = warp(x[None], flow4)[0]
        lim = max(1.0, float(np.abs(x).max()), float(np.abs(xadv).max()))
        axes[row, 0].imshow(x, cmap="gray", vmin=-lim if x.min() < 0 else 0, vmax=lim)
        axes[row, 1].imshow(xadv, cmap="gray", vmin=-lim if x.min() < 0 else 0, vmax=lim)
        H, W = x.shape
        step = max(1, H // 14)
        yy, xx = np.mgrid[0:H:step, 0:W:step]
        du, dv = flow4[0, 0][::step, ::step], flow4[0, 1][::step, ::step]
        axes[row, 2].imshow(x, cmap="gray", alpha=0.35, vmin=-lim if x.min() < 0 else 0, vmax=lim)
        mag = float(np.sqrt(flow4[0, 0] ** 2 + flow4[0, 1] ** 2).max())
        axes[row, 2].quiver(xx, yy, du, dv, color="C3", angles="xy")  # arrows autoscaled for visibility
        axes[row, 2].set_xlabel(f"max |flow| = {mag:.2g} px (arrows rescaled)", fontsize=7)
        axes[row, 0].set_ylabel(s.get("label", ""), fontsize=8)
        for col, t in enumerate(("benign input", "adversarial input", "flow vector")):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(t, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return atomic_savefig(fig, path)


def plot_convergence(curves, path, *, title="Convergence of Algorithm 1 (Fig. 4)"):
    """Fig. 4: best exact loss after each outer iteration, one line per (network, eps).

    ``curves`` maps labels ``"f_<net>, eps = <e>"`` (or any label) to lists; lines of the same network share
    a colour and lines of the same ``eps`` a marker.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    nets, epss = [], []
    for label in curves:
        net, _, e = label.partition(", ")
        nets += [net] if net not in nets else []
        epss += [e] if e not in epss else []
    markers = "osd^v<>p*h"
    for label, ys in curves.items():
        net, _, e = label.partition(", ")
        ax.plot(range(len(ys)), ys, marker=markers[epss.index(e) % len(markers)], ms=4, lw=1.2,
                color=f"C{nets.index(net) % 10}", label=label)
    ax.set_xlabel("outer iteration (0 = Theorem 1 pair)")
    ax.set_ylabel("exact adversarial loss (best so far)")
    ax.set_yscale("symlog", linthresh=1e-1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title)
    return atomic_savefig(fig, path)


_METHOD_LABEL = {"paper-frobenius": "Frobenius (as printed, unsound)",
                 "paper-spectral": "spectral (as printed, unsound)", "frobenius": "Frobenius (sound)",
                 "spectral": "spectral (sound)", "sdp": "SDP", "tight": "tight (ours)", "linear": "linear (Eq. 16)",
                 "aabb": "AABB box"}


def plot_certify(curves, path, *, by="method", title="0/1 adversarial loss from upper bounds"):
    """Figs. 5/11: 0/1 loss vs ``eps``; one panel per method (``by="method"``) or per network (``by="network"``)."""
    plt = _pyplot()
    nets = list(curves)
    methods = list(next(iter(curves.values()))["methods"])
    allm = []
    for c in curves.values():
        allm += [m for m in c["methods"] if m not in allm]
    panels = methods if by == "method" else nets
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, p in zip(axes[0], panels):
        lines = nets if by == "method" else [m for m in allm if m in curves[p]["methods"]]
        for k, ln in enumerate(lines):
            c = curves[ln] if by == "method" else curves[p]
            m = p if by == "method" else ln
            if by == "network":
                k = allm.index(m)
            ax.plot(c["eps"], c["zero_one"][m], "o-", ms=3, color=f"C{k}",
                    label=ln if by == "method" else _METHOD_LABEL.get(m, m))
        ax.set_title(_METHOD_LABEL.get(p, p) if by == "method" else f"f_{p}", fontsize=9)
        ax.set_xlabel("eps")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("0/1 adversarial loss")
    fig.suptitle(title, fontsize=10)
    return atomic_savefig(fig, path)


def plot_attack(curves, path, *, title="stAdv attack vs tau (Fig. 6)"):
    """Fig. 6: (a) success rate vs ``tau``; (b) adversarial accuracy vs ``tau`` (benign accuracy at tau = inf)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, (name, c) in enumerate(curves.items()):
        axes[0].plot(c["tau"], c["success_rate"], "o-", color=f"C{k}", label=name)
        axes[1].plot(c["tau"], c["adv_accuracy"], "o-", color=f"C{k}", label=name)
        axes[1].axhline(c["benign_accuracy"], color=f"C{k}", ls=":", lw=1)
    axes[0].set_ylabel("attack success rate")
    axes[1].set_ylabel("adversarial test accuracy (dotted: benign)")
    for ax, t in zip(axes, ("(a)", "(b)")):
        ax.set_xlabel("tau")
        ax.set_title(t)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return atomic_savefig(fig, path)


def plot_training(history, path, variant):
    """Training history of ``stadv train``: loss terms and training accuracy per epoch."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for k in ("loss", "data_loss", "reg"):
        if k in history and len(history[k]):
            axes[0].plot(np.arange(1, len(history[k]) + 1), history[k], "o-", ms=3, label=k)
    if "train_acc" in history and len(history["train_acc"]):
        axes[1].plot(np.arange(1, len(history["train_acc"]) + 1), history["train_acc"], "o-", ms=3)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("epoch")
    axes[0].set_title(f"{variant}: training loss")
    axes[1].set_title("training accuracy")
    axes[0].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    return atomic_savefig(fig, path)
