"""Import a one-hidden-layer ReLU network from an ONNX file (``onnx`` is an optional extra).

The importer follows the graph by tensor names from its one input to its one output
and accepts exactly the chain ``Flatten -> Linear -> ReLU -> Linear`` of the paper's
networks ``f(x) = V relu(W x + b) + c`` (Sections 3-4); anything else is refused, so a
graph that computes another function can never import silently as this one.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from ._install import install_hint
from .network import OneHiddenLayerNet

__all__ = ["import_onnx", "SUPPORTED"]

SUPPORTED = (
    "import_onnx supports only Flatten → Linear → ReLU → Linear: input → [Flatten | Reshape to (N, d) | "
    "Identity | Cast to float] → Gemm or MatMul [+ Add] → Relu → Gemm or MatMul [+ Add] → output, "
    "each node reading the previous node's output (Identity and Cast to float may also sit between the layers)"
)

# TensorProto element types that keep the values (FLOAT, FLOAT16, DOUBLE, BFLOAT16)
_FLOAT_TYPES = {1: "float", 10: "float16", 11: "double", 16: "bfloat16"}


def _node_name(node):
    return f"{node.op_type} node {node.name or '(unnamed)'!r}"


def _refuse(node, why):
    raise ValueError(f"{_node_name(node)}: {why}. {SUPPORTED}")


class _Graph:
    """Producer/consumer index of an ONNX graph and the walk along its single path."""

    def __init__(self, graph, onnx, numpy_helper):
        self.g, self.onnx = graph, onnx
        self.const = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.consumers = defaultdict(list)
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant" and len(node.input) == 0:
                value = [a for a in node.attribute if a.name == "value"]
                if len(value) != 1:
                    _refuse(node, "only Constant nodes with a tensor 'value' are supported")
                self.const[node.output[0]] = numpy_helper.to_array(value[0].t)
                continue
            self.nodes.append(node)
            for name in node.input:
                if name and name not in self.const:
                    self.consumers[name].append(node)
        self.visited = []
        inputs = [i for i in graph.input if i.name not in self.const]
        if len(inputs) != 1:
            raise ValueError(f"the graph must have exactly one input that is not a weight, found "
                             f"{[i.name for i in inputs]}. {SUPPORTED}")
        if len(graph.output) != 1:
            raise ValueError(f"the graph must have exactly one output, found {[o.name for o in graph.output]}. "
                             f"{SUPPORTED}")
        self.input, self.output = inputs[0], graph.output[0].name

    def attrs(self, node):
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def next(self, tensor):
        """The node reading ``tensor`` (``None`` at the graph output); refuse branches and dead ends."""
        users = self.consumers.get(tensor, [])
        if len(users) > 1:
            raise ValueError(
                f"tensor {tensor!r} feeds {len(users)} nodes ({', '.join(map(_node_name, users))}): "
                f"branches are not supported. {SUPPORTED}"
            )
        if tensor == self.output:
            if users:
                raise ValueError(f"the graph output {tensor!r} also feeds {_node_name(users[0])}. {SUPPORTED}")
            return None
        if not users:
            raise ValueError(f"tensor {tensor!r} feeds no node and is not the graph output. {SUPPORTED}")
        return users[0]

    def take(self, node, tensor, data_slot=0):
        """Check that ``node`` reads ``tensor`` at ``data_slot`` and everything else from weights."""
        for k, name in enumerate(node.input):
            if k == data_slot:
                if name != tensor:
                    _refuse(node, f"its input {k} must be the path tensor {tensor!r}, got {name!r}")
            elif name and name not in self.const:
                _refuse(node, f"input {name!r} is neither the path tensor {tensor!r} nor a weight")
        if len(node.output) != 1:
            _refuse(node, f"expected one output, got {len(node.output)}")
        self.visited.append(node)
        return node.output[0]

    def weight(self, node, slot):
        if len(node.input) <= slot or not node.input[slot]:
            return None
        return np.asarray(self.const[node.input[slot]], dtype=np.float64)


def _transparent(G, node, tensor):
    """Identity or Cast to a float type: the same values, next tensor; else ``None``."""
    if node.op_type == "Identity":
        return G.take(node, tensor)
    if node.op_type == "Cast":
        to = G.attrs(node).get("to")
        if to not in _FLOAT_TYPES:
            _refuse(node, f"Cast to element type {to} is not a cast to float (it changes the values)")
        return G.take(node, tensor)
    return None


def _bias(node, c, n_out):
    if c is None:
        return np.zeros(n_out)
    if c.size not in (1, n_out):
        _refuse(node, f"bias of shape {c.shape} does not broadcast to {n_out} outputs")
    return np.broadcast_to(c.reshape(-1), (n_out,)).copy()


def _linear(G, node, tensor):
    """Parse ``Gemm`` or ``MatMul [+ Add]`` starting at ``node``; return ``(weights (out, in), bias, tensor)``."""
    if node.op_type == "Gemm":
        a = G.attrs(node)
        if a.get("transA", 0):
            _refuse(node, "Gemm with transA=1 is not supported")
        out = G.take(node, tensor)
        B = G.weight(node, 1)
        if B is None or B.ndim != 2:
            _refuse(node, "the weight must be a 2-D initializer")
        Wt = (B.T if a.get("transB", 0) else B).T  # y = alpha x B' + beta C with B' of shape (in, out)
        W = float(a.get("alpha", 1.0)) * Wt
        C = G.weight(node, 2)
        b = _bias(node, None if C is None else float(a.get("beta", 1.0)) * C, W.shape[0])
        return W, b, out
    if node.op_type == "MatMul":
        out = G.take(node, tensor)
        B = G.weight(node, 1)
        if B is None or B.ndim != 2:
            _refuse(node, "the weight must be a 2-D initializer")
        W = B.T
        nxt = G.next(out)
        if nxt is not None and nxt.op_type == "Add":
            slot = 0 if nxt.input[0] == out else 1
            out = G.take(nxt, out, data_slot=slot)
            return W, _bias(nxt, G.weight(nxt, 1 - slot), W.shape[0]), out
        return W, np.zeros(W.shape[0]), out
    return None


def _walk(G):
    """Follow the single path input -> output; return ``(W, b, V, c, reshape_targets)``."""
    tensor, layers, relu, shapes = G.input.name, [], False, []
    while True:
        node = G.next(tensor)
        if node is None:
            break
        stage = ("before the first linear layer", "after the first linear layer",
                 "after the second linear layer")[len(layers)]
        nxt = _transparent(G, node, tensor)
        if nxt is not None:
            tensor = nxt
        elif node.op_type in ("Flatten", "Reshape"):
            if layers:
                _refuse(node, f"{node.op_type} is only supported before the first linear layer")
            if node.op_type == "Flatten" and G.attrs(node).get("axis", 1) != 1:
                _refuse(node, f"Flatten must keep the batch axis (axis=1), got axis={G.attrs(node)['axis']}")
            if node.op_type == "Reshape":
                target = G.weight(node, 1)
                if target is None or target.shape != (2,):
                    _refuse(node, "Reshape must reshape to (N, d) with a constant 2-entry shape")
                shapes.append((node, [int(t) for t in target]))
            tensor = G.take(node, tensor)
        elif node.op_type in ("Gemm", "MatMul"):
            if len(layers) == 2:
                _refuse(node, "a third linear layer: deeper networks are not supported")
            if len(layers) == 1 and not relu:
                _refuse(node, "the second linear layer must read the Relu output")
            W, b, tensor = _linear(G, node, tensor)
            layers.append((W, b))
        elif node.op_type == "Relu":
            if len(layers) == 2:
                _refuse(node, "a Relu after the second linear layer: deeper networks are not supported")
            if len(layers) != 1 or relu:
                _refuse(node, f"Relu {stage} is not supported (exactly one, between the two linear layers)")
            relu = True
            tensor = G.take(node, tensor)
        else:
            _refuse(node, f"unsupported operator {node.op_type!r} {stage}")
    if tensor != G.output or len(layers) != 2 or not relu:
        raise ValueError(f"the path from input {G.input.name!r} to output {G.output!r} has {len(layers)} linear "
                         f"layer(s) and {int(relu)} Relu. {SUPPORTED}")
    off_path = [n for n in G.nodes if n not in G.visited]
    if off_path:
        raise ValueError(f"{', '.join(map(_node_name, off_path))} not on the path from the graph input to its "
                         f"output (unused or branching nodes are not supported). {SUPPORTED}")
    (W, b), (V, c) = layers
    return W, b, V, c, shapes


def import_onnx(path, image_shape=None):
    """Read a one-hidden-layer ReLU network from an ONNX file.

    The graph is followed by tensor names from its input to its output and must be
    exactly ``input → [Flatten | Reshape to (N, d) | Identity | Cast to float] → Linear →
    Relu → Linear → output``, with ``Linear`` a ``Gemm`` (``transB`` allowed) or a
    ``MatMul`` optionally followed by an ``Add`` of the bias, the weights as
    initializers or ``Constant`` nodes, and each node reading the previous node's
    output (``Identity`` and ``Cast`` to a float type may also sit between the layers).
    This is the form ``torch.onnx.export`` writes for
    ``nn.Sequential(nn.Flatten(), nn.Linear(d, m), nn.ReLU(), nn.Linear(m, K))``.

    Parameters
    ----------
    path : str or path-like
    image_shape : (int, int), optional
        ``(H, W)``; default read from a graph input ``(N, 1, H, W)`` or ``(N, H, W)``, else square.

    Returns
    -------
    OneHiddenLayerNet
        Binary when the last layer has one output, else with ``K`` classes.

    Raises
    ------
    ImportError
        The ``onnx`` package is missing (the message names the install command,
        :func:`stadv_ref._install.install_hint`: ``pip install -e ".[onnx]"`` in a checkout).
    TypeError
        ``path`` is not a string or path-like.
    ValueError
        ``path`` does not exist or is not an ONNX model; the graph is not of the form
        above (a branch, an unused or misplaced node, a second layer reading the
        pre-activation, a ``Cast`` to a non-float type, a deeper network, an
        unsupported operator: the message names the node); the layer shapes do not
        chain; the weights are not finite; ``image_shape`` does not fit.

    Examples
    --------
    >>> net = stadv_ref.import_onnx("model.onnx")  # doctest: +SKIP
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}")
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise ImportError(f"ONNX import needs the onnx package: {install_hint('onnx')}") from exc
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"path: ONNX file {str(p)!r} does not exist")
    try:
        model = onnx.load(str(p))
    except Exception as exc:
        raise ValueError(f"path: {str(p)!r} is not a readable ONNX model ({exc})") from exc
    G = _Graph(model.graph, onnx, numpy_helper)
    W, b, V, c, shapes = _walk(G)
    if V.shape[1] != W.shape[0]:
        raise ValueError(f"layer shapes do not chain: first layer {W.shape} (out, in), second {V.shape}")
    d = W.shape[1]
    for node, target in shapes:
        if target[1] not in (d, -1) or (target[1] == -1 and target[0] not in (0, 1)):
            _refuse(node, f"Reshape target {target} is not (N, {d})")
    if image_shape is None:
        dims = [t.dim_value for t in G.input.type.tensor_type.shape.dim]
        hw = dims[-2:] if len(dims) == 3 or (len(dims) == 4 and dims[1] == 1) else []
        if len(hw) == 2 and hw[0] * hw[1] == d and min(hw) > 0:
            image_shape = tuple(hw)
    v, c = (V[0], c[0]) if V.shape[0] == 1 else (V, c)
    return OneHiddenLayerNet(W, v, b, c, image_shape=image_shape)
