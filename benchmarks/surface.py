"""Benchmark of compute._surface: grid throughput against the machine's matmul peak and
against a per-grid-point loop.

Prints, in one run (float32, 101 × 101 grid, 2000 samples of 10 inputs and 4 outputs):

(a) the matmul peak of this machine (benchmarks/_timing.py: square n = 1024/2048), and the
    rate of the products the grid kernel actually runs, at its shapes: per chunk of B grid
    points the batched products (B, 16, 16)·(B, 16, m) twice and (B, 4, 16)·(B, 16, m)
    (B from the kernel's own chunk plan), alone, over the whole grid. That is the ceiling
    of the kernel on this machine: a product with an inner dimension of 16 does not reach
    the square peak;
(b) the MLP grid (10-16-16-16-4 relu, biases, squared loss) by ``loss_surface``: points/s,
    GFLOP/s and fraction of the peak. FLOPs are counted as the *plain forward pass* at each
    grid point: 2·m·Σ_k d_k·d_{k−1} = 2·2000·736 ≈ 2.94 MFLOP per point (biases,
    activations and the loss not counted), although the kernel does less work: it computes
    the first layer's pre-activations of all points from three products done once, so it
    runs 2·m·576 ≈ 2.30 MFLOP of products per point (the ceiling of (a) in these units is
    736/576 × its rate);
    (a) and (b) are measured alternately over ``ROUNDS`` rounds, so both see the same
    machine; the figures are the best of each, the per-round fractions are listed too;
(b0) the first timed grid call of the process, before (a) ran: with glibc's default malloc
    the kernel's large temporary buffers go back to the OS after every chunk and are
    page-faulted in again (see benchmarks/README.md); a large allocation freed earlier in
    the process (as the matmuls of (a) do) raises malloc's thresholds and removes that cost;
(c) its speed-up over a per-grid-point loop, as PyTorch loss-landscape tools do it: set the
    weights ``θ = center + α·d1 + β·d2`` and run one jitted forward pass and loss per point
    (timed on every 10th grid row, 1111 points, and scaled to the grid by time per point);
(d) the deep linear net of the same shapes (10-16-16-16-4, identity, no biases) by the
    polynomial path (``loss_surface`` picks it automatically), against the same loop.

Compilation is excluded (one warm-up call each). Goals (issue 2): (b) ≥ 40 % of peak,
(c) ≥ 10×, (d) ≥ 100×.
Run: ``.venv/bin/python benchmarks/surface.py``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import compute  # noqa: E402
from benchmarks._timing import best_of, matmul_peak_flops  # noqa: E402
from compute._limits import MEMORY_BUDGET_BYTES  # noqa: E402
from compute._planes import filter_normalised_plane, grid_coordinates  # noqa: E402
from compute._surface import _chunk_plan, loss_surface, surface_method  # noqa: E402

N_GRID = 101
M = 2000
SIZES = (10, 16, 16, 16, 4)
REPEATS = 5               # best of 5 for (c) and (d)
ROUNDS = 6                # alternating rounds of (a) and (b)
LOOP_ROW_STRIDE = 10      # the loop runs every 10th grid row (11 × 101 points)
DTYPE = np.float32


def problem(activation: str, bias: bool):
    """Model, center and plane of the benchmark, and the data (seeded)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((M, SIZES[0])).astype(DTYPE)
    Y = rng.standard_normal((M, SIZES[-1])).astype(DTYPE)
    kind = "linear" if activation == "identity" and not bias else "mlp"
    spec = compute.make_model(kind, SIZES[0], SIZES[-1], SIZES[1:-1], activation=activation,
                              bias=bias)
    theta = np.asarray(compute.flatten_params(compute.init_params(spec, 0)), np.float64)
    plane = filter_normalised_plane(spec, theta, seed=1, span=1.0)
    alphas, betas = grid_coordinates(plane, N_GRID)
    return spec, plane, alphas, betas, X, Y


