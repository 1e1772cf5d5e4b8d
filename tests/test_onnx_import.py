"""import_onnx follows the graph: the supported chain imports exactly; every other graph is refused by name (#19.5)."""
from __future__ import annotations

import numpy as np
import pytest

import stadv_ref

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

f32 = np.float32
H, W_, M, K = 4, 5, 7, 3
D = H * W_
rng = np.random.default_rng(11)
W1, B1 = rng.standard_normal((M, D)), rng.standard_normal(M)
W2, B2 = rng.standard_normal((K, M)), rng.standard_normal(K)


def _init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


INITS = {"W": W1.astype(f32), "b": B1.astype(f32), "V": W2.astype(f32), "c": B2.astype(f32),
         "Wt": W1.T.astype(f32), "Vt": W2.T.astype(f32), "shape": np.array([-1, D], np.int64)}


def _save(tmp_path, nodes, *, inputs=(("x", [1, 1, H, W_]),), outputs=(("y", [1, K]),), name="m.onnx"):
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [_init(k, v) for k, v in INITS.items() if k in used])
    model = helper.make_model(graph)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _ref(x):
    return np.maximum(x.reshape(len(x), -1) @ W1.T + B1, 0) @ W2.T + B2


def gemm(a, w, b, out, **kw):
    return helper.make_node("Gemm", [a, w, b], [out], name=f"gemm_{out}", **kw)


def node(op, ins, out, **kw):
    return helper.make_node(op, ins, [out], name=f"{op.lower()}_{out}", **kw)


GOOD = {
    "gemm-transB": [node("Flatten", ["x"], "f"), gemm("f", "W", "b", "h", transB=1), node("Relu", ["h"], "r"),
                    gemm("r", "V", "c", "y", transB=1)],
    "gemm-plain": [node("Flatten", ["x"], "f"), gemm("f", "Wt", "b", "h"), node("Relu", ["h"], "r"),
                   gemm("r", "Vt", "c", "y")],
    "matmul-add": [node("Flatten", ["x"], "f"), node("MatMul", ["f", "Wt"], "h0"), node("Add", ["h0", "b"], "h"),
                   node("Relu", ["h"], "r"), node("MatMul", ["r", "Vt"], "y0"), node("Add", ["c", "y0"], "y")],
    "reshape-identity-cast": [node("Reshape", ["x", "shape"], "f"), node("Identity", ["f"], "f2"),
                              node("Cast", ["f2"], "f3", to=TensorProto.DOUBLE),
                              gemm("f3", "W", "b", "h", transB=1), node("Relu", ["h"], "r"),
                              node("Cast", ["r"], "r2", to=TensorProto.FLOAT), gemm("r2", "V", "c", "y", transB=1)],
}


@pytest.mark.parametrize("form", sorted(GOOD))
def test_supported_graph_imports_with_the_numpy_logits(tmp_path, form):
    net = stadv_ref.import_onnx(_save(tmp_path, GOOD[form]))
    assert net.image_shape == (H, W_) and net.n_classes == K
    x = rng.uniform(0, 1, (6, H, W_))
    np.testing.assert_allclose(net(x), _ref(x), rtol=1e-5, atol=1e-5)


def test_binary_output_and_flat_input(tmp_path):
    INITS["v1"], INITS["c1"] = W2[:1].astype(f32), B2[:1].astype(f32)
    try:
        nodes = [gemm("x", "W", "b", "h", transB=1), node("Relu", ["h"], "r"), gemm("r", "v1", "c1", "y", transB=1)]
        net = stadv_ref.import_onnx(_save(tmp_path, nodes, inputs=(("x", [1, D]),), outputs=(("y", [1, 1]),)),
                                    image_shape=(H, W_))
    finally:
        del INITS["v1"], INITS["c1"]
    assert net.binary
    x = rng.uniform(0, 1, (3, H, W_))
    np.testing.assert_allclose(net(x), _ref(x)[:, 0], rtol=1e-5, atol=1e-5)


