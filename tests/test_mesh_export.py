"""OBJ and VTP export of a loss surface, parsed back independently (a few lines of OBJ
parsing; xml.etree for VTP) and checked against the grid it came from."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from landscape_app.mesh_export import MAX_EXPORT_POINTS, surface_obj, surface_vtp


def _parse_obj(text: str) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices (P, 3), faces (F, 3) 1-based)``; fails on any unknown line."""
    verts, faces = [], []
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("o "):
            continue
        tag, *rest = line.split()
        if tag == "v":
            verts.append([float(x) for x in rest])
        elif tag == "f":
            faces.append([int(x) for x in rest])
        else:
            raise AssertionError(f"unexpected OBJ line {line!r}")
    return np.array(verts).reshape(-1, 3), np.array(faces, dtype=int).reshape(-1, 3)


def _parse_vtp(text: str) -> dict:
    root = ET.fromstring(text)
    assert root.tag == "VTKFile" and root.get("type") == "PolyData"
    piece = root.find("PolyData/Piece")

    def values(el, dtype=float):
        assert el.get("format") == "ascii"
        return np.array((el.text or "").split(), dtype=dtype)

    points_el = piece.find("Points/DataArray")
    assert points_el.get("NumberOfComponents") == "3"
    polys = {el.get("Name"): values(el, int) for el in piece.find("Polys")}
    point_data = {el.get("Name"): (el.get("type"), values(el)) for el in piece.find("PointData")}
    return {"n_points": int(piece.get("NumberOfPoints")),
            "n_polys": int(piece.get("NumberOfPolys")),
            "points": values(points_el).reshape(-1, 3), "polys": polys,
            "point_data": point_data}


@pytest.fixture
def grid():
    alpha = np.linspace(-1.0, 2.0, 5)  # N = 5
    beta = np.linspace(-0.5, 0.5, 4)   # M = 4
    loss = 1.0 + np.add.outer(beta**2, np.sin(alpha))  # (M, N), positive
    return alpha, beta, loss


def _expected_vertices(alpha, beta, loss, z_scale=1.0):
    # vertex (j, i) is row i·N + j: (alpha[j], beta[i], loss[i, j]·z)
    return np.array([[alpha[j], beta[i], loss[i, j] * z_scale]
                     for i in range(beta.size) for j in range(alpha.size)])


def _triangle_area_z(p):
    """Signed area of each triangle's projection on the (x, y) plane."""
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1])
                  - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def test_obj_has_every_node_and_two_triangles_per_cell(grid):
    alpha, beta, loss = grid
    verts, faces = _parse_obj(surface_obj(alpha, beta, loss, z_scale=2.5))
    N, M = alpha.size, beta.size
    assert verts.shape == (N * M, 3) and faces.shape == (2 * (N - 1) * (M - 1), 3)
    np.testing.assert_allclose(verts, _expected_vertices(alpha, beta, loss, 2.5), rtol=1e-9)
    assert faces.min() == 1 and faces.max() == N * M
    tri = verts[faces - 1]
    # the triangles tile the (α, β) rectangle exactly once, counter-clockwise from +z
    area = _triangle_area_z(tri)
    assert np.all(area > 0)
    np.testing.assert_allclose(area.sum(), np.ptp(alpha) * np.ptp(beta), rtol=1e-9)
    # each triangle's corners are grid neighbours: within one cell
    assert np.all(np.ptp(tri[:, :, 0], axis=1) <= alpha[1] - alpha[0] + 1e-9)
    assert np.all(np.ptp(tri[:, :, 1], axis=1) <= beta[1] - beta[0] + 1e-9)


