"""Lanczos, SLQ and Hutchinson on explicit matrices, against numpy's eigh and closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import compute  # noqa: F401  (enables float64)
from compute._lanczos import (
    gaussian_density,
    hutchinson_trace,
    lanczos_extremes,
    lanczos_extremes_converged,
    lanczos_iterate,
    lanczos_start,
    slq_quadrature,
)


def _symmetric(rng, eigenvalues):
    n = len(eigenvalues)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.asarray(eigenvalues)) @ Q.T


@jax.jit
def _matvec_extremes(A, v0, k_steps):
    return lanczos_extremes(lambda x: A @ x, v0, k=k_steps.shape[0], steps=k_steps.shape[1])


def _extremes(A, k, steps, seed=0):
    v0 = np.random.default_rng(seed).standard_normal(A.shape[0])
    return _matvec_extremes(jnp.asarray(A), jnp.asarray(v0), jnp.zeros((k, steps)))


def test_extreme_ritz_pairs_match_eigh(rng):
    lam = np.concatenate([[-7.0, -5.5, -4.0], rng.uniform(-2, 3, 194), [6.0, 8.0, 9.5]])
    A = _symmetric(rng, lam)
    res = _extremes(A, k=3, steps=120)
    ref = np.sort(np.linalg.eigvalsh(A))
    got = np.asarray(res.eigenvalues)
    np.testing.assert_allclose(got, np.r_[ref[:3], ref[-3:]], rtol=0, atol=1e-9 * 9.5)
    Y = np.asarray(res.eigenvectors)
    actual = np.linalg.norm(A @ Y - Y * got, axis=0)
    assert np.all(actual <= 1e-7 * 9.5)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=0), 1.0, atol=1e-10)
    # the Lanczos residual bound is the actual residual (full reorthogonalisation)
    np.testing.assert_allclose(np.asarray(res.residuals), actual, atol=1e-9)


def test_full_krylov_space_gives_every_eigenvalue(rng):
    lam = rng.standard_normal(40)
    A = _symmetric(rng, lam)
    res = _extremes(A, k=20, steps=40)
    np.testing.assert_allclose(np.asarray(res.eigenvalues), np.sort(lam), atol=1e-10)


def test_breakdown_restarts_and_finds_repeated_eigenvalues(rng):
    # 3 distinct eigenvalues: the Krylov space is invariant after 3 steps, 12 steps restart
    lam = np.repeat([-2.0, 1.0, 5.0], 10)
    A = _symmetric(rng, lam)
    res = _extremes(A, k=6, steps=12)
    got = np.asarray(res.eigenvalues)
    assert np.all(np.isfinite(got))
    nearest = np.min(np.abs(got[:, None] - np.array([-2.0, 1.0, 5.0])[None]), axis=1)
    assert np.all(nearest < 1e-9)
    assert np.sum(np.abs(got + 2) < 1e-9) >= 2 and np.sum(np.abs(got - 5) < 1e-9) >= 2
    Y = np.asarray(res.eigenvectors)
    np.testing.assert_allclose(Y.T @ Y, np.eye(12), atol=1e-8)


def test_zero_operator_is_handled():
    res = _extremes(np.zeros((10, 10)), k=2, steps=6)
    np.testing.assert_array_equal(np.asarray(res.eigenvalues), 0.0)
    assert np.all(np.isfinite(np.asarray(res.eigenvectors)))


@pytest.mark.parametrize("solver", [
    lambda mv, v0: lanczos_extremes(mv, v0, k=1, steps=30),
    lambda mv, v0: lanczos_extremes_converged(mv, v0, k=1, max_steps=30),
], ids=["fixed_steps", "converged"])
def test_lanczos_traces_inside_scan(rng, solver):
    A = jnp.asarray(_symmetric(rng, np.linspace(-1, 2, 30)))
    v0 = jnp.ones(30) / np.sqrt(30)

    def step(carry, c):
        return carry, solver(lambda x: c * (A @ x), v0).eigenvalues

    _, out = jax.lax.scan(step, 0.0, jnp.array([1.0, 2.0, -1.0]))
    np.testing.assert_allclose(np.asarray(out), [[-1, 2], [-2, 4], [-2, 1]], atol=1e-9)


def test_slq_of_diagonal_matrix_is_exact_smoothed_density(rng):
    # for diagonal A and Rademacher probes every weight is exactly 1/n
    lam = np.sort(rng.uniform(-3, 5, 25))
    A = jnp.asarray(np.diag(lam))
    nodes, weights = slq_quadrature(lambda v: A @ v, 25, probes=3, steps=25,
                                    key=jax.random.PRNGKey(0))
    grid = np.linspace(-4, 6, 301)
    t, density = gaussian_density(nodes, weights, sigma=0.2, grid=grid)
    expected = np.exp(-0.5 * ((grid[:, None] - lam[None]) / 0.2) ** 2).sum(1) / (
        25 * 0.2 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(density, expected, atol=1e-9)


def test_gaussian_density_integrates_to_one(rng):
    nodes = rng.uniform(-1, 4, (4, 30))
    weights = rng.dirichlet(np.ones(30), size=4)
    t, values = gaussian_density(nodes, weights)
    assert abs(np.trapezoid(values, t) - 1.0) < 1e-6


def test_hutchinson_within_its_standard_error(rng):
    A = _symmetric(rng, rng.standard_normal(60)) + np.diag(rng.uniform(0, 1, 60))
    probes = 400
    est, err = hutchinson_trace(lambda v: jnp.asarray(A) @ v, 60, probes=probes,
                                key=jax.random.PRNGKey(3))
    off = A - np.diag(np.diag(A))
    sd = np.sqrt(2 * np.sum(off**2) / probes)  # Rademacher variance 2 Σ_{i≠j} A_ij²
    assert abs(float(est) - np.trace(A)) < 4 * sd
    assert 0.5 * sd < float(err) < 2 * sd


def test_lanczos_rejects_impossible_sizes():
    with pytest.raises(ValueError):
        lanczos_extremes(lambda v: v, jnp.ones(5), k=3, steps=5)


def test_basis_stays_orthonormal_over_many_steps(rng):
    # a spread-out spectrum makes plain Lanczos lose orthogonality within a few dozen steps;
    # the reorthogonalisation (second pass only when needed) must keep VᵀV = I
    lam = np.concatenate([np.geomspace(1e-3, 1e4, 150), -np.geomspace(1e-2, 1e2, 50)])
    A = jnp.asarray(_symmetric(rng, lam))
    state = jax.jit(lambda A, v: lanczos_iterate(lambda x: A @ x, lanczos_start(v, 160), 0,
                                                 160))(A, jnp.asarray(rng.standard_normal(200)))
    V = np.asarray(state.basis[:160])
    assert np.max(np.abs(V @ V.T - np.eye(160))) < 1e-12


@jax.jit
def _converged(A, v0, shape, tol, rtol):
    k, max_steps = shape.shape
    return lanczos_extremes_converged(lambda x: A @ x, v0, k=k, max_steps=max_steps, tol=tol,
                                      rtol=rtol, check_every=3)


def _run_converged(A, k, max_steps, tol=1e-10, rtol=0.0, seed=0):
    v0 = np.random.default_rng(seed).standard_normal(A.shape[0])
    return _converged(jnp.asarray(A), jnp.asarray(v0), jnp.zeros((k, max_steps)), tol, rtol)


def test_converged_extremes_meet_their_error_estimates(rng):
    lam = np.concatenate([[-7.0, -5.5, -5.4, -4.0], rng.uniform(-2, 3, 292), [6.0, 8.0, 9.5,
                                                                            9.6]])
    A = _symmetric(rng, lam)
    res = _run_converged(A, k=4, max_steps=200, tol=1e-10)
    ref = np.sort(np.linalg.eigvalsh(A))
    got = np.asarray(res.eigenvalues)
    assert bool(res.converged) and 8 <= int(res.steps) < 200
    errors = np.asarray(res.errors)
    assert np.all(errors <= 1e-10 * 9.6)
    np.testing.assert_array_less(np.abs(got - np.r_[ref[:4], ref[-4:]]), errors + 1e-13)
    Y = np.asarray(res.eigenvectors)
    actual = np.linalg.norm(A @ Y - Y * got, axis=0)
    np.testing.assert_allclose(np.asarray(res.residuals), actual, atol=1e-9)
    np.testing.assert_allclose(Y.T @ Y, np.eye(8), atol=1e-8)
    # nothing was computed beyond the steps it took
    steps = int(res.steps)
    assert np.all(np.asarray(res.alpha)[steps:] == 0)


def test_converged_relative_tolerance_is_per_eigenvalue(rng):
    # eigenvalues of very different size at the two ends: rtol asks each for 1e-8 of itself
    lam = np.concatenate([[-1e-3, -9e-4], rng.uniform(0.01, 0.5, 120), [40.0, 50.0]])
    A = _symmetric(rng, lam)
    res = _run_converged(A, k=2, max_steps=124, tol=0.0, rtol=1e-8)
    got = np.asarray(res.eigenvalues)
    assert bool(res.converged)
    np.testing.assert_allclose(got, [-1e-3, -9e-4, 40.0, 50.0], rtol=1e-8)
    assert np.all(np.asarray(res.errors) <= 1e-8 * np.abs(got))


def test_converged_stops_at_max_steps_when_tolerance_is_unreachable(rng):
    A = _symmetric(rng, rng.uniform(-1, 1, 80))
    res = _run_converged(A, k=2, max_steps=20, tol=0.0)
    assert not bool(res.converged) and int(res.steps) == 20
    ref = np.sort(np.linalg.eigvalsh(A))
    got = np.asarray(res.eigenvalues)
    assert got[0] >= ref[0] - 1e-12 and got[-1] <= ref[-1] + 1e-12   # Ritz values: inner


def test_converged_with_breakdown_and_repeated_eigenvalues(rng):
    lam = np.repeat([-2.0, 1.0, 5.0], 10)
    A = _symmetric(rng, lam)
    res = _run_converged(A, k=6, max_steps=24)
    got = np.asarray(res.eigenvalues)
    assert bool(res.converged) and np.all(np.isfinite(got))
    assert np.all(np.min(np.abs(got[:, None] - np.array([-2.0, 1.0, 5.0])), axis=1) < 1e-9)
    Y = np.asarray(res.eigenvectors)
    np.testing.assert_allclose(Y.T @ Y, np.eye(12), atol=1e-8)
    np.testing.assert_allclose(A @ Y, Y * got, atol=1e-8)


def test_converged_zero_operator():
    res = _run_converged(np.zeros((10, 10)), k=2, max_steps=6)
    np.testing.assert_array_equal(np.asarray(res.eigenvalues), 0.0)
    assert bool(res.converged)
    Y = np.asarray(res.eigenvectors)
    np.testing.assert_allclose(Y.T @ Y, np.eye(4), atol=1e-12)


def test_converged_rejects_impossible_sizes():
    with pytest.raises(ValueError):
        lanczos_extremes_converged(lambda v: v, jnp.ones(5), k=3, max_steps=5)
    with pytest.raises(ValueError):
        lanczos_extremes_converged(lambda v: v, jnp.ones(5), k=1, max_steps=4, check_every=0)
