"""Benchmark of compute._index_map: a 61 × 61 Morse-index map in one compiled call vs a loop.

Prints, in one run (float64, a 2-6-6-2 tanh MLP with biases, 74 parameters, on 200 and on
20 samples of ``two_moons``, at a Xavier-initialised center with two random unit directions, α, β in
[−1, 1]):

(a) ``morse_index_map``: the exact Hessian (``jax.hessian``) and ``eigvalsh`` at all 3721
    cells in ONE jitted call, ``vmap`` over chunks inside ``lax.map(batch_size=…)``;
(b) the baseline: a Python loop over cells calling a jitted ``eigvalsh(hessian(θ))`` per
    cell and counting on the host. The loop is timed on a subset of cells (``LOOP_CELLS``)
    and extrapolated linearly to all 3721 (said so in the output).

Compilation is excluded (one warm-up call each, its time printed); (a) is the best of a few
repeats. Both give the same indices on the timed subset (checked).

Then the Lanczos estimate above the exact limit (a 2-20-20-2 tanh MLP, 522 parameters,
two_moons m = 200, a 21 × 21 slice, 8 Rademacher probes × 64 Lanczos steps per cell):

(c) ``morse_index_map(method="lanczos")``: stochastic Lanczos quadrature at all 441 cells
    in ONE jitted call (on a CPU the cells run in turn inside ``lax.map``; elsewhere
    ``vmap`` over chunks of cells), and (c′) the vmapped chunks forced on this machine;
(d) the baseline: a Python loop over cells calling a jitted ``slq_quadrature`` of the same
    Hessian-vector product per cell (same probes) and forming the estimate on the host,
    timed on ``LANCZOS_LOOP_CELLS`` cells and extrapolated.

Both give the same estimates on the looped cells (the largest difference is printed).
Run: ``.venv/bin/python benchmarks/index_map.py`` (``--lanczos`` for (c)–(d) only).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import compute  # noqa: E402
from benchmarks._timing import best_of  # noqa: E402
from compute import _index_map  # noqa: E402
from compute._critical import default_tolerance  # noqa: E402
from compute._datasets import load_dataset  # noqa: E402
from compute._index_map import morse_index_map  # noqa: E402

GRID = 61
WIDTHS = (6, 6)
SAMPLES = (200, 20)   # per-cell work dominates at m = 200, per-call overhead at m = 20
LOOP_CELLS = 300
REPEATS = 2
LANCZOS_GRID = 21
LANCZOS_WIDTHS = (20, 20)   # 522 parameters: above MAX_PARAMS_INDEX_MAP
LANCZOS_STEPS, PROBES = 64, 8
LANCZOS_LOOP_CELLS = 60


def problem(m: int, widths=WIDTHS):
    ds = load_dataset("two_moons", n_samples=m, seed=0)
    spec = compute.make_model("mlp", ds.X.shape[1], ds.Y.shape[1], widths, activation="tanh")
    center = np.asarray(compute.flatten_params(
        compute.init_params(spec, 0, dtype=jnp.float64)), np.float64)
    rng = np.random.default_rng(0)
    d1, d2 = (v / np.linalg.norm(v) for v in rng.standard_normal((2, spec.n_params)))
    return spec, center, d1, d2, np.asarray(ds.X, np.float64), np.asarray(ds.Y, np.float64)


def main() -> None:
    if "--lanczos" not in sys.argv:
        for m in SAMPLES:
            run(m)
    run_lanczos(200)


def run(m: int) -> None:
    spec, center, d1, d2, X, Y = problem(m)
    n = spec.n_params
    axis = np.linspace(-1.0, 1.0, GRID)
    print(f"model {spec.layer_sizes} tanh, {n} parameters; two_moons m = {m}; "
          f"grid {GRID} × {GRID} = {GRID * GRID} cells; float64; device "
          f"{jax.devices()[0].platform}")

    def vmapped():
        return morse_index_map(spec, "squared", center, d1, d2, axis, axis, X, Y)

    start = time.perf_counter()
    result = vmapped()
    first = time.perf_counter() - start
    t_map = best_of(vmapped, REPEATS)
    print(f"(a) vmapped index map:  {t_map:8.3f} s  (first call incl. compile {first:.2f} s)")

    objective = compute.flat_objective(spec, "squared")
    per_cell = jax.jit(lambda theta, X, Y: jnp.linalg.eigvalsh(jax.hessian(objective)(theta,
                                                                                     X, Y)))
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    r = default_tolerance(jnp.float64)
    rng = np.random.default_rng(1)
    flat = rng.choice(GRID * GRID, size=LOOP_CELLS, replace=False)
    cells = [(k // GRID, k % GRID) for k in flat]
    jax.block_until_ready(per_cell(jnp.asarray(center), Xj, Yj))  # compile
    start = time.perf_counter()
    loop_index = []
    for i, j in cells:
        lam = np.asarray(per_cell(jnp.asarray(center + axis[j] * d1 + axis[i] * d2), Xj, Yj))
        loop_index.append(int(np.sum(lam < -r * np.max(np.abs(lam)))))
    t_subset = time.perf_counter() - start
    t_loop = t_subset * GRID * GRID / LOOP_CELLS
    print(f"(b) Python loop of a jitted hessian+eigvalsh: {t_subset:.3f} s for {LOOP_CELLS} "
          f"random cells, extrapolated to {GRID * GRID} cells: {t_loop:8.3f} s")
    agree = all(result["index"][i, j] == k for (i, j), k in zip(cells, loop_index, strict=True))
    print(f"indices agree on the {LOOP_CELLS} looped cells: {agree}; index range "
          f"{result['index'].min()}–{result['index'].max()}")
    print(f"speed-up (b)/(a) at m = {m}: {t_loop / t_map:.1f}×\n")



def sequential() -> bool:
    return jax.default_backend() in _index_map._SEQUENTIAL_LANCZOS_PLATFORMS


def run_lanczos(m: int) -> None:
    spec, center, d1, d2, X, Y = problem(m, LANCZOS_WIDTHS)
    n = spec.n_params
    axis = np.linspace(-1.0, 1.0, LANCZOS_GRID)
    cells = LANCZOS_GRID * LANCZOS_GRID
    print(f"model {spec.layer_sizes} tanh, {n} parameters; two_moons m = {m}; grid "
          f"{LANCZOS_GRID} × {LANCZOS_GRID} = {cells} cells; {PROBES} probes × "
          f"{LANCZOS_STEPS} Lanczos steps; float64; device {jax.devices()[0].platform}")

    def vmapped():
        return morse_index_map(spec, "squared", center, d1, d2, axis, axis, X, Y,
                               method="lanczos", lanczos_steps=LANCZOS_STEPS, probes=PROBES)

    start = time.perf_counter()
    result = vmapped()
    first = time.perf_counter() - start
    t_map = best_of(vmapped, REPEATS)
    print(f"(c) Lanczos index map, one call ({jax.default_backend()}: "
          f"{'cells in turn' if sequential() else 'vmapped chunks'}): {t_map:8.3f} s  "
          f"(first call incl. compile {first:.2f} s)")
    if sequential():
        saved = _index_map._SEQUENTIAL_LANCZOS_PLATFORMS
        _index_map._SEQUENTIAL_LANCZOS_PLATFORMS = ()
        try:
            start = time.perf_counter()
            chunked = vmapped()
            first_chunked = time.perf_counter() - start
            t_chunked = best_of(vmapped, 1)
        finally:
            _index_map._SEQUENTIAL_LANCZOS_PLATFORMS = saved
        print(f"(c′) the same, vmapped chunks of cells: {t_chunked:8.3f} s  (first call incl. "
              f"compile {first_chunked:.2f} s; largest difference to (c) "
              f"{np.nanmax(np.abs(chunked['index_estimate'] - result['index_estimate'])):.1e})")

    gradient = jax.grad(compute.flat_objective(spec, "squared"))

    @jax.jit
    def per_cell(theta, X, Y, key):
        hvp = lambda v: jax.jvp(lambda t: gradient(t, X, Y), (theta,), (v,))[1]
        return compute.slq_quadrature(hvp, n, probes=PROBES, steps=LANCZOS_STEPS, key=key)

    Xj, Yj, key = jnp.asarray(X), jnp.asarray(Y), jax.random.PRNGKey(0)
    r = result["relative_tolerance"]
    rng = np.random.default_rng(1)
    flat = rng.choice(cells, size=LANCZOS_LOOP_CELLS, replace=False)
    chosen = [(k // LANCZOS_GRID, k % LANCZOS_GRID) for k in flat]
    jax.block_until_ready(per_cell(jnp.asarray(center), Xj, Yj, key))  # compile
    start = time.perf_counter()
    loop_estimate = []
    for i, j in chosen:
        nodes, weights = (np.asarray(a) for a in per_cell(
            jnp.asarray(center + axis[j] * d1 + axis[i] * d2), Xj, Yj, key))
        below = nodes < -r * np.max(np.abs(nodes))
        loop_estimate.append(n * np.mean(np.sum(np.where(below, weights, 0.0), axis=1)))
    t_subset = time.perf_counter() - start
    t_loop = t_subset * cells / LANCZOS_LOOP_CELLS
    print(f"(d) Python loop of a jitted slq_quadrature per cell: {t_subset:.3f} s for "
          f"{LANCZOS_LOOP_CELLS} random cells, extrapolated to {cells} cells: {t_loop:8.3f} s")
    diff = max(abs(result["index_estimate"][i, j] - e)
               for (i, j), e in zip(chosen, loop_estimate, strict=True))
    est = result["index_estimate"]
    print(f"largest difference of the estimates on the {LANCZOS_LOOP_CELLS} looped cells: "
          f"{diff:.2e}; estimates {np.nanmin(est):.1f}–{np.nanmax(est):.1f} of {n}, median "
          f"s.e. {np.nanmedian(result['index_stderr']):.1f}")
    print(f"speed-up (d)/(c) at m = {m}: {t_loop / t_map:.1f}×\n")


if __name__ == "__main__":
    main()
