"""Benchmark of Hessian spectra: extreme eigenvalues by Lanczos vs power iteration.

Prints, in one run (float64, a 20-32-32-32-10 deep linear net, 3008 parameters, at a
Xavier-initialised point, 2000 samples of ``linear_teacher``):

(a) exact: the dense Hessian from 3008 Hessian-vector products, then ``eigh`` (the
    reference for every error below);
(b) Lanczos with full reorthogonalisation, the 5 smallest and 5 largest eigenvalues in one
    Krylov run:
    - ``lanczos_extremes_converged`` (compute._lanczos): one jitted ``lax.while_loop``
      that checks every 5 steps whether each wanted Ritz value's error estimate
      ``min(r, r²/gap)`` is below 1e-6·|θ| (the accuracy target; ``rtol=1e-6``) or below
      1e-10·‖H‖ (the library's default tolerance, ``tol=1e-10``);
    - ``hessian_spectrum(method="lanczos", k=5, lanczos_tol=1e-7)``, the path the
      dashboard takes (host checks every 10 steps, plus the Ritz history it shows);
(c) the PyHessian-style baseline, written in JAX (a jitted ``lax.while_loop`` per
    eigenvalue): power iteration with deflation against the eigenvectors found so far,
    stopping when the Rayleigh quotient changes by less than tol = 1e-3 (relative) or after
    100 iterations; the 5 largest on H, the 5 smallest on the shifted ``H − λ_max I``;
(d) the same baseline pushed towards Lanczos' accuracy (tol 1e-9, ≤ 1000 iterations);
(e) (b)'s first row and (c) again with the Hessian-vector product linearised once
    (``jax.linearize`` of the gradient: the forward and backward passes at θ are shared by
    every product, as PyHessian's retained autograd graph shares them); both methods always
    use the same product, so the ratio compares the algorithms;
(f) the product alone: seconds per Hessian-vector product in a chain (both forms, and on
    the sufficient rows of (g)), which with the product counts gives the ratio a method can
    reach on this problem;
(g) the product the tool uses for this model: the squared loss of a deep linear net depends
    on the data only through ``[X Y]ᵀ[X Y]``, so ``compute.sufficient_data`` replaces the
    2000 samples by d_x + d_y = 30 pseudo samples with the same loss (exact); the exact
    Hessian, Lanczos (b) and the power iteration (c) again on those;
(h) the ceiling at equal products: from 10 start vectors, the first Krylov dimension at
    which all ten Ritz values are within 1e-6 of eigh's (an oracle stop that no method can
    beat), against the products the power iteration used.

Errors are ``max_i |λ_i − λ_i(eigh)| / |λ_i(eigh)|`` over the 10 eigenvalues.
Compilation is excluded (one warm-up call each); the methods of (b), (c) and (e) are timed
alternately over ``ROUNDS`` rounds and each figure is its best round.
Goal (issue 3): (b) ≥ 5× faster than (c) and ≥ 1000× more accurate.
(g) is what the dashboard and ``python -m compute spectrum`` run for deep linear nets.
Run: ``.venv/bin/python benchmarks/spectrum.py``.
"""

from __future__ import annotations

import os
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import compute  # noqa: E402
from benchmarks._timing import best_of  # noqa: E402
from compute._datasets import load_dataset  # noqa: E402
from compute._hessian import (  # noqa: E402
    hessian_matrix,
    hessian_spectrum,
    hessian_vector_product,
)
from compute._lanczos import lanczos_extremes, lanczos_extremes_converged  # noqa: E402
from compute._losses import sufficient_data  # noqa: E402

SIZES = (20, 32, 32, 32, 10)
M = 2000
K = 5
ROUNDS = 5
MAX_STEPS = 160           # room for the Krylov basis of lanczos_extremes_converged
CHECK_EVERY = 5
CHAIN = 50                # products in the chain of (f)
ORACLE_STARTS = 10        # start vectors of (h)
ORACLE_STEPS = 140


