r"""Eq. (1): the bilinear spatial transformation ``g(flow; x)`` and its derivatives.

Conventions (EQUATIONS.md): pixel ``i`` sits at column ``u_i`` and row ``v_i``;
``flow[:, 0] = du`` (columns), ``flow[:, 1] = dv`` (rows), in pixels. Output
pixel ``i`` samples the input at ``(u_i + du_i, v_i + dv_i)``:

.. math::

    \tilde x_i = \sum_{j \in N(i)} x_j \max(0, 1-|u_i+du_i-u_j|)\,\max(0, 1-|v_i+dv_i-v_j|)

``padding="zeros"`` (the paper): pixels outside the image are 0.
``padding="border"`` (the public stAdv code): sampling coordinates are clipped
to the image, so outside samples repeat the border; the derivative w.r.t. a
clipped coordinate is 0 (as ``tf.clip_by_value``'s gradient).

Sub-gradient convention
-----------------------
``g`` is piecewise bilinear and not differentiable where a sampling coordinate
is an integer (e.g. at ``flow = 0``). Like ``torch.nn.functional.grid_sample``
we return the **right** derivative there: ``floor`` picks the lower corner and
the derivative is the forward image difference ``x[k+1] - x[k]``.

Functions named ``*_reference`` are the backend-level NumPy kernels (canonical
4-D arrays, no checking); the public functions validate and dispatch.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._validate import _xp_of, as_float_array, check_choice, check_flow, images_4d
from .backend import get_backend

__all__ = [
    "PADDINGS",
    "warp",
    "warp_vjp_x",
    "warp_vjp_flow",
    "tied",
    "tied_jacobian_diag",
    "warp_matrix",
]

PADDINGS = ("zeros", "border")
JACOBIAN_VARIANTS = ("correct", "paper")


# ---------------------------------------------------------------------------
# Reference kernels (NumPy, canonical shapes)
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------
def _prepare(x, flow, padding, backend):
    x4, squeeze = images_4d("x", x)
    N, _, H, W = x4.shape
    flow = check_flow("flow", flow, N, H, W, dtype=x4.dtype)
    check_choice("padding", padding, PADDINGS)
    be = get_backend(backend)
    return be, be.asarray(x4), be.asarray(flow), squeeze


def warp(x, flow, padding="zeros", *, backend=None):
    """Spatially transform images with a flow field, Eq. (1).

    Parameters
    ----------
    x : array_like, shape (N, H, W) or (N, C, H, W)
        Images.
    flow : array_like, shape (N, 2, H, W)
        ``flow[:, 0] = du`` (columns), ``flow[:, 1] = dv`` (rows), in pixels.
        Use :func:`tied` to build a tied flow from ``r``.
    padding : {"zeros", "border"}
        ``"zeros"`` (the paper, default) or ``"border"`` (the stAdv code's clipping).
    backend : str, optional
        Compute backend (see :mod:`stadv_ref.backend`).

    Returns
    -------
    ndarray
        The warped images, same shape and dtype as ``x``.

    Notes
    -----
    .. math:: \\tilde x_i = \\sum_{j \\in N(i)} x_j \\max(0, 1-|u_i+du_i-u_j|) \\max(0, 1-|v_i+dv_i-v_j|)

    Equals ``scipy.ndimage.map_coordinates(x, (v+dv, u+du), order=1,
    mode="grid-constant")`` for zero padding and
    ``torch.nn.functional.grid_sample(align_corners=True)``.
    """
    be, x4, flow, squeeze = _prepare(x, flow, padding, backend)
    out = be.warp(x4, flow, padding)
    return out[:, 0] if squeeze else out


def warp_vjp_x(flow, grad_out, padding="zeros", *, backend=None):
    """Vector-Jacobian product of Eq. (1) w.r.t. ``x``: ``G(flow)^T grad_out``.

    The warp is linear in ``x`` (``x~ = G(flow) x``), so this is its adjoint.

    Parameters
    ----------
    flow : array_like, shape (N, 2, H, W)
    grad_out : array_like, shape (N, H, W) or (N, C, H, W)
        Cotangent of the warped images.
    padding : {"zeros", "border"}

    Returns
    -------
    ndarray, shape of ``grad_out``
    """
    g4, squeeze = images_4d("grad_out", grad_out)
    N, _, H, W = g4.shape
    flow = check_flow("flow", flow, N, H, W, dtype=g4.dtype)
    check_choice("padding", padding, PADDINGS)
    be = get_backend(backend)
    out = be.warp_vjp_x(be.asarray(flow), be.asarray(g4), padding)
    return out[:, 0] if squeeze else out


def warp_vjp_flow(x, flow, grad_out, padding="zeros", *, backend=None):
    """Vector-Jacobian product of Eq. (1) w.r.t. the flow.

    Parameters
    ----------
    x : array_like, shape (N, H, W) or (N, C, H, W)
    flow : array_like, shape (N, 2, H, W)
    grad_out : array_like, same shape as ``x``
    padding : {"zeros", "border"}

    Returns
    -------
    ndarray, shape (N, 2, H, W)
        ``sum_c grad_out[:, c] * d x~[:, c] / d (du, dv)``.

    Notes
    -----
    At integer sampling coordinates the right derivative (forward difference)
    is used; see the module docstring.
    """
    be, x4, flow, _ = _prepare(x, flow, padding, backend)
    g4, _ = images_4d("grad_out", grad_out)
    if tuple(g4.shape) != tuple(x4.shape):
        raise ValueError(f"grad_out shape {tuple(g4.shape)} does not match x's {tuple(x4.shape)}")
    return be.warp_vjp_flow(x4, flow, be.asarray(g4.astype(x4.dtype, copy=False)), padding)


def tied(r):
    """Tied flow ``du = dv = r`` (Section 2.1).

    Parameters
    ----------
    r : array_like, shape (N, H, W)

    Returns
    -------
    ndarray, shape (N, 2, H, W)
    """
    r = as_float_array("r", r, ndim=3)
    return _xp_of(r).stack([r, r], axis=1)


def tied_jacobian_diag(x, r, padding="zeros", variant="correct", *, backend=None):
    """Diagonal Jacobian ``Dg`` of the warp for a tied flow (Section 2.2, [E6]).

    Parameters
    ----------
    x : array_like, shape (N, H, W) or (N, C, H, W)
    r : array_like, shape (N, H, W)
        Tied flow ``du = dv = r``.
    padding : {"zeros", "border"}
    variant : {"correct", "paper"}
        ``"correct"``: ``dg_i/dr_i = d x~_i/d du_i + d x~_i/d dv_i``.
        ``"paper"``: the printed formula, the ``du`` term alone ([E6]).

    Returns
    -------
    ndarray, shape of ``x``

    Notes
    -----
    With a tied flow, ``x~_i`` depends on ``r_i`` only, so ``Dg`` is diagonal.
    For ``x`` in ``[0, 1]^d`` each partial lies in ``[-1, 1]`` so
    ``|dg_i/dr_i| <= 2``; for ``||x||_inf <= 1`` the tight constant is 4 ([E7]).
    """
    x4, squeeze = images_4d("x", x)
    N, _, H, W = x4.shape
    r = as_float_array("r", r, ndim=3, dtype=x4.dtype)
    if tuple(r.shape) != (N, H, W):
        raise ValueError(f"r must have shape {(N, H, W)}, got {tuple(r.shape)}")
    check_choice("padding", padding, PADDINGS)
    check_choice("variant", variant, JACOBIAN_VARIANTS)
    be = get_backend(backend)
    out = be.tied_jacobian_diag(be.asarray(x4), be.asarray(r), padding, variant)
    return out[:, 0] if squeeze else out


def warp_matrix(flow, padding="zeros"):
    """The warp of one image as a sparse matrix: ``vec(x~) = G vec(x)`` (Eq. (1)).

    Parameters
    ----------
    flow : array_like, shape (2, H, W)
        One flow field.
    padding : {"zeros", "border"}

    Returns
    -------
    scipy.sparse.csr_matrix, shape (H*W, H*W)
        Row ``i`` holds the (at most four) bilinear weights of output pixel
        ``i`` (row-major order). Useful to audit the warp and its adjoint.
    """
    flow = as_float_array("flow", flow, ndim=3, dtype=np.float64)
    if flow.shape[0] != 2:
        raise ValueError(f"flow must have shape (2, H, W), got {tuple(flow.shape)}")
    check_choice("padding", padding, PADDINGS)
    _, H, W = flow.shape
    idx, valid, fr, fc, _, _ = _corners(flow[None], padding)
    weights = ((1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc)
    rows = np.arange(H * W)
    G = sp.csr_matrix((H * W, H * W))
    for i, v, w in zip(idx, valid, weights):
        data = (w * v).ravel()
        G = G + sp.csr_matrix((data, (rows, i.ravel())), shape=(H * W, H * W))
    G.eliminate_zeros()
    return G
