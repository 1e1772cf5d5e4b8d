"""Input validation shared by the public functions.

Every public entry point checks its arguments here so that bad input gives a
``ValueError``/``TypeError`` that names the offending argument instead of a
silent wrong answer.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "as_float_array",
    "as_images",
    "check_budget",
    "check_choice",
    "check_class_index",
    "check_class_pair",
    "check_labels",
    "check_input_range",
    "check_positive_int",
    "check_real",
    "check_seed",
    "images_4d",
    "check_flow",
    "check_image_shape",
    "frozen_copy",
]


def _xp_of(a):
    """Array module (numpy or cupy) of ``a`` without importing cupy."""
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        import cupy  # only reached when the caller already passes cupy arrays

        return cupy
    return np


def as_float_array(name, a, *, ndim=None, finite=True, dtype=None):
    """Return ``a`` as a floating array, checking rank and finiteness.

    Parameters
    ----------
    name : str
        Argument name used in error messages.
    a : array_like
        Input.
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    finite : bool
        Reject NaN and inf.
    dtype : numpy dtype, optional
        Target dtype. By default float32 stays float32 and everything else
        becomes float64.
    """
    xp = _xp_of(a)
    if xp is np:
        try:
            a = np.asarray(a)
        except Exception as exc:  # pragma: no cover - exotic objects
            raise TypeError(f"{name} must be array-like, got {type(a).__name__}") from exc
    if a.dtype == object or not (
        np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.bool_)
    ):
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {a.dtype}")
    if dtype is None:
        dtype = np.float32 if a.dtype == np.float32 else np.float64
    a = a.astype(dtype, copy=False)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                f"got shape {tuple(a.shape)}"
            )
    if finite and a.size and not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def as_images(name, x, *, ndim=(2, 3), dtype=None):
    """:func:`as_float_array` for a batch of grey-scale images: a single-channel ``(N, 1, H, W)`` batch too.

    The one rule for the channel axis: wherever an ``(N, H, W)`` batch is accepted, so is the same
    batch with a channel axis of length 1, returned as ``(N, H, W)`` (a view). The other forms
    (``ndim``) are returned as :func:`as_float_array` returns them, for the caller to check.

    Raises
    ------
    TypeError
        ``x`` is not a real numeric array.
    ValueError
        ``x`` has another number of dimensions, more than one channel, or NaN/inf.
    """
    allowed = ((ndim,) if isinstance(ndim, int) else tuple(ndim)) + (4,)
    x = as_float_array(name, x, ndim=allowed, dtype=dtype)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"{name} must be grey-scale images: (N, 1, H, W) has one channel, got shape "
                             f"{tuple(x.shape)}")
        x = x[:, 0]
    return x


def check_real(name, x):
    """``x`` as a float: a real number (NumPy scalars yes; bools, strings and arrays no); overflow is inf."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    try:
        return float(x)
    except OverflowError:  # an int beyond the float range
        return float("inf") if x > 0 else float("-inf")