def problem():
    ds = load_dataset("linear_teacher", d_x=SIZES[0], d_y=SIZES[-1], n_samples=M, seed=0)
    spec = compute.make_model("linear", SIZES[0], SIZES[-1], SIZES[1:-1])
    theta = compute.flatten_params(compute.init_params(spec, 0, dtype=jnp.float64))
    return spec, compute.flat_objective(spec), theta, jnp.asarray(ds.X), jnp.asarray(ds.Y)


def hvp_operator(objective, theta, X, Y, linearised: bool):
    """``v -> H v``: the library's jvp-of-grad per call, or one ``jax.linearize`` shared."""
    if linearised:
        return jax.linearize(lambda t: jax.grad(objective)(t, X, Y), theta)[1]
    return lambda v: hessian_vector_product(objective, theta, v, X, Y)


@partial(jax.jit, static_argnames=("objective", "linearised", "tol", "rtol"))
def lanczos_converged(objective, theta, X, Y, v0, linearised, tol, rtol):
    matvec = hvp_operator(objective, theta, X, Y, linearised)
    return lanczos_extremes_converged(matvec, v0, k=K, max_steps=MAX_STEPS, tol=tol,
                                      rtol=rtol, check_every=CHECK_EVERY)


@partial(jax.jit, static_argnames=("objective", "max_iter", "linearised"))
def _power_one(objective, theta, X, Y, found, shift, v0, tol, max_iter, linearised=False):
    """One eigenvalue of ``H − shift·I`` by power iteration, deflated against ``found``."""
    matvec = hvp_operator(objective, theta, X, Y, linearised)

    def orth(v):
        return v - found.T @ (found @ v)

    def body(state):
        i, v, lam, _ = state
        v = orth(v)
        v = v / jnp.linalg.norm(v)
        Hv = matvec(v) - shift * v
        new = jnp.vdot(v, Hv)
        done = jnp.abs(lam - new) / (jnp.abs(lam) + 1e-6) < tol
        return i + 1, Hv / jnp.linalg.norm(Hv), new, done

    state = (0, v0, jnp.asarray(0.0, theta.dtype), False)
    i, v, lam, _ = jax.lax.while_loop(lambda s: (s[0] < max_iter) & ~s[3], body, state)
    v = orth(v)
    return lam + shift, v / jnp.linalg.norm(v), i


def power_iteration(objective, theta, X, Y, *, k, tol, max_iter, seed=0, linearised=False):
    """k largest and k smallest eigenvalues, PyHessian style; also the products used."""
    rng = np.random.default_rng(seed)
    n = theta.shape[0]
    results, products = [], 0
    for shift_for_smallest in (False, True):
        shift = max(results) if shift_for_smallest else 0.0
        found = jnp.zeros((k, n), theta.dtype)
        for j in range(k):
            v0 = jnp.asarray(rng.standard_normal(n), theta.dtype)
            lam, v, its = _power_one(objective, theta, X, Y, found, shift, v0, tol, max_iter,
                                     linearised)
            found = found.at[j].set(v)
            results.append(float(lam))
            products += int(its)
    return np.sort(results), products


@partial(jax.jit, static_argnames=("objective", "linearised"))
def hvp_chain(objective, theta, X, Y, v, linearised):
    """``CHAIN`` dependent products ``v ← H v / ‖H v‖`` (the cost of one product)."""
    matvec = hvp_operator(objective, theta, X, Y, linearised)

    def step(i, v):
        w = matvec(v)
        return w / jnp.linalg.norm(w)

    return jax.lax.fori_loop(0, CHAIN, step, v)


def relative_error(values, reference):
    return float(np.max(np.abs(np.sort(values) - reference) / np.abs(reference)))


