"""Shared numerical checks of the tests: dot-product (adjoint) tests and finite differences.

Like pylops' ``dottest``, every linear operator of the paper is checked against the
function that claims to be its adjoint, and every gradient against difference quotients
of the function it differentiates, with the same three helpers:

* :func:`dottest` -- ``<A x, y> = <x, A^T y>`` for random ``x``, ``y``;
* :func:`difference_quotient` -- ``(f(hi) - f(lo)) / (hi - lo)`` along a line
  (central differences for ``lo = -h, hi = h``, forward differences for ``lo = 0``);
* :func:`fd_check` -- a directional derivative ``<grad f(x), d>`` against the central
  difference quotient of ``f`` along ``d``.

Import them in any test module with ``from _checks import dottest, fd_check``
(``pythonpath = ["tests"]`` in ``pyproject.toml``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["dottest", "difference_quotient", "fd_check"]


def _as_numpy(a):
    """A result of an operator as a float64 NumPy array (device arrays through ``.get()``)."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        a = a.get()
    return np.asarray(a, dtype=np.float64)


def dottest(forward, adjoint, x_shape, y_shape, rng, rtol=1e-10, atol=None):
    """Dot-product test: ``<A x, y> = <x, A^T y>`` for ``x``, ``y`` drawn from ``rng``.

    Parameters
    ----------
    forward : callable
        ``x (x_shape) -> A x (y_shape)``.
    adjoint : callable
        ``y (y_shape) -> A^T y (x_shape)``.
    x_shape, y_shape : tuple of int
        Shapes of the domain and of the range.
    rng : numpy.random.Generator
        ``x`` then ``y`` are drawn as standard normal arrays.
    rtol, atol : float
        Passes when ``|<A x, y> - <x, A^T y>| <= atol + rtol * max(|<A x, y>|, |<x, A^T y>|)``;
        ``atol`` defaults to ``rtol``.

    Returns
    -------
    x, y : ndarray
        The vectors the test used (for further checks by the caller).
    """
    x = rng.standard_normal(x_shape)
    y = rng.standard_normal(y_shape)
    Ax = _as_numpy(forward(x))
    ATy = _as_numpy(adjoint(y))
    assert Ax.shape == tuple(y_shape), f"A x has shape {Ax.shape}, expected {tuple(y_shape)}"
    assert ATy.shape == tuple(x_shape), f"A^T y has shape {ATy.shape}, expected {tuple(x_shape)}"
    lhs, rhs = float(np.vdot(Ax, y)), float(np.vdot(x, ATy))
    tol = (rtol if atol is None else atol) + rtol * max(abs(lhs), abs(rhs))
    assert abs(lhs - rhs) <= tol, f"dot-product test failed: <A x, y> = {lhs!r}, <x, A^T y> = {rhs!r}"
    return x, y


def difference_quotient(f, lo, hi):
    """``(f(hi) - f(lo)) / (hi - lo)`` for a function ``f`` of a scalar step (arrays allowed)."""
    return (f(hi) - f(lo)) / (hi - lo)


def fd_check(f, grad, x, rng=None, eps=1e-6, rtol=1e-6, atol=1e-6, direction=None, batch=False):
    """Directional finite-difference check of a gradient.

    Compares ``<grad, d>`` with ``(f(x + eps d) - f(x - eps d)) / (2 eps)``.

    Parameters
    ----------
    f : callable
        ``x -> value``: a scalar, or with ``batch`` one value per leading index of ``x``.
    grad : ndarray, shape of ``x``
        The gradient to check, at ``x``.
    x : ndarray
    rng : numpy.random.Generator, optional
        Draws the direction ``d`` (standard normal) unless ``direction`` is given.
    eps : float
        Step of the central difference.
    rtol, atol : float
        Tolerances of :func:`numpy.testing.assert_allclose` (``actual = <grad, d>``).
    direction : ndarray, optional
        The direction ``d``.
    batch : bool
        The leading axis of ``x`` indexes independent problems: ``<grad, d>`` is summed over
        the other axes and compared with ``f``'s vector of values.

    Returns
    -------
    d : ndarray
        The direction used.
    """
    x = np.asarray(x, dtype=np.float64)
    d = rng.standard_normal(x.shape) if direction is None else np.asarray(direction, dtype=np.float64)
    grad = _as_numpy(grad)
    assert grad.shape == x.shape, f"gradient shape {grad.shape} != x shape {x.shape}"
    fd = _as_numpy(difference_quotient(lambda s: _as_numpy(f(x + s * d)), -eps, eps))
    if batch:
        an = (grad * d).reshape(x.shape[0], -1).sum(axis=1)
    else:
        an = np.asarray(float(np.vdot(grad, d)))
    np.testing.assert_allclose(an, fd, rtol=rtol, atol=atol, err_msg="directional derivative vs central differences")
    return d
