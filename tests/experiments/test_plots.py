"""The figures (issue #20, deliverable 7): every plot function draws small synthetic data into a PNG that a
reader can read -- logarithmic ``eps`` axes showing every grid point (Figs. 5/11), panels in a grid with one
legend outside the data, lines told apart by colour, marker and line style, coinciding curves named, colour
bars and visible flow arrows on the samples, neutral default titles (the reproduction adds "(Fig. N)").

The figure of each call is caught by wrapping :func:`stadv_ref.experiments.plots.atomic_savefig`.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from stadv_ref.experiments import plots  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
NETS = ("nt", "at", "fro", "spe", "stn", "sdp")


@pytest.fixture
def figs(monkeypatch):
    """The figures drawn by the plot functions (closed, still inspectable), in call order."""
    caught = []
    real = plots.atomic_savefig

    def catch(fig, path, *a, **kw):
        caught.append(fig)
        return real(fig, path, *a, **kw)

    monkeypatch.setattr(plots, "atomic_savefig", catch)
    return caught


def _png(path):
    assert path.is_file() and path.read_bytes()[:8] == PNG


def _cert_curves(eps, nets=NETS, methods=("frobenius", "spectral", "sdp"), extra=("nt",)):
    rng = np.random.default_rng(0)
    out = {}
    for n in nets:
        ms = list(methods) + (["tight"] if n in extra else [])
        out[n] = dict(eps=list(eps), methods=ms, zero_one={m: sorted(rng.uniform(0, 1, len(eps)).tolist()) for m in ms})
    return out


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.lines]


@pytest.mark.parametrize("eps, scale", [((0.0, 0.005, 0.01, 0.02, 0.05, 0.1), "symlog"),
                                        (tuple(np.round(np.linspace(0, 0.1, 11), 4)), "symlog"),
                                        ((0.001, 0.01, 0.1), "log")])
@pytest.mark.parametrize("by", ["method", "network"])
def test_certify_log_eps_axis_shows_every_grid_point(tmp_path, figs, eps, scale, by):
    plots.plot_certify(_cert_curves(eps), tmp_path / "c.png", by=by)
    _png(tmp_path / "c.png")
    for ax in _panels(figs[-1]):
        assert ax.get_xscale() == scale
        lo, hi = ax.get_xlim()
        assert lo < min(eps) and hi > max(eps)
        labelled = [float(t) for t in ax.get_xticks()]
        ticks = np.concatenate([ax.get_xticks(minor=True), labelled])  # a tick at every grid point
        assert set(np.round(ticks, 6)) >= set(np.round(eps, 6))
        assert min(eps) in labelled and max(eps) in labelled
        for line in ax.lines:  # every point of the grid is drawn
            assert np.allclose(line.get_xdata(), eps)


def test_certify_grid_layout_and_one_legend_outside(tmp_path, figs):
    plots.plot_certify(_cert_curves((0.0, 0.01, 0.1)), tmp_path / "c.png", by="network")
    fig = figs[-1]
    panels = _panels(fig)
    assert len(panels) == 6
    x0 = {round(ax.get_position().x0, 3) for ax in panels}
    y0 = {round(ax.get_position().y0, 3) for ax in panels}
    assert len(x0) == 3 and len(y0) == 2  # a 2 x 3 grid, not one wide row
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert len(fig.legends) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["Frobenius (sound)", "spectral (sound)", "SDP", "tight (ours)"]
    # the legend lies outside every panel
    fig.canvas.draw()
    box = fig.legends[0].get_window_extent()
    assert not any(box.overlaps(ax.get_window_extent()) for ax in panels)
    # a method keeps its style in every panel
    styles = {}
    for ax in panels:
        for ln in ax.lines:
            styles.setdefault(ln.get_label(), set()).add((ln.get_color(), ln.get_marker(), ln.get_linestyle()))
    assert all(len(s) == 1 for s in styles.values())


def test_certify_fonts_readable(tmp_path, figs):
    plots.plot_certify(_cert_curves((0.0, 0.01, 0.1)), tmp_path / "c.png", by="method")
    fig = figs[-1]
    for ax in _panels(fig):
        assert ax.title.get_fontsize() >= 10
        assert all(t.get_fontsize() >= 9 for t in ax.get_xticklabels() + ax.get_yticklabels())
    assert all(t.get_fontsize() >= 9 for t in fig.legends[0].get_texts())


def _attack_curves():
    tau = [0.0, 0.05, 0.1]
    vals = {"nt": ([0.99, 0.49, 0.05], [0.01, 0.49, 0.92]), "at": ([0.98, 0.41, 0.04], [0.02, 0.55, 0.9]),
            "fro": ([0.99, 0.048, 0.048], [0.01, 0.9, 0.9]), "spe": ([0.995, 0.032, 0.032], [0.005, 0.91, 0.91]),
            "sdp": ([0.995, 0.033, 0.033], [0.005, 0.885, 0.885])}
    return {n: dict(tau=tau, success_rate=s, adv_accuracy=a, benign_accuracy=0.95 - 0.01 * k)
            for k, (n, (s, a)) in enumerate(vals.items())}


def test_attack_lines_distinguishable_and_coinciding_curves_named(tmp_path, figs):
    plots.plot_attack(_attack_curves(), tmp_path / "a.png")
    _png(tmp_path / "a.png")
    fig = figs[-1]
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == 2
    for ax in panels:
        lines = [ln for ln in ax.lines if len(ln.get_xdata()) == 3]
        styles = {(ln.get_marker(), ln.get_linestyle()) for ln in lines}
        assert len(styles) == len(lines) == 5  # marker and line style differ, not just the colour
        assert all(ln.get_markerfacecolor() == "none" for ln in lines)  # hollow: coinciding markers stay visible
        notes = [t.get_text() for t in ax.texts]
        assert any("f_fro" in t and "f_spe" in t and "f_sdp" in t and "f_nt" not in t for t in notes)
        for ln in lines:
            assert np.allclose(ln.get_xdata(), [0.0, 0.05, 0.1])  # no offsets
    tables = [t for ax in fig.axes for t in ax.tables]
    assert len(tables) == 1
    cells = {c.get_text().get_text() for c in tables[0].get_celld().values()}
    assert {"f_sdp", "0.033", "0.885"} <= cells


def _samples(tied=True):
    rng = np.random.default_rng(2)
    out = []
    for e in (0.5, 4.0):
        x = rng.uniform(0, 1, (28, 28))
        flow = rng.normal(0, e / 10, (28, 28) if tied else (2, 28, 28))
        out.append(dict(x=x, flow=flow, label=f"eps = {e:g}"))
    return out


@pytest.mark.parametrize("tied", [True, False])
def test_samples_colour_bars_and_visible_arrows(tmp_path, figs, tied):
    plots.plot_samples(_samples(tied), tmp_path / "s.png")
    _png(tmp_path / "s.png")
    fig = figs[-1]
    cbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(cbars) == 3  # one grey bar for the images, one |flow| bar per row
    assert "pixel value" in " ".join(ax.get_xlabel() + ax.get_ylabel() for ax in cbars)
    images = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(images) == 6
    titles = [ax.get_title() for ax in images if ax.get_title()]
    assert titles == ["(a) benign input", "(b) adversarial input", "(c) flow field"]
    quivers = [c for ax in images for c in ax.collections if type(c).__name__ == "Quiver"]
    assert len(quivers) == 2
    for q in quivers:
        n = len(q.U)
        assert 0 < n <= 15 * 15  # subsampled
        longest = float(np.max(np.hypot(q.U, q.V)))
        assert 1.5 <= longest / q.scale <= 3.0 + 1e-9  # the longest flow spans 1.5 arrow spacings of 2 px
        assert q.get_array() is not None  # coloured by |flow|, read on the colour bar


def test_convergence_lower_bound_training_write_pngs(tmp_path, figs):
    plots.plot_convergence({"f_nt, eps = 0.5": [0.1, 1.0, 2.0], "f_nt, eps = 2": [0.2, 3.0, 4.0],
                            "f_at, eps = 0.5": [-0.1, 0.5, 0.6]}, tmp_path / "c.png")
    eps = [0.5, 2.0, 4.0]
    c = dict(eps=eps, exact_loss=[1.0, 2.0, 3.0], theorem_exact_loss=[0.1, 0.2, 0.3], theorem_value=[0.5, 1, 2],
             linearized_loss=[0.4, 0.9, 1.5])
    plots.plot_lower_bound({"nt": c, "at": c}, tmp_path / "l.png")
    plots.plot_training({"loss": [2.0, 1.0], "data_loss": [1.9, 0.9], "reg": [0.1, 0.1], "train_acc": [0.5, 0.8]},
                        tmp_path / "t.png", "nt")
    for name in ("c.png", "l.png", "t.png"):
        _png(tmp_path / name)
    conv, low, _ = figs
    conv_lines = conv.axes[0].lines
    assert len({(ln.get_color(), ln.get_marker(), ln.get_linestyle()) for ln in conv_lines}) == 3
    fig_low = low
    fig_low.canvas.draw()
    for ax in fig_low.axes:  # legends below the panels, not over the data
        assert not ax.get_legend().get_window_extent().overlaps(ax.get_window_extent())


TITLED = [plots.plot_lower_bound, plots.plot_samples, plots.plot_convergence, plots.plot_certify,
          plots.plot_attack]


@pytest.mark.parametrize("fn", TITLED, ids=lambda f: f.__name__)
def test_default_titles_are_neutral(fn):
    default = inspect.signature(fn).parameters["title"].default
    assert default and "Fig" not in default


def test_drawn_default_titles_are_neutral(tmp_path, figs):
    plots.plot_attack(_attack_curves(), tmp_path / "a.png")
    plots.plot_certify(_cert_curves((0.0, 0.1)), tmp_path / "c.png", by="network")
    plots.plot_samples(_samples(), tmp_path / "s.png")
    for fig in figs:
        texts = [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]
        assert not any("Fig" in t for t in texts)
    plots.plot_attack(_attack_curves(), tmp_path / "a.png", title="stAdv attack vs tau (Fig. 6)")
    assert figs[-1]._suptitle.get_text() == "stAdv attack vs tau (Fig. 6)"
