"""Cross-check every backend kernel against the NumPy reference (stadv_ref.interface.KERNELS).

One Hypothesis test per interface function, run for every backend given by the
``backend`` fixture (``numpy`` vs itself is a trivial pass; ``numba`` and
``cupy`` are the point). Inputs cover 1xW and Hx1 images, several channels,
both float dtypes, flows at integer and half-integer positions (where the warp
is not differentiable and the right-derivative convention matters) and far
outside the image (both paddings).

Tolerances are tied to the dtype (:data:`TOL`) and scaled by a bound on the
magnitude of the terms summed for each output entry, so cancellation in a sum
cannot make a correct kernel fail.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from _settings import SETTINGS as CORE_SETTINGS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import stadv_ref
from stadv_ref.kernels import KERNELS

# the suite's settings (30 derandomized examples, no deadline); the ``backend`` fixture
# only returns a name, so reusing it across examples is safe
SETTINGS = settings(CORE_SETTINGS, suppress_health_check=[HealthCheck.function_scoped_fixture])
TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-5}
"""Relative tolerance per dtype (also used, times the scale, as the absolute one)."""

REF = stadv_ref.get_backend("numpy")

dtypes = st.sampled_from([np.float64, np.float32])
sides = st.sampled_from([1, 1, 2, 3, 5, 8])  # 1 often: 1xW and Hx1 images
paddings = st.sampled_from(["zeros", "border"])


def assert_backend_close(actual, desired, backend, *, scale=None, rtol=None, atol=None):
    """Assert a backend result equals the reference result (in the style of scipy's ``xp_assert_close``).

    Checks, in order: the array type is the backend's (``backend.xp.ndarray``),
    the shape, the dtype, then the values after :meth:`backend.to_numpy`.

    Parameters
    ----------
    actual : backend array
    desired : numpy.ndarray
        Reference result.
    backend : backend object
    scale : float, optional
        Magnitude of the terms behind each entry; ``atol = rtol * scale``
        (default ``max(1, max|desired|)``).
    rtol, atol : float, optional
        Default from :data:`TOL` for the desired dtype.
    """
    desired = np.asarray(desired)
    assert isinstance(actual, backend.xp.ndarray), (
        f"{backend.name}: expected a {backend.xp.__name__}.ndarray, got {type(actual).__name__}"
    )
    assert tuple(actual.shape) == desired.shape, f"shape {tuple(actual.shape)} != {desired.shape}"
    assert actual.dtype == desired.dtype, f"dtype {actual.dtype} != {desired.dtype}"
    tol = TOL[desired.dtype]
    rtol = tol if rtol is None else rtol
    if scale is None:
        scale = max(1.0, float(np.abs(desired).max())) if desired.size else 1.0
    atol = rtol * scale if atol is None else atol
    np.testing.assert_allclose(backend.to_numpy(actual), desired, rtol=rtol, atol=atol)


def _array(dtype, shape, lo, hi):
    return hnp.arrays(dtype, shape, elements=st.floats(lo, hi, width=32))


def _flow_values(limit):
    """Integers, half-integers, near-integers and general values in [-limit, limit]."""
    halves = st.integers(-2 * limit, 2 * limit).map(lambda k: k / 2)
    near = st.integers(-limit, limit).map(lambda k: k - 2.0**-10)
    return st.one_of(halves, near, st.floats(-limit, limit, width=32))


@st.composite
def warp_case(draw, tied=False):
    """``(x, flow, grad_out)`` with shapes ``(N,C,H,W)``, ``(N,2,H,W)`` (or ``(N,H,W)`` if tied)."""
    dt = draw(dtypes)
    N = draw(st.integers(1, 3))
    C = draw(st.integers(1, 3))
    H, W = draw(sides), draw(sides)
    limit = max(H, W) + 2  # reaches past every edge
    x = draw(_array(dt, (N, C, H, W), -2, 2))
    fshape = (N, H, W) if tied else (N, 2, H, W)
    flow = draw(hnp.arrays(dt, fshape, elements=_flow_values(limit)))
    g = draw(_array(dt, (N, C, H, W), -2, 2))
    if draw(st.booleans()):  # a non-contiguous view must work too
        x = np.asfortranarray(x)
    return x, flow, g


def _be(name):
    return stadv_ref.get_backend(name)


def _fused_backend(name):
    """The backend, or a skip when it has no optional fused ``warp_vjp_both``."""
    be = _be(name)
    if not hasattr(be, "warp_vjp_both"):
        pytest.skip(f"backend {name!r} has no fused warp_vjp_both")
    return be


def _warp_property(test):
    """``SETTINGS`` and ``given`` over ``case=warp_case()`` and ``padding``; ``backend`` stays a parameter."""
    return SETTINGS(given(case=warp_case(), padding=paddings)(test))


def _assert_vjp_x_close(be, gx, flow, g, padding):
    """``gx`` equals the reference ``warp_vjp_x``; an entry sums at most all |g| of its plane."""
    scale = max(1.0, float(np.abs(g).sum(axis=(2, 3)).max()))
    assert_backend_close(gx, REF.warp_vjp_x(flow, g, padding), be, scale=scale)


def _assert_vjp_flow_close(be, gflow, x, flow, g, padding):
    """``gflow`` equals the reference ``warp_vjp_flow``; an entry sums 4 C terms |g| |x|."""
    C = x.shape[1]
    scale = max(1.0, 4 * C * float(np.abs(g).max() * np.abs(x).max()))
    assert_backend_close(gflow, REF.warp_vjp_flow(x, flow, g, padding), be, scale=scale)


def test_backend_implements_interface(backend):
    be = _be(backend)
    missing = [k for k in KERNELS + ("name", "xp") if not hasattr(be, k)]
    assert missing == []
    assert be.name == backend


# ---------------------------------------------------------------------------
# Eq. (1)
# ---------------------------------------------------------------------------
@_warp_property
def test_warp(backend, case, padding):
    be = _be(backend)
    x, flow, _ = case
    out = be.warp(be.asarray(x), be.asarray(flow), padding)
    # each output is a convex combination of at most 4 entries of x
    assert_backend_close(out, REF.warp(x, flow, padding), be, scale=max(1.0, np.abs(x).max()))


@_warp_property
def test_warp_vjp_x(backend, case, padding):
    be = _be(backend)
    _, flow, g = case
    _assert_vjp_x_close(be, be.warp_vjp_x(be.asarray(flow), be.asarray(g), padding), flow, g, padding)


@_warp_property
def test_warp_vjp_flow(backend, case, padding):
    be = _be(backend)
    x, flow, g = case
    out = be.warp_vjp_flow(be.asarray(x), be.asarray(flow), be.asarray(g), padding)
    _assert_vjp_flow_close(be, out, x, flow, g, padding)


@_warp_property
def test_warp_vjp_both(backend, case, padding):
    """The optional fused kernel equals the two interface VJPs."""
    be = _fused_backend(backend)
    x, flow, g = case
    gx, gflow = be.warp_vjp_both(be.asarray(x), be.asarray(flow), be.asarray(g), padding)
    _assert_vjp_x_close(be, gx, flow, g, padding)
    _assert_vjp_flow_close(be, gflow, x, flow, g, padding)


def _channel_path_cases():
    """(C, dtype, padding) for the channel-path tests: every channel count a backend may
    special-case (numba: planar pixel-major for C == 1, packed 4-lane planes for 2..4,
    planar per-channel passes above)."""
    return itertools.product([1, 2, 3, 4, 5], [np.float32, np.float64], ["zeros", "border"])


def test_warp_channel_paths(backend):
    """The forward's per-channel code paths, on several images per thread (each thread
    reloads its scratch planes per image) and a few pixel blocks per image."""
    be = _be(backend)
    N, H, W = 12, 23, 31
    for C, dtype, padding in _channel_path_cases():
        rng = np.random.default_rng(C)
        x = rng.uniform(-1, 1, (N, C, H, W)).astype(dtype)
        flow = (3 * rng.standard_normal((N, 2, H, W))).astype(dtype)
        flow[:, :, ::2] = np.round(flow[:, :, ::2])
        out = be.warp(be.asarray(x), be.asarray(flow), padding)
        assert_backend_close(out, REF.warp(x, flow, padding), be)


def test_warp_vjp_both_channel_paths(backend):
    """The fused kernel's per-channel code paths (numba: pixel-major path for C == 1,
    packed planes for C = 2..4), on enough images that every thread of a machine with up
    to 8 threads gets several (the path of large batches, with software prefetch of the
    images ahead). ``tests/backends/test_numba_kernels.py`` calls the numba kernels directly."""
    be = _fused_backend(backend)
    N, H, W = 40, 5, 7
    for C, dtype, padding in _channel_path_cases():
        rng = np.random.default_rng(C)
        x = rng.uniform(-1, 1, (N, C, H, W)).astype(dtype)
        g = rng.standard_normal((N, C, H, W)).astype(dtype)
        flow = (3 * rng.standard_normal((N, 2, H, W))).astype(dtype)
        flow[:, :, ::2] = np.round(flow[:, :, ::2])  # integer positions (right derivatives)
        gx, gflow = be.warp_vjp_both(be.asarray(x), be.asarray(flow), be.asarray(g), padding)
        scale_x = float(np.abs(g).sum(axis=(2, 3)).max())
        assert_backend_close(gx, REF.warp_vjp_x(flow, g, padding), be, scale=scale_x)
        scale_f = 4.0 * C * float(np.abs(g).max())
        assert_backend_close(gflow, REF.warp_vjp_flow(x, flow, g, padding), be, scale=scale_f)


@SETTINGS
@given(case=warp_case(tied=True), padding=paddings, variant=st.sampled_from(["correct", "paper"]))
def test_tied_jacobian_diag(backend, case, padding, variant):
    be = _be(backend)
    x, r, _ = case
    out = be.tied_jacobian_diag(be.asarray(x), be.asarray(r), padding, variant)
    desired = REF.tied_jacobian_diag(x, r, padding, variant)
    assert_backend_close(out, desired, be, scale=max(1.0, 4 * float(np.abs(x).max())))


def test_warp_public_api_squeezes_channels(backend):
    """The dispatched public functions keep the (N, H, W) shape on this backend."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 1, 5))  # Hx... 1x5 images
    flow = np.round(rng.uniform(-3, 3, (2, 2, 1, 5)) * 2) / 2
    be = _be(backend)
    out = stadv_ref.warp(x, flow, "border", backend=backend)
    assert_backend_close(out, REF.warp(x[:, None], flow, "border")[:, 0], be)
    gflow = stadv_ref.warp_vjp_flow(x, flow, x, "zeros", backend=backend)
    assert_backend_close(gflow, REF.warp_vjp_flow(x[:, None], flow, x[:, None], "zeros"), be, scale=4)


