"""The dashboard's computations: ``task(settings, progress) -> payload``, run in a JAX process.

This module imports :mod:`compute` (hence JAX): only the compute server and Celery workers
import it (see :mod:`landscape_app.compute_server`); the web process never does.

Every task validates its settings again (the server trusts no client), builds the problem
(dataset, model, initial point) through :mod:`compute`, calls the library and returns a
payload of JSON values and numpy arrays. Arrays meant for display are float32; values that
tests and exports compare exactly (losses, the initial and final points) stay float64.
``progress(fraction, text)`` is called between pieces of work; it raises when the client
went away or the time budget is spent, which abandons the job.

Tasks (:data:`TASKS`): ``path``, ``surface``, ``cut``, ``spectrum``, ``critical_point``,
``many_starts``, ``theory``; and ``dataset_info`` (checks an upload). The surface, cut,
spectrum, critical-point and theory tasks need the path first; it is computed inside the
task and kept in a small in-process LRU (:func:`compute_path`), so the views of one setting
share one training run.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np

import compute
from compute._datasets import load_dataset, load_dataset_bytes
from compute._errors import InputError
from compute._limits import (
    MAX_CURVE_POINTS,
    MAX_CUT_POINTS,
    MAX_PARAMS_EXACT_LAMBDA,
    MAX_WEIGHT_FLOATS,
    MAX_WEIGHT_ROWS,
    MEMORY_BUDGET_BYTES,
)
from compute._losses import check_targets, flat_objective, sufficient_data, target_kind
from compute._models import flatten_params, init_params, make_model
from landscape_app.compute_server import QUEUED_TEXT
from landscape_app.settings import (
    canonical_key,
    has_plane_point,
    parse_checkpoints,
    upload_dir,
    upload_info,
    validate_settings,
)

__all__ = ["TASKS", "Problem", "build_problem", "compute_path", "device_summary", "run"]

ProgressFn = Callable[[float, str], None]
PATH_CACHE_SIZE = 8              # paths kept in memory for the views that need one
SURFACE_BLOCKS = 8               # the grid is evaluated in this many row blocks (progress)


# --------------------------------------------------------------------------- problem


@dataclass(frozen=True, eq=False)
class Problem:
    """Everything a task needs: model, data (in the working dtype) and the initial point."""

    spec: compute.ModelSpec
    loss: str
    dataset: object           # compute._datasets.Dataset (float64 numpy)
    X: jax.Array              # (m, d_x)
    Y: jax.Array              # (m, d_y)
    theta0: jax.Array         # (n,) flat initial parameters
    dtype: object
    objective: Callable       # objective(theta, X, Y) -> scalar

    @cached_property
    def curvature_data(self) -> tuple[jax.Array, jax.Array]:
        """``(X, Y)`` for the Hessian work (all of it float64): for a deep linear net with
        the squared loss, d_x + d_y float64 rows with the same loss as all m samples
        (:func:`compute.sufficient_data`), so Hessians cost the same for any m; else X, Y."""
        return sufficient_data(self.spec, self.loss, self.X, self.Y, dtype=jnp.float64)

    def loss_at(self, theta) -> float:
        return float(self.objective(jnp.asarray(theta, self.dtype), self.X, self.Y))

    def grad_norm_at(self, theta) -> float:
        g = jax.grad(self.objective)(jnp.asarray(theta, self.dtype), self.X, self.Y)
        return float(jnp.linalg.norm(g))


def _load_data(s: Mapping):
    name = s["dataset"]
    if name.startswith("upload:"):
        digest = name.split(":", 1)[1]
        info = upload_info(name)
        paths = [upload_dir() / f"{digest}{ext}" for ext in (".npz", ".csv")]
        path = next((p for p in paths if p.is_file()), None)
        if info is None or path is None:
            raise InputError("the uploaded dataset is no longer on the server; upload it again.")
        shown = info["filename"] if info["filename"].endswith(path.suffix) else path.name
        dataset = load_dataset_bytes(path.read_bytes(), shown, preprocess=s["preprocess"])
        check_targets(s["loss"], dataset.Y, shown)
        return dataset
    return load_dataset(name, seed=s["data_seed"], n_samples=s["n_samples"], noise=s["noise"],
                        one_hot=not s["signed_targets"], preprocess=s["preprocess"])


@functools.lru_cache(maxsize=64)
def _objective(spec: compute.ModelSpec, loss: str) -> Callable:
    """One objective function per (model, loss): the jitted kernels of :mod:`compute` take
    it as a static argument, so reusing the same function object reuses their compilations
    across requests."""
    return flat_objective(spec, loss)


def build_problem(s: Mapping) -> Problem:
    """The :class:`Problem` that clean settings describe (raises InputError)."""
    dataset = _load_data(s)
    dtype = compute.resolve_dtype(s["precision"])
    spec = make_model(s["model"], dataset.d_x, dataset.d_y, s["widths"],
                      activation=s["activation"], bias=s["bias"])
    params = init_params(spec, s["seed"], method=s["init"], scale=s["init_scale"], dtype=dtype)
    return Problem(spec, s["loss"], dataset, jnp.asarray(dataset.X, dtype),
                   jnp.asarray(dataset.Y, dtype), flatten_params(params), dtype,
                   _objective(spec, s["loss"]))


def device_summary() -> dict:
    """``{"platform", "kind", "count", "jax"}`` of the device that computes."""
    return {**compute.device_info(), "jax": jax.__version__}


def _f32(a) -> np.ndarray:
    """float32 for display; values beyond its range become ±inf (marked cells, not errors)."""
    with np.errstate(over="ignore"):
        return np.asarray(a, dtype=np.float32)


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _sub(progress: ProgressFn, lo: float, hi: float, text: str) -> Callable[[float], None]:
    """A fraction-only progress callback mapped onto ``[lo, hi]`` of the task."""
    return lambda f: progress(lo + (hi - lo) * float(f), text)


# --------------------------------------------------------------------------- the path

_path_lock = threading.Lock()
_paths: OrderedDict[str, object] = OrderedDict()


def compute_path(s: Mapping, problem: Problem, progress: ProgressFn, lo: float = 0.0,
                 hi: float = 1.0):
    """The optimiser path of the settings (``compute.run_path``), cached in memory."""
    from compute._paths import run_path

    key = canonical_key("path", s)
    with _path_lock:
        if key in _paths:
            _paths.move_to_end(key)
            return _paths[key]
    progress(lo, "training")
    # compute._paths needs a Krylov space of ≥ 2 for λ tracking, even when exact: a
    # one-parameter model is trained without it (reported to the paths engineer).
    n = problem.spec.n_params
    lambda_every = s["lambda_every"] if n >= 2 else 0
    result = run_path(problem.spec, s["loss"], problem.theta0, problem.X, problem.Y,
                      optimizer=s["optimizer"], lr=s["lr"], steps=s["steps"], batch=s["batch"],
                      momentum=s["momentum"], seed=s["seed"], lambda_every=lambda_every,
                      lambda_method=lambda_method(n),
                      progress=_sub(progress, lo, hi, "training"))
    with _path_lock:
        _paths[key] = result
        while len(_paths) > PATH_CACHE_SIZE:
            _paths.popitem(last=False)
    return result


def lambda_method(n_params: int) -> str:
    """How a path tracks λ_min/λ_max: exact (n Hessian-vector products and a dense
    eigensolve per point) only up to ``MAX_PARAMS_EXACT_LAMBDA`` parameters, else Lanczos
    (``compute.run_path``'s default Krylov dimension, 40)."""
    return "exact" if n_params <= MAX_PARAMS_EXACT_LAMBDA else "lanczos"


def _path_point(path, step: int | None) -> tuple[np.ndarray, int]:
    """The recorded point nearest ``step`` (None: the final point) and its step."""
    if step is None or step >= path.steps:
        last = int(path.weight_steps[-1]) if path.diverged_at >= 0 else path.steps
        return _f64(path.final), last
    row = int(np.argmin(np.abs(path.weight_steps - step)))
    return _f64(path.weights[row]), int(path.weight_steps[row])


def _main_plateau(path, global_min: float | None):
    from compute._plateaus import find_plateaus

    plateaus = find_plateaus(path.loss, path.grad_norm, reference_loss=global_min,
                             lambda_min=path.lambda_min, lambda_steps=path.lambda_steps)
    return plateaus, (max(plateaus, key=lambda p: p.length) if plateaus else None)


def _saddle_point(path, plateau) -> tuple[np.ndarray, int]:
    """The path's point with the lowest gradient norm on its main plateau.

    Without a plateau: the interior recorded point with the lowest gradient norm.
    """
    steps = np.asarray(path.weight_steps)
    if plateau is not None:
        return _path_point(path, plateau.closest_step)
    if steps.size <= 2:
        return _path_point(path, int(steps[-1]) // 2)
    inner = np.arange(1, steps.size - 1)
    grads = np.asarray(path.grad_norm)[steps[inner]]
    grads = np.where(np.isfinite(grads), grads, np.inf)
    row = int(inner[np.argmin(grads)])
    return _f64(path.weights[row]), int(steps[row])


def _global_min(s: Mapping, problem: Problem) -> float | None:
    """L* of THEORY.md §1 (deep linear net, squared loss), else None."""
    if problem.spec.kind != "linear" or s["loss"] != "squared":
        return None
    from compute._theory import deep_linear_global_minimum

    try:
        return float(deep_linear_global_minimum(problem.dataset.X, problem.dataset.Y,
                                                tuple(problem.spec.layer_sizes[1:-1])))
    except InputError:
        return None


def _thin(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` indices of ``range(n)``, evenly spaced, first and last included."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(np.int64))


def _path_payload(path, problem: Problem, global_min, plateaus) -> dict:
    T = path.loss.shape[0]
    idx = _thin(T, MAX_CURVE_POINTS)
    n = problem.spec.n_params
    rows = _thin(path.weights.shape[0], max(2, min(MAX_WEIGHT_ROWS, MAX_WEIGHT_FLOATS // n)))
    return {
        "steps": idx.astype(np.int64),
        "loss": _f64(path.loss[idx]),
        "grad_norm": _f64(path.grad_norm[idx]),
        "weights": _f32(path.weights[rows]),
        "weight_steps": np.asarray(path.weight_steps[rows], dtype=np.int64),
        "lambda_min": _f64(path.lambda_min),
        "lambda_max": _f64(path.lambda_max),
        "lambda_steps": np.asarray(path.lambda_steps, dtype=np.int64),
        "init": _f64(path.weights[0]),
        "final": _f64(path.final),
        "diverged_at": int(path.diverged_at),
        "plateaus": [{"entry": p.entry, "exit": p.exit, "level": p.loss,
                      "lambda_min": _finite_or_none(p.lambda_min), "grad_norm": p.grad_norm,
                      "closest_step": p.closest_step,
                      "matched_level": _finite_or_none(p.matched_level)} for p in plateaus],
        "global_min": global_min,
        "lambda_method": path.lambda_method,
    }


def _model_info(problem: Problem) -> dict:
    spec = problem.spec
    return {"layer_sizes": list(spec.layer_sizes), "n_params": spec.n_params,
            "param_names": spec.param_names(), "activation": spec.activation,
            "bias": spec.bias, "kind": spec.kind, "n_samples": problem.dataset.n_samples,
            "dataset_description": problem.dataset.description}


def path_task(s: Mapping, progress: ProgressFn) -> dict:
    """Train and record: loss, ‖∇L‖, λ_min/λ_max, weights, plateaus, L* (path payload)."""
    start = time.perf_counter()
    problem = build_problem(s)
    path = compute_path(s, problem, progress, 0.0, 0.9)
    progress(0.9, "finding plateaus")
    global_min = _global_min(s, problem)
    plateaus, _ = _main_plateau(path, global_min)
    if global_min is not None:
        plateaus = _match_levels(plateaus, problem)
    return {**_path_payload(path, problem, global_min, plateaus), **_model_info(problem),
            "seconds": time.perf_counter() - start, "device": device_summary()}


def _match_levels(plateaus, problem: Problem):
    from compute._plateaus import deep_linear_saddle_levels, match_baldi_hornik_levels

    try:
        levels, _ = deep_linear_saddle_levels(problem.dataset.X, problem.dataset.Y,
                                              problem.spec.layer_sizes[1:-1])
    except InputError:
        return plateaus
    return match_baldi_hornik_levels(plateaus, levels)


# --------------------------------------------------------------------------- planes


def _needs_path(s: Mapping) -> bool:
    return s["plane"] in ("pca", "points", "action") or s["center"] in ("final", "selected")


def _center_point(s: Mapping, problem: Problem, path) -> tuple[np.ndarray, int | None]:
    if s["center"] == "init":
        return _f64(problem.theta0), 0
    if s["center"] == "selected":
        return _path_point(path, s["selected_step"])
    return _path_point(path, None)


def _cover(coords: np.ndarray, span: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """A square window around ``coords (k, 2)``, 25 % margin, zoomed by ``span``."""
    coords = coords[np.all(np.isfinite(coords), axis=1)]
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    mid = 0.5 * (lo + hi)
    half = 1.25 * 0.5 * float(np.max(hi - lo))
    half = span * (half if half > 0 else 1.0)
    return (mid[0] - half, mid[0] + half), (mid[1] - half, mid[1] + half)


def make_plane(s: Mapping, problem: Problem, path, progress: ProgressFn) -> dict:
    """The slice of the settings: ``{center, d1, d2, alpha_range, beta_range, ...}``.

    With a selected plane point (``selected_alpha``/``selected_beta`` both set) the result
    also has ``selected``: the point ``center + α·d1 + β·d2`` of the plane that the centre
    setting describes (for centre "selected": the plane at the selected path point,
    ``selected_step`` or the end). Centre "selected" then moves the plane there: same
    directions, centre at that point (its coordinates become (0, 0)).
    """
    plane = _base_plane(s, problem, path, progress)
    if not has_plane_point(s):
        return plane
    a, b = float(s["selected_alpha"]), float(s["selected_beta"])
    point = _f64(plane["center"] + a * plane["d1"] + b * plane["d2"])
    plane["selected"] = point
    if s["center"] == "selected":
        plane["center"] = point
        plane["center_step"] = None
        if s["plane"] in ("pca", "points", "action"):  # the window covered the path: keep
            # covering it
            (a0, a1), (b0, b1) = plane["alpha_range"], plane["beta_range"]
            plane["alpha_range"], plane["beta_range"] = (a0 - a, a1 - a), (b0 - b, b1 - b)
    return plane


def _base_plane(s: Mapping, problem: Problem, path, progress: ProgressFn) -> dict:
    """:func:`make_plane` before a selected plane point moves it.

    * ``random``/``filter``/``layer``: random directions (plain, filter-normalised or
      layer-normalised, Li et al. 2018) at the centre, window ``±span``;
    * ``hessian``: the Hessian eigenvectors of λ_min and λ_max at the centre, ``±span``;
    * ``pca``: the path's top two principal directions (Li et al. 2018 §7) about the
      centre; the window covers the path (``span`` zooms);
    * ``points``: the plane through init, the path's slowest point on its main plateau
      and the final point, or through the recorded points nearest the three
      ``checkpoints`` steps; the window covers the three points (``span`` zooms).
    * ``action``: the plane through the path's slowest point ("the saddle") spanned by the
      way to the final point and the saddle's most negative Hessian eigenvector
      (:func:`compute.action_plane`); the window covers init, saddle and end.
    """
    from compute import _planes

    center, center_step = _center_point(s, problem, path) if path is not None \
        else (_f64(problem.theta0), 0)
    extra: dict = {"center_step": center_step}
    span = float(s["span"])
    window = ((-span, span), (-span, span))
    if s["plane"] in ("filter", "layer") and not np.any(center):
        raise InputError(f"the {s['plane']}-normalised plane scales directions by the weights "
                         "at the centre, which are all zero here; use the random plane or a "
                         "non-zero centre.")
    if s["plane"] in ("random", "filter", "layer"):
        make = {"random": _planes.random_plane, "filter": _planes.filter_normalised_plane,
                "layer": _planes.layer_normalised_plane}[s["plane"]]
        plane = make(problem.spec, center, seed=s["seed"], span=span)
        d1, d2 = _f64(plane.direction1), _f64(plane.direction2)
    elif s["plane"] == "hessian":
        from compute._hessian import hessian_plane_directions

        progress(0.5, "Hessian eigenvectors")
        d1, d2 = hessian_plane_directions(problem.objective, center, *problem.curvature_data,
                                          which="min_max", method=s["spectrum_method"],
                                          seed=s["seed"])
        d1, d2 = _f64(d1), _f64(d2)
    elif s["plane"] == "pca":
        from compute._projection import pca_plane, project_onto_plane

        _, d1, d2, ratio = pca_plane(path.weights, center=center)
        extra["explained_variance"] = _f64(ratio)
        coords, _ = project_onto_plane(path.weights, center, d1, d2)
        window = _cover(coords, span)
    elif s["plane"] == "points" and parse_checkpoints(s["checkpoints"]):
        center, d1, d2, points, steps = _checkpoint_plane(s, path)
        extra.update(center_step=steps[0], checkpoint_steps=steps, checkpoints=points)
        window = _cover(_plane_coords(points, center, d1, d2), span)
    elif s["plane"] == "points":
        _, plateau = _main_plateau(path, _global_min(s, problem))
        saddle, saddle_step = _saddle_point(path, plateau)
        init, final = _f64(path.weights[0]), _f64(path.final)
        plane = _planes.plane_through_points(init, saddle, final,
                                             names=("the initial point", "the slowest point",
                                                    "the final point"))
        center, d1, d2 = _f64(plane.center), _f64(plane.direction1), _f64(plane.direction2)
        extra.update(center_step=None, saddle_step=saddle_step, saddle=saddle)
        window = _cover(_plane_coords(np.stack([init, saddle, final]), center, d1, d2), span)
    else:  # action
        center, d1, d2, found = _action_plane(s, problem, path, progress)
        extra.update(center_step=None, **found)
        points = np.stack([_f64(path.weights[0]), found["saddle"], _f64(path.final)])
        window = _cover(_plane_coords(points, center, d1, d2), span)
    return {"center": center, "d1": d1, "d2": d2, "alpha_range": window[0],
            "beta_range": window[1], **extra}


def _plane_coords(points: np.ndarray, center, d1, d2) -> np.ndarray:
    from compute._projection import project_onto_plane

    return project_onto_plane(points, center, d1, d2)[0]


def _checkpoint_plane(s: Mapping, path):
    """``(center, d1, d2, points (3, n), steps)``: the plane through the recorded points
    nearest the three ``checkpoints`` steps (:func:`compute.checkpoint_plane`)."""
    from compute._honest import checkpoint_plane

    recorded = np.asarray(path.weight_steps)
    steps = [int(recorded[np.argmin(np.abs(recorded - c))])
             for c in parse_checkpoints(s["checkpoints"])]
    if len(set(steps)) < 3:
        every = int(recorded[1] - recorded[0]) if recorded.size > 1 else 1
        raise InputError(f"the checkpoints {s['checkpoints']} fall on fewer than three of the "
                         f"recorded steps (every {every} steps, up to the end or a "
                         "divergence); pick steps further apart.")
    plane = checkpoint_plane(path.weights, recorded, steps)
    rows = [int(np.argmin(np.abs(recorded - c))) for c in steps]
    return (_f64(plane.center), _f64(plane.direction1), _f64(plane.direction2),
            _f64(path.weights[rows]), steps)


def _action_plane(s: Mapping, problem: Problem, path, progress: ProgressFn):
    """``(center, d1, d2, extra)``: :func:`compute.action_plane` with the path's final point
    as the minimum and, as the saddle, its slowest point on its longest plateau that it
    left before the end (a path that ends on a plateau sits at a saddle there)."""
    from compute._honest import action_plane

    plateaus, _ = _main_plateau(path, _global_min(s, problem))
    last = int(path.weight_steps[-1])
    left = [p for p in plateaus if p.closest_step < last]
    saddle, saddle_step = _saddle_point(path, max(left, key=lambda p: p.length)
                                        if left else None)
    final = _f64(path.final)
    if not np.any(final != saddle):
        raise InputError("the path's slowest point is its end point, so there is no way from a "
                         "saddle to a minimum to show; train longer or pick another plane.")
    progress(0.5, "Hessian at the saddle")
    found = action_plane(problem.spec, problem.loss, final, saddle, *problem.curvature_data,
                         method=s["spectrum_method"], seed=s["seed"])
    plane = found.plane
    return (_f64(plane.center), _f64(plane.direction1), _f64(plane.direction2),
            {"saddle": saddle, "saddle_step": saddle_step, "plane_note": found.note,
             "escape_eigenvalue": found.eigenvalue, "saddle_grad_norm": found.grad_norm})


def _marks(plane: Mapping, problem: Problem, path) -> tuple[dict, dict]:
    """Plane coordinates ``[α, β]`` of init, final, centre (and saddle, selected point and the
    checkpoints, named ``step s``), and their distances off the plane."""
    from compute._projection import project_onto_plane

    points = {"init": _f64(problem.theta0)}
    if path is not None:
        points["final"] = _f64(path.final)
    if "saddle" in plane:
        points["saddle"] = plane["saddle"]
    if "selected" in plane:
        points["selected"] = plane["selected"]
    for step, point in zip(plane.get("checkpoint_steps", ()), plane.get("checkpoints", ()),
                           strict=True):
        points[f"step {step}"] = point
    points["center"] = plane["center"]
    coords, dist = project_onto_plane(np.stack(list(points.values())), plane["center"],
                                      plane["d1"], plane["d2"])
    names = list(points)
    marks = {name: [float(coords[i, 0]), float(coords[i, 1])] for i, name in enumerate(names)}
    return marks, {name: float(dist[i]) for i, name in enumerate(names)}


def _grid_surface(problem: Problem, plane: Mapping, grid: int, progress: ProgressFn,
                  lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``alphas (N,), betas (N,), loss (N, N)`` with loss[i, j] at (α_j, β_i).

    The grid is evaluated in :data:`SURFACE_BLOCKS` equal row blocks (one compiled shape) so
    that progress is reported and a cancelled job stops between blocks.
    """
    from compute._surface import loss_surface, surface_method

    alphas = np.linspace(*plane["alpha_range"], grid)
    betas = np.linspace(*plane["beta_range"], grid)
    if surface_method(problem.spec, problem.loss) == "polynomial":  # exact and fast: one go
        progress(lo, "loss surface")
        return alphas, betas, np.asarray(loss_surface(
            problem.spec, problem.loss, plane["center"], plane["d1"], plane["d2"], alphas,
            betas, problem.X, problem.Y, memory_budget=MEMORY_BUDGET_BYTES))
    blocks = min(SURFACE_BLOCKS, grid)
    rows = -(-grid // blocks)
    padded = np.concatenate([betas, np.full(rows * blocks - grid, betas[-1])])
    out = []
    for b in range(blocks):
        progress(lo + (hi - lo) * b / blocks, "loss surface")
        block = padded[b * rows:(b + 1) * rows]
        out.append(np.asarray(loss_surface(
            problem.spec, problem.loss, plane["center"], plane["d1"], plane["d2"], alphas,
            block, problem.X, problem.Y, memory_budget=MEMORY_BUDGET_BYTES)))
    return alphas, betas, np.concatenate(out, axis=0)[:grid]


def surface_task(s: Mapping, progress: ProgressFn) -> dict:
    """The loss on a 2-D slice, with the path projected onto it (surface payload)."""
    from compute._projection import project_onto_plane

    start = time.perf_counter()
    problem = build_problem(s)
    path = compute_path(s, problem, progress, 0.0, 0.4) if _needs_path(s) else None
    plane = make_plane(s, problem, path, progress)
    alphas, betas, loss = _grid_surface(problem, plane, s["grid"], progress, 0.5, 1.0)
    marks, mark_distance = _marks(plane, problem, path)
    payload = {
        "alpha": _f32(alphas), "beta": _f32(betas), "loss": _f32(loss),
        "center": _f64(plane["center"]), "direction1": _f32(plane["d1"]),
        "direction2": _f32(plane["d2"]), "plane": s["plane"],
        "center_step": plane.get("center_step"), "marks": marks,
        "mark_distance": mark_distance, "loss_at_center": problem.loss_at(plane["center"]),
        "explained_variance": plane.get("explained_variance"),
        "seconds": time.perf_counter() - start, "device": device_summary(),
    }
    for name in ("saddle_step", "checkpoint_steps"):
        if name in plane:
            payload[name] = plane[name]
    if path is not None:
        coords, distance = project_onto_plane(path.weights, plane["center"], plane["d1"],
                                              plane["d2"])
        payload.update(path_coords=_f32(coords), path_distance=_f32(distance),
                       path_steps=np.asarray(path.weight_steps, dtype=np.int64),
                       path_loss=_f32(np.asarray(path.loss)[path.weight_steps]))
    return payload


def cut_task(s: Mapping, progress: ProgressFn) -> dict:
    """1-D cuts: along direction 1 through the centre, and along the line init → final.

    ``t`` spans the plane's α window; ``line_t`` runs from −0.5 to 1.5 with 0 = init and
    1 = final (the straight line between them and beyond).
    """
    from compute._surface import loss_cut

    start = time.perf_counter()
    problem = build_problem(s)
    path = compute_path(s, problem, progress, 0.0, 0.5)
    plane = make_plane(s, problem, path, progress)
    n = min(MAX_CUT_POINTS, 4 * (s["grid"] - 1) + 1)
    t = np.linspace(*plane["alpha_range"], n)
    progress(0.7, "cuts")
    along = loss_cut(problem.spec, problem.loss, plane["center"], plane["d1"], t, problem.X,
                     problem.Y, memory_budget=MEMORY_BUDGET_BYTES)
    init, final = _f64(problem.theta0), _f64(path.final)
    line_t = np.linspace(-0.5, 1.5, n)  # n − 1 = 4(grid − 1): t = 0 and t = 1 are samples
    step = final - init if np.any(final != init) else _f64(plane["d1"])
    line = loss_cut(problem.spec, problem.loss, init, step, line_t, problem.X, problem.Y,
                    memory_budget=MEMORY_BUDGET_BYTES)
    return {"t": _f32(t), "loss": _f32(along), "line_t": _f32(line_t), "line_loss": _f32(line),
            "center": _f64(plane["center"]), "direction1": _f32(plane["d1"]),
            "init": init, "final": final, "plane": s["plane"],
            "seconds": time.perf_counter() - start, "device": device_summary()}


# --------------------------------------------------------------------------- curvature


def _selected_point(s: Mapping, problem: Problem, progress: ProgressFn, hi: float):
    """``(θ, step, path)`` of the selected point: the plane point (α, β) of the current
    plane when both are set (step None), else the path point of ``selected_step`` (the
    final point by default)."""
    if has_plane_point(s):
        path = compute_path(s, problem, progress, 0.0, hi) if _needs_path(s) else None
        plane = make_plane(s, problem, path, progress)
        return plane["selected"], None, path
    if s["selected_step"] == 0:
        return _f64(problem.theta0), 0, None
    path = compute_path(s, problem, progress, 0.0, hi)
    theta, step = _path_point(path, s["selected_step"])
    return theta, step, path


def _plane_point(s: Mapping) -> list[float] | None:
    """``[α, β]`` of the selected plane point, or None (the path point is selected)."""
    if not has_plane_point(s):
        return None
    return [float(s["selected_alpha"]), float(s["selected_beta"])]


def _classify(s: Mapping, problem: Problem, theta: np.ndarray, spectrum=None):
    """``compute.classify_critical_point`` at θ (float64), with L* when it is known."""
    from compute._critical import classify_critical_point

    return classify_critical_point(problem.objective, theta, *problem.curvature_data,
                                   spectrum=spectrum, global_min=_global_min(s, problem),
                                   spec=problem.spec, loss=problem.loss,
                                   method=s["spectrum_method"], k=s["k"], seed=s["seed"])


def _critical_summary(cp) -> dict:
    """The JSON part of a ``CriticalPoint``: verdict, counts, tolerances and notes."""
    def number(x):
        return None if x is None else _finite_or_none(x)

    return {"verdict": cp.verdict, "index": number(cp.index), "loss": float(cp.loss),
            "grad_norm": float(cp.grad_norm), "n_negative": int(cp.n_negative),
            "n_zero": int(cp.n_zero), "n_positive": int(cp.n_positive),
            "tolerances": {"grad": float(cp.grad_tol), "eigenvalue": float(cp.eig_tol)},
            "descent_step": number(cp.descent_step), "descent_drop": number(cp.descent_drop),
            "notes": [str(n) for n in cp.notes]}


def _induced_model_loss(problem: Problem, theta: np.ndarray) -> float | None:
    """Kawaguchi et al. (2019)'s induced-model value at θ (squared loss only)."""
    if problem.loss != "squared":
        return None
    from compute._theory import flat_predictor, induced_model_loss

    # The induced model of a deep linear net is linear in x too: the sufficient rows serve.
    X, Y = sufficient_data(problem.spec, problem.loss, problem.dataset.X, problem.dataset.Y)
    try:
        return float(induced_model_loss(flat_predictor(problem.spec), theta, X, Y))
    except InputError:
        return None


def spectrum_task(s: Mapping, progress: ProgressFn) -> dict:
    """Hessian spectrum at the selected point, its density and its classification."""
    from compute._hessian import hessian_spectrum

    start = time.perf_counter()
    problem = build_problem(s)
    theta, step, _ = _selected_point(s, problem, progress, 0.4)
    progress(0.5, "Hessian spectrum")
    spectrum = hessian_spectrum(problem.objective, theta, *problem.curvature_data,
                                method=s["spectrum_method"], k=s["k"], density=True,
                                seed=s["seed"])
    progress(0.9, "classifying")
    payload = {
        "eigenvalues": _f64(spectrum.eigenvalues), "method": spectrum.method,
        "complete": bool(spectrum.complete), "n_params": problem.spec.n_params,
        "density": None if spectrum.density is None else {
            "grid": _f32(spectrum.density[0]), "values": _f32(spectrum.density[1])},
        "sigma": spectrum.sigma, "step": step, "plane_point": _plane_point(s),
        "loss": problem.loss_at(theta),
        "grad_norm": problem.grad_norm_at(theta), "point": _f64(theta),
        "global_min": _global_min(s, problem),
        "induced_model_loss": _induced_model_loss(problem, theta),
    }
    if spectrum.residuals is not None:
        payload["residuals"] = _f64(spectrum.residuals)
    payload.update(_critical_summary(_classify(s, problem, theta, spectrum)))
    payload.update(seconds=time.perf_counter() - start, device=device_summary())
    return payload


def critical_point_task(s: Mapping, progress: ProgressFn) -> dict:
    """Run the saddle finder from the selected point and classify what it reaches."""
    from compute._saddle import find_critical_point

    start = time.perf_counter()
    problem = build_problem(s)
    theta, step, _ = _selected_point(s, problem, progress, 0.4)
    progress(0.5, "searching for a critical point")
    global_min = _global_min(s, problem)
    point, search = find_critical_point(problem.objective, theta, *problem.curvature_data,
                                        spec=problem.spec, loss=problem.loss,
                                        global_min=global_min)
    point = _f64(point)
    progress(0.9, "classifying")
    payload = {"start_step": step, "start_plane_point": _plane_point(s),
               "start": _f64(theta), "point": point,
               "distance": float(search.distance), "search_steps": int(search.steps),
               "converged": bool(search.converged), "tol": float(search.tol),
               "grad_norm_history": _f64(search.grad_norm_history),
               "loss_history": _f64(search.loss_history)}
    found = search.classification or _classify(s, problem, point)
    payload.update(_critical_summary(found))
    payload.update(loss=problem.loss_at(point), grad_norm=problem.grad_norm_at(point),
                   eigenvalues=_f64(found.eigenvalues), global_min=global_min,
                   induced_model_loss=_induced_model_loss(problem, point),
                   seconds=time.perf_counter() - start, device=device_summary())
    return payload


# --------------------------------------------------------------------------- many starts


def many_starts_task(s: Mapping, progress: ProgressFn) -> dict:
    """Train from ``n_starts`` seeded inits at once; where each ends (histogram payload)."""
    from compute._paths import many_starts

    start = time.perf_counter()
    problem = build_problem(s)
    result = many_starts(problem.spec, s["loss"], problem.X, problem.Y,
                         n_starts=s["n_starts"], init=s["init"], scale=s["init_scale"],
                         seed=s["seed"], optimizer=s["optimizer"], lr=s["lr"],
                         steps=s["steps"], batch=s["batch"], momentum=s["momentum"],
                         dtype=problem.dtype, global_minimum=_global_min(s, problem),
                         progress=_sub(progress, 0.0, 1.0, "training every start"))
    converged = np.asarray(result["converged"], dtype=bool)
    return {
        "seeds": np.asarray(result["seeds"], dtype=np.int64),
        "final_losses": _f64(result["final_loss"]),
        "final_grad_norms": _f64(result["final_grad_norm"]),
        "diverged_at": np.asarray(result["diverged_at"], dtype=np.int64),
        "converged": converged, "stationary": np.asarray(result["stationary"], dtype=bool),
        "converged_fraction": float(converged.mean()),
        "global_min": result["global_minimum"],
        "curve_steps": np.asarray(result["curve_steps"], dtype=np.int64),
        "loss_curves": _f32(result["loss_curves"]),
        "seconds": time.perf_counter() - start, "device": device_summary(),
    }


# --------------------------------------------------------------------------- theory


THEORY_UNSTABLE = ("The closed forms could not be evaluated for these data ({why}); their "
                   "values are probably too large or too badly scaled: rescale the inputs "
                   "and targets, or choose preprocess \"standardize\".")


def theory_task(s: Mapping, progress: ProgressFn) -> dict:
    """The closed forms that apply: L*, the gap to it, Baldi–Hornik levels, Saxe's curve.

    A linear-algebra failure or a non-finite L* (data too large or badly scaled for the
    closed forms) is an InputError, not an internal error."""
    start = time.perf_counter()
    problem = build_problem(s)
    path = compute_path(s, problem, progress, 0.0, 0.8)
    progress(0.8, "theory")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            payload = _theory_payload(s, problem, path)
    except np.linalg.LinAlgError:
        raise InputError(THEORY_UNSTABLE.format(
            why="a matrix decomposition did not converge")) from None
    for key, what in (("global_min", "L*"), ("induced_model_loss", "the induced-model loss")):
        value = payload.get(key)
        if value is not None and not math.isfinite(value):
            raise InputError(THEORY_UNSTABLE.format(why=f"{what} is not finite"))
    payload.update(seconds=time.perf_counter() - start, device=device_summary())
    return payload


def _theory_payload(s: Mapping, problem: Problem, path) -> dict:
    final = _f64(path.final)
    final_loss = problem.loss_at(final)
    global_min = _global_min(s, problem)
    notes = []
    payload: dict = {"global_min": global_min, "final_loss": final_loss,
                     "gap": None if global_min is None else final_loss - global_min,
                     "baldi_hornik_levels": None, "saxe_steps": None, "saxe_loss": None,
                     "induced_model_loss": _induced_model_loss(problem, final)}
    if problem.spec.kind != "linear" or s["loss"] != "squared":
        notes.append("L* has a closed form only for deep linear nets with the squared loss.")
    elif global_min is None:
        notes.append("L* is not available for these data (the closed form needs XᵀX and "
                     "XᵀY of full rank).")
    else:
        from compute._plateaus import deep_linear_saddle_levels

        try:
            levels, subsets = deep_linear_saddle_levels(problem.dataset.X, problem.dataset.Y,
                                                        problem.spec.layer_sizes[1:-1])
            payload["baldi_hornik_levels"] = _f64(levels)
            payload["baldi_hornik_subsets"] = [list(map(int, sub)) for sub in subsets]
        except InputError as exc:
            notes.append(str(exc))
        saxe, note = _saxe_overlay(s, problem)
        if saxe is not None:
            payload["saxe_steps"], payload["saxe_loss"] = saxe
        if note:
            notes.append(note)
    payload["notes"] = notes
    return payload


def _saxe_overlay(s: Mapping, problem: Problem):
    """Saxe et al.'s predicted curve for this deep linear net, or ``(None, reason)``."""
    from compute._saxe import saxe_learning_curve

    widths = problem.spec.layer_sizes[1:-1]
    if not widths:
        return None, "Saxe's curve needs at least one hidden layer."
    if s["optimizer"] != "gd" or s["batch"] is not None:
        return None, "Saxe's curve describes full-batch gradient descent (optimizer gd)."
    X, Y = problem.dataset.X, problem.dataset.Y
    m = X.shape[0]
    U, sv, Vt = np.linalg.svd(Y.T @ X / m, full_matrices=False)
    W = np.eye(problem.spec.layer_sizes[0])
    theta = _f64(problem.theta0)
    offset = 0
    for (rows, cols), _ in problem.spec.layer_shapes():
        W = theta[offset:offset + rows * cols].reshape(rows, cols) @ W
        offset += rows * cols
    strengths = np.abs(np.einsum("ia,ij,aj->a", U, W, Vt))  # |U_αᵀ (W_L⋯W_1) V_α|
    u0 = float(np.mean(strengths)) if np.any(strengths > 0) else 0.0
    if not u0 > 0:
        return None, "the initial point has no overlap with the data's modes (u0 = 0)."
    try:
        curve = saxe_learning_curve(X, Y, lr=float(s["lr"]), steps=int(s["steps"]), u0=u0,
                                    hidden_width=min(widths), depth=len(widths))
    except InputError as exc:
        return None, f"Saxe's curve: {exc}"
    idx = _thin(curve.shape[0], MAX_CURVE_POINTS)
    note = ("Saxe's prediction assumes whitened inputs and a balanced start of the same "
            f"initial mode strength (u0 = {u0:.3g}); the path starts from a random init.")
    return (idx.astype(np.int64), _f64(curve[idx])), note


# --------------------------------------------------------------------------- uploads


_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def dataset_info_task(raw: Mapping, progress: ProgressFn) -> dict:
    """Check an uploaded file ``{"digest", "suffix"}`` in the upload folder: its shape."""
    digest, suffix = raw.get("digest"), raw.get("suffix")
    if not isinstance(digest, str) or not _DIGEST.match(digest) or suffix not in (".npz",
                                                                                   ".csv"):
        raise InputError("the upload reference is malformed; upload the file again.")
    path = upload_dir() / f"{digest}{suffix}"
    if not path.is_file():
        raise InputError("the uploaded file is no longer on the server; upload it again.")
    name = str(raw.get("filename") or path.name)[:200]
    if not name.lower().endswith(suffix):
        name = path.name
    dataset = load_dataset_bytes(path.read_bytes(), name)
    return {"rows": dataset.n_samples, "d_x": dataset.d_x, "d_y": dataset.d_y,
            "targets": target_kind(dataset.Y), "description": dataset.description}


# --------------------------------------------------------------------------- dispatch

TASKS: dict[str, Callable[[Mapping, ProgressFn], dict]] = {
    "surface": surface_task,
    "cut": cut_task,
    "spectrum": spectrum_task,
    "path": path_task,
    "many_starts": many_starts_task,
    "critical_point": critical_point_task,
    "theory": theory_task,
}
# Tasks that take their own raw arguments instead of dashboard settings.
RAW_TASKS: dict[str, Callable[[Mapping, ProgressFn], dict]] = {
    "dataset_info": dataset_info_task,
}


def _sleep_task(raw: Mapping, progress: ProgressFn) -> dict:
    """Test helper: report progress every 20 ms for ``seconds`` (``quiet``: never, like a
    stuck kernel); counts finished runs."""
    seconds = float(raw.get("seconds", 1.0))
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if not raw.get("quiet"):
            progress((time.monotonic() - start) / seconds, "sleeping")
        time.sleep(0.02)
    _test_state["slept"] = _test_state.get("slept", 0) + 1
    return {"slept": seconds, "pid": os.getpid(), "finished": _test_state["slept"]}


def _fail_task(raw: Mapping, progress: ProgressFn) -> dict:
    """Test helper: a bug (its message must not reach the client)."""
    raise RuntimeError("secret internal detail /etc/passwd")


def _stats_task(raw: Mapping, progress: ProgressFn) -> dict:
    """Test helper: this process's counters."""
    return {"pid": os.getpid(), **_test_state, "paths_cached": len(_paths)}


_test_state: dict = {}
# Only with LANDSCAPE_TEST_TASKS=1 (the test suite sets it for its compute server).
TEST_TASKS = {"_sleep": _sleep_task, "_fail": _fail_task, "_stats": _stats_task}


# jaxlib's batched LAPACK kernels (eigh, tridiagonal solves, … under vmap) spread a batch
# over XLA's CPU thread pool and wait for it from a thread of that pool, so two computations
# doing so at once can wedge the pool for good: on 2 cores two Morse-index maps hung the
# compute server (jaxlib 0.10.2; OPENBLAS_NUM_THREADS=1 or --xla_cpu_multi_thread_eigen=false
# do not prevent it). On the CPU a process therefore computes one task at a time.
_CPU_TURN = threading.Lock()


@contextlib.contextmanager
def _cpu_turn(progress: ProgressFn):
    """Hold this process's CPU turn (see ``_CPU_TURN``); reports the wait as queued."""
    if compute.device_info()["platform"] != "cpu":
        yield
        return
    while not _CPU_TURN.acquire(timeout=0.25):
        progress(0.0, QUEUED_TEXT)
    try:
        yield
    finally:
        _CPU_TURN.release()


def run(name: str, settings: object, progress: ProgressFn) -> dict:
    """Validate ``settings`` and run the task ``name``; InputError for bad requests."""
    if isinstance(name, str) and name in RAW_TASKS:
        with _cpu_turn(progress):
            return RAW_TASKS[name](settings if isinstance(settings, Mapping) else {}, progress)
    if isinstance(name, str) and name in TEST_TASKS \
            and os.environ.get("LANDSCAPE_TEST_TASKS") == "1":
        return TEST_TASKS[name](settings if isinstance(settings, Mapping) else {}, progress)
    if not isinstance(name, str) or name not in TASKS:
        raise InputError(f"unknown task {str(name)[:40]!r}; one of {', '.join(TASKS)}.")
    clean, errors = validate_settings(settings)
    if errors:
        raise InputError(" ".join(f"{msg}" for msg in errors.values()))
    with _cpu_turn(progress):
        return TASKS[name](clean, progress)


# The Explore views' tasks (landscape_app/explore/*_task.py) build on the helpers above, so
# they are imported once those exist.
from landscape_app.explore.tasks import EXPLORE_TASKS  # noqa: E402

TASKS.update(EXPLORE_TASKS)