BAD = {
    # the ReLU sits off the hidden path (reads the input, its output unused)
    "relu-off-path": ([node("Flatten", ["x"], "f"), node("Relu", ["f"], "unused"), gemm("f", "W", "b", "h", transB=1),
                       node("Relu", ["h"], "r"), gemm("r", "V", "c", "y", transB=1)], "branches"),
    # the ReLU output is never used: linear -> linear
    "relu-unused": ([node("Flatten", ["x"], "f"), gemm("f", "W", "b", "h", transB=1), node("Relu", ["h"], "r"),
                     gemm("h", "V", "c", "y", transB=1)], "feeds 2 nodes"),
    # a constant-fed ReLU that is on no path at all
    "dangling-node": ([node("Flatten", ["x"], "f"), gemm("f", "W", "b", "h", transB=1), node("Relu", ["h"], "r"),
                       gemm("r", "V", "c", "y", transB=1), node("Relu", ["b"], "z")], "not on the path"),
    "cast-int32": ([node("Flatten", ["x"], "f"), gemm("f", "W", "b", "h", transB=1), node("Relu", ["h"], "r"),
                    node("Cast", ["r"], "ri", to=TensorProto.INT32), gemm("ri", "V", "c", "y", transB=1)],
                   "Cast node 'cast_ri'"),
    "no-relu": ([node("Flatten", ["x"], "f"), gemm("f", "W", "b", "h", transB=1), gemm("h", "V", "c", "y", transB=1)],
                "second linear layer must read the Relu"),
    "deeper": ([node("Flatten", ["x"], "f"), gemm("f", "W", "b", "h", transB=1), node("Relu", ["h"], "r"),
                gemm("r", "V", "c", "y0", transB=1), node("Relu", ["y0"], "y")], "Relu after the second"),
    "sigmoid": ([node("Flatten", ["x"], "f"), gemm("f", "W", "b", "h", transB=1), node("Sigmoid", ["h"], "r"),
                 gemm("r", "V", "c", "y", transB=1)], "Sigmoid"),
    "softmax-head": ([node("Flatten", ["x"], "f"), gemm("f", "W", "b", "h", transB=1), node("Relu", ["h"], "r"),
                      gemm("r", "V", "c", "y0", transB=1), node("Softmax", ["y0"], "y")], "Softmax"),
    "relu-first": ([node("Flatten", ["x"], "f"), node("Relu", ["f"], "f2"), gemm("f2", "W", "b", "h", transB=1),
                    node("Relu", ["h"], "r"), gemm("r", "V", "c", "y", transB=1)], "before the first linear"),
    "residual-add": ([node("Flatten", ["x"], "f"), node("MatMul", ["f", "Wt"], "h0"), node("Add", ["h0", "f"], "h"),
                      node("Relu", ["h"], "r"), gemm("r", "V", "c", "y", transB=1)], "branches"),
    "weight-from-input": ([node("Flatten", ["x"], "f"), node("MatMul", ["f", "f"], "h"), node("Relu", ["h"], "r"),
                           gemm("r", "V", "c", "y", transB=1)], "MatMul node"),
    "flatten-axis": ([node("Flatten", ["x"], "f", axis=2), gemm("f", "W", "b", "h", transB=1),
                      node("Relu", ["h"], "r"), gemm("r", "V", "c", "y", transB=1)], "axis=1"),
    "transA": ([node("Flatten", ["x"], "f"), gemm("f", "W", "b", "h", transA=1), node("Relu", ["h"], "r"),
                gemm("r", "V", "c", "y", transB=1)], "transA"),
    "bias-shape": ([node("Flatten", ["x"], "f"), gemm("f", "W", "b", "h", transB=1),
                    node("Relu", ["h"], "r"), gemm("r", "Vt", "c", "y", transB=1)], "does not broadcast"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_unsupported_graph_is_refused_by_name(tmp_path, case):
    nodes, needle = BAD[case]
    with pytest.raises(ValueError, match="Flatten → Linear → ReLU → Linear") as info:
        stadv_ref.import_onnx(_save(tmp_path, nodes))
    assert needle in str(info.value)


def test_layer_shapes_must_chain(tmp_path):
    INITS["Vbad"] = rng.standard_normal((K, M + 1)).astype(f32)
    try:
        nodes = [node("Flatten", ["x"], "f"), gemm("f", "W", "b", "h", transB=1), node("Relu", ["h"], "r"),
                 gemm("r", "Vbad", "c", "y", transB=1)]
        with pytest.raises(ValueError, match="do not chain"):
            stadv_ref.import_onnx(_save(tmp_path, nodes))
    finally:
        del INITS["Vbad"]


def test_two_outputs_and_two_inputs_are_refused(tmp_path):
    nodes = GOOD["gemm-transB"]
    with pytest.raises(ValueError, match="exactly one output"):
        stadv_ref.import_onnx(_save(tmp_path, nodes, outputs=(("y", [1, K]), ("h", [1, M]))))
    with pytest.raises(ValueError, match="exactly one input"):
        stadv_ref.import_onnx(_save(tmp_path, nodes, inputs=(("x", [1, 1, H, W_]), ("z", [1]))))


def test_path_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        stadv_ref.import_onnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 not a model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        stadv_ref.import_onnx(tmp_path / "junk.onnx")
    with pytest.raises(TypeError, match="^path"):
        stadv_ref.import_onnx(3)
