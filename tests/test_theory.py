"""Closed forms of THEORY.md against independent numpy computations."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import compute
from compute import InputError
from compute._datasets import load_dataset
from compute._theory import (
    balanced_top_singular_direction,
    baldi_hornik_saddles,
    deep_linear_global_minimizer,
    deep_linear_global_minimum,
    flat_predictor,
    induced_model_loss,
    origin_hessian_eigenvalues_one_hidden,
    swirszcz_points,
)
from tests.reference import np_squared_loss


def _np_linear_loss(theta, X, Y, sizes):
    return np_squared_loss(theta, sizes, X, Y)


def _np_relu_loss_sum(theta, X, Y, h):
    """Świrszcz's plain sum Σ_i (Σ_j v_j relu(w_j x_i + b_j) + c − y_i)²."""
    w, b, v, c = theta[:h], theta[h:2 * h], theta[2 * h:3 * h], theta[3 * h]
    pred = np.maximum(X[:, :1] * w[None] + b[None], 0) @ v + c
    return float(np.sum((pred - Y[:, 0]) ** 2))


@pytest.fixture(scope="module")
def teacher():
    ds = load_dataset("linear_teacher", d_x=6, d_y=4, n_samples=50, seed=3)
    return ds.X, ds.Y


def _reduced_rank_loss(X, Y, r):
    """Eckart–Young on the least-squares fit: ‖Y − Ŷ‖² + Σ_{i>r} σ_i(Ŷ)², over 2m."""
    B, *_ = np.linalg.lstsq(X, Y, rcond=None)
    fit = X @ B
    s = np.linalg.svd(fit, compute_uv=False)
    return (np.sum((Y - fit) ** 2) + np.sum(s[r:] ** 2)) / (2 * X.shape[0])


@pytest.mark.parametrize("widths", [(), (2,), (3, 3), (5, 1, 5), (6, 6)])
def test_global_minimum_is_reduced_rank_regression(teacher, widths):
    X, Y = teacher
    r = min([Y.shape[1], *widths])
    expected = _reduced_rank_loss(X, Y, r)
    assert deep_linear_global_minimum(X, Y, widths) == pytest.approx(expected, rel=1e-10)
    sizes = (X.shape[1], *widths, Y.shape[1])
    theta = deep_linear_global_minimizer(X, Y, widths, seed=1)
    assert theta.size == sum(sizes[k] * sizes[k + 1] for k in range(len(sizes) - 1))
    assert _np_linear_loss(theta, X, Y, sizes) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("noise", [1e-6, 0.0])
def test_global_minimum_of_a_nearly_exact_fit(noise):
    """L* near 0: ‖Y‖² − Σλ_i would cancel to rounding noise of ‖Y‖² (even < 0)."""
    ds = load_dataset("linear_teacher", d_x=6, d_y=4, n_samples=50, seed=3, noise=noise)
    X, Y = ds.X, ds.Y
    expected = _reduced_rank_loss(X, Y, 4)
    value = deep_linear_global_minimum(X, Y, (4,))
    assert value >= 0
    if noise:
        assert value == pytest.approx(expected, rel=1e-8, abs=0)
    else:
        assert value <= 1e-24 * np.sum(Y**2)


def test_global_minimizer_with_more_outputs_than_inputs():
    """rank W ≤ d_x < d_y: the closed-form product has only d_x singular values."""
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((30, 2)), rng.standard_normal((30, 4))
    theta = deep_linear_global_minimizer(X, Y, (3,), seed=0)
    expected = _reduced_rank_loss(X, Y, 3)
    assert deep_linear_global_minimum(X, Y, (3,)) == pytest.approx(expected, rel=1e-10)
    assert _np_linear_loss(theta, X, Y, (2, 3, 4)) == pytest.approx(expected, rel=1e-10)


def test_global_minimum_rejects_singular_inputs():
    X = np.ones((10, 2))
    with pytest.raises(InputError, match="singular"):
        deep_linear_global_minimum(X, np.ones((10, 1)), (2,))


def _sigma_eigen(X, Y):
    C = Y.T @ X
    Sigma = C @ np.linalg.inv(X.T @ X) @ C.T
    lam, U = np.linalg.eigh(Sigma)
    return C, lam[::-1], U[:, ::-1]


def test_baldi_hornik_points_are_critical_with_predicted_losses(teacher):
    X, Y = teacher
    m, d_x = X.shape
    d_y = Y.shape[1]
    C, lam, U = _sigma_eigen(X, Y)
    points = baldi_hornik_saddles(X, Y, 2)
    predicted = sorted((np.sum(Y**2) - lam[list(subset)].sum()) / (2 * m)
                       for subset in itertools.combinations(range(d_y), 2))
    np.testing.assert_allclose([p.loss for p in points], predicted, rtol=1e-10)
    assert [p.is_global_min for p in points] == [True] + [False] * (len(points) - 1)
    for p in points:
        W1 = p.theta[:2 * d_x].reshape(2, d_x)
        W2 = p.theta[2 * d_x:].reshape(d_y, 2)
        R = W2 @ W1 @ (X.T @ X) - C  # the gradients are W2ᵀR/m and R W1ᵀ/m
        assert np.linalg.norm(W2.T @ R) / m < 1e-10 and np.linalg.norm(R @ W1.T) / m < 1e-10
        assert _np_linear_loss(p.theta, X, Y, (d_x, 2, d_y)) == pytest.approx(p.loss, rel=1e-10)


