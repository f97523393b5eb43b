"""Morse-index maps against independent references: numpy finite-difference Hessians of a
numpy forward pass, and the closed form at the origin of a deep linear net (THEORY.md §1)."""

from __future__ import annotations

import numpy as np
import pytest

from compute import InputError, make_model
from compute._index_map import (
    MAX_PARAMS_INDEX_MAP,
    coarse_to_fine_levels,
    morse_index_map,
)


def _numpy_loss(theta, X, Y, sizes, loss):
    """tanh MLP with biases, written from THEORY.md's flat order (W row-major, then b)."""
    h, o = X, 0
    for k in range(len(sizes) - 1):
        rows, cols = sizes[k + 1], sizes[k]
        W = theta[o:o + rows * cols].reshape(rows, cols)
        o += rows * cols
        b = theta[o:o + rows]
        o += rows
        z = h @ W.T + b
        h = np.tanh(z) if k < len(sizes) - 2 else z
    if loss == "squared":
        return 0.5 * np.sum((h - Y) ** 2) / X.shape[0]
    return np.mean(np.logaddexp(0.0, -Y * h))  # logistic loss, targets ±1


def _fd_hessian(f, theta, h=1e-4):
    """Central second differences of f: H_ij ≈ [f(++) − f(+−) − f(−+) + f(−−)] / 4h²."""
    n = theta.size
    E = np.eye(n) * h
    H = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            H[i, j] = H[j, i] = (f(theta + E[i] + E[j]) - f(theta + E[i] - E[j])
                                 - f(theta - E[i] + E[j]) + f(theta - E[i] - E[j])) / (4 * h * h)
    return H


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_index_matches_finite_difference_hessian(loss):
    rng = np.random.default_rng(7)
    sizes = (2, 3, 1)
    spec = make_model("mlp", 2, 1, [3], activation="tanh", bias=True)
    n = spec.n_params
    X = rng.standard_normal((12, 2))
    Y = rng.standard_normal((12, 1)) if loss == "squared" else np.sign(rng.standard_normal((12, 1)))
    center, d1, d2 = (rng.standard_normal(n) for _ in range(3))
    alphas, betas = np.linspace(-1.0, 1.0, 5), np.linspace(-0.5, 0.7, 4)  # not square
    result = morse_index_map(spec, loss, center, d1, d2, alphas, betas, X, Y)
    assert result["index"].shape == (4, 5) and result["lambda_min"].shape == (4, 5)
    cells = [(0, 0), (3, 4), (1, 2), (2, 0), (0, 3)]
    seen = set()
    for i, j in cells:
        theta = center + alphas[j] * d1 + betas[i] * d2
        lam = np.linalg.eigvalsh(_fd_hessian(lambda t: _numpy_loss(t, X, Y, sizes, loss), theta))
        # generic points: no eigenvalue near the sign boundary, so the count is unambiguous
        assert np.min(np.abs(lam)) > 1e-4 * np.max(np.abs(lam))
        expected = int(np.sum(lam < 0))
        seen.add(expected)
        assert result["index"][i, j] == expected
        assert result["fraction"][i, j] == pytest.approx(expected / n)
        assert result["lambda_min"][i, j] == pytest.approx(lam[0], rel=1e-5, abs=1e-6)
        assert result["lambda_max"][i, j] == pytest.approx(lam[-1], rel=1e-5, abs=1e-6)
    assert len(seen) >= 2  # cells with different indices: the orientation is checked too
    assert result["index"].dtype.kind == "i"


@pytest.mark.parametrize("rank", [2, 1])
def test_index_at_origin_of_one_hidden_layer_linear_net(rank):
    """THEORY.md §1: at θ = 0 the Hessian has ±σ_j(C)/m, each d_1 times, so the index is
    d_1 · rank(C) with C = YᵀX, and λ_min = −σ_1(C)/m."""
    rng = np.random.default_rng(3)
    d_x, d_1, d_y, m = 3, 4, 2, 20
    spec = make_model("linear", d_x, d_y, [d_1])
    X = rng.standard_normal((m, d_x))
    B = rng.standard_normal((d_x, rank)) @ rng.standard_normal((rank, d_y))
    Y = X @ B + (0.1 * rng.standard_normal((m, d_y)) if rank == d_y else 0.0)
    C = Y.T @ X
    sigma = np.linalg.svd(C, compute_uv=False)
    assert np.linalg.matrix_rank(C) == rank
    n = spec.n_params
    d1, d2 = rng.standard_normal(n), rng.standard_normal(n)
    result = morse_index_map(spec, "squared", np.zeros(n), d1, d2, [-0.3, 0.0, 0.3],
                             [0.0, 0.2], X, Y)
    assert result["index"][0, 1] == d_1 * rank
    assert result["lambda_min"][0, 1] == pytest.approx(-sigma[0] / m, rel=1e-10)
    assert result["lambda_max"][0, 1] == pytest.approx(sigma[0] / m, rel=1e-10)


