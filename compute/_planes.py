"""Planes through parameter space: a center and two directions, in THEORY.md's flat order.

A :class:`Plane` is the 2-D slice ``θ(α, β) = center + α·direction1 + β·direction2`` that a
loss surface is drawn on, with the coordinate ranges to draw and named points ("marks") in
plane coordinates. Every vector is a flat float64 numpy array in the model's flat order
(W_1 row-major, b_1, W_2, …), as :func:`compute.flatten_params` makes it.

Constructors: :func:`random_plane` (two random Gaussian directions, orthonormalised),
:func:`filter_normalised_plane` (Li et al. 2018), :func:`layer_normalised_plane`,
:func:`plane_through_points` (e.g. init, saddle, final) and :func:`plane_from_directions`
(the hook for Hessian-eigenvector and trajectory-PCA planes). All are deterministic given
``seed`` (``np.random.default_rng(seed)``).

References:
  Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the Loss Landscape of Neural
  Nets", arXiv:1712.09913 (filter normalisation).
  Goodfellow, Vinyals & Saxe 2015, "Qualitatively characterizing neural network
  optimization problems", arXiv:1412.6544 (random directions and 1-D cuts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compute._errors import InputError
from compute._limits import MAX_GRID, MAX_SEED, MAX_SPAN, check_int, check_range
from compute._models import ModelSpec, check_flat_params

__all__ = [
    "BIAS_MODES",
    "PLANE_KINDS",
    "Plane",
    "filter_normalised_plane",
    "grid_coordinates",
    "layer_normalised_plane",
    "plane_from_directions",
    "plane_through_points",
    "random_plane",
]

PLANE_KINDS = ("random", "filter", "layer", "points")
BIAS_MODES = ("zero", "keep")
DIRECTION_NORMALISATIONS = ("none", "unit", "orthonormal")


@dataclass(frozen=True, eq=False)
class Plane:
    """The slice ``center + α·direction1 + β·direction2`` of parameter space.

    ``center``, ``direction1`` and ``direction2`` are flat ``(n_params,)`` float64 vectors
    (THEORY.md order); ``alpha_range`` and ``beta_range`` are the ``(lo, hi)`` coordinates to
    draw; ``marks`` names points in plane coordinates, e.g. ``{"center": (0.0, 0.0)}``.
    Equality is identity (arrays do not compare as booleans).
    """

    center: np.ndarray
    direction1: np.ndarray
    direction2: np.ndarray
    alpha_range: tuple[float, float]
    beta_range: tuple[float, float]
    marks: dict[str, tuple[float, float]] = field(default_factory=dict)

    def point(self, alpha: float, beta: float) -> np.ndarray:
        """The flat parameters at plane coordinates ``(alpha, beta)``."""
        return self.center + alpha * self.direction1 + beta * self.direction2


def grid_coordinates(plane: Plane, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, betas)``: ``n`` evenly spaced coordinates over each range (float64).

    With ``n == 1`` each is the middle of its range (the center for a symmetric plane).
    """
    check_range("the grid size N", n, 1, MAX_GRID)
    n = int(n)
    if n == 1:
        return (np.array([sum(plane.alpha_range) / 2.0]),
                np.array([sum(plane.beta_range) / 2.0]))
    return (np.linspace(*plane.alpha_range, n, dtype=np.float64),
            np.linspace(*plane.beta_range, n, dtype=np.float64))


def random_plane(spec: ModelSpec, theta, *, seed: int = 0, span: float = 1.0) -> Plane:
    """Plane through ``theta`` spanned by two random Gaussian directions.

    The directions are drawn ``N(0, I)`` and orthonormalised (Gram–Schmidt), so plane
    coordinates are Euclidean distances in parameter space: ``span`` is the half-width of
    the drawn square in parameter units. With one parameter, ``direction2`` is zero.
    """
    center = check_flat_params(spec, theta, "the center")
    span = _check_span(span)
    rng = np.random.default_rng(_check_seed(seed))
    d1 = rng.standard_normal(center.shape)
    d2 = rng.standard_normal(center.shape)
    d1, d2 = _orthonormalise(d1, d2)
    return _symmetric_plane(center, d1, d2, span)