def per_point_loop(spec, plane, alphas, betas, X, Y, rows) -> tuple[np.ndarray, float]:
    """The baseline: set the weights, one jitted forward pass and loss per grid point.

    Runs the grid rows ``rows`` (a sample of the grid, to keep the benchmark short) and
    returns their losses and the seconds per point. The jitted function takes the flat
    weights (unflattened inside the compiled code), so a point costs one transfer and one
    call: the fastest form of this loop.
    """
    loss = jax.jit(compute.flat_objective(spec, "squared"))
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    float(loss(jnp.asarray(plane.center, dtype=DTYPE), Xj, Yj))          # compile
    out = np.empty((len(rows), len(alphas)))
    start = time.perf_counter()
    for r, i in enumerate(rows):
        for j, a in enumerate(alphas):
            theta = plane.center + a * plane.direction1 + betas[i] * plane.direction2
            out[r, j] = float(loss(jnp.asarray(theta, dtype=DTYPE), Xj, Yj))
    return out, (time.perf_counter() - start) / out.size


def grid(spec, plane, alphas, betas, X, Y, method="auto"):
    return lambda: loss_surface(spec, "squared", plane.center, plane.direction1,
                                plane.direction2, alphas, betas, X, Y, method=method)


def kernel_shape_products(spec, n_points: int):
    """The grid kernel's per-point products alone, at its shapes and chunking.

    Returns ``(run, flops)``: ``run()`` multiplies, for every chunk of B points, random
    (B, d_k, d_{k−1}) weights by (B, d_{k−1}, m) activations for each layer after the
    first (the kernel's batched products), and ``flops`` counts them (2·m·Σ d_k d_{k−1}).
    """
    _, _, chunk = _chunk_plan(spec, M, n_points, np.dtype(DTYPE).itemsize,
                              MEMORY_BUDGET_BYTES)
    n_chunks = -(-n_points // chunk)
    rng = np.random.default_rng(0)
    shapes = [(SIZES[k + 1], SIZES[k]) for k in range(1, len(SIZES) - 1)]
    weights = [jnp.asarray(rng.standard_normal((n_chunks, chunk, *s)), DTYPE) for s in shapes]
    acts = [jnp.asarray(rng.standard_normal((chunk, s[1], M)), DTYPE) for s in shapes]

    @jax.jit
    def run(weights, acts):
        def one(ws):
            return sum(jnp.sum(w @ a) for w, a in zip(ws, acts, strict=True))
        return jax.lax.map(one, weights)

    flops = n_chunks * chunk * 2 * M * sum(r * c for r, c in shapes)
    return (lambda: run(weights, acts)), flops


def idle_fraction(seconds: float = 1.0) -> float | None:
    """Share of CPU time idle over ``seconds`` (Linux /proc/stat), None elsewhere."""
    def sample():
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        return ticks[3] + ticks[4], sum(ticks)
    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except OSError:
        return None
    return (idle1 - idle0) / max(1, total1 - total0)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main() -> None:
    info = compute.device_info()
    idle = idle_fraction()
    print(f"device: {info['platform']} ({info['kind']}), {os.cpu_count()} CPU cores, "
          f"jax {jax.__version__}; CPU idle before the run: "
          f"{'unknown' if idle is None else f'{idle:.0%}'}; load average {load_average()}")
    if idle is not None and idle < 0.9:
        print("warning: other processes are using the CPU; the figures below are unreliable "
              "(the grid kernel's threads stall when a core is taken away)")

    n_points = N_GRID * N_GRID
    flops_per_point = 2 * M * sum(SIZES[k] * SIZES[k + 1] for k in range(len(SIZES) - 1))
    kernel_flops_per_point = 2 * M * sum(SIZES[k] * SIZES[k + 1]
                                         for k in range(1, len(SIZES) - 1))

    spec, plane, alphas, betas, X, Y = problem("relu", True)
    run = grid(spec, plane, alphas, betas, X, Y)
    surface = run()                                   # compile
    t_cold = best_of(run, 1)
    products, product_flops = kernel_shape_products(spec, n_points)
    jax.block_until_ready(products())                 # compile

    peaks, shaped, grids = [], [], []
    for _ in range(ROUNDS):
        peaks.append(matmul_peak_flops(jnp.float32, repeats=3))
        shaped.append(product_flops / best_of(products, 2))
        grids.append(best_of(run, 2))
    peak, shape_rate, t_grid = max(peaks), max(shaped), min(grids)
    rate = n_points * flops_per_point / t_grid
    per_round = [n_points * flops_per_point / t / p for t, p in zip(grids, peaks, strict=True)]
    _, _, chunk = _chunk_plan(spec, M, n_points, np.dtype(DTYPE).itemsize, MEMORY_BUDGET_BYTES)
    print(f"(a) matmul peak (float32, square n=1024/2048, best of {ROUNDS} rounds): "
          f"{peak / 1e9:.1f} GFLOP/s; the kernel's products at its shapes (chunks of {chunk} "
          f"points, (B,16,16)·(B,16,{M}) x2 + (B,4,16)·(B,16,{M})): {shape_rate / 1e9:.1f} "
          f"GFLOP/s = {shape_rate / peak:.0%} of peak")
    print(f"(b) MLP {'-'.join(map(str, SIZES))} relu, m={M}, {N_GRID}x{N_GRID} grid, "
          f"float32, method {surface_method(spec, 'squared')}: {t_grid * 1e3:.0f} ms = "
          f"{n_points / t_grid:,.0f} points/s = {rate / 1e9:.1f} GFLOP/s "
          f"(plain-forward count {flops_per_point / 1e6:.3f} MFLOP/point) = "
          f"{rate / peak:.0%} of peak (per round: "
          f"{', '.join(f'{f:.0%}' for f in per_round)}); the kernel's own products "
          f"({kernel_flops_per_point / 1e6:.3f} MFLOP/point) ran at "
          f"{n_points * kernel_flops_per_point / t_grid / shape_rate:.0%} of the rate of (a) "
          f"at its shapes")
    print(f"(b0) first timed call, before (a): {t_cold * 1e3:.0f} ms "
          f"({t_cold / t_grid:.1f}x the best; malloc state, see the docstring)")

    rows = np.arange(0, N_GRID, LOOP_ROW_STRIDE)
    looped, per_point = per_point_loop(spec, plane, alphas, betas, X, Y, rows)
    t_loop = per_point * n_points
    err = np.max(np.abs(looped - surface[rows]) / np.abs(looped))
    print(f"(c) per-point loop (set weights + jitted forward; timed on {looped.size} points, "
          f"every {LOOP_ROW_STRIDE}th row): {per_point * 1e6:.0f} us/point = {t_loop:.2f} s "
          f"for the grid; grid speed-up {t_loop / t_grid:.1f}x (max relative difference "
          f"{err:.1e})")

    lspec, lplane, la, lb, _, _ = problem("identity", False)
    run_poly = grid(lspec, lplane, la, lb, X, Y)
    poly = run_poly()
    t_poly = best_of(run_poly, REPEATS)
    run_direct = grid(lspec, lplane, la, lb, X, Y, method="direct")
    run_direct()
    t_direct = best_of(run_direct, REPEATS)
    looped_linear, per_point_linear = per_point_loop(lspec, lplane, la, lb, X, Y, rows)
    t_loop_linear = per_point_linear * n_points
    err = np.max(np.abs(looped_linear - poly[rows]) / np.abs(looped_linear))
    print(f"(d) deep linear {'-'.join(map(str, SIZES))}, same grid: polynomial "
          f"{t_poly * 1e3:.1f} ms, direct {t_direct * 1e3:.0f} ms, per-point loop "
          f"{t_loop_linear:.2f} s; polynomial speed-up {t_loop_linear / t_poly:.0f}x over "
          f"the loop, {t_direct / t_poly:.0f}x over direct (max relative difference to the "
          f"float32 loop {err:.1e})")

    print(f"summary: MLP grid {rate / peak:.0%} of matmul peak (goal >= 40%; median round "
          f"{np.median(per_round):.0%}), {t_loop / t_grid:.1f}x the per-point loop (goal >= "
          f"10x); deep linear polynomial {t_loop_linear / t_poly:.0f}x the loop (goal >= "
          f"100x); load average after the run {load_average()}")


if __name__ == "__main__":
    main()
