"""Tests of compute._surface: every cell is the loss at its point, computed here in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from compute._errors import InputError
from compute._limits import MAX_CUT_POINTS, MAX_GRID, MAX_SAMPLES, MAX_WIDTH
from compute._models import ModelSpec
from compute._planes import filter_normalised_plane, grid_coordinates, random_plane
from compute._surface import (
    _chunk_plan,
    _direct_kernel,
    deep_linear_surface_polynomial,
    evaluate_polynomial_surface,
    loss_cut,
    loss_surface,
    surface_method,
)

ACT = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "identity": lambda z: z}


def np_loss(spec, flat, X, Y, loss="squared"):
    """The loss at flat parameters, from THEORY.md's definitions (numpy, float64)."""
    h, offset = X, 0
    sizes = spec.layer_sizes
    for k in range(1, len(sizes)):
        rows, cols = sizes[k], sizes[k - 1]
        W = flat[offset:offset + rows * cols].reshape(rows, cols)
        offset += rows * cols
        h = h @ W.T
        if spec.bias:
            h = h + flat[offset:offset + rows]
            offset += rows
        if k < len(sizes) - 1:
            h = ACT[spec.activation](h)
    m = X.shape[0]
    if loss == "squared":
        return np.sum((h - Y) ** 2) / (2 * m)
    if h.shape[1] == 1:
        return np.mean(np.log1p(np.exp(-Y * h)))
    shifted = h - h.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return -np.sum(Y * log_p) / m


def problem(rng, sizes, activation, bias, m=40):
    spec = ModelSpec(sizes, activation, bias)
    X = rng.standard_normal((m, sizes[0]))
    Y = rng.standard_normal((m, sizes[-1]))
    theta = rng.standard_normal(spec.n_params) / np.sqrt(max(sizes))
    return spec, theta, X, Y


def check_cells(spec, loss, plane_center, d1, d2, alphas, betas, X, Y, surface, rng,
                rtol, cells=12):
    assert surface.shape == (len(betas), len(alphas))
    for _ in range(cells):
        i, j = rng.integers(len(betas)), rng.integers(len(alphas))
        point = plane_center + alphas[j] * d1 + betas[i] * d2
        assert surface[i, j] == pytest.approx(np_loss(spec, point, X, Y, loss), rel=rtol), (i, j)


@pytest.mark.parametrize("sizes,activation,bias", [
    ((3, 2), "identity", False),
    ((3, 5, 4, 2), "identity", False),
    ((3, 6, 2), "relu", True),
    ((2, 5, 5, 3), "tanh", True),
    ((3, 4, 4, 1), "relu", False),
])
def test_every_cell_is_the_loss_at_its_point(rng, sizes, activation, bias):
    spec, theta, X, Y = problem(rng, sizes, activation, bias)
    plane = random_plane(spec, theta, seed=1, span=1.5)
    alphas, betas = np.linspace(-1.5, 1.5, 9), np.linspace(-1.0, 2.0, 7)   # not square
    surface = loss_surface(spec, "squared", plane.center, plane.direction1, plane.direction2,
                           alphas, betas, X, Y, method="direct", dtype=np.float64)
    check_cells(spec, "squared", plane.center, plane.direction1, plane.direction2, alphas,
                betas, X, Y, surface, rng, rtol=1e-12)


def test_float32_surface_is_close(rng):
    spec, theta, X, Y = problem(rng, (3, 8, 8, 2), "relu", True, m=200)
    plane = filter_normalised_plane(spec, theta, seed=2, span=1.0)
    alphas, betas = grid_coordinates(plane, 11)
    surface = loss_surface(spec, "squared", plane.center, plane.direction1, plane.direction2,
                           alphas, betas, X.astype(np.float32), Y.astype(np.float32))
    check_cells(spec, "squared", plane.center, plane.direction1, plane.direction2, alphas,
                betas, X, Y, surface, rng, rtol=2e-5)


