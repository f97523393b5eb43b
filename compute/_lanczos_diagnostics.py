"""Has a Lanczos spectrum converged? Ritz values step by step, and the spread over SLQ probes.

* :func:`lanczos_ritz_history`: one Lanczos run of ``steps`` steps (full
  reorthogonalisation, as :mod:`compute._lanczos`); for every j = 1..steps the Ritz values
  of the leading j × j tridiagonal block T_j, the a-posteriori error bounds
  ``β_j |e_jᵀ s_i|`` of the extreme Ritz pairs and the step at which each bound first falls
  under the tolerance. By Cauchy interlacing the smallest Ritz value only decreases and
  the largest only increases with j: a flat tail with a small bound means convergence.
* :func:`slq_probe_spread`: the stochastic-Lanczos-quadrature density of each probe on
  one grid, their mean and pointwise spread, and each probe's first two spectral moments
  ``Σ w τ`` (an unbiased estimate of tr H / n) and ``Σ w τ²`` (of tr H² / n) with the
  standard error of their mean: probes that disagree mean the density needs more probes.

Both have a ``*_from_matvec`` core that takes any symmetric operator ``v -> A v``.

References:
  Paige, "The computation of eigenvalues and eigenvectors of very large sparse matrices"
  (PhD thesis, 1971); Parlett, *The Symmetric Eigenvalue Problem* (1998), §§10.2, 13.1
  (the bound ``|θ − λ| ≤ β_j |s_ji|``); Golub & Van Loan, *Matrix Computations* (4th ed.),
  §§8.1.2 (interlacing), 10.1. Ghorbani, Krishnan & Xiao, ICML 2019 (arXiv:1901.10159);
  Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 38 (2017) (SLQ).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from compute._errors import InputError
from compute._hessian import NON_FINITE_MESSAGE, hessian_vector_product
from compute._lanczos import (
    gaussian_density,
    lanczos_iterate,
    lanczos_start,
    slq_quadrature,
)
from compute._limits import (
    MAX_DENSITY_GRID,
    MAX_LANCZOS_STEPS,
    MAX_SEED,
    MAX_SLQ_PROBES,
    MEMORY_BUDGET_BYTES,
    check_range,
)

__all__ = [
    "RitzHistory",
    "SLQSpread",
    "ritz_history_from_matvec",
    "lanczos_ritz_history",
    "slq_spread_from_matvec",
    "slq_probe_spread",
]

MatVec = Callable[[jax.Array], jax.Array]
Objective = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]



@dataclass(frozen=True, eq=False)
class RitzHistory:
    """Ritz values of one Lanczos run after every step, with their error bounds.

    Attributes:
      ritz_values: (steps, steps); row j − 1 holds the j eigenvalues of T_j ascending,
        then NaN.
      extreme_values: (steps, 2k); row j − 1: the k smallest Ritz values of T_j
        ascending, then the k largest ascending (NaN where T_j has fewer than k; when
        j < 2k the two halves share values).
      residual_bounds: (steps, 2k) ``β_j |e_jᵀ s_i|`` for ``extreme_values``: the residual
        ``‖A y − θ y‖`` of the Ritz pair, so some eigenvalue of A lies within it of θ (up
        to rounding, ≈ 1e3 ε ‖A‖: a recorded breakdown β_j = 0 means the Krylov space is
        invariant and those Ritz values are eigenvalues).
      converged_at: (2k,) the first step j (1-based) with
        ``bound ≤ tol · max(|θ|, zero_floor · scale)``, or −1 if none. Column c follows
        "the c-th extreme Ritz value", which may converge to a farther eigenvalue first
        when the start vector barely touches the nearer one.
      alpha, beta: (steps,) the tridiagonal T (``beta[j − 1]`` = β_j, the residual norm
        after j steps; 0 at a breakdown).
      k: extreme pairs per end; tol, zero_floor: the convergence test;
      scale: ``max |θ|`` at the last step (≈ ‖A‖ once converged).
    """

    ritz_values: np.ndarray
    extreme_values: np.ndarray
    residual_bounds: np.ndarray
    converged_at: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    k: int
    tol: float
    zero_floor: float
    scale: float

    @property
    def steps(self) -> int:
        return int(self.alpha.shape[0])


@dataclass(frozen=True, eq=False)
class SLQSpread:
    """The SLQ density of each probe on a common grid and how much the probes disagree.

    Attributes:
      grid: (G,) eigenvalue grid (spans every node ± 5σ unless given).
      densities: (P, G) each probe's smoothed density ``Σ_i w_pi g_σ(t − τ_pi)``.
      mean: (G,) their mean (the SLQ density estimate); std: (G,) the pointwise sample
        standard deviation over probes (NaN for one probe); lower, upper: (G,) pointwise
        min and max.
      moments: (P, 2) each probe's ``(Σ w τ, Σ w τ²)``, unbiased for ``(tr A/n, tr A²/n)``
        (exact Gauss quadrature for steps ≥ 2).
      moment_mean, moment_stderr: (2,) mean over probes and its standard error
        ``std(ddof=1)/√P`` (NaN for one probe).
      sigma: the Gaussian width (eigenvalue units); nodes, weights: (P, steps) the
        quadrature rules.
    """

    grid: np.ndarray
    densities: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    moments: np.ndarray
    moment_mean: np.ndarray
    moment_stderr: np.ndarray
    sigma: float
    nodes: np.ndarray
    weights: np.ndarray

    @property
    def probes(self) -> int:
        return int(self.densities.shape[0])


# ------------------------------------------------------------------------ Ritz history
def _extreme_columns(j: int, k: int) -> np.ndarray:
    """Indices into the j ascending Ritz values of T_j for the 2k extreme columns (−1: none)."""
    c = np.arange(2 * k)
    idx = np.where(c < k, c, j - 2 * k + c)
    return np.where((idx >= 0) & (idx < j), idx, -1)


def _last_components(alpha: np.ndarray, beta: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``|e_jᵀ s_i|`` for the eigenvectors s_i (i in ``idx``) of T_j (host LAPACK).

    ``idx`` is ascending and made of at most two contiguous runs (the low and the high
    end); each run costs one selected-eigenvector call (bisection + inverse iteration).
    """
    from scipy.linalg import eigh_tridiagonal

    if alpha.shape[0] == 1:
        return np.ones(idx.size)
    out = np.empty(idx.size)
    breaks = np.flatnonzero(np.diff(idx) > 1) + 1
    for run in np.split(np.arange(idx.size), breaks):
        lo, hi = int(idx[run[0]]), int(idx[run[-1]])
        _, S = eigh_tridiagonal(alpha, beta, select="i", select_range=(lo, hi))
        out[run] = np.abs(S[-1, idx[run] - lo])
    return out


