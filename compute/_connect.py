"""Minimum-to-minimum paths: a low-loss path between two points, its barrier and its peak.

Between two minima ``θ_a`` and ``θ_b`` the straight segment ``(1 − t) θ_a + t θ_b`` usually
crosses a ridge; a *minimum-energy path* bends round it. Two ways to find one:

* ``neb``: the climbing-image nudged elastic band. ``K`` images ``θ_0 = θ_a, …,
  θ_{K−1} = θ_b`` (endpoints fixed) start on the segment; interior image ``i`` feels

      F_i = −∇L(θ_i)_⊥ + k (‖θ_{i+1} − θ_i‖ − ‖θ_i − θ_{i−1}‖) τ_i

  (the true force without its component along the unit tangent ``τ_i``, plus a spring
  along ``τ_i`` that keeps the images evenly spaced). The tangent is the upwind one of
  Henkelman & Jónsson (2000). After the first third of the steps the highest image
  *climbs*: ``F = −∇L + 2 (∇L·τ) τ`` (no spring), so it converges to the saddle at the
  top of the path and the band's maximum is the barrier. ``k = spring · g / h`` with
  ``g`` the largest ``‖∇L‖`` on the starting segment and ``h`` its image spacing, so
  ``spring`` is dimensionless. Images move by Adam on ``−F`` with a cosine-decayed step.
* ``bezier``: the quadratic Bézier curve ``φ(t) = (1 − t)² θ_a + 2t(1 − t) c + t² θ_b``
  whose control point ``c`` (started at the midpoint) minimises ``E_{t∼U[0,1]} L(φ(t))``,
  estimated each step at ``K`` stratified samples ``t_j = (j + u_j)/K`` (Adam, cosine
  decay). The trained curve is then evaluated on a uniform grid of ``t``.

Both run every step as one jitted, ``vmap``-ed update (over images or samples of t) inside
``lax.scan``. The *barrier* of a path is ``max_k L(θ_k) − max(L(θ_a), L(θ_b))``: how far
above the higher end the path must climb. :func:`classify_path_peak` runs the saddle finder
from the path's highest point and classifies the critical point it reaches.

References:
  Henkelman, Uberuaga & Jónsson, "A climbing image nudged elastic band method for finding
  saddle points and minimum energy paths", J. Chem. Phys. 113, 9901 (2000).
  Henkelman & Jónsson, "Improved tangent estimate in the nudged elastic band method",
  J. Chem. Phys. 113, 9978 (2000).
  Garipov, Izmailov, Podoprikhin, Vetrov & Wilson, "Loss Surfaces, Mode Connectivity, and
  Fast Ensembling of DNNs", NeurIPS 2018 (arXiv:1802.10026).
  Draxler, Veschgini, Salmhofer & Hamprecht, "Essentially No Barriers in Neural Network
  Energy Landscape", ICML 2018 (arXiv:1803.00885).
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
import optax

from compute._critical import CriticalPoint
from compute._errors import InputError
from compute._limits import (
    MAX_LR,
    MAX_PARAMS_EXACT_HESSIAN,
    MAX_PATH_IMAGES,
    MAX_PATH_POINTS,
    MAX_PEAK_SADDLE_STEPS,
    MAX_SEED,
    MAX_SPRING,
    MAX_STEPS,
    MEMORY_BUDGET_BYTES,
    MIN_PATH_IMAGES,
    check_int,
)
from compute._losses import flat_objective
from compute._models import ModelSpec, check_flat_params
from compute._saddle import find_critical_point

__all__ = [
    "CONNECT_METHODS",
    "MinimumPath",
    "PathPeak",
    "classify_path_peak",
    "minimum_energy_path",
]

CONNECT_METHODS = ("neb", "bezier")
# Limits to move to compute/_limits.py.
_COPIES = 8                    # (K, n) arrays alive during a step: images, grads, Adam, …
_CLIMB_AFTER = 1 / 3           # fraction of the steps before the highest image climbs
_PROGRESS_CHUNKS = 10
_MIN_CHUNK, _MAX_CHUNK = 8, 4096


@dataclass(frozen=True, eq=False)
class MinimumPath:
    """A low-loss path from ``θ_a`` to ``θ_b`` (numpy, float64; K points, n parameters).

    Attributes:
      t: ``(K,)`` position along the path in [0, 1]: the normalised arc length of the
        images (``neb``) or the curve parameter (``bezier``); ``t[0] = 0``, ``t[-1] = 1``.
      thetas: ``(K, n)`` the path's points (``thetas[0] = θ_a``, ``thetas[-1] = θ_b``).
      loss: ``(K,)`` ``L(thetas[k])``.
      straight_t, straight_loss: ``(K,)`` the loss at ``(1 − t) θ_a + t θ_b`` (same t).
      barrier: ``max(loss) − max(loss[0], loss[-1])`` (≥ 0 up to rounding).
      straight_barrier: the same for the straight segment.
      peak: index of ``max(loss)``; peak_theta: ``(n,)`` that point.
      history: ``(steps + 1,)`` the optimised quantity before each step and at the end
        (``neb``: the highest image's loss; ``bezier``: the mean of ``L(φ(t))`` over the
        step's samples of t, and at the end over ``n_images`` evenly spaced t).
      control: ``(n,)`` the Bézier control point ``c`` (None for ``neb``).
      method, n_images, steps, lr, spring, seconds: how it was made (spring: ``neb`` only).
      converged_force: ``neb``: the largest interior ``‖F_i‖`` at the end relative to the
        largest ``‖∇L‖`` on the starting segment (NaN for ``bezier``).
    """

    t: np.ndarray
    thetas: np.ndarray
    loss: np.ndarray
    straight_t: np.ndarray
    straight_loss: np.ndarray
    barrier: float
    straight_barrier: float
    peak: int
    peak_theta: np.ndarray
    history: np.ndarray
    control: np.ndarray | None
    method: str
    n_images: int
    steps: int
    lr: float
    spring: float
    converged_force: float
    seconds: float

    @property
    def peak_loss(self) -> float:
        return float(self.loss[self.peak])


@dataclass(frozen=True, eq=False)
class PathPeak:
    """What the highest point of a path is: the critical point the saddle finder reached.

    ``theta`` ``(n,)`` the point reached from ``start`` (the path's peak); ``loss`` and
    ``grad_norm`` there; ``distance`` ``‖theta − start‖``; ``converged``: ‖∇L‖ fell below
    the finder's tolerance; ``verdict`` one of :data:`compute.VERDICTS` (from
    ``classification``); ``start_loss``: the path's peak loss.
    """

    verdict: str
    loss: float
    grad_norm: float
    distance: float
    converged: bool
    steps: int
    theta: np.ndarray
    start: np.ndarray
    start_loss: float
    classification: CriticalPoint


class _Band(NamedTuple):
    """The scan's carry: free points (interior images, or the control point) and Adam."""

    t: jax.Array           # int32 step about to be taken
    free: jax.Array        # neb: (K − 2, n) interior images; bezier: (1, n) control point
    opt_state: object
    key: jax.Array
    alive: jax.Array       # bool: every loss and force so far finite


# --------------------------------------------------------------------------- public API


def minimum_energy_path(spec: ModelSpec, loss: str, theta_a, theta_b, X, Y, *,
                        method: str = "neb", n_images: int = 17, steps: int = 1_000,
                        lr: float = 1e-2, spring: float = 1.0, n_points: int = 101,
                        seed: int = 0, dtype=jnp.float64,
                        progress: Callable[[float], None] | None = None) -> MinimumPath:
    """A path from ``theta_a`` to ``theta_b`` that keeps the loss low, and its barrier.

    Args:
      spec, loss: the model and the loss name (``"squared"`` or ``"cross_entropy"``).
      theta_a, theta_b: ``(n,)`` the two ends (usually minima), kept fixed.
      X, Y: data ``(m, d_x)``, ``(m, d_y)``.
      method: ``"neb"`` (climbing-image nudged elastic band) or ``"bezier"`` (quadratic
        Bézier curve); see the module docstring.
      n_images: ``neb``: images K, ends included; ``bezier``: samples of t per step.
      steps: optimiser steps (1 … ``MAX_STEPS``).
      lr: Adam's step size (per coordinate, before the cosine decay), in (0, ``MAX_LR``].
      spring: ``neb``'s dimensionless spring constant (0 … ``MAX_SPRING``).
      n_points: ``bezier``: points of t at which the trained curve is reported.
      seed: seeds the Bézier samples of t.
      dtype: float64 (default) or float32.
      progress: called with the fraction done (0 < f ≤ 1) after each compiled chunk.

    Returns:
      A :class:`MinimumPath`.

    Raises:
      InputError: mismatched shapes, non-finite or equal ends, options out of range, or
        more memory than ``MEMORY_BUDGET_BYTES``.
    """
    start = time.perf_counter()
    if method not in CONNECT_METHODS:
        raise InputError(f"method must be one of {', '.join(CONNECT_METHODS)}, got {method!r}.")
    dtype = _check_dtype(dtype)
    n_images = check_int("n_images", n_images, MIN_PATH_IMAGES, MAX_PATH_IMAGES)
    steps = check_int("steps", steps, 1, MAX_STEPS)
    n_points = check_int("n_points", n_points, MIN_PATH_IMAGES, MAX_PATH_POINTS)
    seed = check_int("the seed", seed, 0, MAX_SEED)
    lr = _check_number("the learning rate", lr, 0.0, MAX_LR, low_open=True)
    spring = _check_number("spring", spring, 0.0, MAX_SPRING)
    a, b, X, Y = _check_problem(spec, theta_a, theta_b, X, Y, dtype)
    n = a.shape[0]
    rows = max(n_images, n_points if method == "bezier" else 0)
    need = _COPIES * rows * n * jnp.dtype(dtype).itemsize
    if need > MEMORY_BUDGET_BYTES:
        raise InputError(f"{rows} path points of {n} parameters need about {need / 2**20:.0f} "
                         f"MiB, beyond the {MEMORY_BUDGET_BYTES / 2**20:.0f} MiB budget; use "
                         "fewer images or points.")
    objective = flat_objective(spec, loss)
    losses_at = _losses_at(objective)

    # the straight segment at the K images' starting positions: spring scale, band start
    s0 = jnp.linspace(0.0, 1.0, n_images, dtype=dtype)
    line = (1 - s0)[:, None] * a[None, :] + s0[:, None] * b[None, :]
    line_loss, line_grad = _values_and_grads(objective)(line, X, Y)
    g_scale = float(jnp.max(jnp.linalg.norm(line_grad, axis=1)))
    if not (math.isfinite(g_scale) and bool(jnp.all(jnp.isfinite(line_loss)))):
        raise InputError("the loss or its gradient is not finite on the straight segment "
                         "between the two points; start from finite-loss points.")
    g_scale = g_scale if g_scale > 0 else 1.0
    h = float(jnp.linalg.norm(b - a)) / (n_images - 1)
    hyper = (jnp.asarray(lr, dtype), jnp.asarray(spring * g_scale / h, dtype),
             jnp.int32(steps), jnp.int32(math.ceil(_CLIMB_AFTER * steps)))

    if method == "neb":
        free = line[1:-1]
    else:
        free = (0.5 * (a + b))[None, :]
    state = _Band(jnp.int32(0), free, optax.scale_by_adam().init(free),
                  jax.random.PRNGKey(seed), jnp.bool_(True))
    chunk_len, n_chunks = _chunking(steps, progress)
    runner = _runner(spec, loss, method, n_images, chunk_len)
    history = []
    for i in range(n_chunks):
        state, per_step = runner(state, a, b, X, Y, *hyper)
        history.append(np.asarray(per_step, dtype=np.float64))
        if progress is not None:
            progress((i + 1) / n_chunks)
    history = np.concatenate(history)[:steps]

    if method == "neb":
        thetas = jnp.concatenate([a[None, :], state.free, b[None, :]])
        lengths = jnp.linalg.norm(jnp.diff(thetas, axis=0), axis=1)
        arc = jnp.concatenate([jnp.zeros(1, dtype), jnp.cumsum(lengths)])
        t = arc / arc[-1]
        values, grads = _values_and_grads(objective)(thetas, X, Y)
        force = _neb_forces(thetas, values, grads, hyper[1], jnp.bool_(True))
        converged_force = float(jnp.max(jnp.linalg.norm(force, axis=1))) / g_scale
        control = None
    else:
        t = jnp.linspace(0.0, 1.0, n_points, dtype=dtype)
        control = state.free[0]
        thetas = _bezier(a, control, b, t)
        values = losses_at(thetas, X, Y)
        converged_force = float("nan")
        control = np.asarray(control, dtype=np.float64)
    final_value = float(jnp.max(values)) if method == "neb" else float(
        jnp.mean(losses_at(_bezier(a, state.free[0], b, s0), X, Y)))
    history = np.append(history, final_value if bool(state.alive) else np.nan)
    straight = (1 - t)[:, None] * a[None, :] + t[:, None] * b[None, :]
    straight_loss = np.asarray(losses_at(straight, X, Y), dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    peak = int(np.nanargmax(values)) if np.any(np.isfinite(values)) else 0
    return MinimumPath(
        t=np.asarray(t, dtype=np.float64), thetas=np.asarray(thetas, dtype=np.float64),
        loss=values, straight_t=np.asarray(t, dtype=np.float64), straight_loss=straight_loss,
        barrier=_barrier(values), straight_barrier=_barrier(straight_loss), peak=peak,
        peak_theta=np.asarray(thetas[peak], dtype=np.float64), history=history,
        control=control, method=method, n_images=n_images, steps=steps, lr=lr,
        spring=spring if method == "neb" else float("nan"),
        converged_force=converged_force, seconds=time.perf_counter() - start)


def classify_path_peak(spec: ModelSpec, loss: str, path: MinimumPath, X, Y, *,
                       max_steps: int = 50, global_min: float | None = None,
                       method: str = "levenberg_marquardt", dtype=jnp.float64) -> PathPeak:
    """Converge from the path's highest point to a critical point and classify it.

    Runs :func:`compute.find_critical_point` (minimising ``½‖∇L‖²``) from
    ``path.peak_theta`` and :func:`compute.classify_critical_point` at the point reached.
    On a converged climbing-image band the peak already is (close to) the saddle, so the
    finder moves little; on a Bézier curve it may move further.

    Args:
      spec, loss, X, Y: as for :func:`minimum_energy_path`.
      path: a :class:`MinimumPath` of this model.
      max_steps: saddle-finder steps (0 … ``MAX_PEAK_SADDLE_STEPS``; 0 classifies the peak).
      global_min: the known global minimum value (deep linear nets), for the verdict.
      method: the saddle finder's method (``"levenberg_marquardt"`` or ``"newton_abs"``).

    Returns:
      A :class:`PathPeak`.

    Raises:
      InputError: more than ``MAX_PARAMS_EXACT_HESSIAN`` parameters (kept cheap: exact
        Hessians), a path of another model, or options out of range.
    """
    if not isinstance(path, MinimumPath):
        raise InputError("path must be a MinimumPath from minimum_energy_path.")
    max_steps = check_int("max_steps", max_steps, 0, MAX_PEAK_SADDLE_STEPS)
    n = spec.n_params
    if n > MAX_PARAMS_EXACT_HESSIAN:
        raise InputError(f"classifying a path's peak needs the exact Hessian (at most "
                         f"{MAX_PARAMS_EXACT_HESSIAN} parameters, got {n}).")
    if path.peak_theta.shape != (n,):
        raise InputError(f"the path has points of {path.peak_theta.size} parameters but the "
                         f"model has {n}; classify a path with the model that made it.")
    dtype = _check_dtype(dtype)
    start, _, X, Y = _check_problem(spec, path.peak_theta, path.peak_theta, X, Y, dtype,
                                    same_ok=True)
    objective = flat_objective(spec, loss)
    theta, info = find_critical_point(objective, start, X, Y, method=method,
                                      max_steps=max_steps, spec=spec, loss=loss,
                                      global_min=global_min,
                                      dtype=dtype)
    verdict = info.classification
    return PathPeak(verdict=verdict.verdict, loss=verdict.loss, grad_norm=verdict.grad_norm,
                    distance=info.distance, converged=info.converged, steps=info.steps,
                    theta=theta, start=np.asarray(start, dtype=np.float64),
                    start_loss=float(info.loss_history[0]), classification=verdict)


# --------------------------------------------------------------------------- the maths


def _bezier(a, c, b, t):
    """``φ(t) = (1 − t)² a + 2t(1 − t) c + t² b`` for t (K,) → (K, n)."""
    t = t[:, None]
    return (1 - t) ** 2 * a[None, :] + 2 * t * (1 - t) * c[None, :] + t ** 2 * b[None, :]


def _unit(v):
    """Rows of v (K, n) scaled to unit length (zero rows stay zero)."""
    norm = jnp.linalg.norm(v, axis=1, keepdims=True)
    return v / jnp.where(norm > 0, norm, 1.0)


def _neb_forces(thetas, values, grads, k, climb):
    """NEB forces ``(K − 2, n)`` on the interior images of a band ``thetas`` ``(K, n)``.

    ``values`` (K,) and ``grads`` (K, n) are L and ∇L at every image; ``k`` the spring
    constant; ``climb`` (bool scalar): the highest interior image climbs instead.
    """
    forward = thetas[2:] - thetas[1:-1]    # θ_{i+1} − θ_i
    backward = thetas[1:-1] - thetas[:-2]  # θ_i − θ_{i−1}
    e_prev, e, e_next = values[:-2], values[1:-1], values[2:]
    d_next, d_prev = e_next - e, e_prev - e
    big = jnp.maximum(jnp.abs(d_next), jnp.abs(d_prev))[:, None]
    small = jnp.minimum(jnp.abs(d_next), jnp.abs(d_prev))[:, None]
    mixed = jnp.where((e_next > e_prev)[:, None], forward * big + backward * small,
                      forward * small + backward * big)
    rising = ((e_next > e) & (e > e_prev))[:, None]
    falling = ((e_next < e) & (e < e_prev))[:, None]
    tau = _unit(jnp.where(rising, forward, jnp.where(falling, backward, mixed)))
    g = grads[1:-1]
    g_along = jnp.sum(g * tau, axis=1, keepdims=True)
    stretch = (jnp.linalg.norm(forward, axis=1) - jnp.linalg.norm(backward, axis=1))[:, None]
    nudged = -(g - g_along * tau) + k * stretch * tau
    climbing = -g + 2 * g_along * tau
    top = (jnp.arange(e.shape[0]) == jnp.argmax(e))[:, None] & climb
    return jnp.where(top, climbing, nudged)


@functools.lru_cache(maxsize=64)
def _values_and_grads(objective: Callable) -> Callable:
    """jitted ``(thetas (K, n), X, Y) -> (L (K,), ∇L (K, n))``."""
    return jax.jit(jax.vmap(jax.value_and_grad(objective), in_axes=(0, None, None)))


@functools.lru_cache(maxsize=64)
def _losses_at(objective: Callable) -> Callable:
    """jitted ``(thetas (K, n), X, Y) -> L (K,)``."""
    return jax.jit(jax.vmap(objective, in_axes=(0, None, None)))


@functools.lru_cache(maxsize=64)
def _runner(spec: ModelSpec, loss: str, method: str, n_images: int, chunk_len: int):
    """A jitted ``chunk(state, a, b, X, Y, lr, k, T, climb_from) -> (state, per_step)``.

    Advances ``chunk_len`` steps in ``lax.scan`` (steps at or past T do nothing). Each step:
    losses and gradients at every image (one ``vmap``), the NEB forces or the Bézier
    gradient, an Adam update scaled by ``−lr · ½(1 + cos(π t / T))``. ``per_step`` is the
    band's highest loss (neb) or the sampled mean loss (bezier) before the step. A step
    whose loss or force is not finite freezes the path (``alive`` false).
    """
    objective = flat_objective(spec, loss)
    values_and_grads = jax.vmap(jax.value_and_grad(objective), in_axes=(0, None, None))
    adam = optax.scale_by_adam()

    def mean_curve_loss(c, a, b, t, X, Y):
        values = jax.vmap(objective, in_axes=(0, None, None))(_bezier(a, c[0], b, t), X, Y)
        return jnp.mean(values)

    curve_value_and_grad = jax.value_and_grad(mean_curve_loss)

    def chunk(state: _Band, a, b, X, Y, lr, k, T, climb_from):
        def step(s: _Band, _):
            key = s.key
            if method == "neb":
                thetas = jnp.concatenate([a[None, :], s.free, b[None, :]])
                values, grads = values_and_grads(thetas, X, Y)
                force = _neb_forces(thetas, values, grads, k, s.t >= climb_from)
                value, direction = jnp.max(values), -force
            else:
                key, sub = jax.random.split(key)
                u = jax.random.uniform(sub, (n_images,), dtype=a.dtype)
                t = (jnp.arange(n_images, dtype=a.dtype) + u) / n_images
                value, direction = curve_value_and_grad(s.free, a, b, t, X, Y)
            finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(direction))
            alive = s.alive & finite
            move = alive & (s.t < T)
            updates, opt_state = adam.update(direction, s.opt_state)
            rate = lr * 0.5 * (1 + jnp.cos(jnp.pi * s.t.astype(a.dtype) / T.astype(a.dtype)))
            new = _Band(
                t=s.t + 1,
                free=jnp.where(move, s.free - rate * updates, s.free),
                opt_state=jax.tree.map(lambda x, y: jnp.where(move, x, y), opt_state,
                                       s.opt_state),
                key=key, alive=alive)
            return new, jnp.where(s.alive, value, jnp.nan)

        return jax.lax.scan(step, state, None, length=chunk_len)

    return jax.jit(chunk, donate_argnums=0)


def _barrier(values: np.ndarray) -> float:
    return float(np.max(values) - max(values[0], values[-1]))


def _chunking(steps: int, progress) -> tuple[int, int]:
    """``(chunk_len, n_chunks)``: power-of-two chunks (few compiled variants)."""
    parts = _PROGRESS_CHUNKS if progress is not None else 4
    target = max(_MIN_CHUNK, min(_MAX_CHUNK, 1 << (max(steps // parts, 1).bit_length() - 1)))
    return target, -(-steps // target)


# --------------------------------------------------------------------------- validation


def _check_number(name: str, value, low: float, high: float, *, low_open: bool = False
                  ) -> float:
    try:
        ok = not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        ok = False
    if ok:
        value = float(value)
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        interval = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise InputError(f"{name} must be a finite number in {interval}, got {value!r}.")
    return value


def _check_dtype(dtype):
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        dtype = None
    if dtype not in (jnp.float32, jnp.float64):
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}.")
    return dtype


def _check_problem(spec: ModelSpec, theta_a, theta_b, X, Y, dtype, same_ok: bool = False):
    points = [check_flat_params(spec, theta_a, "the first point"),
              check_flat_params(spec, theta_b, "the second point")]
    if not same_ok and np.array_equal(points[0], points[1]):
        raise InputError("the two points are the same; a path needs two different ends.")
    try:
        Xn, Yn = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("X and Y must be numeric arrays.") from None
    d_x, d_y = spec.layer_sizes[0], spec.layer_sizes[-1]
    if Xn.ndim != 2 or Yn.ndim != 2 or Xn.shape[1] != d_x or Yn.shape[1] != d_y \
            or Xn.shape[0] != Yn.shape[0] or Xn.shape[0] < 1:
        raise InputError(f"the model needs X of shape (m, {d_x}) and Y of shape (m, {d_y}), "
                         f"got {Xn.shape} and {Yn.shape}.")
    if not (np.all(np.isfinite(Xn)) and np.all(np.isfinite(Yn))):
        raise InputError("X or Y contains NaN or inf.")
    return (jnp.asarray(points[0], dtype), jnp.asarray(points[1], dtype),
            jnp.asarray(Xn, dtype), jnp.asarray(Yn, dtype))