@pytest.mark.parametrize("d_y", [1, 3])
def test_cross_entropy_cells(rng, d_y):
    spec, theta, X, _ = problem(rng, (2, 6, d_y), "tanh", True, m=30)
    if d_y == 1:
        Y = np.where(rng.random((30, 1)) < 0.5, -1.0, 1.0)
    else:
        Y = np.eye(3)[rng.integers(0, 3, 30)]
    plane = random_plane(spec, theta, seed=0, span=2.0)
    alphas, betas = grid_coordinates(plane, 6)
    surface = loss_surface(spec, "cross_entropy", plane.center, plane.direction1,
                           plane.direction2, alphas, betas, X, Y, dtype=np.float64)
    check_cells(spec, "cross_entropy", plane.center, plane.direction1, plane.direction2,
                alphas, betas, X, Y, surface, rng, rtol=1e-12)


def _targets(rng, loss, m, d_y):
    if loss == "squared":
        return rng.standard_normal((m, d_y))
    if d_y == 1:
        return np.where(rng.random((m, 1)) < 0.5, -1.0, 1.0)
    return np.eye(d_y)[rng.integers(0, d_y, m)]


@pytest.mark.parametrize("activation,loss,d_y", [
    ("relu", "squared", 3), ("relu", "cross_entropy", 1), ("relu", "cross_entropy", 4),
    ("identity", "squared", 2), ("identity", "cross_entropy", 3)])
def test_biases_as_offsets_with_large_biases(rng, activation, loss, d_y):
    # ReLU/identity nets with biases carry each hidden bias as a per-unit offset
    # (relu(v + t) = max(v, −t) + t); large biases put many units at the kink and make the
    # offsets dominate the activations
    spec, theta, X, _ = problem(rng, (3, 6, 5, 4, d_y), activation, True, m=37)
    Y = _targets(rng, loss, 37, d_y)
    offset = 0
    for (rows, cols), b in spec.layer_shapes():
        offset += rows * cols
        theta[offset:offset + b] *= 40.0
        offset += b
    plane = random_plane(spec, theta, seed=3, span=1.0)
    alphas, betas = np.linspace(-1, 1, 5), np.linspace(-0.5, 1.5, 4)
    surface = loss_surface(spec, loss, plane.center, plane.direction1, plane.direction2,
                           alphas, betas, X, Y, method="direct", dtype=np.float64)
    check_cells(spec, loss, plane.center, plane.direction1, plane.direction2, alphas, betas,
                X, Y, surface, rng, rtol=1e-11)


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_masked_sample_chunks_with_offsets(rng, loss):
    # a tiny budget splits the 301 samples into padded, masked chunks
    spec, theta, X, _ = problem(rng, (3, 8, 8, 3), "relu", True, m=301)
    Y = _targets(rng, loss, 301, 3)
    plane = random_plane(spec, theta, seed=5, span=1.0)
    alphas, betas = grid_coordinates(plane, 5)
    _, n_chunks, _ = _chunk_plan(spec, 301, 25, 8, 2**16)
    assert n_chunks > 1
    surface = loss_surface(spec, loss, plane.center, plane.direction1, plane.direction2,
                           alphas, betas, X, Y, dtype=np.float64, memory_budget=2**16)
    check_cells(spec, loss, plane.center, plane.direction1, plane.direction2, alphas, betas,
                X, Y, surface, rng, rtol=1e-12, cells=6)


@pytest.mark.parametrize("hidden", [0, 1, 2, 3])
def test_polynomial_equals_direct_for_deep_linear(rng, hidden):
    spec, theta, X, Y = problem(rng, (4, *([3] * hidden), 2), "identity", False, m=60)
    plane = random_plane(spec, theta, seed=hidden, span=1.0)
    alphas, betas = grid_coordinates(plane, 9)
    args = (spec, "squared", plane.center, plane.direction1, plane.direction2, alphas, betas,
            X, Y)
    assert surface_method(spec, "squared") == "polynomial"
    poly = loss_surface(*args)                   # auto picks the polynomial
    direct = loss_surface(*args, method="direct", dtype=np.float64)
    np.testing.assert_allclose(poly, direct, rtol=1e-9)
    coeffs = deep_linear_surface_polynomial(spec, plane.center, plane.direction1,
                                            plane.direction2, X, Y)
    L = hidden + 1
    assert coeffs.shape == (2 * L + 1, 2 * L + 1)
    p, q = np.indices(coeffs.shape)
    assert not np.any(coeffs[p + q > 2 * L])
    # the constant term is the loss at the center
    assert coeffs[0, 0] == pytest.approx(np_loss(spec, plane.center, X, Y), rel=1e-12)


