"""Property tests of Eq. (3) and Proposition 2: M = L^(1/2), its powers, AABB radii (stadv_ref.operators)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from _checks import dottest
from _settings import SETTINGS, seeds
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stadv_ref import (
    SmoothnessOperator,
    aabb_radii,
    dense_smoothness_power,
    m_power,
    smoothness_matrix,
    smoothness_norm,
    smoothness_operator,
)
from stadv_ref.operators import M_POWERS

BE = "numpy"
sizes = st.integers(1, 6)


def _explicit_power(H, W, p):
    """L^p from the sparse L by scipy.linalg.sqrtm / inv / matrix products (no eigh)."""
    L = smoothness_matrix(H, W).toarray()
    M = np.real(scipy.linalg.sqrtm(L))
    table = {
        0.5: M,
        -0.5: np.linalg.inv(M),
        1.0: L,
        -1.0: np.linalg.inv(L),
        2.0: L @ L,
        -2.0: np.linalg.inv(L @ L),
    }
    return table[p]


@pytest.mark.parametrize("k", M_POWERS)
@settings(max_examples=15, deadline=None, derandomize=True)
@given(H=sizes, W=sizes)
@example(H=1, W=1)
@example(H=1, W=5)
@example(H=5, W=1)
def test_dense_power_matches_explicit_sqrtm_and_inverse(k, H, W):
    p = k / 2
    D = dense_smoothness_power(H, W, p)
    E = _explicit_power(H, W, p)
    np.testing.assert_allclose(D, E, atol=1e-9 * max(1.0, np.abs(E).max()))


@pytest.mark.parametrize("k", M_POWERS)
@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=seeds, N=st.integers(1, 3), H=sizes, W=sizes, untied=st.booleans())
@example(seed=0, N=1, H=1, W=6, untied=False)
@example(seed=0, N=2, H=6, W=1, untied=True)
def test_m_power_matches_dense(k, seed, N, H, W, untied):
    rng = np.random.default_rng(seed)
    shape = (N, 2, H, W) if untied else (N, H, W)
    f = rng.normal(size=shape)
    got = m_power(f, k, backend=BE)
    assert got.shape == shape and got.dtype == np.float64
    D = dense_smoothness_power(H, W, k / 2)
    want = (f.reshape(-1, H * W) @ D.T).reshape(shape)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(want).max()))


@SETTINGS
@given(seed=seeds, H=sizes, W=sizes, k=st.sampled_from(M_POWERS))
def test_m_powers_are_symmetric_adjoint_test(seed, H, W, k):
    """M^k is symmetric: <M^k a, b> = <a, M^k b> ([E4]: M^-1 = M^-T); its adjoint is the dense L^(k/2)."""
    rng = np.random.default_rng(seed)
    mp = lambda a: m_power(a, k, backend=BE)  # noqa: E731
    dottest(mp, mp, (1, H, W), (1, H, W), rng, rtol=1e-10)
    D = dense_smoothness_power(H, W, k / 2)
    dottest(mp, lambda b: (b.reshape(-1, H * W) @ D).reshape(b.shape), (2, H, W), (2, H, W), rng, rtol=1e-9)


@SETTINGS
@given(seed=seeds, N=st.integers(1, 3), H=st.integers(1, 12), W=st.integers(1, 12))
def test_m_power_algebra(seed, N, H, W):
    """M M = L (the sparse L), M^-1 M = I, L^-1 L = I, M^2 M^-2 = I, (M^2)^2 = M^4."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(N, H, W))
    L = smoothness_matrix(H, W)
    Lf = np.stack([(L @ fi.ravel()).reshape(H, W) for fi in f])
    mp = lambda a, k: m_power(a, k, backend=BE)  # noqa: E731
    np.testing.assert_allclose(mp(mp(f, 1), 1), Lf, atol=1e-10)
    np.testing.assert_allclose(mp(f, 2), Lf, atol=1e-10)
    np.testing.assert_allclose(mp(mp(f, 1), -1), f, atol=1e-10)
    np.testing.assert_allclose(mp(mp(f, -1), 1), f, atol=1e-10)
    np.testing.assert_allclose(mp(mp(f, 2), -2), f, atol=1e-9)
    np.testing.assert_allclose(mp(mp(f, 2), 2), mp(f, 4), atol=1e-9)
    np.testing.assert_allclose(mp(mp(f, -2), -2), mp(f, -4), rtol=1e-9, atol=1e-9)


