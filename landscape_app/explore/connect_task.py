"""Compute side of the minimum-to-minimum view (runs in the compute process)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from compute._connect import classify_path_peak, minimum_energy_path
from compute._errors import InputError
from compute._planes import plane_through_points
from compute._projection import project_onto_plane
from compute._surface import loss_surface
from landscape_app.explore.connect import (
    CLASSIFY_MAX_PARAMS,
    CONNECT_IMAGES,
    CONNECT_LR,
    CONNECT_POINTS,
    CONNECT_STEPS,
    PLANE_GRID,
)
from landscape_app.tasks import (
    ProgressFn,
    _f32,
    _f64,
    _global_min,
    _sub,
    build_problem,
    compute_path,
    device_summary,
)

TASK = "connect"
MAX_POINT_FLOATS = 250_000  # path points (K × n) sent with the payload (tests, NPZ export)


def run(s: Mapping, progress: ProgressFn) -> dict:
    """Two minima (the settings' path from ``seed`` and the same training from ``seed_b``),
    a low-loss path between them (``connect_method``: NEB or Bézier), its barrier, the
    classified critical point at its top and the loss on the plane through the two minima
    and the path's farthest point.

    Payload: ``t``, ``loss``, ``straight_loss`` (K,) float64 along the path and the straight
    segment; ``barrier``/``straight_barrier``, ``peak`` (index), ``peak_loss``,
    ``loss_a``/``loss_b``, ``distance`` ‖θ_b − θ_a‖, ``global_min`` (deep linear, else
    None), ``history`` (steps + 1,) float32, ``converged_force``; ``thetas`` (K, n) float64
    when K·n ≤ ``MAX_POINT_FLOATS``; ``peak_verdict``, ``peak_critical_loss``,
    ``peak_distance``, ``peak_grad_norm``, ``peak_converged`` up to
    ``CLASSIFY_MAX_PARAMS`` parameters (else None); ``alpha`` (G,), ``beta`` (G,),
    ``surface`` (G, G) float32 at ``center + α direction1 + β direction2`` (each (n,)
    float64; center = θ_a, direction1 = θ_b − θ_a), ``path_coords`` (K, 2),
    ``straight_coords`` (2, 2), ``off_plane`` (max distance of the path off that plane),
    ``marks``. Without a plane (the path is straight) those keys are absent.
    """
    start = time.perf_counter()
    seed_a, seed_b = int(s["seed"]), int(s["seed_b"])
    if seed_a == seed_b:
        raise InputError(f"the second start's seed equals the first ({seed_a}); choose a "
                         "different second seed so the two runs end at different minima.")
    problem = build_problem(s)
    path_a = compute_path(s, problem, progress, 0.0, 0.2)
    s_b = {**s, "seed": seed_b, "lambda_every": 0}
    problem_b = build_problem(s_b)
    path_b = compute_path(s_b, problem_b, progress, 0.2, 0.4)
    a, b = _f64(path_a.final), _f64(path_b.final)
    for seed, path, end in ((seed_a, path_a, a), (seed_b, path_b, b)):
        if path.diverged_at >= 0 or not np.all(np.isfinite(end)):
            raise InputError(f"the run from seed {seed} diverged; lower the step size.")
    if np.array_equal(a, b):
        raise InputError("both runs ended at the same point; choose another second seed.")
    spec, X, Y = problem.spec, problem.X, problem.Y
    method = s["connect_method"]
    path = minimum_energy_path(spec, problem.loss, a, b, X, Y, method=method,
                               n_images=CONNECT_IMAGES, steps=CONNECT_STEPS, lr=CONNECT_LR,
                               n_points=CONNECT_POINTS, seed=seed_a, dtype=problem.dtype,
                               progress=_sub(progress, 0.4, 0.75, f"{method} path"))
    global_min = _global_min(s, problem)
    K, n = path.thetas.shape
    payload = {
        "t": path.t, "loss": path.loss, "straight_loss": path.straight_loss,
        "barrier": path.barrier, "straight_barrier": path.straight_barrier,
        "peak": path.peak, "peak_loss": path.peak_loss, "loss_a": float(path.loss[0]),
        "loss_b": float(path.loss[-1]), "distance": float(np.linalg.norm(b - a)),
        "global_min": global_min, "history": _f32(path.history),
        "converged_force": path.converged_force, "method": method, "n_images": path.n_images,
        "steps": path.steps, "lr": path.lr, "seed_a": seed_a, "seed_b": seed_b,
        "n_params": n,
    }
    if K * n <= MAX_POINT_FLOATS:
        payload["thetas"] = path.thetas
    payload.update(_peak(s, problem, path, global_min, progress))
    payload.update(_plane(problem, path, a, b, progress))
    payload.update(seconds=time.perf_counter() - start, device=device_summary())
    return payload


def _peak(s: Mapping, problem, path, global_min, progress: ProgressFn) -> dict:
    """The critical point the saddle finder reaches from the path's top, classified."""
    keys = ("peak_verdict", "peak_critical_loss", "peak_distance", "peak_grad_norm",
            "peak_converged")
    if problem.spec.n_params > CLASSIFY_MAX_PARAMS:
        return dict.fromkeys(keys)
    progress(0.78, "classifying the top of the path")
    peak = classify_path_peak(problem.spec, problem.loss, path, problem.X, problem.Y,
                              global_min=global_min, dtype=problem.dtype)
    return dict(zip(keys, (peak.verdict, peak.loss, peak.distance, peak.grad_norm,
                           bool(peak.converged)), strict=True))


def _plane(problem, path, a: np.ndarray, b: np.ndarray, progress: ProgressFn) -> dict:
    """The loss on the plane through θ_a, θ_b and the path point farthest off the segment
    (the Bézier curve lies in it exactly), with the path projected onto it."""
    if path.control is not None:
        third = path.control
    else:
        d = b - a
        along = (path.thetas - a) @ d / (d @ d)
        off = np.linalg.norm(path.thetas - a - along[:, None] * d, axis=1)
        third = path.thetas[int(np.argmax(off))]
    try:
        plane = plane_through_points(a, b, third, names=("minimum A", "minimum B", "path"))
    except InputError:  # the path is the straight segment: no plane to draw
        return {}
    progress(0.9, "loss on the plane of the path")
    alphas = np.linspace(*plane.alpha_range, PLANE_GRID)
    betas = np.linspace(*plane.beta_range, PLANE_GRID)
    surface = loss_surface(problem.spec, problem.loss, plane.center, plane.direction1,
                           plane.direction2, alphas, betas, problem.X, problem.Y,
                           dtype=problem.dtype)
    coords, distance = project_onto_plane(path.thetas, plane.center, plane.direction1,
                                          plane.direction2)
    peak = coords[path.peak]
    return {"alpha": alphas, "beta": betas, "surface": _f32(surface),
            "center": _f64(plane.center), "direction1": _f64(plane.direction1),
            "direction2": _f64(plane.direction2),
            "path_coords": _f32(coords), "straight_coords": _f32([[0.0, 0.0], [1.0, 0.0]]),
            "off_plane": float(np.max(distance)),
            "marks": {"minimum A": [0.0, 0.0], "minimum B": [1.0, 0.0],
                      "top of the path": [float(peak[0]), float(peak[1])]}}
