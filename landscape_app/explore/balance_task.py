"""Compute side of the conserved-quantities view (runs in the compute process)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from compute._conservation import balancedness, balancedness_drift, rescaling_directions
from compute._critical import default_tolerance
from compute._errors import InputError
from compute._hessian import hessian_spectrum
from compute._limits import MAX_STEPS
from landscape_app.tasks import ProgressFn, build_problem, compute_path, device_summary

TASK = "balancedness"
MAX_PARAMS_FLAT_MODES = 600  # exact end-point spectrum for the flat-direction count


def run(s: Mapping, progress: ProgressFn) -> dict:
    """Drift of the balancedness matrices along the path, at step η and at η/2 over the same
    time (gradient descent conserves them to O(η)), and the end point's flat directions.

    Payload: ``time`` (T,) = η·step and ``drift`` (T,) = Σ_k ‖D_k(θ_t) − D_k(θ_0)‖_F for the
    path; ``time_half``/``drift_half`` for η/2 (absent when 2·steps is over the limit or the
    optimiser is not plain GD-like); ``d0_norm`` = Σ_k ‖D_k(θ_0)‖_F; and, for models up to
    ``MAX_PARAMS_FLAT_MODES`` parameters, ``abs_eigenvalues`` (n,) ascending |λ| of the
    end point's Hessian, ``zero_tol`` τ, ``symmetry_rank`` (dimension of the rescaling
    orbit's tangent space there) and ``symmetry_curvature`` (max |vᵀHv| / max|λ| over an
    orthonormal basis v of that space: 0 at a critical point).
    """
    start = time.perf_counter()
    problem = build_problem(s)
    spec = problem.spec
    path = compute_path(s, problem, progress, 0.0, 0.4)
    drift = balancedness_drift(spec, path.weights)  # InputError for tanh/sigmoid, no hidden
    lr = float(s["lr"])
    payload = {
        "time": lr * np.asarray(path.weight_steps, np.float64), "drift": drift,
        "d0_norm": float(sum(np.linalg.norm(D) for D in balancedness(spec, path.weights[0]))),
        "lr": lr, "optimizer": s["optimizer"], "diverged_at": int(path.diverged_at),
        "activation": spec.activation,
    }
    if 2 * s["steps"] <= MAX_STEPS:
        half = {**s, "lr": lr / 2, "steps": 2 * s["steps"]}
        path_half = compute_path(half, problem, progress, 0.4, 0.8)
        payload.update(time_half=lr / 2 * np.asarray(path_half.weight_steps, np.float64),
                       drift_half=balancedness_drift(spec, path_half.weights))
    n = spec.n_params
    if n <= MAX_PARAMS_FLAT_MODES:
        progress(0.85, "end-point spectrum")
        theta = np.asarray(path.final, np.float64)
        if not np.all(np.isfinite(theta)):
            raise InputError("the path diverged, so its end point has no spectrum; lower the "
                             "step size.")
        spectrum = hessian_spectrum(problem.objective, theta, *problem.curvature_data,
                                    method="exact")
        lam = np.asarray(spectrum.eigenvalues, np.float64)
        vecs = np.asarray(spectrum.eigenvectors, np.float64)
        scale = float(np.max(np.abs(lam))) or 1.0
        V = rescaling_directions(spec, theta)
        basis, sv, _ = np.linalg.svd(V.T, full_matrices=False)
        rank = int(np.sum(sv > sv[0] * 1e-8)) if sv.size and sv[0] > 0 else 0
        basis = basis[:, :rank]
        # vᵀHv from the eigendecomposition (H = Q Λ Qᵀ), for each orthonormal tangent v.
        proj = vecs.T @ basis
        curvature = np.abs(np.einsum("ij,i,ij->j", proj, lam, proj)) if rank else np.zeros(0)
        payload.update(
            abs_eigenvalues=np.sort(np.abs(lam)), zero_tol=default_tolerance(np.float64) * scale,
            symmetry_rank=rank,
            symmetry_curvature=float(curvature.max() / scale) if rank else 0.0,
            grad_norm_end=problem.grad_norm_at(theta))
    payload.update(seconds=time.perf_counter() - start, device=device_summary())
    return payload