def test_obj_log_heights_floor_non_positive_values(grid):
    alpha, beta, loss = grid
    loss = loss.copy()
    loss[0, 0] = 0.0
    verts, _ = _parse_obj(surface_obj(alpha, beta, loss, log=True))
    floored = loss.ravel().copy()
    floored[0] = floored[1:].min()  # floored at the smallest positive loss
    expected = np.log10(floored)
    np.testing.assert_allclose(verts[:, 2], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_node_drops_exactly_the_cells_touching_it(grid, bad):
    alpha, beta, loss = grid
    N, M = alpha.size, beta.size
    loss = loss.copy()
    loss[1, 2] = bad   # interior node: 4 cells, 8 triangles
    loss[3, 4] = bad   # corner node: 1 cell, 2 triangles
    text = surface_obj(alpha, beta, loss)
    assert "nan" not in text.lower() and "inf" not in text.lower()
    verts, faces = _parse_obj(text)
    assert verts.shape == (N * M - 2, 3)
    assert faces.shape == (2 * (N - 1) * (M - 1) - 8 - 2, 3)
    assert faces.min() >= 1 and faces.max() <= len(verts)
    # the surviving triangles cover exactly the cells without a bad corner
    tri = verts[faces - 1]
    cells = {(int(np.argmin(np.abs(alpha - t[:, 0].min()))),
              int(np.argmin(np.abs(beta - t[:, 1].min())))) for t in tri}
    expected = {(j, i) for i in range(M - 1) for j in range(N - 1)
                if np.isfinite(loss[i:i + 2, j:j + 2]).all()}
    assert cells == expected
    # surviving vertices keep their coordinates, in row order
    keep = np.isfinite(loss.ravel())
    np.testing.assert_allclose(verts, _expected_vertices(alpha, beta, loss)[keep], rtol=1e-9)


def test_all_non_finite_gives_an_empty_mesh(grid):
    alpha, beta, loss = grid
    verts, faces = _parse_obj(surface_obj(alpha, beta, np.full_like(loss, np.nan)))
    assert verts.shape == (0, 3) and faces.shape == (0, 3)
    vtp = _parse_vtp(surface_vtp(alpha, beta, np.full_like(loss, np.nan)))
    assert vtp["n_points"] == 0 and vtp["n_polys"] == 0


def test_vtp_parses_with_consistent_counts_and_arrays(grid):
    alpha, beta, loss = grid
    N, M = alpha.size, beta.size
    index = np.tile(np.arange(N) % 3, (M, 1))  # an integer field, e.g. a Morse index
    vtp = _parse_vtp(surface_vtp(alpha, beta, loss, z_scale=0.5,
                                 scalars={"morse_index": index, "gradient norm": 2 * loss}))
    assert vtp["n_points"] == N * M == len(vtp["points"])
    assert vtp["n_polys"] == 2 * (N - 1) * (M - 1)
    np.testing.assert_allclose(vtp["points"], _expected_vertices(alpha, beta, loss, 0.5),
                               rtol=1e-9)
    conn, offsets = vtp["polys"]["connectivity"], vtp["polys"]["offsets"]
    assert offsets.size == vtp["n_polys"] and offsets[-1] == conn.size
    sizes = np.diff(np.r_[0, offsets])
    assert np.all(sizes == 3) and conn.min() == 0 and conn.max() == N * M - 1
    tri = vtp["points"][conn.reshape(-1, 3)]
    np.testing.assert_allclose(_triangle_area_z(tri).sum(), np.ptp(alpha) * np.ptp(beta))
    kind, values = vtp["point_data"]["loss"]
    assert kind == "Float64"
    np.testing.assert_allclose(values, loss.ravel(), rtol=1e-9)  # the loss, not z_scale'd
    kind, values = vtp["point_data"]["morse_index"]
    assert kind == "Int64"
    np.testing.assert_array_equal(values, index.ravel())
    np.testing.assert_allclose(vtp["point_data"]["gradient norm"][1], 2 * loss.ravel(),
                               rtol=1e-9)


def test_vtp_with_non_finite_values_matches_the_obj_mesh(grid):
    alpha, beta, loss = grid
    loss = loss.copy()
    loss[2, 1] = np.nan
    extra = loss * 0 + 1.0
    extra[0, 0] = np.nan  # a missing extra value keeps its geometry, flagged invalid
    text = surface_vtp(alpha, beta, loss, scalars={"extra": extra})
    assert "nan" not in text.lower()
    vtp = _parse_vtp(text)
    verts, faces = _parse_obj(surface_obj(alpha, beta, loss))
    assert vtp["n_points"] == len(verts) and vtp["n_polys"] == len(faces)
    np.testing.assert_allclose(vtp["points"], verts, rtol=1e-9)
    np.testing.assert_array_equal(vtp["polys"]["connectivity"], (faces - 1).ravel())
    keep = np.isfinite(loss.ravel())
    _, valid = vtp["point_data"]["extra_valid"]
    np.testing.assert_array_equal(valid, np.isfinite(extra.ravel()[keep]))
    _, values = vtp["point_data"]["extra"]
    np.testing.assert_array_equal(values, np.nan_to_num(extra.ravel()[keep], nan=0.0))


def test_json_nulls_are_missing_values(grid):
    alpha, beta, loss = grid
    rows = loss.tolist()
    rows[0][0] = None
    verts, faces = _parse_obj(surface_obj(list(alpha), list(beta), rows))
    assert len(verts) == loss.size - 1 and len(faces) == 2 * 4 * 3 - 2


@pytest.mark.parametrize("alpha, beta, loss, message", [
    (np.zeros((2, 2)), np.zeros(3), np.zeros((3, 2)), "1-D"),
    (np.zeros(4), np.zeros(3), np.zeros((4, 3)), r"shape \(len\(beta\), len\(alpha\)\)"),
    (np.zeros(4), np.zeros(3), np.zeros(12), "2-D"),
    (np.zeros(1), np.zeros(3), np.zeros((3, 1)), "at least 2"),
    (np.array([0.0, np.nan]), np.zeros(2), np.zeros((2, 2)), "finite"),
    (np.zeros(2), np.zeros(2), [["a", "b"], ["c", "d"]], "numbers"),
])
@pytest.mark.parametrize("export", [surface_obj, surface_vtp])
def test_bad_shapes_are_rejected(export, alpha, beta, loss, message):
    with pytest.raises(ValueError, match=message):
        export(alpha, beta, loss)


@pytest.mark.parametrize("export", [surface_obj, surface_vtp])
def test_size_and_scale_limits(export, grid):
    alpha, beta, loss = grid
    side = int(np.sqrt(MAX_EXPORT_POINTS)) + 1
    with pytest.raises(ValueError, match=str(MAX_EXPORT_POINTS)):
        export(np.arange(side), np.arange(side), np.zeros((side, side)))
    for z in (0.0, -1.0, np.nan, "2"):
        with pytest.raises(ValueError, match="z_scale"):
            export(alpha, beta, loss, z_scale=z)


@pytest.mark.parametrize("scalars, message", [
    ({"loss": np.zeros((4, 5))}, "not 'loss'"),
    ({'a"><x': np.zeros((4, 5))}, "names"),
    ({"ok": np.zeros((5, 4))}, "shape"),
])
def test_vtp_rejects_bad_scalars(grid, scalars, message):
    alpha, beta, loss = grid
    with pytest.raises(ValueError, match=message):
        surface_vtp(alpha, beta, loss, scalars=scalars)


def test_module_runs_without_jax():
    code = ("import sys, landscape_app.mesh_export as m; import numpy as np; "
            "m.surface_vtp(np.arange(2.), np.arange(2.), np.ones((2, 2))); "
            "assert 'jax' not in sys.modules and 'compute' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=Path(__file__).resolve().parents[1])
