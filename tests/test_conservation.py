"""Balancedness: matrices against numpy by hand, and conservation by gradient flow checked
through gradient descent at two step sizes over the same time (drift O(η))."""

from __future__ import annotations

import numpy as np
import pytest

from compute import InputError, make_model, run_path
from compute._conservation import balancedness, balancedness_drift
from tests.reference import np_layers


def _by_hand(theta, sizes, bias, diagonal):
    blocks = np_layers(theta, sizes, bias)
    mats = []
    for (W, b), (V, _) in zip(blocks[:-1], blocks[1:], strict=True):
        D = V.T @ V - W @ W.T - (np.outer(b, b) if bias else 0.0)
        mats.append(np.diag(np.diag(D)) if diagonal else D)
    return mats


@pytest.mark.parametrize("kind, activation, bias", [
    ("linear", "identity", False), ("mlp", "identity", True), ("mlp", "relu", True)])
def test_balancedness_matches_numpy_for_three_layers(kind, activation, bias):
    rng = np.random.default_rng(0)
    widths = [4, 3]
    spec = make_model(kind, 3, 2, widths, activation=activation, bias=bias)
    theta = rng.standard_normal(spec.n_params)
    got = balancedness(spec, theta)
    want = _by_hand(theta, (3, *widths, 2), bias, diagonal=activation != "identity")
    assert [D.shape for D in got] == [(4, 4), (3, 3)]
    for D, E in zip(got, want, strict=True):
        np.testing.assert_allclose(D, E, rtol=1e-12, atol=1e-12)
    # the drift of a two-row "path" is the summed Frobenius change, by hand
    theta2 = theta + 0.1 * rng.standard_normal(spec.n_params)
    want2 = _by_hand(theta2, (3, *widths, 2), bias, diagonal=activation != "identity")
    drift = balancedness_drift(spec, np.stack([theta, theta2]))
    assert drift.shape == (2,) and drift[0] == 0.0
    assert drift[1] == pytest.approx(sum(np.linalg.norm(a - b) for a, b in zip(want2, want,
                                                                                  strict=True)))


def _gd_drift(spec, X, Y, theta0, lr, steps):
    path = run_path(spec, "squared", theta0, X, Y, optimizer="gd", lr=lr, steps=steps)
    assert path.diverged_at == -1
    final = np.asarray(path.final, np.float64)
    return balancedness_drift(spec, np.stack([theta0, final]))[1], final


@pytest.mark.parametrize("kind, activation, bias", [
    ("linear", "identity", False), ("mlp", "relu", True)])
def test_gradient_descent_drift_is_first_order_in_the_step(kind, activation, bias):
    """GD changes D_k by O(η²) per step, so over a fixed time η·steps the drift is O(η):
    halving η (and doubling the steps) halves it, while the weights themselves move O(1)."""
    rng = np.random.default_rng(1)
    spec = make_model(kind, 3, 2, [4, 3], activation=activation, bias=bias)
    X = rng.standard_normal((30, 3))
    Y = X @ rng.standard_normal((3, 2))
    theta0 = 0.5 * rng.standard_normal(spec.n_params)
    lr, steps = 0.01, 200
    drift, final = _gd_drift(spec, X, Y, theta0, lr, steps)
    drift_half, _ = _gd_drift(spec, X, Y, theta0, lr / 2, 2 * steps)
    assert drift / drift_half == pytest.approx(2.0, rel=0.1)
    # the weights moved: the layer Gram matrices W_k W_kᵀ changed by O(1)
    before, after = np_layers(theta0, spec.layer_sizes, bias), np_layers(final, spec.layer_sizes,
                                                                      bias)
    moved = sum(np.linalg.norm(W1 @ W1.T - W0 @ W0.T)
                for (W0, _), (W1, _) in zip(before[:-1], after[:-1], strict=True))
    assert moved > 0.3
    assert drift < 0.02 * moved
    if activation == "relu":  # only the diagonal is conserved: the full matrices drift O(1)
        full = sum(np.linalg.norm(a - b) for a, b in zip(
            _by_hand(final, spec.layer_sizes, bias, diagonal=False),
            _by_hand(theta0, spec.layer_sizes, bias, diagonal=False), strict=True))
        assert full > 10 * drift