def _ritz_history_host(alpha: np.ndarray, beta: np.ndarray, k: int, tol: float,
                       zero_floor: float) -> RitzHistory:
    """Every leading block's Ritz values, bounds and convergence steps from T (host)."""
    from scipy.linalg import eigvalsh_tridiagonal

    steps = alpha.shape[0]
    ritz = np.full((steps, steps), np.nan)
    values = np.full((steps, 2 * k), np.nan)
    bounds = np.full((steps, 2 * k), np.nan)
    for j in range(1, steps + 1):
        a, b = alpha[:j], beta[: j - 1]
        theta = a.copy() if j == 1 else eigvalsh_tridiagonal(a, b)
        ritz[j - 1, :j] = theta
        idx = _extreme_columns(j, k)
        ok = idx >= 0
        values[j - 1, ok] = theta[idx[ok]]
        # |β_j| · |last component|: the residual of each Ritz pair (Paige)
        bounds[j - 1, ok] = abs(beta[j - 1]) * _last_components(a, b, idx[ok])
    scale = float(np.nanmax(np.abs(ritz[-1]))) if steps else 0.0
    threshold = tol * np.maximum(np.abs(values), zero_floor * scale)
    hit = bounds <= threshold  # NaN compares False
    converged_at = np.where(hit.any(axis=0), hit.argmax(axis=0) + 1, -1)
    return RitzHistory(ritz, values, bounds, converged_at.astype(np.int64), alpha.copy(),
                       beta.copy(), int(k), float(tol), float(zero_floor), scale)


