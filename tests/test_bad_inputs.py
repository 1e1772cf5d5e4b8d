"""The input contract (#19 item 9, deliverable 2): every public function refuses malformed input by name.

For every function and class in ``stadv_ref.__all__`` the suite starts from a small valid call
(4x4 images, 6 hidden units, 3 classes) and perturbs ONE argument at a time with a value that
Hypothesis draws from a category of malformed inputs: NaN/inf, wrong ndim, wrong shape, wrong
dtype (strings, complex, objects, None), negative or non-finite budgets, non-integer or out-of-range
counts, seeds and class indices, unknown choices, wrong types. The call must raise ``ValueError`` or
``TypeError`` whose message names the argument -- never another exception type, never a result.
``N = 0`` is tested separately: each function either returns an empty result or refuses by name.

``KNOWN_GAPS`` lists the cases that still fail, in modules this suite's author could not edit; they
are ``xfail(strict=True)``, so the suite turns red (XPASS) when one gets fixed: then delete its entry.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import stadv_ref as s

# (function, argument, category): what happens today
KNOWN_GAPS = {}

H = W = 4
M, K = 6, 3
_rng = np.random.default_rng(0)
NET = s.OneHiddenLayerNet(_rng.normal(size=(M, H * W)), _rng.normal(size=(K, M)), 0.1 * _rng.normal(size=M),
                          0.1 * _rng.normal(size=K))
HUGE_NET = s.OneHiddenLayerNet(NET.W * 1e200, NET.V * 1e200, NET.b, NET.c)
X = _rng.uniform(size=(2, H, W))
X4 = _rng.uniform(size=(2, 3, H, W))
Y = np.array([0, 2])
FLOW = _rng.uniform(-0.3, 0.3, size=(2, 2, H, W))
R = FLOW[:, 0].copy()
V16 = _rng.normal(size=H * W)
A_SDP = _rng.normal(size=(M, H * W))
XT = _rng.uniform(size=(6, H, W))
YT = np.array([0, 1, 2, 0, 1, 2])

SUITE = settings(max_examples=6, deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
                 phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------------------
# argument kinds and their categories of malformed values
# ---------------------------------------------------------------------------
@dataclass
class Arg:
    kind: str  # array | budget | count | seed | choice | classes | labels | net | flag | path | shape
    valid: object
    ndim: tuple = ()  # array: the accepted numbers of dimensions
    axes: tuple = ()  # array: axes whose length is constrained (by the other arguments or the net)
    minimum: int = 1  # count: smallest allowed value
    positive: bool = False  # budget: 0 is refused too
    names: tuple = ()  # other words the error message may use for this argument
    inf_ok: bool = False  # budget: +inf is a valid value
    none_ok: bool = False  # None is a valid value (a default)
    array_ok: bool = False  # budget: arrays of budgets are valid
    huge: bool = False  # also try huge finite values (1e300 times the valid one)


CATEGORIES = {
    "array": ("nonfinite", "ndim", "shape", "dtype", "huge"),
    "budget": ("negative", "nonfinite", "type"),
    "real": ("nonfinite", "type"),
    "count": ("range", "type"),
    "seed": ("negative", "type"),
    "choice": ("unknown", "type"),
    "classes": ("float", "bool", "range", "form"),
    "labels": ("dtype", "range", "shape"),
    "net": ("type", "huge"),
    "flag": ("type",),
    "path": ("type",),
    "shape": ("float", "range", "form"),
}


def _pick(data, values, arg):
    values = [v for v in values if not (arg.none_ok and v is None)]
    if arg.array_ok:
        values = [v for v in values if not isinstance(v, (list, np.ndarray))]
    if arg.inf_ok:
        values = [v for v in values if not (isinstance(v, (int, float)) and v > 1e308)]
    return data.draw(st.sampled_from(values))


def _draw(data, arg, category):
    """One malformed value of ``category`` for the argument ``arg``."""
    a = arg.valid
    if category == "huge":
        return HUGE_NET if arg.kind == "net" else np.asarray(a, dtype=float) * 1e300
    if arg.kind == "array":
        a = np.asarray(a, dtype=float)
        if category == "nonfinite":
            bad = a.copy()
            bad.flat[data.draw(st.integers(0, a.size - 1))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            return bad
        if category == "ndim":
            nd = data.draw(st.sampled_from([k for k in range(6) if k not in arg.ndim]))
            return np.random.default_rng(nd).uniform(size=data.draw(st.tuples(*[st.integers(1, 3)] * nd)))
        if category == "shape":
            ax = data.draw(st.sampled_from(arg.axes))
            shape = list(a.shape)
            shape[ax] += data.draw(st.sampled_from([1, -1] if shape[ax] > 1 else [1, 2]))
            return np.random.default_rng(ax).uniform(size=shape)
        return _pick(data, [a.astype(str), a + 1j, np.array([None] * a.size, dtype=object), None, "abc",
                            {"a": 1}], arg)
    if arg.kind == "budget":
        if category == "negative":
            vals = st.floats(-1e300, -1e-300) | st.integers(-10**6, -1)
            return data.draw(vals | st.just(0.0) if arg.positive else vals)
        if category == "nonfinite":
            return _pick(data, [np.nan, np.inf, -np.inf, np.float32("nan"), 10**400], arg)
        return _pick(data, ["1", True, None, 1j, np.ones(2), [0.5]], arg)
    if arg.kind == "real":
        if category == "nonfinite":
            return _pick(data, [np.nan, np.inf, -np.inf, 10**400], arg)
        return _pick(data, ["1", True, None, 1j, np.ones(2), [0.5]], arg)
    if arg.kind in ("count", "seed"):
        if category in ("range", "negative"):
            return data.draw(st.integers(-10**20, arg.minimum - 1 if arg.kind == "count" else -1))
        return _pick(data, [1.5, 2.0, np.float64(3.0), True, "3", [2], None], arg)
    if arg.kind == "choice":
        if category == "unknown":
            return data.draw(st.sampled_from(["", "nosuch", "ZEROS ", "linear2"]))
        return _pick(data, [3, None, ["zeros"], True, np.array(["x"])], arg)
    if arg.kind == "classes":
        f = data.draw(st.floats(0.1, K - 1.1))
        return data.draw(st.sampled_from({
            "float": [(f, 2), (0, f), (1.0, 2.0), (np.float64(0.0), 1)],
            "bool": [(True, 0), (0, np.bool_(True)), (False, 2)],
            "range": [(0, K), (-1, 1), (1, 1), (0, 10**12)],
            "form": [(0,), (0, 1, 2), "01", 1, {0: 1}],
        }[category]))
    if arg.kind == "labels":
        y = np.asarray(a)
        if category == "dtype":
            return data.draw(st.sampled_from([y + 0.5, y.astype(float), y.astype(bool), y.astype(str), None]))
        if category == "range":
            bad = y.copy()
            bad[data.draw(st.integers(0, y.size - 1))] = data.draw(st.sampled_from([-1, K, 255, -10**9]))
            return bad
        return data.draw(st.sampled_from([y[:1], np.concatenate([y, y]), y[None], y.reshape(-1, 1)]))
    if arg.kind == "net":
        return data.draw(st.sampled_from(["net", None, np.eye(3), {"W": 1}, 1.0]))
    if arg.kind == "flag":
        return data.draw(st.sampled_from(["no", "False", 2, [True]]))
    if arg.kind == "path":
        return _pick(data, [3, 1.5, ["a"], 0j, None], arg)
    # shape: a pair (H, W)
    return data.draw(st.sampled_from({
        "float": [(4.0, 4.0), (4.5, 4), (4, 3.9)],
        "range": [(0, 4), (4, -4), (-4, -4)],
        "form": [4, "44", (4,), (2, 2, 4)],
    }[category]))


# ---------------------------------------------------------------------------
# the public functions: a valid call and the kinds of its arguments
# ---------------------------------------------------------------------------
@dataclass
class Spec:
    fn: object
    args: dict
    fixed: dict = field(default_factory=dict)  # valid arguments that are not perturbed


def A(valid, ndim, axes=(), **kw):
    return Arg("array", valid, ndim=ndim, axes=axes, **kw)


def _use_backend(name):
    with s.use_backend(name):
        return s.current_backend_name()


NOPROG = dict(progress=False)
TORCH_NET = object()  # stands for a small torch MLP, built only when torch is there


def _from_torch(module, **kw):
    torch = pytest.importorskip("torch", reason="from_torch needs torch (pip install torch==2.13.0)")
    if module is TORCH_NET:
        torch.manual_seed(0)
        nn = torch.nn
        module = nn.Sequential(nn.Flatten(), nn.Linear(H * W, M), nn.ReLU(), nn.Linear(M, K))
    return s.from_torch(module, **kw)


SPECS = {
    "OneHiddenLayerNet": Spec(s.OneHiddenLayerNet, dict(
        W=A(NET.W, (2,), (0, 1)), v=A(NET.V, (1, 2), (1,)), b=A(NET.b, (1,), (0,), none_ok=True),
        c=A(NET.c, (0, 1), (0,), none_ok=True),
        image_shape=Arg("shape", (H, W)))),
    "OneHiddenLayerNet.forward": Spec(NET.forward, dict(X=A(X, (1, 2, 3), (1, 2), huge=True))),
    "OneHiddenLayerNet.input_gradient": Spec(NET.input_gradient, dict(
        X=A(X, (1, 2, 3), (1, 2)), weights=A(np.ones((2, K)), (1, 2), (0, 1)))),
    "OneHiddenLayerNet.pair": Spec(NET.pair, dict(i=Arg("count", 0, minimum=0), y=Arg("count", 1, minimum=0))),
    "LinearClassifier": Spec(s.LinearClassifier, dict(v=A(V16, (1, 2), (0,)), image_shape=Arg("shape", (H, W)))),
    "warp": Spec(s.warp, dict(x=A(X, (3, 4), (0, 1, 2), huge=True), flow=A(FLOW, (4,), (0, 1, 2, 3), huge=True),
                              padding=Arg("choice", "zeros"))),
    "warp_vjp_x": Spec(s.warp_vjp_x, dict(flow=A(FLOW, (4,), (0, 1, 2, 3)), grad_out=A(X, (3, 4), (0, 1, 2)),
                                          padding=Arg("choice", "zeros"))),
    "warp_vjp_flow": Spec(s.warp_vjp_flow, dict(x=A(X4, (3, 4), (0, 1, 2, 3)), flow=A(FLOW, (4,), (0, 1, 2, 3)),
                                                grad_out=A(X4, (3, 4), (0, 1, 2, 3)),
                                                padding=Arg("choice", "border"))),
    "warp_matrix": Spec(s.warp_matrix, dict(flow=A(FLOW[0], (3,), (0,)), padding=Arg("choice", "zeros"))),
    "tied": Spec(s.tied, dict(r=A(R, (3,)))),
    "tied_jacobian_diag": Spec(s.tied_jacobian_diag, dict(
        x=A(X, (3, 4), (0, 1, 2)), r=A(R, (3,), (0, 1, 2)), padding=Arg("choice", "zeros"),
        variant=Arg("choice", "paper"))),
    "neighbor_matrices": Spec(s.neighbor_matrices, dict(H=Arg("count", H), W=Arg("count", W))),
    "smoothness_matrix": Spec(s.smoothness_matrix, dict(H=Arg("count", H), W=Arg("count", W))),
    "flow_tv": Spec(s.flow_tv, dict(flow=A(FLOW, (4,), (1,)))),
    "flow_tv_grad": Spec(s.flow_tv_grad, dict(flow=A(FLOW, (4,), (1,)))),
    "stadv_flow_loss": Spec(s.stadv_flow_loss, dict(
        flow=A(FLOW, (4,), (1,)), eps=Arg("budget", 1e-8, positive=True), neighborhood=Arg("choice", "8"),
        padding=Arg("choice", "symmetric"))),
    "SmoothnessOperator": Spec(s.SmoothnessOperator, dict(H=Arg("count", H), W=Arg("count", W))),
    "smoothness_operator": Spec(s.smoothness_operator, dict(H=Arg("count", H), W=Arg("count", W))),
    "m_power": Spec(s.m_power, dict(fields=A(R, (2, 3, 4, 5)), k=Arg("choice", -1))),
    "smoothness_norm": Spec(s.smoothness_norm, dict(flow=A(FLOW, (3, 4), (1,)))),
    "dense_smoothness_power": Spec(s.dense_smoothness_power, dict(
        H=Arg("count", H), W=Arg("count", W), p=Arg("real", -0.5))),
    "aabb_radii": Spec(s.aabb_radii, dict(H=Arg("count", H), W=Arg("count", W), eps=Arg("budget", 0.5))),
    "adv_loss_exact": Spec(s.adv_loss_exact, dict(
        net=Arg("net", NET), x=A(X, (2, 3), (0, 1, 2), huge=True), flow=A(FLOW, (3, 4), (0, 1, 2, 3), huge=True),
        classes=Arg("classes", (0, 1)), padding=Arg("choice", "zeros"))),
    "adv_loss_first_order": Spec(s.adv_loss_first_order, dict(
        net=Arg("net", NET), x=A(X, (2, 3), (0, 1, 2)), flow=A(R, (3, 4), (0, 1, 2)),
        classes=Arg("classes", (2, 1)), padding=Arg("choice", "border"))),
    "adv_loss_linearized": Spec(s.adv_loss_linearized, dict(
        net=Arg("net", NET), x=A(X, (2, 3), (0, 1, 2)), r=A(R, (3,), (0, 1, 2)), classes=Arg("classes", (0, 1)))),
    "adv_loss_path_integral": Spec(s.adv_loss_path_integral, dict(
        net=Arg("net", NET), x=A(X, (2, 3), (0, 1, 2)), flow=A(FLOW, (3, 4), (0, 1, 2, 3)),
        n=Arg("count", 4), classes=Arg("classes", (0, 1)), padding=Arg("choice", "zeros"))),
    "cw_margin": Spec(s.cw_margin, dict(
        net=Arg("net", NET), X=A(X, (1, 2, 3), (1, 2)), y=Arg("labels", Y), kappa=Arg("budget", 0.0, inf_ok=True))),
    "flow_gradient": Spec(s.flow_gradient, dict(
        net=Arg("net", NET), x=A(X, (2, 3), (0, 1, 2)), flow=A(FLOW, (3, 4), (0, 1, 2, 3)),
        classes=Arg("classes", (0, 1)), padding=Arg("choice", "zeros"))),
    "get_backend": Spec(s.get_backend, dict(name=Arg("choice", "numpy", names=("backend",), none_ok=True))),
    "use_backend": Spec(_use_backend, dict(name=Arg("choice", "numpy", names=("backend",), none_ok=True))),
    "load_dataset": Spec(s.load_dataset, dict(split=Arg("choice", "test"), dataset=Arg("choice", "mnist"),
                                              limit=Arg("count", 2, none_ok=True), verify=Arg("flag", False),
                                              data_dir=Arg("path", None, none_ok=True)), fixed=dict(data_dir="/nonexistent")),
    "load_mnist": Spec(s.load_mnist, dict(split=Arg("choice", "test"), limit=Arg("count", 2, none_ok=True),
                                          download=Arg("flag", False)), fixed=dict(data_dir="/nonexistent")),
    "read_idx": Spec(s.read_idx, dict(path=Arg("path", "x.idx"))),
    "import_onnx": Spec(s.import_onnx, dict(path=Arg("path", "m.onnx"))),
    "from_torch": Spec(_from_torch, dict(
        module=Arg("net", TORCH_NET), image_shape=Arg("shape", (H, W)),
        mean=A(np.array([0.1]), (0, 1, 2, 3), (0,), none_ok=True), std=A(np.array([0.3]), (0, 1, 2, 3), (0,),
                                                                          none_ok=True))),
    "lower_bound_attack": Spec(s.lower_bound_attack, dict(
        net=Arg("net", NET), eps=Arg("budget", 0.5), classes=Arg("classes", (0, 1)),
        x0=A(X[0], (2,), (0, 1), none_ok=True), flow=Arg("choice", "tied"), jacobian=Arg("choice", "correct"),
        n=Arg("count", 4), max_iter=Arg("count", 2, minimum=0), seed=Arg("seed", 0)), fixed=NOPROG),
    "linear_lower_bound_attack": Spec(s.linear_lower_bound_attack, dict(
        v=A(V16, (1, 2), (0,)), eps=Arg("budget", 0.5), image_shape=Arg("shape", (H, W)),
        n=Arg("count", 4), max_iter=Arg("count", 2, minimum=0), seed=Arg("seed", 0)), fixed=NOPROG),
    "upper_bound": Spec(s.upper_bound, dict(
        net=Arg("net", NET), eps=Arg("budget", 0.5), method=Arg("choice", "sdp"), classes=Arg("classes", (0, 1)),
        padding=Arg("choice", "zeros"), solver=Arg("choice", "mixing"), gap_tol=Arg("budget", 1e-3, positive=True),
        max_iter=Arg("count", 200), seed=Arg("seed", 0))),
    "solve_sdp": Spec(s.solve_sdp, dict(
        A=A(A_SDP, (2,)), method=Arg("choice", "mixing"), gap_tol=Arg("budget", 1e-3, positive=True),
        max_iter=Arg("count", 200), seed=Arg("seed", 0), certificate=Arg("choice", "auto"))),
    "certify": Spec(s.certify, dict(
        net=Arg("net", NET), X=A(X, (2, 3), (0, 1, 2)), y=Arg("labels", Y), eps=Arg("budget", 0.1, array_ok=True),
        method=Arg("choice", "spectral"), padding=Arg("choice", "zeros"), solver=Arg("choice", "mixing"),
        gap_tol=Arg("budget", 1e-5, positive=True), seed=Arg("seed", 0)), fixed=dict(cache=False, progress=False)),
    "local_pair_bounds": Spec(s.local_pair_bounds, dict(
        net=Arg("net", NET), X=A(X, (2, 3), (0, 1, 2)), y=Arg("labels", Y), eps=Arg("budget", 0.1),
        flow=Arg("choice", "tied"), padding=Arg("choice", "zeros"), tightness=Arg("choice", "fast"),
        chunk_size=Arg("count", 2))),
    "stadv_attack": Spec(s.stadv_attack, dict(
        net=Arg("net", NET), x=A(X, (3,), (0, 1, 2)), y=Arg("labels", Y), tau=Arg("budget", 0.05, array_ok=True),
        method=Arg("choice", "batched"), max_iter=Arg("count", 3), batch_size=Arg("count", 2)),
        fixed=NOPROG),
    "flow_pgd_attack": Spec(s.flow_pgd_attack, dict(
        net=Arg("net", NET), eps=Arg("budget", 0.5), classes=Arg("classes", (0, 1)),
        x=A(X[0], (2,), (0, 1), none_ok=True), restarts=Arg("count", 2), steps=Arg("count", 3),
        padding=Arg("choice", "zeros"), step_size=Arg("budget", 0.25), seed=Arg("seed", 0))),
    "flow_pgd_attack_images": Spec(s.flow_pgd_attack_images, dict(
        net=Arg("net", NET), eps=Arg("budget", 0.5), X=A(X, (3,), (1, 2)),
        classes=A(np.array([[0, 1], [2, 0]]), (2,), (0, 1)), restarts=Arg("count", 2), steps=Arg("count", 3),
        padding=Arg("choice", "zeros"), step_size=Arg("budget", 0.25), seeds=Arg("seed", 0),
        batch_images=Arg("count", 2))),
    "train": Spec(s.train, dict(
        variant=Arg("choice", "nt"), X=A(XT, (2, 3), (0, 1, 2)), y=Arg("labels", YT), hidden=Arg("count", 4),
        epochs=Arg("count", 1, minimum=0), batch_size=Arg("count", 3), seed=Arg("seed", 0),
        n_classes=Arg("count", K), image_shape=Arg("shape", (H, W)), hidden_bias=Arg("flag", False)), fixed=NOPROG),
}
# result records (built by the library, not an input path), the exception class, functions without arguments
NOT_INPUT_PATHS = {
    "LowerBoundResult": "result record returned by lower_bound_attack",
    "UpperBoundResult": "result record returned by upper_bound",
    "CertificationResult": "result record returned by certify",
    "BackendError": "exception class",
    "available_backends": "takes no arguments",
    "current_backend_name": "takes no arguments",
}
# arguments whose valid value in the fixture is not a failing one: path-based loaders fail on the fixture itself
_VALID_CALL_FAILS = {"load_dataset", "load_mnist", "read_idx", "import_onnx"}


_GAP_FAILURES = (AssertionError, pytest.fail.Exception)  # a gap fails the contract; any other error is a bug


def _cases():
    out = []
    for name, spec in SPECS.items():
        for arg, a in spec.args.items():
            for cat in CATEGORIES[a.kind]:
                if (cat == "shape" and not a.axes) or (cat == "huge" and a.kind == "array" and not a.huge):
                    continue
                gap = KNOWN_GAPS.get((name, arg, cat))
                marks = [pytest.mark.xfail(strict=True, reason=gap, raises=_GAP_FAILURES)] if gap else []
                out.append(pytest.param(name, arg, cat, id=f"{name}-{arg}-{cat}", marks=marks))
    return out


def _call(name, arg=None, value=None):
    spec = SPECS[name]
    kw = {k: a.valid for k, a in spec.args.items()}
    kw.update(spec.fixed)
    if arg is not None:
        kw[arg] = value
    if name == "OneHiddenLayerNet.pair" or name in ("smoothness_operator", "SmoothnessOperator"):
        return spec.fn(*kw.values())
    return spec.fn(**kw)


def _has_nan(out, depth=0):
    if depth > 3:
        return False
    if isinstance(out, (np.ndarray, float, np.floating)):
        return bool(np.isnan(np.asarray(out, dtype=float)).any()) if np.asarray(out).dtype.kind in "fc" else False
    if isinstance(out, (tuple, list)):
        return any(_has_nan(o, depth + 1) for o in out)
    if hasattr(out, "__dict__") and not inspect.isclass(out):
        return any(_has_nan(o, depth + 1) for o in vars(out).values())
    return False


def _summary(out):
    return f"{type(out).__name__} {getattr(out, 'shape', '')}".strip()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow warnings before a refusal
@pytest.mark.parametrize("name, arg, category", _cases())
@SUITE
@given(data=st.data())
def test_bad_argument_is_refused_by_name(name, arg, category, data):
    a = SPECS[name].args[arg]
    value = _draw(data, a, category)
    try:
        out = _call(name, arg, value)
    except (ValueError, TypeError) as exc:
        words = (arg,) + a.names
        # X and x are the same argument in different signatures: match the name case-insensitively
        assert any(re.search(rf"(?<![\w.]){re.escape(w)}(?![\w])", str(exc), re.I) for w in words), (
            f"{name}({arg}={value!r}): {type(exc).__name__} does not name {arg!r}: {exc}")
        return
    if category == "huge":  # a huge finite value may be computed with, but never into a NaN
        assert not _has_nan(out), f"{name}({arg}=huge) returned NaN: {out!r}"
        return
    pytest.fail(f"{name}({arg}={value!r}) returned {_summary(out)} instead of raising")


# ---------------------------------------------------------------------------
# N = 0: an empty result of the right shape, or a refusal naming the argument
# ---------------------------------------------------------------------------
def _e(*shape):
    return np.zeros(shape)


E0, Y0 = _e(0, H, W), np.zeros(0, dtype=np.int64)
EMPTY = {  # name: (call, ("empty", shape of the result or of each of its parts) | ("refuse", argument))
    "OneHiddenLayerNet.forward": (lambda: NET(E0), ("empty", (0, K))),
    "OneHiddenLayerNet.input_gradient": (lambda: NET.input_gradient(E0, np.ones(K)), ("empty", (0, H * W))),
    "cw_margin": (lambda: s.cw_margin(NET, E0, Y0), ("empty", ((0,), (0,)))),
    "tied": (lambda: s.tied(E0), ("empty", (0, 2, H, W))),
    "m_power": (lambda: s.m_power(E0, -2), ("empty", (0, H, W))),
    "smoothness_norm": (lambda: s.smoothness_norm(E0), ("empty", (0,))),
    "warp": (lambda: s.warp(E0, _e(0, 2, H, W)), ("refuse", "x")),
    "warp_vjp_x": (lambda: s.warp_vjp_x(_e(0, 2, H, W), E0), ("refuse", "grad_out")),
    "warp_vjp_flow": (lambda: s.warp_vjp_flow(E0, _e(0, 2, H, W), E0), ("refuse", "x")),
    "tied_jacobian_diag": (lambda: s.tied_jacobian_diag(E0, E0), ("refuse", "x")),
    "flow_tv": (lambda: s.flow_tv(_e(0, 2, H, W)), ("refuse", "flow")),
    "flow_tv_grad": (lambda: s.flow_tv_grad(_e(0, 2, H, W)), ("refuse", "flow")),
    "stadv_flow_loss": (lambda: s.stadv_flow_loss(_e(0, 2, H, W)), ("refuse", "flow")),
    "adv_loss_exact": (lambda: s.adv_loss_exact(NET, E0, E0, classes=(0, 1)), ("refuse", "x")),
    "adv_loss_first_order": (lambda: s.adv_loss_first_order(NET, E0, E0, classes=(0, 1)), ("refuse", "x")),
    "adv_loss_linearized": (lambda: s.adv_loss_linearized(NET, E0, E0, classes=(0, 1)), ("refuse", "x")),
    "adv_loss_path_integral": (lambda: s.adv_loss_path_integral(NET, E0, E0, classes=(0, 1)), ("refuse", "x")),
    "flow_gradient": (lambda: s.flow_gradient(NET, E0, E0, classes=(0, 1)), ("refuse", "x")),
    "solve_sdp": (lambda: s.solve_sdp(_e(0, H * W)), ("refuse", "A")),
    "stadv_attack": (lambda: s.stadv_attack(NET, E0, Y0, 0.05, progress=False), ("refuse", "x")),
    "certify": (lambda: s.certify(NET, E0, Y0, 0.1, method="spectral", cache=False, progress=False),
                ("refuse", "X")),
    "local_pair_bounds": (lambda: s.local_pair_bounds(NET, E0, Y0, 0.1), ("empty", (0, K))),
    "train": (lambda: s.train("nt", E0, Y0, hidden=4, epochs=1, progress=False, n_classes=K, image_shape=(H, W)),
              ("refuse", "X")),
}
EMPTY_GAPS = {}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason=EMPTY_GAPS[n])]
                                               if n in EMPTY_GAPS else []) for n in EMPTY])
def test_empty_batch_is_handled_or_refused_by_name(name):
    call, (rule, what) = EMPTY[name]
    if rule == "refuse":
        with pytest.raises((ValueError, TypeError), match=rf"(?<![\w.]){what}(?!\w)"):
            call()
        return
    out = call()
    shapes = [o.shape for o in out] if isinstance(out, tuple) else out.shape
    assert shapes == (list(what) if isinstance(what[0], tuple) else what)


# ---------------------------------------------------------------------------
# every public name is covered; the valid fixtures run
# ---------------------------------------------------------------------------
def test_every_public_function_and_class_is_covered():
    public = {n for n in s.__all__ if inspect.isclass(getattr(s, n)) or callable(getattr(s, n))}
    covered = {n.split(".")[0] for n in SPECS} | set(NOT_INPUT_PATHS)
    assert public - covered == set(), "add a Spec for these public names"
    assert s.available_backends()[0] == "numpy" and isinstance(s.current_backend_name(), str)


@pytest.mark.parametrize("name", [n for n in SPECS if n not in _VALID_CALL_FAILS])
def test_valid_fixture_call_succeeds(name):
    _call(name)


def test_gaps_are_real_cases():
    ids = {(n, a, c) for n, spec in SPECS.items() for a, arg in spec.args.items() for c in CATEGORIES[arg.kind]}
    assert set(KNOWN_GAPS) <= ids
