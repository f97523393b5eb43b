"""A loss surface as a triangle mesh for other tools: Wavefront ``.obj`` (Blender) and VTK
XML PolyData ``.vtp`` (ParaView).

The surface is the grid ``loss[i, j]`` at plane coordinates ``(alpha[j], beta[i])``; the
mesh puts grid node (j, i) at ``(x, y, z) = (alpha[j], beta[i], height(loss[i, j]) · z_scale)``
with ``height`` the loss itself or, with ``log=True``, ``log10`` of it (non-positive values
floored at the smallest positive finite loss, as the dashboard draws them). Vertices are
numbered row by row (β outer, α inner: node (j, i) is vertex ``i·N + j`` when nothing is
dropped); each grid cell becomes two triangles, counter-clockwise seen from +z when alpha
and beta increase (normals point up): ``(i, j) → (i, j+1) → (i+1, j+1)`` and
``(i, j) → (i+1, j+1) → (i+1, j)``.

**Non-finite loss** (an overflowed or NaN cell): its node is not written, and every grid
cell with such a node among its four corners is dropped (both triangles); the remaining
vertices are renumbered in the same row order. No NaN or infinity is ever written.

Pure numpy, no JAX: this module runs in the web process. Numbers are written with 10
significant digits.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from xml.sax.saxutils import quoteattr

import numpy as np

from landscape_app.settings import LIMITS

__all__ = ["MAX_EXPORT_POINTS", "surface_obj", "surface_vtp"]

# The web process reads compute/_limits.py by file (it never imports compute: JAX).
MAX_EXPORT_POINTS = LIMITS.MAX_EXPORT_POINTS  # grid nodes of one exported surface
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .()+-]{0,63}$")
_FLOAT = "%.10g"


def _floats(name: str, values: object) -> np.ndarray:
    """``values`` as float64; ``None`` entries (JSON nulls) become NaN."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    try:
        obj = np.asarray(values, dtype=object)
        return np.where(obj == None, np.nan, obj).astype(np.float64)  # noqa: E711
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers.") from None


def _grid(alpha: object, beta: object, loss: object, z_scale: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, L = _floats("alpha", alpha), _floats("beta", beta), _floats("loss", loss)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"alpha and beta must be 1-D coordinate arrays, got shapes "
                         f"{a.shape} and {b.shape}.")
    if L.ndim != 2 or L.shape != (b.size, a.size):
        raise ValueError(f"loss must be 2-D with shape (len(beta), len(alpha)) = "
                         f"{(b.size, a.size)}, got {L.shape}.")
    if a.size < 2 or b.size < 2:
        raise ValueError(f"a surface mesh needs at least 2 points per side, got "
                         f"{a.size} × {b.size}.")
    if L.size > MAX_EXPORT_POINTS:
        raise ValueError(f"the surface has {L.size} grid points; export is limited to "
                         f"{MAX_EXPORT_POINTS}: use a coarser grid.")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("alpha and beta must be finite numbers.")
    if not (isinstance(z_scale, int | float | np.number) and np.isfinite(z_scale)
            and z_scale > 0):
        raise ValueError(f"z_scale must be a finite positive number, got {z_scale!r}.")
    return a, b, L


def _heights(L: np.ndarray, log: bool) -> np.ndarray:
    """The drawn height of each node: the loss, or log10 of it floored like the dashboard."""
    if not log:
        return L
    finite = np.isfinite(L)
    positive = L[finite & (L > 0)]
    floor = positive.min() if positive.size else 1e-300
    with np.errstate(invalid="ignore"):
        return np.where(finite, np.log10(np.maximum(np.where(finite, L, 1.0), floor)), np.nan)


