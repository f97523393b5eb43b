"""Compute side of the optimiser-race view (runs in the compute process)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from compute._limits import MAX_CURVE_POINTS
from compute._race import optimiser_race
from landscape_app.settings import parse_racers
from landscape_app.tasks import (
    ProgressFn,
    _f32,
    _f64,
    _finite_or_none,
    _grid_surface,
    _sub,
    _thin,
    build_problem,
    device_summary,
)

TASK = "race"
RACE_GRID = 41      # loss-surface cells per side of the race plane
MAX_FRAMES = 121    # animation frames sent to the browser
MAX_TRAIL = 501     # points of each racer's drawn trail


def run(s: Mapping, progress: ProgressFn) -> dict:
    """Every racer of ``s["race"]`` from the settings' initial point, on one plane.

    :func:`compute.optimiser_race` runs the racers (``batch`` from the settings applies to
    all, ``momentum`` to every racer that names none), the PCA plane of their points
    centred at the start, and each one's escape step from the plateau it starts on; the loss
    is then evaluated on a ``RACE_GRID``² grid of that plane.

    Payload: ``labels``/``optimizers``/``lrs`` (K), ``frame_steps`` (F ≤ ``MAX_FRAMES``),
    ``frame_coords`` (K, F, 2) and ``frame_loss`` (K, F) (NaN after a divergence),
    ``trail_coords`` (K, R, 2), ``curve_steps`` (S), ``loss``/``grad_norm`` (K, S) float64,
    ``escape_step``/``escape_level``/``plateau_level``/``diverged_at`` (K lists; None where
    none), ``alpha``/``beta``/``surface`` (the plane's loss, float32), ``explained_variance``,
    and the plane itself: ``center``, ``direction1``, ``direction2`` (float64).
    """
    start = time.perf_counter()
    problem = build_problem(s)
    racers = [{"optimizer": name, "lr": lr, "momentum": s["momentum"] if beta is None else beta}
              for name, lr, beta in parse_racers(s["race"])]
    race = optimiser_race(problem.spec, problem.loss, problem.theta0, problem.X, problem.Y,
                          racers, s["steps"], batch=s["batch"], seed=s["seed"],
                          progress=_sub(progress, 0.0, 0.8, "racing"))
    plane = race.plane
    alphas, betas, surface = _grid_surface(
        problem, {"center": plane.center, "d1": plane.direction1, "d2": plane.direction2,
                  "alpha_range": plane.alpha_range, "beta_range": plane.beta_range},
        RACE_GRID, progress, 0.8, 1.0)
    frames = _thin(race.frame_steps.size, MAX_FRAMES)
    trail = _thin(race.frame_steps.size, MAX_TRAIL)
    frame_steps = race.frame_steps[frames]
    curve = _thin(race.steps + 1, max(2, MAX_CURVE_POINTS // len(race.racers)))
    losses = np.stack([r.loss for r in race.racers])
    return {
        "labels": race.labels, "optimizers": [r.optimizer for r in race.racers],
        "lrs": [r.lr for r in race.racers], "momentum": float(s["momentum"]),
        "frame_steps": np.asarray(frame_steps, np.int64),
        "frame_coords": _f32(race.frame_coords[:, frames]),
        "frame_loss": _f32(losses[:, frame_steps]),
        "trail_coords": _f32(race.frame_coords[:, trail]),
        "curve_steps": np.asarray(curve, np.int64),
        "loss": _f64(losses[:, curve]),
        "grad_norm": _f64(np.stack([r.grad_norm for r in race.racers])[:, curve]),
        "escape_step": race.escape_steps,
        "escape_level": [_finite_or_none(r.escape_level) for r in race.racers],
        "plateau_level": [_finite_or_none(r.plateau_level) for r in race.racers],
        "escape_fraction": race.escape_fraction,
        "diverged_at": race.diverged_at,
        "alpha": _f32(alphas), "beta": _f32(betas), "surface": _f32(surface),
        "explained_variance": _f64(race.explained_variance),
        "center": _f64(plane.center), "direction1": _f64(plane.direction1),
        "direction2": _f64(plane.direction2),
        "seconds": time.perf_counter() - start, "device": device_summary(),
    }
