"""``python -m compute surface``: the loss on a plane (or a 1-D cut) through a point → .npz.

Contract (README): ``python -m compute surface --data D --weights W.npz --model linear|mlp
[--activation A] [--widths 16,16] [--seed K] --plane random|filter|layer|points --span S
--grid N --out OUT.npz``. ``OUT.npz`` holds ``alpha`` (N), ``beta`` (N), ``loss`` (N × N,
``loss[i, j]`` at ``(alpha[j], beta[i])``), ``direction1``, ``direction2`` and ``center``
(flat, THEORY.md order); also ``method``, ``seconds``, ``plane``, ``mark_names`` and
``mark_coords``. With ``--cut`` the surface is the 1-D cut along direction1: ``beta`` is
``[0]`` and ``loss`` is 1 × N.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from compute._cli import add_problem_arguments, load_problem, write_npz
from compute._errors import InputError
from compute._limits import (
    MAX_CUT_POINTS,
    MAX_GRID,
    MAX_SEED,
    MAX_SURFACE_WORK,
    check_range,
    work_scale,
)
from compute._planes import (
    BIAS_MODES,
    PLANE_KINDS,
    filter_normalised_plane,
    grid_coordinates,
    layer_normalised_plane,
    plane_through_points,
    random_plane,
)
from compute._surface import SURFACE_METHODS

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The surface command's options (the shared problem options first)."""
    add_problem_arguments(parser, init=True)
    g = parser.add_argument_group("surface")
    g.add_argument("--plane", default="filter", choices=PLANE_KINDS,
                   help="directions: random (orthonormal Gaussian), filter (Li et al. 2018), "
                        "layer (layer-normalised), points (through --points p0, p1, p2)")
    g.add_argument("--span", type=float, default=1.0,
                   help="half-width of the plane's coordinate range (random/filter/layer)")
    g.add_argument("--grid", type=int, default=51, help=f"points per side, 1..{MAX_GRID}")
    g.add_argument("--out", required=True, help="output .npz file")
    g.add_argument("--cut", action="store_true",
                   help=f"a 1-D cut along direction1 instead of a grid (up to "
                        f"{MAX_CUT_POINTS} points)")
    g.add_argument("--points", default=None,
                   help=".npz with flat vectors p0, p1, p2 (for --plane points)")
    g.add_argument("--margin", type=float, default=0.25,
                   help="points plane: margin around the three points, as a fraction")
    g.add_argument("--bias-mode", default="zero", choices=BIAS_MODES,
                   help="filter/layer planes: zero the bias directions or keep them")
    g.add_argument("--plane-seed", type=int, default=None,
                   help="seed of the random directions (default: --seed)")
    g.add_argument("--method", default="auto", choices=SURFACE_METHODS,
                   help="auto: polynomial expansion for deep linear nets, else direct")


def run(args: argparse.Namespace) -> int:
    """Build the problem and the plane, evaluate the surface, write ``--out``."""
    from compute._models import flatten_params
    from compute._surface import loss_surface, surface_method

    limit = MAX_CUT_POINTS if args.cut else MAX_GRID
    check_range("--grid", args.grid, 1, limit)
    if not np.isfinite(args.span):
        raise InputError(f"--span must be a finite number, got {args.span!r}.")
    if args.plane_seed is not None and not 0 <= args.plane_seed <= MAX_SEED:
        raise InputError(f"--plane-seed must be an integer between 0 and {MAX_SEED}, "
                         f"got {args.plane_seed}.")
    problem = load_problem(args)
    theta = np.asarray(flatten_params(problem.params), dtype=np.float64)
    plane = _make_plane(args, problem.spec, theta)
    if args.cut:
        alphas = np.linspace(*plane.alpha_range, args.grid) if args.grid > 1 \
            else np.array([sum(plane.alpha_range) / 2.0])
        betas = np.zeros(1)
    else:
        alphas, betas = grid_coordinates(plane, args.grid)
    method = surface_method(problem.spec, problem.loss, args.method)
    _check_work(args, problem, method)
    _check_finite_center(problem, plane.center, args.precision)
    start = time.perf_counter()
    loss = loss_surface(problem.spec, problem.loss, plane.center, plane.direction1,
                        plane.direction2, alphas, betas, problem.dataset.X, problem.dataset.Y,
                        method=method, dtype=problem.dtype)
    seconds = time.perf_counter() - start
    if not np.any(np.isfinite(loss)):
        raise InputError("the loss is not finite anywhere on this plane (the data or weights "
                         "are too large): rescale the data or use a smaller --span.")
    names = list(plane.marks)
    write_npz(args.out, alpha=alphas, beta=betas, loss=loss, center=plane.center,
              direction1=plane.direction1, direction2=plane.direction2,
              method=np.array(method), plane=np.array(args.plane),
              seconds=np.array(seconds), mark_names=np.array(names, dtype=str),
              mark_coords=np.array([plane.marks[k] for k in names], dtype=np.float64))
    shape = f"{len(betas)}×{len(alphas)}"
    print(f"wrote {args.out}: loss on a {shape} {args.plane} plane ({method}, "
          f"{seconds:.2f} s), min {np.nanmin(loss):.6g}, max {np.nanmax(loss):.6g}")
    return 0