# ---------------------------------------------------------------------------
# Eq. (2), Prop. 1, stAdv flow loss, Prop. 2 powers
# ---------------------------------------------------------------------------
@st.composite
def flow_case(draw, leading=None):
    dt = draw(dtypes)
    N = draw(st.integers(1, 3))
    H, W = draw(sides), draw(sides)
    shape = (N, 2, H, W) if leading is None else draw(leading) + (H, W)
    return draw(hnp.arrays(dt, shape, elements=_flow_values(4)))


@SETTINGS
@given(flow=flow_case())
def test_flow_tv(backend, flow):
    be = _be(backend)
    # Eq. (2) sums 8 squared differences per pixel and component
    scale = max(1.0, 16 * flow[0].size * float(np.abs(flow).max()) ** 2)
    assert_backend_close(be.flow_tv(be.asarray(flow)), REF.flow_tv(flow), be, scale=scale)


@SETTINGS
@given(flow=flow_case())
def test_flow_tv_grad(backend, flow):
    be = _be(backend)
    scale = max(1.0, 32 * float(np.abs(flow).max()))  # 2 (8 |f| + 2 * 4 |f|)
    assert_backend_close(be.flow_tv_grad(be.asarray(flow)), REF.flow_tv_grad(flow), be, scale=scale)


