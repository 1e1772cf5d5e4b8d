r"""Eq. (1) reference kernels: the bilinear warp ``g(flow; x)`` and its derivatives.

NumPy kernels on canonical, already validated arrays (images ``(N, C, H, W)``,
flows ``(N, 2, H, W)``, ``flow[:, 0] = du`` columns, ``flow[:, 1] = dv`` rows); the
conventions (zero/border padding, right derivative at integer coordinates) are
those of :mod:`stadv_ref.transform`, which validates and dispatches.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "PADDINGS",
    "JACOBIAN_VARIANTS",
    "warp_reference",
    "warp_vjp_x_reference",
    "warp_vjp_flow_reference",
    "tied_jacobian_diag_reference",
]

PADDINGS = ("zeros", "border")
JACOBIAN_VARIANTS = ("correct", "paper")


def _sampling_grid(flow, padding):
    """Sampling coordinates of Eq. (1) and the mask of un-clipped coordinates.

    Returns ``cols, rows`` (N, H, W) and ``dcol_ok, drow_ok`` (1 where the
    coordinate moves with the flow, 0 where border padding clips it). Following
    the right-derivative convention, a coordinate exactly on the last row/column
    counts as clipped (a step to the right does not move it), one exactly on 0
    does not.
    """
    _, _, H, W = flow.shape
    dt = flow.dtype
    cols = np.arange(W, dtype=dt)[None, None, :] + flow[:, 0]
    rows = np.arange(H, dtype=dt)[None, :, None] + flow[:, 1]
    if padding == "border":
        # right derivative: 0 from the last row/column on (moving right is clipped)
        dcol_ok = ((cols >= 0) & (cols < W - 1)).astype(dt)
        drow_ok = ((rows >= 0) & (rows < H - 1)).astype(dt)
        cols = np.clip(cols, 0, W - 1)
        rows = np.clip(rows, 0, H - 1)
    else:
        dcol_ok = drow_ok = np.ones_like(cols)
    return cols, rows, dcol_ok, drow_ok


def _corners(flow, padding):
    """The four neighbours ``N(i)`` of every sampling point.

    Returns ``(flat_index, valid, fr, fc, c0, r0)`` where ``flat_index[k]`` and
    ``valid[k]`` are (N, H, W) arrays for the corners ``k = 00, 01, 10, 11``
    (row offset, column offset), and ``fr, fc`` are the fractional parts, so the
    bilinear weights ``max(0, 1-|.|)`` are ``(1-fr)(1-fc), (1-fr)fc, fr(1-fc), fr fc``.
    """
    _, _, H, W = flow.shape
    cols, rows, dcol_ok, drow_ok = _sampling_grid(flow, padding)
    c0 = np.floor(cols)
    r0 = np.floor(rows)
    fc = cols - c0
    fr = rows - r0
    c0 = c0.astype(np.int64)
    r0 = r0.astype(np.int64)
    idx, valid = [], []
    for dr in (0, 1):
        for dc in (0, 1):
            rr, cc = r0 + dr, c0 + dc
            ok = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
            idx.append(np.clip(rr, 0, H - 1) * W + np.clip(cc, 0, W - 1))
            valid.append(ok)
    return idx, valid, fr, fc, dcol_ok, drow_ok


def _gather(x, flat_index, valid):
    """``x[n, c, flat_index[n, i]]`` with zeros where ``valid`` is False."""
    N, C, H, W = x.shape
    xf = x.reshape(N, C, H * W)
    idx = flat_index.reshape(N, 1, H * W)
    vals = np.take_along_axis(xf, np.broadcast_to(idx, (N, C, H * W)), axis=2)
    return vals.reshape(N, C, H, W) * valid[:, None]


def _corner_values(x, flow, padding):
    idx, valid, fr, fc, dcol_ok, drow_ok = _corners(flow, padding)
    x00, x01, x10, x11 = (_gather(x, i, v) for i, v in zip(idx, valid))
    return (x00, x01, x10, x11), fr[:, None], fc[:, None], dcol_ok[:, None], drow_ok[:, None]


def warp_reference(x, flow, padding):
    """Eq. (1), reference kernel. ``x (N,C,H,W)``, ``flow (N,2,H,W)``."""
    (x00, x01, x10, x11), fr, fc, _, _ = _corner_values(x, flow, padding)
    return (1 - fr) * (1 - fc) * x00 + (1 - fr) * fc * x01 + fr * (1 - fc) * x10 + fr * fc * x11


def _partials(x, flow, padding):
    """``d x~ / d du`` and ``d x~ / d dv`` (right derivatives), each (N,C,H,W)."""
    (x00, x01, x10, x11), fr, fc, dcol_ok, drow_ok = _corner_values(x, flow, padding)
    d_du = ((1 - fr) * (x01 - x00) + fr * (x11 - x10)) * dcol_ok
    d_dv = ((1 - fc) * (x10 - x00) + fc * (x11 - x01)) * drow_ok
    return d_du, d_dv


def warp_vjp_flow_reference(x, flow, grad_out, padding):
    """VJP of Eq. (1) w.r.t. the flow: ``sum_c grad_out * d x~/d (du, dv)``."""
    d_du, d_dv = _partials(x, flow, padding)
    return np.stack([(grad_out * d_du).sum(axis=1), (grad_out * d_dv).sum(axis=1)], axis=1)


def warp_vjp_x_reference(flow, grad_out, padding):
    """VJP of Eq. (1) w.r.t. ``x``: the adjoint warp ``G(flow)^T grad_out`` (scatter-add)."""
    N, C, H, W = grad_out.shape
    idx, valid, fr, fc, _, _ = _corners(flow, padding)
    weights = ((1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc)
    out = np.zeros(N * C * H * W, dtype=np.float64)
    base = (np.arange(N * C) * (H * W)).reshape(N, C, 1)
    for i, v, w in zip(idx, valid, weights):
        target = base + i.reshape(N, 1, H * W)
        contrib = grad_out * (w * v)[:, None]
        out += np.bincount(target.ravel(), weights=contrib.reshape(-1), minlength=out.size)
    return out.reshape(N, C, H, W).astype(grad_out.dtype, copy=False)


def tied_jacobian_diag_reference(x, r, padding, variant):
    """Diagonal of ``Dg`` for a tied flow ``du = dv = r`` ([E6]).

    ``variant="correct"``: ``d x~_i/d du_i + d x~_i/d dv_i``.
    ``variant="paper"``: the printed single term ``d x~_i/d du_i``.
    """
    d_du, d_dv = _partials(x, np.stack([r, r], axis=1), padding)
    return d_du + d_dv if variant == "correct" else d_du
