"""Tests of :func:`stadv_ref.attacks.flow_pgd.flow_pgd_attack`'s options: caller-given starts and the schedule.

The soundness tests of the upper bounds (``tests/upper_bounds``) use the attack with its defaults;
these tests cover ``x_starts``, ``r_starts`` and ``schedule`` (used by the audit) and their validation.
"""
from __future__ import annotations

import numpy as np
import pytest

import stadv_ref
from stadv_ref.attacks import SCHEDULES, flow_pgd_attack

H = W = 6


def _net(seed=0, m=8):
    rng = np.random.default_rng(seed)
    return stadv_ref.OneHiddenLayerNet(rng.standard_normal((m, H * W)) / 6, rng.standard_normal(m),
                                       image_shape=(H, W))


def _feasible_flow(rng, eps, tied):
    r = stadv_ref.m_power(rng.standard_normal((1, H, W) if tied else (1, 2, H, W)), -1)
    return 0.8 * eps * r / np.sqrt(np.sum(r * stadv_ref.m_power(r, 2)))


def _budget(flow):
    return float(np.sqrt(np.sum(flow * stadv_ref.m_power(flow[None], 2)[0])))


@pytest.mark.parametrize("tied", [True, False])
def test_r_starts_are_used_as_starts(tied):
    net, eps = _net(), 0.6
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (H, W))
    r0 = _feasible_flow(rng, eps, tied)
    start = float(stadv_ref.adv_loss_exact(net, x, stadv_ref.tied(r0) if tied else r0)[0])
    res = flow_pgd_attack(net, eps, x=x, tied=tied, restarts=2, steps=1, r_starts=r0, seed=5)
    assert res.values[0] >= start - 1e-12  # restart 0 started from r0 and keeps its best value
    assert res.value >= start - 1e-12
    assert res.budget <= eps * (1 + 1e-9)


def test_x_starts_are_used_as_starts():
    net, eps = _net(1), 0.5
    rng = np.random.default_rng(4)
    x0 = (rng.random((2, H, W)) < 0.5).astype(float)
    r0 = np.concatenate([_feasible_flow(rng, eps, True) for _ in range(2)])
    start = stadv_ref.adv_loss_exact(net, x0, stadv_ref.tied(r0))
    res = flow_pgd_attack(net, eps, restarts=3, steps=1, x_starts=x0, r_starts=r0, seed=0)
    assert np.all(res.values[:2] >= start - 1e-12)
    assert res.value >= start.max() - 1e-12


def test_r_starts_outside_the_budget_are_projected():
    net, eps = _net(2), 0.4
    r0 = 10 * _feasible_flow(np.random.default_rng(0), eps, False)
    res = flow_pgd_attack(net, eps, tied=False, restarts=1, steps=3, r_starts=r0)
    assert res.budget <= eps * (1 + 1e-9)


@pytest.mark.parametrize("tied", [True, False])
def test_cosine_schedule_stays_feasible_and_reports_its_true_value(tied):
    net, eps = _net(5), 0.7
    cos = flow_pgd_attack(net, eps, tied=tied, restarts=4, steps=30, schedule="cosine", seed=2)
    lin = flow_pgd_attack(net, eps, tied=tied, restarts=4, steps=30, seed=2)
    assert set(SCHEDULES) == {"linear", "cosine"}
    assert cos.budget <= eps * (1 + 1e-9) and _budget(cos.flow) <= eps * (1 + 1e-9)
    assert 0 <= cos.x.min() and cos.x.max() <= 1
    flow = stadv_ref.tied(cos.flow[None]) if tied else cos.flow[None]
    assert cos.value == pytest.approx(float(stadv_ref.adv_loss_exact(net, cos.x, flow)[0]), abs=1e-12)
    assert cos.value > 0
    assert not np.array_equal(cos.values, lin.values)  # the schedule is used


def test_defaults_equal_the_explicit_linear_schedule():
    net = _net(6)
    a = flow_pgd_attack(net, 0.5, restarts=4, steps=20, seed=1)
    b = flow_pgd_attack(net, 0.5, restarts=4, steps=20, seed=1, schedule="linear", x_starts=None, r_starts=None)
    assert a.value == b.value and np.array_equal(a.flow, b.flow) and np.array_equal(a.x, b.x)


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(schedule="exp"), ValueError, "schedule"),
    (dict(step_size="big"), TypeError, "step_size"),
    (dict(step_size=-0.1), ValueError, "step_size"),
    (dict(x_starts=np.zeros((2, H, W)), x=np.zeros((H, W))), ValueError, "x_starts"),
    (dict(x_starts=np.zeros((2, H + 1, W))), ValueError, "x_starts"),
    (dict(x_starts=np.full((1, H, W), 2.0)), ValueError, "x_starts"),
    (dict(x_starts=np.zeros((5, H, W))), ValueError, "x_starts"),
    (dict(x_starts=np.array([["a"] * W] * H)), TypeError, "x_starts"),
    (dict(r_starts=np.zeros((1, 2, H, W))), ValueError, "r_starts"),  # untied shape for a tied attack
    (dict(r_starts=np.zeros((1, H, W)), tied=False), ValueError, "r_starts"),
    (dict(r_starts=np.full((1, H, W), np.nan)), ValueError, "r_starts"),
    (dict(x=np.float64(0.5)), ValueError, "x"),  # used to give numpy's 'cannot reshape'
    (dict(x=np.zeros((H + 1, W))), ValueError, "x"),
    (dict(x=np.zeros(H * W)), ValueError, "x"),
    (dict(x=np.zeros((1, H, W))), ValueError, "x"),
    (dict(x=np.full((H, W), 2.0)), ValueError, "x must lie in input_range"),
    (dict(seed=-1), ValueError, "seed"),  # used to give numpy's SeedSequence errors
    (dict(seed=1.5), TypeError, "seed"),
])
def test_new_arguments_are_validated(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        flow_pgd_attack(_net(), 0.5, restarts=4, steps=2, **kwargs)
