r"""Training the one-hidden-layer MNIST networks of Section 4.2 / appendix 6.8.

Seven variants (``f(x) = V relu(W x + b) + c``, 10 classes, 500 hidden units
unless stated; EQUATIONS.md, "Experiments"):

=======  ===================================================================
``nt``   cross-entropy, no regularisation.
``rand`` random initialisation, no training.
``fro``  multi-class hinge loss + ``0.08 (||W||_F + ||V||_F)``.
``spe``  multi-class hinge loss + ``0.09 (||W||_2 + ||V||_2)`` (spectral norms;
         gradient through the top singular vectors).
``stn``  multi-class hinge loss of the classifier applied to the input warped
         (:func:`stadv_ref.warp`) by a three-layer spatial transformer with 100
         hidden units that predicts an affine map (default) or a flow field;
         trained jointly. The deployed network is the classifier alone.
``at``   cross-entropy + ``0.3`` x cross-entropy on a pool of stAdv adversarial
         examples (``tau = 0.05``) regenerated every 3 epochs. The first pool is
         made after ``at_warmup = 1`` clean epoch (a pool made against the random
         initialisation would not be adversarial for the trained network), then
         at epochs 1, 4, 7, ...; ``at_pool_size`` (10,000) random training images
         are attacked with the batched stAdv (``at_max_iter = 50`` L-BFGS steps).
``sdp``  multi-class hinge loss + ``sdp_weight`` (0.05) x the mean over the 45
         class pairs of the dual-SDP certificate of Raghunathan et al. (2018),
         ``n max(0, lambda_max(P_ij - diag c_ij)) + sum max(c_ij, 0)`` with
         ``P_ij = [[0, A], [A^T, 0]]``, ``A = diag(v_i - v_j) W diag(lambda)``
         (``lambda`` the AABB radii, Prop. 2; Section 4.1, appendix 6.7), trained
         jointly over ``W``, ``V`` and the dual variables ``c`` (Adam, own
         learning rate ``sdp_dual_lr``), gradients through the top eigenvector.
         ``c`` starts at the feasible point ``||A||_2 (sqrt(d/m), sqrt(m/d))``.
         For speed each step uses ``sdp_pairs_per_step`` (3) random pairs
         (an unbiased estimate of the mean) every ``sdp_every`` (2) steps.
=======  ===================================================================

For a multi-class network ``v`` is a ``(K, m)`` matrix; ``||v||_2`` of the paper is
read as ``||V||_F`` for ``fro`` and as the spectral norm ``||V||_2`` for ``spe``
(both equal ``||v||_2`` for a single output vector).

Everything is NumPy/SciPy: mini-batch Adam (default) or SGD with momentum,
deterministic from ``seed``. With ``checkpoint=`` a ``.npz`` (no pickle) holding
the parameters, the optimiser state, the RNG state and the history is written at
the end of every epoch; a later call with the same settings resumes from it and
produces the same model as an uninterrupted run (bit for bit on the same machine).

The paper's networks have no hidden bias (``f(x) = v^T sigma(W x)``); we follow
that by default (``hidden_bias=False``) and keep an output bias ``c``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validate import as_float_array, check_budget, check_choice, check_positive_int
from ..network import OneHiddenLayerNet

__all__ = [
    "VARIANTS",
    "DEFAULTS",
    "TrainResult",
    "train",
    "load_or_train",
    "model_path",
    "default_model_dir",
    "hinge_loss",
    "cross_entropy_loss",
    "sdp_pair_bounds",
]

VARIANTS = ("nt", "rand", "fro", "spe", "stn", "at", "sdp")

#: Default settings; ``train(..., **options)`` overrides them.
DEFAULTS = {
    "hidden": 500,
    "epochs": 20,
    "batch_size": 100,
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.9,
    "hidden_bias": False,
    "init_scale": 1.0,
    # fro / spe (appendix 6.8)
    "fro_weight": 0.08,
    "spe_weight": 0.09,
    "spe_power_iters": 2,
    # stn
    "stn_hidden": 100,
    "stn_mode": "affine",
    "stn_padding": "zeros",
    # at
    "at_weight": 0.3,
    "at_tau": 0.05,
    "at_every": 3,
    "at_warmup": 1,
    "at_pool_size": 10000,
    "at_max_iter": 50,
    # sdp
    "sdp_weight": 0.05,
    "sdp_pairs_per_step": 3,
    "sdp_every": 2,
    "sdp_dual_lr": 1e-3,
    "sdp_eps": 1.0,
}

#: Default epochs per variant (``rand`` is never trained).
DEFAULT_EPOCHS = {"nt": 20, "rand": 0, "fro": 20, "spe": 20, "stn": 20, "at": 12, "sdp": 20}
QUICK_EPOCHS = {"nt": 4, "rand": 0, "fro": 4, "spe": 4, "stn": 4, "at": 3, "sdp": 4}
QUICK_N_TRAIN = 5000
#: Option overrides applied by ``load_or_train(quick=True)`` unless given explicitly.
QUICK_OPTIONS = {"at": {"at_pool_size": 1000}}

_LOSS_OF = {"nt": "ce", "rand": "ce", "fro": "hinge", "spe": "hinge", "stn": "hinge", "at": "ce", "sdp": "hinge"}

_CKPT_VERSION = 1


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
# SDP certificate (Section 4.1 and Raghunathan et al. 2018)
# ---------------------------------------------------------------------------
def class_pairs(K):
    """All unordered class pairs ``(i, j)``, ``i < j`` (``SDP(P_ij) = SDP(P_ji)``)."""
    return [(i, j) for i in range(K) for j in range(i + 1, K)]


def _sdp_dual(Wl, dv, c, u0=None, tol=1e-6):
    """Dual bound for ``A = diag(dv) Wl`` (``Wl = W diag(lambda)``) and its gradients.

    ``bound = n max(0, lambda_max(P - diag(c))) + sum(max(c, 0))``,
    ``P = [[0, A], [A^T, 0]]``. Returns ``bound, (a, b, scale), dc, u, lambda_max``
    where ``d bound / d A = scale * a b^T`` (rank one: ``2 n u_s u_t^T``).

    The same function as :func:`stadv_ref.sdp.dual_bound_and_grad` (tested to
    agree), but with a warm-started ARPACK ``eigsh`` on a matrix-free ``P`` instead
    of a dense ``eigh``: several times faster per step in training. Not a certified
    value (use :func:`stadv_ref.sdp.dual_bound` for that).
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    m, d = Wl.shape
    n = m + d
    c1, c2 = c[:m], c[m:]

    def mv(z):
        z = np.asarray(z).reshape(-1)
        s, t = z[:m], z[m:]
        return np.concatenate([dv * (Wl @ t) - c1 * s, Wl.T @ (dv * s) - c2 * t])

    op = LinearOperator((n, n), matvec=mv, dtype=np.float64)
    try:
        vals, vecs = eigsh(op, k=1, which="LA", v0=u0, tol=tol, maxiter=5000)
        lam, u = float(vals[0]), vecs[:, 0]
    except Exception:  # pragma: no cover - ARPACK failure: dense fallback
        P = np.zeros((n, n))
        A = dv[:, None] * Wl
        P[:m, m:] = A
        P[m:, :m] = A.T
        P[np.arange(n), np.arange(n)] -= c
        w, V = np.linalg.eigh(P)
        lam, u = float(w[-1]), V[:, -1]
    bound = n * max(0.0, lam) + float(np.maximum(c, 0).sum())
    dc = (c > 0).astype(np.float64)
    scale = 0.0
    if lam > 0:
        dc = dc - n * u * u
        scale = 2.0 * n
    return bound, (u[:m], u[m:], scale), dc, u, lam


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
        :mod:`stadv_ref.sdp` for a certified value).
    """
    from ..operators import aabb_radii

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
        out.append(_sdp_dual(Wl, dv, ck)[0])
    return np.asarray(out)


def _gershgorin_c(Wl, dv):
    """Gershgorin dual point ``c_i = sum_j |P_ij|`` (``lambda_max(P - diag c) <= 0``)."""
    absA = np.abs(dv)[:, None] * np.abs(Wl)
    return np.concatenate([absA.sum(axis=1), absA.sum(axis=0)])


def _spectral_c(Wl, dv):
    """Dual point ``c = ||A||_2 (sqrt(d/m) 1_m, sqrt(m/d) 1_d)`` (``P <= diag c``).

    ``[[diag(mu), -A], [-A^T, diag(nu)]]`` is PSD when ``||diag(mu)^-1/2 A
    diag(nu)^-1/2||_2 <= 1``; this choice gives ``sum(c) = 2 sqrt(m d) ||A||_2``,
    usually far below the Gershgorin value ``2 sum |A_ij|``.
    """
    m, d = Wl.shape
    s = np.linalg.norm(dv[:, None] * Wl, 2) * (1 + 1e-9)
    return np.concatenate([np.full(m, s * np.sqrt(d / m)), np.full(d, s * np.sqrt(m / d))])


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


# ---------------------------------------------------------------------------
# Results and settings
# ---------------------------------------------------------------------------
@dataclass
class TrainResult:
    """Output of :func:`train` with ``return_result=True``.

    Attributes
    ----------
    net : OneHiddenLayerNet
        The deployed classifier (for ``stn``: without the transformer).
    history : dict of ndarray
        Per-epoch means over the steps: ``loss`` (total), ``data_loss`` (loss on
        the clean batch), ``reg`` (the regulariser; for ``at`` the weighted loss
        on the adversarial pool) and ``train_acc`` (clean batch accuracy).
    settings : dict
        Every setting used (JSON-serialisable).
    extras : dict of ndarray
        Variant-specific arrays: the ``stn_*`` transformer weights, the ``sdp_c``
        dual variables.
    """

    net: OneHiddenLayerNet
    history: dict
    settings: dict
    extras: dict = field(default_factory=dict)


def _settings(variant, hidden, epochs, batch_size, seed, options):
    check_choice("variant", variant, VARIANTS)
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    s = dict(DEFAULTS)
    s.update(options)
    s["variant"] = variant
    s["hidden"] = check_positive_int("hidden", hidden)
    s["epochs"] = DEFAULT_EPOCHS[variant] if epochs is None else check_positive_int("epochs", epochs, minimum=0)
    if variant == "rand":
        s["epochs"] = 0
    s["batch_size"] = check_positive_int("batch_size", batch_size)
    s["seed"] = check_positive_int("seed", seed, minimum=0)
    s["loss"] = _LOSS_OF[variant]
    check_choice("optimizer", s["optimizer"], ("adam", "sgd"))
    check_choice("stn_mode", s["stn_mode"], ("affine", "flow"))
    check_choice("stn_padding", s["stn_padding"], ("zeros", "border"))
    for k in ("lr", "fro_weight", "spe_weight", "at_weight", "at_tau", "sdp_weight", "sdp_dual_lr",
              "momentum", "init_scale"):
        s[k] = check_budget(k, s[k])
    check_budget("sdp_eps", s["sdp_eps"], allow_zero=False)
    s["at_warmup"] = check_positive_int("at_warmup", s["at_warmup"], minimum=0)
    for k in ("spe_power_iters", "stn_hidden", "at_every", "at_pool_size", "at_max_iter", "sdp_pairs_per_step",
              "sdp_every"):
        s[k] = check_positive_int(k, s[k])
    s["hidden_bias"] = bool(s["hidden_bias"])
    return s


def _check_data(X, y, name_x="X", name_y="y"):
    X = as_float_array(name_x, X, ndim=(2, 3), dtype=np.float64)
    if X.ndim == 3:
        X = X.reshape(X.shape[0], -1)
    if X.shape[0] < 1:
        raise ValueError(f"{name_x} must hold at least one example")
    y = np.asarray(y)
    if y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name_y} must be integer labels of shape ({X.shape[0]},), got {y.shape} {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{name_y} must be non-negative class labels")
    return np.ascontiguousarray(X), y.astype(np.int64)


# ---------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------
class _Trainer:
    def __init__(self, s, X, y, n_classes, image_shape):
        self.s = s
        self.X, self.y = X, y
        self.K = n_classes
        self.shape = image_shape
        self.d = X.shape[1]
        self.rng = np.random.default_rng(s["seed"])
        self.params = self._init_params()
        self.state = {}  # variant state (warm vectors, pools), saved in checkpoints
        self.opt = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in self.params.items()}
        self.t = 0
        self.epoch = 0
        self.history = {k: [] for k in ("loss", "data_loss", "reg", "train_acc")}
        self._setup_variant()

    # -- initialisation --------------------------------------------------------
    def _init_params(self):
        s, rng, d, m, K = self.s, self.rng, self.d, self.s["hidden"], self.K
        sc = s["init_scale"]
        p = {
            "W": rng.uniform(-1, 1, (m, d)) * sc / np.sqrt(d),
            "V": rng.uniform(-1, 1, (K, m)) * sc / np.sqrt(m),
            "c": np.zeros(K),
        }
        if s["hidden_bias"]:
            p["b"] = np.zeros(m)
        if s["variant"] == "stn":
            h = s["stn_hidden"]
            out = 6 if s["stn_mode"] == "affine" else 2 * d
            p["stn_W1"] = rng.uniform(-1, 1, (h, d)) / np.sqrt(d)
            p["stn_b1"] = np.zeros(h)
            p["stn_W2"] = rng.uniform(-1, 1, (h, h)) / np.sqrt(h)
            p["stn_b2"] = np.zeros(h)
            # last layer starts at zero: the transformer starts as the identity
            p["stn_W3"] = np.zeros((out, h))
            p["stn_b3"] = np.zeros(out)
        return p

    def _setup_variant(self):
        s = self.s
        if s["variant"] == "spe":
            su = np.random.default_rng([s["seed"], 1]).standard_normal(s["hidden"])
            _, u, _ = _top_singular(self.params["W"], su / np.linalg.norm(su), 100)
            self.state["spe_u"] = u
        if s["variant"] == "stn":
            self.basis = _affine_basis(*self.shape)
        if s["variant"] == "sdp":
            from ..operators import aabb_radii

            H, W = self.shape
            self.lam = np.asarray(aabb_radii(H, W, eps=s["sdp_eps"]), dtype=np.float64).reshape(-1)
            self.pairs = class_pairs(self.K)
            Wl = self.params["W"] * self.lam
            c = np.stack([_spectral_c(Wl, self.params["V"][i] - self.params["V"][j]) for i, j in self.pairs])
            self.params["sdp_c"] = c
            self.opt["sdp_c"] = (np.zeros_like(c), np.zeros_like(c))
            self.state["sdp_u"] = np.zeros_like(c)
            self.state["sdp_bound"] = np.zeros(len(self.pairs))
            self.state["sdp_last_reg"] = np.zeros(1)

    # -- one step --------------------------------------------------------------
    def _regulariser(self, grads):
        s, p = self.s, self.params
        v = s["variant"]
        if v == "fro":
            nW, nV = np.linalg.norm(p["W"]), np.linalg.norm(p["V"])
            w = s["fro_weight"]
            grads["W"] = grads["W"] + w * p["W"] / nW
            grads["V"] = grads["V"] + w * p["V"] / nV
            return w * (nW + nV)
        if v == "spe":
            w = s["spe_weight"]
            sW, u, vv = _top_singular(p["W"], self.state["spe_u"], s["spe_power_iters"])
            self.state["spe_u"] = u
            U, S, Vt = np.linalg.svd(p["V"], full_matrices=False)
            grads["W"] = grads["W"] + w * np.outer(u, vv)
            grads["V"] = grads["V"] + w * np.outer(U[:, 0], Vt[0])
            return w * (sW + S[0])
        if v == "sdp":
            return self._sdp_reg(grads)
        return 0.0

    def _sdp_reg(self, grads):
        s, p = self.s, self.params
        every = s["sdp_every"]
        if self.t % every:
            return float(self.state["sdp_last_reg"][0])
        w = s["sdp_weight"] * every
        npairs = len(self.pairs)
        k = min(s["sdp_pairs_per_step"], npairs)
        chosen = np.sort(self.rng.choice(npairs, size=k, replace=False))
        Wl = p["W"] * self.lam
        gW = np.zeros_like(p["W"])
        gV = np.zeros_like(p["V"])
        gc = np.zeros_like(p["sdp_c"])
        total = 0.0
        scale_all = w / npairs * (npairs / k)  # unbiased estimate of w * mean over pairs
        for q in chosen:
            i, j = self.pairs[q]
            dv = p["V"][i] - p["V"][j]
            u0 = self.state["sdp_u"][q]
            u0 = None if not np.any(u0) else u0
            bound, (a, b, sc), dc, u, _ = _sdp_dual(Wl, dv, p["sdp_c"][q], u0)
            self.state["sdp_u"][q] = u
            self.state["sdp_bound"][q] = bound
            total += bound
            gc[q] = scale_all * dc
            if sc:
                lb = self.lam * b
                gW += scale_all * sc * np.outer(dv * a, lb)
                gdv = scale_all * sc * a * (p["W"] @ lb)
                gV[i] += gdv
                gV[j] -= gdv
        grads["W"] = grads["W"] + gW
        grads["V"] = grads["V"] + gV
        grads["sdp_c"] = gc
        reg = scale_all * total / every
        self.state["sdp_last_reg"] = np.asarray([reg])
        return reg

    def _step_grads(self, idx):
        s, p = self.s, self.params
        Xb, yb = self.X[idx], self.y[idx]
        grads = {}
        lossf = _loss_fn(s["loss"])
        if s["variant"] == "stn":
            from ..transform import warp, warp_vjp_flow

            cache, flow = _stn_forward(p, Xb, s["stn_mode"], self.basis, self.shape)
            ximg = Xb.reshape(-1, *self.shape)
            Xw = warp(ximg, flow, s["stn_padding"]).reshape(Xb.shape[0], -1)
            Z, Hh, out = _forward(p, Xw)
            loss, dout = lossf(out, yb)
            dX = _backward(p, Xw, Z, Hh, dout, grads, need_dx=True)
            gflow = warp_vjp_flow(ximg, flow, dX.reshape(ximg.shape), s["stn_padding"])
            _stn_backward(p, Xb, cache, gflow, s["stn_mode"], self.basis, grads)
        else:
            Z, Hh, out = _forward(p, Xb)
            loss, dout = lossf(out, yb)
            _backward(p, Xb, Z, Hh, dout, grads)
        acc = float((out.argmax(axis=1) == yb).mean())
        if s["variant"] == "at" and "at_pool_x" in self.state:
            pool_x, pool_y = self.state["at_pool_x"], self.state["at_pool_y"]
            j = self.rng.integers(0, pool_x.shape[0], size=len(idx))
            Xa, ya = pool_x[j], pool_y[j]
            Za, Ha, outa = _forward(p, Xa)
            la, da = cross_entropy_loss(outa, ya)
            da *= s["at_weight"]
            _backward(p, Xa, Za, Ha, da, grads)
            at_term = s["at_weight"] * la
        else:
            at_term = 0.0
        reg = self._regulariser(grads) + at_term
        return loss, reg, acc, grads

    def _apply(self, grads):
        s = self.s
        self.t += 1
        t = self.t
        for k, g in grads.items():
            pk = self.params[k]
            m, v = self.opt[k]
            lr = s["sdp_dual_lr"] if k == "sdp_c" else s["lr"]
            if s["optimizer"] == "adam":
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                mhat = m / (1 - 0.9**t)
                vhat = v / (1 - 0.999**t)
                pk -= lr * mhat / (np.sqrt(vhat) + 1e-8)
            else:
                m *= s["momentum"]
                m += g
                pk -= lr * m

    # -- adversarial pool (at) ---------------------------------------------------
    def _regenerate_pool(self):
        from ..attacks.stadv import stadv_attack

        s = self.s
        n = self.X.shape[0]
        size = min(s["at_pool_size"], n)
        idx = np.sort(self.rng.choice(n, size=size, replace=False))
        net = self.network()
        res = stadv_attack(
            net, self.X[idx].reshape(-1, *self.shape), self.y[idx], s["at_tau"],
            max_iter=s["at_max_iter"], progress=False,
        )
        self.state["at_pool_x"] = res.x_adv.reshape(size, -1)
        self.state["at_pool_y"] = self.y[idx].copy()
        self.state["at_pool_success"] = np.asarray([float(res.success.mean())])

    # -- epochs -------------------------------------------------------------------
    def run_epoch(self, progress, callback):
        from tqdm.auto import tqdm

        s = self.s
        e = self.epoch - s["at_warmup"]
        if s["variant"] == "at" and e >= 0 and e % s["at_every"] == 0:
            self._regenerate_pool()
        n = self.X.shape[0]
        perm = self.rng.permutation(n)
        bs = s["batch_size"]
        steps = (n + bs - 1) // bs
        tot = {"loss": 0.0, "data_loss": 0.0, "reg": 0.0, "train_acc": 0.0}
        bar = tqdm(range(steps), desc=f"{s['variant']} epoch {self.epoch + 1}/{s['epochs']}",
                   disable=not progress, leave=False)
        for k in bar:
            idx = perm[k * bs : (k + 1) * bs]
            loss, reg, acc, grads = self._step_grads(idx)
            self._apply(grads)
            tot["loss"] += loss + reg
            tot["data_loss"] += loss
            tot["reg"] += reg
            tot["train_acc"] += acc
            if progress and k % 20 == 0:
                bar.set_postfix(loss=f"{loss + reg:.4f}", acc=f"{acc:.3f}")
            if callback is not None:
                callback(self.epoch, k, {"loss": loss, "reg": reg, "acc": acc})
        for key in tot:
            self.history[key].append(tot[key] / steps)
        self.epoch += 1

    def network(self):
        p = self.params
        return OneHiddenLayerNet(p["W"], p["V"], p.get("b"), p["c"], image_shape=self.shape)

    def extras(self):
        ex = {k: v.copy() for k, v in self.params.items() if k.startswith("stn_") or k == "sdp_c"}
        if self.s["variant"] == "sdp":
            ex["sdp_pairs"] = np.asarray(self.pairs, dtype=np.int64)
        return ex

    # -- checkpoints ----------------------------------------------------------------
    def save(self, path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "ckpt_version": np.int64(_CKPT_VERSION),
            "settings": np.asarray(json.dumps(self.s, sort_keys=True)),
            "rng_state": np.asarray(json.dumps(self.rng.bit_generator.state)),
            "t": np.int64(self.t),
            "epoch": np.int64(self.epoch),
        }
        for k, v in self.params.items():
            arrays["p_" + k] = v
            arrays["m_" + k] = self.opt[k][0]
            arrays["v_" + k] = self.opt[k][1]
        for k, v in self.state.items():
            arrays["s_" + k] = v
        for k, v in self.history.items():
            arrays["h_" + k] = np.asarray(v, dtype=np.float64)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    def load(self, path):
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except Exception as exc:
            raise ValueError(f"checkpoint {str(path)!r} is not a valid .npz ({exc})") from exc
        saved = json.loads(str(data["settings"]))
        if saved != json.loads(json.dumps(self.s, sort_keys=True)):
            diff = sorted(k for k in set(saved) | set(self.s) if saved.get(k) != self.s.get(k))
            raise ValueError(f"checkpoint {str(path)!r} was written with different settings {diff}; "
                             "use another checkpoint path or resume=False")
        st = json.loads(str(data["rng_state"]))
        self.rng.bit_generator.state = st
        self.t = int(data["t"])
        self.epoch = int(data["epoch"])
        for k in list(self.params):
            self.params[k] = data["p_" + k].copy()
            self.opt[k] = (data["m_" + k].copy(), data["v_" + k].copy())
        self.state = {k[2:]: data[k].copy() for k in data if k.startswith("s_")}
        self.history = {k[2:]: list(data[k]) for k in data if k.startswith("h_")}


def train(variant, X, y, *, hidden=500, epochs=None, batch_size=100, seed=0, checkpoint=None,
          resume=True, progress=True, callback=None, return_result=False, n_classes=10,
          image_shape=(28, 28), **options):
    """Train one of the seven network variants of appendix 6.8.

    Parameters
    ----------
    variant : {"nt", "rand", "fro", "spe", "stn", "at", "sdp"}
        See the module docstring.
    X : array_like, shape (N, 28, 28) or (N, 784)
        Training images in ``[0, 1]``.
    y : array_like of int, shape (N,)
        Labels in ``[0, n_classes)``.
    hidden : int
        Hidden units (500 in Section 4; 512 in Section 3).
    epochs : int, optional
        Default :data:`DEFAULT_EPOCHS` ``[variant]``; ``rand`` always uses 0.
    batch_size : int
    seed : int
        Seeds the initialisation, the batch order and every random choice.
    checkpoint : str or path-like, optional
        ``.npz`` written at the end of every epoch; resumed from when it exists
        and ``resume`` is true (its settings must equal these).
    resume : bool
    progress : bool
        tqdm progress bar.
    callback : callable, optional
        ``callback(epoch, step, info)`` after every optimiser step (``info`` has
        ``loss``, ``reg``, ``acc``); an exception raised there interrupts training
        (the last end-of-epoch checkpoint stays valid).
    return_result : bool
        Return a :class:`TrainResult` instead of the network.
    n_classes : int
    image_shape : (int, int)
    **options
        Overrides of :data:`DEFAULTS` (``lr``, ``optimizer``, ``fro_weight``,
        ``spe_weight``, ``stn_mode``, ``at_pool_size``, ``sdp_weight``, ...).

    Returns
    -------
    OneHiddenLayerNet or TrainResult
        The deployed classifier ``f(x) = V relu(W x + b) + c``.
    """
    s = _settings(variant, hidden, epochs, batch_size, seed, options)
    X, y = _check_data(X, y)
    K = check_positive_int("n_classes", n_classes, minimum=2)
    if y.max() >= K:
        raise ValueError(f"y has labels >= n_classes = {K}")
    image_shape = tuple(int(v) for v in image_shape)
    if len(image_shape) != 2 or image_shape[0] * image_shape[1] != X.shape[1]:
        raise ValueError(f"image_shape {image_shape} does not match X with {X.shape[1]} features")
    s["n_train"] = int(X.shape[0])
    tr = _Trainer(s, X, y, K, image_shape)
    if checkpoint is not None and resume and Path(checkpoint).is_file():
        tr.load(checkpoint)
    while tr.epoch < s["epochs"]:
        tr.run_epoch(progress, callback)
        if checkpoint is not None:
            tr.save(checkpoint)
    net = tr.network()
    if return_result:
        hist = {k: np.asarray(v, dtype=np.float64) for k, v in tr.history.items()}
        return TrainResult(net, hist, dict(s), tr.extras())
    return net


# ---------------------------------------------------------------------------
# Model cache
# ---------------------------------------------------------------------------
def default_model_dir():
    """``STADV_MODEL_DIR`` or ``~/.cache/stadv_ref/models``."""
    env = os.environ.get("STADV_MODEL_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stadv_ref" / "models"


def _resolve(variant, n_train, epochs, quick):
    if n_train is None:
        n_train = QUICK_N_TRAIN if quick else 60000
    n_train = check_positive_int("n_train", n_train)
    default_ep = (QUICK_EPOCHS if quick else DEFAULT_EPOCHS)[variant]
    if epochs is None:
        epochs = default_ep
    epochs = 0 if variant == "rand" else check_positive_int("epochs", epochs, minimum=0)
    return n_train, epochs, default_ep


def model_path(variant, cache_dir=None, n_train=None, hidden=500, seed=0, epochs=None, quick=False):
    """Cache path ``<cache_dir>/<variant>-h<hidden>-n<n_train>-s<seed>.npz``.

    ``-e<epochs>`` is appended when ``epochs`` differs from the default for
    ``quick`` (so differently trained models never share a file).
    """
    check_choice("variant", variant, VARIANTS)
    n_train, epochs, default_ep = _resolve(variant, n_train, epochs, quick)
    stem = f"{variant}-h{check_positive_int('hidden', hidden)}-n{n_train}-s{check_positive_int('seed', seed, minimum=0)}"
    if epochs != default_ep:
        stem += f"-e{epochs}"
    base = Path(cache_dir) if cache_dir is not None else default_model_dir()
    return base / (stem + ".npz")


def load_or_train(variant, cache_dir=None, n_train=None, hidden=500, seed=0, epochs=None, quick=False,
                  data_dir=None, progress=True, with_metadata=False, **options):
    """Load a cached trained network, or train it on MNIST and cache it.

    Parameters
    ----------
    variant : str
        One of :data:`VARIANTS`.
    cache_dir : str or path-like, optional
        Default :func:`default_model_dir` (``STADV_MODEL_DIR`` or
        ``~/.cache/stadv_ref/models``).
    n_train : int, optional
        First ``n_train`` MNIST training images (default 60000, or 5000 with ``quick``).
    hidden, seed, epochs
        As in :func:`train`; ``epochs`` defaults to :data:`DEFAULT_EPOCHS`
        (:data:`QUICK_EPOCHS` with ``quick``).
    quick : bool
        Small defaults for fast checks.
    data_dir : str, optional
        MNIST directory (default ``STADV_DATA_DIR``).
    progress : bool
    with_metadata : bool
        Also return the metadata dict (``test_accuracy``, settings ...).
    **options
        Passed to :func:`train`; they must not contradict a cached model's
        settings (otherwise ``ValueError``: use another ``cache_dir``).

    Returns
    -------
    OneHiddenLayerNet, or (OneHiddenLayerNet, dict)

    Notes
    -----
    The file holds the deployed classifier (``W, v, b, c``) and, as ``meta_*``
    entries: ``test_accuracy`` (full MNIST test set), ``train_accuracy``,
    ``settings`` (JSON), ``history_*`` and the variant's extra arrays (``stn_*``
    transformer weights and ``test_accuracy_with_stn`` for ``stn``; ``sdp_c`` and
    ``sdp_pairs`` for ``sdp``). A per-epoch checkpoint lives in
    ``<cache_dir>/checkpoints/`` while training and is removed afterwards.
    """
    from ..data import load_mnist

    n_train, epochs, _ = _resolve(variant, n_train, epochs, quick)
    if quick:
        options = {**QUICK_OPTIONS.get(variant, {}), **options}
    path = model_path(variant, cache_dir, n_train, hidden, seed, epochs, quick)
    if path.is_file():
        net, meta = OneHiddenLayerNet.load(path, with_metadata=True)
        saved = json.loads(str(meta.get("settings", "{}")))
        bad = {k: (saved.get(k), v) for k, v in options.items() if k in saved and saved[k] != v}
        if bad:
            raise ValueError(f"cached model {str(path)!r} was trained with other settings {bad}; "
                             "pass another cache_dir")
        return (net, meta) if with_metadata else net
    X, y = load_mnist("train", data_dir=data_dir, limit=n_train)
    Xt, yt = load_mnist("test", data_dir=data_dir)
    ckpt = path.parent / "checkpoints" / (path.stem + ".ckpt.npz")
    res = train(variant, X, y, hidden=hidden, epochs=epochs, seed=seed, checkpoint=ckpt,
                progress=progress, return_result=True, **options)
    net = res.net
    meta = {
        "variant": variant,
        "test_accuracy": float((net.predict(Xt) == yt).mean()),
        "train_accuracy": float((net.predict(X) == y).mean()),
        "settings": json.dumps(res.settings, sort_keys=True),
        "n_train": n_train,
        "epochs": epochs,
        "hidden": hidden,
        "seed": seed,
    }
    for k, v in res.history.items():
        meta["history_" + k] = v
    meta.update(res.extras)
    if variant == "stn":
        meta["test_accuracy_with_stn"] = _stn_accuracy(res, Xt, yt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    net.save(tmp, **meta)
    os.replace(tmp, path)
    if ckpt.is_file():
        ckpt.unlink()
    return (net, meta) if with_metadata else net


def _stn_accuracy(res, Xt, yt):
    """Test accuracy of the transformer + classifier pipeline used in training."""
    from ..transform import warp

    s = res.settings
    p = dict(res.extras)
    shape = res.net.image_shape
    X = Xt.reshape(Xt.shape[0], -1)
    _, flow = _stn_forward(p, X, s["stn_mode"], _affine_basis(*shape), shape)
    Xw = warp(Xt.reshape(-1, *shape), flow, s["stn_padding"])
    return float((res.net.predict(Xw) == yt).mean())
