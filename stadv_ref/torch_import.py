"""Import a one-hidden-layer ReLU network from a PyTorch module (``torch`` is an optional dependency).

:func:`from_torch` reads an ``nn.Sequential`` of the form ``[normalisation] -> Flatten -> Linear ->
ReLU -> Linear``, the paper's networks ``f(x) = V relu(W x + b) + c`` (Sections 3-4), and folds an
input normalisation ``(x - mean) / std`` exactly into the first layer::

    W (x - mean) / std + b = W' x + b',   W' = W / std (per input pixel),   b' = b - W (mean / std).

Anything else is refused with a ``ValueError`` naming the layer, so a module that computes another
function can never import silently as this one. ``torch`` is imported only inside :func:`from_torch`.
"""
from __future__ import annotations

import numpy as np

from ._install import torch_hint
from ._validate import as_float_array, check_image_shape
from .network import OneHiddenLayerNet

__all__ = ["from_torch", "SUPPORTED"]

SUPPORTED = (
    "from_torch supports only nn.Sequential(nn.Flatten(), nn.Linear(d, m), nn.ReLU(), nn.Linear(m, K)) "
    "(nested nn.Sequential, nn.Identity and nn.Dropout, the identity at inference, may sit anywhere; "
    "the Flatten may be left out for flat inputs), optionally preceded by a normalisation module "
    "computing (x - mean) / std with attributes mean and std, or with mean=/std= given; "
    "convolutions, other activations, normalisation layers and deeper networks are not supported"
)


_KINDS = {  # torch.nn's module of a refused layer: what it is
    "torch.nn.modules.activation": "an activation other than ReLU",
    "torch.nn.modules.conv": "a convolution",
    "torch.nn.modules.pooling": "a pooling layer",
    "torch.nn.modules.batchnorm": "a normalisation layer",
    "torch.nn.modules.normalization": "a normalisation layer",
}


def _name(path, layer):
    return f"layer {path!r} ({type(layer).__name__})"


def _refuse(path, layer, why):
    raise ValueError(f"module: {_name(path, layer)}: {why}. {SUPPORTED}")


def _exactly(layer, cls):
    """``layer`` is a ``cls`` whose ``forward`` is ``cls``'s own (a subclass may compute something else)."""
    return isinstance(layer, cls) and type(layer).forward is cls.forward


