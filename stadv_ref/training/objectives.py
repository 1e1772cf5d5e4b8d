r"""The training objectives of the seven variants (Section 4.2, appendix 6.8): losses, regularisers, stn.

* :func:`cross_entropy_loss` (``nt``, ``rand``, ``at``) and the multi-class :func:`hinge_loss`
  (``fro``, ``spe``, ``stn``, ``sdp``), with the forward / backward pass of
  ``f(x) = V relu(W x + b) + c``;
* the regularisers: ``fro`` ``w (||W||_F + ||V||_F)`` (:func:`_fro_penalty`), ``spe``
  ``w (||W||_2 + ||V||_2)`` (:func:`_spe_penalty`) and ``sdp``, the dual-SDP certificate of
  Section 4.1 (EQUATIONS.md "Dual certificate"; Raghunathan et al. 2018) averaged over the class
  pairs (:func:`_sdp_penalty`, :func:`sdp_pair_bounds`), whose value and gradient come from
  :func:`stadv_ref.upper_bounds.sdp_dual_gradient` (warm-started ARPACK);
* the three-layer spatial transformer of ``stn`` (affine map or flow field, Eq. (1) warp).
  (``at``'s adversarial term is made by the trainer, :mod:`.trainer`.)
"""
from __future__ import annotations

import numpy as np

from .._validate import check_budget
from ..network import OneHiddenLayerNet
from ..operators import aabb_radii
from ..upper_bounds.sdp_dual import sdp_dual_gradient

__all__ = ["cross_entropy_loss", "hinge_loss", "class_pairs", "sdp_pair_bounds"]

#: ARPACK tolerance of the ``sdp`` regulariser's ``lambda_max`` (an estimate; training only).
SDP_EIG_TOL = 1e-6


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------
def cross_entropy_loss(logits, y):
    """Mean softmax cross-entropy and its gradient w.r.t. the logits.

    Parameters
    ----------
    logits : ndarray, shape (B, K)
    y : ndarray of int, shape (B,)

    Returns
    -------
    loss : float
    dlogits : ndarray, shape (B, K)
    """
    B = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(B)
    loss = -logp[rows, y].mean()
    d = np.exp(logp)
    d[rows, y] -= 1.0
    return float(loss), d / B


def hinge_loss(logits, y, margin=1.0):
    """Mean multi-class hinge loss ``sum_{i != y} max(0, margin + f_i - f_y)`` and its gradient.

    The Weston-Watkins form (one term per wrong class), as used by the Fro-NN,
    Spe-NN and SDP-NN of Raghunathan et al. (2018).

    Returns
    -------
    loss : float
    dlogits : ndarray, shape (B, K)
    """
    B = logits.shape[0]
    rows = np.arange(B)
    m = margin + logits - logits[rows, y][:, None]
    m[rows, y] = 0.0
    active = (m > 0).astype(logits.dtype)
    loss = np.maximum(m, 0).sum(axis=1).mean()
    d = active
    d[rows, y] = -active.sum(axis=1)
    return float(loss), d / B

# ---------------------------------------------------------------------------
# Network pieces (plain NumPy, float64)
# ---------------------------------------------------------------------------
def _forward(p, X):
    """Classifier forward pass: pre-activations ``Z``, hidden ``relu(Z)`` and the logits."""
    Z = X @ p["W"].T
    if "b" in p:
        Z += p["b"]
    Hh = np.maximum(Z, 0)
    return Z, Hh, Hh @ p["V"].T + p["c"]


def _backward(p, X, Z, Hh, dout, grads, need_dx=False):
    """Accumulate parameter gradients of the classifier into ``grads``; return dL/dX."""
    grads["V"] = grads.get("V", 0) + dout.T @ Hh
    grads["c"] = grads.get("c", 0) + dout.sum(axis=0)
    dZ = (dout @ p["V"]) * (Z > 0)
    grads["W"] = grads.get("W", 0) + dZ.T @ X
    if "b" in p:
        grads["b"] = grads.get("b", 0) + dZ.sum(axis=0)
    return dZ @ p["W"] if need_dx else None


def _loss_fn(name):
    """The loss of a variant's settings (``"ce"`` or ``"hinge"``)."""
    return cross_entropy_loss if name == "ce" else hinge_loss


def _top_singular(Mat, u, iters):
    """Warm-started power iteration for the top singular triple of ``Mat``."""
    for _ in range(iters):
        v = Mat.T @ u
        v /= np.linalg.norm(v) + 1e-300
        u = Mat @ v
        s = np.linalg.norm(u)
        u /= s + 1e-300
    return float(u @ Mat @ v), u, v