def _mesh(a: np.ndarray, b: np.ndarray, z: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(points (P, 3), kept (M·N,) bool, triangles (F, 3) 0-based)`` of the finite nodes."""
    M, N = z.shape
    keep = np.isfinite(z)
    index = np.full((M, N), -1, dtype=np.int64)
    index[keep] = np.arange(int(keep.sum()))
    A, B = np.meshgrid(a, b)
    points = np.stack([A[keep], B[keep], z[keep]], axis=1)
    cells = keep[:-1, :-1] & keep[:-1, 1:] & keep[1:, :-1] & keep[1:, 1:]
    i, j = np.nonzero(cells)
    p00, p01 = index[i, j], index[i, j + 1]
    p10, p11 = index[i + 1, j], index[i + 1, j + 1]
    triangles = np.stack([np.stack([p00, p01, p11], axis=1),
                          np.stack([p00, p11, p10], axis=1)], axis=1).reshape(-1, 3)
    return points, keep.ravel(), triangles


def _text(rows: np.ndarray, fmt: str) -> str:
    buf = io.StringIO()
    if rows.size:
        np.savetxt(buf, rows, fmt=fmt)
    return buf.getvalue()


def surface_obj(alpha: object, beta: object, loss: object, *, z_scale: float = 1.0,
                log: bool = False) -> str:
    """The loss surface as a Wavefront OBJ triangle mesh (text).

    Args:
      alpha: (N,) plane coordinates along the first direction (x).
      beta: (M,) plane coordinates along the second direction (y).
      loss: (M, N) loss at ``(alpha[j], beta[i])``; non-finite nodes and the cells
        touching them are dropped (see the module docstring).
      z_scale: height multiplier (> 0).
      log: heights ``log10(loss)`` instead of the loss.

    Returns:
      OBJ text: ``v x y z`` lines, then ``f a b c`` lines with 1-based vertex indices.

    Raises:
      ValueError: shapes that do not form an (M, N) grid, fewer than 2 points a side,
        more than ``MAX_EXPORT_POINTS`` nodes, non-finite coordinates or a bad ``z_scale``.
    """
    a, b, L = _grid(alpha, beta, loss, z_scale)
    points, _, triangles = _mesh(a, b, _heights(L, log) * float(z_scale))
    height = "log10(loss)" if log else "loss"
    header = (f"# Landscape loss surface: {L.shape[1]} x {L.shape[0]} grid, "
              f"{len(points)} vertices, {len(triangles)} triangles\n"
              f"# x = alpha, y = beta, z = {height} * {float(z_scale):.10g}\n"
              "o loss_surface\n")
    return (header + _text(points, f"v {_FLOAT} {_FLOAT} {_FLOAT}")
            + _text(triangles + 1, "f %d %d %d"))


def _data_array(name: str, values: np.ndarray, *, kind: str = "Float64",
                components: int = 1, per_line: int = 1) -> str:
    """One ASCII ``DataArray``; ``per_line`` values a line (a point or a triangle)."""
    fmt = _FLOAT if kind.startswith("Float") else "%d"
    width = max(components, per_line)
    text = _text(values.reshape(-1, width), " ".join([fmt] * width)) if values.size else ""
    attrs = f'type="{kind}"' + (f" Name={quoteattr(name)}" if name else "")
    if components > 1:
        attrs += f' NumberOfComponents="{components}"'
    return f'<DataArray {attrs} format="ascii">\n{text}</DataArray>\n'


def _point_scalars(name: str, values: object, shape: tuple[int, int], kept: np.ndarray
                   ) -> str:
    """One (or two) PointData arrays: the scalar at the kept nodes, plus ``<name>_valid``
    (1/0) when it has non-finite entries (written as 0: VTK's ASCII reader takes no NaN)."""
    if not isinstance(name, str) or not _NAME.match(name) or name == "loss":
        raise ValueError(f"scalar names must be 1-64 letters, digits, spaces or _.()+- "
                         f"and not 'loss', got {name!r}.")
    raw = values if isinstance(values, np.ndarray) else None
    integer = raw is not None and raw.dtype.kind in "iub"
    v = raw.astype(np.int64) if integer else _floats(name, values)
    if v.shape != shape:
        raise ValueError(f"scalar {name!r} must have the loss's shape {shape}, got {v.shape}.")
    v = v.ravel()[kept]
    if integer:
        return _data_array(name, v, kind="Int64")
    valid = np.isfinite(v)
    out = _data_array(name, np.where(valid, v, 0.0))
    if not valid.all():
        out += _data_array(f"{name}_valid", valid.astype(np.uint8), kind="UInt8")
    return out


def surface_vtp(alpha: object, beta: object, loss: object, *,
                scalars: Mapping[str, object] | None = None, z_scale: float = 1.0,
                log: bool = False) -> str:
    """The loss surface as an ASCII VTK XML PolyData file (``.vtp``, ParaView).

    Args:
      alpha, beta, loss, z_scale, log: as :func:`surface_obj` (same vertices and triangles).
      scalars: extra (M, N) point fields by name (e.g. ``{"morse_index": index_map}``);
        integer arrays are written as Int64, others as Float64 with non-finite entries
        written as 0 and flagged 0 in an extra UInt8 field ``<name>_valid``.

    Returns:
      XML text: ``Points`` (Float64 × 3), ``Polys`` (triangles: ``connectivity`` 0-based,
      ``offsets`` 3, 6, 9, …) and ``PointData`` with ``loss`` (the loss itself, whatever
      the heights) and each extra scalar.

    Raises:
      ValueError: as :func:`surface_obj`, or a bad scalar name or shape.
    """
    a, b, L = _grid(alpha, beta, loss, z_scale)
    points, kept, triangles = _mesh(a, b, _heights(L, log) * float(z_scale))
    fields = [_data_array("loss", L.ravel()[kept])]
    for name, values in (scalars or {}).items():
        fields.append(_point_scalars(name, values, L.shape, kept))
    offsets = 3 * np.arange(1, len(triangles) + 1, dtype=np.int64)
    return (
        '<?xml version="1.0"?>\n'
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" '
        'header_type="UInt64">\n<PolyData>\n'
        f'<Piece NumberOfPoints="{len(points)}" NumberOfVerts="0" NumberOfLines="0" '
        f'NumberOfStrips="0" NumberOfPolys="{len(triangles)}">\n'
        '<PointData Scalars="loss">\n' + "".join(fields) + "</PointData>\n"
        "<Points>\n" + _data_array("", points, components=3) + "</Points>\n"
        "<Polys>\n" + _data_array("connectivity", triangles, kind="Int64", per_line=3)
        + _data_array("offsets", offsets, kind="Int64")
        + "</Polys>\n</Piece>\n</PolyData>\n</VTKFile>\n")
