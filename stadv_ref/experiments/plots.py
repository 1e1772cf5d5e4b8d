r"""The figures of the reproduction, drawn from the dicts of :mod:`.curves` and saved atomically.

* :func:`plot_lower_bound` -- Fig. 2: Algorithm 1's exact loss and Theorem 1's value vs ``eps``
  (Eqs. (6)-(8); the linearisation ``l~`` of [E8] in its own panel);
* :func:`plot_samples` -- Figs. 3, 9, 10: benign input ``x*``, adversarial input ``g(r*; x*)``
  (Eq. (1)) and the flow, with colour bars;
* :func:`plot_convergence` -- Fig. 4: best exact loss per outer iteration of Algorithm 1;
* :func:`plot_certify` -- Figs. 5 and 11: 0/1 adversarial loss from the upper bounds vs ``eps``
  (logarithmic ``eps`` axis; a symmetric-log one with a linear stretch to ``eps = 0`` when the grid holds 0);
  also the certified fractions of the per-image certificates vs ``eps`` (``ylabel=``, issue #21);
* :func:`plot_attack` -- Fig. 6: stAdv success rate and adversarial accuracy vs ``tau``, with the
  numbers in a table below the panels (curves of several networks coincide);
* :func:`plot_training` -- the loss and accuracy per epoch of ``stadv train``.

Every line has its own colour, marker (hollow, so coinciding points stay visible) and line style;
legends sit outside the data. The default titles are neutral (they name no paper figure): the
reproduction (:mod:`.steps`) passes the paper's figure numbers as ``title=``.

matplotlib is imported only when a figure is drawn.
"""
from __future__ import annotations

import numpy as np

from .._io import _pyplot, atomic_savefig
from ..transform import tied, warp

__all__ = ["plot_lower_bound", "plot_samples", "plot_convergence", "plot_certify", "plot_attack", "plot_training"]

_RC = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
       "legend.fontsize": 9, "figure.titlesize": 12}
"""Font sizes of every figure (readable at 100 dpi)."""
_MARKERS = "osD^vhXP*p<>"
_LINESTYLES = ("-", "--", "-.", ":")


def _style(k, ms=6):
    """Colour, hollow marker and line style of the ``k``-th line (all three differ between neighbours)."""
    return dict(color=f"C{k % 10}", marker=_MARKERS[k % len(_MARKERS)], linestyle=_LINESTYLES[k % len(_LINESTYLES)],
                ms=ms, mfc="none", mew=1.4, lw=1.5)


def _figure(plt, nrows=1, ncols=1, *, panel=(4.0, 3.2), extra_height=0.0, **kw):
    """A constrained-layout figure of ``nrows x ncols`` panels of ``panel`` inches (``axes`` always 2-D)."""
    size = (panel[0] * ncols, panel[1] * nrows + extra_height)
    return plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained", **kw)


