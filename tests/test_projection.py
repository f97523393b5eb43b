"""Projection of paths onto planes and the PCA plane (compute._projection) against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from compute import InputError
from compute._projection import pca_plane, project_onto_plane


def orthogonal_to(D, r):
    """The part of r orthogonal to the columns of D (normal equations)."""
    return r - D @ np.linalg.solve(D.T @ D, D.T @ r)


def test_points_built_in_a_skewed_plane_get_their_coordinates_back(rng):
    n = 9
    center, d1 = rng.standard_normal(n), rng.standard_normal(n)
    d2 = 0.8 * d1 + 0.3 * rng.standard_normal(n)  # far from orthogonal, unequal lengths
    ab = rng.uniform(-3, 3, size=(25, 2))
    off = orthogonal_to(np.column_stack([d1, d2]), rng.standard_normal(n))
    heights = rng.uniform(-2, 2, size=25)
    points = center + ab[:, :1] * d1 + ab[:, 1:] * d2 + heights[:, None] * off
    coords, distance = project_onto_plane(points, center, d1, d2)
    np.testing.assert_allclose(coords, ab, atol=1e-10)
    np.testing.assert_allclose(distance, np.abs(heights) * np.linalg.norm(off), atol=1e-10)


def test_one_point_and_the_centre_itself(rng):
    n = 4
    center, d1, d2 = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    coords, distance = project_onto_plane(center, center, d1, d2)
    assert coords.shape == (1, 2) and distance.shape == (1,)
    np.testing.assert_allclose(coords, 0.0, atol=1e-14)
    np.testing.assert_allclose(distance, 0.0, atol=1e-14)


def test_bad_planes_raise_input_error(rng):
    n = 5
    c, d = rng.standard_normal(n), rng.standard_normal(n)
    with pytest.raises(InputError, match="parallel"):
        project_onto_plane(np.zeros((3, n)), c, d, -2.0 * d)
    with pytest.raises(InputError, match="zero or parallel"):
        project_onto_plane(np.zeros((3, n)), c, np.zeros(n), d)
    with pytest.raises(InputError, match="entries"):
        project_onto_plane(np.zeros((3, n)), c[:4], d, d)


@pytest.mark.parametrize("T, n", [(40, 12), (20, 500)], ids=["T>n", "T<n"])
def test_pca_plane_matches_numpy_svd(rng, T, n):
    # A wiggly trajectory with two dominant directions plus small noise.
    t = np.linspace(0, 1, T)[:, None]
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    W = np.cos(3 * t) * a + t ** 2 * b + 0.01 * rng.standard_normal((T, n))
    center, d1, d2, ratio = pca_plane(W)
    M = W - W[-1]
    _, s, Vt = np.linalg.svd(M, full_matrices=False)
    np.testing.assert_array_equal(center, W[-1])
    np.testing.assert_allclose(ratio, s[:2] ** 2 / np.sum(s ** 2), rtol=1e-8)
    np.testing.assert_allclose(abs(d1 @ Vt[0]), 1.0, atol=1e-8)
    np.testing.assert_allclose(abs(d2 @ Vt[1]), 1.0, atol=1e-8)
    np.testing.assert_allclose([np.linalg.norm(d1), np.linalg.norm(d2), d1 @ d2], [1, 1, 0],
                               atol=1e-10)
    assert M[0] @ d1 >= 0 and M[0] @ d2 >= 0


def test_a_path_inside_a_plane_is_explained_completely(rng):
    n = 30
    final, u, v = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    s = np.linspace(0, 2, 50)[:, None]
    W = final + np.exp(-s) * u + np.sin(3 * s) * v  # ends near final, inside final + span
    W[-1] = final
    center, d1, d2, ratio = pca_plane(W)
    np.testing.assert_allclose(ratio.sum(), 1.0, rtol=1e-10)
    _, distance = project_onto_plane(W, center, d1, d2)
    np.testing.assert_allclose(distance, 0.0, atol=1e-10)


def test_pca_plane_centres_and_degenerate_paths(rng):
    n = 6
    W = rng.standard_normal((10, n))
    center, *_ = pca_plane(W, center="mean")
    np.testing.assert_allclose(center, W.mean(axis=0))
    point = rng.standard_normal(n)
    center, *_ = pca_plane(W, center=point)
    np.testing.assert_array_equal(center, point)
    line = np.outer(np.linspace(0, 1, 8), rng.standard_normal(n))
    _, d1, d2, ratio = pca_plane(line)
    np.testing.assert_allclose(ratio, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose([d1 @ d2, np.linalg.norm(d2)], [0.0, 1.0], atol=1e-12)
    with pytest.raises(InputError, match="does not move"):
        pca_plane(np.ones((5, n)))
    with pytest.raises(InputError, match="at least 2"):
        pca_plane(W[:1])
    with pytest.raises(InputError, match="NaN"):
        pca_plane(np.vstack([W, np.full(n, np.nan)]))
