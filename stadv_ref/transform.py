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

The backend-level NumPy kernels (canonical 4-D arrays, no checking) live in
:mod:`stadv_ref.reference.warp`; the functions here validate and dispatch.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._validate import _xp_of, as_float_array, check_choice, check_flow, images_4d
from .backend import get_backend
from .reference.warp import JACOBIAN_VARIANTS, PADDINGS, _corners

__all__ = [
    "PADDINGS",
    "warp",
    "warp_vjp_x",
    "warp_vjp_flow",
    "tied",
    "tied_jacobian_diag",
    "warp_matrix",
]


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

    Raises
    ------
    TypeError
        ``x`` or ``flow`` is not a real numeric array.
    ValueError
        ``x`` is not ``(N, H, W)``/``(N, C, H, W)`` with ``N >= 1``; ``flow`` is not
        ``(N, 2, H, W)`` matching ``x``; either holds NaN/inf; unknown ``padding``; an
        unknown or unavailable ``backend`` (:class:`~stadv_ref.BackendError`).

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

    Raises
    ------
    TypeError
        ``flow`` or ``grad_out`` is not a real numeric array.
    ValueError
        ``grad_out`` is not ``(N, H, W)``/``(N, C, H, W)`` with ``N >= 1``; ``flow`` is not
        ``(N, 2, H, W)`` matching it; NaN/inf; unknown ``padding`` or ``backend``.
    """
    g4, squeeze = images_4d("grad_out", grad_out)
    N, _, H, W = g4.shape
    flow = check_flow("flow", flow, N, H, W, dtype=g4.dtype, images="grad_out")
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

    Raises
    ------
    TypeError
        ``x``, ``flow`` or ``grad_out`` is not a real numeric array.
    ValueError
        As :func:`warp`, or ``grad_out`` does not have the shape of ``x``.

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

    Raises
    ------
    TypeError
        ``r`` is not a real numeric array.
    ValueError
        ``r`` is not 3-D or holds NaN/inf (``N = 0`` gives an empty result).
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

    Raises
    ------
    TypeError
        ``x`` or ``r`` is not a real numeric array.
    ValueError
        ``x`` is not ``(N, H, W)``/``(N, C, H, W)`` with ``N >= 1``; ``r`` is not ``(N, H, W)``
        matching it; NaN/inf; unknown ``padding``, ``variant`` or ``backend``.

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
        raise ValueError(f"r must have shape {(N, H, W)} to match x {tuple(x4.shape)}, got {tuple(r.shape)}")
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

    Raises
    ------
    TypeError
        ``flow`` is not a real numeric array.
    ValueError
        ``flow`` is not ``(2, H, W)`` or holds NaN/inf; unknown ``padding``.
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
