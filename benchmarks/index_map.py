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
Run: ``.venv/bin/python benchmarks/index_map.py``.
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
from compute._critical import default_tolerance  # noqa: E402
from compute._datasets import load_dataset  # noqa: E402
from compute._index_map import morse_index_map  # noqa: E402

GRID = 61
WIDTHS = (6, 6)
SAMPLES = (200, 20)   # per-cell work dominates at m = 200, per-call overhead at m = 20
LOOP_CELLS = 300
REPEATS = 2


def problem(m: int):
    ds = load_dataset("two_moons", n_samples=m, seed=0)
    spec = compute.make_model("mlp", ds.X.shape[1], ds.Y.shape[1], WIDTHS, activation="tanh")
    center = np.asarray(compute.flatten_params(
        compute.init_params(spec, 0, dtype=jnp.float64)), np.float64)
    rng = np.random.default_rng(0)
    d1, d2 = (v / np.linalg.norm(v) for v in rng.standard_normal((2, spec.n_params)))
    return spec, center, d1, d2, np.asarray(ds.X, np.float64), np.asarray(ds.Y, np.float64)


def main() -> None:
    for m in SAMPLES:
        run(m)


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


if __name__ == "__main__":
    main()