def test_polynomial_with_biases_and_cut(rng):
    spec, theta, X, Y = problem(rng, (3, 4, 4, 2), "identity", True, m=50)
    plane = random_plane(spec, theta, seed=9, span=2.0)
    alphas, betas = grid_coordinates(plane, 7)
    poly = loss_surface(spec, "squared", plane.center, plane.direction1, plane.direction2,
                        alphas, betas, X, Y, method="polynomial")
    check_cells(spec, "squared", plane.center, plane.direction1, plane.direction2, alphas,
                betas, X, Y, poly, rng, rtol=1e-9)
    ts = np.linspace(-3, 3, 13)
    cut = loss_cut(spec, "squared", plane.center, plane.direction1, ts, X, Y)
    expected = [np_loss(spec, plane.center + t * plane.direction1, X, Y) for t in ts]
    np.testing.assert_allclose(cut, expected, rtol=1e-9)


def test_evaluate_polynomial_surface_by_hand():
    c = np.zeros((3, 3))
    c[0, 0], c[1, 0], c[0, 2], c[1, 1] = 1.0, 2.0, -3.0, 0.5    # 1 + 2a − 3b² + ab/2
    a, b = np.array([0.0, 1.0, -2.0]), np.array([2.0, -1.0])
    expected = np.array([[1 + 2 * x - 3 * y * y + 0.5 * x * y for x in a] for y in b])
    np.testing.assert_allclose(evaluate_polynomial_surface(c, a, b), expected, rtol=1e-15)


def test_cut_of_an_mlp(rng):
    spec, theta, X, Y = problem(rng, (2, 5, 1), "relu", True)
    direction = rng.standard_normal(spec.n_params)
    ts = np.linspace(-2, 2, 17)
    cut = loss_cut(spec, "squared", theta, direction, ts, X, Y, dtype=np.float64)
    expected = [np_loss(spec, theta + t * direction, X, Y) for t in ts]
    np.testing.assert_allclose(cut, expected, rtol=1e-12)


def test_chunking_does_not_change_values(rng):
    spec, theta, X, Y = problem(rng, (3, 8, 8, 2), "relu", True, m=301)
    plane = random_plane(spec, theta, seed=4, span=1.0)
    alphas, betas = grid_coordinates(plane, 6)
    tiny = 2**16
    samples, n_chunks, points = _chunk_plan(spec, 301, 36, 8, tiny)
    assert n_chunks > 1 and samples * n_chunks > 301 and points < 36   # padded, masked
    args = (spec, "squared", plane.center, plane.direction1, plane.direction2, alphas, betas,
            X, Y)
    small = loss_surface(*args, dtype=np.float64, memory_budget=tiny)
    large = loss_surface(*args, dtype=np.float64, memory_budget=2**30)
    np.testing.assert_allclose(small, large, rtol=1e-13)
    check_cells(*args, small, rng, rtol=1e-12, cells=4)


@pytest.mark.parametrize("m,width,n_points,itemsize", [
    (MAX_SAMPLES, MAX_WIDTH, MAX_GRID**2, 8), (2000, 16, 101**2, 4), (7, 3, 1, 4),
    (MAX_SAMPLES, 2, MAX_GRID**2, 4)])