def test_rejects_activations_without_rescaling_symmetry_and_bad_shapes():
    tanh = make_model("mlp", 2, 1, [3], activation="tanh")
    with pytest.raises(InputError, match="rescaling"):
        balancedness(tanh, np.zeros(tanh.n_params))
    no_hidden = make_model("linear", 2, 1, [])
    with pytest.raises(InputError, match="hidden"):
        balancedness(no_hidden, np.zeros(no_hidden.n_params))
    spec = make_model("linear", 2, 1, [3])
    with pytest.raises(InputError, match="shape"):
        balancedness_drift(spec, np.zeros(spec.n_params))
    with pytest.raises(InputError, match="NaN"):
        balancedness(spec, np.full(spec.n_params, np.nan))


# ---- the symmetry's flat directions


def _tangent_setup(activation, bias, seed=0):
    from tests.reference import np_squared_loss

    rng = np.random.default_rng(seed)
    sizes = [4, 3, 3, 2]  # narrowing: W_k of full row rank, so the generators act freely
    kind = "linear" if activation == "identity" and not bias else "mlp"
    spec = make_model(kind, 4, 2, [3, 3], activation=activation, bias=bias)
    theta = rng.normal(size=spec.n_params)
    X, Y = rng.normal(size=(20, 4)), rng.normal(size=(20, 2))

    def loss(t):
        return np_squared_loss(t, sizes, X, Y, act=activation, bias=bias)

    return spec, theta, loss, rng


@pytest.mark.parametrize("activation, bias, count", [
    ("identity", False, 3 * 3 + 3 * 3), ("relu", True, 3 + 3)])
def test_rescaling_directions_keep_the_loss_to_first_order(activation, bias, count):
    from compute._conservation import rescaling_directions

    spec, theta, loss, rng = _tangent_setup(activation, bias)
    V = rescaling_directions(spec, theta)
    assert V.shape == (count, spec.n_params)
    assert np.linalg.matrix_rank(V) == count  # generic weights: independent generators
    eps = 1e-5
    slopes = [(loss(theta + eps * v) - loss(theta - eps * v)) / (2 * eps * np.linalg.norm(v))
              for v in V]
    u = rng.normal(size=spec.n_params)
    random_slope = (loss(theta + eps * u) - loss(theta - eps * u)) / (2 * eps
                                                                      * np.linalg.norm(u))
    assert abs(random_slope) > 1e-2  # the check could fail: a generic direction has slope
    assert np.max(np.abs(slopes)) < 1e-8


def test_rescaling_directions_are_flat_hessian_directions_at_a_critical_point():
    """At a global minimum of a one-hidden-layer linear net (built by hand: W₂W₁ equals the
    least-squares map), vᵀHv = 0 along every symmetry tangent (second differences)."""
    from compute._conservation import rescaling_directions
    from tests.reference import np_squared_loss

    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
    B = np.linalg.lstsq(X, Y, rcond=None)[0].T          # (2, 3): the least-squares map
    M = rng.normal(size=(3, 3)) + 3 * np.eye(3)         # W₁, invertible
    theta = np.concatenate([M.ravel(), (B @ np.linalg.inv(M)).ravel()])
    spec = make_model("linear", 3, 2, [3])

    def loss(t):
        return np_squared_loss(t, [3, 3, 2], X, Y)

    eps = 1e-4
    grad = np.array([(loss(theta + eps * e) - loss(theta - eps * e)) / (2 * eps)
                     for e in np.eye(theta.size)])
    assert np.linalg.norm(grad) < 1e-8                  # a critical point indeed
    V = rescaling_directions(spec, theta)
    assert V.shape == (9, theta.size)
    curv = [(loss(theta + eps * v) - 2 * loss(theta) + loss(theta - eps * v))
            / (eps ** 2 * (v @ v)) for v in V]
    u = rng.normal(size=theta.size)
    random_curv = (loss(theta + eps * u) - 2 * loss(theta) + loss(theta - eps * u)) / (
        eps ** 2 * (u @ u))
    assert random_curv > 1e-2
    assert np.max(np.abs(curv)) < 1e-5
