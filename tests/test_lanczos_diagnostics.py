"""Ritz histories and SLQ probe spreads against independent numpy references: explicit
matrices with known eigenvalues, a numpy Rayleigh–Ritz on the Krylov space, closed-form
moments of Rademacher probes and a finite-difference Hessian of the numpy loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import compute
from compute._lanczos_diagnostics import (
    _ritz_history_host,
    lanczos_ritz_history,
    ritz_history_from_matvec,
    slq_probe_spread,
    slq_spread_from_matvec,
)
from compute._limits import MAX_LANCZOS_STEPS, MAX_SLQ_PROBES
from tests.reference import fd_hessian, np_squared_loss


def _symmetric(rng, eigenvalues):
    n = len(eigenvalues)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.asarray(eigenvalues)) @ Q.T


def _history(A, v0, **kw):
    Aj = jnp.asarray(A)
    return ritz_history_from_matvec(lambda v: Aj @ v, v0, **kw)


def _krylov_rayleigh_ritz(A, v0, j):
    """Ritz values and residual norms ‖A y − θ y‖ of A on span{v0, A v0, …, A^{j−1} v0}:
    an orthonormal Krylov basis by numpy Arnoldi (Gram–Schmidt, twice), then eigh of QᵀAQ."""
    Q = np.zeros((A.shape[0], j))
    q = v0 / np.linalg.norm(v0)
    for i in range(j):
        Q[:, i] = q
        w = A @ q
        for _ in range(2):
            w -= Q[:, : i + 1] @ (Q[:, : i + 1].T @ w)
        q = w / np.linalg.norm(w)
    theta, S = np.linalg.eigh(Q.T @ A @ Q)
    Y = Q @ S
    return theta, np.linalg.norm(A @ Y - Y * theta, axis=0)


@pytest.fixture(scope="module")
def distinct():
    """A 30 × 30 matrix with known, well-spread eigenvalues and a Lanczos run of 30 steps."""
    rng = np.random.default_rng(11)
    lam = np.sort(np.r_[-4.0, rng.uniform(-2, 3, 28), 6.0])
    A = _symmetric(rng, lam)
    v0 = rng.standard_normal(30)
    return lam, A, v0, _history(A, v0, steps=30, k=3)


def test_full_krylov_space_gives_every_eigenvalue(distinct):
    lam, _, _, h = distinct
    assert h.ritz_values.shape == (30, 30) and h.extreme_values.shape == (30, 6)
    np.testing.assert_allclose(h.ritz_values[-1], lam, rtol=0, atol=1e-8 * 6)
    np.testing.assert_allclose(h.extreme_values[-1], np.r_[lam[:3], lam[-3:]], rtol=0,
                               atol=1e-8 * 6)


def test_each_step_is_rayleigh_ritz_on_the_krylov_space(distinct):
    _, A, v0, h = distinct
    for j in range(1, 31):
        theta, resid = _krylov_rayleigh_ritz(A, v0, j)
        row = h.ritz_values[j - 1]
        assert np.all(np.isfinite(row[:j])) and np.all(np.isnan(row[j:]))
        np.testing.assert_allclose(row[:j], theta, atol=1e-9)
        idx = [i if i < 3 else j - 6 + i for i in range(6)]
        ok = [0 <= i < j for i in idx]
        np.testing.assert_allclose(h.residual_bounds[j - 1, ok],
                                   resid[[i for i in idx if 0 <= i < j]], atol=1e-8)
        assert np.all(np.isnan(h.residual_bounds[j - 1, ~np.array(ok)]))


def test_ritz_values_interlace_between_steps(distinct):
    _, _, _, h = distinct
    tol = 1e-10 * h.scale
    for j in range(1, 30):
        a, b = h.ritz_values[j - 1, :j], h.ritz_values[j, : j + 1]
        assert np.all(np.diff(a) >= -tol)
        # Cauchy: θ_i^{(j+1)} ≤ θ_i^{(j)} ≤ θ_{i+1}^{(j+1)}
        assert np.all(b[:-1] <= a + tol) and np.all(a <= b[1:] + tol)
    # so the extreme Ritz values move outwards monotonically
    assert np.all(np.diff(h.extreme_values[:, 0]) <= tol)
    assert np.all(np.diff(h.extreme_values[:, -1]) >= -tol)


def test_residual_bounds_dominate_the_actual_error(distinct):
    lam, _, _, h = distinct
    ok = np.isfinite(h.extreme_values)
    err = np.min(np.abs(h.extreme_values[..., None] - lam), axis=-1)
    assert np.all(err[ok] <= h.residual_bounds[ok] + 1e-12 * h.scale)


def test_converged_at_is_the_first_step_under_the_tolerance():
    rng = np.random.default_rng(5)
    lam = np.sort(np.r_[-10.0, -9.0, rng.uniform(0, 1, 196), 11.0, 12.0])
    A = _symmetric(rng, lam)
    h = _history(A, rng.standard_normal(200), steps=40, k=2, tol=1e-8)
    at = h.converged_at
    assert at.shape == (4,) and np.all((at >= 1) & (at <= 40))
    refs = np.r_[lam[:2], lam[-2:]]
    for c, j in enumerate(at):
        theta, bound = h.extreme_values[:, c], h.residual_bounds[:, c]
        threshold = 1e-8 * np.maximum(np.abs(theta), 1e-6 * h.scale)
        assert bound[j - 1] <= threshold[j - 1]
        assert not np.any(bound[: j - 1] <= threshold[: j - 1])
        # converged where it says: the true eigenvalue is within the tolerance from then on
        assert np.all(np.abs(theta[j - 1:] - refs[c]) <= 1e-8 * abs(refs[c]) + 1e-12)
    # on the same tridiagonal T, a looser tolerance is met no later; an impossible one never
    loose = _ritz_history_host(h.alpha, h.beta, 2, 1e-3, 1e-6)
    assert np.all((loose.converged_at >= 1) & (loose.converged_at <= at))
    strict = _ritz_history_host(h.alpha[:8], h.beta[:8], 2, 1e-14, 1e-6)
    np.testing.assert_array_equal(strict.converged_at, -1)


def test_breakdown_gives_exact_eigenvalues_with_zero_bounds():
    rng = np.random.default_rng(2)
    A = _symmetric(rng, np.repeat([-2.0, 1.0, 5.0], 8))
    h = _history(A, rng.standard_normal(24), steps=6, k=1)
    assert h.beta[2] == 0.0  # the Krylov space of a generic start is invariant after 3 steps
    np.testing.assert_allclose(h.ritz_values[2, :3], [-2.0, 1.0, 5.0], atol=1e-10)
    np.testing.assert_array_equal(h.residual_bounds[2], 0.0)
    assert np.all(h.converged_at <= 3) and np.all(h.converged_at >= 1)


def test_zero_operator_converges_at_once():
    h = ritz_history_from_matvec(lambda v: 0.0 * v, np.ones(8), steps=4, k=1)
    np.testing.assert_array_equal(h.extreme_values, 0.0)
    np.testing.assert_array_equal(h.converged_at, [1, 1])


@pytest.fixture(scope="module")
def network():
    """A tanh MLP with biases (3-4-2, 26 parameters) and its finite-difference Hessian."""
    rng = np.random.default_rng(7)
    sizes = (3, 4, 2)
    spec = compute.make_model("mlp", 3, 2, (4,), activation="tanh", bias=True)
    X, Y = rng.standard_normal((12, 3)), rng.standard_normal((12, 2))
    theta = rng.standard_normal(spec.n_params) * 0.8
    H = fd_hessian(lambda t: np_squared_loss(t, sizes, X, Y, act="tanh", bias=True), theta,
                   h=1e-4)
    return compute.flat_objective(spec), theta, X, Y, H


def test_hessian_ritz_history_matches_finite_differences(network):
    obj, theta, X, Y, H = network
    n = theta.size
    lam = np.linalg.eigvalsh(H)
    h = lanczos_ritz_history(obj, theta, X, Y, steps=500, k=2, seed=3)
    assert h.steps == n  # capped at the Krylov space's size
    np.testing.assert_allclose(h.extreme_values[-1], np.r_[lam[:2], lam[-2:]],
                               atol=1e-6 * np.abs(lam).max())
    err = np.min(np.abs(h.extreme_values[..., None] - lam), axis=-1)
    ok = np.isfinite(err)
    assert np.all(err[ok] <= h.residual_bounds[ok] + 1e-6 * np.abs(lam).max())


def test_slq_of_diagonal_matrix_has_exact_moments_and_densities():
    # for diagonal A and Rademacher z: zᵀAz/n = tr A/n for every probe, weights all 1/n
    rng = np.random.default_rng(3)
    d = np.sort(rng.uniform(-3, 5, 20))
    A = jnp.asarray(np.diag(d))
    grid = np.linspace(-4, 6, 401)
    s = slq_spread_from_matvec(lambda v: A @ v, 20, probes=5, steps=20,
                               key=jax.random.PRNGKey(4), grid=grid, sigma=0.3)
    assert s.densities.shape == (5, 401) and s.moments.shape == (5, 2)
    np.testing.assert_allclose(s.moments, np.tile([d.mean(), (d**2).mean()], (5, 1)),
                               atol=1e-10)
    np.testing.assert_allclose(s.moment_stderr, 0.0, atol=1e-10)
    expected = np.exp(-0.5 * ((grid[:, None] - d) / 0.3) ** 2).sum(1) / (
        20 * 0.3 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(s.densities, np.tile(expected, (5, 1)), atol=1e-9)
    np.testing.assert_allclose(s.mean, expected, atol=1e-9)
    np.testing.assert_allclose(s.std, 0.0, atol=1e-9)


@pytest.fixture(scope="module")
def dense_spread():
    rng = np.random.default_rng(8)
    A = _symmetric(rng, rng.uniform(-1, 3, 60))
    Aj = jnp.asarray(A)
    return A, slq_spread_from_matvec(lambda v: Aj @ v, 60, probes=64, steps=12,
                                     key=jax.random.PRNGKey(9))


def test_slq_probe_densities_integrate_to_one_and_keep_their_moments(dense_spread):
    _, s = dense_spread
    assert s.probes == 64 and s.nodes.shape == (64, 12)
    np.testing.assert_allclose(np.trapezoid(s.densities, s.grid, axis=1), 1.0, atol=1e-6)
    # Gaussian smoothing keeps the mean and adds σ² to the second moment
    first = np.trapezoid(s.densities * s.grid, s.grid, axis=1)
    second = np.trapezoid(s.densities * s.grid**2, s.grid, axis=1)
    np.testing.assert_allclose(first, s.moments[:, 0], atol=1e-6)
    np.testing.assert_allclose(second, s.moments[:, 1] + s.sigma**2, atol=1e-5)
    np.testing.assert_allclose(s.mean, s.densities.mean(axis=0), atol=1e-12)
    assert np.all(s.lower <= s.mean + 1e-15) and np.all(s.mean <= s.upper + 1e-15)
    assert np.all(s.std <= s.upper - s.lower + 1e-15) and s.std.max() > 0


def test_slq_moments_agree_with_traces_within_standard_errors(dense_spread):
    A, s = dense_spread
    n, P = 60, 64
    A2 = A @ A
    # one Rademacher sample of zᵀBz/n has variance 2 Σ_{i≠j} B_ij² / n²
    sd = [np.sqrt(2 * (np.sum(B**2) - np.sum(np.diag(B) ** 2)) / P) / n for B in (A, A2)]
    assert abs(s.moment_mean[0] - np.trace(A) / n) < 3 * sd[0]
    assert abs(s.moment_mean[1] - np.trace(A2) / n) < 3 * sd[1]
    # the reported standard errors are the 1/√P ones (sample std of 64 probes: ± ~10%)
    np.testing.assert_allclose(s.moment_stderr, sd, rtol=0.35)
    # every probe's quadrature is a probability measure inside the spectrum
    lam = np.linalg.eigvalsh(A)
    np.testing.assert_allclose(s.weights.sum(axis=1), 1.0, atol=1e-12)
    assert np.all((s.moments[:, 0] >= lam[0] - 1e-12) & (s.moments[:, 0] <= lam[-1] + 1e-12))
    assert np.all(s.moments[:, 1] >= s.moments[:, 0] ** 2 - 1e-12)


def test_hessian_slq_spread_matches_finite_difference_trace(network):
    obj, theta, X, Y, H = network
    n = theta.size
    s = slq_probe_spread(obj, theta, X, Y, probes=16, steps=200, seed=1, grid=256)
    assert s.nodes.shape == (16, n) and s.grid.shape == (256,)  # steps capped at n
    sd = np.sqrt(2 * (np.sum(H**2) - np.sum(np.diag(H) ** 2)) / 16) / n
    assert abs(s.moment_mean[0] - np.trace(H) / n) < 3 * sd + 1e-6
    np.testing.assert_allclose(np.trapezoid(s.densities, s.grid, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    {"steps": 0}, {"steps": MAX_LANCZOS_STEPS + 1}, {"k": 0}, {"tol": -1.0},
    {"tol": float("nan")}, {"seed": -1},
])
def test_ritz_history_rejects_bad_options(network, kwargs):
    obj, theta, X, Y, _ = network
    with pytest.raises(compute.InputError):
        lanczos_ritz_history(obj, theta, X, Y, **{"steps": 5, **kwargs})


@pytest.mark.parametrize("kwargs", [
    {"probes": 0}, {"probes": MAX_SLQ_PROBES + 1}, {"steps": 0}, {"grid": 1},
    {"grid": np.zeros((3, 3))}, {"sigma": 0.0}, {"sigma": float("inf")},
])
def test_slq_spread_rejects_bad_options(network, kwargs):
    obj, theta, X, Y, _ = network
    with pytest.raises(compute.InputError):
        slq_probe_spread(obj, theta, X, Y, **{"probes": 2, "steps": 4, **kwargs})


def test_non_finite_operator_is_an_input_error():
    with pytest.raises(compute.InputError, match="not finite"):
        ritz_history_from_matvec(lambda v: v * jnp.nan, np.ones(5), steps=3)
    with pytest.raises(compute.InputError, match="steps"):
        ritz_history_from_matvec(lambda v: v, np.ones(5), steps=6)