@SETTINGS
@given(
    flow=flow_case(),
    eps=st.sampled_from([1e-8, 1e-3, 1.0]),
    neighborhood=st.sampled_from(["4", "diagonal", "8"]),
    padding=st.sampled_from(["zeros", "symmetric"]),
)
def test_stadv_flow_loss(backend, flow, eps, neighborhood, padding):
    be = _be(backend)
    values, grad = be.stadv_flow_loss(be.asarray(flow), eps, neighborhood, padding)
    v_ref, g_ref = REF.stadv_flow_loss(flow, eps, neighborhood, padding)
    n_pairs = 8 * flow[0, 0].size
    assert_backend_close(
        values, v_ref, be, scale=max(1.0, n_pairs * (2 * float(np.abs(flow).max()) + 1))
    )
    # each pair contributes a unit-bounded vector (diff / sqrt(|diff|^2 + eps)); at most 16 pairs per pixel
    assert_backend_close(grad, g_ref, be, scale=16.0)


@SETTINGS
@given(
    fields=flow_case(leading=st.sampled_from([(), (1,), (3,), (2, 2)])),
    p=st.sampled_from([1.0, 0.5, -0.5, -1.0, 2.0, -2.0]),
)
def test_smoothness_power(backend, fields, p):
    be = _be(backend)
    H, W = fields.shape[-2:]
    eig = stadv_ref.smoothness_operator(H, W).eigvals
    # ||L^p F||_max <= sqrt(HW) max(eig^p) ||F||_max; the eigen route rounds at that scale
    scale = max(1.0, np.sqrt(H * W) * float((eig**p).max()) * float(np.abs(fields).max()))
    out = be.smoothness_power(be.asarray(fields), p)
    assert_backend_close(out, REF.smoothness_power(fields, p), be, scale=scale)


