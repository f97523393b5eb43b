"""Compute side of the honest-slice view (runs in the compute process)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from compute._honest import honest_slice
from compute._limits import MAX_WEIGHT_ROWS
from landscape_app.tasks import (
    ProgressFn,
    _f32,
    _f64,
    _marks,
    _thin,
    build_problem,
    compute_path,
    device_summary,
    make_plane,
)

TASK = "honest_slice"


def run(s: Mapping, progress: ProgressFn) -> dict:
    """The path's true loss next to the loss the slice shows under each drawn point.

    The plane is the one the surface card draws (``make_plane``: random, filter, layer,
    Hessian, PCA, points/checkpoints or action). At each recorded path point θ_t (at most
    ``MAX_WEIGHT_ROWS``, evenly thinned) :func:`compute.honest_slice` gives the plane
    coordinates (α_t, β_t), ``true_loss`` L(θ_t), ``slice_loss`` L(c + α_t d₁ + β_t d₂),
    ``distance`` ‖θ_t − projection‖ and ``relative_distance`` (that over
    ``center_distance`` ‖θ_t − c‖).

    Payload: ``steps`` (R,), ``alpha``/``beta``/``distance``/``relative_distance`` (float32),
    ``true_loss``/``slice_loss`` (float64), ``max_gap``, ``plane``, ``explained_variance``
    (PCA), ``plane_note`` (action plane), ``checkpoint_steps``, ``saddle_step``, ``marks``.
    """
    start = time.perf_counter()
    problem = build_problem(s)
    path = compute_path(s, problem, progress, 0.0, 0.5)
    plane = make_plane(s, problem, path, progress)
    rows = _thin(path.weights.shape[0], MAX_WEIGHT_ROWS)
    progress(0.7, "true and slice losses")
    result = honest_slice(problem.spec, problem.loss, path.weights[rows], plane["center"],
                          plane["d1"], plane["d2"], problem.X, problem.Y)
    marks, mark_distance = _marks(plane, problem, path)
    payload = {
        "steps": np.asarray(path.weight_steps[rows], dtype=np.int64),
        "alpha": _f32(result.alpha), "beta": _f32(result.beta),
        "true_loss": _f64(result.true_loss), "slice_loss": _f64(result.slice_loss),
        "distance": _f32(result.distance),
        "relative_distance": _f32(result.relative_distance),
        "center_distance": _f32(np.linalg.norm(
            np.asarray(path.weights[rows], np.float64) - plane["center"], axis=1)),
        "max_gap": float(result.max_gap), "plane": s["plane"],
        "explained_variance": plane.get("explained_variance"),
        "plane_note": plane.get("plane_note", ""),
        "checkpoint_steps": plane.get("checkpoint_steps"),
        "saddle_step": plane.get("saddle_step"), "center_step": plane.get("center_step"),
        "marks": marks, "mark_distance": mark_distance,
        "diverged_at": int(path.diverged_at),
        "seconds": time.perf_counter() - start, "device": device_summary(),
    }
    return payload
