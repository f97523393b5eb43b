"""Matrix-free spectra of a symmetric operator: Lanczos, SLQ densities, Hutchinson traces.

The operator is a function ``matvec(v) -> A v`` on flat vectors of length n (a
Hessian-vector product, usually); A must be symmetric. Everything is written with
``jax.lax`` loops, so it jits and can be traced inside ``jax.lax.scan``.

Lanczos here keeps every Lanczos vector and reorthogonalises each new one against all of
them, a second time whenever the first pass removed more than 1 − 1/√2 of its norm
(the Daniel–Gragg–Kaufman–Stewart test: "twice is enough"), so the Ritz values do not
ghost. When the Krylov space becomes invariant (``β_j`` ≈ 0: the start vector only
touched ``j`` eigenvectors, e.g. a low-rank Hessian or steps > the number of distinct
eigenvalues) the iteration *restarts* with a random vector orthogonal to all previous
ones and records ``β_j = 0``; the tridiagonal matrix then splits into blocks whose
eigenvalues are still exact eigenvalues of A, and further copies of repeated eigenvalues
appear.

:func:`lanczos_extremes` runs a fixed number of steps; :func:`lanczos_extremes_converged`
stops, inside one ``lax.while_loop``, as soon as the wanted Ritz values' error estimates
meet a tolerance.

References:
  Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
  differential and integral operators" (1950). Golub & Van Loan, *Matrix Computations*,
  §10.1 (4th ed.). Ghorbani, Krishnan & Xiao, "An Investigation into Neural Net
  Optimization via Hessian Eigenvalue Density", ICML 2019 (arXiv:1901.10159).
  Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
  smoothing splines" (1989). Daniel, Gragg, Kaufman & Stewart, "Reorthogonalization and
  stable algorithms for updating the Gram–Schmidt QR factorization", Math. Comp. 30
  (1976). Parlett, *The Symmetric Eigenvalue Problem* (1998), §11.7 (error bounds).
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
    "LanczosConvergence",
    "lanczos_start",
    "lanczos_iterate",
    "tridiagonal_matrix",
    "lanczos_extremes",
    "lanczos_extremes_converged",
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


class LanczosConvergence(NamedTuple):
    """Ritz pairs at both ends after Lanczos ran until their error estimates were small.

    ``eigenvalues`` (2k,): the k smallest then the k largest Ritz values, ascending;
    ``eigenvectors`` (n, 2k): the Ritz vectors as columns; ``residuals`` (2k,): the bounds
    ``‖A y − θ y‖ = |β_s s_{s,i}|``; ``errors`` (2k,): the eigenvalue error estimates
    ``min(r, r²/gap)`` (gap: to the nearest other Ritz value); ``steps`` (): the Krylov
    dimension s used; ``converged`` (): whether every error estimate met the tolerance;
    ``alpha``/``beta`` (max_steps,): the tridiagonal T (zeros beyond ``steps``).
    """

    eigenvalues: jax.Array
    eigenvectors: jax.Array
    residuals: jax.Array
    errors: jax.Array
    steps: jax.Array
    converged: jax.Array
    alpha: jax.Array
    beta: jax.Array


_BLOCK = 32  # rows of the Lanczos basis touched per reorthogonalisation block
_DGKS = 0.7071067811865476  # second pass when a pass leaves less than 1/√2 of the norm


def _orthogonalise(basis: jax.Array, w: jax.Array, rows) -> jax.Array:
    """``w`` minus its projection on the first ``rows`` rows of ``basis``.

    Block classical Gram–Schmidt over blocks of ``_BLOCK`` rows, so the cost grows with the
    rows in use, not with the allocated ``max_steps``. A second pass runs when the first
    removed more than 1 − 1/√2 of ``‖w‖`` (Daniel, Gragg, Kaufman & Stewart 1976): then the
    result is orthogonal to working precision ("twice is enough", Kahan–Parlett); a
    Lanczos vector, already nearly orthogonal after the three-term recurrence, usually
    needs one pass.
    """
    n_blocks = (rows + _BLOCK - 1) // _BLOCK

    def block(b, w):
        V = jax.lax.dynamic_slice_in_dim(basis, b * _BLOCK, _BLOCK, axis=0)
        return w - V.T @ (V @ w)

    def one_pass(w):
        return jax.lax.fori_loop(0, n_blocks, block, w)

    before = jnp.linalg.norm(w)
    w = one_pass(w)
    return jax.lax.cond(jnp.linalg.norm(w) < _DGKS * before, one_pass, lambda w: w, w)


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


def lanczos_extremes_converged(matvec: MatVec, v0: jax.Array, *, k: int, max_steps: int,
                               tol: float = 1e-10, rtol: float = 0.0, check_every: int = 5,
                               first_check: int | None = None) -> LanczosConvergence:
    """The k smallest and k largest Ritz pairs, Lanczos stopping once they have converged.

    One jittable ``lax.while_loop``: after ``first_check`` steps (default ``max(2k, 10)``)
    and then every ``check_every`` steps it diagonalises T (padded to ``max_steps``, so the
    shapes are static) and stops when every wanted Ritz value's error estimate
    ``e_i = min(r_i, r_i²/gap_i)`` satisfies ``e_i ≤ max(tol · ‖A‖, rtol · |θ_i|)``
    (r_i the residual bound, gap_i the distance to the nearest other Ritz value; ‖A‖
    estimated by ``max(|θ|, |α_j|, β_j)``), or after ``max_steps`` steps. No host round trip.

    Args:
      matvec: ``v -> A v`` for a symmetric A (n × n).
      v0: start vector (n,), any norm > 0.
      k: pairs wanted at each end (static).
      max_steps: largest Krylov dimension (static), ``2k ≤ max_steps ≤ n``; the memory
        is ``max_steps × n``.
      tol, rtol: stopping tolerances, relative to ‖A‖ and to each |θ_i|.
      check_every: steps between convergence checks (static; a check costs
        O(max_steps²): the eigenvalues of the padded T by bisection, the 2k wanted
        eigenvectors by inverse iteration, no dense ``eigh``).
      first_check: steps before the first check (static).

    Returns:
      :class:`LanczosConvergence`. ``errors`` bound the eigenvalue errors when the Ritz
      values are isolated (Parlett, *The Symmetric Eigenvalue Problem*, §11.7); ``residuals``
      always bound the distance to some eigenvalue.
    """
    n = v0.shape[0]
    if not 2 * k <= max_steps <= n:
        raise ValueError(f"need 2k <= max_steps <= n, got k={k}, max_steps={max_steps}, n={n}")
    if check_every < 1:
        raise ValueError(f"check_every must be at least 1, got {check_every}")
    first = min(max_steps, max(2 * k, 10) if first_check is None else max(2 * k, first_check))
    starts = jnp.asarray(_host_gaussian(max_steps * 2 * k, 2).reshape(2 * k, max_steps),
                         v0.dtype)

    def check(state: LanczosState, steps):
        theta, idx, X = _extreme_ritz_pairs(state.alpha, state.beta, steps, k, starts)
        values = theta[idx]
        residuals = jnp.abs(state.beta[steps - 1] * X[:, steps - 1])
        rows = jnp.arange(max_steps)
        others = jnp.abs(values[:, None] - theta[None, :])
        others = jnp.where((rows[None, :] < steps) & (rows[None, :] != idx[:, None]), others,
                           jnp.inf)
        gap = jnp.min(others, axis=1)
        errors = jnp.minimum(residuals, jnp.where(gap > 0, residuals**2 / gap, jnp.inf))
        scale = jnp.maximum(jnp.max(jnp.abs(values)), state.scale)
        finite = jnp.all(jnp.isfinite(state.alpha)) & jnp.all(jnp.isfinite(state.beta))
        done = jnp.all(errors <= jnp.maximum(tol * scale, rtol * jnp.abs(values)))
        return (values, X, residuals, errors), done, ~finite

    state = lanczos_iterate(matvec, lanczos_start(v0, max_steps), 0, first)
    ritz, done, broken = check(state, first)

    def cond(carry):
        _, steps, _, done, broken = carry
        return (steps < max_steps) & ~done & ~broken

    def body(carry):
        state, steps, _, _, _ = carry
        stop = jnp.minimum(steps + check_every, max_steps)
        state = lanczos_iterate(matvec, state, steps, stop)
        return (state, stop, *check(state, stop))

    carry = (state, jnp.asarray(first), ritz, done, broken)
    state, steps, ritz, done, _ = jax.lax.while_loop(cond, body, carry)
    values, X, residuals, errors = ritz
    vectors = state.basis[:max_steps].T @ X.T
    return LanczosConvergence(values, vectors, residuals, errors, steps, done,
                              state.alpha, state.beta)


def _padded_tridiagonal(alpha: jax.Array, beta: jax.Array, steps):
    """``T_steps`` padded to ``len(alpha)`` by a decoupled diagonal above its spectrum.

    Returns ``(a, b)``: diagonal and couplings (b[i] couples rows i and i + 1); the
    padding rows hold ``2‖T‖₁ + 1`` (Gershgorin) and zero couplings, so T_steps'
    eigenvalues are the ``steps`` smallest of the padded matrix.
    """
    rows = jnp.arange(alpha.shape[0])
    a = jnp.where(rows < steps, alpha, 0.0)
    b = jnp.where(rows < steps - 1, beta, 0.0)
    bound = jnp.max(jnp.abs(a)) + 2.0 * jnp.max(jnp.abs(b))
    return jnp.where(rows < steps, a, 2.0 * bound + 1.0), b


def _extreme_ritz_pairs(alpha, beta, steps, k: int, starts):
    """The k smallest and k largest eigenpairs of T_steps, without LAPACK's ``syevd``.

    Eigenvalues by bisection (``jax.scipy.linalg.eigh_tridiagonal``), eigenvectors by two
    steps of inverse iteration from ``starts`` (2k, max_steps) with the vectors of
    eigenvalues closer than √ε‖T‖ orthogonalised against each other (as LAPACK's
    ``stein``). Returns ``(theta, idx, vectors)``: every eigenvalue of the padded matrix
    (max_steps,) ascending, the indices (2k,) of the wanted ones and their unit
    eigenvectors (2k, max_steps), zero beyond ``steps``.

    A dense ``eigh`` per check would call the multithreaded BLAS, which on a busy 2-core
    machine can take 100× longer than this.
    """
    from jax.scipy.linalg import eigh_tridiagonal

    a, b = _padded_tridiagonal(alpha, beta, steps)
    theta = eigh_tridiagonal(a, b[:-1], eigvals_only=True)
    idx = jnp.concatenate([jnp.arange(k), steps - k + jnp.arange(k)])
    values = theta[idx]
    size = a.shape[0]
    used = jnp.arange(size) < steps
    dl = jnp.concatenate([jnp.zeros(1, b.dtype), b[:-1]])
    du = jnp.concatenate([b[:-1], jnp.zeros(1, b.dtype)])
    eps = jnp.finfo(a.dtype).eps
    norm = jnp.max(jnp.abs(a)) + 2.0 * jnp.max(jnp.abs(b))     # ≥ ‖T‖ (Gershgorin)
    norm = jnp.where(norm > 0, norm, 1.0)                         # T = 0: any unit shift
    close = jnp.abs(values[:, None] - values[None, :]) < jnp.sqrt(eps) * norm
    shifted = a[None, :] - (values - 4 * eps * norm)[:, None]   # nonsingular, still close
    X = jnp.where(used[None, :], starts, 0.0)
    for _ in range(2):
        X = jax.lax.linalg.tridiagonal_solve(
            jnp.broadcast_to(dl, (2 * k, size)), shifted,
            jnp.broadcast_to(du, (2 * k, size)), X[:, :, None], perturb_singular=True)[..., 0]
        rows = []
        for i in range(2 * k):           # Gram–Schmidt within clusters, then normalise
            x = X[i]
            for j, y in enumerate(rows):
                x = x - jnp.where(close[i, j], jnp.vdot(y, x), 0.0) * y
            rows.append(x / jnp.linalg.norm(x))
        X = jnp.stack(rows)
    return theta, idx, X


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