def test_baldi_hornik_wide_hidden_layer_pads_with_zeros(teacher):
    X, Y = teacher
    (point,) = baldi_hornik_saddles(X, Y, 6)  # r = d_y = 4: one subset
    assert point.is_global_min
    assert point.loss == pytest.approx(_reduced_rank_loss(X, Y, 4), rel=1e-10)


def test_baldi_hornik_refuses_too_many_subsets():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 30))
    Y = rng.standard_normal((80, 20))
    with pytest.raises(InputError, match="Baldi"):
        baldi_hornik_saddles(X, Y, 10)


def test_origin_spectrum_of_one_hidden_layer(teacher):
    X, Y = teacher
    d_1 = 3
    got = origin_hessian_eigenvalues_one_hidden(X, Y, d_1)
    spec = compute.make_model("linear", X.shape[1], Y.shape[1], (d_1,))
    H = jax.jit(jax.hessian(compute.flat_objective(spec)))(jnp.zeros(spec.n_params), X, Y)
    np.testing.assert_allclose(got, np.linalg.eigvalsh(np.asarray(H)), atol=1e-10)


@pytest.mark.parametrize("widths", [(3, 3), (2, 2, 2)])
def test_loss_leaves_the_origin_like_t_to_the_depth(teacher, widths):
    X, Y = teacher
    sizes = (X.shape[1], *widths, Y.shape[1])
    L = len(sizes) - 1
    d = balanced_top_singular_direction(X, Y, sizes)
    assert np.linalg.norm(d) == pytest.approx(1.0)
    sigma1 = np.linalg.svd(Y.T @ X, compute_uv=False)[0]
    m = X.shape[0]
    base = _np_linear_loss(np.zeros_like(d), X, Y, sizes)
    for t in (1e-2, 3e-2):
        drop = base - _np_linear_loss(t * d, X, Y, sizes)
        assert drop == pytest.approx(sigma1 / m * (t / np.sqrt(L)) ** L, rel=1e-3)


def test_induced_model_value_at_critical_and_other_points(teacher):
    X, Y = teacher
    widths = (3, 3)
    spec = compute.make_model("linear", X.shape[1], Y.shape[1], widths)
    sizes = spec.layer_sizes
    predict = flat_predictor(spec)
    theta = deep_linear_global_minimizer(X, Y, widths)
    at_min = _np_linear_loss(theta, X, Y, sizes)
    assert induced_model_loss(predict, theta, X, Y) == pytest.approx(at_min, rel=1e-8)
    away = theta + 0.3 * np.random.default_rng(0).standard_normal(theta.size)
    loss_away = _np_linear_loss(away, X, Y, sizes)
    assert induced_model_loss(predict, away, X, Y) < loss_away - 1e-3 * loss_away


def test_induced_model_value_equals_loss_of_a_converged_mlp():
    # a tanh net fitted to a noisy teacher of its own shape: a well-conditioned minimum
    rng = np.random.default_rng(2)
    spec = compute.make_model("mlp", 2, 1, (3,), activation="tanh", bias=True)
    teacher = rng.standard_normal(spec.n_params)
    X = rng.standard_normal((40, 2))
    Y = np.asarray(compute.forward(spec, compute.unflatten_params(spec, jnp.asarray(teacher)),
                                   X)) + 0.1 * rng.standard_normal((40, 1))
    objective = compute.flat_objective(spec)
    value_and_grad = jax.jit(jax.value_and_grad(objective))
    fun = lambda t: tuple(np.asarray(a, dtype=np.float64) for a in value_and_grad(t, X, Y))
    res = minimize(fun, teacher + 0.1 * rng.standard_normal(spec.n_params), jac=True,
                   method="BFGS", options={"gtol": 1e-10, "maxiter": 5000})
    hess = jax.jit(jax.hessian(objective))
    theta = res.x
    for _ in range(3):  # polish with Newton steps
        theta = theta - np.linalg.solve(np.asarray(hess(theta, X, Y)), fun(theta)[1])
    loss, grad = fun(theta)
    assert np.linalg.norm(grad) < 1e-12
    assert np.all(np.linalg.eigvalsh(np.asarray(hess(theta, X, Y))) > 0)  # a minimum
    predict = flat_predictor(spec)
    assert induced_model_loss(predict, theta, X, Y) == pytest.approx(float(loss), rel=1e-8)
    away = theta + 0.2 * rng.standard_normal(theta.size)
    loss_away = float(fun(away)[0])
    assert induced_model_loss(predict, away, X, Y) < loss_away * (1 - 1e-3)


def test_swirszcz_points_have_the_papers_losses():
    paper = {"d1_local": 18, "d1_global": 14, "d2_global": 0, "d2_local": 8 / 3,
             "d3_better": 1 / 6, "d3_worse": 2 / 3}  # THEORY.md §3
    points = swirszcz_points()
    assert set(points) == set(paper)
    for name, point in points.items():
        ds = load_dataset(point.dataset)
        total = _np_relu_loss_sum(point.theta, ds.X, ds.Y, point.hidden)
        assert total == pytest.approx(paper[name], abs=1e-12)
        assert point.paper_loss == pytest.approx(paper[name])
        assert point.loss == pytest.approx(paper[name] / (2 * ds.X.shape[0]))
        spec = compute.make_model("mlp", 1, 1, (point.hidden,), activation="relu")
        assert spec.n_params == point.theta.size
        ours = float(compute.flat_objective(spec)(jnp.asarray(point.theta), ds.X, ds.Y))
        assert ours == pytest.approx(point.loss, abs=1e-12)
