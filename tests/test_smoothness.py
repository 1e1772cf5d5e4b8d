"""Property tests of Eq. (2), Proposition 1 and the stAdv flow loss (stadv_ref.smoothness)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _checks import difference_quotient, dottest, fd_check
from _settings import SETTINGS, seeds
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import eigsh

from stadv_ref import (
    flow_tv,
    flow_tv_grad,
    neighbor_matrices,
    smoothness_matrix,
    smoothness_operator,
    stadv_flow_loss,
    tied,
)
from stadv_ref.smoothness import path_matrix

BE = "numpy"
sizes = st.integers(1, 8)
NEIGHBORHOODS = ("4", "diagonal", "8")
FLOW_PADDINGS = ("zeros", "symmetric")


# ---------------------------------------------------------------------------
# Neighbour matrices and L
# ---------------------------------------------------------------------------
@SETTINGS
@given(H=sizes, W=sizes)
def test_neighbor_matrices_are_one_hot_rows_of_existing_neighbours(H, W):
    mats = neighbor_matrices(H, W)
    assert mats._fields == ("top", "bottom", "left", "right")
    offsets = {"top": (-1, 0), "bottom": (1, 0), "left": (0, -1), "right": (0, 1)}
    for name, Mk in zip(mats._fields, mats):
        assert sp.issparse(Mk) and Mk.shape == (H * W, H * W)
        dense = Mk.toarray()
        dr, dc = offsets[name]
        want = np.zeros((H * W, H * W))
        for r in range(H):
            for c in range(W):
                if 0 <= r + dr < H and 0 <= c + dc < W:
                    want[r * W + c, (r + dr) * W + (c + dc)] = 1.0
        np.testing.assert_array_equal(dense, want)
    # top and bottom (left and right) are transposes of each other
    np.testing.assert_array_equal(mats.top.T.toarray(), mats.bottom.toarray())
    np.testing.assert_array_equal(mats.left.T.toarray(), mats.right.toarray())
    rng = np.random.default_rng(H * 100 + W)
    for A, AT in ((mats.top, mats.bottom), (mats.left, mats.right)):
        dottest(lambda x: A @ x, lambda y: AT @ y, (H * W,), (H * W,), rng, rtol=1e-12)


@SETTINGS
@given(H=sizes, W=sizes)
@example(H=1, W=1)
@example(H=1, W=6)
@example(H=6, W=1)
def test_L_is_sum_of_neighbour_terms_and_a_kronecker_sum(H, W):
    L = smoothness_matrix(H, W)
    assert sp.issparse(L) and L.shape == (H * W, H * W)
    I = np.eye(H * W)
    want = sum((I - Mk.toarray()).T @ (I - Mk.toarray()) for Mk in neighbor_matrices(H, W))
    np.testing.assert_allclose(L.toarray(), want, atol=0)
    kron = np.kron(path_matrix(H), np.eye(W)) + np.kron(np.eye(H), path_matrix(W))
    np.testing.assert_allclose(L.toarray(), kron, atol=0)
    # L = M^T M with M = the stacked (I - M(k)): the sparse L against M^T M applied term by term
    Isp = sp.identity(H * W, format="csr")
    D = [Isp - Mk for Mk in neighbor_matrices(H, W)]
    dottest(lambda x: L @ x, lambda y: sum(Dk.T @ (Dk @ y) for Dk in D), (H * W,), (H * W,),
            np.random.default_rng(H * 100 + W), rtol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_path_matrix_structure(n):
    A = path_matrix(n)
    assert A.shape == (n, n)
    if n == 1:
        np.testing.assert_array_equal(A, [[2.0]])
        return
    np.testing.assert_array_equal(np.diag(A), [3.0] + [4.0] * (n - 2) + [3.0])
    np.testing.assert_array_equal(np.diag(A, 1), -2.0)
    np.testing.assert_array_equal(np.diag(A, -1), -2.0)
    assert np.count_nonzero(A) == n + 2 * (n - 1)


@SETTINGS
@given(H=sizes, W=sizes)
def test_L_symmetric_positive_definite(H, W):
    L = smoothness_matrix(H, W).toarray()
    np.testing.assert_array_equal(L, L.T)
    lam = np.linalg.eigvalsh(L)
    assert lam.min() > 0
    # the Kronecker-sum spectrum of the fast operator is the same
    op = smoothness_operator(H, W)
    np.testing.assert_allclose(np.sort(op.eigvals.ravel()), lam, atol=1e-10)


def test_smallest_eigenvalue_at_28x28():
    """[E3]: L is positive definite, lambda_min about 0.041 at 28x28."""
    L = smoothness_matrix(28, 28).tocsc()
    lo = eigsh(L, k=1, sigma=0, which="LM", return_eigenvectors=False)[0]  # shift-invert: nearest 0
    hi = eigsh(L, k=1, which="LA", return_eigenvectors=False)[0]
    assert lo > 0
    assert lo == pytest.approx(0.041, abs=5e-4)
    assert smoothness_operator(28, 28).lambda_min == pytest.approx(lo, rel=1e-8)
    assert smoothness_operator(28, 28).lambda_max == pytest.approx(hi, rel=1e-8)
    # Kronecker sum on a square grid: lambda_min(L) = 2 lambda_min(A_28)
    assert lo == pytest.approx(2 * np.linalg.eigvalsh(path_matrix(28))[0], rel=1e-8)


# ---------------------------------------------------------------------------
# Eq. (2) and Proposition 1
# ---------------------------------------------------------------------------
def _tv_double_loop(flow):
    """Eq. (2) written out: sum over pixels and their 4 neighbours, zero flow outside."""
    N, _, H, W = flow.shape
    out = np.zeros(N)
    for n in range(N):
        for r in range(H):
            for c in range(W):
                for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    rr, cc = r + dr, c + dc
                    nb = flow[n, :, rr, cc] if (0 <= rr < H and 0 <= cc < W) else np.zeros(2)
                    out[n] += ((flow[n, :, r, c] - nb) ** 2).sum()
    return out


@SETTINGS
@given(seed=seeds, N=st.integers(1, 3), H=sizes, W=sizes)
@example(seed=0, N=1, H=1, W=7)
@example(seed=1, N=2, H=7, W=1)
@example(seed=2, N=1, H=1, W=1)
def test_proposition_1_tied(seed, N, H, W):
    """flow_tv(tied(r)) = 2 r^T L r (Proposition 1, [E2])."""
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(N, H, W))
    L = smoothness_matrix(H, W)
    want = np.array([2 * ri.ravel() @ (L @ ri.ravel()) for ri in r])
    got = flow_tv(tied(r), backend=BE)
    assert got.shape == (N,)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(seed=seeds, N=st.integers(1, 3), H=sizes, W=sizes)
@example(seed=0, N=1, H=1, W=5)
@example(seed=0, N=1, H=5, W=1)
def test_flow_tv_untied_quadratic_form_and_double_loop(seed, N, H, W):
    rng = np.random.default_rng(seed)
    flow = rng.normal(size=(N, 2, H, W))
    L = smoothness_matrix(H, W)
    q = lambda f: f.ravel() @ (L @ f.ravel())  # noqa: E731
    want = np.array([q(f[0]) + q(f[1]) for f in flow])
    got = flow_tv(flow, backend=BE)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if H * W <= 30:
        np.testing.assert_allclose(got, _tv_double_loop(flow), rtol=1e-12, atol=1e-12)


@SETTINGS
@given(seed=seeds, N=st.integers(1, 3), H=sizes, W=sizes)
def test_flow_tv_grad_matches_finite_differences(seed, N, H, W):
    rng = np.random.default_rng(seed)
    flow = rng.normal(size=(N, 2, H, W))
    g = flow_tv_grad(flow, backend=BE)
    assert g.shape == flow.shape
    L = smoothness_matrix(H, W)
    for n in range(N):
        for k in range(2):
            np.testing.assert_allclose(g[n, k].ravel(), 2 * L @ flow[n, k].ravel(), atol=1e-12)
    fd_check(lambda f: flow_tv(f, backend=BE), g, flow, rng, eps=1e-5, rtol=1e-6, atol=1e-6, batch=True)


@SETTINGS
@given(seed=seeds, N=st.integers(1, 3), H=sizes, W=sizes)
def test_flow_tv_grad_is_2L_dot_product_test(seed, N, H, W):
    """flow_tv_grad is the linear map 2 L (per flow component): <grad(x), y> = <x, 2 L y>."""
    rng = np.random.default_rng(seed)
    L = smoothness_matrix(H, W)
    two_L = lambda y: 2 * (y.reshape(-1, H * W) @ L.T).reshape(y.shape)  # noqa: E731
    dottest(lambda x: flow_tv_grad(x, backend=BE), two_L, (N, 2, H, W), (N, 2, H, W), rng, rtol=1e-12)


def test_flow_tv_float32():
    flow = np.random.default_rng(0).normal(size=(2, 2, 5, 6)).astype(np.float32)
    assert flow_tv(flow, backend=BE).dtype == np.float32
    assert flow_tv_grad(flow, backend=BE).dtype == np.float32
    np.testing.assert_allclose(flow_tv(flow, backend=BE), flow_tv(flow.astype(np.float64), backend=BE),
                               rtol=1e-5)


# ---------------------------------------------------------------------------
# The stAdv flow loss
# ---------------------------------------------------------------------------
_OFFSETS = {
    "4": ((-1, 0), (1, 0), (0, -1), (0, 1)),
    "diagonal": ((1, 1), (1, -1), (-1, 1), (-1, -1)),
}
_OFFSETS["8"] = _OFFSETS["4"] + _OFFSETS["diagonal"]


def _stadv_double_loop(flow, eps, neighborhood, padding):
    """L_flow written out: sum_p sum_{q in N(p)} sqrt(||flow_p - flow_q||^2 + eps).

    Outside the image the flow is 0 (``zeros``) or mirrored about the border
    including the edge pixel (``symmetric``: index -1 -> 0, index H -> H-1).
    """
    N, _, H, W = flow.shape
    out = np.zeros(N)
    for n in range(N):
        for r in range(H):
            for c in range(W):
                for dr, dc in _OFFSETS[neighborhood]:
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < H and 0 <= cc < W:
                        nb = flow[n, :, rr, cc]
                    elif padding == "zeros":
                        nb = np.zeros(2)
                    else:
                        nb = flow[n, :, min(max(rr, 0), H - 1), min(max(cc, 0), W - 1)]
                    out[n] += np.sqrt(((flow[n, :, r, c] - nb) ** 2).sum() + eps)
    return out


@SETTINGS
@given(seed=seeds, N=st.integers(1, 2), H=st.integers(1, 5), W=st.integers(1, 5),
       neighborhood=st.sampled_from(NEIGHBORHOODS), padding=st.sampled_from(FLOW_PADDINGS),
       eps=st.sampled_from([1e-8, 1e-3, 1.0]))
def test_stadv_flow_loss_value_matches_double_loop(seed, N, H, W, neighborhood, padding, eps):
    rng = np.random.default_rng(seed)
    flow = rng.normal(size=(N, 2, H, W))
    values, grad = stadv_flow_loss(flow, eps, neighborhood, padding, backend=BE)
    assert values.shape == (N,) and grad.shape == flow.shape
    np.testing.assert_allclose(values, _stadv_double_loop(flow, eps, neighborhood, padding), rtol=1e-12)


@pytest.mark.parametrize("neighborhood", NEIGHBORHOODS)
@pytest.mark.parametrize("padding", FLOW_PADDINGS)
@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=seeds, N=st.integers(1, 2), H=st.integers(1, 6), W=st.integers(1, 6),
       eps=st.sampled_from([1e-8, 1e-2]))
def test_stadv_flow_loss_gradient_matches_finite_differences(neighborhood, padding, seed, N, H, W, eps):
    rng = np.random.default_rng(seed)
    flow = rng.normal(size=(N, 2, H, W))
    _, grad = stadv_flow_loss(flow, eps, neighborhood, padding, backend=BE)
    h = 1e-6
    value = lambda f: stadv_flow_loss(f, eps, neighborhood, padding, backend=BE)[0]  # noqa: E731
    fd_check(value, grad, flow, rng, eps=h, rtol=1e-5, atol=1e-6, batch=True)
    # coordinate-wise on a few entries
    for _ in range(3):
        idx = tuple(int(rng.integers(s)) for s in flow.shape)
        e = np.zeros_like(flow)
        e[idx] = 1.0
        fd_i = difference_quotient(lambda t: value(flow + t * e)[idx[0]], -h, h)
        assert grad[idx] == pytest.approx(fd_i, rel=1e-5, abs=1e-6)


def test_stadv_flow_loss_default_is_paper_text_and_zero_flow():
    """Defaults: 4-neighbourhood, zero padding, eps = 1e-8; zero flow gives 4*d*sqrt(eps)."""
    H, W = 3, 4
    values, grad = stadv_flow_loss(np.zeros((1, 2, H, W)), backend=BE)
    assert values[0] == pytest.approx(4 * H * W * 1e-4)
    np.testing.assert_array_equal(grad, 0.0)
    flow = np.random.default_rng(1).normal(size=(1, 2, H, W))
    np.testing.assert_allclose(stadv_flow_loss(flow, backend=BE)[0],
                               _stadv_double_loop(flow, 1e-8, "4", "zeros"), rtol=1e-12)
