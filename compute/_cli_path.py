"""``python -m compute path``: an optimiser's path with loss, gradient norm and λ_min → .npz.

Contract (README): ``python -m compute path --data D [--weights W.npz | --init NAME
--init-scale S --seed K] --model linear|mlp [...] --optimizer gd|momentum|nesterov|adam|sgd
--lr LR --steps T [--batch B] --out OUT.npz`` writes

* ``loss`` (T+1, ``loss[0]`` at the start) and ``grad_norm`` (T+1), full-batch;
* ``weights`` (strided flat rows, THEORY.md's order) and ``weight_steps``;
* ``lambda_min``, ``lambda_max``, ``lambda_steps`` (empty unless ``--lambda-every k``);
* ``final`` (flat) and ``diverged_at`` (-1 if the run stayed finite);
* extras: ``seconds``, ``global_minimum`` (NaN unless known) and the plateau table
  ``plateau_entry``, ``plateau_exit``, ``plateau_loss``, ``plateau_lambda_min``.

Divergence is a result, not an error: exit code 0, ``diverged_at`` set, one note on stderr.
Bad input exits with code 2 and one line. The optimiser's gradient noise is
``--grad-noise`` (``--noise`` is the synthetic dataset's noise).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from compute._cli import add_problem_arguments, load_problem, write_npz
from compute._errors import InputError
from compute._limits import (
    MAX_LANCZOS_STEPS,
    MAX_PATH_WORK,
    lambda_evaluations,
    path_rows,
    path_step_work,
    work_scale,
)
from compute._losses import flat_objective
from compute._models import flatten_params
from compute._optimisers import OPTIMIZERS
from compute._paths import (
    LAMBDA_METHODS,
    _known_global_minimum,
    check_seed_and_scale,
    run_path,
    saddle_plus_eigenvector,
)
from compute._plateaus import find_plateaus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_problem_arguments(parser, init=True)
    g = parser.add_argument_group("path")
    g.add_argument("--optimizer", default="gd", choices=OPTIMIZERS)
    g.add_argument("--lr", type=float, required=True, help="step size η > 0")
    g.add_argument("--steps", type=int, required=True, help="optimiser steps T")
    g.add_argument("--batch", type=int, default=None,
                   help="minibatch size (sgd defaults to min(32, m); others full batch)")
    g.add_argument("--momentum", type=float, default=0.9, help="β of momentum / nesterov")
    g.add_argument("--grad-noise", type=float, default=0.0,
                   help="σ of Gaussian noise added to every gradient")
    g.add_argument("--weight-stride", type=int, default=None,
                   help="keep the weights every this many steps (default: ~1000 rows)")
    g.add_argument("--lambda-every", type=int, default=0,
                   help="track λ_min/λ_max of the Hessian every k steps (0: off)")
    g.add_argument("--lambda-method", default="auto", choices=LAMBDA_METHODS)
    g.add_argument("--lanczos-steps", type=int, default=None)
    g.add_argument("--saddle-eps", type=float, default=None,
                   help="start at the given weights plus ε along a Hessian eigenvector")
    g.add_argument("--saddle-direction", default="min", choices=["min", "max"],
                   help="which eigenvector --saddle-eps follows")
    g.add_argument("--out", required=True, help="output .npz")


def run(args: argparse.Namespace) -> int:
    check_seed_and_scale(args.seed, None if args.weights else args.init_scale)
    problem = load_problem(args)
    _check_work(args, problem)
    X, Y = problem.X, problem.Y
    theta0 = flatten_params(problem.params)
    given_norm = float(np.linalg.norm(np.asarray(theta0, np.float64)))
    if args.saddle_eps is not None:
        theta0 = saddle_plus_eigenvector(flat_objective(problem.spec, problem.loss), theta0, X,
                                         Y, eps=args.saddle_eps, which=args.saddle_direction)
    result = run_path(problem.spec, problem.loss, theta0, X, Y, optimizer=args.optimizer,
                      lr=args.lr, steps=args.steps, batch=args.batch, momentum=args.momentum,
                      noise=args.grad_noise, seed=args.seed, weight_stride=args.weight_stride,
                      lambda_every=args.lambda_every, lambda_method=args.lambda_method,
                      lanczos_steps=args.lanczos_steps)
    reference = _known_global_minimum(problem.spec, problem.loss, X, Y)
    plateaus = find_plateaus(result.loss, result.grad_norm, reference_loss=reference,
                             lambda_min=result.lambda_min, lambda_steps=result.lambda_steps)
    write_npz(
        args.out,
        loss=result.loss, grad_norm=result.grad_norm, weights=result.weights,
        weight_steps=result.weight_steps, lambda_min=result.lambda_min,
        lambda_max=result.lambda_max, lambda_steps=result.lambda_steps, final=result.final,
        diverged_at=np.int64(result.diverged_at), seconds=np.float64(result.seconds),
        global_minimum=np.float64(np.nan if reference is None else reference),
        plateau_entry=np.array([p.entry for p in plateaus], dtype=np.int64),
        plateau_exit=np.array([p.exit for p in plateaus], dtype=np.int64),
        plateau_loss=np.array([p.loss for p in plateaus], dtype=np.float64),
        plateau_lambda_min=np.array([p.lambda_min for p in plateaus], dtype=np.float64),
    )
    if result.diverged_at >= 0:
        print(f"python -m compute path: note: the run diverged at step {result.diverged_at} "
              f"(non-finite loss or gradient); {_divergence_cause(args, result, given_norm)}."
              f"{' Steps before it are kept.' if result.diverged_at else ''}", file=sys.stderr)
    return 0


def _divergence_cause(args: argparse.Namespace, result, given_norm: float) -> str:
    """The likeliest cause of a divergence and its remedy; the step size unless the start
    itself, the gradient noise or the saddle offset tells otherwise."""
    n = result.final.size
    if result.diverged_at == 0:
        if args.saddle_eps is not None:
            return (f"the start is not finite: --saddle-eps {args.saddle_eps:g} moved it too "
                    "far, use a smaller ε")
        hint = "use --precision float64, " if args.precision == "float32" else ""
        scale = "smaller weights" if args.weights else "a smaller --init-scale"
        return f"the start is not finite: {hint}rescale the data or use {scale}"
    grad0 = float(result.grad_norm[0])
    noise = args.grad_noise * np.sqrt(n)  # expected norm of the noise added to a gradient
    if noise > 10 * grad0:
        return (f"--grad-noise {args.grad_noise:g} swamps the gradient (noise norm ≈ "
                f"{noise:.3g}, ‖∇L‖ ≈ {grad0:.3g} at the start): lower --grad-noise")
    if args.saddle_eps is not None and abs(args.saddle_eps) > 10 * max(given_norm, 1.0):
        return (f"--saddle-eps {args.saddle_eps:g} starts far from the given weights "
                f"(‖θ‖ ≈ {given_norm:.3g}): use a smaller ε or lower --lr")
    return "lower --lr"


def _check_work(args: argparse.Namespace, problem) -> None:
    """The dashboard's path budget: steps × rows per step × parameters (λ tracking counted)
    ≤ MAX_PATH_WORK (× LANDSCAPE_WORK_SCALE), rows counted as the dashboard counts them."""
    spec, ds = problem.spec, problem.dataset
    n, m = spec.n_params, ds.n_samples
    rows = path_rows(spec.kind, problem.loss, args.optimizer, args.batch, m, ds.d_x, ds.d_y)
    every = args.lambda_every if args.lambda_every > 0 else 0
    krylov = None if args.lanczos_steps is None else min(args.lanczos_steps, MAX_LANCZOS_STEPS)
    evals = lambda_evaluations(n, args.lambda_method, krylov) if every else 0
    step = path_step_work(rows, n, every, evals)
    budget = MAX_PATH_WORK * work_scale()
    if args.steps * step <= budget:
        return
    most = int(budget // step)
    tracked = "" if not every else " with λ tracked every step" if every == 1 \
        else f" with λ tracked every {every} steps"
    fix = f"use at most {most:,} steps" if most >= 1 else "use fewer steps"
    if every:
        fix += ", a larger --lambda-every"
    raise InputError(f"{args.steps:,} steps of this model ({n:,} parameters) on {m:,} samples"
                     f"{tracked} is too much work for one run; {fix} or a smaller model or "
                     "dataset.")
