"""Tests of compute._planes: the defining property of each plane, checked block by block."""

from __future__ import annotations

import numpy as np
import pytest

from compute._errors import InputError
from compute._limits import MAX_GRID, MAX_SPAN
from compute._models import ModelSpec
from compute._planes import (
    Plane,
    filter_normalised_plane,
    grid_coordinates,
    layer_normalised_plane,
    plane_from_directions,
    plane_through_points,
    random_plane,
)

SPEC = ModelSpec((3, 5, 4, 2), "relu", True)
SPEC_NO_BIAS = ModelSpec((3, 5, 2), "identity", False)


def blocks(spec, flat):
    """{"W1": (5, 3) array, "b1": (5,), …} cut out of a flat vector by hand (THEORY.md)."""
    out, offset = {}, 0
    sizes = spec.layer_sizes
    for k in range(1, len(sizes)):
        rows, cols = sizes[k], sizes[k - 1]
        out[f"W{k}"] = flat[offset:offset + rows * cols].reshape(rows, cols)
        offset += rows * cols
        if spec.bias:
            out[f"b{k}"] = flat[offset:offset + rows]
            offset += rows
    assert offset == flat.size
    return out


@pytest.fixture
def theta(rng):
    t = rng.standard_normal(SPEC.n_params) * rng.uniform(0.1, 3.0, SPEC.n_params)
    t[0:3] = 0.0     # W1's first row is zero: its direction rows must be zero too
    return t


@pytest.mark.parametrize("bias", ["zero", "keep"])
def test_filter_normalised_rows_have_the_norms_of_the_point(theta, bias):
    plane = filter_normalised_plane(SPEC, theta, seed=3, span=2.0, bias=bias)
    ref = blocks(SPEC, theta)
    for direction in (plane.direction1, plane.direction2):
        got = blocks(SPEC, direction)
        for k in (1, 2, 3):
            np.testing.assert_allclose(np.linalg.norm(got[f"W{k}"], axis=1),
                                       np.linalg.norm(ref[f"W{k}"], axis=1), rtol=1e-12)
            if bias == "zero":
                assert not np.any(got[f"b{k}"])
            else:
                assert np.linalg.norm(got[f"b{k}"]) == pytest.approx(
                    np.linalg.norm(ref[f"b{k}"]), rel=1e-12)
                assert np.any(got[f"b{k}"])
        assert not np.any(got["W1"][0])
    assert not np.allclose(plane.direction1, plane.direction2)
    np.testing.assert_array_equal(plane.center, theta)
    assert plane.alpha_range == plane.beta_range == (-2.0, 2.0)
    assert plane.marks == {"center": (0.0, 0.0)}


def test_filter_directions_are_random_within_each_row(theta):
    """Normalisation fixes each row's norm, not its direction: rows are not the point's."""
    plane = filter_normalised_plane(SPEC, theta, seed=0, span=1.0)
    W, ref = blocks(SPEC, plane.direction1)["W2"], blocks(SPEC, theta)["W2"]
    cosines = np.sum(W * ref, axis=1) / (np.linalg.norm(W, axis=1) * np.linalg.norm(ref, axis=1))
    assert np.max(np.abs(cosines)) < 0.999


@pytest.mark.parametrize("bias", ["zero", "keep"])
def test_layer_normalised_blocks_have_the_layer_norms(theta, bias):
    plane = layer_normalised_plane(SPEC, theta, seed=5, span=1.0, bias=bias)
    ref = blocks(SPEC, theta)
    for direction in (plane.direction1, plane.direction2):
        got = blocks(SPEC, direction)
        for k in (1, 2, 3):
            if bias == "keep":
                norm = np.hypot(np.linalg.norm(got[f"W{k}"]), np.linalg.norm(got[f"b{k}"]))
                target = np.hypot(np.linalg.norm(ref[f"W{k}"]), np.linalg.norm(ref[f"b{k}"]))
            else:
                assert not np.any(got[f"b{k}"])
                norm, target = np.linalg.norm(got[f"W{k}"]), np.linalg.norm(ref[f"W{k}"])
            assert norm == pytest.approx(target, rel=1e-12)


def test_layer_normalised_without_biases(rng):
    theta = rng.standard_normal(SPEC_NO_BIAS.n_params)
    plane = layer_normalised_plane(SPEC_NO_BIAS, theta, seed=1, span=1.0)
    got, ref = blocks(SPEC_NO_BIAS, plane.direction1), blocks(SPEC_NO_BIAS, theta)
    for k in (1, 2):
        assert np.linalg.norm(got[f"W{k}"]) == pytest.approx(np.linalg.norm(ref[f"W{k}"]),
                                                             rel=1e-12)


def test_random_plane_is_orthonormal_and_seeded(theta):
    a = random_plane(SPEC, theta, seed=11, span=3.0)
    b = random_plane(SPEC, theta, seed=11, span=3.0)
    c = random_plane(SPEC, theta, seed=12, span=3.0)
    G = np.array([[a.direction1 @ a.direction1, a.direction1 @ a.direction2],
                  [a.direction2 @ a.direction1, a.direction2 @ a.direction2]])
    np.testing.assert_allclose(G, np.eye(2), atol=1e-12)
    np.testing.assert_array_equal(a.direction1, b.direction1)
    np.testing.assert_array_equal(a.direction2, b.direction2)
    assert abs(a.direction1 @ c.direction1) < 0.9
    assert a.alpha_range == (-3.0, 3.0)


