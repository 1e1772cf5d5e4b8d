"""Property tests of Eq. (1), the bilinear warp, and its derivatives (stadv_ref.transform).

All tests use the NumPy reference (backend="numpy"); the optimized backends are
checked against it in tests/backends/test_crosscheck.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from _checks import difference_quotient, dottest, fd_check
from _settings import SETTINGS, seeds
from hypothesis import example, given
from hypothesis import strategies as st

import stadv_ref
from stadv_ref import tied, tied_jacobian_diag, warp, warp_matrix, warp_vjp_flow, warp_vjp_x

PADDINGS = ("zeros", "border")
BE = "numpy"

sizes = st.integers(1, 7)


def _flow(rng, N, H, W, scale=2.5, integer=False):
    """Random flows reaching well outside the image (both paddings matter).

    ``integer=True`` rounds them: integer sampling positions, including exactly on the border.
    """
    flow = rng.uniform(-scale, scale, size=(N, 2, H, W))
    return np.round(flow) if integer else flow


def _fractional_flow(rng, N, H, W, lo=0.1, hi=0.9, span=3):
    """Flows whose fractional parts stay in [lo, hi]: sampling coordinates are never integers.

    The pixel grid is integer, so the fractional part of a sampling coordinate
    is the flow's; the warp is smooth (bilinear) in a neighbourhood of such a flow.
    """
    ints = rng.integers(-span, span + 1, size=(N, 2, H, W))
    return ints + rng.uniform(lo, hi, size=(N, 2, H, W))


def _nchw_property(n_max=3, c_max=3, **more):
    """``SETTINGS`` and ``given`` over seed, N in [1, n_max], C in [1, c_max], H, W, padding, then ``more``."""
    return lambda test: SETTINGS(given(seed=seeds, N=st.integers(1, n_max), C=st.integers(1, c_max),
                                       H=sizes, W=sizes, padding=st.sampled_from(PADDINGS), **more)(test))


def _images_and_flow(seed, N, C, H, W, make_flow=_flow, **flow_kw):
    """``(rng, x, flow)``: x normal of shape (N, C, H, W), then ``make_flow(rng, N, H, W, **flow_kw)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, C, H, W))
    return rng, x, make_flow(rng, N, H, W, **flow_kw)


def _assert_vjp_flow_by_components(vjp, x, flow, gout, padding, lo, hi, atol):
    """Entry by entry: output pixel i depends on (du_i, dv_i) only, so moving a whole flow
    component by ``s`` in ``[lo, hi]`` gives all its partial derivatives at once."""
    for comp in (0, 1):
        e = np.zeros_like(flow)
        e[:, comp] = 1.0
        d = difference_quotient(lambda s: warp(x, flow + s * e, padding, backend=BE), lo, hi)
        np.testing.assert_allclose(vjp[:, comp], (gout * d).sum(axis=1), atol=atol)


def _grid(H, W):
    rows, cols = np.meshgrid(np.arange(H, dtype=float), np.arange(W, dtype=float), indexing="ij")
    return rows, cols


def _scipy_warp(x, flow, padding):
    """Independent Eq. (1): scipy.ndimage.map_coordinates(order=1), per image and channel.

    Zero padding is ``mode="grid-constant"``; border padding is ``mode="nearest"``
    on coordinates clipped to the image (the stAdv code's clipping).
    """
    N, C, H, W = x.shape
    rows, cols = _grid(H, W)
    out = np.empty_like(x)
    for n in range(N):
        r = rows + flow[n, 1]
        c = cols + flow[n, 0]
        if padding == "border":
            r, c = np.clip(r, 0, H - 1), np.clip(c, 0, W - 1)
            mode = "nearest"
        else:
            mode = "grid-constant"
        for ch in range(C):
            out[n, ch] = ndi.map_coordinates(x[n, ch], [r, c], order=1, mode=mode, cval=0.0)
    return out


# ---------------------------------------------------------------------------
# The warp itself
# ---------------------------------------------------------------------------
@_nchw_property(channels=st.booleans())
def test_zero_flow_is_identity(seed, N, C, H, W, padding, channels):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, C, H, W) if channels else (N, H, W))
    out = warp(x, np.zeros((N, 2, H, W)), padding, backend=BE)
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, x)


