"""Saxe et al.'s learning curves (compute._saxe) against numpy ODE solutions and against
simulated gradient descent (THEORY.md §2)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import compute
from compute import InputError
from compute._datasets import load_dataset
from compute._paths import run_path
from compute._saxe import balanced_small_init, saxe_learning_curve, saxe_mode_strengths


def rk4(f, u0, t_end, n):
    """Plain numpy RK4 for du/dt = f(u) from 0 to t_end in n steps; returns u at each step."""
    h = t_end / n
    u = np.array(u0, dtype=float)
    out = [u.copy()]
    for _ in range(n):
        k1 = f(u)
        k2 = f(u + h / 2 * k1)
        k3 = f(u + h / 2 * k2)
        k4 = f(u + h * k3)
        u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(u.copy())
    return np.array(out)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_mode_strengths_solve_the_balanced_ode(depth):
    s = np.array([3.0, 1.2, 0.4])
    u0 = 1e-3
    k = depth + 1  # weight matrices
    reference = rk4(lambda u: k * u ** (2 - 2 / k) * (s - u), np.full(3, u0), 20.0, 20000)
    t = np.linspace(0, 20.0, 20001)
    u = saxe_mode_strengths(t[::100], s, u0, depth=depth)
    np.testing.assert_allclose(u, reference[::100], rtol=1e-5, atol=1e-9)


def test_closed_form_limits():
    u = saxe_mode_strengths([0.0, 1e3], [2.0, 0.0], 0.01)
    np.testing.assert_allclose(u[0], [0.01, 0.01])
    np.testing.assert_allclose(u[1], [2.0, 0.01 / (1 + 2 * 0.01 * 1e3)])


@pytest.fixture(scope="module")
def whitened():
    data = load_dataset("linear_teacher", seed=0, d_x=6, d_y=4, n_samples=60,
                        preprocess="whiten")
    return data.X, data.Y


@pytest.mark.parametrize("width, depth, steps", [
    (4, 1, 8000), (2, 1, 8000), pytest.param(4, 2, 25000, marks=pytest.mark.slow)],
    ids=["H=1", "bottleneck", "H=2"])
def test_saxe_curve_matches_simulated_gradient_descent(whitened, width, depth, steps):
    X, Y = whitened
    lr, u0 = 1e-3, 1e-3
    widths = (width,) * depth
    spec = compute.make_model("linear", 6, 4, widths)
    theta0 = balanced_small_init(X, Y, widths, u0=u0)
    simulated = run_path(spec, "squared", theta0, X, Y, lr=lr, steps=steps).loss
    predicted = saxe_learning_curve(X, Y, lr=lr, steps=steps, u0=u0, hidden_width=width,
                                    depth=depth)
    assert predicted.shape == simulated.shape == (steps + 1,)
    assert np.max(np.abs(predicted - simulated) / simulated) < 0.01
    # It did learn (the curve is not flat) and ends at the bottleneck's optimum:
    # ‖Y‖²/2m − ½ Σ_{α≤p} s_α² (THEORY.md §1 with whitened X).
    s = np.linalg.svd(Y.T @ X / X.shape[0], compute_uv=False)
    end = np.sum(Y ** 2) / (2 * X.shape[0]) - 0.5 * np.sum(s[:width] ** 2)
    np.testing.assert_allclose(simulated[-1], end, rtol=1e-3)
    assert simulated[0] > 2 * simulated[-1]


def test_balanced_init_is_balanced_and_aligned(whitened):
    X, Y = whitened
    u0 = 1e-2
    theta = np.asarray(balanced_small_init(X, Y, (3,), u0=u0))
    W1, W2 = theta[:18].reshape(3, 6), theta[18:].reshape(4, 3)
    U, _, Vt = np.linalg.svd(Y.T @ X / X.shape[0])
    np.testing.assert_allclose(W2 @ W1, u0 * U[:, :3] @ Vt[:3], atol=1e-12)
    np.testing.assert_allclose(W1 @ W1.T, W2.T @ W2, atol=1e-12)
    deep = np.asarray(balanced_small_init(X, Y, (5, 2), u0=u0))
    W1, W2, W3 = deep[:30].reshape(5, 6), deep[30:40].reshape(2, 5), deep[40:].reshape(4, 2)
    np.testing.assert_allclose(W3 @ W2 @ W1, u0 * U[:, :2] @ Vt[:2], atol=1e-12)


def test_inputs_must_be_whitened():
    data = load_dataset("linear_teacher", seed=0, d_x=6, d_y=4, n_samples=60)
    with pytest.raises(InputError, match="whiten"):
        saxe_learning_curve(data.X, data.Y, lr=0.01, steps=10, u0=1e-3)
    with pytest.raises(InputError, match="whiten"):
        balanced_small_init(data.X, data.Y, (2,), u0=1e-3)


def test_bad_arguments_raise_input_error(whitened):
    X, Y = whitened
    with pytest.raises(InputError):
        saxe_learning_curve(X, Y, lr=-1.0, steps=10, u0=1e-3)
    with pytest.raises(InputError):
        saxe_learning_curve(X, Y, lr=0.1, steps=0, u0=1e-3)
    with pytest.raises(InputError):
        saxe_mode_strengths([0.0, 1.0], [1.0], -1e-3)
    with pytest.raises(InputError):
        saxe_mode_strengths([1.0, 0.5], [1.0], 1e-3, depth=2)
    with pytest.raises(InputError):
        balanced_small_init(X, Y, (), u0=1e-3)
    assert jnp.asarray(balanced_small_init(X, Y, (2,), u0=1e-3)).dtype == jnp.float64
