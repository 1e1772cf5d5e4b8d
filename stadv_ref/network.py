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
import zipfile

import numpy as np

from ._validate import as_float_array, check_class_index, check_positive_int
from .backend import get_backend
from .reference.network import relu_derivative

__all__ = ["OneHiddenLayerNet", "LinearClassifier", "as_linear_weights", "relu_derivative"]

_FORMAT_VERSION = 1
_MODEL_ARRAYS = ("format_version", "W", "v", "b", "c", "image_shape")


def _frozen_copy(a):
    """A private, read-only copy of ``a`` (NumPy arrays; other array types are only copied)."""
    a = a.copy()
    if isinstance(a, np.ndarray):
        a.setflags(write=False)
    return a


def _image_shape(image_shape):
    """``(H, W)``: a pair of positive integers (floats are refused, not truncated)."""
    if isinstance(image_shape, (str, bytes)) or not hasattr(image_shape, "__len__") or len(image_shape) != 2:
        raise TypeError(f"image_shape must be a pair of integers (H, W), got {image_shape!r}")
    return tuple(check_positive_int("image_shape", n) for n in image_shape)


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
        image_shape = _image_shape(image_shape)
        if image_shape[0] * image_shape[1] != d:
            raise ValueError(f"image_shape {image_shape} does not multiply to d = {d}")
        # private read-only copies: mutating the caller's arrays afterwards cannot bypass the checks above
        self.W, self.V, self.b, self.c = (_frozen_copy(a) for a in (W, V, b, c))
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
        """Inputs ``(N, d)``, ``(N, H, W)``, ``(d,)`` or ``(H, W)`` as ``(N, d)``."""
        X = as_float_array(name, X, ndim=(1, 2, 3))
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

    def hidden(self, X, *, backend=None):
        """Pre-activations ``W x + b``, shape (N, m)."""
        be = get_backend(backend)
        X = self.flatten(X)
        W, b, V, c = self._arrays(be, X.dtype)
        return be.net_forward(W, b, V, c, be.asarray(X))[0]

    def forward(self, X, *, backend=None):
        """Network output: shape (N,) for binary, (N, K) for multi-class."""
        be = get_backend(backend)
        X = self.flatten(X)
        W, b, V, c = self._arrays(be, X.dtype)
        out = be.net_forward(W, b, V, c, be.asarray(X))[1]
        return out[:, 0] if self.binary else out

    __call__ = forward

    def predict(self, X, *, backend=None):
        """Predicted labels: ``1`` where ``f > 0`` (binary), else ``argmax_k f_k``."""
        out = self.forward(X, backend=backend)
        return (out > 0).astype(np.int64) if self.binary else out.argmax(axis=1)

    def input_gradient(self, X, weights=None, *, backend=None):
        """Gradient w.r.t. the input of ``sum_k weights[n, k] f_k(x_n)``.

        Parameters
        ----------
        X : array_like, shape (N, d) or (N, H, W)
        weights : array_like, shape (N, K) or (K,), optional
            Class weights; required for multi-class networks (e.g. ``e_i - e_y``
            for the margin ``f_i - f_y``). Binary networks use 1.

        Returns
        -------
        ndarray, shape (N, d)

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
        return be.net_input_grad(W, b, V, be.asarray(X), be.asarray(np.ascontiguousarray(weights)))

    def pair(self, i, y):
        """Binary network ``f_i - f_y`` for the class pair ``(i, y)`` (appendix 6.6/6.7)."""
        if self.binary:
            raise ValueError("pair() needs a multi-class network")
        K = self.n_classes
        i, y = check_class_index("i", i, K), check_class_index("y", y, K)
        if i == y:
            raise ValueError(f"classes i and y must differ, got i = y = {i}")
        with np.errstate(over="ignore"):  # an overflow is refused just below
            V, c = _frozen_copy((self.V[i] - self.V[y])[None]), _frozen_copy(self.c[i : i + 1] - self.c[y : y + 1])
        if not (np.isfinite(V).all() and np.isfinite(c).all()):
            raise ValueError(f"v[{i}] - v[{y}] or c[{i}] - c[{y}] overflows (output weights too large)")
        return OneHiddenLayerNet._from_checked(self.W, V, self.b, c, self.image_shape, binary=True)

    # -- persistence -------------------------------------------------------------
    def save(self, path, **metadata):
        """Save to ``.npz`` (no pickle). Extra ``metadata`` values are stored as arrays.

        Parameters
        ----------
        path : str or path-like
            Written as given (no ``.npz`` suffix is appended).
        **metadata
            Numbers, strings or arrays (e.g. ``test_accuracy=0.98``).
        """
        extra = {}
        for k, val in metadata.items():
            arr = np.asarray(val)
            if arr.dtype == object:
                raise TypeError(f"metadata {k!r} must be numbers, strings or numeric arrays")
            extra["meta_" + k] = arr
        # write to exactly ``path`` (np.savez would append ".npz" to a bare name,
        # and load(path) would then not find the file)
        with open(os.fspath(path), "wb") as fh:
            np.savez(
                fh,
                format_version=np.int64(_FORMAT_VERSION),
                W=self.W,
                v=self.v,
                b=self.b,
                c=self.c,
                image_shape=np.asarray(self.image_shape, dtype=np.int64),
                **extra,
            )

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
        ValueError
            Missing file, not an ``.npz``, pickled objects, missing or unknown arrays,
            a ``format_version`` other than 1, non-finite weights or wrong shapes.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"model file {path!r} does not exist")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"model file {path!r} is not a valid .npz archive")
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except ValueError as exc:
            raise ValueError(f"model file {path!r} holds pickled objects; refusing to load ({exc})") from exc
        except Exception as exc:
            raise ValueError(f"model file {path!r} is not a valid .npz archive ({exc})") from exc
        missing = [k for k in ("W", "v") if k not in data]
        if missing:
            raise ValueError(f"model file {path!r} lacks the arrays {missing}")
        extra = sorted(k for k in data if k not in _MODEL_ARRAYS and not k.startswith("meta_"))
        if extra:
            raise ValueError(
                f"model file {path!r} holds arrays this one-hidden-layer format does not have: {extra} "
                f"(expected {list(_MODEL_ARRAYS)} and meta_*); refusing to ignore them"
            )
        if "format_version" in data:
            version = data["format_version"]
            if version.shape != () or not np.issubdtype(version.dtype, np.integer) or int(version) != _FORMAT_VERSION:
                raise ValueError(
                    f"model file {path!r} has format_version {version!r}; this library reads version "
                    f"{_FORMAT_VERSION} (a newer stadv-ref wrote it?)"
                )
        shape = data.get("image_shape")
        shape = None if shape is None else tuple(int(s) for s in np.ravel(shape))
        try:
            net = cls(data["W"], data["v"], data.get("b"), data.get("c"), shape)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"model file {path!r} is malformed: {exc}") from exc
        if with_metadata:
            meta = {k[5:]: (v.item() if v.ndim == 0 else v) for k, v in data.items() if k.startswith("meta_")}
            return net, meta
        return net


def as_linear_weights(v, image_shape=None):
    """Validate linear weights ``v`` and return them as an ``(H, W)`` image.

    Parameters
    ----------
    v : array_like, shape (d,) or (H, W)
    image_shape : tuple (H, W), optional
        Required for a flat ``v`` whose length is not a perfect square.
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
    image_shape = _image_shape(image_shape)
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
    """

    v: np.ndarray
    image_shape: tuple = None

    def __post_init__(self):
        v_img = as_linear_weights(self.v, self.image_shape)  # the same validation as Theorem 2's
        self.v = _frozen_copy(v_img.reshape(-1))  # never the caller's array
        self.image_shape = v_img.shape

    def __call__(self, X):
        X = as_float_array("X", X)
        return X.reshape(-1, self.v.size) @ self.v

    def as_network(self):
        """The same function as a :class:`OneHiddenLayerNet`: ``v^T relu(x) - v^T relu(-x) = v^T x``."""
        d = self.v.size
        W = np.vstack([np.eye(d), -np.eye(d)])
        return OneHiddenLayerNet(W, np.concatenate([self.v, -self.v]), image_shape=self.image_shape)