def _check_work(args: argparse.Namespace, problem, method: str) -> None:
    """The dashboard's surface budget: grid points × samples × parameters ≤ MAX_SURFACE_WORK
    (× LANDSCAPE_WORK_SCALE). The polynomial method's cost does not grow with that product
    (the data enter once, as XᵀX), so only the direct method is counted."""
    if method == "polynomial":
        return
    m, n = problem.dataset.n_samples, problem.spec.n_params
    budget = MAX_SURFACE_WORK * work_scale()
    points = args.grid if args.cut else args.grid ** 2
    if points * m * n <= budget:
        return
    fits = int(budget // (m * n))
    what = f"a cut of {args.grid:,} points" if args.cut else f"a {args.grid}×{args.grid} grid"
    most = fits if args.cut else math.isqrt(fits)
    fix = f"use --grid {most} or less (or a smaller model or dataset)" if most >= 1 \
        else "use a smaller model or dataset"
    raise InputError(f"{what} of this model ({n:,} parameters) on {m:,} samples is too much "
                     f"work for one run; {fix}.")


def _check_finite_center(problem, center: np.ndarray, precision: str) -> None:
    """InputError unless the loss is finite at the plane's centre in the working precision:
    otherwise every cell is NaN or inf and the surface says nothing."""
    import jax.numpy as jnp

    from compute._losses import flat_objective

    objective = flat_objective(problem.spec, problem.loss)
    with np.errstate(over="ignore", invalid="ignore"):
        value = float(objective(jnp.asarray(center, problem.dtype), problem.X, problem.Y))
    if not np.isfinite(value):
        hint = "use --precision float64, " if precision == "float32" else ""
        raise InputError(f"the loss is not finite at the centre of the plane in {precision} "
                         f"(the data or weights are too large): {hint}rescale the data "
                         "(e.g. --preprocess standardise) or use smaller weights.")


def _make_plane(args: argparse.Namespace, spec, theta: np.ndarray):
    seed = args.seed if args.plane_seed is None else args.plane_seed
    if args.plane == "random":
        return random_plane(spec, theta, seed=seed, span=args.span)
    if args.plane == "filter":
        return filter_normalised_plane(spec, theta, seed=seed, span=args.span,
                                       bias=args.bias_mode)
    if args.plane == "layer":
        return layer_normalised_plane(spec, theta, seed=seed, span=args.span,
                                      bias=args.bias_mode)
    if not args.points:
        raise InputError("--plane points needs --points P.npz with flat vectors p0, p1, p2.")
    points = _load_points(args.points, spec.n_params)
    return plane_through_points(*points, margin=args.margin)


def _load_points(path: str, n_params: int) -> list[np.ndarray]:
    """``p0, p1, p2`` from an .npz, each a flat vector of the model's parameters."""
    from compute._datasets import load_npz_file

    # Capped at this model's size: a point is a flat vector of its parameters.
    arrays = load_npz_file(path, what="points file", example="p0=..., p1=..., p2=...",
                           keys=("p0", "p1", "p2"), max_elements=n_params,
                           max_total=3 * n_params, max_arrays=3,
                           why=f"each point is a vector of the model's {n_params} parameters")
    points = [arrays[k] for k in ("p0", "p1", "p2")]
    for name, p in zip(("p0", "p1", "p2"), points, strict=True):
        if p.dtype.kind not in "iuf" or p.size != n_params:
            raise InputError(f"{name} must be a flat vector of the model's {n_params} "
                             f"parameters, got shape {p.shape} ({p.dtype}).")
    return [p.astype(np.float64).reshape(-1) for p in points]