# ---------------------------------------------------------------------------
# One-hidden-layer network
# ---------------------------------------------------------------------------
@st.composite
def net_case(draw):
    """Weights, inputs and class weights; integer-valued halves make ``Z = 0`` (ReLU kink) common."""
    dt = draw(dtypes)
    N, m, d, K = (draw(st.integers(1, n)) for n in (5, 6, 9, 4))
    vals = st.one_of(st.integers(-4, 4).map(lambda k: k / 2), st.floats(-2, 2, width=32))
    arr = lambda shape: draw(hnp.arrays(dt, shape, elements=vals))  # noqa: E731
    return arr((m, d)), arr((m,)), arr((K, m)), arr((K,)), arr((N, d)), arr((N, K))


def _net_scale(W, b, V, c, X):
    Z = np.abs(X) @ np.abs(W).T + np.abs(b)
    return max(1.0, float(Z.max()), float((Z @ np.abs(V).T + np.abs(c)).max()))


@SETTINGS
@given(case=net_case())
def test_net_forward(backend, case):
    be = _be(backend)
    W, b, V, c, X, _ = case
    Z, out = be.net_forward(*(be.asarray(a) for a in (W, b, V, c, X)))
    Z_ref, out_ref = REF.net_forward(W, b, V, c, X)
    scale = _net_scale(W, b, V, c, X)
    assert_backend_close(Z, Z_ref, be, scale=scale)
    assert_backend_close(out, out_ref, be, scale=scale)


@SETTINGS
@given(case=net_case())
def test_net_input_grad(backend, case):
    be = _be(backend)
    W, b, V, _, X, weights = case
    out = be.net_input_grad(*(be.asarray(a) for a in (W, b, V, X, weights)))
    scale = max(1.0, float(((np.abs(weights) @ np.abs(V)) @ np.abs(W)).max()))
    assert_backend_close(out, REF.net_input_grad(W, b, V, X, weights), be, scale=scale)


# ---------------------------------------------------------------------------
# Section 4.1 SDP kernels
# ---------------------------------------------------------------------------
def _unit_rows(rng, n, k, dtype):
    X = rng.standard_normal((n, k))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(dtype)