def oracle_steps(H: np.ndarray, reference: np.ndarray, rtol: float = 1e-6) -> list[int]:
    """(h): per start vector, the least Krylov dimension whose 2K extreme Ritz values are
    all within ``rtol`` (relative) of ``reference`` (Lanczos on the dense H, T_j by eigh)."""
    n = H.shape[0]
    Hj = jnp.asarray(H)
    out = []
    for seed in range(ORACLE_STARTS):
        v0 = jnp.asarray(np.random.default_rng(100 + seed).standard_normal(n))
        res = lanczos_extremes(lambda v: Hj @ v, v0, k=K, steps=ORACLE_STEPS)
        a, b = np.asarray(res.alpha), np.asarray(res.beta)
        for j in range(2 * K, ORACLE_STEPS + 1):
            theta = np.linalg.eigvalsh(np.diag(a[:j]) + np.diag(b[:j - 1], 1)
                                       + np.diag(b[:j - 1], -1))
            if relative_error(np.r_[theta[:K], theta[-K:]], reference) < rtol:
                out.append(j)
                break
        else:
            out.append(ORACLE_STEPS + 1)
    return out


def main() -> None:
    spec, objective, theta, X, Y = problem()
    n = spec.n_params
    print(f"device: {compute.device_info()}; model {SIZES} linear, n = {n} parameters, "
          f"m = {M} samples, float64; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    jax.block_until_ready(hessian_matrix(objective, theta, X, Y))  # compile
    start = time.perf_counter()
    H = np.asarray(hessian_matrix(objective, theta, X, Y))
    t_form = time.perf_counter() - start
    start = time.perf_counter()
    evals = np.linalg.eigvalsh(H)
    t_eigh = time.perf_counter() - start
    reference = np.r_[evals[:K], evals[-K:]]
    print(f"(a) exact: Hessian {t_form:.2f} s + eigh {t_eigh:.2f} s = {t_form + t_eigh:.2f} s; "
          f"λ_min = {evals[0]:.6f}, λ_max = {evals[-1]:.6f}")

    v0 = jnp.asarray(np.random.default_rng(0).standard_normal(n))
    Xs, Ys = sufficient_data(spec, "squared", X, Y)

    def converged(tol, rtol, linearised=False, data=(X, Y)):
        def run():
            res = lanczos_converged(objective, theta, *data, v0, linearised, tol, rtol)
            return np.asarray(res.eigenvalues), int(res.steps)
        return run

    def spectrum():
        s = hessian_spectrum(objective, theta, X, Y, method="lanczos", k=K, lanczos_tol=1e-7)
        return s.eigenvalues, s.lanczos_steps

    def power(tol, max_iter, linearised=False, data=(X, Y)):
        return lambda: power_iteration(objective, theta, *data, k=K, tol=tol,
                                       max_iter=max_iter, linearised=linearised)

    methods = {
        "lanczos, rtol 1e-6 (target)": converged(0.0, 1e-6),
        "lanczos, tol 1e-10·‖H‖": converged(1e-10, 0.0),
        "hessian_spectrum, tol 1e-7": spectrum,
        "power tol 1e-3, ≤100 it.": power(1e-3, 100),
        "(e) lanczos rtol 1e-6, lin.": converged(0.0, 1e-6, True),
        "(e) power tol 1e-3, lin.": power(1e-3, 100, True),
        "(g) lanczos rtol 1e-6, suff.": converged(0.0, 1e-6, data=(Xs, Ys)),
        "(g) power tol 1e-3, suff.": power(1e-3, 100, data=(Xs, Ys)),
    }
    outputs = {name: run() for name, run in methods.items()}      # compile
    times = {name: [] for name in methods}
    for _ in range(ROUNDS):
        for name, run in methods.items():
            times[name].append(best_of(run, 1))
    rows = {name: (min(times[name]), outputs[name][1],
                   relative_error(outputs[name][0], reference)) for name in methods}
    slow = power(1e-9, 1000)
    values, products = slow()
    rows["power tol 1e-9, ≤1000 it."] = (best_of(slow, 1), products,
                                         relative_error(values, reference))

    print(f"{'method':30s} {'seconds':>8s} {'HVPs':>6s} {'max rel. error':>15s}")
    for name, (seconds, count, error) in rows.items():
        print(f"{name:30s} {seconds:8.3f} {count:6d} {error:15.2e}")

    jax.block_until_ready(hessian_matrix(objective, theta, Xs, Ys))  # compile
    start = time.perf_counter()
    H_s = np.asarray(hessian_matrix(objective, theta, Xs, Ys))
    t_form_s = time.perf_counter() - start
    print(f"(g) exact on the {Xs.shape[0]} pseudo samples: Hessian {t_form_s:.2f} s "
          f"(max |ΔH| {np.max(np.abs(H_s - H)):.1e} against the samples') + eigh "
          f"{t_eigh:.2f} s")

    chain = {}
    for linearised in (False, True):
        run = lambda linearised=linearised: hvp_chain(objective, theta, X, Y, v0, linearised)
        jax.block_until_ready(run())
        chain[linearised] = best_of(run, 3) / CHAIN
    run = lambda: hvp_chain(objective, theta, Xs, Ys, v0, False)  # noqa: E731
    jax.block_until_ready(run())
    chain_rows = best_of(run, 3) / CHAIN
    print(f"(f) one Hessian-vector product: {chain[False] * 1e3:.2f} ms (jvp of grad), "
          f"{chain[True] * 1e3:.2f} ms (linearised once), {chain_rows * 1e3:.3f} ms on the "
          f"{Xs.shape[0]} sufficient rows")

    base = rows["power tol 1e-3, ≤100 it."]
    for name in ("lanczos, rtol 1e-6 (target)", "lanczos, tol 1e-10·‖H‖",
                 "hessian_spectrum, tol 1e-7"):
        seconds, count, error = rows[name]
        print(f"{name} vs power (tol 1e-3): {base[0] / seconds:.1f}× faster, "
              f"{base[2] / max(error, 1e-300):.1e}× more accurate; vs exact: "
              f"{(t_form + t_eigh) / seconds:.1f}× faster")
    lin_l, lin_p = rows["(e) lanczos rtol 1e-6, lin."], rows["(e) power tol 1e-3, lin."]
    print(f"(e) both linearised: lanczos {lin_p[0] / lin_l[0]:.1f}× faster than power")
    target = rows["lanczos, rtol 1e-6 (target)"]
    print(f"ceiling: power used {base[1]} products, lanczos {target[1]}: at equal cost per "
          f"product at most {base[1] / target[1]:.1f}× (measured {base[0] / target[0]:.1f}×: "
          f"lanczos {target[0] / (target[1] * chain[False]):.2f}× and power "
          f"{base[0] / (base[1] * chain[False]):.2f}× the time of their products alone)")
    tool, tool_power = rows["(g) lanczos rtol 1e-6, suff."], rows["(g) power tol 1e-3, suff."]
    print(f"(g) the tool (lanczos on the sufficient data) vs power (tol 1e-3) on the samples: "
          f"{base[0] / tool[0]:.1f}× faster, {base[2] / max(tool[2], 1e-300):.1e}× more "
          f"accurate; vs power (tol 1e-3) on the same sufficient data: "
          f"{tool_power[0] / tool[0]:.2f}× (power error {tool_power[2]:.1e})")
    oracle = oracle_steps(H, reference)
    print(f"(h) oracle stop at 1e-6 over {ORACLE_STARTS} starts: {min(oracle)}–{max(oracle)} "
          f"products (median {int(np.median(oracle))}); power used {base[1]}: at equal cost "
          f"per product no Lanczos stop from these starts beats {base[1] / max(oracle):.1f}–"
          f"{base[1] / min(oracle):.1f}×")
    slow_row = rows["power tol 1e-9, ≤1000 it."]
    print(f"power tol 1e-9 needs {slow_row[0] / target[0]:.1f}× the time of lanczos rtol 1e-6 "
          f"and reaches error {slow_row[2]:.1e}; load average after the run "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