def test_origin_of_two_hidden_layer_linear_net_has_index_zero():
    """THEORY.md §1: with two hidden layers the Hessian at the origin is exactly 0."""
    rng = np.random.default_rng(4)
    spec = make_model("linear", 2, 2, [3, 3])
    X = rng.standard_normal((10, 2))
    Y = X @ rng.standard_normal((2, 2))
    n = spec.n_params
    result = morse_index_map(spec, "squared", np.zeros(n), rng.standard_normal(n),
                             rng.standard_normal(n), [0.0, 1.0], [0.0], X, Y)
    assert result["index"][0, 0] == 0
    assert result["lambda_min"][0, 0] == 0.0 and result["lambda_max"][0, 0] == 0.0
    assert result["index"][0, 1] > 0  # away from it, negative curvature appears


def test_explicit_tolerance_counts_only_below_minus_tol():
    rng = np.random.default_rng(5)
    spec = make_model("linear", 3, 2, [4])
    X = rng.standard_normal((20, 3))
    Y = X @ rng.standard_normal((3, 2))
    sigma = np.linalg.svd(Y.T @ X, compute_uv=False) / 20  # |negative eigenvalues| at θ = 0
    n = spec.n_params
    zero, d = np.zeros(n), rng.standard_normal(n)
    between = 0.5 * (sigma[0] + sigma[1])
    result = morse_index_map(spec, "squared", zero, d, d, [0.0], [0.0], X, Y, tol=between)
    assert result["index"][0, 0] == 4  # only −σ_1/m, d_1 = 4 times, lies below −tol


def test_refuses_large_models_and_bad_input():
    spec = make_model("mlp", 20, 2, [30], activation="tanh")
    assert spec.n_params > MAX_PARAMS_INDEX_MAP
    n = spec.n_params
    X, Y = np.zeros((4, 20)), np.zeros((4, 2))
    with pytest.raises(InputError, match="limited to"):
        morse_index_map(spec, "squared", np.zeros(n), np.ones(n), np.ones(n), [0.0], [0.0],
                        X, Y)
    small = make_model("mlp", 2, 1, [3], activation="tanh")
    k = small.n_params
    with pytest.raises(InputError, match="tolerance"):
        morse_index_map(small, "squared", np.zeros(k), np.ones(k), np.ones(k), [0.0], [0.0],
                        np.zeros((4, 2)), np.zeros((4, 1)), tol=-1.0)
    with pytest.raises(InputError):
        morse_index_map(small, "squared", np.zeros(k + 1), np.ones(k), np.ones(k), [0.0],
                        [0.0], np.zeros((4, 2)), np.zeros((4, 1)))
    big = make_model("mlp", 10, 1, [20], activation="tanh")  # 241 parameters
    b = big.n_params
    with pytest.raises(InputError, match="operations"):
        morse_index_map(big, "squared", np.zeros(b), np.ones(b), np.ones(b),
                        np.linspace(0, 1, 201), np.linspace(0, 1, 201),
                        np.zeros((10_000, 10)), np.zeros((10_000, 1)))


@pytest.mark.parametrize("n", [2, 11, 12, 31, 41, 60, 61, 101, 201])
def test_coarse_to_fine_levels(n):
    levels = coarse_to_fine_levels(n)
    assert levels[-1] == n and 1 <= len(levels) <= 3
    assert all(a < b for a, b in zip(levels, levels[1:], strict=False))
    if n > 11:
        assert levels[0] <= 16
    for coarse, fine in zip(levels, levels[1:], strict=False):
        if (fine - 1) % (coarse - 1) == 0:  # nested: coarse points are fine points
            g, G = np.linspace(-1, 1, coarse), np.linspace(-1, 1, fine)
            assert all(np.min(np.abs(G - x)) < 1e-12 for x in g)
    assert coarse_to_fine_levels(61) == (11, 31, 61)


def test_coarse_to_fine_levels_rejects_bad_sizes():
    with pytest.raises(InputError):
        coarse_to_fine_levels(0)
    with pytest.raises(InputError):
        coarse_to_fine_levels(61, levels=0)