def filter_normalised_plane(spec: ModelSpec, theta, *, seed: int = 0, span: float = 1.0,
                            bias: str = "zero") -> Plane:
    """Plane through ``theta`` with filter-normalised random directions (Li et al. 2018).

    Each direction is drawn ``N(0, I)``; then every row ``r`` of every weight block ``W_k``
    (one unit's incoming filter) is rescaled to the norm of the same row of ``theta``:
    ``d[W_k][r] ← d[W_k][r] · ‖θ[W_k][r]‖ / ‖d[W_k][r]‖`` (a zero row stays zero). Biases:
    ``bias="zero"`` zeroes them (Li et al.'s default, so the plane leaves biases fixed);
    ``bias="keep"`` keeps them, each layer's bias block rescaled to that layer's bias norm
    in ``theta``. Coordinates are then relative: α = 1 moves every filter by its own norm.

    References:
      Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", arXiv:1712.09913, §4.
    """
    center = check_flat_params(spec, theta, "the center")
    span = _check_span(span)
    bias = _check_bias_mode(bias)
    rng = np.random.default_rng(_check_seed(seed))
    directions = []
    for _ in range(2):
        d = rng.standard_normal(center.shape)
        for name, (start, stop), shape in _blocks(spec):
            block, ref = d[start:stop].reshape(shape), center[start:stop].reshape(shape)
            if name.startswith("W"):
                block[...] = _rescale_rows(block, ref)
            elif bias == "zero":
                block[...] = 0.0
            else:
                block[...] = _rescale(block, ref)
        directions.append(d)
    return _symmetric_plane(center, *directions, span)


def layer_normalised_plane(spec: ModelSpec, theta, *, seed: int = 0, span: float = 1.0,
                           bias: str = "keep") -> Plane:
    """Plane through ``theta`` with layer-normalised random directions.

    Each direction is drawn ``N(0, I)``; then each layer's block — ``W_k`` together with
    ``b_k`` — is rescaled to that layer's norm in ``theta``, ``‖d_k‖ = ‖θ_k‖``. With
    ``bias="zero"`` the bias parts are zeroed and the ``W_k`` part is rescaled to ``‖θ[W_k]‖``.
    """
    center = check_flat_params(spec, theta, "the center")
    span = _check_span(span)
    bias = _check_bias_mode(bias)
    rng = np.random.default_rng(_check_seed(seed))
    directions = []
    for _ in range(2):
        d = rng.standard_normal(center.shape)
        for (start, stop), (b_start, b_stop) in _layer_spans(spec):
            if bias == "zero" and b_stop > b_start:
                d[b_start:b_stop] = 0.0
                d[start:b_start] = _rescale(d[start:b_start], center[start:b_start])
            else:
                d[start:stop] = _rescale(d[start:stop], center[start:stop])
        directions.append(d)
    return _symmetric_plane(center, *directions, span)


def plane_through_points(p0, p1, p2, *, margin: float = 0.25,
                         names: tuple[str, str, str] = ("p0", "p1", "p2")) -> Plane:
    """The plane through three parameter vectors, e.g. init, saddle and final point.

    ``center = p0``, ``direction1 = p1 − p0`` and ``direction2`` = the part of ``p2 − p0``
    orthogonal to ``direction1``; so p0 sits at (0, 0), p1 at (1, 0) and p2 at (c, 1) with
    ``c = ⟨p2 − p0, d1⟩ / ‖d1‖²``. The ranges cover the three points plus ``margin`` times
    their extent on each side; ``marks`` holds the three under ``names``.
    """
    a = _as_flat(p0, names[0])
    b = _as_flat(p1, names[1])
    c = _as_flat(p2, names[2])
    if not (a.shape == b.shape == c.shape):
        raise InputError(f"the three points must have the same length, got {a.size}, "
                         f"{b.size} and {c.size}.")
    if not (np.isfinite(margin) and 0 <= margin <= 10):
        raise InputError(f"the margin must be a number between 0 and 10, got {margin!r}.")
    # Points near ±1e308 are finite but their differences and norms overflow: one error
    # below instead of a RuntimeWarning from each step.
    with np.errstate(over="ignore", invalid="ignore"):
        d1 = b - a
        norm1 = float(d1 @ d1)
        e = c - a
        coord = float(e @ d1) / norm1 if norm1 else 0.0
        d2 = e - coord * d1
        norm_d2, norm_e = float(np.linalg.norm(d2)), float(np.linalg.norm(e))
    if not all(np.isfinite(v) for v in (norm1, coord, norm_d2, norm_e)):
        raise InputError(f"{names[0]}, {names[1]} and {names[2]} are too large: the distances "
                         "between them overflow float64; rescale them.")
    if norm1 == 0.0:
        raise InputError(f"{names[0]} and {names[1]} are the same point; a plane needs three "
                         "distinct points.")
    if norm_d2 <= 1e-12 * max(norm_e, np.sqrt(norm1)):
        raise InputError(f"{names[0]}, {names[1]} and {names[2]} lie on one line; "
                         "they span no plane.")
    lo, hi = min(0.0, 1.0, coord), max(0.0, 1.0, coord)
    pad = margin * (hi - lo)
    marks = {names[0]: (0.0, 0.0), names[1]: (1.0, 0.0), names[2]: (coord, 1.0)}
    return Plane(a, d1, d2, (lo - pad, hi + pad), (-margin, 1.0 + margin), marks)


