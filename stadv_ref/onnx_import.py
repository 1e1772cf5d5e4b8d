"""Import a one-hidden-layer ReLU network from an ONNX file (``onnx`` is an optional extra)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .network import OneHiddenLayerNet

__all__ = ["import_onnx"]


def import_onnx(path, image_shape=None):
    """Read a one-hidden-layer ReLU network from an ONNX file.

    Accepts the graph ``[Flatten|Reshape] -> (Gemm | MatMul [+ Add]) -> Relu -> (Gemm | MatMul [+ Add])``
    with the weights as initializers (the form ``torch.onnx.export`` writes for
    ``nn.Sequential(nn.Flatten(), nn.Linear(d, m), nn.ReLU(), nn.Linear(m, K))``).

    Parameters
    ----------
    path : str or path-like
    image_shape : (int, int), optional
        ``(H, W)``; default square, or read from a 4-d graph input ``(N, 1, H, W)``.

    Returns
    -------
    OneHiddenLayerNet

    Raises
    ------
    ImportError
        The ``onnx`` package is missing (``pip install "stadv-ref[onnx]"``).
    ValueError
        The graph is not of that form.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise ImportError('ONNX import needs the onnx package: pip install "stadv-ref[onnx]"') from exc
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX file {str(p)!r} does not exist")
    try:
        model = onnx.load(str(p))
    except Exception as exc:
        raise ValueError(f"{str(p)!r} is not a readable ONNX model ({exc})") from exc
    g = model.graph
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    for node in g.node:  # Constant nodes also carry weights in some exporters
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    init[node.output[0]] = numpy_helper.to_array(a.t).astype(np.float64)
    layers, relu_seen, pending = [], 0, None
    skip = {"Flatten", "Reshape", "Identity", "Constant", "Cast"}
    for node in g.node:
        op = node.op_type
        if op in skip:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if op == "Gemm":
            B = init.get(node.input[1])
            if B is None:
                raise ValueError(f"Gemm node {node.name!r}: weight {node.input[1]!r} is not an initializer")
            if attrs.get("transA", 0):
                raise ValueError("Gemm with transA=1 is not supported")
            Wt = B.T if attrs.get("transB", 0) else B  # y = x A + C with A (in, out)
            alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
            bias = init.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            layers.append([alpha * Wt.T, None if bias is None else beta * np.ravel(bias)])
        elif op == "MatMul":
            B = init.get(node.input[1])
            if B is None:
                raise ValueError(f"MatMul node {node.name!r}: weight {node.input[1]!r} is not an initializer")
            layers.append([B.T, None])
        elif op == "Add":
            c = init.get(node.input[1], init.get(node.input[0]))
            if c is None or not layers or layers[-1][1] is not None:
                raise ValueError(f"unsupported Add node {node.name!r}")
            layers[-1][1] = np.ravel(c)
        elif op == "Relu":
            if len(layers) != 1:
                raise ValueError("Relu must follow exactly one linear layer")
            relu_seen += 1
        else:
            raise ValueError(f"unsupported ONNX operator {op!r}: expected (Flatten) Gemm/MatMul, Relu, Gemm/MatMul")
    if len(layers) != 2 or relu_seen != 1:
        raise ValueError(f"expected linear -> Relu -> linear, found {len(layers)} linear layer(s) and {relu_seen} Relu")
    (W, b), (V, c) = layers
    if V.shape[1] != W.shape[0]:
        raise ValueError(f"layer shapes do not chain: {W.shape} then {V.shape}")
    if image_shape is None:
        dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim] if g.input else []
        if len(dims) == 4 and dims[2] * dims[3] == W.shape[1]:
            image_shape = (dims[2], dims[3])
    v = V[0] if V.shape[0] == 1 else V
    return OneHiddenLayerNet(W, v, b, c, image_shape=image_shape)
