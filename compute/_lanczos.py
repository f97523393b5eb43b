"""Matrix-free spectra of a symmetric operator: Lanczos, SLQ densities, Hutchinson traces.

The operator is a function ``matvec(v) -> A v`` on flat vectors of length n (a
Hessian-vector product, usually); A must be symmetric. Everything is written with
``jax.lax`` loops, so it jits and can be traced inside ``jax.lax.scan``.

Lanczos here keeps every Lanczos vector and reorthogonalises each new one against all of
them, twice ("twice is enough"), so the Ritz values do not ghost. When the Krylov space
becomes invariant (``β_j`` ≈ 0: the start vector only touched ``j`` eigenvectors, e.g. a
low-rank Hessian or steps > the number of distinct eigenvalues) the iteration *restarts*
with a random vector orthogonal to all previous ones and records ``β_j = 0``; the
tridiagonal matrix then splits into blocks whose eigenvalues are still exact eigenvalues
of A, and further copies of repeated eigenvalues appear.

References:
  Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
  differential and integral operators" (1950). Golub & Van Loan, *Matrix Computations*,
  §10.1 (4th ed.). Ghorbani, Krishnan & Xiao, "An Investigation into Neural Net
  Optimization via Hessian Eigenvalue Density", ICML 2019 (arXiv:1901.10159).
  Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
  smoothing splines" (1989).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LanczosState",
    "LanczosResult",
    "lanczos_start",
    "lanczos_iterate",
    "tridiagonal_matrix",
    "lanczos_extremes",
    "slq_quadrature",
    "gaussian_density",
    "hutchinson_trace",
]

MatVec = Callable[[jax.Array], jax.Array]


class LanczosState(NamedTuple):
    """The state of a resumable Lanczos run with room for ``max_steps`` vectors.

    ``basis`` (≥ max_steps, n): the Lanczos vectors as rows, zeros where not computed yet;
    ``alpha`` (max_steps,): the diagonal of T; ``beta`` (max_steps,): ``beta[j]`` couples
    ``v_j`` and ``v_{j+1}`` (0 at a restart; ``beta[j]`` of the last step is the residual
    norm); ``v``/``v_prev`` (n,): the next and the current vector; ``scale``: the running
    estimate ``max(|α|, β)`` of ‖A‖; ``restart`` (n,): a Gaussian vector whose cyclic
    shifts seed the restarts after a breakdown (no PRNG inside the loop: faster to compile).
    """

    basis: jax.Array
    alpha: jax.Array
    beta: jax.Array
    v: jax.Array
    v_prev: jax.Array
    scale: jax.Array
    restart: jax.Array


class LanczosResult(NamedTuple):
    """Ritz pairs at both ends of the spectrum after a fixed number of steps.

    ``eigenvalues`` (2k,): the k smallest then the k largest Ritz values, ascending;
    ``eigenvectors`` (n, 2k): the Ritz vectors as columns; ``residuals`` (2k,): the
    Lanczos bounds ``‖A y − θ y‖ = |β_s s_{s,i}|``; ``alpha``/``beta``: the tridiagonal T.
    """

    eigenvalues: jax.Array
    eigenvectors: jax.Array
    residuals: jax.Array
    alpha: jax.Array
    beta: jax.Array


_BLOCK = 32  # rows of the Lanczos basis touched per reorthogonalisation block


def _orthogonalise(basis: jax.Array, w: jax.Array, rows) -> jax.Array:
    """``w`` minus its projection on the first ``rows`` rows of ``basis``, done twice.

    Block modified Gram–Schmidt over blocks of ``_BLOCK`` rows, so the cost grows with the
    rows in use, not with the allocated ``max_steps``; twice is enough (Kahan–Parlett).
    """
    n_blocks = (rows + _BLOCK - 1) // _BLOCK

    def block(b, w):
        V = jax.lax.dynamic_slice_in_dim(basis, b * _BLOCK, _BLOCK, axis=0)
        return w - V.T @ (V @ w)

    w = jax.lax.fori_loop(0, n_blocks, block, w)
    return jax.lax.fori_loop(0, n_blocks, block, w)


def _host_gaussian(n: int, seed: int = 0) -> np.ndarray:
    """A fixed Gaussian vector drawn by numpy (embedded as a constant when traced: a JAX
    PRNG kernel costs seconds of XLA compilation on CPU)."""
    return np.random.default_rng(seed).standard_normal(n)


def lanczos_start(v0: jax.Array, max_steps: int, restart: jax.Array | None = None
                  ) -> LanczosState:
    """A fresh :class:`LanczosState` from the start vector ``v0`` (n,) (any norm > 0).

    ``restart`` (n,): the vector whose shifts seed restarts (default: a fixed Gaussian).
    """
    n = v0.shape[0]
    dtype = v0.dtype
    if restart is None:
        restart = _host_gaussian(n)
    v = v0 / jnp.linalg.norm(v0)
    rows = -(-max_steps // _BLOCK) * _BLOCK  # whole blocks, so no slice runs off the end
    return LanczosState(
        basis=jnp.zeros((rows, n), dtype),
        alpha=jnp.zeros((max_steps,), dtype),
        beta=jnp.zeros((max_steps,), dtype),
        v=v,
        v_prev=jnp.zeros_like(v),
        scale=jnp.zeros((), dtype),
        restart=jnp.asarray(restart, dtype),
    )


def lanczos_iterate(matvec: MatVec, state: LanczosState, start, stop) -> LanczosState:
    """Run Lanczos steps ``start ≤ j < stop`` (Python ints or traced scalars).

    Step j stores ``v_j``, computes ``w = A v_j − α_j v_j − β_{j−1} v_{j−1}``, removes
    every earlier direction from ``w`` (full reorthogonalisation) and normalises it into
    ``v_{j+1}``. If ``β_j = ‖w‖ ≤ 1000 ε ‖A‖`` the Krylov space is invariant: ``β_j`` is
    recorded as 0 and ``v_{j+1}`` is a random unit vector orthogonal to all ``v_i``
    (a cyclic shift of ``state.restart``, orthogonalised).
    Requires ``stop ≤ min(max_steps, n)``.
    """
    eps = jnp.finfo(state.v.dtype).eps

    def body(j, s: LanczosState) -> LanczosState:
        basis = s.basis.at[j].set(s.v)
        w = matvec(s.v)
        a = jnp.vdot(s.v, w)
        b_prev = jnp.where(j > 0, s.beta[j - 1], 0.0)
        w = w - a * s.v - b_prev * s.v_prev
        w = _orthogonalise(basis, w, j + 1)
        b = jnp.linalg.norm(w)
        scale = jnp.maximum(s.scale, jnp.maximum(jnp.abs(a), b))
        broke = b <= 1e3 * eps * scale

        def restart(_):
            r = jnp.roll(s.restart, j)  # a fresh generic vector, no PRNG in the loop
            r = _orthogonalise(basis, r, j + 1)
            return r / jnp.maximum(jnp.linalg.norm(r), jnp.finfo(r.dtype).tiny)

        v_next = jax.lax.cond(broke, restart, lambda _: w / b, None)
        b = jnp.where(broke, 0.0, b)
        return LanczosState(basis, s.alpha.at[j].set(a), s.beta.at[j].set(b), v_next, s.v,
                            scale, s.restart)

    return jax.lax.fori_loop(start, stop, body, state)


def tridiagonal_matrix(alpha: jax.Array, beta: jax.Array) -> jax.Array:
    """The Lanczos matrix T (s, s) from ``alpha`` (s,) and the couplings ``beta[:s−1]``."""
    s = alpha.shape[0]
    off = beta[: s - 1]
    return jnp.diag(alpha) + jnp.diag(off, 1) + jnp.diag(off, -1)


def lanczos_extremes(matvec: MatVec, v0: jax.Array, *, k: int, steps: int) -> LanczosResult:
    """The k smallest and k largest Ritz pairs after ``steps`` Lanczos steps (jittable).

    Args:
      matvec: ``v -> A v`` for a symmetric A (n × n).
      v0: start vector (n,), e.g. Gaussian.
      k: pairs wanted at each end (static); ``2k ≤ steps``.
      steps: Krylov dimension (static), ``steps ≤ n``.

    Returns:
      :class:`LanczosResult`. Extreme Ritz values converge first; the error of each is
      bounded by its residual (and by residual²/gap for an isolated eigenvalue).
    """
    n = v0.shape[0]
    if not 2 * k <= steps <= n:
        raise ValueError(f"need 2k <= steps <= n, got k={k}, steps={steps}, n={n}")
    state = lanczos_iterate(matvec, lanczos_start(v0, steps), 0, steps)
    theta, S = jnp.linalg.eigh(tridiagonal_matrix(state.alpha, state.beta))
    idx = jnp.concatenate([jnp.arange(k), jnp.arange(steps - k, steps)])
    vectors = state.basis[:steps].T @ S[:, idx]
    residuals = jnp.abs(state.beta[steps - 1] * S[steps - 1, idx])
    return LanczosResult(theta[idx], vectors, residuals, state.alpha, state.beta)


def _rademacher(key: jax.Array, shape, dtype) -> jax.Array:
    return jax.random.rademacher(key, shape, dtype=jnp.int8).astype(dtype)


def slq_quadrature(matvec: MatVec, n: int, *, probes: int, steps: int, key: jax.Array,
                   dtype=jnp.float64) -> tuple[jax.Array, jax.Array]:
    """Gauss quadrature nodes and weights of the spectral measure, one set per probe.

    For each Rademacher probe ``z`` (normalised), ``steps`` Lanczos steps give T = S Θ Sᵀ;
    the measure ``Σ_i w_i δ(t − θ_i)`` with ``w_i = S_{0i}²`` (Σ w_i = 1) matches the
    first 2·steps moments of ``(1/‖z‖²) Σ_j (u_jᵀ z)² δ(t − λ_j)``, whose expectation is
    the spectral density ``(1/n) Σ_j δ(t − λ_j)``. Probes run one after another
    (``lax.map``) so memory stays ``steps × n``.

    Returns:
      ``(nodes, weights)``, each (probes, steps).

    References:
      Ghorbani, Krishnan & Xiao (2019), §3 (stochastic Lanczos quadrature); Ubaru, Chen &
      Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature" (2017).
    """
    def one(key_i):
        z = _rademacher(key_i, (n,), dtype)
        state = lanczos_iterate(matvec, lanczos_start(z, steps), 0, steps)
        theta, S = jnp.linalg.eigh(tridiagonal_matrix(state.alpha, state.beta))
        return theta, S[0] ** 2

    return jax.lax.map(one, jax.random.split(key, probes))


def gaussian_density(nodes, weights, *, sigma: float | None = None, grid=512,
                     relative_sigma: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Smooth a discrete spectral measure with a Gaussian: ``φ(t) = mean_p Σ_i w_pi g_σ(t − θ_pi)``.

    Args:
      nodes, weights: (probes, s) arrays (or (s,)) of eigenvalue nodes and weights that
        sum to 1 per probe.
      sigma: Gaussian width in eigenvalue units; default ``relative_sigma`` × the range
        of the nodes (or 1% of their magnitude, or 0.01, when the range is 0).
      grid: number of grid points (spanning the nodes ± 5σ), or an explicit 1-D grid.

    Returns:
      ``(grid, density)`` as float64 numpy arrays; the density integrates to 1 (up to
      the grid's resolution) on the default grid.
    """
    nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        width = hi - lo
        if width <= 0:
            width = max(abs(lo), abs(hi)) or 1.0
        sigma = relative_sigma * width
    sigma = float(sigma)
    if np.ndim(grid) == 0:
        t = np.linspace(lo - 5 * sigma, hi + 5 * sigma, int(grid))
    else:
        t = np.asarray(grid, dtype=np.float64)
    z = (t[:, None, None] - nodes[None]) / sigma
    g = np.exp(-0.5 * z * z) / (sigma * np.sqrt(2 * np.pi))
    density = np.einsum("tps,ps->t", g, weights) / nodes.shape[0]
    return t, density


def hutchinson_trace(matvec: MatVec, n: int, *, probes: int, key: jax.Array,
                     dtype=jnp.float64, batch_size: int | None = None
                     ) -> tuple[jax.Array, jax.Array]:
    """Hutchinson's estimate of tr(A) with Rademacher probes, and its standard error.

    ``tr(A) ≈ mean_p z_pᵀ A z_p`` with ``z_p ∈ {±1}ⁿ``; the variance of one sample is
    ``2 Σ_{i≠j} A_ij²`` (the diagonal is estimated exactly).

    Returns:
      ``(estimate, stderr)`` with ``stderr = std(samples) / √probes``.
    """
    Z = _rademacher(key, (probes, n), dtype)
    samples = jax.lax.map(lambda z: jnp.vdot(z, matvec(z)), Z, batch_size=batch_size)
    stderr = jnp.std(samples, ddof=1) / jnp.sqrt(probes) if probes > 1 else jnp.nan
    return jnp.mean(samples), jnp.asarray(stderr, dtype)
