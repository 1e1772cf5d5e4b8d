r"""The trainer of the one-hidden-layer MNIST networks of Section 4.2 / appendix 6.8: :func:`train`.

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

The losses, regularisers and the transformer are in :mod:`.objectives`, the settings in
:mod:`.settings`, the checkpoint format in :mod:`.checkpoint` and the model cache
(:func:`stadv_ref.training.load_or_train`) in :mod:`.cache`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..attacks import stadv_attack
from ..network import OneHiddenLayerNet
from ..operators import aabb_radii
from ..transform import warp, warp_vjp_flow
from .checkpoint import load_checkpoint, save_checkpoint
from .objectives import (
    _affine_basis,
    _backward,
    _forward,
    _fro_penalty,
    _loss_fn,
    _sdp_init,
    _sdp_penalty,
    _spe_penalty,
    _stn_backward,
    _stn_forward,
    _top_singular,
    class_pairs,
    cross_entropy_loss,
)
from .settings import DEFAULT_EPOCHS, DEFAULTS, QUICK_EPOCHS, VARIANTS, _check_data, _settings

__all__ = ["TrainResult", "train", "VARIANTS", "DEFAULTS", "DEFAULT_EPOCHS", "QUICK_EPOCHS"]


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


# ---------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------
class _Trainer:
    """One training run: parameters, optimiser moments, RNG, variant state and history (checkpointable)."""

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
            H, W = self.shape
            self.lam = np.asarray(aabb_radii(H, W, eps=s["sdp_eps"]), dtype=np.float64).reshape(-1)
            self.pairs = class_pairs(self.K)
            c = _sdp_init(self.params, self.lam, self.pairs)
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
            return _fro_penalty(p, grads, s["fro_weight"])
        if v == "spe":
            return _spe_penalty(p, grads, self.state, s["spe_weight"], s["spe_power_iters"])
        if v == "sdp":
            return _sdp_penalty(p, grads, self.state, rng=self.rng, t=self.t, lam=self.lam, pairs=self.pairs, s=s)
        return 0.0

    def _step_grads(self, idx):
        s, p = self.s, self.params
        Xb, yb = self.X[idx], self.y[idx]
        grads = {}
        lossf = _loss_fn(s["loss"])
        if s["variant"] == "stn":
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
        save_checkpoint(self, path)

    def load(self, path):
        load_checkpoint(self, path)


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

    Raises
    ------
    TypeError
        ``X`` not numeric; ``y`` not integer labels (floats and bools are refused);
        ``hidden``, ``epochs``, ``batch_size``, ``seed``, ``n_classes`` or an integer option
        not an integer; ``image_shape`` not a pair of integers (floats are refused, not
        truncated); a real option not a real number; ``hidden_bias`` not a bool.
    ValueError
        Unknown ``variant`` or option; ``X`` not 2-D/3-D, not finite or empty (``N = 0`` is
        refused); ``X`` and ``y`` holding different numbers of examples (the message names
        both); ``y`` outside ``[0, n_classes)``; ``image_shape`` not positive or not matching
        the features of ``X``; ``hidden``, ``batch_size < 1``, ``epochs < 0``, ``seed < 0``,
        ``n_classes < 2``; a real option negative or not finite; a choice option unknown.
    """
    s = _settings(variant, hidden, epochs, batch_size, seed, options)
    X, y, K, image_shape = _check_data(X, y, n_classes, image_shape)
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

