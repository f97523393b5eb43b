"""The Hessian of an objective over the flat parameters: products, matrices, spectra.

Every function takes ``objective(theta, X, Y) -> scalar`` (see
:func:`compute.flat_objective`), so it works for any model. Hessian work is float64 by
default: ``theta``, ``X`` and ``Y`` are cast to ``dtype`` first.

* :func:`hessian_vector_product`: ``H v`` by forward-over-reverse differentiation
  (``jax.jvp`` of ``jax.grad``), one gradient's cost, never forming H.
* :func:`hessian_matrix`: H (n × n) from n products, for n ≤ ``MAX_PARAMS_EXACT_HESSIAN``.
* :func:`hessian_spectrum`: every eigenpair (exact) or the k smallest and k largest
  (Lanczos, both ends: negative curvature is the point), optionally the spectral density.
* :func:`extreme_eigenvalues`: ``(λ_min, λ_max)``, jittable, for use inside ``lax.scan``.
* :func:`hessian_trace_hutchinson`, :func:`hessian_plane_directions`.

References:
  Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation (1994).
  Ghorbani, Krishnan & Xiao, ICML 2019 (arXiv:1901.10159).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from compute._errors import InputError
from compute._lanczos import (
    _BLOCK,
    LanczosState,
    _host_gaussian,
    gaussian_density,
    lanczos_iterate,
    lanczos_start,
    tridiagonal_matrix,
)
from compute._limits import (
    MAX_LANCZOS_STEPS,
    MAX_PARAMS_EXACT_HESSIAN,
    MAX_SLQ_PROBES,
    MEMORY_BUDGET_BYTES,
    check_range,
)

__all__ = [
    "NON_FINITE_MESSAGE",
    "Spectrum",
    "hessian_vector_product",
    "hessian_matrix",
    "hessian_spectrum",
    "extreme_eigenvalues",
    "hessian_trace_hutchinson",
    "hessian_plane_directions",
]

Objective = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
SPECTRUM_METHODS = ("auto", "exact", "lanczos")


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Eigenvalues of the Hessian at a point, and how they were obtained.

    Attributes:
      eigenvalues: (k,) ascending. All n for ``method="exact"``; for Lanczos the k
        smallest then the k largest Ritz values (fewer if the Krylov space is smaller).
      eigenvectors: (n, k) unit columns matching ``eigenvalues``, or None.
      method: ``"exact"`` or ``"lanczos"``.
      n_params: n.
      complete: True when ``eigenvalues`` holds the whole spectrum.
      residuals: (k,) Lanczos bounds ``‖H y − θ y‖`` (None for exact).
      lanczos_steps: Krylov dimension used (None for exact).
      ritz_history: (steps, 2) smallest and largest Ritz value after each Lanczos step.
      density: ``(grid, values)`` of the Gaussian-smoothed spectral density, or None.
      slq_nodes, slq_weights: (probes, steps) SLQ quadrature (None unless Lanczos density).
      sigma: the smoothing width of ``density`` (eigenvalue units).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray | None
    method: str
    n_params: int
    complete: bool
    residuals: np.ndarray | None = None
    lanczos_steps: int | None = None
    ritz_history: np.ndarray | None = None
    density: tuple[np.ndarray, np.ndarray] | None = None
    slq_nodes: np.ndarray | None = None
    slq_weights: np.ndarray | None = None
    sigma: float | None = None

    @property
    def scale(self) -> float:
        """``max |λ|`` over the computed eigenvalues (the spectral norm when complete)."""
        return float(np.max(np.abs(self.eigenvalues))) if self.eigenvalues.size else 0.0


def _cast(theta, X, Y, dtype):
    return (jnp.asarray(theta, dtype), jnp.asarray(X, dtype), jnp.asarray(Y, dtype))


NON_FINITE_MESSAGE = ("the loss or its derivatives are not finite at these parameters (the "
                      "weights' scale overflows the loss): use smaller weights.")


def hessian_vector_product(objective: Objective, theta: jax.Array, v: jax.Array,
                           X: jax.Array, Y: jax.Array) -> jax.Array:
    """``H(θ) v`` (n,) by forward-over-reverse AD: ``jvp(grad L, (θ,), (v,))``.

    Costs about two gradient evaluations; traceable (call it inside jit/vmap/scan).
    """
    grad = lambda t: jax.grad(objective)(t, X, Y)
    return jax.jvp(grad, (theta,), (v,))[1]


def _hvp_batch_size(n: int, X: jax.Array, Y: jax.Array) -> int:
    """How many Hessian-vector products to run at once within the memory budget.

    A product holds a few copies of the activations (∝ the data size) and of θ; the
    estimate ``8 B × (16 (|X| + |Y|) + 8 n)`` per product is deliberately generous.
    """
    per_product = 8 * (16 * (X.size + Y.size) + 8 * n)
    return int(max(1, min(n, MEMORY_BUDGET_BYTES // per_product)))


@partial(jax.jit, static_argnames=("objective", "batch_size"))
def _hessian_dense(objective, theta, X, Y, batch_size):
    n = theta.shape[0]
    column = lambda i: hessian_vector_product(
        objective, theta, jax.nn.one_hot(i, n, dtype=theta.dtype), X, Y)
    H = jax.lax.map(column, jnp.arange(n), batch_size=batch_size)
    return 0.5 * (H + H.T)


def hessian_matrix(objective: Objective, theta, X, Y, *, dtype=jnp.float64) -> jax.Array:
    """The Hessian ``∂²L/∂θ∂θᵀ`` (n, n), symmetrised, from n Hessian-vector products.

    Raises:
      InputError: n > ``MAX_PARAMS_EXACT_HESSIAN`` (use Lanczos instead).
    """
    theta, X, Y = _cast(theta, X, Y, dtype)
    n = theta.shape[0]
    if n > MAX_PARAMS_EXACT_HESSIAN:
        raise InputError(f"the model has {n} parameters; the exact Hessian is limited to "
                         f"{MAX_PARAMS_EXACT_HESSIAN}: use the Lanczos method instead.")
    return _hessian_dense(objective, theta, X, Y, _hvp_batch_size(n, X, Y))


@partial(jax.jit, static_argnames=("objective",))
def _lanczos_chunk(objective, state, theta, X, Y, start, stop):
    matvec = lambda v: hessian_vector_product(objective, theta, v, X, Y)
    return lanczos_iterate(matvec, state, start, stop)


def _start_state(rng: np.random.Generator, n: int, max_steps: int, dtype,
                 rademacher: bool) -> LanczosState:
    """A fresh Lanczos state from a host-drawn start vector (Gaussian or Rademacher).

    Drawn with numpy: a JAX PRNG kernel would cost seconds of XLA compilation on CPU.
    """
    v0 = rng.choice([-1.0, 1.0], n) if rademacher else rng.standard_normal(n)
    rows = -(-max_steps // _BLOCK) * _BLOCK
    return LanczosState(
        basis=jnp.zeros((rows, n), dtype), alpha=jnp.zeros((max_steps,), dtype),
        beta=jnp.zeros((max_steps,), dtype), v=jnp.asarray(v0 / np.linalg.norm(v0), dtype),
        v_prev=jnp.zeros((n,), dtype), scale=jnp.zeros((), dtype),
        restart=jnp.asarray(rng.standard_normal(n), dtype))


def _slq_host(objective, theta, X, Y, rng, probes: int, steps: int, max_steps: int):
    """SLQ nodes and weights (probes, steps), reusing the compiled Lanczos chunk.

    Same maths as :func:`compute._lanczos.slq_quadrature` (Rademacher probes, weights
    ``S_{0i}²``), but probe by probe through :func:`_lanczos_chunk` with the main run's
    basis size, so no second Lanczos kernel is compiled.
    """
    n = int(theta.shape[0])
    nodes, weights = np.empty((probes, steps)), np.empty((probes, steps))
    for p in range(probes):
        start = _start_state(rng, n, max_steps, theta.dtype, True)
        state = _lanczos_chunk(objective, start, theta, X, Y, 0, steps)
        values, S = _ritz(np.asarray(state.alpha), np.asarray(state.beta), steps)
        nodes[p], weights[p] = values, S[0] ** 2
    return nodes, weights


def _max_krylov(n: int, itemsize: int) -> int:
    """Largest Krylov dimension allowed: ≤ n, ≤ MAX_LANCZOS_STEPS, basis ≤ half the budget."""
    return int(max(1, min(n, MAX_LANCZOS_STEPS, MEMORY_BUDGET_BYTES // (2 * n * itemsize))))


def _ritz(alpha: np.ndarray, beta: np.ndarray, steps: int):
    """Eigenpairs of the Lanczos matrix T (steps × steps), ascending (host, LAPACK stemr)."""
    from scipy.linalg import eigh_tridiagonal

    if steps == 1:
        return alpha[:1].copy(), np.ones((1, 1))
    return eigh_tridiagonal(alpha[:steps], beta[: steps - 1])


def _wanted(steps: int, k: int) -> np.ndarray:
    return np.arange(steps) if 2 * k >= steps else np.r_[np.arange(k), np.arange(steps - k, steps)]


def _error_bounds(theta: np.ndarray, idx: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Eigenvalue error estimates ``min(r, r²/gap)`` of the Ritz values ``theta[idx]``.

    ``r`` bounds the distance to *some* eigenvalue; when the Ritz value is isolated by
    ``gap`` (here: from the other Ritz values) the error is at most ``r²/gap`` (Parlett,
    *The Symmetric Eigenvalue Problem*, §11.7).
    """
    if theta.size < 2:
        return residuals
    others = np.abs(theta[idx][:, None] - theta[None, :])
    others[np.arange(idx.size), idx] = np.inf
    gap = others.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        quad = np.where(gap > 0, residuals**2 / gap, np.inf)
    return np.minimum(residuals, quad)


