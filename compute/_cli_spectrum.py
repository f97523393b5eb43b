"""``python -m compute spectrum``: Hessian spectrum and critical-point verdict → JSON.

    python -m compute spectrum --data D --weights W.npz --model linear|mlp [...]
        --method exact|lanczos [--k K] --out OUT.json

The JSON (a contract) holds ``eigenvalues`` (ascending: all of them for exact, the K
smallest then the K largest for Lanczos), ``grad_norm``, ``loss``, ``classification``
(the verdict text), ``index``, ``n_params``, ``global_min`` (deep linear nets with the
squared loss: the closed-form L*; null otherwise) and, for Lanczos, ``density``
(``{"grid": [...], "values": [...]}``). Extra keys: ``method``, ``tolerances``, ``notes``,
``gap_to_global_min``, ``induced_model_loss``, ``residuals``, ``lanczos_steps``,
``descent_drop``, ``critical_point_search``, ``seconds``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from compute._cli import add_problem_arguments, load_problem, write_json
from compute._errors import InputError
from compute._limits import (
    MAX_LANCZOS_STEPS,
    MAX_PARAMS_EXACT_HESSIAN,
    MAX_SLQ_PROBES,
    MAX_STEPS,
    check_range,
)

_MAX_INDUCED_ENTRIES = 5_000_000  # Jacobian entries for the induced-model value in the CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_problem_arguments(parser, init=True, default_precision="float64")
    g = parser.add_argument_group("spectrum")
    g.add_argument("--method", default="auto", choices=["exact", "lanczos", "auto"],
                   help=f"exact eigh (≤ {MAX_PARAMS_EXACT_HESSIAN} parameters), Lanczos, or "
                        "auto (exact when small enough)")
    g.add_argument("--k", type=int, default=5, help="Lanczos: eigenvalues at each end")
    g.add_argument("--lanczos-steps", type=int, default=None,
                   help="Lanczos: fixed Krylov dimension (default: until converged)")
    g.add_argument("--slq-probes", type=int, default=8, help="density: random probes")
    g.add_argument("--slq-steps", type=int, default=80, help="density: Lanczos steps per probe")
    g.add_argument("--slq-sigma", type=float, default=None,
                   help="density: Gaussian width (default 1%% of the spectral range)")
    g.add_argument("--density", action="store_true", help="also the density for --method exact")
    g.add_argument("--grad-tol", type=float, default=None, help="absolute gradient tolerance")
    g.add_argument("--eig-tol", type=float, default=None, help="absolute eigenvalue tolerance")
    g.add_argument("--converge", default="none",
                   choices=["none", "levenberg_marquardt", "newton_abs"],
                   help="first move to the nearby critical point (minimising ‖∇L‖²)")
    g.add_argument("--converge-steps", type=int, default=100)
    parser.add_argument("--out", required=True, help="output .json")


def run(args: argparse.Namespace) -> int:
    import jax.numpy as jnp

    from compute._critical import _value_and_grad, classify_critical_point
    from compute._hessian import NON_FINITE_MESSAGE, hessian_spectrum
    from compute._losses import flat_objective, sufficient_data
    from compute._models import flatten_params
    from compute._saddle import find_critical_point
    from compute._theory import deep_linear_global_minimum, flat_predictor, induced_model_loss

    check_range("--k", args.k, 1, MAX_LANCZOS_STEPS // 2)
    check_range("--slq-probes", args.slq_probes, 1, MAX_SLQ_PROBES)
    check_range("--slq-steps", args.slq_steps, 1, MAX_LANCZOS_STEPS)
    check_range("--converge-steps", args.converge_steps, 0, MAX_STEPS)
    if args.lanczos_steps is not None:
        check_range("--lanczos-steps", args.lanczos_steps, 2 * args.k, MAX_LANCZOS_STEPS)
    for name in ("slq_sigma", "grad_tol", "eig_tol"):
        value = getattr(args, name)
        if value is not None and not (np.isfinite(value) and value > 0):
            raise InputError(f"--{name.replace('_', '-')} must be a positive number, "
                             f"got {value!r}.")
    started = time.perf_counter()
    problem = load_problem(args)
    spec, dtype = problem.spec, problem.dtype
    objective = flat_objective(spec, problem.loss)
    theta = flatten_params(problem.params).astype(dtype)
    # Everything below needs only the data's sufficient statistics for a deep linear net
    # (d_x + d_y rows, exact; the induced model is linear in x too).
    X, Y = sufficient_data(spec, problem.loss, problem.X, problem.Y)
    n = spec.n_params
    method = args.method
    if method == "auto":
        method = "exact" if n <= MAX_PARAMS_EXACT_HESSIAN else "lanczos"
    if method == "exact" and n > MAX_PARAMS_EXACT_HESSIAN:
        raise InputError(f"the model has {n} parameters; --method exact is limited to "
                         f"{MAX_PARAMS_EXACT_HESSIAN}: use --method lanczos.")
    if method == "lanczos" and 2 * args.k > n:
        raise InputError(f"--k {args.k} asks for {2 * args.k} eigenvalues but the model has "
                         f"only {n} parameters: use --method exact or a smaller --k.")

    value, grad = _value_and_grad(objective, theta, X, Y)  # the kernel classify reuses
    if not (np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))):
        also = " or use --precision float64" if args.precision == "float32" else ""
        raise InputError(f"{NON_FINITE_MESSAGE[:-1]}, rescale the data{also}.")

    global_min, notes = None, []
    if spec.kind == "linear" and problem.loss == "squared":
        try:
            global_min = deep_linear_global_minimum(problem.dataset.X, problem.dataset.Y,
                                                    spec.layer_sizes[1:-1])
        except InputError as exc:
            notes.append(f"no closed-form global minimum: {exc}")

    search = None
    if args.converge != "none":
        theta_c, info = find_critical_point(objective, theta, X, Y, method=args.converge,
                                            max_steps=args.converge_steps, spec=spec,
                                            classify=False, dtype=dtype)
        theta = jnp.asarray(theta_c, dtype)
        search = {"method": info.method, "steps": info.steps, "converged": info.converged,
                  "distance": info.distance, "grad_norm": info.grad_norm}

    spectrum = hessian_spectrum(objective, theta, X, Y, method=method, k=args.k,
                                lanczos_steps=args.lanczos_steps, seed=args.seed,
                                density=method == "lanczos" or args.density,
                                slq_probes=args.slq_probes, slq_steps=args.slq_steps,
                                slq_sigma=args.slq_sigma, dtype=dtype)
    point = classify_critical_point(objective, theta, X, Y, spectrum=spectrum,
                                    global_min=global_min, grad_tol=args.grad_tol,
                                    eig_tol=args.eig_tol, spec=spec, loss=problem.loss,
                                    seed=args.seed,
                                    dtype=dtype)
    induced = None
    if problem.loss == "squared" and Y.size * n <= _MAX_INDUCED_ENTRIES:
        induced = induced_model_loss(flat_predictor(spec), theta, X, Y, dtype=dtype)

    payload = {
        "eigenvalues": spectrum.eigenvalues,
        "grad_norm": point.grad_norm,
        "loss": point.loss,
        "classification": point.verdict,
        "index": point.index,
        "n_params": n,
        "global_min": global_min,
        "gap_to_global_min": point.gap_to_global_min,
        "method": spectrum.method,
        "tolerances": {"grad_tol": point.grad_tol, "eig_tol": point.eig_tol},
        "notes": notes + point.notes,
        "descent_drop": point.descent_drop,
        "induced_model_loss": induced,
        "model": {"layer_sizes": list(spec.layer_sizes), "activation": spec.activation,
                  "bias": spec.bias, "loss": problem.loss},
    }
    if spectrum.method == "lanczos":
        payload["residuals"] = spectrum.residuals
        payload["lanczos_steps"] = spectrum.lanczos_steps
    if spectrum.density is not None:
        grid, values = spectrum.density
        payload["density"] = {"grid": grid, "values": values, "sigma": spectrum.sigma}
    if search is not None:
        payload["critical_point_search"] = search
    payload["seconds"] = round(time.perf_counter() - started, 3)
    write_json(args.out, payload)
    print(f"{point.verdict}: loss {point.loss:.6g}, ‖∇L‖ {point.grad_norm:.2e}, "
          f"λ ∈ [{spectrum.eigenvalues[0]:.4g}, {spectrum.eigenvalues[-1]:.4g}] → {args.out}")
    return 0
