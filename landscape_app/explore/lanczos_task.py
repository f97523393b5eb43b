"""Compute side of the Lanczos-diagnostics view (runs in the compute process)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from compute._errors import InputError
from compute._hessian import hessian_matrix
from compute._lanczos import gaussian_density
from compute._lanczos_diagnostics import lanczos_ritz_history, slq_probe_spread
from landscape_app.explore.lanczos import MAX_PARAMS_EXACT, RITZ_STEPS, SLQ_STEPS
from landscape_app.tasks import (
    ProgressFn,
    _f32,
    _f64,
    _plane_point,
    _selected_point,
    build_problem,
    device_summary,
)

TASK = "lanczos_diagnostics"
DENSITY_GRID = 256  # points of the SLQ density grid sent to the browser
RITZ_TOL = 1e-8     # relative tolerance of "converged at"


def run(s: Mapping, progress: ProgressFn) -> dict:
    """Ritz history and SLQ probe spread of the Hessian at the selected point (the point
    the spectrum card uses), float64 whatever the precision setting.

    Payload: ``ritz_values`` (S, S) float32 (row j − 1: the j Ritz values after step j, then
    NaN), ``extreme_values``/``residual_bounds`` (S, 2k) float64, ``converged_at`` (2k,),
    ``tol``, ``zero_floor``, ``steps`` S = min(n, max(RITZ_STEPS, 4k)); the probes' ``grid`` (G,),
    ``densities`` (P, G), ``density_mean``/``_std``/``_min``/``_max`` (G,) float32,
    ``moments`` (P, 2), ``moment_mean``/``moment_stderr`` (2,), ``sigma``, ``slq_steps``;
    up to ``MAX_PARAMS_EXACT`` parameters also ``exact_eigenvalues`` (n,), ``trace_over_n``
    and ``exact_density`` (G,) (the exact eigenvalues smoothed with the same σ); ``point``
    (n,) the parameters, ``step`` / ``plane_point`` which point they are.
    """
    start = time.perf_counter()
    problem = build_problem(s)
    theta, step, _ = _selected_point(s, problem, progress, 0.3)
    theta = np.asarray(theta, np.float64)
    if not np.all(np.isfinite(theta)):
        raise InputError("the selected point is not finite (the path diverged); lower the "
                         "step size or select an earlier step.")
    n = problem.spec.n_params
    k = int(s["k"])
    steps = min(n, max(RITZ_STEPS, 4 * k))
    progress(0.35, f"{steps} Lanczos steps")
    X, Y = problem.curvature_data
    history = lanczos_ritz_history(problem.objective, theta, X, Y,
                                   steps=steps, k=k, seed=s["seed"], tol=RITZ_TOL)
    progress(0.55, f"{s['probes']} SLQ probes")
    spread = slq_probe_spread(problem.objective, theta, X, Y,
                              probes=s["probes"], steps=SLQ_STEPS, seed=s["seed"],
                              grid=DENSITY_GRID)
    payload = {
        "ritz_values": _f32(history.ritz_values), "extreme_values": history.extreme_values,
        "residual_bounds": history.residual_bounds, "converged_at": history.converged_at,
        "tol": history.tol, "zero_floor": history.zero_floor, "steps": history.steps,
        "k": k, "scale": history.scale,
        "grid": _f32(spread.grid), "densities": _f32(spread.densities),
        "density_mean": _f32(spread.mean), "density_std": _f32(spread.std),
        "density_min": _f32(spread.lower), "density_max": _f32(spread.upper),
        "moments": spread.moments, "moment_mean": spread.moment_mean,
        "moment_stderr": spread.moment_stderr, "sigma": spread.sigma,
        "slq_steps": int(spread.nodes.shape[1]), "probes": spread.probes,
        "n_params": n, "step": step, "plane_point": _plane_point(s), "point": _f64(theta),
    }
    if n <= MAX_PARAMS_EXACT:
        progress(0.85, "exact eigenvalues for reference")
        H = np.asarray(hessian_matrix(problem.objective, theta, X, Y), np.float64)
        lam = np.linalg.eigvalsh(H)
        _, exact = gaussian_density(lam, np.full(n, 1.0 / n), sigma=spread.sigma,
                                    grid=spread.grid)
        payload.update(exact_eigenvalues=_f64(lam), trace_over_n=float(lam.mean()),
                       exact_density=_f32(exact))
    payload.update(seconds=time.perf_counter() - start, device=device_summary())
    return payload
