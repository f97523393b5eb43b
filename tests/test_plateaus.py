"""Saddle passages (compute._plateaus): synthetic curves with known plateaus, the
Baldi–Hornik levels against critical points built in numpy, and a real gradient path."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

import compute
from compute import InputError
from compute._losses import flat_objective
from compute._paths import initial_point, run_path
from compute._plateaus import (
    GRAD_FRACTION,
    deep_linear_saddle_levels,
    find_plateaus,
    locate_plateau_critical_points,
    match_baldi_hornik_levels,
)

CENTRES = np.array([200.0, 600.0, 1000.0])
AMPLITUDES = np.array([4.0, 2.0, 1.0])
WIDTH = 10.0
END = 0.5


def logistic_staircase(T=1500):
    """Loss falling in three logistic drops; |dL/dt| as the gradient norm."""
    t = np.arange(T + 1, dtype=np.float64)
    x = (t[:, None] - CENTRES) / WIDTH
    sig = 1.0 / (1.0 + np.exp(-x))
    loss = END + np.sum(AMPLITUDES * (1.0 - sig), axis=1)
    grad = np.sum(AMPLITUDES * sig * (1.0 - sig) / WIDTH, axis=1)
    return loss, grad


def expected_plateaus():
    """Where |dL/dt| < GRAD_FRACTION × its peak (A₁/4w), drop by drop, in closed form.

    Near drop i the gradient is A_i σ'(x)/w with σ'(x) = 1/(4 cosh²(x/2)), so it crosses
    the threshold at |x| = 2 arccosh(√(A_i / (GRAD_FRACTION · A_1))).
    """
    half = WIDTH * 2 * np.arccosh(np.sqrt(AMPLITUDES / (GRAD_FRACTION * AMPLITUDES[0])))
    starts = [0.0, *(CENTRES[:-1] + half[:-1])]
    stops = CENTRES - half
    return [(int(np.floor(a)) + (a > 0), int(np.floor(b)) + 1) for a, b in zip(starts, stops,
                                                                              strict=True)]


def test_plateaus_of_a_synthetic_staircase_are_found_where_expected():
    loss, grad = logistic_staircase()
    plateaus = find_plateaus(loss, grad)
    expected = expected_plateaus()
    assert len(plateaus) == 3
    for p, (entry, exit_) in zip(plateaus, expected, strict=True):
        assert abs(p.entry - entry) <= 1 and abs(p.exit - exit_) <= 1, (p, entry, exit_)
    levels = END + np.array([AMPLITUDES.sum(), AMPLITUDES[1:].sum(), AMPLITUDES[2]])
    np.testing.assert_allclose([p.loss for p in plateaus], levels, rtol=0.01)
    for p in plateaus:
        assert p.entry <= p.closest_step < p.exit
        assert p.grad_norm == pytest.approx(grad[p.entry:p.exit].min())


def test_lambda_min_comes_from_the_tracked_step_nearest_the_slowest_point():
    loss, grad = logistic_staircase()
    steps = np.arange(0, 1501, 50)
    lam = -np.arange(steps.size, dtype=float)  # value k at the k-th tracked step
    plateaus = find_plateaus(loss, grad, lambda_min=lam, lambda_steps=steps)
    for p in plateaus:
        inside = steps[(steps >= p.entry) & (steps < p.exit)]
        nearest = inside[np.argmin(np.abs(inside - p.closest_step))]
        assert p.lambda_min == -float(np.flatnonzero(steps == nearest)[0])
    untracked = find_plateaus(loss, grad)
    assert all(np.isnan(p.lambda_min) for p in untracked)


def test_noise_is_smoothed_away():
    loss, grad = logistic_staircase()
    noisy = grad * np.exp(0.5 * np.random.default_rng(0).standard_normal(grad.size))
    plateaus = find_plateaus(loss, noisy, smooth=15)
    assert len(plateaus) == 3
    for p, (entry, exit_) in zip(plateaus, expected_plateaus(), strict=True):
        assert abs(p.entry - entry) <= 15 and abs(p.exit - exit_) <= 15


def test_a_run_stuck_on_a_plateau_needs_the_reference_loss():
    loss, grad = logistic_staircase()
    loss, grad = loss[:801], grad[:801]  # stops between the second and third drop
    assert len(find_plateaus(loss, grad)) == 2  # the last one is "the end" ...
    with_reference = find_plateaus(loss, grad, reference_loss=END)
    assert len(with_reference) == 3  # ... unless we know the loss can go lower
    assert with_reference[-1].exit == 801


def test_flat_or_non_finite_paths_have_no_plateaus():
    assert find_plateaus(np.ones(100), np.zeros(100)) == []
    loss, grad = logistic_staircase()
    cut = find_plateaus(loss[:700], grad[:700])
    loss[700] = np.nan  # only the finite prefix (steps 0–699) is read
    assert find_plateaus(loss, grad) == cut and len(cut) == 2
    with pytest.raises(InputError):
        find_plateaus(np.ones(10), np.ones(9))


def test_saddle_levels_equal_losses_at_critical_points_built_in_numpy():
    rng = np.random.default_rng(3)
    m, d_x, d_y, p = 30, 5, 3, 2
    X, Y = rng.standard_normal((m, d_x)), rng.standard_normal((m, d_y))
    levels, subsets = deep_linear_saddle_levels(X, Y, (p,))
    # Independent construction (Baldi & Hornik 1989): for an eigenvector subset I of
    # Σ = C (XᵀX)⁻¹ Cᵀ, W2 = [U_I 0], W1 = [U_Iᵀ C (XᵀX)⁻¹; 0] is critical.
    C = Y.T @ X
    B = np.linalg.solve(X.T @ X, C.T).T
    lam, U = np.linalg.eigh(C @ np.linalg.solve(X.T @ X, C.T))
    U = U[:, np.argsort(lam)[::-1]]
    losses = []
    for k in range(p + 1):
        for subset in itertools.combinations(range(d_y), k):
            if subset == tuple(range(p)):
                continue  # the global minimum
            W2 = np.zeros((d_y, p))
            W1 = np.zeros((p, d_x))
            W2[:, :k] = U[:, list(subset)]
            W1[:k] = U[:, list(subset)].T @ B
            R = X @ W1.T @ W2.T - Y
            grad_W2 = R.T @ (X @ W1.T) / m
            grad_W1 = (R @ W2).T @ X / m
            assert np.abs(grad_W1).max() < 1e-10 and np.abs(grad_W2).max() < 1e-10
            losses.append(0.5 * np.sum(R * R) / m)
    np.testing.assert_allclose(levels, np.sort(losses)[::-1], rtol=1e-12)
    assert subsets[0] == () and len(subsets) == len(losses)


def test_many_outputs_keep_only_the_nested_levels():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((50, 20)), rng.standard_normal((50, 16))
    levels, subsets = deep_linear_saddle_levels(X, Y, (8,), max_subsets=100)
    assert subsets == [tuple(range(k)) for k in range(8)]
    assert np.all(np.diff(levels) < 0)


def test_matching_pairs_each_plateau_with_the_nearest_level():
    loss, grad = logistic_staircase()
    plateaus = find_plateaus(loss, grad)
    levels = [7.5, 3.52, 1.0]  # the third plateau (1.5) is 50 % off any level
    matched = match_baldi_hornik_levels(plateaus, levels, rtol=0.02)
    assert [p.level_index for p in matched] == [0, 1, -1]
    assert matched[0].matched_level == 7.5 and np.isnan(matched[2].matched_level)
    assert matched[2].level_error == pytest.approx(abs(plateaus[2].loss - 1.0) / 1.0)


@pytest.fixture(scope="module")
def staircase_path():
    """Gradient descent from a small init on data with singular values 3, 1, 0.3."""
    rng = np.random.default_rng(0)
    m, d_x, d_y = 40, 5, 3
    Q, _ = np.linalg.qr(rng.standard_normal((m, d_x)))
    X = np.sqrt(m) * Q  # XᵀX/m = I
    U, _ = np.linalg.qr(rng.standard_normal((d_y, d_y)))
    V, _ = np.linalg.qr(rng.standard_normal((d_x, d_y)))
    Y = X @ ((U * np.array([3.0, 1.0, 0.3])) @ V.T).T
    spec = compute.make_model("linear", d_x, d_y, (2,))
    theta0 = initial_point(spec, init="gaussian", scale=1e-2, seed=0, dtype=jnp.float64)
    path = run_path(spec, "squared", theta0, X, Y, lr=0.01, steps=1500, lambda_every=10)
    return spec, X, Y, path


def test_a_gradient_path_pauses_at_the_baldi_hornik_levels(staircase_path):
    spec, X, Y, path = staircase_path
    levels, subsets = deep_linear_saddle_levels(X, Y, (2,))
    plateaus = match_baldi_hornik_levels(
        find_plateaus(path.loss, path.grad_norm, lambda_min=path.lambda_min,
                      lambda_steps=path.lambda_steps), levels, rtol=0.01)
    # Strong mode first: the origin (loss ½ Σ s² = 5.045), then {s=3} learnt (0.545).
    assert [subsets[p.level_index] for p in plateaus] == [(), (0,)]
    assert plateaus[0].entry == 0 and plateaus[0].exit < plateaus[1].entry
    # Both are strict saddles: λ_min ≈ −s₁ = −3 at the origin, −s₂ = −1 at the second.
    np.testing.assert_allclose([p.lambda_min for p in plateaus], [-3.0, -1.0], rtol=0.01)


def test_the_saddle_finder_lands_on_the_saddle_of_each_plateau(staircase_path):
    spec, X, Y, path = staircase_path
    plateaus = find_plateaus(path.loss, path.grad_norm)
    located = locate_plateau_critical_points(
        plateaus, path.weights, path.weight_steps, flat_objective(spec, "squared"), X, Y,
        spec=spec, global_min=0.5 * 0.3 ** 2)
    np.testing.assert_allclose([p.critical_point.loss for p in located], [5.045, 0.545],
                               rtol=1e-9)
    assert [p.critical_point.classification.verdict for p in located] == ["strict saddle"] * 2
    for p in located:
        assert p.critical_theta.shape == (spec.n_params,)
