"""Compute side of the Morse-index map (runs in the compute process)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from compute._index_map import MAX_PARAMS_INDEX_MAP, morse_index_map
from compute._projection import project_onto_plane
from landscape_app.explore.index_map import LANCZOS_PROBES, LANCZOS_STEPS
from landscape_app.tasks import (
    ProgressFn,
    _f32,
    _marks,
    _needs_path,
    build_problem,
    compute_path,
    device_summary,
    make_plane,
)

TASK = "index_map"


def run(s: Mapping, progress: ProgressFn) -> dict:
    """Index, λ_min and λ_max of the Hessian on an ``imap_grid``² grid of the plane that the
    surface view shows (same centre, directions and window): exact up to
    ``MAX_PARAMS_INDEX_MAP`` parameters, estimated by stochastic Lanczos quadrature above
    (``LANCZOS_PROBES`` probes of ``LANCZOS_STEPS`` steps per cell; ``method`` says which,
    ``index_stderr`` is the estimate's standard error)."""
    start = time.perf_counter()
    problem = build_problem(s)
    path = compute_path(s, problem, progress, 0.0, 0.3) if _needs_path(s) else None
    plane = make_plane(s, problem, path, progress)
    n = s["imap_grid"]
    alphas = np.linspace(*plane["alpha_range"], n)
    betas = np.linspace(*plane["beta_range"], n)
    n_params = problem.spec.n_params
    exact = n_params <= MAX_PARAMS_INDEX_MAP
    steps = min(n_params, LANCZOS_STEPS)
    progress(0.4, f"{n}×{n} Hessians" if exact else
             f"{n}×{n} cells × {LANCZOS_PROBES} Lanczos probes of {steps} steps")
    out = morse_index_map(problem.spec, problem.loss, plane["center"], plane["d1"],
                          plane["d2"], alphas, betas, *problem.curvature_data, method="auto",
                          lanczos_steps=steps, probes=LANCZOS_PROBES)
    marks, _ = _marks(plane, problem, path)
    payload = {
        "alpha": alphas, "beta": betas, "index": out["index"],
        "lambda_min": out["lambda_min"], "lambda_max": out["lambda_max"],
        "method": out["method"], "index_estimate": out["index_estimate"],
        "index_stderr": out["index_stderr"], "index_low": out["index_low"],
        "index_high": out["index_high"], "relative_tolerance": out["relative_tolerance"],
        "probes": out["probes"], "lanczos_steps": out["lanczos_steps"],
        "center": plane["center"], "direction1": plane["d1"], "direction2": plane["d2"],
        "n_params": n_params, "marks": marks,
        "seconds": time.perf_counter() - start, "device": device_summary(),
    }
    if path is not None:
        coords, _ = project_onto_plane(path.weights, plane["center"], plane["d1"], plane["d2"])
        payload["path_coords"] = _f32(coords)
    return payload
