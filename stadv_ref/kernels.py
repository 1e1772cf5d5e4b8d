"""The kernel inventory: the one list of kernels every compute backend provides.

Each :class:`KernelInfo` names a kernel, its NumPy/SciPy reference (in
:mod:`stadv_ref.reference`, the specification), the paper equation it implements,
its argument spec, a generator of valid example arguments and the tolerance a
backend must meet against the reference. Everything else is derived from
:data:`INVENTORY` (in the style of the ``_FuncInfo`` list of scipy's
``special/_support_alternative_backends.py``):

* :data:`KERNELS`, the names dispatch checks a backend for (:mod:`stadv_ref.backend`);
* :func:`collect_kernels`, which builds a backend object from a namespace;
* the ``numpy`` reference backend, :data:`numpy_backend`;
* the documented contract (:func:`contract_table`, rendered in the README);
* the generic cross-backend Hypothesis test ``tests/backends/test_inventory.py``.

Conventions
-----------
Kernels receive **already validated, canonical** arrays (the public functions of
:mod:`stadv_ref` check and reshape) and return arrays of the backend's own type
(``backend.xp``) with the input's float dtype (float32 in, float32 out).

* images ``x``: ``(N, C, H, W)``
* flows: ``(N, 2, H, W)``, ``flow[:, 0] = du`` (columns), ``flow[:, 1] = dv`` (rows)
* tied flows ``r``: ``(N, H, W)``
* network weights: ``W (m, d)``, ``b (m,)``, ``V (K, m)``, ``c (K,)``; inputs ``X (N, d)``

Registering a backend
---------------------
Add an entry point in the group ``stadv_ref.backends`` whose value is the backend
object, e.g. in ``pyproject.toml``::

    [project.entry-points."stadv_ref.backends"]
    numba = "stadv_numba:backend"

Importing ``stadv_ref`` never imports a backend: entry points are loaded on first
use. A backend whose dependencies are missing must raise :class:`ImportError` when
its entry point is loaded.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from .reference import local as _local
from .reference import network as _net
from .reference import operators as _ops
from .reference import sdp as _sdp
from .reference import smoothness as _smooth
from .reference import warp as _warp

__all__ = [
    "KernelInfo",
    "INVENTORY",
    "KERNELS",
    "Backend",
    "collect_kernels",
    "contract_table",
    "numpy_backend",
]

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-5}
"""Default relative tolerance per dtype (times a magnitude scale, also the absolute one)."""


@dataclasses.dataclass(frozen=True)
class KernelInfo:
    """One kernel of the backend contract.

    Attributes
    ----------
    name : str
        Attribute name on a backend object.
    reference : callable
        The NumPy/SciPy reference implementation (the specification).
    equation : str
        Where the math lives in the paper / ``docs/EQUATIONS.md``.
    signature : str
        Arguments and result, canonical shapes.
    doc : str
        What the kernel computes.
    example : callable ``(rng, dtype) -> tuple``
        Valid example arguments (NumPy arrays and Python scalars) for the generic
        cross-backend test.
    rtol : dict
        Relative tolerance per dtype against the reference, scaled by the magnitude
        of the example's inputs.
    float64_only : bool
        The kernel is only defined on float64 inputs.
    """

    name: str
    reference: Callable
    equation: str
    signature: str
    doc: str
    example: Callable = None
    rtol: Mapping = dataclasses.field(default_factory=lambda: dict(TOL))
    float64_only: bool = False


# -- example arguments for the generic cross-check -------------------------------------
def _img(rng, dt, N=3, C=2, H=5, W=4):
    return rng.uniform(-1, 1, (N, C, H, W)).astype(dt)


def _flow(rng, dt, N=3, H=5, W=4):
    f = rng.uniform(-2.5, 2.5, (N, 2, H, W))
    f[0] = np.round(f[0] * 2) / 2  # integer and half-integer sampling positions
    return f.astype(dt)


def _pad(rng):
    return ("zeros", "border")[int(rng.integers(2))]


def _ex_warp(rng, dt):
    return _img(rng, dt), _flow(rng, dt), _pad(rng)


def _ex_vjp_x(rng, dt):
    return _flow(rng, dt), _img(rng, dt), _pad(rng)


def _ex_vjp_flow(rng, dt):
    return _img(rng, dt), _flow(rng, dt), _img(rng, dt), _pad(rng)


def _ex_tied(rng, dt):
    return _img(rng, dt), rng.uniform(-2, 2, (3, 5, 4)).astype(dt), _pad(rng), ("correct", "paper")[int(rng.integers(2))]


def _ex_flow(rng, dt):
    return (_flow(rng, dt),)


def _ex_stadv(rng, dt):
    return _flow(rng, dt), 1e-8, ("4", "diagonal", "8")[int(rng.integers(3))], ("zeros", "symmetric")[int(rng.integers(2))]


def _ex_power(rng, dt):
    return rng.standard_normal((3, 2, 5, 4)).astype(dt), (0.5, -0.5, 1.0, -1.0, 2.0, -2.0)[int(rng.integers(6))]


def _ex_net(rng, dt):
    m, d, K, N = 6, 20, 3, 4
    return (rng.standard_normal((m, d)).astype(dt), rng.standard_normal(m).astype(dt),
            rng.standard_normal((K, m)).astype(dt), rng.standard_normal(K).astype(dt),
            rng.standard_normal((N, d)).astype(dt))


def _ex_net_grad(rng, dt):
    W, b, V, _, X = _ex_net(rng, dt)
    return W, b, V, X, rng.standard_normal((X.shape[0], V.shape[0])).astype(dt)


def _ex_mixing(rng, dt):
    m, d, k = 5, 7, 3
    A = rng.standard_normal((m, d)).astype(dt)
    S = rng.standard_normal((m, k))
    T = rng.standard_normal((d, k))
    S = (S / np.linalg.norm(S, axis=1, keepdims=True)).astype(dt)
    T = (T / np.linalg.norm(T, axis=1, keepdims=True)).astype(dt)
    return A, S, T, 4, 0.0


def _ex_lmax(rng, dt):
    B = rng.standard_normal((8, 8))
    return ((B + B.T) / 2).astype(np.float64),


def _ex_kink(rng, dt):
    m, N, H, W, B = 5, 3, 4, 3, 7
    Wt = rng.standard_normal((m, H * W))
    Wt[:, rng.random(H * W) < 0.3] = 0.0  # pixels with no weight, as a flat background's
    slopes = [rng.standard_normal((N, H * W)) for _ in range(4)]
    with_c = bool(rng.integers(2))
    return (np.maximum(Wt, 0), np.maximum(-Wt, 0), slopes[0], slopes[1], slopes[2] if with_c else None,
            slopes[3] if with_c else None, rng.integers(0, N, B), rng.integers(0, m, B), H, W)


def _warp_vjp_both_reference(x, flow, grad_out, padding):
    return (_warp.warp_vjp_x_reference(flow, grad_out, padding),
            _warp.warp_vjp_flow_reference(x, flow, grad_out, padding))


def _asarray(a, dtype=None):
    return np.asarray(a, dtype=dtype)


def _to_numpy(a):
    return np.asarray(a)


INVENTORY = (
    KernelInfo("asarray", _asarray, "-", "asarray(a, dtype=None) -> backend array",
               "Convert ``a`` (NumPy or backend array) to a backend array."),
    KernelInfo("to_numpy", _to_numpy, "-", "to_numpy(a) -> numpy.ndarray",
               "Convert a backend array to a NumPy array (no-op for NumPy)."),
    KernelInfo("warp", _warp.warp_reference, "Eq. (1)",
               "warp(x (N,C,H,W), flow (N,2,H,W), padding) -> (N,C,H,W)",
               "The bilinear warp ``g(flow; x)``; ``padding in {'zeros', 'border'}``.", _ex_warp),
    KernelInfo("warp_vjp_x", _warp.warp_vjp_x_reference, "Eq. (1), adjoint",
               "warp_vjp_x(flow, grad_out (N,C,H,W), padding) -> (N,C,H,W)",
               "Adjoint of the warp in ``x``: ``G(flow)^T grad_out``.", _ex_vjp_x),
    KernelInfo("warp_vjp_flow", _warp.warp_vjp_flow_reference, "Eq. (1), Eq. (5)",
               "warp_vjp_flow(x, flow, grad_out, padding) -> (N,2,H,W)",
               "``sum_c grad_out * d warp / d flow`` (right derivative at integers).", _ex_vjp_flow),
    KernelInfo("warp_vjp_both", _warp_vjp_both_reference, "Eq. (1), Eq. (5)",
               "warp_vjp_both(x, flow, grad_out, padding) -> (gx (N,C,H,W), gflow (N,2,H,W))",
               "Both VJPs of the warp in one pass (fused in the optimized backends).", _ex_vjp_flow),
    KernelInfo("tied_jacobian_diag", _warp.tied_jacobian_diag_reference, "[E6]",
               "tied_jacobian_diag(x, r (N,H,W), padding, variant) -> (N,C,H,W)",
               "Diagonal of ``Dg`` for a tied flow; ``variant in {'correct', 'paper'}``.", _ex_tied),
    KernelInfo("flow_tv", _smooth.flow_tv_reference, "Eq. (2), [E1]",
               "flow_tv(flow (N,2,H,W)) -> (N,)", "Quadratic smoothness ``l_diff`` per flow.", _ex_flow),
    KernelInfo("flow_tv_grad", _smooth.flow_tv_grad_reference, "Eq. (2), Prop. 1",
               "flow_tv_grad(flow) -> (N,2,H,W)", "Gradient of ``flow_tv`` (``2 L du, 2 L dv``).", _ex_flow),
    KernelInfo("stadv_flow_loss", _smooth.stadv_flow_loss_reference, "stAdv L_flow",
               "stadv_flow_loss(flow, eps, neighborhood, padding) -> (values (N,), grad (N,2,H,W))",
               "stAdv's ``L_flow`` with a per-pair square root; ``neighborhood in {'4','diagonal','8'}``, "
               "``padding in {'zeros','symmetric'}``.", _ex_stadv),
    KernelInfo("smoothness_power", _ops.smoothness_power_reference, "Eq. (3), Prop. 1",
               "smoothness_power(fields (..., H, W), p) -> (..., H, W)",
               "``L^p`` on each field, ``p in {±1/2, ±1, ±2}`` (``M^k`` with ``k = 2p``).", _ex_power,
               rtol={np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}),
    KernelInfo("net_forward", _net.net_forward_reference, "Sec. 2 network",
               "net_forward(W, b, V, c, X) -> (Z (N,m), out (N,K))",
               "``Z = X W^T + b``, ``out = relu(Z) V^T + c``.", _ex_net,
               rtol={np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-4}),
    KernelInfo("net_input_grad", _net.net_input_grad_reference, "Eq. (5)",
               "net_input_grad(W, b, V, X, weights (N,K)) -> (N,d)",
               "``grad_x sum_k weights[n,k] f_k(x_n)`` (ReLU derivative 0 at 0).", _ex_net_grad,
               rtol={np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-4}),
    KernelInfo("sdp_mixing", _sdp.sdp_mixing_reference, "Sec. 4.1",
               "sdp_mixing(A (m,d), S (m,k), T (d,k), max_iter, tol) -> (S, T, n_iter)",
               "Block mixing-method ascent for the bipartite SDP: ``S <- rownormalize(A T)``, then "
               "``T <- rownormalize(A^T S)``; stop after iteration ``k >= 2`` when ``phi_k - phi_{k-1} "
               "<= tol |phi_k|`` (``phi_k = sum_j ||(A^T S)_j||``) or at ``max_iter``. A zero row keeps "
               "its previous value.", _ex_mixing,
               rtol={np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}),
    KernelInfo("lambda_max_upper", _sdp.lambda_max_upper_reference, "Sec. 4.1 certificate",
               "lambda_max_upper(S (n,n)) -> float",
               "Guaranteed upper bound ``u >= lambda_max(S)`` (proved by a Cholesky factorisation of "
               "``u I - S`` with a rounding margin), ``u - lambda_max <= 1e-8 max(1, ||S||_F)``.", _ex_lmax,
               rtol={np.dtype(np.float64): 1e-8}, float64_only=True),
    KernelInfo("kink_forms", _local.kink_forms_reference, "Eq. (3), Prop. 1; issue #21",
               "kink_forms(P (m,d), Q (m,d), A1 (N,d), A2 (N,d), C1, C2, n_idx (B,), j_idx (B,), H, W) "
               "-> (qa, cross, qc) each (B,)",
               "Quadratic forms of the per-image certificate: for ``a = P[j] * A1[n] + Q[j] * A2[n]`` and "
               "``c = P[j] * C1[n] + Q[j] * C2[n]`` of every pair ``(n, j)``: ``a^T L^-1 a``, "
               "``c^T abs(L^-1 a)``, ``c^T L^-1 c`` (``C1 = C2 = None``: only the first, the others 0).",
               _ex_kink, rtol={np.dtype(np.float64): 1e-10}, float64_only=True),
)
"""Every kernel of the backend contract, in one place."""

KERNELS = tuple(k.name for k in INVENTORY)
"""Names every backend must provide (plus the attributes ``name`` and ``xp``)."""

_BY_NAME = {k.name: k for k in INVENTORY}


@runtime_checkable
class Backend(Protocol):
    """A compute backend: ``name``, ``xp`` and every kernel of :data:`INVENTORY`.

    See :func:`contract_table` for the kernels' signatures; the reference
    implementations are the ``reference`` attributes of :data:`INVENTORY`.
    """

    name: str
    xp: Any


def kernel_info(name):
    """The :class:`KernelInfo` of kernel ``name`` (``KeyError`` naming the known kernels)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown kernel {name!r}; the contract has {list(KERNELS)}") from None


