"""Benchmark of compute._paths: the scanned optimiser loop against a Python loop.

Prints, for 10 000 gradient-descent steps of a tiny MLP (2-2-1 tanh on the 4 jellyfish
points) and of a small deep linear net (6 → 4 → 4, 200 samples), float32:

* steps per second of ``run_path`` (one ``lax.scan``, compiled once), of a bare
  ``lax.scan`` of the same step that records nothing (the floor XLA sets), and of a Python
  loop that calls a jitted step function 10 000 times, and the loop / run_path ratio
  (goal ≥ 20×);
* the cost of tracking λ_min/λ_max (exact Hessian) every 10 and every 100 steps, relative
  to the bare scanned loop.

``run_path`` runs a full-batch deep linear net on ``compute.sufficient_data`` (d_x + d_y
rows with the loss of all m samples), so both baselines get the same rows: the ratios
compare loops, not data.

Compilation is excluded (one warm-up call each); each figure is the best of a few rounds
that interleave the variants (so a busy machine slows them alike).
Run: ``.venv/bin/python benchmarks/paths.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import compute  # noqa: E402
from benchmarks._timing import best_of  # noqa: E402
from compute._datasets import load_dataset  # noqa: E402
from compute._optimisers import make_optimizer  # noqa: E402
from compute._paths import initial_point, run_path  # noqa: E402

STEPS = 10_000
REPEATS = 5


def compare(name: str, spec, X, Y, theta0, lr: float) -> None:
    """Print the scan-vs-loop and λ-tracking figures of one model and dataset."""

    def scanned(**extra):
        return lambda: run_path(spec, "squared", theta0, X, Y, optimizer="gd", lr=lr,
                                steps=STEPS, **extra)

    objective = compute.flat_objective(spec, "squared")
    opt = make_optimizer("gd", lr)
    rows_x, rows_y = compute.sufficient_data(spec, "squared", X, Y)  # what run_path uses

    @jax.jit
    def step(theta, state):
        value, g = jax.value_and_grad(objective)(theta, rows_x, rows_y)
        updates, state = opt.update(g, state, theta)
        return theta + updates, state, value, jnp.linalg.norm(g)

    def python_loop():
        theta, state = theta0, opt.init(theta0)
        losses, norms = [], []
        for _ in range(STEPS):
            theta, state, value, gnorm = step(theta, state)
            losses.append(value)
            norms.append(gnorm)
        value, g = jax.value_and_grad(objective)(theta, rows_x, rows_y)
        losses.append(value)
        return np.asarray(jnp.stack(losses)), jax.block_until_ready(theta)

    @jax.jit
    def floor_scan(theta, X, Y):  # the same steps with nothing recorded: XLA's floor
        def body(carry, _):
            theta, state = carry
            g = jax.grad(objective)(theta, X, Y)
            updates, state = opt.update(g, state, theta)
            return (theta + updates, state), None

        return jax.lax.scan(body, (theta, opt.init(theta)), None, length=STEPS)[0][0]

    floor = lambda: floor_scan(theta0, rows_x, rows_y)  # noqa: E731
    floor_samples = lambda: floor_scan(theta0, X, Y)  # noqa: E731
    bare = scanned()
    every10 = scanned(lambda_every=10)
    every100 = scanned(lambda_every=100)
    for fn in (floor, floor_samples, bare, every10, every100, python_loop):  # compile once
        fn()
    # The two loops agree (same maths, same order), else the comparison means nothing.
    gap = np.max(np.abs(bare().loss - python_loop()[0]))

    # Rounds interleave the variants, so a busy machine slows them alike; best per variant.
    fns = (floor, bare, python_loop, every10, every100, floor_samples)
    best = [min(times) for times in zip(*[[best_of(fn, 1) for fn in fns]
                                           for _ in range(REPEATS)], strict=True)]
    t_floor, t_scan, t_loop, t_10, t_100, t_samples = best
    print(f"{name}: {spec.n_params} parameters, {X.shape[0]} samples ({rows_x.shape[0]} rows "
          f"used), float32, {STEPS} GD steps; max |loss gap| scan vs loop {gap:.1e}")
    for label, seconds in (("scanned loop (run_path)", t_scan),
                           ("bare lax.scan, no records", t_floor),
                           ("python loop of jit steps", t_loop)):
        print(f"  {label:26s}{STEPS / seconds:10,.0f} steps/s  ({seconds * 1e3:7.1f} ms)")
    print(f"  speed-up scan / loop      {t_loop / t_scan:10.1f}x  (goal >= 20x)")
    print(f"  lambda every 100 steps    {t_100 / t_scan:10.2f}x the bare scanned loop's time")
    print(f"  lambda every  10 steps    {t_10 / t_scan:10.2f}x the bare scanned loop's time")
    if rows_x.shape[0] < X.shape[0]:
        print(f"  bare scan on the {X.shape[0]} samples {t_samples / t_floor:8.2f}x its time on "
              f"the {rows_x.shape[0]} rows")


def main() -> None:
    print(f"device: {compute.device_info()}")
    data = load_dataset("jellyfish", seed=0, one_hot=False)
    spec = compute.make_model("mlp", 2, 1, (2,), activation="tanh")
    compare("tiny MLP 2-2-1 tanh on jellyfish", spec, jnp.asarray(data.X, jnp.float32),
            jnp.asarray(data.Y, jnp.float32),
            initial_point(spec, init="xavier", seed=0, dtype=jnp.float32), 0.05)
    data = load_dataset("linear_teacher", seed=0, d_x=6, d_y=4, n_samples=200)
    spec = compute.make_model("linear", 6, 4, (4,))
    compare("small deep linear 6-4-4 on linear_teacher", spec,
            jnp.asarray(data.X, jnp.float32), jnp.asarray(data.Y, jnp.float32),
            initial_point(spec, init="gaussian", scale=0.1, seed=0, dtype=jnp.float32), 0.01)


if __name__ == "__main__":
    main()