def test_chunk_plan_stays_within_budget(m, width, n_points, itemsize):
    spec = ModelSpec((width, width, width, width), "relu", True)
    budget = 64 * 2**20
    samples, n_chunks, points = _chunk_plan(spec, m, n_points, itemsize, budget)
    assert samples * n_chunks >= m and samples * (n_chunks - 1) < m
    assert 1 <= points <= n_points
    # what the kernel holds: inputs, targets, 3 first-layer pre-activations (+ copies) and,
    # per point of a chunk, every layer's activations twice
    fixed = 2 * itemsize * (3 * width + width + width + 1)
    held = samples * fixed + points * samples * 2 * itemsize * (3 * width)
    assert held <= budget


def test_same_shapes_do_not_recompile(rng):
    spec, theta, X, Y = problem(rng, (2, 7, 1), "tanh", True)
    plane = random_plane(spec, theta, seed=0, span=1.0)
    alphas, betas = grid_coordinates(plane, 5)
    loss_surface(spec, "squared", plane.center, plane.direction1, plane.direction2,
                 alphas, betas, X, Y, dtype=np.float64)
    kernel = _direct_kernel(spec, "squared", False)
    compiled = kernel._cache_size()
    for shift in (0.5, 1.0):
        loss_surface(spec, "squared", plane.center + shift, plane.direction2,
                     plane.direction1, alphas + shift, betas, X * 2, Y, dtype=np.float64)
    assert _direct_kernel(spec, "squared", False) is kernel
    assert kernel._cache_size() == compiled


def test_surface_is_deterministic(rng):
    spec, theta, X, Y = problem(rng, (2, 6, 1), "relu", True)
    runs = []
    for _ in range(2):
        plane = filter_normalised_plane(spec, theta, seed=7, span=1.0)
        alphas, betas = grid_coordinates(plane, 5)
        runs.append(loss_surface(spec, "squared", plane.center, plane.direction1,
                                 plane.direction2, alphas, betas, X.astype(np.float32),
                                 Y.astype(np.float32)))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_overflow_gives_non_finite_cells_not_errors(rng):
    spec, theta, X, Y = problem(rng, (2, 4, 1), "identity", False)
    d = np.ones(spec.n_params)
    alphas = np.array([0.0, 1e25])
    direct = loss_surface(spec, "squared", theta, d, d, alphas, np.zeros(1),
                          X.astype(np.float32), Y.astype(np.float32), method="direct")
    assert np.isfinite(direct[0, 0]) and not np.isfinite(direct[0, 1])
    poly = loss_surface(spec, "squared", theta, d, d, np.array([0.0, 1e200]), np.zeros(1),
                        X, Y)
    assert np.isfinite(poly[0, 0]) and not np.isfinite(poly[0, 1])


def test_bad_inputs_raise(rng):
    spec, theta, X, Y = problem(rng, (2, 3, 1), "relu", True)
    d = np.ones(spec.n_params)
    a = np.linspace(-1, 1, 3)

    def call(**changes):
        args = dict(spec=spec, loss="squared", center=theta, d1=d, d2=d, alphas=a, betas=a,
                    X=X, Y=Y)
        options = {k: changes.pop(k) for k in ("method", "memory_budget") if k in changes}
        args.update(changes)
        return loss_surface(**args, **options)

    bad_X = X.copy()
    bad_X[3, 1] = np.nan
    for changes in (dict(X=bad_X), dict(Y=Y[:-1]), dict(X=X[:, :1]), dict(center=theta[:-1]),
                    dict(d1=np.full_like(d, np.inf)), dict(alphas=np.zeros(MAX_GRID + 1)),
                    dict(betas=np.zeros(0)), dict(alphas=np.array([0.0, np.nan])),
                    dict(loss="hinge"), dict(method="magic"), dict(method="polynomial"),
                    dict(memory_budget=10), dict(alphas=np.zeros((2, 2)))):
        with pytest.raises(InputError):
            call(**changes)
    with pytest.raises(InputError):
        loss_cut(spec, "squared", theta, d, np.zeros(MAX_CUT_POINTS + 1), X, Y)
    with pytest.raises(InputError):
        deep_linear_surface_polynomial(spec, theta, d, d, X, Y)