# ---------------------------------------------------------------------------
# Norm regularisers (fro, spe)
# ---------------------------------------------------------------------------
def _fro_penalty(p, grads, w):
    """``w (||W||_F + ||V||_F)``; adds its gradient to ``grads``."""
    nW, nV = np.linalg.norm(p["W"]), np.linalg.norm(p["V"])
    grads["W"] = grads["W"] + w * p["W"] / nW
    grads["V"] = grads["V"] + w * p["V"] / nV
    return w * (nW + nV)


def _spe_penalty(p, grads, state, w, iters):
    """``w (||W||_2 + ||V||_2)`` (``||W||_2`` by ``iters`` warm-started power steps from
    ``state["spe_u"]``, ``||V||_2`` by an SVD); adds the gradient through the top singular vectors."""
    sW, u, vv = _top_singular(p["W"], state["spe_u"], iters)
    state["spe_u"] = u
    U, S, Vt = np.linalg.svd(p["V"], full_matrices=False)
    grads["W"] = grads["W"] + w * np.outer(u, vv)
    grads["V"] = grads["V"] + w * np.outer(U[:, 0], Vt[0])
    return w * (sW + S[0])


# ---------------------------------------------------------------------------
# SDP certificate (Section 4.1 and Raghunathan et al. 2018)
# ---------------------------------------------------------------------------
def class_pairs(K):
    """All unordered class pairs ``(i, j)``, ``i < j`` (``SDP(P_ij) = SDP(P_ji)``)."""
    return [(i, j) for i in range(K) for j in range(i + 1, K)]



def _spectral_c(Wl, dv):
    """Dual point ``c = ||A||_2 (sqrt(d/m) 1_m, sqrt(m/d) 1_d)`` (``P <= diag c``), ``A = diag(dv) Wl``.

    ``[[diag(mu), -A], [-A^T, diag(nu)]]`` is PSD when ``||diag(mu)^-1/2 A
    diag(nu)^-1/2||_2 <= 1``; this choice gives ``sum(c) = 2 sqrt(m d) ||A||_2``,
    usually far below the Gershgorin value ``2 sum |A_ij|``.
    """
    m, d = Wl.shape
    s = np.linalg.norm(dv[:, None] * Wl, 2) * (1 + 1e-9)
    return np.concatenate([np.full(m, s * np.sqrt(d / m)), np.full(d, s * np.sqrt(m / d))])


def sdp_pair_bounds(net, c=None, eps=1.0, pairs=None):
    """Dual-SDP certificate value ``SDP(P_ij) <= bound`` for class pairs of ``net``.

    Parameters
    ----------
    net : OneHiddenLayerNet
        Multi-class network.
    c : ndarray, shape (n_pairs, m + d), optional
        Dual variables (e.g. those stored by the ``sdp`` variant); default the
        spectral choice ``c = ||A||_2 (sqrt(d/m) 1_m, sqrt(m/d) 1_d)`` (so
        ``lambda_max <= 0`` and the bound is ``2 sqrt(m d) ||A||_2``).
    eps : float
        Budget used for the AABB radii ``lambda`` (Proposition 2).
    pairs : list of (i, j), optional
        Default all ``i < j``.

    Returns
    -------
    ndarray, shape (n_pairs,)
        ``n max(0, lambda_max(P - diag(c))) + sum(max(c, 0))`` per pair (valid
        for any ``c``; ``lambda_max`` from ARPACK, so use
        :func:`stadv_ref.upper_bounds.dual_bound` for a certified value).
    """
    if not isinstance(net, OneHiddenLayerNet) or net.binary:
        raise TypeError("net must be a multi-class OneHiddenLayerNet")
    H, Wd = net.image_shape
    lam = np.asarray(aabb_radii(H, Wd, eps=check_budget("eps", eps, allow_zero=False))).reshape(-1)
    Wl = net.W * lam[None, :]
    pairs = class_pairs(net.n_classes) if pairs is None else list(pairs)
    out = []
    for k, (i, j) in enumerate(pairs):
        dv = net.V[i] - net.V[j]
        ck = _spectral_c(Wl, dv) if c is None else np.asarray(c[k], dtype=np.float64)
        out.append(sdp_dual_gradient(Wl, ck, row_scale=dv, solver="arpack", tol=SDP_EIG_TOL).value)
    return np.asarray(out)


def _sdp_init(p, lam, pairs):
    """Initial ``sdp`` dual variables (one row per class pair: :func:`_spectral_c`, feasible)."""
    Wl = p["W"] * lam
    return np.stack([_spectral_c(Wl, p["V"][i] - p["V"][j]) for i, j in pairs])


