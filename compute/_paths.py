"""Optimiser paths through a loss landscape, with the loop inside ``jax.lax.scan``.

A path starts at ``θ_0`` and takes ``T`` optimiser steps ``θ_{t+1} = θ_t + update_t``
(see :mod:`compute._optimisers`). At every ``t = 0 … T`` it records the full-batch loss
``L(θ_t)`` and gradient norm ``‖∇L(θ_t)‖``; every ``weight_stride`` steps the weights
(step 0 and step T always); every ``lambda_every`` steps the extreme Hessian eigenvalues
``λ_min(θ_t)``, ``λ_max(θ_t)`` (exact ``eigvalsh`` up to ``MAX_PARAMS_EXACT_LAMBDA``
parameters, Lanczos above). Nothing loops in Python per step: the steps run inside
``lax.scan`` in power-of-two chunks (at most ``4 + T/4096`` calls of one compiled kernel,
about 10 when ``progress`` is reported), and compiled runners are cached by their static
options with bucketed buffer sizes, so a second path with the same model, data shape and
options (any step size, seed or nearby step count) does not recompile.

Divergence. The first step ``d`` whose loss or gradient is not finite ends the run: later
steps do not move. In the :class:`PathResult`, ``loss``/``grad_norm`` keep their length
``T + 1`` with the non-finite value seen at ``d`` and NaN after it; ``weights`` keep the
strided rows before ``d`` plus the last finite point (step ``d − 1``; step 0 when
``d = 0``); the eigenvalue arrays are cut at ``d``; ``final`` is the last finite point.

Many starts. :func:`many_starts` runs the same scanned loop for N inits at once
(``jax.vmap`` over seeds) and reports where each ended, with the global minimum where a
closed form gives it (deep linear nets, squared loss: THEORY.md §1).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from compute._errors import InputError
from compute._hessian import extreme_eigenvalues, hessian_matrix
from compute._limits import (
    MAX_INIT_SCALE,
    MAX_LANCZOS_STEPS,
    MAX_PARAMS_EXACT_HESSIAN,
    MAX_PARAMS_EXACT_LAMBDA,
    MAX_PATH_WEIGHT_BYTES,
    MAX_SEED,
    MAX_STARTS,
    MAX_STEPS,
    MEMORY_BUDGET_BYTES,
    PATH_LANCZOS_STEPS,
)
from compute._losses import flat_objective, sufficient_data
from compute._models import ModelSpec, flatten_params, init_params
from compute._optimisers import check_path_options, make_optimizer

__all__ = [
    "LAMBDA_METHODS",
    "PathResult",
    "initial_point",
    "many_starts",
    "run_path",
    "saddle_plus_eigenvector",
]

LAMBDA_METHODS = ("auto", "exact", "lanczos")
DEFAULT_WEIGHT_ROWS = 1000          # default stride keeps about this many weight rows
DEFAULT_CURVE_POINTS = 200          # loss-curve points per start of many_starts
_PROGRESS_CHUNKS = 10
_UNROLL = 4  # scan iterations per loop trip: less loop overhead for small models
_MIN_CHUNK, _MAX_CHUNK = 8, 4096  # steps per compiled chunk (powers of two)
_DROP = 2**30  # a buffer row that does not exist: the write is dropped


@dataclass(frozen=True, eq=False)
class PathResult:
    """One optimiser path (numpy arrays; T = steps).

    Attributes:
      loss: ``(T+1,)`` full-batch loss at θ_0 … θ_T (NaN after a divergence).
      grad_norm: ``(T+1,)`` full-batch ‖∇L(θ_t)‖.
      weights: ``(R, n)`` flat parameters at ``weight_steps`` (THEORY.md's flat order).
      weight_steps: ``(R,)`` int steps of the rows, from 0 to the last kept step.
      lambda_min, lambda_max: ``(K,)`` extreme Hessian eigenvalues at ``lambda_steps``.
      lambda_steps: ``(K,)`` int, multiples of ``lambda_every`` (empty when not tracked).
      final: ``(n,)`` the last finite point (θ_T unless the run diverged).
      diverged_at: -1, or the first step whose loss or gradient was not finite.
      seconds: wall-clock time of the call, compilation included.
    """

    loss: np.ndarray
    grad_norm: np.ndarray
    weights: np.ndarray
    weight_steps: np.ndarray
    lambda_min: np.ndarray
    lambda_max: np.ndarray
    lambda_steps: np.ndarray
    final: np.ndarray
    diverged_at: int
    seconds: float
    optimizer: str = "gd"
    lr: float = float("nan")
    lambda_method: str = ""

    @property
    def steps(self) -> int:
        return int(self.loss.shape[0] - 1)


class _State(NamedTuple):
    """The scan's carry: position, optimiser state and the recording buffers."""

    t: jax.Array            # int32 step about to be recorded
    theta: jax.Array        # (n,) θ_t
    theta_good: jax.Array   # (n,) last θ with finite loss and gradient
    loss_good: jax.Array    # its loss
    grad_good: jax.Array    # its gradient norm
    opt_state: object
    key: jax.Array
    diverged_at: jax.Array  # int32, -1 while finite
    loss_buf: jax.Array     # many starts: (R_L,) losses at the curve rows; else (0,)
    grad_buf: jax.Array     # many starts: (1,) running max of ‖∇L‖; else (0,)
    weight_buf: jax.Array   # (R_W, n) or (0, n)
    lambda_buf: jax.Array   # (K, 2) or (0, 2)


@dataclass(frozen=True)
class _Config:
    """Everything static about a compiled runner (its cache key)."""

    spec: ModelSpec
    loss: str
    optimizer: str
    batch: int | None
    use_noise: bool
    loss_stride: int
    weight_stride: int       # 0: no weights recorded
    lambda_every: int        # 0: no eigenvalues
    lambda_method: str
    lanczos_steps: int
    block: int               # steps per block (records happen at block starts)
    chunk_len: int           # steps per compiled chunk, a multiple of block


# --------------------------------------------------------------------------- public API


def initial_point(spec: ModelSpec, *, init: str = "xavier", scale: float = 1.0, seed: int = 0,
                  dtype=jnp.float32) -> jax.Array:
    """Flat initial parameters ``(n,)`` from :func:`compute.init_params` (seeded)."""
    check_seed_and_scale(seed, scale)
    return flatten_params(init_params(spec, seed, method=init, scale=scale, dtype=dtype))


def saddle_plus_eigenvector(objective: Callable, theta_saddle, X, Y, *, eps: float,
                            which: str | int = "min") -> jax.Array:
    """``θ_s + ε v``: a critical point nudged along a unit Hessian eigenvector ``v``.

    The Hessian is formed exactly and diagonalised in float64 (models up to
    ``MAX_PARAMS_EXACT_HESSIAN`` parameters). ``v`` is fixed up to sign by making its
    largest-magnitude entry positive.

    Args:
      objective: ``objective(theta, X, Y)``, e.g. :func:`compute.flat_objective`.
      theta_saddle: ``(n,)`` the critical point.
      eps: step length along ``v`` (any finite number; its sign picks the side).
      which: ``"min"`` (λ_min's eigenvector: the escape direction of a strict saddle),
        ``"max"``, or an int k for the k-th smallest eigenvalue (0-based).

    Returns:
      ``(n,)`` in the dtype of ``theta_saddle``.
    """
    theta = jnp.asarray(theta_saddle)
    n = theta.shape[0]
    if n > MAX_PARAMS_EXACT_HESSIAN:
        raise InputError(f"the model has {n} parameters; an exact eigenvector needs at most "
                         f"{MAX_PARAMS_EXACT_HESSIAN}.")
    if not math.isfinite(float(eps)):
        raise InputError(f"eps must be a finite number, got {eps!r}.")
    if which == "min":
        k = 0
    elif which == "max":
        k = n - 1
    elif isinstance(which, int) and 0 <= which < n:
        k = which
    else:
        raise InputError(f"which must be 'min', 'max' or an index in 0..{n - 1}, got {which!r}.")
    H = np.asarray(hessian_matrix(objective, theta, X, Y, dtype=jnp.float64))
    _, vectors = np.linalg.eigh(H)
    v = vectors[:, k]
    v = v * np.sign(v[np.argmax(np.abs(v))])
    return (theta.astype(jnp.float64) + float(eps) * jnp.asarray(v)).astype(theta.dtype)


def run_path(spec: ModelSpec, loss: str, theta0, X, Y, *, optimizer: str = "gd", lr: float,
             steps: int, batch: int | None = None, momentum: float = 0.9, noise: float = 0.0,
             seed: int = 0, weight_stride: int | None = None, lambda_every: int = 0,
             lambda_method: str = "auto", lanczos_steps: int | None = None,
             progress: Callable[[float], None] | None = None) -> PathResult:
    """Run one optimiser path from ``theta0`` and record what happens along it.

    Args:
      spec, loss: the model and loss name (``"squared"`` or ``"cross_entropy"``).
      theta0: ``(n,)`` flat initial parameters; their dtype is the path's dtype.
      X, Y: data ``(m, d_x)``, ``(m, d_y)``.
      optimizer: one of ``gd, momentum, nesterov, adam, sgd`` (:mod:`compute._optimisers`).
      lr: step size η > 0. steps: T, between 1 and ``MAX_STEPS``.
      batch: minibatch size (drawn without replacement each step; ``sgd`` defaults to
        ``min(32, m)``); None means full batch.
      momentum: β of heavy-ball / Nesterov momentum.
      noise: σ of Gaussian noise ``σ ξ``, ``ξ ~ N(0, I)``, added to each update's gradient.
      seed: seeds the minibatches, the noise and the Lanczos start vectors.
      weight_stride: record θ every this many steps (default: about 1000 rows, within
        ``MAX_PATH_WEIGHT_BYTES``).
      lambda_every: track λ_min/λ_max every this many steps (0: not tracked).
      lambda_method: ``auto`` (exact up to ``MAX_PARAMS_EXACT_LAMBDA`` parameters, else
        Lanczos), ``exact`` or ``lanczos``; lanczos_steps: Krylov dimension (default
        ``min(n, 40)``).
      progress: called with the fraction done (0 < f ≤ 1) after each compiled chunk (about
        10–20 calls; the path is the same with or without it).

    Returns:
      A :class:`PathResult`. A divergent run is reported there (``diverged_at ≥ 0``), not
      raised.
    """
    start = time.perf_counter()
    check_seed_and_scale(seed)
    theta0, X, Y = _check_problem(spec, theta0, X, Y)
    n, m = theta0.shape[0], X.shape[0]
    batch = check_path_options(optimizer=optimizer, lr=lr, steps=steps, batch=batch,
                               n_samples=m, momentum=momentum, noise=noise)
    if batch is None:  # full batch: a deep linear net needs only d_x + d_y rows (exact)
        X, Y = sufficient_data(spec, loss, X, Y)
    steps = int(steps)
    stride = _weight_stride(weight_stride, steps, n, theta0.dtype.itemsize)
    every, method, krylov = _lambda_options(lambda_every, lambda_method, lanczos_steps, n)
    block, chunk_len, n_chunks = _chunking(steps, progress, (stride, every) if every else (stride,))
    config = _Config(spec, loss, optimizer, batch, float(noise) > 0, 1, stride, every, method,
                     krylov, block, chunk_len)
    state = _initial_state(config, np.asarray(theta0), np.asarray(seed), steps, theta0.dtype)
    state, outputs = _run_chunks(_runner(config), state, n_chunks, progress,
                                 (X, Y, jnp.int32(steps), *_hyper(theta0.dtype, lr, momentum,
                                                                 noise)))

    d = int(state.diverged_at)
    loss_curve, grad_curve = (
        _pad(np.concatenate([np.asarray(o[k], dtype=np.float64) for o in outputs]), steps + 1)
        for k in (0, 1))
    w_steps = np.arange(0, steps + 1, stride, dtype=np.int64)
    weights = np.asarray(state.weight_buf)[:w_steps.size]
    final = np.asarray(state.theta_good)
    lam_steps = np.arange(0, steps + 1, every) if every else np.zeros(0, dtype=np.int64)
    lam = np.asarray(state.lambda_buf, dtype=np.float64)[:lam_steps.size]
    last = steps
    if d >= 0:
        last = max(d - 1, 0)
        keep = w_steps < d
        weights, w_steps = weights[keep], w_steps[keep]
        lam, lam_steps = lam[lam_steps < d], lam_steps[lam_steps < d]
    if w_steps.size == 0 or w_steps[-1] != last:  # the last kept point closes the path
        weights = np.vstack([weights, final[None, :]])
        w_steps = np.append(w_steps, last)
    return PathResult(loss=loss_curve, grad_norm=grad_curve, weights=weights,
                      weight_steps=w_steps.astype(np.int64), lambda_min=lam[:, 0],
                      lambda_max=lam[:, 1], lambda_steps=lam_steps.astype(np.int64),
                      final=final, diverged_at=d, seconds=time.perf_counter() - start,
                      optimizer=optimizer, lr=float(lr), lambda_method=method if every else "")


def many_starts(spec: ModelSpec, loss: str, X, Y, *, n_starts: int, init: str = "xavier",
                scale: float = 1.0, seed: int = 0, optimizer: str = "gd", lr: float,
                steps: int, batch: int | None = None, momentum: float = 0.9,
                noise: float = 0.0, dtype=jnp.float32, global_minimum: float | None = None,
                tol: float = 1e-3, curve_points: int = DEFAULT_CURVE_POINTS,
                progress: Callable[[float], None] | None = None) -> dict:
    """Train from ``n_starts`` inits at once (``jax.vmap`` of the scanned loop).

    Start ``i`` is exactly ``run_path(spec, loss, initial_point(spec, init=init,
    scale=scale, seed=seed + i, dtype=dtype), X, Y, ..., seed=seed + i)``.

    Args:
      global_minimum: the known L* (default: the closed form of THEORY.md §1 for deep linear
        nets with squared loss, via :func:`compute._theory.deep_linear_global_minimum`;
        otherwise unknown).
      tol: a start has *converged* when ``L_final − L* ≤ tol · (L_0 − L*)`` if L* is known,
        else when it is *stationary*: ``‖∇L_final‖ ≤ tol · max_t ‖∇L(θ_t)‖``.
      curve_points: about this many points of each start's loss curve are kept.

    Returns:
      dict with ``seeds (N,)``, ``final (N, n)``, ``final_loss (N,)`` (the last finite loss),
      ``final_grad_norm (N,)``, ``diverged_at (N,)``, ``stationary (N,)``, ``converged
      (N,)``, ``global_minimum`` (float or None), ``curve_steps (R,)``, ``loss_curves
      (N, R)`` and ``seconds``.
    """
    start = time.perf_counter()
    if not isinstance(n_starts, (int, np.integer)) or not 1 <= n_starts <= MAX_STARTS:
        raise InputError(f"the number of starts must be between 1 and {MAX_STARTS}, "
                         f"got {n_starts!r}.")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise InputError(f"tol must be a number in (0, 1), got {tol!r}.")
    if not (isinstance(curve_points, int) and curve_points >= 1):
        raise InputError(f"curve_points must be a positive integer, got {curve_points!r}.")
    seeds = np.arange(seed, seed + int(n_starts))
    thetas = np.stack([np.asarray(initial_point(spec, init=init, scale=scale, seed=int(s),
                                                dtype=dtype)) for s in seeds])
    _, X, Y = _check_problem(spec, thetas[0], X, Y)
    batch = check_path_options(optimizer=optimizer, lr=lr, steps=steps, batch=batch,
                               n_samples=X.shape[0], momentum=momentum, noise=noise)
    if batch is None:
        X, Y = sufficient_data(spec, loss, X, Y)
    steps = int(steps)
    _check_many_starts_memory(spec, n_starts, X.shape[0], X.dtype.itemsize)
    loss_stride = max(1, -(-steps // curve_points))
    block, chunk_len, n_chunks = _chunking(steps, progress)
    config = _Config(spec, loss, optimizer, batch, float(noise) > 0, loss_stride, 0, 0, "", 0,
                     block, chunk_len)
    state = _initial_state(config, thetas, seeds, steps, X.dtype, vmapped=True)
    state, _ = _run_chunks(_runner(config, vmapped=True), state, n_chunks, progress,
                           (X, Y, jnp.int32(steps), *_hyper(X.dtype, lr, momentum, noise)))

    curve_steps = _strided_steps(steps, loss_stride)
    curves = np.asarray(state.loss_buf, dtype=np.float64)[:, :curve_steps.size]
    final_loss = np.asarray(state.loss_good, dtype=np.float64)
    final_grad = np.asarray(state.grad_good, dtype=np.float64)
    diverged_at = np.asarray(state.diverged_at, dtype=np.int64)
    grad_max = np.asarray(state.grad_buf, dtype=np.float64)  # running max (see _runner)
    finite = diverged_at < 0
    stationary = finite & (final_grad <= tol * np.nan_to_num(grad_max, nan=np.inf)[:, 0])
    if global_minimum is None:
        global_minimum = _known_global_minimum(spec, loss, X, Y)
    if global_minimum is not None:
        gap0 = curves[:, 0] - global_minimum
        converged = finite & (final_loss - global_minimum <= tol * np.maximum(gap0, 0.0))
    else:
        converged = stationary
    return {
        "seeds": seeds,
        "final": np.asarray(state.theta_good),
        "final_loss": final_loss,
        "final_grad_norm": final_grad,
        "diverged_at": diverged_at,
        "stationary": stationary,
        "converged": converged,
        "global_minimum": None if global_minimum is None else float(global_minimum),
        "curve_steps": curve_steps,
        "loss_curves": curves,
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------- the runner


@functools.lru_cache(maxsize=64)
def _runner(config: _Config, vmapped: bool = False) -> Callable:
    """A jitted ``chunk(state, X, Y, T, lr, momentum, noise) -> (state, per_step)``.

    One call advances ``config.chunk_len`` steps inside ``lax.scan``; steps past ``T`` do
    nothing; ``per_step`` is ``(loss, grad_norm)`` of each step (None when vmapped, which
    records a strided curve in the state instead). The steps run in blocks of
    ``config.block`` (a divisor of the weight stride and of ``lambda_every``): weights and
    eigenvalues are recorded at block starts only, so the inner loop carries no branches.
    The state is donated (its buffers are updated in place). Cached per static
    configuration; jit caches per shape and dtype (buffer lengths are bucketed).
    """
    objective = flat_objective(config.spec, config.loss)
    value_and_grad = jax.value_and_grad(objective)
    grad = jax.grad(objective)
    needs_key = config.batch is not None or config.use_noise
    lanczos = config.lambda_every > 0 and config.lambda_method == "lanczos"

    def chunk(state: _State, X, Y, T, lr, momentum, noise):
        opt = make_optimizer(config.optimizer, lr, momentum=momentum)
        m = X.shape[0]

        def step(s: _State, _) -> tuple[_State, tuple | None]:
            t, theta = s.t, s.theta
            active = t <= T
            value, g = value_and_grad(theta, X, Y)
            gnorm = jnp.linalg.norm(g)
            finite = jnp.isfinite(value) & jnp.isfinite(gnorm)
            diverged_at = jnp.where(active & ~finite & (s.diverged_at < 0), t, s.diverged_at)
            alive = diverged_at < 0
            record = active & (alive | (diverged_at == t))
            loss_buf, grad_buf = s.loss_buf, s.grad_buf
            if vmapped:  # a strided loss curve and the running max of ‖∇L‖
                row = jnp.where(record, _row(t, T, config.loss_stride), _DROP)
                loss_buf = loss_buf.at[row].set(value, mode="drop")
                grad_buf = jnp.where(active & alive, jnp.fmax(grad_buf, gnorm), grad_buf)
                out = None
            else:  # every step's values leave through the scan's outputs
                out = (jnp.where(record, value, jnp.nan), jnp.where(record, gnorm, jnp.nan))
            key = s.key
            if needs_key:
                key, k_batch, k_noise = jax.random.split(key, 3)
            if config.batch is not None:
                idx = jax.random.choice(k_batch, m, (config.batch,), replace=False)
                g = grad(theta, X[idx], Y[idx])
            if config.use_noise:
                g = g + noise * jax.random.normal(k_noise, g.shape, g.dtype)
            updates, opt_state = opt.update(g, s.opt_state, theta)
            move = alive & (t < T)
            good = active & alive
            new = s._replace(
                t=t + 1,
                theta=jnp.where(move, theta + updates, theta),
                theta_good=jnp.where(good, theta, s.theta_good),
                loss_good=jnp.where(good, value, s.loss_good),
                grad_good=jnp.where(good, gnorm, s.grad_good),
                opt_state=jax.tree.map(lambda a, b: jnp.where(move, a, b), opt_state,
                                       s.opt_state),
                key=key, diverged_at=diverged_at, loss_buf=loss_buf, grad_buf=grad_buf)
            return new, out

        def block(s: _State, _):
            t, theta = s.t, s.theta
            if config.weight_stride:
                due = (t <= T) & (t % config.weight_stride == 0)
                row = t // config.weight_stride
                s = s._replace(weight_buf=jax.lax.cond(
                    due, lambda buf: jax.lax.dynamic_update_slice(buf, theta[None, :],
                                                                  (row, jnp.zeros_like(row))),
                    lambda buf: buf, s.weight_buf))
            if config.lambda_every:
                key, k_lanczos = jax.random.split(s.key) if lanczos else (s.key, None)
                due = (t <= T) & (s.diverged_at < 0) & (t % config.lambda_every == 0)
                pair = jax.lax.cond(
                    due,
                    lambda th: jnp.stack(extreme_eigenvalues(
                        objective, th, X, Y, method=config.lambda_method,
                        lanczos_steps=config.lanczos_steps, key=k_lanczos,
                        dtype=jnp.float64)),
                    lambda th: jnp.full((2,), jnp.nan, jnp.float64),
                    theta)
                row = jnp.where(due, t // config.lambda_every, _DROP)
                s = s._replace(key=key, lambda_buf=s.lambda_buf.at[row].set(pair, mode="drop"))
            return jax.lax.scan(step, s, None, length=config.block,
                                unroll=min(_UNROLL, config.block))

        state, out = jax.lax.scan(block, state, None, length=config.chunk_len // config.block)
        if out is not None:
            out = tuple(o.reshape(-1) for o in out)
        return state, out

    if vmapped:
        chunk = jax.vmap(chunk, in_axes=(0, None, None, None, None, None, None))
    return jax.jit(chunk, donate_argnums=0)


def _initial_state(config: _Config, theta0: np.ndarray, seeds: np.ndarray, steps: int,
                   dtype, vmapped: bool = False) -> _State:
    """Fresh device buffers (the runner donates them) for one start or a stack of starts.

    ``theta0`` is ``(n,)`` (or ``(N, n)`` with ``vmapped``) host data; ``seeds`` the PRNG seeds.
    """
    lead = (theta0.shape[0],) if vmapped else ()
    n = theta0.shape[-1]
    fresh = lambda a: jnp.asarray(np.array(a), dtype)  # noqa: E731 - a new device buffer
    if config.weight_stride:
        rows = steps // config.weight_stride + 1
        bucket = _bucket(rows)
        if bucket * n * jnp.dtype(dtype).itemsize > MAX_PATH_WEIGHT_BYTES:
            bucket = rows
        weight_buf = jnp.full((*lead, bucket, n), jnp.nan, dtype)
    else:
        weight_buf = jnp.zeros((*lead, 0, n), dtype)
    if config.lambda_every:
        lambda_buf = jnp.full((*lead, _bucket(steps // config.lambda_every + 1), 2), jnp.nan,
                              jnp.float64)
    else:
        lambda_buf = jnp.zeros((*lead, 0, 2), jnp.float64)
    n_loss = _bucket(_n_rows(steps, config.loss_stride))
    init = make_optimizer(config.optimizer, 1.0, momentum=0.5).init
    opt_state = jax.tree.map(np.asarray, jax.vmap(init)(theta0) if vmapped else init(theta0))
    keys = [jax.random.PRNGKey(int(s)) for s in np.atleast_1d(seeds)]
    return _State(
        t=jnp.full(lead, 0, jnp.int32), theta=fresh(theta0), theta_good=fresh(theta0),
        loss_good=jnp.full(lead, jnp.nan, dtype), grad_good=jnp.full(lead, jnp.nan, dtype),
        opt_state=jax.tree.map(lambda a: jnp.asarray(np.array(a)), opt_state),
        key=jnp.stack(keys) if vmapped else keys[0],
        diverged_at=jnp.full(lead, -1, jnp.int32),
        loss_buf=jnp.full((*lead, n_loss if vmapped else 0), jnp.nan, dtype),
        grad_buf=jnp.full((*lead, 1 if vmapped else 0), jnp.nan, dtype),
        weight_buf=weight_buf, lambda_buf=lambda_buf)


def _chunking(steps: int, progress, records: tuple[int, ...] = ()) -> tuple[int, int, int]:
    """``(block, chunk_len, n_chunks)`` for ``T + 1`` iterations.

    A chunk is a power-of-two number of steps (few compiled variants; at most a quarter of
    the iterations, a tenth with progress reports, so little is wasted past T), or a whole
    number of blocks; a block is the gcd of the record strides ``records`` (weights,
    eigenvalues) when it fits in a chunk, else 1 (records then branch every step).
    """
    parts = _PROGRESS_CHUNKS if progress is not None else 4
    target = max(_MIN_CHUNK, min(_MAX_CHUNK, _pow2_floor((steps + 1) // parts)))
    block = math.gcd(*records) if records else 1
    if block > target:
        block = 1
    chunk_len = block * max(1, target // block)
    return block, chunk_len, -(-(steps + 1) // chunk_len)


def _run_chunks(runner: Callable, state: _State, n_chunks: int, progress, args
                ) -> tuple[_State, list]:
    """Run the chunks; return the final state and each chunk's per-step outputs."""
    outputs = []
    for i in range(n_chunks):
        state, per_step = runner(state, *args)
        outputs.append(per_step)
        if progress is not None:
            progress((i + 1) / n_chunks)
        if i < n_chunks - 1 and bool(jnp.all(state.diverged_at >= 0)):
            if progress is not None:
                progress(1.0)
            break
    return state, outputs


def _row(t, T, stride: int):
    """Buffer row of step t: ``t // stride`` on the stride, one more for T; else dropped."""
    row = jnp.where(t % stride == 0, t // stride, jnp.where(t == T, T // stride + 1, _DROP))
    return jnp.where(t <= T, row, _DROP)


def _n_rows(steps: int, stride: int) -> int:
    return steps // stride + 1 + (1 if steps % stride else 0)


def _pad(values: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` values, NaN-padded (chunks after a divergence are skipped)."""
    out = np.full(length, np.nan)
    out[:min(length, values.size)] = values[:length]
    return out


def _bucket(rows: int) -> int:
    """Rows rounded up to a power of two (≥ 8), so nearby step counts share a kernel."""
    return max(8, 1 << (int(rows) - 1).bit_length())


def _pow2_floor(k: int) -> int:
    return 1 << (max(int(k), 1).bit_length() - 1)


def _strided_steps(steps: int, stride: int) -> np.ndarray:
    out = np.arange(0, steps + 1, stride, dtype=np.int64)
    return out if out[-1] == steps else np.append(out, steps)


def _hyper(dtype, lr, momentum, noise) -> tuple:
    return (jnp.asarray(lr, dtype), jnp.asarray(momentum, dtype), jnp.asarray(noise, dtype))


# --------------------------------------------------------------------------- checks


def check_seed_and_scale(seed, scale=None) -> None:
    """Raise InputError unless ``0 ≤ seed ≤ MAX_SEED`` (an integer) and, if given,
    ``0 ≤ scale ≤ MAX_INIT_SCALE``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or not 0 <= seed <= MAX_SEED:
        raise InputError(f"the seed must be an integer between 0 and {MAX_SEED}, got {seed!r}.")
    if scale is not None and not (isinstance(scale, (int, float, np.floating))
                                  and 0 <= scale <= MAX_INIT_SCALE):
        raise InputError(f"the init scale must be a number between 0 and {MAX_INIT_SCALE:g}, "
                         f"got {scale!r}.")


def _check_problem(spec: ModelSpec, theta0, X, Y):
    theta0 = jnp.asarray(theta0)
    if theta0.dtype not in (jnp.float32, jnp.float64):
        theta0 = theta0.astype(jnp.float32)
    if theta0.shape != (spec.n_params,):
        raise InputError(f"the initial point must be a flat vector of {spec.n_params} "
                         f"parameters, got shape {tuple(theta0.shape)}.")
    if not bool(jnp.all(jnp.isfinite(theta0))):
        raise InputError("the initial point contains NaN or inf.")
    X = jnp.asarray(X, theta0.dtype)
    Y = jnp.asarray(Y, theta0.dtype)
    d_x, d_y = spec.layer_sizes[0], spec.layer_sizes[-1]
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != d_x or Y.shape[1] != d_y \
            or X.shape[0] != Y.shape[0] or X.shape[0] < 1:
        raise InputError(f"the model needs X of shape (m, {d_x}) and Y of shape (m, {d_y}), "
                         f"got {tuple(X.shape)} and {tuple(Y.shape)}.")
    return theta0, X, Y


def _weight_stride(stride, steps: int, n: int, itemsize: int) -> int:
    max_rows = max(2, MAX_PATH_WEIGHT_BYTES // (n * itemsize))
    if stride is None:
        stride = max(1, -(-steps // DEFAULT_WEIGHT_ROWS))
        while _n_rows(steps, stride) > max_rows:
            stride = max(stride + 1, -(-steps // (max_rows - 2)))
        return stride
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) \
            or not 1 <= stride <= MAX_STEPS:
        raise InputError(f"the weight stride must be an integer between 1 and {MAX_STEPS}, "
                         f"got {stride!r}.")
    if _n_rows(steps, int(stride)) > max_rows:
        raise InputError(f"weight stride {stride} keeps {_n_rows(steps, int(stride))} rows of "
                         f"{n} parameters; use a stride of at least "
                         f"{-(-steps // (max_rows - 2))}.")
    return int(stride)


def _lambda_options(every, method, krylov, n: int) -> tuple[int, str, int]:
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) \
            or not 0 <= every <= MAX_STEPS:
        raise InputError(f"lambda_every must be an integer between 0 (off) and {MAX_STEPS}, "
                         f"got {every!r}.")
    if method not in LAMBDA_METHODS:
        raise InputError(f"lambda_method must be one of {', '.join(LAMBDA_METHODS)}, "
                         f"got {method!r}.")
    if method == "auto":
        # An exact eigh every few steps costs O(n³): beyond a few hundred parameters Lanczos
        # (O(k) Hessian-vector products) is orders of magnitude cheaper along a path.
        method = "exact" if n <= MAX_PARAMS_EXACT_LAMBDA else "lanczos"
    if method == "exact" and every and n > MAX_PARAMS_EXACT_HESSIAN:
        raise InputError(f"exact eigenvalues need at most {MAX_PARAMS_EXACT_HESSIAN} "
                         f"parameters (the model has {n}); use lambda_method='lanczos'.")
    if krylov is None:
        krylov = min(n, PATH_LANCZOS_STEPS)
    if isinstance(krylov, bool) or not isinstance(krylov, (int, np.integer)) \
            or not 2 <= krylov <= min(n, MAX_LANCZOS_STEPS):
        raise InputError(f"lanczos_steps must be an integer between 2 and "
                         f"{min(n, MAX_LANCZOS_STEPS)}, got {krylov!r}.")
    return int(every), method, int(krylov)


def _check_many_starts_memory(spec: ModelSpec, n_starts: int, m: int, itemsize: int) -> None:
    """Rough working set of a vmapped run: parameters, optimiser state, activations."""
    per_start = itemsize * (8 * spec.n_params + 3 * m * sum(spec.layer_sizes))
    if n_starts * per_start > MEMORY_BUDGET_BYTES:
        most = max(1, MEMORY_BUDGET_BYTES // per_start)
        raise InputError(f"{n_starts} starts of this model and dataset need about "
                         f"{n_starts * per_start / 2**20:.0f} MiB; use at most {most} starts.")


# --------------------------------------------------------------------------- neighbours


def _known_global_minimum(spec: ModelSpec, loss: str, X, Y) -> float | None:
    """L* of THEORY.md §1 for deep linear nets with squared loss; None otherwise."""
    if spec.kind != "linear" or loss != "squared":
        return None
    try:
        from compute._theory import deep_linear_global_minimum
    except ImportError:
        return None
    try:
        return float(deep_linear_global_minimum(np.asarray(X, np.float64),
                                                np.asarray(Y, np.float64),
                                                tuple(spec.layer_sizes[1:-1])))
    except InputError:  # the closed form's assumptions fail for these data
        return None