def _check_history_options(steps, k, tol, zero_floor, max_steps: int) -> None:
    check_range("steps", steps, 1, max_steps)
    check_range("k", k, 1, MAX_LANCZOS_STEPS // 2)
    check_range("tol", tol, 0.0, 1.0)
    check_range("zero_floor", zero_floor, 0.0, 1.0)


def _max_krylov(n: int, itemsize: int = 8) -> int:
    """Largest Krylov dimension: ≤ n, ≤ MAX_LANCZOS_STEPS, basis ≤ half the memory budget."""
    return int(max(1, min(n, MAX_LANCZOS_STEPS, MEMORY_BUDGET_BYTES // (2 * n * itemsize))))


def _finite_tridiagonal(state) -> tuple[np.ndarray, np.ndarray]:
    alpha = np.asarray(state.alpha, np.float64)
    beta = np.asarray(state.beta, np.float64)
    if not (np.all(np.isfinite(alpha)) and np.all(np.isfinite(beta))):
        raise InputError(NON_FINITE_MESSAGE)
    return alpha, beta


def ritz_history_from_matvec(matvec: MatVec, v0, *, steps: int, k: int = 1,
                             tol: float = 1e-8, zero_floor: float = 1e-6,
                             restart=None) -> RitzHistory:
    """Ritz values after each of ``steps`` Lanczos steps on a symmetric operator.

    Args:
      matvec: ``v -> A v`` (jax-traceable) for a symmetric A (n × n).
      v0: start vector (n,), any norm > 0; its dtype is the computation dtype.
      steps: Lanczos steps, ``1 ≤ steps ≤ min(n, MAX_LANCZOS_STEPS)``.
      k: extreme Ritz pairs followed at each end.
      tol: relative tolerance of ``converged_at``; zero_floor: eigenvalues smaller than
        ``zero_floor × scale`` are judged against that instead of their own size.
      restart: (n,) vector seeding restarts after a breakdown (default: a fixed Gaussian).

    Returns:
      :class:`RitzHistory` (float64 numpy arrays).

    Raises:
      InputError: a bad option or a non-finite Lanczos coefficient.
    """
    v0 = jnp.asarray(v0)
    n = int(v0.shape[0])
    _check_history_options(steps, k, tol, zero_floor, min(n, MAX_LANCZOS_STEPS))
    state = lanczos_iterate(matvec, lanczos_start(v0, int(steps), restart), 0, int(steps))
    alpha, beta = _finite_tridiagonal(state)
    return _ritz_history_host(alpha, beta, int(k), float(tol), float(zero_floor))


@partial(jax.jit, static_argnames=("objective", "steps"))
def _hvp_lanczos(objective, theta, X, Y, v0, restart, steps):
    matvec = lambda v: hessian_vector_product(objective, theta, v, X, Y)
    return lanczos_iterate(matvec, lanczos_start(v0, steps, restart), 0, steps)


def _cast(theta, X, Y):
    return (jnp.asarray(theta, jnp.float64), jnp.asarray(X, jnp.float64),
            jnp.asarray(Y, jnp.float64))


def lanczos_ritz_history(objective: Objective, theta, X, Y, *, steps: int, seed: int = 0,
                         k: int = 1, tol: float = 1e-8, zero_floor: float = 1e-6
                         ) -> RitzHistory:
    """Ritz values of the Hessian at ``theta`` after each of ``steps`` Lanczos steps.

    One run from a Gaussian start vector drawn by numpy from ``seed`` (as
    :func:`compute.hessian_spectrum`), in float64, Hessian-vector products by
    forward-over-reverse AD.

    Args:
      objective: ``objective(theta, X, Y) -> scalar``; theta (n,), X (m, d_x), Y (m, d_y).
      steps: Krylov dimension, 1 to ``MAX_LANCZOS_STEPS``; capped at n and at a basis
        within half of ``MEMORY_BUDGET_BYTES`` (check ``RitzHistory.steps``).
      seed, k, tol, zero_floor: see :func:`ritz_history_from_matvec`.

    Example:
      >>> h = lanczos_ritz_history(objective, theta, X, Y, steps=40, k=2)  # doctest: +SKIP
      >>> h.extreme_values[-1], h.residual_bounds[-1], h.converged_at  # doctest: +SKIP
    """
    theta, X, Y = _cast(theta, X, Y)
    n = int(theta.shape[0])
    check_range("seed", seed, 0, MAX_SEED)
    _check_history_options(steps, k, tol, zero_floor, MAX_LANCZOS_STEPS)
    steps = min(int(steps), _max_krylov(n))
    rng = np.random.default_rng(seed)
    v0 = rng.standard_normal(n)
    restart = rng.standard_normal(n)
    state = _hvp_lanczos(objective, theta, X, Y, jnp.asarray(v0), jnp.asarray(restart),
                         int(steps))
    alpha, beta = _finite_tridiagonal(state)
    return _ritz_history_host(alpha, beta, int(k), float(tol), float(zero_floor))


# ------------------------------------------------------------------------- SLQ spread
def _default_sigma(nodes: np.ndarray) -> float:
    """1% of the nodes' range (or of their magnitude, or 0.01), as gaussian_density."""
    width = float(nodes.max() - nodes.min())
    if width <= 0:
        width = float(np.max(np.abs(nodes))) or 1.0
    return 0.01 * width


def _check_density_options(grid, sigma) -> None:
    if np.ndim(grid) == 0:
        check_range("grid", grid, 2, MAX_DENSITY_GRID)
    else:
        g = np.asarray(grid, dtype=np.float64)
        if g.ndim != 1 or not 2 <= g.size <= MAX_DENSITY_GRID or not np.all(np.isfinite(g)):
            raise InputError(f"grid must be a finite 1-D array of 2 to {MAX_DENSITY_GRID} "
                             "eigenvalues.")
    if sigma is not None:
        check_range("sigma", sigma, np.finfo(np.float64).tiny, np.inf)
        if not np.isfinite(sigma):
            raise InputError(f"sigma must be a finite positive width, got {sigma!r}.")


def _spread_host(nodes: np.ndarray, weights: np.ndarray, grid, sigma) -> SLQSpread:
    nodes = np.asarray(nodes, np.float64)
    weights = np.asarray(weights, np.float64)
    if not (np.all(np.isfinite(nodes)) and np.all(np.isfinite(weights))):
        raise InputError(NON_FINITE_MESSAGE)
    sigma = _default_sigma(nodes) if sigma is None else float(sigma)
    t, mean = gaussian_density(nodes, weights, sigma=sigma, grid=grid)
    densities = np.stack([gaussian_density(nodes[p], weights[p], sigma=sigma, grid=t)[1]
                          for p in range(nodes.shape[0])])
    probes = nodes.shape[0]
    moments = np.stack([np.sum(weights * nodes, axis=1),
                        np.sum(weights * nodes**2, axis=1)], axis=1)
    if probes > 1:
        std = densities.std(axis=0, ddof=1)
        stderr = moments.std(axis=0, ddof=1) / np.sqrt(probes)
    else:
        std, stderr = np.full_like(mean, np.nan), np.full(2, np.nan)
    return SLQSpread(t, densities, mean, std, densities.min(axis=0), densities.max(axis=0),
                     moments, moments.mean(axis=0), stderr, sigma, nodes, weights)


def _check_slq_options(probes, steps, max_steps, grid, sigma) -> None:
    check_range("probes", probes, 1, MAX_SLQ_PROBES)
    check_range("steps", steps, 1, max_steps)
    _check_density_options(grid, sigma)


def slq_spread_from_matvec(matvec: MatVec, n: int, *, probes: int, steps: int,
                           key: jax.Array, grid=512, sigma: float | None = None,
                           dtype=jnp.float64) -> SLQSpread:
    """Per-probe SLQ densities of a symmetric operator and their spread.

    Args:
      matvec: ``v -> A v`` (jax-traceable) for a symmetric A (n × n).
      probes: Rademacher probes (≤ ``MAX_SLQ_PROBES``); steps: Lanczos steps per probe
        (≤ min(n, ``MAX_LANCZOS_STEPS``)); key: PRNG key of the probes
        (:func:`compute.slq_quadrature`).
      grid: number of grid points (spanning every node ± 5σ) or an explicit 1-D grid.
      sigma: Gaussian width (default 1% of the nodes' range, as
        :func:`compute.gaussian_density`).

    Returns:
      :class:`SLQSpread`.
    """
    _check_slq_options(probes, steps, min(int(n), MAX_LANCZOS_STEPS), grid, sigma)
    nodes, weights = slq_quadrature(matvec, int(n), probes=int(probes), steps=int(steps),
                                    key=key, dtype=dtype)
    return _spread_host(np.asarray(nodes), np.asarray(weights), grid, sigma)


@partial(jax.jit, static_argnames=("objective", "probes", "steps"))
def _hvp_slq(objective, theta, X, Y, seed, probes, steps):
    matvec = lambda v: hessian_vector_product(objective, theta, v, X, Y)
    return slq_quadrature(matvec, theta.shape[0], probes=probes, steps=steps,
                          key=jax.random.PRNGKey(seed), dtype=theta.dtype)


def slq_probe_spread(objective: Objective, theta, X, Y, *, probes: int = 8, steps: int = 80,
                     seed: int = 0, grid=512, sigma: float | None = None) -> SLQSpread:
    """Per-probe SLQ densities of the Hessian at ``theta`` and how much they disagree.

    float64; ``steps`` (1 to ``MAX_LANCZOS_STEPS``) is capped at n (a Krylov space cannot
    be larger) and at a basis within half of ``MEMORY_BUDGET_BYTES``. If the probe
    moments' standard errors are large against their mean, or the pointwise spread is
    large against the mean density, the density needs more probes; if each probe's
    density is still changing with ``steps``, more steps.

    Args:
      objective: ``objective(theta, X, Y) -> scalar``; theta (n,), X (m, d_x), Y (m, d_y).
      probes, steps, grid, sigma: see :func:`slq_spread_from_matvec`.
      seed: seeds the Rademacher probes (``jax.random.PRNGKey(seed)``).

    Example:
      >>> s = slq_probe_spread(objective, theta, X, Y, probes=16, steps=40)  # doctest: +SKIP
      >>> s.moment_mean[0], s.moment_stderr[0]  # tr H / n ± stderr  # doctest: +SKIP
    """
    theta, X, Y = _cast(theta, X, Y)
    n = int(theta.shape[0])
    check_range("seed", seed, 0, MAX_SEED)
    _check_slq_options(probes, steps, MAX_LANCZOS_STEPS, grid, sigma)
    steps = min(int(steps), _max_krylov(n))
    nodes, weights = _hvp_slq(objective, theta, X, Y, int(seed), int(probes), int(steps))
    return _spread_host(np.asarray(nodes), np.asarray(weights), grid, sigma)
