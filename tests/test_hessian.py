"""Hessian products, matrices and spectra against finite differences and numpy's eigh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import compute
from compute import InputError
from compute._hessian import (
    extreme_eigenvalues,
    hessian_matrix,
    hessian_plane_directions,
    hessian_spectrum,
    hessian_trace_hutchinson,
    hessian_vector_product,
)
from compute._limits import MAX_PARAMS_EXACT_HESSIAN
from tests.reference import np_squared_loss


def _np_tanh_mlp_loss(theta, X, Y, sizes):
    """(1/2m) ‖f(X) − Y‖² of a tanh MLP with biases, in numpy."""
    return np_squared_loss(theta, sizes, X, Y, act="tanh", bias=True)


@pytest.fixture(scope="module")
def tanh_problem():
    rng = np.random.default_rng(7)
    sizes = (3, 4, 2)
    spec = compute.make_model("mlp", 3, 2, (4,), activation="tanh", bias=True)
    X = rng.standard_normal((12, 3))
    Y = rng.standard_normal((12, 2))
    theta = rng.standard_normal(spec.n_params) * 0.8
    return spec, sizes, compute.flat_objective(spec), theta, X, Y


def test_hvp_matches_central_differences_of_the_gradient(tanh_problem):
    spec, _, obj, theta, X, Y = tanh_problem
    v = np.random.default_rng(1).standard_normal(theta.size)
    grad = jax.jit(jax.grad(obj))
    eps = 1e-5
    fd = (np.asarray(grad(theta + eps * v, X, Y)) - np.asarray(grad(theta - eps * v, X, Y))) / (
        2 * eps)
    hv = np.asarray(hessian_vector_product(obj, jnp.asarray(theta), jnp.asarray(v), X, Y))
    np.testing.assert_allclose(hv, fd, atol=1e-7 * np.linalg.norm(fd))


def test_exact_eigenvalues_match_finite_difference_hessian(tanh_problem):
    spec, sizes, obj, theta, X, Y = tanh_problem
    n, eps = theta.size, 1e-4
    loss = lambda t: _np_tanh_mlp_loss(t, X, Y, sizes)
    E = np.eye(n) * eps
    H_fd = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            H_fd[i, j] = H_fd[j, i] = (loss(theta + E[i] + E[j]) - loss(theta + E[i] - E[j])
                                       - loss(theta - E[i] + E[j])
                                       + loss(theta - E[i] - E[j])) / (4 * eps**2)
    ref = np.linalg.eigvalsh(H_fd)
    spectrum = hessian_spectrum(obj, theta, X, Y, method="exact")
    assert spectrum.method == "exact" and spectrum.complete and spectrum.n_params == n
    np.testing.assert_allclose(spectrum.eigenvalues, ref, atol=1e-6 * np.abs(ref).max())
    H = np.asarray(hessian_matrix(obj, theta, X, Y))
    np.testing.assert_allclose(H, H_fd, atol=1e-6 * np.abs(H_fd).max())
    V = spectrum.eigenvectors
    np.testing.assert_allclose(H_fd @ V, V * spectrum.eigenvalues, atol=1e-5 * np.abs(ref).max())


def test_exact_hessian_refuses_large_models():
    spec = compute.make_model("linear", 64, 64, (64,))
    assert spec.n_params > MAX_PARAMS_EXACT_HESSIAN
    obj = compute.flat_objective(spec)
    with pytest.raises(InputError, match="Lanczos"):
        hessian_matrix(obj, np.zeros(spec.n_params), np.zeros((2, 64)), np.zeros((2, 64)))
    with pytest.raises(InputError, match="method"):
        hessian_spectrum(obj, np.zeros(3), np.zeros((2, 1)), np.zeros((2, 1)), method="qr")


@pytest.mark.slow
def test_lanczos_extremes_match_eigh_on_3k_parameters():
    rng = np.random.default_rng(0)
    spec = compute.make_model("linear", 20, 10, (40, 40))  # 2800 parameters
    obj = compute.flat_objective(spec)
    X = rng.standard_normal((64, 20))
    Y = X @ rng.standard_normal((20, 10)) + 0.1 * rng.standard_normal((64, 10))
    theta = np.asarray(compute.flatten_params(
        compute.init_params(spec, 3, method="xavier", dtype=jnp.float64)))
    ref = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(obj))(theta, X, Y)))
    spectrum = hessian_spectrum(obj, theta, X, Y, method="lanczos", k=5)
    assert spectrum.method == "lanczos" and spectrum.eigenvalues.shape == (10,)
    expected = np.r_[ref[:5], ref[-5:]]
    assert ref[0] < 0 < ref[-1]
    np.testing.assert_allclose(spectrum.eigenvalues, expected, rtol=1e-6)
    assert spectrum.lanczos_steps < spec.n_params // 10
    assert spectrum.ritz_history.shape == (spectrum.lanczos_steps, 2)


@pytest.fixture(scope="module")
def mlp_problem():
    rng = np.random.default_rng(11)
    spec = compute.make_model("mlp", 4, 2, (10, 10), activation="tanh", bias=True)  # 182
    X = rng.standard_normal((30, 4))
    Y = np.sin(X[:, :2]) + 0.1 * rng.standard_normal((30, 2))
    theta = np.asarray(compute.flatten_params(
        compute.init_params(spec, 1, method="gaussian", scale=0.7, dtype=jnp.float64)))
    obj = compute.flat_objective(spec)
    H = np.asarray(jax.jit(jax.hessian(obj))(theta, X, Y))
    return spec, obj, theta, X, Y, 0.5 * (H + H.T)


def test_slq_density_integrates_to_one_and_has_mean_trace_over_n(mlp_problem):
    spec, obj, theta, X, Y, H = mlp_problem
    n, probes = theta.size, 16
    spectrum = hessian_spectrum(obj, theta, X, Y, method="lanczos", k=3, density=True,
                                slq_probes=probes, slq_steps=40)
    grid, values = spectrum.density
    assert abs(np.trapezoid(values, grid) - 1.0) < 1e-4
    first_moment = np.trapezoid(grid * values, grid)
    off = H - np.diag(np.diag(H))
    stderr = np.sqrt(2 * np.sum(off**2) / probes) / n  # of mean_p zᵀHz/n, Rademacher z
    assert abs(first_moment - np.trace(H) / n) < 4 * stderr
    # the density spans the spectrum
    ref = np.linalg.eigvalsh(H)
    assert grid[0] < ref[0] and grid[-1] > ref[-1]


def test_hutchinson_trace_within_its_error(mlp_problem):
    _, obj, theta, X, Y, H = mlp_problem
    probes = 200
    est, err = hessian_trace_hutchinson(obj, theta, X, Y, probes=probes, seed=2)
    off = H - np.diag(np.diag(H))
    sd = np.sqrt(2 * np.sum(off**2) / probes)
    assert abs(est - np.trace(H)) < 4 * sd
    assert 0.5 * sd < err < 2 * sd


def test_exact_density_integrates_to_one(mlp_problem):
    _, obj, theta, X, Y, _ = mlp_problem
    spectrum = hessian_spectrum(obj, theta, X, Y, method="exact", density=True)
    grid, values = spectrum.density
    assert abs(np.trapezoid(values, grid) - 1.0) < 1e-4


@pytest.mark.parametrize("method", ["exact", "lanczos"])
def test_extreme_eigenvalues_inside_scan(mlp_problem, method):
    spec, obj, theta, X, Y, _ = mlp_problem
    small = compute.make_model("mlp", 4, 2, (3,), activation="tanh", bias=True)  # 23 params
    obj = compute.flat_objective(small)
    rng = np.random.default_rng(5)
    thetas = rng.standard_normal((3, small.n_params))
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)

    def step(carry, t):
        return carry, jnp.stack(extreme_eigenvalues(obj, t, Xj, Yj, method=method,
                                                    lanczos_steps=small.n_params))

    _, out = jax.jit(lambda ts: jax.lax.scan(step, 0.0, ts))(jnp.asarray(thetas))
    hess = jax.jit(jax.hessian(obj))
    for t, (lo, hi) in zip(thetas, np.asarray(out), strict=True):
        ref = np.linalg.eigvalsh(np.asarray(hess(t, X, Y)))
        np.testing.assert_allclose([lo, hi], [ref[0], ref[-1]], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("which", ["top2", "min_max"])
def test_hessian_plane_directions_are_eigenvectors(mlp_problem, which):
    _, obj, theta, X, Y, H = mlp_problem
    d1, d2 = hessian_plane_directions(obj, theta, X, Y, which=which)
    ref = np.linalg.eigvalsh(H)
    want = (ref[-1], ref[-2]) if which == "top2" else (ref[0], ref[-1])
    for d, lam in zip((d1, d2), want, strict=True):
        assert abs(np.linalg.norm(d) - 1) < 1e-12
        np.testing.assert_allclose(H @ d, lam * d, atol=1e-7 * np.abs(ref).max())
    assert abs(d1 @ d2) < 1e-10