@SETTINGS
@given(seed=seeds, N=st.integers(1, 3), H=sizes, W=sizes)
def test_smoothness_norm_squared_is_quadratic_form(seed, N, H, W):
    rng = np.random.default_rng(seed)
    L = smoothness_matrix(H, W)
    q = lambda a: a.ravel() @ (L @ a.ravel())  # noqa: E731
    r = rng.normal(size=(N, H, W))
    np.testing.assert_allclose(smoothness_norm(r, backend=BE) ** 2, [q(ri) for ri in r], rtol=1e-10)
    flow = rng.normal(size=(N, 2, H, W))
    np.testing.assert_allclose(smoothness_norm(flow, backend=BE) ** 2,
                               [q(fl[0]) + q(fl[1]) for fl in flow], rtol=1e-10)
    # ||M r|| computed through M itself
    np.testing.assert_allclose(smoothness_norm(r, backend=BE),
                               np.linalg.norm(m_power(r, 1, backend=BE).reshape(N, -1), axis=1), rtol=1e-10)


@SETTINGS
@given(H=sizes, W=sizes, eps=st.floats(0, 10))
@example(H=1, W=1, eps=1.0)
def test_aabb_radii_match_direct_computation(H, W, eps):
    """Prop. 2 ([E11]): eps * sqrt(diag(inv(L))), linear in eps."""
    Linv = np.linalg.inv(smoothness_matrix(H, W).toarray())
    want = np.sqrt(np.diag(Linv)).reshape(H, W)
    np.testing.assert_allclose(aabb_radii(H, W), want, rtol=1e-10)
    np.testing.assert_allclose(aabb_radii(H, W, eps), eps * want, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(smoothness_operator(H, W).diag(-1.0).ravel(), np.diag(Linv), rtol=1e-10)


@SETTINGS
@given(H=sizes, W=sizes, eps=st.floats(0.01, 10), seed=seeds)
def test_aabb_box_is_attained_and_contains_the_ellipsoid(H, W, eps, seed):
    """r = eps L^-1 e_i / sqrt((L^-1)_ii) has ||M r|| = eps and r_i = eps lambda_i;
    every r with ||M r|| = eps satisfies |r_j| <= eps lambda_j."""
    rng = np.random.default_rng(seed)
    lam = aabb_radii(H, W)
    i = (int(rng.integers(H)), int(rng.integers(W)))
    e = np.zeros((1, H, W))
    e[(0,) + i] = 1.0
    Linv_e = m_power(e, -2, backend=BE)
    r = eps * Linv_e / np.sqrt(Linv_e[(0,) + i])
    assert smoothness_norm(r, backend=BE)[0] == pytest.approx(eps, rel=1e-10)
    assert r[(0,) + i] == pytest.approx(eps * lam[i], rel=1e-10)
    # random directions scaled to the budget never leave the box
    s = rng.normal(size=(20, H, W))
    s *= eps / smoothness_norm(s, backend=BE)[:, None, None]
    assert np.all(np.abs(s) <= eps * lam[None] * (1 + 1e-10))


def test_m_power_224x224():
    """The fast operator handles 224x224 (d = 50176) without a dense d x d matrix."""
    f = np.random.default_rng(0).normal(size=(2, 224, 224))
    back = m_power(m_power(f, 1, backend=BE), -1, backend=BE)
    np.testing.assert_allclose(back, f, atol=1e-9)
    lam = aabb_radii(224, 224)
    assert lam.shape == (224, 224) and np.all(np.isfinite(lam)) and np.all(lam > 0)
    # symmetric under the grid's reflections, largest at the centre, smallest in the corners
    np.testing.assert_allclose(lam, lam[::-1], rtol=1e-10)
    np.testing.assert_allclose(lam, lam.T, rtol=1e-10)
    assert lam[112, 112] > lam[0, 0]


def test_operator_float32_stays_float32():
    f = np.random.default_rng(1).normal(size=(2, 5, 7)).astype(np.float32)
    for k in M_POWERS:
        out = m_power(f, k, backend=BE)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, m_power(f.astype(np.float64), k, backend=BE), rtol=1e-3, atol=1e-3)


def test_smoothness_operator_is_cached_and_matches_class():
    assert smoothness_operator(5, 7) is smoothness_operator(5, 7)
    op = SmoothnessOperator(5, 7)
    f = np.random.default_rng(2).normal(size=(5, 7))
    np.testing.assert_allclose(op.apply(f, 0.5), m_power(f[None], 1, backend=BE)[0], atol=1e-12)
    np.testing.assert_allclose(op.diag(1.0), np.diag(smoothness_matrix(5, 7).toarray()).reshape(5, 7),
                               atol=1e-12)


@pytest.mark.parametrize("k", [0, 3, 0.5, -1.5, float("nan")])
def test_m_power_rejects_other_powers(k):
    with pytest.raises(ValueError, match="k"):
        m_power(np.ones((1, 3, 3)), k, backend=BE)


def test_dense_power_refuses_large_grids():
    with pytest.raises(ValueError, match="small grids"):
        dense_smoothness_power(100, 100, 0.5)