def _grid_shape(n, max_cols=3):
    ncols = min(n, max_cols)
    return -(-n // ncols), ncols


def _eps_axis(ax, eps, label="transformation threshold eps"):
    """A logarithmic ``eps`` axis showing every grid point.

    All positive: ``log``. With ``eps = 0``: ``symlog``, linear below the smallest positive ``eps``, so 0
    is drawn at the left. Minor ticks at every grid point; labelled ticks at the grid points that do not
    crowd each other.
    """
    eps = np.unique(np.asarray(eps, float))
    pos = eps[eps > 0]
    if len(pos) == 0:
        ax.set_xlabel(label)
        return
    if len(pos) == len(eps):
        ax.set_xscale("log")
        scale = "log scale"
    else:
        ax.set_xscale("symlog", linthresh=float(pos.min()), linscale=0.5)
        scale = f"log scale; linear below {pos.min():g}"
    tr = ax.xaxis.get_transform()
    t = tr.transform(eps)
    span = float(t.max() - t.min()) or 1.0
    ax.set_xlim(*tr.inverted().transform([t.min() - 0.06 * span, t.max() + 0.06 * span]))
    major, last = [], np.inf  # from the right: the largest eps always labelled
    for e, te in zip(eps[::-1], t[::-1]):
        if last - te >= 0.13 * span:
            major.append(e)
            last = te
    if major[-1] != eps[0]:  # the smallest eps (0) labelled too, in place of a crowding neighbour
        if last - t[0] < 0.13 * span:
            major.pop()
        major.append(eps[0])
    ax.set_xticks(eps, minor=True)
    ax.set_xticks(major, [f"{e:g}" for e in major])
    ax.tick_params(axis="x", which="minor", length=3, labelbottom=False)
    ax.set_xlabel(f"{label} ({scale})")


def plot_lower_bound(curves, path, *, title="Lower bounds of the adversarial loss"):
    """Fig. 2: Algorithm 1's exact loss and Theorem 1's value vs ``eps``, one colour per network."""
    plt = _pyplot()
    with plt.rc_context(_RC):
        fig, axes = _figure(plt, 1, 2, panel=(5.2, 3.8))
        axes = axes[0]
        for k, (name, c) in enumerate(curves.items()):
            st = dict(color=f"C{k % 10}", ms=6, mfc="none", mew=1.4, lw=1.5)
            axes[0].plot(c["eps"], c["exact_loss"], "o-", label=f"{name}: Algorithm 1 (exact l_adv)", **st)
            axes[0].plot(c["eps"], c["theorem_exact_loss"], "s:", label=f"{name}: Theorem 1 pair (exact)", **st)
            axes[1].plot(c["eps"], c["theorem_value"], "s--", label=f"{name}: Theorem 1 value (l~)", **st)
            axes[1].plot(c["eps"], c["linearized_loss"], "o-", label=f"{name}: Algorithm 1 pair (l~)", **st)
        axes[0].set_title("(a) certified: true l_adv = f(g(r*;x*)) - f(x*)")
        axes[1].set_title("(b) estimates: the paper's linearisation l~ [E8]")
        for ax in axes:
            ax.set_xlabel("transformation threshold eps")
            ax.set_ylabel("adversarial loss")
            ax.grid(alpha=0.3)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, fontsize=8)
        fig.suptitle(title)
        return atomic_savefig(fig, path)


def _flow_cmap(plt):
    """Dark-to-orange part of ``plasma``: arrows that stand out on a light, faded image."""
    from matplotlib.colors import ListedColormap

    return ListedColormap(plt.get_cmap("plasma")(np.linspace(0.0, 0.8, 256)), name="flow")