def collect_kernels(name, xp, namespace: Mapping[str, Any], **extra):
    """A backend object: the :data:`KERNELS` found in ``namespace``, plus ``name``, ``xp`` and ``extra``.

    Backends define their kernels under the contract's names (as module globals or
    the locals of a factory) and collect them with
    ``collect_kernels("numba", numpy, globals())``, so the list of names lives only
    in :data:`INVENTORY`.

    Raises
    ------
    TypeError
        If ``namespace`` lacks a kernel of the contract (names them).
    """
    merged = dict(namespace)
    merged.update(extra)
    missing = [k for k in KERNELS if not callable(merged.get(k))]
    if missing:
        raise TypeError(f"backend {name!r} does not define the kernels {missing}")
    others = {k: v for k, v in extra.items() if k not in _BY_NAME}
    return SimpleNamespace(name=name, xp=xp, **{k: merged[k] for k in KERNELS}, **others)


def contract_table():
    """The contract as a Markdown table (kernel, equation, signature, meaning), derived from :data:`INVENTORY`."""
    rows = ["| kernel | equation | signature | what it computes |", "|---|---|---|---|"]
    for k in INVENTORY:
        rows.append(f"| `{k.name}` | {k.equation} | `{k.signature}` | {k.doc.replace('|', '/')} |")
    return "\n".join(rows)


numpy_backend = collect_kernels("numpy", np, {k.name: k.reference for k in INVENTORY})
"""The NumPy/SciPy reference registered as backend ``"numpy"``."""
