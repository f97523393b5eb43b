"""Honest slices and action planes (compute._honest) against numpy references.

References: tests/reference.py's numpy forward pass and loss, numpy least squares for plane
coordinates, a central finite-difference Hessian of the numpy loss, and the closed form of
THEORY.md §1 for the Hessian at the origin of a one-hidden-layer linear net (±σ_j(YᵀX)/m).
"""

from __future__ import annotations

import numpy as np
import pytest

from compute import InputError, make_model
from compute._honest import action_plane, checkpoint_plane, honest_slice
from tests.reference import fd_hessian, np_squared_loss

MLP_SIZES = (3, 5, 2)


@pytest.fixture
def mlp_problem(rng):
    spec = make_model("mlp", 3, 2, (5,), activation="tanh", bias=True)
    X = rng.standard_normal((40, 3))
    Y = rng.standard_normal((40, 2))
    return spec, X, Y


def np_loss(theta, X, Y):
    return np_squared_loss(theta, MLP_SIZES, X, Y, act="tanh", bias=True)


def lstsq_coords(points, center, d1, d2):
    D = np.column_stack([d1, d2])
    return np.linalg.lstsq(D, (points - center).T, rcond=None)[0].T


def test_true_and_slice_losses_match_numpy_with_a_skewed_plane(rng, mlp_problem):
    spec, X, Y = mlp_problem
    n = spec.n_params
    center = rng.standard_normal(n)
    d1 = rng.standard_normal(n)
    d2 = 0.7 * d1 + 0.4 * rng.standard_normal(n)   # far from orthogonal, unequal lengths
    W = center + 0.5 * rng.standard_normal((12, n))
    hs = honest_slice(spec, "squared", W, center, d1, d2, X, Y)
    ab = lstsq_coords(W, center, d1, d2)
    np.testing.assert_allclose(np.column_stack([hs.alpha, hs.beta]), ab, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(hs.true_loss, [np_loss(w, X, Y) for w in W], rtol=1e-12)
    projected = center + ab[:, :1] * d1 + ab[:, 1:] * d2
    np.testing.assert_allclose(hs.slice_loss, [np_loss(p, X, Y) for p in projected],
                               rtol=1e-9)
    residual = np.linalg.norm(W - projected, axis=1)
    np.testing.assert_allclose(hs.distance, residual, rtol=1e-9)
    np.testing.assert_allclose(hs.relative_distance,
                               residual / np.linalg.norm(W - center, axis=1), rtol=1e-9)
    assert hs.max_gap == pytest.approx(np.max(np.abs(hs.true_loss - hs.slice_loss)))
    assert hs.max_gap > 1e-3  # points off a random plane: the slice does not show their loss


def test_points_in_the_plane_have_zero_distance_and_equal_losses(rng, mlp_problem):
    spec, X, Y = mlp_problem
    n = spec.n_params
    center, d1, d2 = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    ab = rng.uniform(-2, 2, size=(9, 2))
    W = center + ab[:, :1] * d1 + ab[:, 1:] * d2
    W[0] = center                                       # relative distance 0 by convention
    ab[0] = 0.0
    hs = honest_slice(spec, "squared", W, center, d1, d2, X, Y)
    np.testing.assert_allclose(hs.alpha, ab[:, 0], atol=1e-10)
    np.testing.assert_allclose(hs.beta, ab[:, 1], atol=1e-10)
    np.testing.assert_allclose(hs.distance, 0.0, atol=1e-10)
    np.testing.assert_allclose(hs.relative_distance, 0.0, atol=1e-9)
    np.testing.assert_allclose(hs.slice_loss, hs.true_loss, rtol=1e-10)
    np.testing.assert_allclose(hs.true_loss, [np_loss(w, X, Y) for w in W], rtol=1e-12)


def test_an_off_plane_point_is_at_its_known_distance(rng, mlp_problem):
    spec, X, Y = mlp_problem
    n = spec.n_params
    center, d1, d2 = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    D = np.column_stack([d1, d2])
    off = rng.standard_normal(n)
    off -= D @ np.linalg.solve(D.T @ D, D.T @ off)     # orthogonal to the plane
    off /= np.linalg.norm(off)
    heights = np.array([0.0, 0.3, 1.7, -2.5])
    a, b = 0.8, -1.3
    W = center + a * d1 + b * d2 + heights[:, None] * off
    hs = honest_slice(spec, "squared", W, center, d1, d2, X, Y)
    np.testing.assert_allclose(hs.distance, np.abs(heights), atol=1e-10)
    np.testing.assert_allclose(hs.alpha, a, atol=1e-10)
    np.testing.assert_allclose(hs.beta, b, atol=1e-10)
    in_plane = np_loss(center + a * d1 + b * d2, X, Y)
    np.testing.assert_allclose(hs.slice_loss, in_plane, rtol=1e-10)
    np.testing.assert_allclose(hs.true_loss, [np_loss(w, X, Y) for w in W], rtol=1e-12)
    norms = np.linalg.norm(W - center, axis=1)
    np.testing.assert_allclose(hs.relative_distance, np.abs(heights) / norms, rtol=1e-9,
                               atol=1e-12)


def test_a_small_memory_budget_splits_samples_and_rows_without_changing_values(rng):
    spec = make_model("mlp", 3, 2, (8,), activation="tanh", bias=True)
    sizes = (3, 8, 2)
    X, Y = rng.standard_normal((300, 3)), rng.standard_normal((300, 2))
    n = spec.n_params
    center, d1, d2 = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    W = center + rng.standard_normal((5, n))
    hs = honest_slice(spec, "squared", W, center, d1, d2, X, Y, memory_budget=2**16)
    ref = [np_squared_loss(w, sizes, X, Y, act="tanh", bias=True) for w in W]
    np.testing.assert_allclose(hs.true_loss, ref, rtol=1e-12)


def test_cross_entropy_true_loss_matches_numpy(rng):
    spec = make_model("mlp", 2, 3, (4,), activation="relu", bias=True)
    X = rng.standard_normal((25, 2))
    Y = np.eye(3)[rng.integers(0, 3, 25)]
    n = spec.n_params
    center, d1, d2 = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    W = center + rng.standard_normal((4, n))
    hs = honest_slice(spec, "cross_entropy", W, center, d1, d2, X, Y)
    from tests.reference import np_forward

    def ce(theta):
        z = np_forward(theta, (2, 4, 3), X, act="relu", bias=True)
        z = z - z.max(axis=1, keepdims=True)
        return -np.mean(np.sum(Y * (z - np.log(np.exp(z).sum(axis=1, keepdims=True))), axis=1))

    np.testing.assert_allclose(hs.true_loss, [ce(w) for w in W], rtol=1e-11)


def test_honest_slice_bad_input(rng, mlp_problem):
    spec, X, Y = mlp_problem
    n = spec.n_params
    c, d = rng.standard_normal(n), rng.standard_normal(n)
    W = rng.standard_normal((3, n))
    with pytest.raises(InputError, match="parallel"):
        honest_slice(spec, "squared", W, c, d, 2.0 * d, X, Y)
    with pytest.raises(InputError, match="weights"):
        honest_slice(spec, "squared", W[:, :-1], c, d, c, X, Y)
    bad = W.copy()
    bad[1, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        honest_slice(spec, "squared", bad, c, d, c, X, Y)
    with pytest.raises(InputError, match="loss"):
        honest_slice(spec, "hinge", W, c, d, c, X, Y)
    with pytest.raises(InputError, match="columns"):
        honest_slice(spec, "squared", W, c, d, c, X[:, :2], Y)
    with pytest.raises(InputError, match="memory budget"):
        honest_slice(spec, "squared", W, c, d, c, X, Y, memory_budget=10)


# --------------------------------------------------------------------------- action plane


def linear_problem(rng, widths):
    X = rng.standard_normal((30, 3))
    Y = X @ rng.standard_normal((3, 2)) + 0.3 * rng.standard_normal((30, 2))
    spec = make_model("linear", 3, 2, widths)
    sizes = (3, *widths, 2)
    loss = lambda t: np_squared_loss(t, sizes, X, Y)
    return spec, X, Y, loss


def lstsq_minimiser_one_hidden(X, Y, d_1):
    """A global minimiser of the 3–d_1–2 linear net from numpy's least squares (d_1 ≥ 2)."""
    B = np.linalg.lstsq(X, Y, rcond=None)[0].T         # (2, 3), the unconstrained optimum
    W1 = np.zeros((d_1, 3))
    W2 = np.zeros((2, d_1))
    W1[:2], W2[:, :2] = B, np.eye(2)
    return np.concatenate([W1.ravel(), W2.ravel()])


def plane_meets_eigenspace(d1, d2, Q):
    """Largest cosine of the principal angles between span(d1, d2) and span(Q)."""
    P = np.linalg.qr(np.column_stack([d1, d2]))[0]
    return float(np.linalg.svd(P.T @ np.linalg.qr(Q)[0], compute_uv=False).max())


@pytest.mark.parametrize("method", ["exact", "lanczos"])
def test_action_plane_at_the_origin_of_a_one_hidden_layer_net(rng, method):
    spec, X, Y, loss = linear_problem(rng, (2,))
    theta_min = lstsq_minimiser_one_hidden(X, Y, 2)
    origin = np.zeros(spec.n_params)
    result = action_plane(spec, "squared", theta_min, origin, X, Y, method=method)
    plane = result.plane
    sigma1 = np.linalg.svd(Y.T @ X, compute_uv=False)[0] / X.shape[0]
    assert result.negative and result.note == ""
    assert result.lambda_min == pytest.approx(-sigma1, rel=1e-8)
    assert result.grad_norm < 1e-12
    H = fd_hessian(loss, origin, h=1e-3)
    evals, evecs = np.linalg.eigh(H)
    assert evals[0] == pytest.approx(-sigma1, rel=1e-5)
    u, w = plane.direction1, plane.direction2
    D = np.linalg.norm(theta_min)
    np.testing.assert_allclose(u, theta_min / D, atol=1e-12)
    assert abs(u @ w) < 1e-10 and np.linalg.norm(w) == pytest.approx(1.0)
    if method == "exact":  # λ_min is double (d_1 = 2): w is an exact eigenvector ⟂ u
        np.testing.assert_allclose(H @ w, evals[0] * w, atol=1e-5 * sigma1)
    else:  # Lanczos finds one vector of the eigenspace; the plane contains it
        E = evecs[:, np.abs(evals - evals[0]) < 1e-4 * sigma1]
        assert plane_meets_eigenspace(u, w, E) > 1 - 1e-6
    # The minimum lies in the plane, at (D, 0), inside the ranges.
    coords = np.linalg.lstsq(np.column_stack([u, w]), theta_min, rcond=None)[0]
    np.testing.assert_allclose(coords, [D, 0.0], atol=1e-10)
    assert np.linalg.norm(theta_min - (coords[0] * u + coords[1] * w)) < 1e-10
    assert plane.alpha_range[0] < 0 < D < plane.alpha_range[1]
    assert plane.beta_range[0] < 0 < plane.beta_range[1]
    assert plane.marks["minimum"] == pytest.approx((D, 0.0))
    np.testing.assert_allclose(plane.point(*plane.marks["minimum"]), theta_min, atol=1e-10)


def test_action_plane_contains_a_simple_escape_eigenvector(rng):
    spec, X, Y, loss = linear_problem(rng, (1,))
    theta_min = rng.standard_normal(spec.n_params)      # any second point
    result = action_plane(spec, "squared", theta_min, np.zeros(spec.n_params), X, Y)
    H = fd_hessian(loss, np.zeros(spec.n_params), h=1e-3)
    evals, evecs = np.linalg.eigh(H)
    assert result.eigenvalue == pytest.approx(evals[0], rel=1e-5)
    v = evecs[:, 0]
    assert result.overlap == pytest.approx(abs(v @ theta_min) / np.linalg.norm(theta_min),
                                           abs=1e-5)
    assert plane_meets_eigenspace(result.plane.direction1, result.plane.direction2,
                                  v[:, None]) > 1 - 1e-8


@pytest.mark.slow  # compiles the Hessian of a second model (~3-5 s cold)
def test_action_plane_says_when_the_saddle_has_no_negative_curvature(rng):
    spec, X, Y, loss = linear_problem(rng, (2, 2))      # origin: Hessian exactly 0
    theta_min = rng.standard_normal(spec.n_params)
    H = fd_hessian(loss, np.zeros(spec.n_params), h=1e-3)
    assert np.max(np.abs(H)) < 1e-5                     # the premise, independently
    result = action_plane(spec, "squared", theta_min, np.zeros(spec.n_params), X, Y)
    assert not result.negative
    assert "zero" in result.note and "not an escape direction" in result.note
    assert abs(result.plane.direction1 @ result.plane.direction2) < 1e-12


def test_action_plane_bad_input(rng):
    spec, X, Y, _ = linear_problem(rng, (2,))
    z = np.zeros(spec.n_params)
    with pytest.raises(InputError, match="same point"):
        action_plane(spec, "squared", z, z, X, Y)
    with pytest.raises(InputError, match="saddle"):
        action_plane(spec, "squared", z + 1, z[:-1], X, Y)
    with pytest.raises(InputError, match="margin"):
        action_plane(spec, "squared", z + 1, z, X, Y, span_margin=-1)
    with pytest.raises(InputError, match="method"):
        action_plane(spec, "squared", z + 1, z, X, Y, method="power")


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_plane_goes_through_the_three_chosen_rows(rng):
    n = 7
    steps = np.arange(0, 101, 10)
    W = np.cumsum(rng.standard_normal((steps.size, n)), axis=0)
    plane = checkpoint_plane(W, steps, (10, 50, 100))
    rows = [W[1], W[5], W[10]]
    np.testing.assert_allclose(plane.center, rows[0])
    D = np.column_stack([plane.direction1, plane.direction2])
    for row, name in zip(rows, ("step 10", "step 50", "step 100"), strict=True):
        ab = np.linalg.lstsq(D, row - rows[0], rcond=None)[0]
        np.testing.assert_allclose(rows[0] + D @ ab, row, atol=1e-10)
        np.testing.assert_allclose(plane.marks[name], ab, atol=1e-10)


def test_checkpoint_plane_bad_choices(rng):
    steps = np.arange(0, 50, 10)
    W = rng.standard_normal((5, 4))
    with pytest.raises(InputError, match="not recorded"):
        checkpoint_plane(W, steps, (0, 15, 40))
    with pytest.raises(InputError, match="different"):
        checkpoint_plane(W, steps, (0, 10, 10))
    with pytest.raises(InputError, match="three"):
        checkpoint_plane(W, steps, (0, 10))
    line = np.outer(np.arange(5.0), rng.standard_normal(4))
    with pytest.raises(InputError, match="one line"):
        checkpoint_plane(line, steps, (0, 20, 40))
    still = np.ones((5, 4))
    with pytest.raises(InputError, match="same point"):
        checkpoint_plane(still, steps, (0, 20, 40))