def _sdp_penalty(p, grads, state, *, rng, t, lam, pairs, s):
    """The ``sdp`` regulariser at optimiser step ``t``; adds its gradients to ``grads``.

    Every ``s["sdp_every"]`` steps: ``sdp_pairs_per_step`` random class pairs (drawn from
    ``rng``) give an unbiased estimate of ``sdp_weight * every`` x the mean over the pairs of
    ``J(A_ij, c_ij)``, ``A_ij = diag(V_i - V_j) W diag(lambda)``, with gradients in ``W``,
    ``V`` and ``c`` (``grads["sdp_c"]``). ARPACK is warm-started from the pair's last top
    eigenvector (``state["sdp_u"]``) or, the first time, from a start vector seeded by
    ``(seed, 2, pair)``. In between it returns the last value (no gradient).
    """
    every = s["sdp_every"]
    if t % every:
        return float(state["sdp_last_reg"][0])
    w = s["sdp_weight"] * every
    npairs = len(pairs)
    k = min(s["sdp_pairs_per_step"], npairs)
    chosen = np.sort(rng.choice(npairs, size=k, replace=False))
    Wl = p["W"] * lam
    gW = np.zeros_like(p["W"])
    gV = np.zeros_like(p["V"])
    gc = np.zeros_like(p["sdp_c"])
    total = 0.0
    scale_all = w / npairs * (npairs / k)  # unbiased estimate of w * mean over pairs
    for q in chosen:
        i, j = pairs[q]
        dv = p["V"][i] - p["V"][j]
        u0 = state["sdp_u"][q]
        u0 = None if not np.any(u0) else u0
        g = sdp_dual_gradient(Wl, p["sdp_c"][q], row_scale=dv, solver="arpack", u0=u0, tol=SDP_EIG_TOL,
                              seed=(s["seed"], 2, int(q)))
        state["sdp_u"][q] = g.x
        state["sdp_bound"][q] = g.value
        total += g.value
        gc[q] = scale_all * g.grad_c
        if g.scale:
            lb = lam * g.x_t
            gW += scale_all * g.scale * np.outer(dv * g.x_s, lb)
            gdv = scale_all * g.scale * g.x_s * (p["W"] @ lb)
            gV[i] += gdv
            gV[j] -= gdv
    grads["W"] = grads["W"] + gW
    grads["V"] = grads["V"] + gV
    grads["sdp_c"] = gc
    reg = scale_all * total / every
    state["sdp_last_reg"] = np.asarray([reg])
    return reg


# ---------------------------------------------------------------------------
# Spatial transformer (stn)
# ---------------------------------------------------------------------------
def _affine_basis(H, W):
    """Flow of the affine map ``theta = I + p`` in normalised coordinates: ``flow = B p``.

    Returns ``B`` of shape (6, 2, H, W): ``du = cu (p0 xn + p1 yn + p2)``,
    ``dv = cv (p3 xn + p4 yn + p5)`` with ``xn, yn`` in ``[-1, 1]``.
    """
    cu, cv = (W - 1) / 2.0, (H - 1) / 2.0
    yn, xn = np.meshgrid((np.arange(H) - cv) / max(cv, 1), (np.arange(W) - cu) / max(cu, 1), indexing="ij")
    B = np.zeros((6, 2, H, W))
    for k, g in enumerate((xn, yn, np.ones_like(xn))):
        B[k, 0] = cu * g
        B[3 + k, 1] = cv * g
    return B


def _stn_forward(p, X, mode, basis, shape):
    """Transformer forward pass: its activations (for the backward pass) and the flow ``(B, 2, H, W)``."""
    H, W = shape
    Z1 = X @ p["stn_W1"].T + p["stn_b1"]
    H1 = np.maximum(Z1, 0)
    Z2 = H1 @ p["stn_W2"].T + p["stn_b2"]
    H2 = np.maximum(Z2, 0)
    out = H2 @ p["stn_W3"].T + p["stn_b3"]
    if mode == "affine":
        flow = np.tensordot(out, basis, axes=(1, 0))
    else:
        flow = out.reshape(-1, 2, H, W)
    return (Z1, H1, Z2, H2), flow


def _stn_backward(p, X, cache, gflow, mode, basis, grads):
    """Transformer backward pass: the ``stn_*`` gradients from the gradient ``gflow`` w.r.t. the flow."""
    Z1, H1, Z2, H2 = cache
    B = X.shape[0]
    if mode == "affine":
        dout = np.tensordot(gflow, basis, axes=((1, 2, 3), (1, 2, 3)))
    else:
        dout = gflow.reshape(B, -1)
    grads["stn_W3"] = dout.T @ H2
    grads["stn_b3"] = dout.sum(axis=0)
    d2 = (dout @ p["stn_W3"]) * (Z2 > 0)
    grads["stn_W2"] = d2.T @ H1
    grads["stn_b2"] = d2.sum(axis=0)
    d1 = (d2 @ p["stn_W2"]) * (Z1 > 0)
    grads["stn_W1"] = d1.T @ X
    grads["stn_b1"] = d1.sum(axis=0)