@SETTINGS
@given(
    m=st.integers(1, 12), d=st.integers(1, 12), k=st.integers(1, 5),
    dtype=dtypes, seed=st.integers(0, 2**32 - 1), zero_row=st.booleans(),
)
def test_sdp_mixing_fixed_iterations(backend, m, d, k, dtype, seed, zero_row):
    """``tol = -inf`` never stops early: exactly ``max_iter`` iterations, same factors."""
    be = _be(backend)
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, d)).astype(dtype)
    if zero_row:  # a zero row of A gives rows of norm 0, which keep their previous value
        A[0] = 0
    S, T = _unit_rows(rng, m, k, dtype), _unit_rows(rng, d, k, dtype)
    S0, T0 = S.copy(), T.copy()
    S1, T1, it = be.sdp_mixing(be.asarray(A), be.asarray(S), be.asarray(T), 7, -np.inf)
    S2, T2, it2 = REF.sdp_mixing(A, S, T, 7, -np.inf)
    assert it == it2 == 7
    # a few iterations of normalised products: the rounding of 7 steps
    tol = 1e3 * TOL[np.dtype(dtype)]
    assert_backend_close(S1, S2, be, rtol=tol, atol=tol)
    assert_backend_close(T1, T2, be, rtol=tol, atol=tol)
    np.testing.assert_array_equal(S, S0)  # inputs untouched
    np.testing.assert_array_equal(T, T0)


@SETTINGS
@given(m=st.integers(2, 15), d=st.integers(2, 15), seed=st.integers(0, 2**32 - 1))
def test_sdp_mixing_convergence_criterion(backend, m, d, seed):
    """With ``tol > 0`` both stop by the documented criterion, at the same iteration (float64)."""
    be = _be(backend)
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, d))
    k = 4
    S, T = _unit_rows(rng, m, k, np.float64), _unit_rows(rng, d, k, np.float64)
    S1, T1, it = be.sdp_mixing(be.asarray(A), be.asarray(S), be.asarray(T), 500, 1e-6)
    S2, T2, it2 = REF.sdp_mixing(A, S, T, 500, 1e-6)
    assert abs(it - it2) <= 1  # only a rounding tie at the threshold could move the stop
    phi = lambda T_, S_: np.linalg.norm(A.T @ S_, axis=1).sum()  # noqa: E731
    S1n, T1n = be.to_numpy(S1), be.to_numpy(T1)
    np.testing.assert_allclose(phi(T1n, S1n), phi(T2, S2), rtol=1e-5)
    if it == it2:
        assert_backend_close(S1, S2, be, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), shift=st.floats(-3, 3))
def test_lambda_max_upper(backend, n, seed, shift):
    """A guaranteed upper bound: never below the true top eigenvalue, and tight."""
    be = _be(backend)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n))
    S = (X + X.T) / 2 + shift * np.eye(n)
    lam = np.linalg.eigvalsh(S)[-1]
    u = float(be.lambda_max_upper(be.asarray(S)))
    scale = np.linalg.norm(S) + n * abs(lam)
    assert u >= lam - 1e-14 * scale  # eigvalsh itself is only accurate to O(u ||S||)
    assert u <= lam + 1e-8 * scale
    assert abs(u - REF.lambda_max_upper(S)) <= 1e-8 * scale


def test_lambda_max_upper_large_is_rigorous(backend):
    """Above the dense/Lanczos switch (n > 256) the bound is still above the true eigenvalue."""
    be = _be(backend)
    rng = np.random.default_rng(3)
    A = rng.standard_normal((60, 240)) / 10
    from stadv_ref.upper_bounds.sdp import bipartite_matrix

    P = bipartite_matrix(A)
    S = P - np.diag(0.5 * np.abs(P).sum(axis=1))
    lam = np.linalg.eigvalsh(S)[-1]
    u = float(be.lambda_max_upper(be.asarray(S)))
    scale = np.linalg.norm(S)
    assert lam - 1e-14 * scale <= u <= lam + 1e-8 * scale


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------
def test_numba_backend_is_lazy_and_reports_missing_numba():
    """``import stadv_ref`` never imports Numba; without Numba the backend fails with the install hint."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import stadv_ref\n"
        "assert 'numba' not in sys.modules, 'stadv_ref imported numba'\n"
        "sys.modules['numba'] = None  # simulate a missing Numba\n"
        "try:\n"
        "    stadv_ref.get_backend('numba')\n"
        "except stadv_ref.BackendError as exc:\n"
        "    from stadv_ref._install import install_hint\n"
        "    assert install_hint('numba') in str(exc), exc\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