@pytest.mark.parametrize("make", [filter_normalised_plane, layer_normalised_plane])
def test_normalised_planes_are_seeded(theta, make):
    a, b = make(SPEC, theta, seed=4, span=1.0), make(SPEC, theta, seed=4, span=1.0)
    c = make(SPEC, theta, seed=5, span=1.0)
    np.testing.assert_array_equal(a.direction1, b.direction1)
    assert not np.allclose(a.direction1, c.direction1)


def test_plane_through_points_places_the_three_points(rng):
    p0, p1, p2 = (rng.standard_normal(20) for _ in range(3))
    plane = plane_through_points(p0, p1, p2, margin=0.1, names=("init", "saddle", "final"))
    assert set(plane.marks) == {"init", "saddle", "final"}
    for name, p in (("init", p0), ("saddle", p1), ("final", p2)):
        a, b = plane.marks[name]
        np.testing.assert_allclose(plane.center + a * plane.direction1 + b * plane.direction2,
                                   p, atol=1e-12)
        assert plane.alpha_range[0] < a < plane.alpha_range[1]
        assert plane.beta_range[0] < b < plane.beta_range[1]
    assert plane.marks["init"] == (0.0, 0.0) and plane.marks["saddle"] == (1.0, 0.0)
    assert plane.marks["final"][1] == 1.0
    assert abs(plane.direction1 @ plane.direction2) < 1e-12 * np.linalg.norm(plane.direction1)
    # margin 0.1 of the extent on each side
    alphas = [plane.marks[k][0] for k in plane.marks]
    extent = max(alphas) - min(alphas)
    assert plane.alpha_range == pytest.approx((min(alphas) - 0.1 * extent,
                                               max(alphas) + 0.1 * extent))
    assert plane.beta_range == pytest.approx((-0.1, 1.1))


def test_plane_through_points_rejects_degenerate_points(rng):
    p0, p1 = rng.standard_normal(6), rng.standard_normal(6)
    with pytest.raises(InputError):
        plane_through_points(p0, p0.copy(), p1)
    with pytest.raises(InputError):
        plane_through_points(p0, p1, p0 + 2.5 * (p1 - p0))
    with pytest.raises(InputError):
        plane_through_points(p0, p1, rng.standard_normal(7))
    with pytest.raises(InputError):
        plane_through_points(p0, p1, np.full(6, np.nan))


def test_plane_from_directions_normalisations(rng):
    center, d1, d2 = rng.standard_normal(8), rng.standard_normal(8) * 3, rng.standard_normal(8)
    raw = plane_from_directions(center, d1, d2, span=0.5, marks={"saddle": (0.2, -0.1)})
    np.testing.assert_array_equal(raw.direction1, d1)
    assert raw.marks == {"center": (0.0, 0.0), "saddle": (0.2, -0.1)}
    assert raw.alpha_range == (-0.5, 0.5)
    unit = plane_from_directions(center, d1, d2, normalise="unit")
    np.testing.assert_allclose(unit.direction1, d1 / np.linalg.norm(d1), rtol=1e-14)
    np.testing.assert_allclose(unit.direction2, d2 / np.linalg.norm(d2), rtol=1e-14)
    ortho = plane_from_directions(center, d1, d2, normalise="orthonormal")
    Q = np.stack([ortho.direction1, ortho.direction2])
    np.testing.assert_allclose(Q @ Q.T, np.eye(2), atol=1e-12)
    # same plane: d2 lies in span(q1, q2)
    residual = d2 - Q.T @ (Q @ d2)
    assert np.linalg.norm(residual) < 1e-12 * np.linalg.norm(d2)


def test_grid_coordinates():
    plane = Plane(np.zeros(2), np.ones(2), np.ones(2), (-1.0, 3.0), (0.0, 0.5))
    a, b = grid_coordinates(plane, 5)
    np.testing.assert_allclose(a, [-1, 0, 1, 2, 3])
    np.testing.assert_allclose(b, [0, 0.125, 0.25, 0.375, 0.5])
    a1, b1 = grid_coordinates(plane, 1)
    assert a1.tolist() == [1.0] and b1.tolist() == [0.25]
    for n in (0, MAX_GRID + 1, 10**6):
        with pytest.raises(InputError):
            grid_coordinates(plane, n)


@pytest.mark.parametrize("span", [0.0, -1.0, float("nan"), float("inf"), MAX_SPAN * 2])
def test_bad_span_raises(theta, span):
    with pytest.raises(InputError):
        random_plane(SPEC, theta, seed=0, span=span)


def test_bad_point_seed_and_bias_mode_raise(theta):
    with pytest.raises(InputError):
        filter_normalised_plane(SPEC, theta[:-1], seed=0)
    bad = theta.copy()
    bad[4] = np.inf
    with pytest.raises(InputError):
        filter_normalised_plane(SPEC, bad, seed=0)
    with pytest.raises(InputError):
        filter_normalised_plane(SPEC, theta, seed=-1)
    with pytest.raises(InputError):
        filter_normalised_plane(SPEC, theta, seed=0, bias="scale")
