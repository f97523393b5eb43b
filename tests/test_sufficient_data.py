"""``compute.sufficient_data``: the d_x + d_y pseudo samples of a deep linear net's squared
loss, checked against numpy on all m samples (tests/reference.py), never against JAX on
the raw data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compute._errors import InputError
from compute._hessian import hessian_matrix
from compute._losses import flat_objective, sufficient_data
from compute._models import make_model
from compute._theory import flat_predictor, induced_model_loss
from tests.reference import fd_hessian, np_squared_loss

SIZES = (4, 3, 3, 2)          # two hidden layers: 12 + 9 + 6 = 27 parameters
M = 300


def _problem(seed=0, m=M):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, SIZES[0]))
    Y = X @ rng.standard_normal((SIZES[0], SIZES[-1])) + 0.3 * rng.standard_normal((m, 2))
    spec = make_model("linear", SIZES[0], SIZES[-1], SIZES[1:-1])
    theta = rng.standard_normal(spec.n_params) * 0.7
    return spec, theta, X, Y


def _np_loss(X, Y):
    return lambda t: np_squared_loss(t, SIZES, X, Y)


def test_rows_and_dtype():
    spec, _, X, Y = _problem()
    Xs, Ys = sufficient_data(spec, "squared", jnp.asarray(X, jnp.float32),
                             jnp.asarray(Y, jnp.float32))
    assert Xs.shape == (SIZES[0] + SIZES[-1], SIZES[0])
    assert Ys.shape == (SIZES[0] + SIZES[-1], SIZES[-1])
    assert Xs.dtype == Ys.dtype == jnp.float32


def test_loss_equals_the_loss_on_every_sample():
    spec, theta, X, Y = _problem()
    objective = flat_objective(spec, "squared")
    Xs, Ys = sufficient_data(spec, "squared", jnp.asarray(X), jnp.asarray(Y))
    for scale in (0.0, 0.3, 1.0, 3.0):         # origin, near it, and far out
        expected = np_squared_loss(scale * theta, SIZES, X, Y)
        got = float(objective(jnp.asarray(scale * theta), Xs, Ys))
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_float64_rows_of_float32_samples_keep_the_loss_to_float64_accuracy():
    spec, theta, X, Y = _problem()
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    Xs, Ys = sufficient_data(spec, "squared", jnp.asarray(X32), jnp.asarray(Y32),
                             dtype=jnp.float64)
    assert Xs.dtype == Ys.dtype == jnp.float64
    expected = np_squared_loss(theta, SIZES, X32.astype(np.float64), Y32.astype(np.float64))
    got = float(flat_objective(spec, "squared")(jnp.asarray(theta), Xs, Ys))
    assert got == pytest.approx(expected, rel=1e-12)


def test_gradient_matches_finite_differences_on_every_sample():
    spec, theta, X, Y = _problem(1)
    Xs, Ys = sufficient_data(spec, "squared", jnp.asarray(X), jnp.asarray(Y))
    grad = np.asarray(jax.grad(flat_objective(spec, "squared"))(jnp.asarray(theta), Xs, Ys))
    f, h = _np_loss(X, Y), 1e-6
    E = np.eye(theta.size) * h
    fd = np.array([(f(theta + e) - f(theta - e)) / (2 * h) for e in E])
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-8)


def test_hessian_matches_finite_differences_on_every_sample():
    spec, theta, X, Y = _problem(2)
    Xs, Ys = sufficient_data(spec, "squared", jnp.asarray(X), jnp.asarray(Y))
    H = np.asarray(hessian_matrix(flat_objective(spec, "squared"), jnp.asarray(theta), Xs, Ys))
    reference = fd_hessian(_np_loss(X, Y), theta)
    np.testing.assert_allclose(H, reference, atol=2e-6 * np.abs(reference).max())


def test_induced_model_value_is_the_samples_least_squares():
    # With widths ≥ d_y the net's tangent maps B = Σ_j α_j ∂W/∂θ_j at a generic θ are all
    # d_y × d_x matrices, so the induced model (THEORY.md §4) is plain least squares on X.
    spec, theta, X, Y = _problem(4)
    Xs, Ys = sufficient_data(spec, "squared", jnp.asarray(X), jnp.asarray(Y))
    B, *_ = np.linalg.lstsq(X, Y, rcond=None)
    expected = 0.5 * np.sum((X @ B - Y) ** 2) / M
    got = induced_model_loss(flat_predictor(spec), jnp.asarray(theta), Xs, Ys)
    assert got == pytest.approx(expected, rel=1e-9)
    assert got < np_squared_loss(theta, SIZES, X, Y)   # θ itself is far from critical


@pytest.mark.parametrize("kind,loss,m", [
    ("mlp", "squared", M),              # a nonlinear net: no finite statistic
    ("linear", "cross_entropy", M),     # not a quadratic in the outputs
    ("linear", "squared", 6),           # m ≤ d_x + d_y: nothing to save
])
def test_returns_the_data_itself_when_it_does_not_apply(kind, loss, m):
    _, _, X, Y = _problem(3, m)
    spec = make_model(kind, SIZES[0], SIZES[-1], SIZES[1:-1])
    X, Y = jnp.asarray(X), jnp.asarray(Y)
    Xs, Ys = sufficient_data(spec, loss, X, Y)
    assert Xs is X and Ys is Y


def test_bad_shapes_are_a_message():
    spec, _, X, Y = _problem()
    for bad_x, bad_y in ((X[:, 0], Y), (X, Y[:10]), (X[None], Y)):
        with pytest.raises(InputError, match="must be"):
            sufficient_data(spec, "squared", bad_x, bad_y)
