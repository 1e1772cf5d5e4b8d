r"""One-hidden-layer ReLU networks ``f(x) = v^T relu(W x + b) + c`` (Sections 3-4).

Binary networks have ``v`` of shape ``(m,)`` and a scalar output; multi-class
networks have ``v`` of shape ``(K, m)`` and ``K`` logits. A class pair
``(i, y)`` of a multi-class network is the binary network ``f_i - f_y``
(:meth:`OneHiddenLayerNet.pair`), which is how every binary result of the
paper extends to the multi-class case (appendix 6.6/6.7).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ._model_file import read_model, write_model
from ._validate import as_float_array, as_images, check_class_index, check_image_shape, frozen_copy
from .backend import get_backend
from .reference.network import relu_derivative

__all__ = ["OneHiddenLayerNet", "LinearClassifier", "as_linear_weights", "relu_derivative"]


def _overflow_refused():
    """No NumPy overflow warnings where a non-finite result is refused anyway (``OneHiddenLayerNet._finite``)."""
    return np.errstate(over="ignore", invalid="ignore")


class OneHiddenLayerNet:
    """One-hidden-layer ReLU network ``f(x) = v^T relu(W x + b) + c``.

    Parameters
    ----------
    W : array_like, shape (m, d)
        First-layer weights.
    v : array_like, shape (m,) or (K, m)
        Output weights: binary (scalar output) or ``K`` classes.
    b : array_like, shape (m,), optional
        Hidden biases (default 0; the paper's networks have none).
    c : float or array_like, shape (K,), optional
        Output biases (default 0).
    image_shape : tuple of int, optional
        ``(H, W)`` with ``H * W = d``; default square.

    Raises
    ------
    TypeError
        An array argument is not real numeric; ``image_shape`` is not a pair of integers.
    ValueError
        Wrong shapes (``W`` not 2-D and non-empty, ``v``, ``b``, ``c`` not matching it), NaN/inf,
        or ``image_shape`` not multiplying to ``d``.

    The arrays are copied and made read-only: changing the caller's arrays later
    does not change (or invalidate) the network.

    Examples
    --------
    >>> import numpy as np, stadv_ref
    >>> net = stadv_ref.OneHiddenLayerNet(np.eye(4), np.ones(4))
    >>> float(net(np.ones((1, 2, 2)))[0])
    4.0
    """

    def __init__(self, W, v, b=None, c=None, image_shape=None):
        W = as_float_array("W", W, ndim=2, dtype=np.float64)
        m, d = W.shape
        if m < 1 or d < 1:
            raise ValueError(f"W must be non-empty, got shape {W.shape}")
        v = as_float_array("v", v, ndim=(1, 2), dtype=np.float64)
        if v.shape[-1] != m:
            raise ValueError(f"v must have shape ({m},) or (K, {m}) to match W {W.shape}, got {v.shape}")
        self.binary = v.ndim == 1
        V = v[None] if self.binary else v
        K = V.shape[0]
        if K < 1:
            raise ValueError(f"v must have at least one class, got shape {v.shape}")
        b = np.zeros(m) if b is None else as_float_array("b", b, ndim=1, dtype=np.float64)
        if b.shape != (m,):
            raise ValueError(f"b must have shape ({m},), got {b.shape}")
        if c is None:
            c = np.zeros(K)
        else:
            c = as_float_array("c", c, ndim=(0, 1), dtype=np.float64).reshape(-1)
            if c.shape != (K,):
                raise ValueError(f"c must have shape ({K},) (or be a scalar for a binary net), got {c.shape}")
        if image_shape is None:
            s = int(round(np.sqrt(d)))
            if s * s != d:
                raise ValueError(f"d = {d} is not a square; pass image_shape=(H, W)")
            image_shape = (s, s)
        image_shape = check_image_shape("image_shape", image_shape)
        if image_shape[0] * image_shape[1] != d:
            raise ValueError(f"image_shape {image_shape} does not multiply to W's d = {d} columns")
        # private read-only copies: mutating the caller's arrays afterwards cannot bypass the checks above
        self.W, self.V, self.b, self.c = (frozen_copy(a) for a in (W, V, b, c))
        self.image_shape = image_shape

    @classmethod
    def _from_checked(cls, W, V, b, c, image_shape, binary):
        """A network from arrays that are already validated and frozen (no copy; used by :meth:`pair`)."""
        net = cls.__new__(cls)
        net.W, net.V, net.b, net.c = W, V, b, c
        net.image_shape, net.binary = image_shape, binary
        return net

    # -- shapes ----------------------------------------------------------------
    @property
    def m(self):
        """Number of hidden units."""
        return self.W.shape[0]

    @property
    def d(self):
        """Input dimension ``H * W``."""
        return self.W.shape[1]

    @property
    def n_classes(self):
        """``K`` (1 for a binary network)."""
        return self.V.shape[0]

    @property
    def v(self):
        """Output weights as given: ``(m,)`` for binary, ``(K, m)`` otherwise."""
        return self.V[0] if self.binary else self.V

    def __repr__(self):
        kind = "binary" if self.binary else f"{self.n_classes} classes"
        return f"OneHiddenLayerNet(m={self.m}, d={self.d}, {kind}, image_shape={self.image_shape})"

    # -- evaluation --------------------------------------------------------------
    def flatten(self, X, name="X"):
        """Inputs ``(N, d)``, ``(N, H, W)``, ``(N, 1, H, W)``, ``(d,)`` or ``(H, W)`` as ``(N, d)``.

        Raises
        ------
        TypeError
            ``X`` is not a real numeric array.
        ValueError
            ``X`` has the wrong shape or holds NaN/inf.
        """
        X = as_images(name, X, ndim=(1, 2, 3))  # (N, 1, H, W): one channel, as (N, H, W)
        H, W = self.image_shape
        if X.ndim == 1 or (X.ndim == 2 and X.shape == (H, W) and X.shape[1] != self.d):
            X = X.reshape(1, -1)
        elif X.ndim == 3:
            if X.shape[1:] != (H, W):
                raise ValueError(f"{name} images must be {H}x{W}, got shape {X.shape}")
            X = X.reshape(X.shape[0], H * W)  # explicit width: N = 0 works too
        if X.shape[1] != self.d:
            raise ValueError(f"{name} must have {self.d} features per input, got shape {X.shape}")
        return X

    def _arrays(self, be, dtype):
        return tuple(be.asarray(a.astype(dtype, copy=False)) for a in (self.W, self.b, self.V, self.c))

    @staticmethod
    def _finite(be, out, dtype, what):
        """Refuse an overflow: finite weights and inputs whose ``what`` is not finite."""
        if not bool(be.xp.isfinite(out).all()):
            raise ValueError(
                f"X: the net's {what} is not finite (overflow): the weights or the inputs are too large "
                f"for {np.dtype(dtype).name} arithmetic"
            )
        return out

    def hidden(self, X, *, backend=None):
        """Pre-activations ``W x + b``, shape (N, m).

        Raises
        ------
        TypeError, ValueError
            As :meth:`forward`.
        """
        be = get_backend(backend)
        X = self.flatten(X)
        W, b, V, c = self._arrays(be, X.dtype)
        with _overflow_refused():
            return self._finite(be, be.net_forward(W, b, V, c, be.asarray(X))[0], X.dtype, "pre-activation")

    def forward(self, X, *, backend=None):
        """Network output: shape (N,) for binary, (N, K) for multi-class.

        Parameters
        ----------
        X : array_like, shape (N, d), (N, H, W), (N, 1, H, W), (d,) or (H, W)
            ``N = 0`` gives an empty output.

        Raises
        ------
        TypeError
            ``X`` is not a real numeric array.
        ValueError
            ``X`` has the wrong shape or is not finite; the output overflows.
        """
        be = get_backend(backend)
        X = self.flatten(X)
        W, b, V, c = self._arrays(be, X.dtype)
        with _overflow_refused():
            out = self._finite(be, be.net_forward(W, b, V, c, be.asarray(X))[1], X.dtype, "output")
        return out[:, 0] if self.binary else out

    __call__ = forward

    def predict(self, X, *, backend=None):
        """Predicted labels: ``1`` where ``f > 0`` (binary), else ``argmax_k f_k``.

        Raises
        ------
        TypeError, ValueError
            As :meth:`forward`.
        """
        out = self.forward(X, backend=backend)
        return (out > 0).astype(np.int64) if self.binary else out.argmax(axis=1)

    def input_gradient(self, X, weights=None, *, backend=None):
        """Gradient w.r.t. the input of ``sum_k weights[n, k] f_k(x_n)``.

        Parameters
        ----------
        X : array_like, shape (N, d), (N, H, W) or (N, 1, H, W)
        weights : array_like, shape (N, K) or (K,), optional
            Class weights; required for multi-class networks (e.g. ``e_i - e_y``
            for the margin ``f_i - f_y``). Binary networks use 1.

        Returns
        -------
        ndarray, shape (N, d)

        Raises
        ------
        TypeError
            ``X`` or ``weights`` is not a real numeric array.
        ValueError
            Wrong shapes, non-finite values, missing ``weights`` for a multi-class
            network, or an overflow.

        Notes
        -----
        ``grad f = W^T diag(dsigma(W x + b)) v`` with ``dsigma(0) = 0``.
        """
        be = get_backend(backend)
        X = self.flatten(X)
        N = X.shape[0]
        if weights is None:
            if not self.binary:
                raise ValueError("weights is required for a multi-class network")
            weights = np.ones((N, 1))
        weights = as_float_array("weights", weights, ndim=(1, 2), dtype=X.dtype)
        if weights.ndim == 1:
            weights = np.broadcast_to(weights, (N, weights.shape[0]))
        if weights.shape != (N, self.n_classes):
            raise ValueError(f"weights must have shape ({N}, {self.n_classes}), got {weights.shape}")
        W, b, V, _ = self._arrays(be, X.dtype)
        with _overflow_refused():
            grad = be.net_input_grad(W, b, V, be.asarray(X), be.asarray(np.ascontiguousarray(weights)))
            return self._finite(be, grad, X.dtype, "input gradient")

    def pair(self, i, y):
        """Binary network ``f_i - f_y`` for the class pair ``(i, y)`` (appendix 6.6/6.7).

        Raises
        ------
        TypeError
            ``i`` or ``y`` is not an integer (floats and bools are refused, not truncated).
        ValueError
            A binary network; ``i`` or ``y`` out of ``[0, K)``; ``i == y``; the difference overflows.
        """
        if self.binary:
            raise ValueError("pair() needs a multi-class network")
        K = self.n_classes
        i, y = check_class_index("i", i, K), check_class_index("y", y, K)
        if i == y:
            raise ValueError(f"classes i and y must differ, got i = y = {i}")
        with np.errstate(over="ignore"):  # an overflow is refused just below
            V, c = frozen_copy((self.V[i] - self.V[y])[None]), frozen_copy(self.c[i : i + 1] - self.c[y : y + 1])
        if not (np.isfinite(V).all() and np.isfinite(c).all()):
            raise ValueError(f"v[{i}] - v[{y}] or c[{i}] - c[{y}] overflows (output weights too large)")
        return OneHiddenLayerNet._from_checked(self.W, V, self.b, c, self.image_shape, binary=True)

    # -- persistence -------------------------------------------------------------
    def save(self, path, **metadata):
        """Save to ``.npz`` (no pickle, atomic, with a content hash). ``metadata`` values become arrays.

        Parameters
        ----------
        path : str or path-like
            Written as given (no ``.npz`` suffix is appended).
        **metadata
            Numbers, strings or arrays (e.g. ``test_accuracy=0.98``).

        Raises
        ------
        TypeError
            ``path`` is not a str or path-like; a ``metadata`` value is not numbers, strings or
            a numeric array.
        OSError
            The file cannot be written.
        """
        arrays = dict(W=self.W, v=self.v, b=self.b, c=self.c, image_shape=np.asarray(self.image_shape, np.int64))
        write_model(path, arrays, metadata)

    @classmethod
    def load(cls, path, with_metadata=False):
        """Load a network saved by :meth:`save` (``allow_pickle=False``).

        Also accepts any ``.npz`` with arrays ``W`` and ``v`` (optional ``b``,
        ``c``, ``image_shape``), e.g. weights exported from another framework;
        any other array (except ``meta_*``) is refused, never ignored.

        Parameters
        ----------
        path : str or path-like
        with_metadata : bool
            Also return the ``meta_*`` entries as a dict.

        Raises
        ------
        TypeError
            ``path`` is not a str or path-like.
        ValueError
            Missing file, not an ``.npz`` (e.g. truncated), pickled objects, missing or unknown arrays,
            ``format_version`` not 1 or 2, a ``sha256`` not matching the arrays, bad weights or shapes.
        """
        data, meta = read_model(path)
        shape = data.get("image_shape")
        try:
            shape = None if shape is None else tuple(np.ravel(shape))
            net = cls(data["W"], data["v"], data.get("b"), data.get("c"), shape)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"model file {os.fspath(path)!r} is malformed: {exc}") from exc
        return (net, meta) if with_metadata else net


def as_linear_weights(v, image_shape=None):
    """Validate linear weights ``v`` and return them as an ``(H, W)`` image.

    Parameters
    ----------
    v : array_like, shape (d,) or (H, W)
    image_shape : tuple (H, W), optional
        Required for a flat ``v`` whose length is not a perfect square.

    Raises
    ------
    TypeError
        ``v`` is not a real numeric array; ``image_shape`` is not a pair of integers.
    ValueError
        ``v`` empty, not 1-D/2-D, NaN/inf, or not matching ``image_shape``.
    """
    v = as_float_array("v", v, ndim=(1, 2), dtype=np.float64)
    if v.size == 0:
        raise ValueError("v must be non-empty")
    if image_shape is None:
        if v.ndim == 2:
            image_shape = v.shape
        else:
            s = int(round(np.sqrt(v.size)))
            if s * s != v.size:
                raise ValueError(f"v has {v.size} entries, not a square; pass image_shape=(H, W)")
            image_shape = (s, s)
    image_shape = check_image_shape("image_shape", image_shape)
    if image_shape[0] * image_shape[1] != v.size or (v.ndim == 2 and v.shape != image_shape):
        raise ValueError(f"v of shape {v.shape} does not match image_shape {image_shape}")
    return v.reshape(image_shape)


@dataclasses.dataclass
class LinearClassifier:
    """A linear classifier ``f(x) = v^T x`` on ``H x W`` images (Theorem 2, Eq. (16)).

    Parameters
    ----------
    v : array_like, shape (d,) or (H, W)
    image_shape : tuple (H, W), optional
        Default: the shape of a 2-D ``v``, or square.

    Raises
    ------
    TypeError, ValueError
        As :func:`as_linear_weights` (``v`` is copied and made read-only).
    """

    v: np.ndarray
    image_shape: tuple = None

    def __post_init__(self):
        v_img = as_linear_weights(self.v, self.image_shape)  # the same validation as Theorem 2's
        self.v = frozen_copy(v_img.reshape(-1))  # never the caller's array
        self.image_shape = v_img.shape

    def __call__(self, X):
        X = as_float_array("X", X)
        return X.reshape(-1, self.v.size) @ self.v

    def as_network(self):
        """The same function as a :class:`OneHiddenLayerNet`: ``v^T relu(x) - v^T relu(-x) = v^T x``."""
        d = self.v.size
        W = np.vstack([np.eye(d), -np.eye(d)])
        return OneHiddenLayerNet(W, np.concatenate([self.v, -self.v]), image_shape=self.image_shape)