def plane_from_directions(center, d1, d2, *, span: float = 1.0,
                          normalise: str = "none",
                          marks: dict[str, tuple[float, float]] | None = None) -> Plane:
    """Plane through ``center`` along given directions (Hessian eigenvectors, PCA axes, …).

    ``normalise``: ``"none"`` keeps the directions as given, ``"unit"`` scales each to unit
    norm, ``"orthonormal"`` applies Gram–Schmidt (d2 made orthogonal to d1, both unit).
    """
    center = _as_flat(center, "the center")
    d1 = _as_flat(d1, "direction 1")
    d2 = _as_flat(d2, "direction 2")
    if not (center.shape == d1.shape == d2.shape):
        raise InputError(f"the center and directions must have the same length, got "
                         f"{center.size}, {d1.size} and {d2.size}.")
    span = _check_span(span)
    if normalise not in DIRECTION_NORMALISATIONS:
        raise InputError(f"normalise must be one of {', '.join(DIRECTION_NORMALISATIONS)}, "
                         f"got {normalise!r}.")
    if normalise != "none" and (not d1.any() or not d2.any()):
        raise InputError("a direction to normalise is the zero vector.")
    if normalise == "unit":
        d1, d2 = d1 / np.linalg.norm(d1), d2 / np.linalg.norm(d2)
    elif normalise == "orthonormal":
        d1, d2 = _orthonormalise(d1, d2)
    plane = _symmetric_plane(center, d1, d2, span)
    if marks:
        plane.marks.update({str(k): (float(v[0]), float(v[1])) for k, v in marks.items()})
    return plane


# --------------------------------------------------------------------------- helpers


def _symmetric_plane(center, d1, d2, span) -> Plane:
    return Plane(center, d1, d2, (-span, span), (-span, span), {"center": (0.0, 0.0)})


def _as_flat(value, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a vector of numbers.") from None
    if arr.size == 0:
        raise InputError(f"{name} is empty.")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or inf.")
    return arr.copy()


def _check_span(span) -> float:
    try:
        value = float(span)
    except (TypeError, ValueError):
        raise InputError(f"the span must be a number, got {span!r}.") from None
    if not (np.isfinite(value) and 0 < value <= MAX_SPAN):
        raise InputError(f"the span must be a number above 0 and at most {MAX_SPAN:g}, "
                         f"got {span!r}.")
    return value


def _check_seed(seed) -> int:
    return check_int("the seed", seed, 0, MAX_SEED)  # the bound of every other seed


def _check_bias_mode(bias: str) -> str:
    if bias not in BIAS_MODES:
        raise InputError(f"the bias mode must be one of {', '.join(BIAS_MODES)}, "
                         f"got {bias!r}.")
    return bias


def _blocks(spec: ModelSpec):
    """``(name, (start, stop), shape)`` of each parameter block, in flat order."""
    offset = 0
    for k, ((rows, cols), b) in enumerate(spec.layer_shapes(), start=1):
        yield f"W{k}", (offset, offset + rows * cols), (rows, cols)
        offset += rows * cols
        if b is not None:
            yield f"b{k}", (offset, offset + b), (b,)
            offset += b


def _layer_spans(spec: ModelSpec):
    """``((start, stop), (bias_start, bias_stop))`` of each layer; an empty bias span if
    the layer has no bias."""
    offset = 0
    for (rows, cols), b in spec.layer_shapes():
        stop = offset + rows * cols + (b or 0)
        yield (offset, stop), (offset + rows * cols, stop)
        offset = stop


def _rescale_rows(block: np.ndarray, ref: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    target = np.linalg.norm(ref, axis=1, keepdims=True)
    return block * np.divide(target, norms, out=np.zeros_like(norms), where=norms > 0)


def _rescale(block: np.ndarray, ref: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(block))
    return block * (float(np.linalg.norm(ref)) / norm) if norm > 0 else np.zeros_like(block)


def _orthonormalise(d1: np.ndarray, d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gram–Schmidt; a d2 inside span(d1) (always so with one parameter) becomes zero."""
    d1 = d1 / np.linalg.norm(d1)
    d2 = d2 - (d2 @ d1) * d1
    norm2 = float(np.linalg.norm(d2))
    return d1, (d2 / norm2 if norm2 > 1e-12 else np.zeros_like(d2))
