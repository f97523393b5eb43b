"""Optimiser paths (compute._paths, compute._optimisers) against independent references.

References written here in numpy: the network's loss and, for deep linear nets, its
gradient by hand-written backpropagation; the optimiser updates from the optax docs'
formulas; the closed-form global minimum of THEORY.md §1 (reduced-rank regression); finite-
difference Hessians. Float64 where precision matters.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import compute
from compute import InputError
from compute._datasets import load_dataset
from compute._losses import flat_objective
from compute._paths import (
    initial_point,
    many_starts,
    run_path,
    saddle_plus_eigenvector,
)
from tests import reference

# --------------------------------------------------------------------------- numpy references


def np_layers(sizes, theta, bias=False):
    return reference.np_layers(theta, sizes, bias)


def np_forward(sizes, theta, X, act=lambda h: h, bias=False):
    return reference.np_forward(theta, sizes, X, act=act, bias=bias)


def np_loss(sizes, theta, X, Y, act=lambda h: h, bias=False):
    return reference.np_squared_loss(theta, sizes, X, Y, act=act, bias=bias)


def np_linear_grad(sizes, theta, X, Y):
    """Backpropagation through W_L ⋯ W_1 by hand: ∂L/∂W_k = δ_kᵀ a_{k−1}."""
    Ws = [W for W, _ in np_layers(sizes, theta)]
    acts = [X]
    for W in Ws:
        acts.append(acts[-1] @ W.T)
    delta = (acts[-1] - Y) / X.shape[0]
    grads = [None] * len(Ws)
    for k in range(len(Ws) - 1, -1, -1):
        grads[k] = delta.T @ acts[k]
        delta = delta @ Ws[k]
    return np.concatenate([g.ravel() for g in grads])


def np_global_minimum(X, Y, widths):
    """THEORY.md §1: L* = (‖Y‖² − Σ_{i≤r} λ_i(C (XᵀX)⁻¹ Cᵀ)) / (2m), r = min(p, d_y)."""
    C = Y.T @ X
    lam = np.sort(np.linalg.eigvalsh(C @ np.linalg.solve(X.T @ X, C.T)))[::-1]
    r = min(min(widths), Y.shape[1])
    return (np.sum(Y ** 2) - np.sum(lam[:r])) / (2 * X.shape[0])


def fd_hessian(f, x, h=1e-4):
    n = x.size
    H = np.zeros((n, n))
    E = np.eye(n) * h
    for i in range(n):
        for j in range(i, n):
            H[i, j] = H[j, i] = (f(x + E[i] + E[j]) - f(x + E[i] - E[j])
                                 - f(x - E[i] + E[j]) + f(x - E[i] - E[j])) / (4 * h * h)
    return H


@pytest.fixture(scope="module")
def teacher():
    data = load_dataset("linear_teacher", seed=3, d_x=6, d_y=4, n_samples=40)
    return data.X, data.Y


def linear(widths, d_x=6, d_y=4):
    return compute.make_model("linear", d_x, d_y, widths)


# --------------------------------------------------------------------------- basics


def test_first_loss_and_gradient_norm_match_numpy(rng):
    spec = compute.make_model("mlp", 3, 2, (4,), activation="tanh")
    X, Y = rng.standard_normal((15, 3)), rng.standard_normal((15, 2))
    theta0 = rng.standard_normal(spec.n_params) * 0.5
    result = run_path(spec, "squared", jnp.asarray(theta0), X, Y, lr=0.01, steps=3)
    loss = lambda th: np_loss(spec.layer_sizes, th, X, Y, np.tanh, bias=True)
    h = 1e-6
    grad = np.array([(loss(theta0 + h * e) - loss(theta0 - h * e)) / (2 * h)
                     for e in np.eye(spec.n_params)])
    assert result.loss.shape == (4,) and result.grad_norm.shape == (4,)
    np.testing.assert_allclose(result.loss[0], loss(theta0), rtol=1e-12)
    np.testing.assert_allclose(result.grad_norm[0], np.linalg.norm(grad), rtol=1e-7)
    assert result.diverged_at == -1


def test_small_step_gradient_descent_decreases_monotonically(teacher):
    X, Y = teacher
    spec = linear((3,))
    theta0 = initial_point(spec, init="gaussian", scale=0.3, seed=2, dtype=jnp.float64)
    result = run_path(spec, "squared", theta0, X, Y, lr=0.01, steps=600)
    steps = np.diff(result.loss)
    assert np.all(steps <= 1e-14 * result.loss[:-1]), steps.max()
    assert result.loss[-1] < 0.5 * result.loss[0]


def test_weights_and_final_follow_the_numpy_gradient_descent(teacher):
    X, Y = teacher
    spec = linear((3,))
    theta = np.asarray(initial_point(spec, init="gaussian", scale=0.3, seed=5,
                                     dtype=jnp.float64))
    result = run_path(spec, "squared", jnp.asarray(theta), X, Y, lr=0.02, steps=25,
                      weight_stride=10)
    np.testing.assert_array_equal(result.weight_steps, [0, 10, 20, 25])
    expected = [theta.copy()]
    for t in range(1, 26):
        theta = theta - 0.02 * np_linear_grad(spec.layer_sizes, theta, X, Y)
        if t in (10, 20, 25):
            expected.append(theta.copy())
    np.testing.assert_allclose(result.weights, np.array(expected), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(result.final, theta, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(result.loss[-1], np_loss(spec.layer_sizes, theta, X, Y),
                               rtol=1e-10)


@pytest.mark.parametrize("widths", [(2,), (4, 2)], ids=["H=1", "H=2"])
def test_gradient_descent_reaches_the_closed_form_global_minimum(teacher, widths):
    X, Y = teacher
    spec = linear(widths)
    target = np_global_minimum(X, Y, widths)
    for seed in range(3):
        theta0 = initial_point(spec, init="gaussian", scale=0.1, seed=seed, dtype=jnp.float64)
        result = run_path(spec, "squared", theta0, X, Y, lr=0.05, steps=2000)
        assert abs(result.loss[-1] - target) <= 1e-6 * target, (seed, result.loss[-1], target)


def test_plateau_near_the_origin_lengthens_with_depth(teacher):
    X, Y = teacher
    escapes = []
    for depth in (1, 2, 3):
        spec = linear((4,) * depth)
        theta0 = initial_point(spec, init="gaussian", scale=0.1, seed=0, dtype=jnp.float64)
        loss = run_path(spec, "squared", theta0, X, Y, lr=0.05, steps=3000).loss
        # Escape: the first step that has covered half of the way down.
        escapes.append(int(np.argmax(loss < loss[0] - 0.5 * (loss[0] - loss[-1]))))
    assert escapes[0] > 0
    assert escapes[1] > 1.5 * escapes[0] and escapes[2] > 1.5 * escapes[1], escapes


# --------------------------------------------------------------------------- optimisers


def _numpy_optimizer(name, lr, beta=0.9):
    """The update rules as the optax docs state them, for a flat vector."""
    state = {"v": 0.0, "m": 0.0, "s": 0.0, "t": 0}

    def update(g):
        if name == "gd":
            return -lr * g
        if name in ("momentum", "nesterov"):
            state["v"] = g + beta * state["v"]
            return -lr * (g + beta * state["v"] if name == "nesterov" else state["v"])
        b1, b2, eps = 0.9, 0.999, 1e-8
        state["t"] += 1
        state["m"] = b1 * state["m"] + (1 - b1) * g
        state["s"] = b2 * state["s"] + (1 - b2) * g * g
        m_hat = state["m"] / (1 - b1 ** state["t"])
        s_hat = state["s"] / (1 - b2 ** state["t"])
        return -lr * m_hat / (np.sqrt(s_hat) + eps)

    return update


@pytest.mark.parametrize("name", ["gd", "momentum", "nesterov", "adam"])
def test_optimiser_steps_equal_the_handwritten_numpy_update(teacher, name):
    X, Y = teacher
    spec = linear((3,))
    theta = np.asarray(initial_point(spec, init="gaussian", scale=0.3, seed=1,
                                     dtype=jnp.float64))
    result = run_path(spec, "squared", jnp.asarray(theta), X, Y, optimizer=name, lr=0.03,
                      momentum=0.8, steps=4, weight_stride=1)
    update = _numpy_optimizer(name, 0.03, beta=0.8)
    rows = [theta]
    for _ in range(4):
        theta = theta + update(np_linear_grad(spec.layer_sizes, theta, X, Y))
        rows.append(theta)
    np.testing.assert_allclose(result.weights, np.array(rows), rtol=1e-10, atol=1e-14)


def test_minibatch_sgd_steps_along_the_gradient_of_some_batch(rng):
    X, Y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    spec = linear((2,), d_x=3, d_y=2)
    theta = np.asarray(initial_point(spec, init="gaussian", scale=0.5, seed=0,
                                     dtype=jnp.float64))
    result = run_path(spec, "squared", jnp.asarray(theta), X, Y, optimizer="sgd", lr=0.1,
                      steps=3, batch=2, seed=7, weight_stride=1)
    used = []
    for t in range(3):
        step = result.weights[t + 1] - result.weights[t]
        matches = [S for S in itertools.combinations(range(6), 2)
                   if np.allclose(step, -0.1 * np_linear_grad(
                       spec.layer_sizes, result.weights[t], X[list(S)], Y[list(S)]),
                       rtol=1e-10, atol=1e-14)]
        assert len(matches) == 1, (t, matches)
        used.append(matches[0])
    again = run_path(spec, "squared", jnp.asarray(theta), X, Y, optimizer="sgd", lr=0.1,
                     steps=3, batch=2, seed=7)
    np.testing.assert_array_equal(again.loss, result.loss)  # seeded: reproducible
    other = run_path(spec, "squared", jnp.asarray(theta), X, Y, optimizer="sgd", lr=0.1,
                     steps=3, batch=2, seed=8)
    assert not np.array_equal(other.loss, result.loss)
    # The full-batch loss is what is recorded, not the batch's.
    np.testing.assert_allclose(result.loss[1], np_loss(spec.layer_sizes, result.weights[1],
                                                       X, Y), rtol=1e-12)


def test_sgd_with_every_sample_in_the_batch_is_gradient_descent(teacher):
    X, Y = teacher
    spec = linear((3,))
    theta0 = initial_point(spec, init="gaussian", scale=0.3, seed=0, dtype=jnp.float64)
    sgd = run_path(spec, "squared", theta0, X, Y, optimizer="sgd", lr=0.02, steps=50,
                   batch=X.shape[0])
    gd = run_path(spec, "squared", theta0, X, Y, optimizer="gd", lr=0.02, steps=50)
    np.testing.assert_allclose(sgd.loss, gd.loss, rtol=1e-12)


def test_gradient_noise_has_the_requested_scale(rng):
    X, Y = rng.standard_normal((20, 10)), rng.standard_normal((20, 8))
    spec = linear((30,), d_x=10, d_y=8)
    theta = np.asarray(initial_point(spec, init="xavier", seed=0, dtype=jnp.float64))
    lr, sigma = 0.01, 0.5
    result = run_path(spec, "squared", jnp.asarray(theta), X, Y, lr=lr, steps=1, noise=sigma,
                      weight_stride=1)
    xi = (result.weights[1] - theta + lr * np_linear_grad(spec.layer_sizes, theta, X, Y))
    xi = xi / (lr * sigma)
    n = xi.size  # 540 standard normals
    assert abs(xi.mean()) < 5 / np.sqrt(n)
    assert abs(xi.std() - 1.0) < 0.1


# --------------------------------------------------------------------------- divergence


def test_a_divergent_step_size_is_reported_not_raised(teacher):
    X, Y = teacher
    spec = linear((3,))
    theta0 = initial_point(spec, init="gaussian", scale=0.3, seed=0, dtype=jnp.float64)
    result = run_path(spec, "squared", theta0, X, Y, lr=5.0, steps=500, weight_stride=2,
                      lambda_every=2)
    d = result.diverged_at
    assert 0 < d < 500
    assert result.loss.shape == (501,)
    assert np.all(np.isfinite(result.loss[:d])) and np.all(np.isfinite(result.grad_norm[:d]))
    assert not (np.isfinite(result.loss[d]) and np.isfinite(result.grad_norm[d]))
    assert np.all(np.isnan(result.loss[d + 1:]))
    assert np.all(np.isfinite(result.weights)) and result.weight_steps[-1] == d - 1
    np.testing.assert_array_equal(result.weights[-1], result.final)
    np.testing.assert_allclose(np_loss(spec.layer_sizes, result.final, X, Y),
                               result.loss[d - 1], rtol=1e-9)
    assert np.all(result.lambda_steps < d) and np.all(np.isfinite(result.lambda_min))


# --------------------------------------------------------------------------- curvature, inits


def test_tracked_extreme_eigenvalues_match_a_finite_difference_hessian(rng):
    spec = compute.make_model("mlp", 2, 1, (3,), activation="tanh")
    X, Y = rng.standard_normal((12, 2)), rng.standard_normal((12, 1))
    theta0 = jnp.asarray(rng.standard_normal(spec.n_params))
    result = run_path(spec, "squared", theta0, X, Y, lr=0.1, steps=40, weight_stride=20,
                      lambda_every=20, lambda_method="exact")
    np.testing.assert_array_equal(result.lambda_steps, [0, 20, 40])
    loss = lambda th: np_loss(spec.layer_sizes, th, X, Y, np.tanh, bias=True)
    for k, step in enumerate(result.lambda_steps):
        row = int(np.flatnonzero(result.weight_steps == step)[0])
        eigenvalues = np.linalg.eigvalsh(fd_hessian(loss, result.weights[row]))
        np.testing.assert_allclose(result.lambda_min[k], eigenvalues[0], atol=1e-5)
        np.testing.assert_allclose(result.lambda_max[k], eigenvalues[-1], atol=1e-5)


def test_lanczos_tracking_bounds_the_exact_extremes(teacher):
    X, Y = teacher
    spec = linear((3,))
    theta0 = initial_point(spec, init="gaussian", scale=0.3, seed=0, dtype=jnp.float64)
    exact = run_path(spec, "squared", theta0, X, Y, lr=0.01, steps=20, lambda_every=10,
                     lambda_method="exact")
    krylov = run_path(spec, "squared", theta0, X, Y, lr=0.01, steps=20, lambda_every=10,
                      lambda_method="lanczos", lanczos_steps=spec.n_params)
    # With a full Krylov space Lanczos is exact (up to rounding).
    np.testing.assert_allclose(krylov.lambda_min, exact.lambda_min, atol=1e-8)
    np.testing.assert_allclose(krylov.lambda_max, exact.lambda_max, rtol=1e-8)


def test_saddle_plus_eigenvector_leaves_the_origin_along_the_negative_curvature(teacher):
    X, Y = teacher
    m = X.shape[0]
    spec = linear((2,))
    objective = flat_objective(spec, "squared")
    origin = jnp.zeros(spec.n_params, jnp.float64)
    start = np.asarray(saddle_plus_eigenvector(objective, origin, X, Y, eps=1e-3))
    np.testing.assert_allclose(np.linalg.norm(start), 1e-3, rtol=1e-12)
    # THEORY.md §1: at the origin of a one-hidden-layer net λ_min = −σ_1(C)/m, and
    # H v = λ_min v for the returned direction (Hessian by finite differences).
    sigma1 = np.linalg.svd(Y.T @ X, compute_uv=False)[0]
    v = start / 1e-3
    H = fd_hessian(lambda th: np_loss(spec.layer_sizes, th, X, Y), np.zeros(spec.n_params))
    np.testing.assert_allclose(H @ v, -sigma1 / m * v, atol=1e-5)
    path = run_path(spec, "squared", jnp.asarray(start), X, Y, lr=0.05, steps=400)
    assert path.loss[-1] < 0.5 * np_loss(spec.layer_sizes, np.zeros(spec.n_params), X, Y)


def test_initial_point_is_the_flattened_seeded_init():
    spec = compute.make_model("mlp", 3, 2, (4,), activation="relu")
    theta = initial_point(spec, init="he", scale=0.5, seed=4, dtype=jnp.float64)
    params = compute.init_params(spec, 4, method="he", scale=0.5, dtype=jnp.float64)
    parts = [np.ravel(params[0]["W"]), params[0]["b"], np.ravel(params[1]["W"]), params[1]["b"]]
    np.testing.assert_array_equal(np.asarray(theta), np.concatenate(parts))


# --------------------------------------------------------------------------- many starts


def test_many_starts_equal_separate_runs(teacher):
    X, Y = teacher
    spec = linear((3,))
    kwargs = dict(init="gaussian", scale=0.3, optimizer="sgd", lr=0.05, steps=60, batch=10)
    batch = many_starts(spec, "squared", X, Y, n_starts=3, seed=11, dtype=jnp.float64,
                        curve_points=60, **kwargs)
    np.testing.assert_array_equal(batch["seeds"], [11, 12, 13])
    for i, seed in enumerate(batch["seeds"]):
        theta0 = initial_point(spec, init="gaussian", scale=0.3, seed=int(seed),
                               dtype=jnp.float64)
        single = run_path(spec, "squared", theta0, X, Y, optimizer="sgd", lr=0.05, steps=60,
                          batch=10, seed=int(seed))
        np.testing.assert_allclose(batch["final"][i], single.final, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(batch["final_loss"][i], single.loss[-1], rtol=1e-10)
        np.testing.assert_allclose(batch["loss_curves"][i], single.loss[batch["curve_steps"]],
                                   rtol=1e-10)


def test_many_starts_of_a_deep_linear_net_end_at_the_global_minimum(teacher):
    X, Y = teacher
    spec = linear((2,))
    result = many_starts(spec, "squared", X, Y, n_starts=6, init="gaussian", scale=0.1, seed=0,
                         lr=0.05, steps=1500, dtype=jnp.float64)
    target = np_global_minimum(X, Y, (2,))
    assert result["global_minimum"] == pytest.approx(target, rel=1e-10)
    np.testing.assert_allclose(result["final_loss"], target, rtol=1e-6)
    assert result["converged"].all() and (result["diverged_at"] == -1).all()


def test_many_starts_flag_stuck_runs_as_not_converged(teacher):
    X, Y = teacher
    spec = linear((2,))
    # Too few steps from a tiny init: every start is still on the origin's plateau.
    result = many_starts(spec, "squared", X, Y, n_starts=3, init="gaussian", scale=1e-4,
                         seed=0, lr=0.01, steps=50, dtype=jnp.float64)
    assert not result["converged"].any()
    origin_loss = np.sum(Y ** 2) / (2 * X.shape[0])
    np.testing.assert_allclose(result["final_loss"], origin_loss, rtol=1e-3)


# --------------------------------------------------------------------------- plumbing


def test_progress_is_reported_and_does_not_change_the_path(teacher):
    X, Y = teacher
    spec = linear((3,))
    theta0 = initial_point(spec, init="gaussian", scale=0.3, seed=0, dtype=jnp.float64)
    seen = []
    with_progress = run_path(spec, "squared", theta0, X, Y, lr=0.02, steps=300,
                             progress=seen.append)
    plain = run_path(spec, "squared", theta0, X, Y, lr=0.02, steps=300)
    assert len(seen) >= 5 and seen[-1] == 1.0 and np.all(np.diff(seen) > 0)
    np.testing.assert_array_equal(with_progress.loss, plain.loss)
    np.testing.assert_array_equal(with_progress.weights, plain.weights)
    assert np.all(np.isfinite(np.asarray(theta0)))  # the caller's array survives the run


def test_a_second_call_with_another_step_size_does_not_recompile(teacher, caplog):
    X, Y = teacher
    spec = linear((3,))
    theta0 = initial_point(spec, init="gaussian", scale=0.3, seed=0, dtype=jnp.float64)
    run_path(spec, "squared", theta0, X, Y, lr=0.02, steps=310)
    with jax.log_compiles(True), caplog.at_level("DEBUG"):
        result = run_path(spec, "squared", theta0 * 2, X, Y, lr=0.03, steps=305, seed=3)
    assert result.loss.shape == (306,)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not [msg for msg in compiled if "chunk" in msg], compiled


@pytest.mark.parametrize("kwargs, words", [
    (dict(lr=0.0), "learning rate"),
    (dict(lr=float("nan")), "learning rate"),
    (dict(lr=-1.0), "learning rate"),
    (dict(steps=0), "steps"),
    (dict(steps=compute.limits.MAX_STEPS + 1), "steps"),
    (dict(batch=41), "batch size"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(optimizer="momentum", momentum=1.0), "momentum"),
    (dict(noise=-0.1), "noise"),
    (dict(lambda_method="power"), "lambda_method"),
    (dict(weight_stride=0), "weight stride"),
    (dict(seed=-1), "seed"),
    (dict(seed=2**31), "seed"),
])
def test_bad_options_raise_input_error(teacher, kwargs, words):
    X, Y = teacher
    spec = linear((3,))
    options = dict(lr=0.01, steps=10) | kwargs
    with pytest.raises(InputError, match=words):
        run_path(spec, "squared", jnp.zeros(spec.n_params), X, Y, **options)


def test_bad_initial_point_raises_input_error(teacher):
    X, Y = teacher
    spec = linear((3,))
    with pytest.raises(InputError, match="flat vector"):
        run_path(spec, "squared", jnp.zeros(5), X, Y, lr=0.01, steps=10)
    with pytest.raises(InputError, match="NaN"):
        run_path(spec, "squared", jnp.full(spec.n_params, jnp.nan), X, Y, lr=0.01, steps=10)
    with pytest.raises(InputError, match="X of shape"):
        run_path(spec, "squared", jnp.zeros(spec.n_params), X[:, :5], Y, lr=0.01, steps=10)
    with pytest.raises(InputError, match="init scale"):
        initial_point(spec, init="gaussian", scale=-1.0, seed=0)