def _chain(module, nn, prefix=""):
    """The leaf layers of (nested) ``nn.Sequential`` in call order, with their dotted paths."""
    out = []
    for name, child in module.named_children():
        if _exactly(child, nn.Sequential):
            out.extend(_chain(child, nn, f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", child))
    return out


def _array(value, torch):
    """A tensor, a number or a sequence as a float64 NumPy array (tensors detached and moved to the CPU)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return value


def _linear(path, layer, torch):
    if not layer.weight.is_floating_point():
        _refuse(path, layer, f"weights of dtype {layer.weight.dtype} (floating point only)")
    W = _array(layer.weight, torch)
    b = np.zeros(W.shape[0]) if layer.bias is None else _array(layer.bias, torch)
    return W, b


def _walk(module, nn, torch):
    """Return ``(norm, (W, b), (V, c))``: ``norm`` is ``(path, layer, flattened_after)`` or ``None``."""
    linears, relu, norm, flat, flat_before_norm = [], False, None, False, False
    for path, layer in _chain(module, nn):
        stage = ("before the first linear layer", "after the first linear layer",
                 "after the second linear layer")[len(linears)]
        if _exactly(layer, nn.Identity) or _exactly(layer, nn.Dropout):
            continue
        if _exactly(layer, nn.Flatten):
            if linears:
                _refuse(path, layer, "Flatten is only supported before the first linear layer")
            if (layer.start_dim, layer.end_dim) != (1, -1):
                _refuse(path, layer, f"Flatten must keep the batch axis (start_dim=1, end_dim=-1), got "
                                     f"start_dim={layer.start_dim}, end_dim={layer.end_dim}")
            flat = True
        elif _exactly(layer, nn.Linear):
            if len(linears) == 2:
                _refuse(path, layer, "a third linear layer: deeper networks are not supported")
            if len(linears) == 1 and not relu:
                _refuse(path, layer, "the second linear layer must follow the ReLU")
            linears.append((path, layer, _linear(path, layer, torch)))
        elif _exactly(layer, nn.ReLU):
            if len(linears) == 2:
                _refuse(path, layer, "a ReLU after the second linear layer: deeper networks are not supported")
            if len(linears) != 1 or relu:
                _refuse(path, layer, f"ReLU {stage} is not supported (exactly one, between the two linear layers)")
            relu = True
        elif not linears and norm is None and hasattr(layer, "mean") and hasattr(layer, "std"):
            norm, flat_before_norm = (path, layer), flat
        else:
            _refuse(path, layer, f"{_KINDS.get(type(layer).__module__, 'unsupported layer')} {stage}")
    if len(linears) != 2 or not relu:
        raise ValueError(f"module: {type(module).__name__} has {len(linears)} linear layer(s) and {int(relu)} "
                         f"ReLU. {SUPPORTED}")
    (_, _, first), (path, layer, second) = linears
    if second[0].shape[1] != first[0].shape[0]:
        _refuse(path, layer, f"{second[0].shape[1]} inputs do not match the first layer's {first[0].shape[0]} "
                             "outputs")
    # a Flatten after the normalisation: the normalisation reads images (N, 1, H, W), else flat (N, d)
    return (None if norm is None else (*norm, flat and not flat_before_norm)), first, second


def _per_pixel(name, value, image_shape, positive=False):
    """``mean`` or ``std`` as ``d`` per-pixel values: a scalar, one channel, or one value per pixel."""
    H, W = image_shape
    a = as_float_array(name, value, ndim=(0, 1, 2, 3), dtype=np.float64)
    if a.size == 1:
        a = np.full(H * W, a.reshape(()))
    elif a.shape in ((H * W,), (H, W), (1, H, W)):
        a = a.reshape(H * W)
    else:
        raise ValueError(f"{name} must be a scalar, one value for the single channel (shape (1,) or (1, 1, 1)) "
                         f"or one per pixel (shape ({H}, {W}), (1, {H}, {W}) or ({H * W},)), got shape {a.shape}")
    if positive and not (a > 0).all():
        raise ValueError(f"{name} must be > 0, got a minimum of {a.min():g}")
    return a


def _check_norm_module(norm, image_shape, mean, std, torch):
    """Check on random inputs that the normalisation module computes ``(x - mean) / std`` (else refuse)."""
    path, layer, flattened_after = norm
    H, W = image_shape
    shape = (3, 1, H, W) if flattened_after else (3, H * W)
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 0.5
    try:
        with torch.no_grad():
            y = layer(x)
    except Exception as exc:
        _refuse(path, layer, f"has mean and std, but calling it on an input of shape {shape} failed ({exc})")
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != shape:
        _refuse(path, layer, f"has mean and std, but maps an input of shape {shape} to "
                             f"{tuple(getattr(y, 'shape', ()))}")
    expected = (x.numpy().reshape(3, -1) - mean) / std
    got = _array(y, torch).reshape(3, -1)
    if not np.allclose(got, expected, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(expected).max()))):
        _refuse(path, layer, "has mean and std, but does not compute (x - mean) / std")


def from_torch(module, *, image_shape=None, mean=None, std=None):
    """Read a one-hidden-layer ReLU network from a PyTorch ``nn.Sequential``.

    The module must be ``nn.Sequential(nn.Flatten(), nn.Linear(d, m), nn.ReLU(), nn.Linear(m, K))``
    (nested ``nn.Sequential``, ``nn.Identity`` and ``nn.Dropout`` allowed anywhere; the ``Flatten``
    may be left out when the net reads flat inputs), optionally preceded by a normalisation module
    ``(x - mean) / std``: any module with attributes ``mean`` and ``std`` (a custom ``Normalize``,
    torchvision's ``transforms.Normalize``), checked on random inputs to compute exactly that. The
    normalisation, from the module or from ``mean``/``std``, is folded into the first layer:
    ``W' = W / std`` column by column (per input pixel) and ``b' = b - W (mean / std)``, so the
    returned network takes the raw images. Dropout is read at inference (the identity).

    Parameters
    ----------
    module : torch.nn.Sequential
    image_shape : (int, int), optional
        ``(H, W)`` with ``H * W = d``, the first layer's input size; default square.
    mean, std : float or array_like, optional
        An input normalisation ``(x - mean) / std`` applied before ``module`` (for a module
        without a normalisation layer of its own): a scalar, one value for the single channel
        (shape ``(1,)``), or one per pixel (shape ``(H, W)``, ``(1, H, W)`` or ``(d,)``). ``std > 0``.
        Defaults ``0`` and ``1``.

    Returns
    -------
    OneHiddenLayerNet
        Binary when the last layer has one output, else with ``K`` classes; float64 weights.

    Raises
    ------
    ImportError
        PyTorch is missing (``pip install torch==2.13.0``, the version this is tested with).
    TypeError
        ``module`` is not a ``torch.nn.Module``; ``mean``/``std`` are not real numeric;
        ``image_shape`` is not a pair of integers.
    ValueError
        The module is not of the form above (a custom ``forward``, a convolution, another
        activation, a normalisation layer such as ``BatchNorm``, a deeper network: the message
        names the layer and says what is supported); a normalisation module that does not compute
        ``(x - mean) / std``; ``mean``/``std`` given for a module that normalises already;
        ``mean``/``std`` of a wrong shape, not finite, ``std <= 0``; ``image_shape`` not fitting ``d``.

    Examples
    --------
    >>> from torch import nn  # doctest: +SKIP
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 10))  # doctest: +SKIP
    >>> net = stadv_ref.from_torch(model, mean=0.1307, std=0.3081)  # doctest: +SKIP
    """
    try:
        import torch
        from torch import nn
    except ImportError as exc:
        raise ImportError(f"from_torch needs PyTorch: {torch_hint()}") from exc
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module (an nn.Sequential), got {type(module).__name__}")
    if not _exactly(module, nn.Sequential):
        raise ValueError(f"module: {type(module).__name__} is not an nn.Sequential (the order of a custom forward "
                         f"cannot be read: put the same layers in an nn.Sequential and load_state_dict). {SUPPORTED}")
    norm, (W, b), (V, c) = _walk(module, nn, torch)
    d = W.shape[1]
    if image_shape is None:
        s = int(round(np.sqrt(d)))
        if s * s != d:
            raise ValueError(f"image_shape: the first layer's d = {d} inputs are not a square; pass image_shape=(H, W)")
        image_shape = (s, s)
    image_shape = check_image_shape("image_shape", image_shape)
    if image_shape[0] * image_shape[1] != d:
        raise ValueError(f"image_shape {image_shape} does not multiply to the first layer's d = {d} inputs")
    if norm is not None:
        if mean is not None or std is not None:
            given = "mean" if mean is not None else "std"
            raise ValueError(f"{given}: the module normalises its input already ({_name(*norm[:2])}); "
                             "pass mean/std only for a module without a normalisation layer")
        mean, std = (_array(getattr(norm[1], k), torch) for k in ("mean", "std"))
    mean = _per_pixel("mean", 0.0 if mean is None else mean, image_shape)
    std = _per_pixel("std", 1.0 if std is None else std, image_shape, positive=True)
    if norm is not None:
        _check_norm_module(norm, image_shape, mean, std, torch)
    try:
        W_folded, b_folded = W / std[None, :], b - W @ (mean / std)
        v, c = (V[0], c[0]) if V.shape[0] == 1 else (V, c)
        return OneHiddenLayerNet(W_folded, v, b_folded, c, image_shape=image_shape)
    except ValueError as exc:
        raise ValueError(f"module: its weights do not make a valid network ({exc})") from exc