def check_budget(name, eps, *, allow_zero=True):
    """Check a scalar budget (``eps``, ``tau``...): finite and non-negative."""
    eps = check_real(name, eps)
    if not np.isfinite(eps):
        raise ValueError(f"{name} must be finite, got {eps}")
    if eps < 0 or (eps == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {eps}")
    return eps


def check_input_range(name, input_range):
    """Check an input box ``(lo, hi)``: two finite reals with ``lo < hi``; return ``(lo, hi)`` as floats."""
    if isinstance(input_range, (str, bytes)) or not hasattr(input_range, "__len__") or len(input_range) != 2:
        raise ValueError(f"{name} must be a pair (lo, hi), got {input_range!r}")
    lo, hi = (check_real(name, t) for t in input_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with lo < hi, got {input_range!r}")
    return lo, hi


def check_positive_int(name, n, *, minimum=1):
    """Check an integer argument ``>= minimum``."""
    if not _is_integer(n):
        raise TypeError(f"{name} must be an integer, got {type(n).__name__}")
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return int(n)


def _is_integer(n):
    """Python/NumPy integers and 0-d integer arrays; never bools or floats (not even ``2.0``)."""
    if isinstance(n, np.ndarray) and n.ndim == 0:
        n = n[()]
    return isinstance(n, numbers.Integral) and not isinstance(n, (bool, np.bool_))


def check_class_index(name, value, n_classes):
    """Check a class index: an integer (NumPy integers yes; floats and bools no) in ``[0, n_classes)``.

    A float such as ``1.9`` is refused rather than truncated to ``1``.

    Raises
    ------
    TypeError
        ``value`` is not an integer (floats, bools, strings, arrays with more than one entry).
    ValueError
        ``value`` is outside ``[0, n_classes)``.
    """
    if not _is_integer(value):
        raise TypeError(f"{name} must be an integer class index, got {type(value).__name__} {value!r}")
    value = int(value)
    if not 0 <= value < n_classes:
        raise ValueError(f"{name}={value} is out of range [0, {n_classes})")
    return value


def check_class_pair(name, classes, n_classes):
    """Check a class pair ``(i, y)``: two different class indices, each as in :func:`check_class_index`.

    Raises
    ------
    TypeError
        ``classes`` is not a pair (a string, a scalar, a mapping, a sequence of another length)
        or holds a non-integer (floats and bools are refused, never truncated).
    ValueError
        An index outside ``[0, n_classes)``, or ``i == y``.
    """
    if isinstance(classes, (str, bytes, dict)) or not hasattr(classes, "__len__") or len(classes) != 2:
        raise TypeError(f"{name} must be a pair (i, y) of class indices, got {classes!r}")
    i, y = (check_class_index(name, k, n_classes) for k in classes)
    if i == y:
        raise ValueError(f"{name} must be two different classes, got i = y = {i}")
    return i, y


def check_labels(name, y, n, n_classes):
    """Check integer class labels of shape ``(n,)`` in ``[0, n_classes)`` (floats and bools are refused).

    Raises
    ------
    TypeError
        ``y`` is not an array of integers (float, bool, string or object entries).
    ValueError
        ``y`` does not have shape ``(n,)`` or holds a label outside ``[0, n_classes)``.
    """
    try:
        arr = np.asarray(y)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"{name} must be integer class labels, got {type(y).__name__}") from exc
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integer class labels, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one label per input), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{name} must be in [0, {n_classes}), got labels from {arr.min()} to {arr.max()}")
    return arr.astype(np.int64, copy=False)


def check_seed(name, seed):
    """Check a random seed: an integer ``>= 0`` (what ``numpy.random.default_rng`` accepts)."""
    if not _is_integer(seed):
        raise TypeError(f"{name} must be a non-negative integer, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed}")
    return int(seed)


def check_choice(name, value, choices):
    """Check that ``value`` is one of ``choices`` (a string or number; arrays, lists and bools never are)."""
    scalar = isinstance(value, (str, numbers.Number)) and not isinstance(value, (bool, np.bool_))
    if not scalar or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(map(str, choices))}, got {value!r}")
    return value


def images_4d(name, x):
    """Validate images ``(N, H, W)`` or ``(N, C, H, W)``; return 4-D view and a flag.

    Returns
    -------
    x4 : ndarray, shape (N, C, H, W)
    squeeze : bool
        True when the input had no channel axis.
    """
    x = as_float_array(name, x, ndim=(3, 4))
    if x.shape[-1] < 1 or x.shape[-2] < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")
    if x.ndim == 3:
        return x[:, None], True
    return x, False


def check_flow(name, flow, n, h, w, dtype=None, images="x"):
    """Validate a flow of shape ``(N, 2, H, W)`` matching the images ``images`` of shape ``(N, ., H, W)``."""
    flow = as_float_array(name, flow, ndim=4, dtype=dtype)
    if flow.shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (N, 2, H, W) with flow[:, 0] = du, flow[:, 1] = dv; "
            f"got shape {tuple(flow.shape)}"
        )
    if flow.shape[2:] != (h, w):
        raise ValueError(
            f"{name} spatial shape {tuple(flow.shape[2:])} does not match {images}'s {(h, w)}"
        )
    if flow.shape[0] != n:
        raise ValueError(f"{name} batch size {flow.shape[0]} does not match {images}'s {n}")
    return flow


def check_image_shape(name, image_shape):
    """``(H, W)``: a pair of positive integers (floats are refused, not truncated); return it as a tuple."""
    if isinstance(image_shape, (str, bytes)) or not hasattr(image_shape, "__len__") or len(image_shape) != 2:
        raise TypeError(f"{name} must be a pair of integers (H, W), got {image_shape!r}")
    return tuple(check_positive_int(name, n) for n in image_shape)


def frozen_copy(a):
    """A private, read-only copy of the array ``a`` (NumPy arrays; other array types are only copied)."""
    a = a.copy()
    if isinstance(a, np.ndarray):
        a.setflags(write=False)
    return a