@_nchw_property()
def test_integer_flow_is_a_shift(seed, N, C, H, W, padding):
    """A flow of integer (dr, dc) everywhere samples x[row+dr, col+dc] (0 or clipped outside)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, C, H, W))
    dr, dc = (int(v) for v in rng.integers(-2, 3, size=2))
    flow = np.zeros((N, 2, H, W))
    flow[:, 0], flow[:, 1] = dc, dr
    want = np.zeros_like(x)
    for i in range(H):
        for j in range(W):
            si, sj = i + dr, j + dc
            if padding == "border":
                want[..., i, j] = x[..., min(max(si, 0), H - 1), min(max(sj, 0), W - 1)]
            elif 0 <= si < H and 0 <= sj < W:
                want[..., i, j] = x[..., si, sj]
    np.testing.assert_allclose(warp(x, flow, padding, backend=BE), want, atol=1e-14)


@_nchw_property(a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_warp_is_linear_in_x(seed, N, C, H, W, padding, a, b):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(2, N, C, H, W))
    flow = _flow(rng, N, H, W)
    lhs = warp(a * x + b * y, flow, padding, backend=BE)
    rhs = a * warp(x, flow, padding, backend=BE) + b * warp(y, flow, padding, backend=BE)
    np.testing.assert_allclose(lhs, rhs, atol=1e-12)


@_nchw_property(scale=st.sampled_from([0.5, 1.5, 4.0]), integer=st.booleans())
@example(seed=0, N=1, C=1, H=1, W=1, padding="zeros", scale=1.5, integer=False)
@example(seed=1, N=1, C=1, H=1, W=5, padding="border", scale=4.0, integer=True)
def test_warp_matches_scipy_map_coordinates(seed, N, C, H, W, padding, scale, integer):
    _, x, flow = _images_and_flow(seed, N, C, H, W, scale=scale, integer=integer)
    np.testing.assert_allclose(warp(x, flow, padding, backend=BE), _scipy_warp(x, flow, padding),
                               atol=1e-12)


@_nchw_property()
def test_channels_warp_independently(seed, N, C, H, W, padding):
    """(N, C, H, W) input = each channel warped as an (N, H, W) input with the same flow."""
    _, x, flow = _images_and_flow(seed, N, C, H, W)
    out = warp(x, flow, padding, backend=BE)
    assert out.shape == (N, C, H, W)
    for c in range(C):
        single = warp(x[:, c], flow, padding, backend=BE)
        assert single.shape == (N, H, W)
        np.testing.assert_allclose(out[:, c], single, atol=1e-14)


@SETTINGS
@given(seed=seeds, H=sizes, W=sizes, padding=st.sampled_from(PADDINGS),
       flow32=st.booleans(), channels=st.booleans())
def test_float32_in_float32_out(seed, H, W, padding, flow32, channels):
    rng = np.random.default_rng(seed)
    x64 = rng.uniform(size=(2, 2, H, W) if channels else (2, H, W))
    flow64 = _flow(rng, 2, H, W)
    x32 = x64.astype(np.float32)
    flow = flow64.astype(np.float32) if flow32 else flow64
    out = warp(x32, flow, padding, backend=BE)
    assert out.dtype == np.float32 and out.shape == x32.shape
    ref = warp(x32.astype(np.float64), flow.astype(np.float32).astype(np.float64), padding, backend=BE)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert warp(x64, flow, padding, backend=BE).dtype == np.float64
    g32 = warp_vjp_x(flow, x32, padding, backend=BE)
    assert g32.dtype == np.float32
    gf = warp_vjp_flow(x32, flow, x32, padding, backend=BE)
    assert gf.dtype == np.float32 and gf.shape == (2, 2, H, W)
    r32 = flow64[:, 0].astype(np.float32)
    assert tied_jacobian_diag(x32, r32, padding, backend=BE).dtype == np.float32


def test_integer_images_become_float64():
    x = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    out = warp(x, np.zeros((2, 2, 3, 4)), backend=BE)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, x)


@SETTINGS
@given(seed=seeds, H=sizes, W=sizes, padding=st.sampled_from(PADDINGS),
       integer=st.booleans())
def test_warp_matrix_agrees_with_warp(seed, H, W, padding, integer):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(H, W))
    flow = _flow(rng, 1, H, W, integer=integer)[0]
    G = warp_matrix(flow, padding)
    assert G.shape == (H * W, H * W)
    assert G.nnz <= 4 * H * W
    want = warp(x[None], flow[None], padding, backend=BE)[0]
    np.testing.assert_allclose(G @ x.ravel(), want.ravel(), atol=1e-12)
    # rows are convex combinations (border) or sub-convex (zeros)
    sums = np.asarray(G.sum(axis=1)).ravel()
    assert np.all(G.data >= 0)
    if padding == "border":
        np.testing.assert_allclose(sums, 1.0, atol=1e-12)
    else:
        assert np.all(sums <= 1 + 1e-12)


# ---------------------------------------------------------------------------
# Vector-Jacobian products
# ---------------------------------------------------------------------------
@_nchw_property(integer=st.booleans())
def test_warp_vjp_x_dot_product_test(seed, N, C, H, W, padding, integer):
    """<G x, y> = <x, G^T y> (adjoint test), and G^T y equals the sparse matrix transpose."""
    rng = np.random.default_rng(seed)
    flow = _flow(rng, N, H, W, integer=integer)
    _, y = dottest(lambda x: warp(x, flow, padding, backend=BE), lambda y: warp_vjp_x(flow, y, padding, backend=BE),
                   (N, C, H, W), (N, C, H, W), rng)
    GTy = warp_vjp_x(flow, y, padding, backend=BE)
    G = warp_matrix(flow[0], padding)
    np.testing.assert_allclose(GTy[0, 0].ravel(), G.T @ y[0, 0].ravel(), atol=1e-12)
    # (N, H, W) grad_out gives the (N, H, W) adjoint
    np.testing.assert_allclose(warp_vjp_x(flow, y[:, 0], padding, backend=BE), GTy[:, 0], atol=1e-14)


@SETTINGS
@given(seed=seeds, H=sizes, W=sizes, padding=st.sampled_from(PADDINGS), integer=st.booleans())
def test_warp_matrix_dot_product_test(seed, H, W, padding, integer):
    """The sparse G of warp_matrix and the adjoint warp warp_vjp_x: <G x, y> = <x, G^T y>."""
    rng = np.random.default_rng(seed)
    flow = _flow(rng, 1, H, W, integer=integer)
    G = warp_matrix(flow[0], padding)
    dottest(lambda x: (G @ x.ravel()).reshape(H, W), lambda y: warp_vjp_x(flow, y[None], padding, backend=BE)[0],
            (H, W), (H, W), rng)


@_nchw_property(n_max=2)
def test_warp_vjp_flow_matches_central_differences(seed, N, C, H, W, padding):
    """Away from integer sampling positions: <vjp, delta> = d/dh <grad_out, warp(flow + h delta)>."""
    rng, x, flow = _images_and_flow(seed, N, C, H, W, _fractional_flow)
    gout = rng.normal(size=(N, C, H, W))
    vjp = warp_vjp_flow(x, flow, gout, padding, backend=BE)
    assert vjp.shape == (N, 2, H, W)
    h = 1e-6
    # directional derivative along a random direction
    fd_check(lambda fl: np.vdot(gout, warp(x, fl, padding, backend=BE)), vjp, flow, rng, eps=h, rtol=1e-6, atol=1e-6)
    # and entry by entry (central differences)
    _assert_vjp_flow_by_components(vjp, x, flow, gout, padding, -h, h, atol=1e-6)


@_nchw_property(n_max=2, c_max=2)
@example(seed=3, N=1, C=1, H=1, W=1, padding="border")
@example(seed=4, N=1, C=1, H=3, W=4, padding="border")
def test_subgradient_convention_right_derivative_at_integers(seed, N, C, H, W, padding):
    """At integer sampling coordinates the VJP is the right derivative (forward difference).

    Each flow component is an integer (possibly outside the image or exactly on
    its border) or fractional, at random. Moving one component by ``0 < h < 1``
    to the right keeps it inside one linear piece, so the one-sided quotient is exact.
    """
    rng, x, flow = _images_and_flow(seed, N, C, H, W, _fractional_flow)
    flow = np.where(rng.random(flow.shape) < 0.7, np.round(flow), flow)
    gout = rng.normal(size=(N, C, H, W))
    vjp = warp_vjp_flow(x, flow, gout, padding, backend=BE)
    h = 1e-3
    _assert_vjp_flow_by_components(vjp, x, flow, gout, padding, 0.0, h, atol=1e-9)  # forward differences


@pytest.mark.parametrize("padding", PADDINGS)
def test_gradient_at_zero_flow_is_forward_image_difference(padding):
    rng = np.random.default_rng(7)
    H, W = 4, 5
    x = rng.normal(size=(1, H, W))
    g = warp_vjp_flow(x, np.zeros((1, 2, H, W)), np.ones((1, H, W)), padding, backend=BE)[0]
    edge = "constant" if padding == "zeros" else "edge"
    xp = np.pad(x[0], ((0, 1), (0, 1)), mode=edge)
    np.testing.assert_allclose(g[0], xp[:H, 1:] - x[0], atol=1e-14)  # d/d du: x[., col+1] - x
    np.testing.assert_allclose(g[1], xp[1:, :W] - x[0], atol=1e-14)  # d/d dv: x[row+1, .] - x


@_nchw_property(n_max=2, c_max=2)
def test_border_padding_gradient_vanishes_where_clipped(seed, N, C, H, W, padding):
    """Far outside the image the border warp is constant in the flow; zero padding is 0 there."""
    rng, x, flow = _images_and_flow(seed, N, C, H, W, _fractional_flow)
    flow = flow + (max(H, W) + 5) * rng.choice([-1, 1], size=(N, 2, 1, 1))
    vjp = warp_vjp_flow(x, flow, rng.normal(size=x.shape), padding, backend=BE)
    np.testing.assert_array_equal(vjp, 0.0)


# ---------------------------------------------------------------------------
# Tied flows and the diagonal Jacobian Dg ([E6], [E7])
# ---------------------------------------------------------------------------
def test_tied_stacks_r_twice():
    r = np.random.default_rng(0).normal(size=(3, 4, 5))
    f = tied(r)
    assert f.shape == (3, 2, 4, 5)
    np.testing.assert_array_equal(f[:, 0], r)
    np.testing.assert_array_equal(f[:, 1], r)


@_nchw_property(n_max=2, c_max=2, channels=st.booleans())
def test_tied_jacobian_diag_matches_finite_differences(seed, N, C, H, W, padding, channels):
    """"correct" = d/dr warp(x, tied(r)) (diagonal); "paper" = the du term alone ([E6])."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, C, H, W) if channels else (N, H, W))
    r = _fractional_flow(rng, N, H, W)[:, 0]
    h = 1e-6
    correct = tied_jacobian_diag(x, r, padding, "correct", backend=BE)
    paper = tied_jacobian_diag(x, r, padding, "paper", backend=BE)
    assert correct.shape == x.shape and paper.shape == x.shape
    # x~_i depends on r_i only, so perturbing every r_i at once gives the diagonal
    fd = difference_quotient(lambda s: warp(x, tied(r + s), padding, backend=BE), -h, h)
    np.testing.assert_allclose(correct, fd, atol=1e-6)
    fd_du = difference_quotient(lambda s: warp(x, np.stack([r + s, r], axis=1), padding, backend=BE), -h, h)
    np.testing.assert_allclose(paper, fd_du, atol=1e-6)
    # "correct" = du term + dv term, both from the VJP with a one-hot cotangent per pixel
    x4 = x if channels else x[:, None]
    parts = np.stack([warp_vjp_flow(x4[:, [c]], tied(r), np.ones((N, 1, H, W)), padding, backend=BE)
                      for c in range(x4.shape[1])], axis=1)  # (N, C, 2, H, W)
    np.testing.assert_allclose(correct, (parts[:, :, 0] + parts[:, :, 1]).reshape(x.shape), atol=1e-12)
    np.testing.assert_allclose(paper, parts[:, :, 0].reshape(x.shape), atol=1e-12)


