"""Shared timing helpers of the benchmarks (not a benchmark itself).

* :func:`best_of` — the best wall-clock time of a few calls, waiting for JAX's
  asynchronous results, so a figure is the machine's speed rather than its noise;
* :func:`matmul_peak_flops` — the matrix-multiply FLOP rate of this machine, measured in
  this process (large square ``jnp.matmul``), the denominator of "fraction of peak".
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def best_of(fn, repeats: int = 3, *, warmup: int = 0) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn()`` (after ``warmup`` calls).

    Whatever ``fn`` returns is passed to ``jax.block_until_ready`` inside the timed region.
    """
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak_flops(dtype=jnp.float32, sizes: tuple[int, ...] | None = None,
                      repeats: int = 5) -> float:
    """The best FLOP/s of a jitted square ``n × n`` matmul (2n³ FLOPs) over ``sizes``.

    Defaults: n = 1024 and 2048 on a CPU, up to 8192 on a GPU (where small products do not
    fill the device).
    """
    if sizes is None:
        sizes = (1024, 2048) if jax.devices()[0].platform == "cpu" else (2048, 4096, 8192)
    rng = np.random.default_rng(0)
    product = jax.jit(jnp.matmul)
    best = 0.0
    for n in sizes:
        a = jnp.asarray(rng.standard_normal((n, n)), dtype=dtype)
        b = jnp.asarray(rng.standard_normal((n, n)), dtype=dtype)
        seconds = best_of(lambda a=a, b=b: product(a, b), repeats, warmup=1)
        best = max(best, 2.0 * n**3 / seconds)
    return best


if __name__ == "__main__":
    print(f"matmul peak, float32: {matmul_peak_flops() / 1e9:.1f} GFLOP/s")