def _ritz_history(alpha: np.ndarray, beta: np.ndarray, steps: int) -> np.ndarray:
    from scipy.linalg import eigvalsh_tridiagonal

    out = np.empty((steps, 2))
    for j in range(1, steps + 1):
        if j == 1:
            out[0] = alpha[0]
            continue
        ev = eigvalsh_tridiagonal(alpha[:j], beta[: j - 1], select="i",
                                  select_range=(0, 0))
        ev2 = eigvalsh_tridiagonal(alpha[:j], beta[: j - 1], select="i",
                                   select_range=(j - 1, j - 1))
        out[j - 1] = ev[0], ev2[0]
    return out


def hessian_spectrum(objective: Objective, theta, X, Y, *, method: str = "auto", k: int = 5,
                     lanczos_steps: int | None = None, lanczos_tol: float = 1e-10,
                     seed: int = 0, density: bool = False, slq_probes: int = 8,
                     slq_steps: int = 80, slq_sigma: float | None = None,
                     slq_grid: int = 512, dtype=jnp.float64) -> Spectrum:
    """Eigenvalues (and eigenvectors) of the Hessian at ``theta``.

    Args:
      objective: ``objective(theta, X, Y) -> scalar``.
      theta: flat parameters (n,); X (m, d_x), Y (m, d_y): the data.
      method: ``"exact"`` (dense H and ``eigh``: every pair), ``"lanczos"`` (the k
        smallest and k largest Ritz pairs) or ``"auto"`` (exact up to
        ``MAX_PARAMS_EXACT_HESSIAN`` parameters).
      k: pairs at each end for Lanczos.
      lanczos_steps: fixed Krylov dimension; None runs until the 2k wanted Ritz pairs have
        error estimate ``min(r, r²/gap) ≤ lanczos_tol · ‖H‖`` (r: the residual; checked
        after ``max(30, 4k)`` steps, then every 10), up to ``MAX_LANCZOS_STEPS``. An
        eigenvalue of multiplicity > 1 shows up once per Krylov restart, so exact
        multiplicities need ``method="exact"``.
      seed: seeds the Lanczos start vector and the SLQ probes.
      density: also estimate the spectral density: exact eigenvalues smoothed, or
        stochastic Lanczos quadrature with ``slq_probes`` Rademacher probes of
        ``slq_steps`` steps each (Ghorbani et al. 2019). ``slq_sigma`` is the Gaussian
        width in eigenvalue units (default 1% of the spectral range), ``slq_grid`` the
        number of grid points.
      dtype: computation dtype (float64 by default).

    Returns:
      :class:`Spectrum`.

    Raises:
      InputError: a bad option, too many parameters for ``exact``, or a non-finite Hessian.
    """
    if method not in SPECTRUM_METHODS:
        raise InputError(f"method must be one of {', '.join(SPECTRUM_METHODS)}, got {method!r}.")
    theta, X, Y = _cast(theta, X, Y, dtype)
    n = int(theta.shape[0])
    if method == "auto":
        method = "exact" if n <= MAX_PARAMS_EXACT_HESSIAN else "lanczos"
    if method == "exact":
        H = np.asarray(hessian_matrix(objective, theta, X, Y, dtype=dtype))
        if not np.all(np.isfinite(H)):
            raise InputError(NON_FINITE_MESSAGE)
        evals, evecs = np.linalg.eigh(H)
        dens, sigma = None, None
        if density:
            grid, values = gaussian_density(evals, np.full(n, 1.0 / n), sigma=slq_sigma,
                                            grid=slq_grid)
            dens = (grid, values)
            sigma = float(slq_sigma) if slq_sigma is not None else _default_sigma(evals)
        return Spectrum(evals, evecs, "exact", n, True, density=dens, sigma=sigma)

    check_range("k", k, 1, MAX_LANCZOS_STEPS // 2)
    s_max = _max_krylov(n, np.dtype(dtype).itemsize)
    if lanczos_steps is not None:
        check_range("lanczos_steps", lanczos_steps, 1, s_max)
        s_max = int(lanczos_steps)
    rng = np.random.default_rng(seed)
    state = _start_state(rng, n, s_max, jnp.dtype(dtype), False)
    done = 0
    target = s_max if lanczos_steps is not None else min(s_max, max(30, 4 * k))
    while True:
        state = _lanczos_chunk(objective, state, theta, X, Y, done, target)
        done = target
        alpha, beta = np.asarray(state.alpha), np.asarray(state.beta)
        if not (np.all(np.isfinite(alpha[:done])) and np.all(np.isfinite(beta[:done]))):
            raise InputError(NON_FINITE_MESSAGE)
        theta_ritz, S = _ritz(alpha, beta, done)
        idx = _wanted(done, k)
        residuals = np.abs(beta[done - 1] * S[done - 1, idx])
        scale = max(float(np.max(np.abs(theta_ritz))), float(np.asarray(state.scale)))
        if done >= s_max or np.all(_error_bounds(theta_ritz, idx, residuals)
                                   <= lanczos_tol * scale):
            break
        target = min(s_max, done + 10)
    vectors = np.asarray(state.basis[:done]).T @ S[:, idx]
    dens = nodes = weights = sigma = None
    if density:
        check_range("slq_probes", slq_probes, 1, MAX_SLQ_PROBES)
        check_range("slq_steps", slq_steps, 1, MAX_LANCZOS_STEPS)
        nodes, weights = _slq_host(objective, theta, X, Y, rng, int(slq_probes),
                                   min(int(slq_steps), s_max), s_max)
        grid, values = gaussian_density(nodes, weights, sigma=slq_sigma, grid=slq_grid)
        dens = (grid, values)
        sigma = float(slq_sigma) if slq_sigma is not None else _default_sigma(nodes)
    return Spectrum(theta_ritz[idx], vectors, "lanczos", n, done >= n and idx.size == done,
                    residuals=residuals, lanczos_steps=done,
                    ritz_history=_ritz_history(alpha, beta, done), density=dens,
                    slq_nodes=nodes, slq_weights=weights, sigma=sigma)


def _default_sigma(nodes) -> float:
    nodes = np.asarray(nodes)
    width = float(nodes.max() - nodes.min())
    if width <= 0:
        width = float(np.max(np.abs(nodes))) or 1.0
    return 0.01 * width


@partial(jax.jit, static_argnames=("objective", "method", "lanczos_steps", "dtype"))
def _extremes(objective, theta, X, Y, key, method, lanczos_steps, dtype):
    theta, X, Y = (a.astype(dtype) for a in (theta, X, Y))
    n = theta.shape[0]
    if method == "exact":
        column = lambda i: hessian_vector_product(
            objective, theta, jax.nn.one_hot(i, n, dtype=dtype), X, Y)
        H = jax.vmap(column)(jnp.arange(n))
        evals = jnp.linalg.eigvalsh(0.5 * (H + H.T))
        return evals[0], evals[-1]
    steps = min(lanczos_steps, n)
    matvec = lambda v: hessian_vector_product(objective, theta, v, X, Y)
    v0 = (jnp.asarray(_host_gaussian(n, 1), dtype) if key is None
          else jax.random.normal(key, (n,), dtype))
    state = lanczos_iterate(matvec, lanczos_start(v0, steps), 0, steps)
    evals = jnp.linalg.eigvalsh(tridiagonal_matrix(state.alpha, state.beta))
    return evals[0], evals[-1]


def extreme_eigenvalues(objective: Objective, theta, X, Y, *, method: str = "lanczos",
                        lanczos_steps: int = 20, key: jax.Array | None = None,
                        dtype=jnp.float64) -> tuple[jax.Array, jax.Array]:
    """``(λ_min, λ_max)`` of the Hessian at ``theta``: jittable, usable inside ``lax.scan``.

    Args:
      method: ``"exact"`` (dense H via n products and ``eigvalsh``; small n only) or
        ``"lanczos"`` (``lanczos_steps`` steps with full reorthogonalisation; the
        extreme Ritz values are inner bounds that converge first). Static.
      lanczos_steps: Krylov dimension (static; capped at n).
      key: PRNG key of the start vector (default: a fixed Gaussian vector, which avoids
        compiling a PRNG kernel).
      dtype: computation dtype (float64 by default); the results have this dtype.
    """
    if method not in ("exact", "lanczos"):
        raise InputError(f"method must be 'exact' or 'lanczos', got {method!r}.")
    if method == "exact" and np.shape(theta)[0] > MAX_PARAMS_EXACT_HESSIAN:
        raise InputError(f"{np.shape(theta)[0]} parameters is too many for the exact "
                         f"Hessian (limit {MAX_PARAMS_EXACT_HESSIAN}): use method='lanczos'.")
    return _extremes(objective, jnp.asarray(theta), jnp.asarray(X), jnp.asarray(Y), key,
                     method, int(lanczos_steps), jnp.dtype(dtype))


@partial(jax.jit, static_argnames=("objective", "batch_size"))
def _quadratic_forms(objective, theta, X, Y, Z, batch_size):
    """``z_pᵀ H z_p`` for each row of Z (probes, n)."""
    form = lambda z: jnp.vdot(z, hessian_vector_product(objective, theta, z, X, Y))
    return jax.lax.map(form, Z, batch_size=batch_size)


def hessian_trace_hutchinson(objective: Objective, theta, X, Y, *, probes: int = 64,
                             seed: int = 0, dtype=jnp.float64) -> tuple[float, float]:
    """Hutchinson's estimate of tr H with Rademacher probes: ``(estimate, stderr)``.

    ``tr H ≈ mean_p z_pᵀ H z_p`` (``z_p ∈ {±1}ⁿ`` drawn with numpy from ``seed``); the
    standard error is ``std(samples)/√probes`` (one sample's variance is
    ``2 Σ_{i≠j} H_ij²``). See :func:`compute._lanczos.hutchinson_trace` for the jittable
    version.
    """
    check_range("probes", probes, 2, 100_000)
    theta, X, Y = _cast(theta, X, Y, dtype)
    n = int(theta.shape[0])
    Z = np.random.default_rng(seed).choice([-1.0, 1.0], (int(probes), n))
    batch = min(int(probes), _hvp_batch_size(n, X, Y))
    samples = np.asarray(_quadratic_forms(objective, theta, X, Y, jnp.asarray(Z, dtype), batch))
    return float(samples.mean()), float(samples.std(ddof=1) / np.sqrt(probes))


def hessian_plane_directions(objective: Objective, theta, X, Y, *, which: str = "top2",
                             method: str = "auto", seed: int = 0,
                             spectrum: Spectrum | None = None
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Two orthonormal Hessian eigenvectors (n,) spanning a plane for the surface view.

    ``which="top2"``: the eigenvectors of the two largest eigenvalues; ``"min_max"``: the
    most negative (smallest) and the largest. Pass ``spectrum`` to reuse one.
    """
    if which not in ("top2", "min_max"):
        raise InputError(f"which must be 'top2' or 'min_max', got {which!r}.")
    if spectrum is None or spectrum.eigenvectors is None:
        spectrum = hessian_spectrum(objective, theta, X, Y, method=method, k=2, seed=seed)
    V = np.asarray(spectrum.eigenvectors)
    if V.shape[1] < 2:
        raise InputError("the spectrum has fewer than two eigenvectors; use more Lanczos steps.")
    d1, d2 = (V[:, -1], V[:, -2]) if which == "top2" else (V[:, 0], V[:, -1])
    d1 = d1 / np.linalg.norm(d1)
    d2 = d2 - (d2 @ d1) * d1
    return d1, d2 / np.linalg.norm(d2)