@SETTINGS
@given(seed=seeds, H=sizes, W=sizes, padding=st.sampled_from(PADDINGS),
       integer=st.booleans())
def test_tied_jacobian_bounded_by_2_on_unit_box(seed, H, W, padding, integer):
    """[E7]: |dg_i/dr_i| <= 2 for x in [0, 1]^d, and <= 4 for ||x||_inf <= 1."""
    rng = np.random.default_rng(seed)
    r = _flow(rng, 3, H, W, integer=integer)[:, 0]
    x01 = rng.choice([0.0, 1.0, 0.5], size=(3, H, W)) if integer else rng.uniform(size=(3, H, W))
    assert np.abs(tied_jacobian_diag(x01, r, padding, backend=BE)).max() <= 2 + 1e-12
    xpm = 2 * x01 - 1
    assert np.abs(tied_jacobian_diag(xpm, r, padding, backend=BE)).max() <= 4 + 1e-12


@pytest.mark.parametrize("padding", PADDINGS)
def test_tied_jacobian_reaches_2_on_unit_box_and_4_on_pm1(padding):
    """[E7]: the constant 2 is tight for [0,1] images but 4 is reached for [-1,1] images."""
    x = np.array([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    r = np.zeros((1, 3, 3))
    assert tied_jacobian_diag(x, r, padding, backend=BE)[0, 0, 0] == pytest.approx(2.0)
    x = 2 * x - 1  # x00 = -1, right and lower neighbours = +1
    dg = tied_jacobian_diag(x, r, padding, backend=BE)
    assert dg[0, 0, 0] == pytest.approx(4.0)
    assert np.abs(dg).max() > 2
    # the paper's single term never sees the dv half
    assert tied_jacobian_diag(x, r, padding, "paper", backend=BE)[0, 0, 0] == pytest.approx(2.0)


def test_public_functions_reexported():
    for name in ("warp", "warp_vjp_x", "warp_vjp_flow", "tied", "tied_jacobian_diag", "warp_matrix"):
        assert getattr(stadv_ref, name) is getattr(stadv_ref.transform, name)