def plot_samples(samples, path, *, title="Benign input, adversarial input and flow"):
    """Figs. 3/9/10: rows of (benign ``x*``, adversarial ``g(r*; x*)``, flow field), with colour bars.

    ``samples`` is a list of dicts with ``x`` (``(H, W)``), ``flow`` (tied ``(H, W)`` or ``(2, H, W)``)
    and an optional row ``label``. The images share one grey scale (colour bar below them); the flow
    is drawn as arrows over the faded benign input (every ``H // 14``-th pixel; pixels moving less
    than 5% of the row's largest displacement left out), scaled so that the longest arrow spans 1.5
    arrow spacings and coloured by ``|flow|`` in pixels (the row's colour bar gives the true size).
    """
    plt = _pyplot()
    with plt.rc_context(_RC):
        n = len(samples)
        fig, axes = _figure(plt, n, 3, panel=(2.9, 2.7), extra_height=0.6)
        cmap = _flow_cmap(plt)
        rows = []
        for s in samples:
            x = np.asarray(s["x"], float)
            flow = np.asarray(s["flow"], float)
            flow4 = tied(flow[None]) if flow.ndim == 2 else flow[None]
            rows.append((x, warp(x[None], flow4)[0], flow4[0]))
        lim = max([1.0] + [float(max(np.abs(x).max(), np.abs(xa).max())) for x, xa, _ in rows])
        vmin = -lim if any(x.min() < 0 for x, _, _ in rows) else 0.0
        for row, (s, (x, xadv, fl)) in enumerate(zip(samples, rows)):
            im = axes[row, 0].imshow(x, cmap="gray", vmin=vmin, vmax=lim)
            axes[row, 1].imshow(xadv, cmap="gray", vmin=vmin, vmax=lim)
            H, W = x.shape
            step = max(1, H // 14)
            mag = np.hypot(fl[0], fl[1])
            top = float(mag.max())
            axes[row, 2].imshow(x, cmap="gray", vmin=vmin, vmax=lim, alpha=0.3)
            yy, xx = np.mgrid[0:H:step, 0:W:step]
            sub = (slice(None, None, step), slice(None, None, step))
            keep = mag[sub] > 0.05 * top if top > 0 else np.zeros(yy.shape, bool)
            q = axes[row, 2].quiver(xx[keep], yy[keep], fl[0][sub][keep], fl[1][sub][keep], mag[sub][keep],
                                    cmap=cmap, clim=(0.0, top or 1.0), angles="xy", scale_units="xy",
                                    scale=(top / (1.5 * step)) if top > 0 else 1.0, width=0.01, headwidth=3.5,
                                    headlength=4, headaxislength=3.5)
            axes[row, 2].set_xlim(-0.5, W - 0.5)
            axes[row, 2].set_ylim(H - 0.5, -0.5)
            cb = fig.colorbar(q, ax=axes[row, 2], shrink=0.9, pad=0.03)
            cb.set_label("|flow| (pixels)", fontsize=9)
            axes[row, 2].set_xlabel(f"max |flow| = {top:.2g} px; arrows x{1.5 * step / (top or 1.0):.2g}",
                                    fontsize=8)
            axes[row, 0].set_ylabel(s.get("label", ""), fontsize=9)
            for col, t in enumerate(("(a) benign input", "(b) adversarial input", "(c) flow field")):
                axes[row, col].set_xticks([])
                axes[row, col].set_yticks([])
                if row == 0:
                    axes[row, col].set_title(t, fontsize=10)
        cb = fig.colorbar(im, ax=axes[:, :2], location="bottom", shrink=0.7, pad=0.02, aspect=35)
        cb.set_label("pixel value of (a) and (b)", fontsize=9)
        fig.suptitle(title)
        return atomic_savefig(fig, path)


def plot_convergence(curves, path, *, title="Convergence of Algorithm 1"):
    """Fig. 4: best exact loss after each outer iteration, one line per (network, eps).

    ``curves`` maps labels ``"f_<net>, eps = <e>"`` (or any label) to lists; lines of the same network share
    a colour, lines of the same ``eps`` a marker and a line style.
    """
    plt = _pyplot()
    with plt.rc_context(_RC):
        fig, axes = _figure(plt, 1, 1, panel=(7.0, 4.2))
        ax = axes[0, 0]
        nets, epss = [], []
        for label in curves:
            net, _, e = label.partition(", ")
            nets += [net] if net not in nets else []
            epss += [e] if e not in epss else []
        for label, ys in curves.items():
            net, _, e = label.partition(", ")
            j = epss.index(e)
            ax.plot(range(len(ys)), ys, marker=_MARKERS[j % len(_MARKERS)], ls=_LINESTYLES[j % len(_LINESTYLES)],
                    ms=5, mfc="none", mew=1.2, lw=1.3, color=f"C{nets.index(net) % 10}", label=label)
        ax.set_xlabel("outer iteration (0 = Theorem 1 pair)")
        ax.set_ylabel("exact adversarial loss (best so far)")
        ax.set_yscale("symlog", linthresh=1e-1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        ax.set_title(title)
        return atomic_savefig(fig, path)


_METHOD_LABEL = {"paper-frobenius": "Frobenius (as printed, unsound)",
                 "paper-spectral": "spectral (as printed, unsound)", "frobenius": "Frobenius (sound)",
                 "spectral": "spectral (sound)", "sdp": "SDP", "tight": "tight (ours)", "linear": "linear (Eq. 16)",
                 "aabb": "AABB box", "local": "local (per image)",
                 "certified_fast": "certified: per-image fast", "certified_tight": "certified: per-image tight",
                 "certified_global": "certified: best global bound", "attack_accuracy": "accuracy under attack"}


def plot_certify(curves, path, *, by="method", title="0/1 adversarial loss from upper bounds",
                 ylabel="0/1 adversarial loss"):
    """Figs. 5/11: 0/1 loss vs ``eps``; one panel per method (``by="method"``) or per network (``by="network"``).

    Panels in a grid of at most 3 columns with a shared ``y`` axis; a logarithmic ``eps`` axis on the
    grid of ``eps`` (:func:`_eps_axis`); one legend for the whole figure, below the panels. A line keeps
    its style in every panel. ``ylabel`` names the plotted quantity (``zero_one[method]``; the
    per-image certificate step plots certified fractions there).
    """
    plt = _pyplot()
    with plt.rc_context(_RC):
        nets = list(curves)
        allm = []
        for c in curves.values():
            allm += [m for m in c["methods"] if m not in allm]
        panels = allm if by == "method" else nets
        nrows, ncols = _grid_shape(len(panels))
        fig, axes = _figure(plt, nrows, ncols, panel=(3.7, 3.1), extra_height=0.5, sharey=True)
        flat = axes.ravel()
        for ax, p in zip(flat, panels):
            if by == "method":
                lines = [(k, f"f_{n}", curves[n], p) for k, n in enumerate(nets) if p in curves[n]["methods"]]
            else:
                lines = [(allm.index(m), _METHOD_LABEL.get(m, m), curves[p], m) for m in curves[p]["methods"]]
            for k, label, c, m in lines:
                ax.plot(c["eps"], c["zero_one"][m], label=label, **_style(k, ms=5))
            ax.set_title(_METHOD_LABEL.get(p, p) if by == "method" else f"f_{p}")
            _eps_axis(ax, [e for c in curves.values() for e in c["eps"]], label="eps")
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
        for ax in flat[len(panels):]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel)
        for i, ax in enumerate(flat[:len(panels)]):
            ax.tick_params(axis="y", labelleft=True)
            if i + ncols < len(panels):
                ax.set_xlabel("")  # the panel below names the axis
        handles = {}
        for ax in flat[:len(panels)]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        where = dict(loc="outside right center") if ncols == 1 else \
            dict(loc="outside lower center", ncols=min(len(handles), 6 if by == "method" else 4))
        fig.legend(list(handles.values()), list(handles), **where)
        fig.suptitle(title)
        return atomic_savefig(fig, path)


def _attack_table(ax, curves):
    """The numbers of :func:`plot_attack` as a table in ``ax``: per network, benign accuracy, then the
    success rate and the adversarial accuracy at every ``tau`` (row labels in the line colours)."""
    ax.axis("off")
    taus = list(next(iter(curves.values()))["tau"])
    cols = ["benign acc."] + [f"success\ntau={t:g}" for t in taus] + [f"adv. acc.\ntau={t:g}" for t in taus]
    rows, cells = [], []
    for name, c in curves.items():
        rows.append(f"f_{name}")
        at = [list(c["tau"]).index(t) if t in c["tau"] else None for t in taus]
        vals = [c["benign_accuracy"]] + [np.nan if i is None else c[key][i] for key in ("success_rate", "adv_accuracy")
                                         for i in at]
        cells.append([f"{v:.3f}" for v in vals])
    tab = ax.table(cellText=cells, rowLabels=rows, colLabels=cols, loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(9)
    tab.scale(1.0, 1.25)
    for (r, col), cell in tab.get_celld().items():
        if r == 0:
            cell.set_height(cell.get_height() * 1.8)
        if col == -1 and r > 0:
            cell.get_text().set_color(f"C{(r - 1) % 10}")
            cell.get_text().set_fontweight("bold")


def _coincident_groups(curves, key, tol=0.02):
    """Groups (lists of names, at least two) of networks whose ``key`` values are within ``tol`` at every ``tau``."""
    names = list(curves)
    groups = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ya, yb = np.asarray(curves[a][key], float), np.asarray(curves[b][key], float)
            if len(ya) == len(yb) and len(ya) > 1 and np.all(np.abs(ya - yb) <= tol):
                g = next((g for g in groups if a in g or b in g), None)
                if g is None:
                    groups.append([a, b])
                else:
                    g += [n for n in (a, b) if n not in g]
    return groups


def _annotate_groups(ax, curves, key, tol=0.02):
    """Name each group of coinciding curves in a box (in the emptiest part of ``ax``) with an arrow to them.

    The arrow points at the ``tau`` where the group lies farthest from the other curves.
    """
    xs = np.asarray(next(iter(curves.values()))["tau"], float)
    lo, hi = ax.get_xlim()
    pts = np.array([((t - lo) / (hi - lo), y) for c in curves.values()
                    for t, y in zip(np.linspace(c["tau"][0], c["tau"][-1], 60),
                                    np.interp(np.linspace(c["tau"][0], c["tau"][-1], 60), c["tau"], c[key]))])
    spots = [(0.72, 0.72), (0.72, 0.3), (0.3, 0.5), (0.5, 0.3), (0.3, 0.3), (0.5, 0.72), (0.3, 0.72)]
    for g in _coincident_groups(curves, key, tol):
        ys = np.array([curves[n][key] for n in g], float)
        others = np.array([curves[n][key] for n in curves if n not in g], float).reshape(-1, len(xs))
        gap = np.min(np.abs(others - ys.mean(0)), axis=0) if len(others) else np.ones(len(xs))
        i = int(np.argmax(gap))
        crowd = [np.sum((np.abs(pts[:, 0] - sx) < 0.22) & (np.abs(pts[:, 1] - sy) < 0.14)) for sx, sy in spots]
        spot = spots.pop(int(np.argmin(crowd)))
        ax.annotate("coincide (within %g):\n%s\n(numbers in the table)" % (tol, ", ".join(f"f_{n}" for n in g)),
                    xy=(xs[i], float(ys[:, i].mean())), xytext=spot, textcoords="axes fraction", ha="center",
                    va="center", fontsize=8, bbox=dict(boxstyle="round", fc="white", ec="0.6"),
                    arrowprops=dict(arrowstyle="->", color="0.3", lw=1))


def plot_attack(curves, path, *, title="stAdv attack vs tau"):
    """Fig. 6: (a) success rate vs ``tau``; (b) adversarial accuracy vs ``tau`` (benign accuracy at tau = inf).

    Every network has its own colour, hollow marker (smaller for later networks, so coinciding points
    nest) and line style; networks whose curves coincide (within 0.02 at every ``tau``) are named in the
    panel, and the table below the panels gives every number.
    """
    plt = _pyplot()
    with plt.rc_context(_RC):
        n = len(curves)
        fig = plt.figure(figsize=(10.5, 4.0 + 0.32 * (n + 2)), layout="constrained")
        gs = fig.add_gridspec(2, 2, height_ratios=[4.0, 0.32 * (n + 2)])
        axes = [fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])]
        for k, (name, c) in enumerate(curves.items()):
            st = _style(k, ms=11 - 4 * k / max(n - 1, 1))
            axes[0].plot(c["tau"], c["success_rate"], label=f"f_{name}", **st)
            axes[1].plot(c["tau"], c["adv_accuracy"], label=f"f_{name}", **st)
            axes[1].axhline(c["benign_accuracy"], color=st["color"], ls=":", lw=1)
        axes[0].set_ylabel("attack success rate")
        axes[1].set_ylabel("adversarial test accuracy\n(dotted: benign accuracy)")
        for ax, key, t in zip(axes, ("success_rate", "adv_accuracy"), ("(a) attack success rate",
                                                                      "(b) adversarial accuracy")):
            ax.set_xlabel("tau (flow budget)")
            ax.set_title(t)
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
            _annotate_groups(ax, curves, key)
        handles, labels = axes[0].get_legend_handles_labels()
        axes[1].legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5))
        _attack_table(fig.add_subplot(gs[1, :]), curves)
        fig.suptitle(title)
        return atomic_savefig(fig, path)


def plot_training(history, path, variant):
    """Training history of ``stadv train``: loss terms and training accuracy per epoch."""
    plt = _pyplot()
    with plt.rc_context(_RC):
        fig, axes = _figure(plt, 1, 2, panel=(4.2, 3.2))
        axes = axes[0]
        for j, k in enumerate(("loss", "data_loss", "reg")):
            if k in history and len(history[k]):
                axes[0].plot(np.arange(1, len(history[k]) + 1), history[k], label=k, **_style(j, ms=4))
        if "train_acc" in history and len(history["train_acc"]):
            axes[1].plot(np.arange(1, len(history["train_acc"]) + 1), history["train_acc"], **_style(0, ms=4))
        axes[0].set_title(f"{variant}: training loss")
        axes[1].set_title("training accuracy")
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend()
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        return atomic_savefig(fig, path)
