"""Morse-index maps: the number of negative Hessian eigenvalues at every cell of a plane.

At each grid point ``θ(α, β) = center + α·d1 + β·d2`` the Morse index ``#{λ < −τ}`` of the
Hessian ``H = ∇²L(θ)`` is computed in one of two ways, all cells of the grid in one
compiled call (``vmap`` over a chunk of cells inside ``lax.map(batch_size=…)``, the chunk
size derived from a memory budget; the Lanczos estimate runs one cell after another on a
CPU, where that was faster):

* ``"exact"`` (models up to ``MAX_PARAMS_INDEX_MAP`` parameters): the Hessian is built by
  forward-over-reverse AD (``jax.hessian``) and diagonalised (``eigvalsh``).
* ``"lanczos"`` (larger models): stochastic Lanczos quadrature (SLQ) with the
  Hessian-vector product. For each Rademacher probe ``z`` (``zᵀz = n``), ``s`` Lanczos
  steps give Gauss nodes ``θ_i`` and weights ``w_i`` of the measure
  ``μ_z = (1/n) Σ_j (u_jᵀz)² δ(λ_j)``; ``n Σ_i w_i [θ_i < −τ]`` approximates
  ``zᵀ 1{H < −τ} z``, whose expectation over ``z`` is the index (Hutchinson). The map
  shows the mean over probes, its standard error, and λ_min/λ_max as the extreme Ritz
  values (bounds: every Ritz value lies in ``[λ_min, λ_max]``, extreme ones converge
  first).

The tolerance rule is :mod:`compute._critical`'s: ``τ = r · max|λ|`` per cell (the Ritz
values' ``max|θ|`` for Lanczos), with ``r`` = :func:`compute._critical.default_tolerance`
(1e-6 in float64) for the exact map, so rounding noise around zero modes (symmetries, the
origin of a deep linear net) does not count as negative curvature. The Lanczos estimate
uses ``r = 1e-2`` by default: a network Hessian crowds many eigenvalues (often a null
space) within 1e-2·max|λ| of 0, which a few dozen Gauss nodes cannot split, so a count at
1e-6 would be unresolved (its quadrature bracket, returned, is then most of n wide).

:func:`coarse_to_fine_levels` picks grid sizes for streaming a map: a coarse map first
(about 11 × 11 cells, shown at once), then finer ones, nested where the sizes allow it so
a finer grid contains the coarser grid's points.

References:
  Milnor, "Morse Theory" (1963) for the index of a critical point; Dauphin et al. 2014,
  "Identifying and attacking the saddle point problem" (arXiv:1406.2572) for the index of
  points of neural-network losses. Ubaru, Chen & Saad, "Fast estimation of tr(f(A)) via
  stochastic Lanczos quadrature" (2017); Ghorbani, Krishnan & Xiao 2019 (arXiv:1901.10159)
  for SLQ of network Hessians. Golub & Meurant, *Matrices, Moments and Quadrature with
  Applications* (2010), §6 (Gauss quadrature from Lanczos; the Chebyshev–Markov–Stieltjes
  inequalities behind the quadrature bound).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from compute._critical import default_tolerance
from compute._errors import InputError
from compute._lanczos import slq_quadrature
from compute._limits import (
    MAX_GRID,
    MAX_INDEX_MAP_LANCZOS_WORK,
    MAX_INDEX_MAP_WORK,
    MAX_LANCZOS_STEPS,
    MAX_PARAMS,
    MAX_PARAMS_INDEX_MAP,
    MAX_SEED,
    MAX_SLQ_PROBES,
    MEMORY_BUDGET_BYTES,
    check_int,
)
from compute._losses import flat_objective
from compute._models import ModelSpec
from compute._surface import _check_budget, _check_problem, _coordinates

__all__ = [
    "INDEX_MAP_METHODS",
    "MAX_PARAMS_INDEX_MAP",
    "MAX_INDEX_MAP_LANCZOS_WORK",
    "MAX_INDEX_MAP_WORK",
    "coarse_to_fine_levels",
    "lanczos_index_map_work",
    "morse_index_map",
]

INDEX_MAP_METHODS = ("auto", "exact", "lanczos")
DEFAULT_LANCZOS_STEPS = 64   # Gauss nodes per probe (capped at n)
DEFAULT_PROBES = 8           # Rademacher probes per cell
# Default relative threshold of the Lanczos estimate: 1e-2·max|θ|. On a 2-20-20-2 tanh MLP
# (522 parameters, two_moons, m = 200) 38–48% of the eigenvalues lie within 1e-8·max|λ| of 0
# and more within 1e-2: with the exact path's 1e-6 the 64-node estimate was off by up to
# 2.2x at 4 cells (brackets ~360 wide); at 1e-2 within 5 of the exact counts 61–77
# (brackets 17–53 wide).
LANCZOS_RELATIVE_TOLERANCE = 1e-2

# One exact Hessian and eigensolve per grid cell: the model must be much smaller than for a
# single exact spectrum (a 201 × 201 grid is 40 401 of them).
# Cells per chunk are also capped so one chunk's working set (by the generous per-cell
# estimate below) stays near this size: on the 2-core CPU (74-parameter MLP, m = 200) the
# Hessians ran 1.5x faster in chunks of 8 cells than of 62.
_CHUNK_TARGET_BYTES = 64 * 2**20
_COARSEST = 11          # points per side of the first, coarse map
# Backends where the Lanczos kernel runs cells one after another rather than vmapped chunks.
_SEQUENTIAL_LANCZOS_PLATFORMS = ("cpu",)


def morse_index_map(spec: ModelSpec, loss: str, center, d1, d2, alphas, betas, X, Y, *,
                    method: str = "auto", lanczos_steps: int | None = None,
                    probes: int = DEFAULT_PROBES, seed: int = 0, tol: float | None = None,
                    rel_tol: float | None = None, memory_budget: int = MEMORY_BUDGET_BYTES
                    ) -> dict[str, np.ndarray | str | float]:
    """Morse index, λ_min and λ_max of the Hessian at every cell of a plane (float64).

    Args:
      spec, loss: the network and the loss name.
      center, d1, d2: flat ``(n,)`` vectors; the cell ``(i, j)`` is
        ``center + alphas[j]·d1 + betas[i]·d2``.
      alphas, betas: 1-D grid coordinates, at most ``MAX_GRID`` each.
      X, Y: data ``(m, d_x)``, ``(m, d_y)``.
      method: ``"exact"`` (dense Hessian and ``eigvalsh`` per cell, n ≤
        ``MAX_PARAMS_INDEX_MAP``), ``"lanczos"`` (stochastic Lanczos quadrature, n ≤
        ``MAX_PARAMS``) or ``"auto"`` (exact up to ``MAX_PARAMS_INDEX_MAP``, Lanczos above).
      lanczos_steps: Lanczos steps s per probe (Gauss nodes), ``1 ≤ s ≤ min(n,
        MAX_LANCZOS_STEPS)``; default ``min(n, DEFAULT_LANCZOS_STEPS)``. Lanczos only.
      probes: Rademacher probes P per cell, 1 to ``MAX_SLQ_PROBES`` (the same probes at
        every cell, so the map's noise is smooth across cells). Lanczos only.
      seed: seed of the probes. Lanczos only.
      tol: absolute eigenvalue tolerance τ (λ < −τ counts as negative). Default per cell
        ``τ = r · max|λ|`` (Lanczos: ``max|θ|`` over the cell's Ritz values).
      rel_tol: that ``r`` (used when ``tol`` is None): default ``default_tolerance(float64)``
        = 1e-6 for ``"exact"`` (``compute._critical``'s rule) and
        ``LANCZOS_RELATIVE_TOLERANCE`` = 1e-2 for ``"lanczos"``: a network Hessian has a
        crowd of eigenvalues within 1e-2·max|λ| of 0 (often an exact null space) that s
        Gauss nodes cannot split, so a smaller threshold is not resolved (see
        ``index_low``/``index_high``).
      memory_budget: bytes the compiled call may use; sets the cells per chunk.

    Returns:
      dict with ``method`` (``"exact"`` or ``"lanczos"``, the one used),
      ``relative_tolerance`` (the r used; NaN when ``tol`` was given), ``probes`` and
      ``lanczos_steps`` (0 for ``"exact"``), and ``(len(betas), len(alphas))`` arrays:

      * ``index_estimate`` (float64): exact: the count ``#{λ < −τ}``. Lanczos: with Gauss
        nodes ``θ_pi`` and weights ``w_pi`` (``Σ_i w_pi = 1``) of probe ``z_p``,
        ``(n/P) Σ_p Σ_i w_pi [θ_pi < −τ]``. Each probe's term is the s-node Gauss
        quadrature of ``z_pᵀ 1{H < −τ} z_p``, whose expectation over Rademacher ``z_p``
        is the index. The quadrature is exact when the Krylov space is exhausted (s ≥ the
        number of distinct eigenvalues z_p touches, e.g. s = n): then the estimate is
        unbiased. With fewer steps it estimates the expectation of the quadrature, which
        differs from the index by at most the bracket below (small when few eigenvalues
        lie near −τ, large when −τ falls in a crowd).
      * ``index`` (int64): the estimate rounded (the exact count for ``"exact"``); −1
        where the Hessian (or a Ritz value) is not finite.
      * ``index_stderr`` (float64): the standard error of ``index_estimate`` over the
        probes, ``std_p / √P`` (NaN for one probe; 0 for ``"exact"``).
      * ``index_low``, ``index_high`` (float64): the quadrature bracket. With ``k_p`` nodes
        below −τ, the Chebyshev–Markov–Stieltjes inequalities put each probe's
        ``z_pᵀ 1{H < −τ} z_p`` in ``n·[G_p − w_{p,k_p}, G_p + w_{p,k_p+1}]`` (``G_p``: its
        quadrature term / n); these are the means over probes, so the Hutchinson estimate
        ``(1/P) Σ_p z_pᵀ 1{H < −τ} z_p`` (unbiased, same probes) lies between them
        (both equal the count for ``"exact"``).
      * ``lambda_min``, ``lambda_max`` (float64, NaN where not finite): exact extremes, or
        for Lanczos the smallest and largest Ritz values over the probes (upper and lower
        bounds of λ_min and λ_max, tight when the extremes have converged).
      * ``fraction``: ``index_estimate / n`` (NaN where not finite).

    Raises:
      InputError: bad shapes or values, an unknown method, more than
        ``MAX_PARAMS_INDEX_MAP`` parameters for ``"exact"`` (``MAX_PARAMS`` for Lanczos),
        or more than ``MAX_INDEX_MAP_WORK`` (``MAX_INDEX_MAP_LANCZOS_WORK``) estimated
        work.

    References:
      Ubaru, Chen & Saad (2017); Golub & Meurant (2010), §6.
    """
    n = spec.n_params
    if method not in INDEX_MAP_METHODS:
        raise InputError(f"the index-map method must be one of {', '.join(INDEX_MAP_METHODS)}, "
                         f"got {method!r}.")
    if method == "auto":
        method = "exact" if n <= MAX_PARAMS_INDEX_MAP else "lanczos"
    if method == "exact" and n > MAX_PARAMS_INDEX_MAP:
        raise InputError(f"the model has {n} parameters; the exact Morse-index map computes a "
                         f"Hessian per cell and is limited to {MAX_PARAMS_INDEX_MAP}: use "
                         "method 'lanczos' (an estimate) or a smaller model.")
    if method == "lanczos" and n > MAX_PARAMS:
        raise InputError(f"the model has {n} parameters; the Morse-index map is limited to "
                         f"{MAX_PARAMS}: use a smaller model.")
    alphas = _coordinates(alphas, "alphas", MAX_GRID)
    betas = _coordinates(betas, "betas", MAX_GRID)
    center, d1, d2, X, Y = _check_problem(spec, loss, center, d1, d2, X, Y)
    budget = _check_budget(memory_budget)
    for name, value in (("the eigenvalue tolerance", tol), ("the relative tolerance", rel_tol)):
        if value is not None and not (isinstance(value, (int, float, np.floating))
                                      and not isinstance(value, bool)
                                      and 0 <= value < math.inf):
            raise InputError(f"{name} must be a finite number ≥ 0, got {value!r}.")
    if method == "lanczos":
        steps = min(n, DEFAULT_LANCZOS_STEPS) if lanczos_steps is None else lanczos_steps
        steps = check_int("the number of Lanczos steps", steps, 1,
                           min(n, MAX_LANCZOS_STEPS), "(and at most the number of parameters)")
        probes = check_int("the number of probes", probes, 1, MAX_SLQ_PROBES)
        seed = check_int("the seed", seed, 0, MAX_SEED)
    else:
        steps = probes = 0
    cells = alphas.size * betas.size
    m = X.shape[0]
    if method == "exact":
        work = float(cells) * n * n * (n + m)
        if work > MAX_INDEX_MAP_WORK:
            raise InputError(f"this index map needs about {work:.1e} operations (grid cells × "
                             f"n² × (n + m)); the limit is {MAX_INDEX_MAP_WORK:.0e}: use a "
                             "coarser grid, fewer samples or a smaller model.")
        # Per cell: n forward-over-reverse products (activations ∝ the data), a few n × n.
        per_cell = 8 * (n * (16 * (X.size + Y.size) + 8 * n) + 6 * n * n)
    else:
        work = lanczos_index_map_work(cells, probes, steps, n, m)
        if work > MAX_INDEX_MAP_LANCZOS_WORK:
            raise InputError(f"this index map needs about {work:.1e} operations (grid cells × "
                             f"probes × steps × n × (m + steps)); the limit is "
                             f"{MAX_INDEX_MAP_LANCZOS_WORK:.0e}: use a coarser grid, fewer "
                             "probes or steps, fewer samples or a smaller model.")
        # Per cell (probes run one after another): the Lanczos basis (whole blocks of 32
        # rows), a product's activations and a few n-vectors, the nodes and weights.
        rows = -(-steps // 32) * 32
        per_cell = 8 * (rows * n + 16 * (X.size + Y.size) + 16 * n + 4 * probes * steps
                        + 2 * steps * steps)
        if per_cell > budget:
            raise InputError(f"one cell of this index map needs about {per_cell / 2**20:.0f} "
                             f"MiB (steps × n numbers of Lanczos basis); the memory budget is "
                             f"{budget / 2**20:.0f} MiB: use fewer Lanczos steps or samples.")
    batch = int(max(1, min(cells, budget // per_cell, _CHUNK_TARGET_BYTES // per_cell)))
    if method == "lanczos" and jax.default_backend() in _SEQUENTIAL_LANCZOS_PLATFORMS:
        batch = 1  # one cell at a time, no vmap: faster there (see _slq_index_kernel)
    n_chunks = -(-cells // batch)
    batch = -(-cells // n_chunks)                      # even chunks, least padding
    A, B = np.meshgrid(alphas, betas)
    points = np.zeros((n_chunks * batch, 2))           # padded: one compiled loop body
    points[:cells] = np.stack([A.ravel(), B.ravel()], axis=1)
    ab = jnp.asarray(points, jnp.float64)
    if rel_tol is None:
        rel_tol = default_tolerance(jnp.float64) if method == "exact" \
            else LANCZOS_RELATIVE_TOLERANCE
    abs_tol, rel_tol = (0.0, float(rel_tol)) if tol is None else (float(tol), 0.0)
    f64 = functools.partial(jnp.asarray, dtype=jnp.float64)
    args = (f64(center), f64(d1), f64(d2), ab, f64(X), f64(Y), f64(abs_tol), f64(rel_tol))
    if method == "exact":
        count, lo, hi = _index_kernel(spec, loss)(*args, batch_size=batch)
        low = high = estimate = count
        stderr = jnp.zeros_like(lo)
    else:
        estimate, stderr, low, high, lo, hi = _slq_index_kernel(spec, loss)(
            *args, jax.random.PRNGKey(seed), probes=probes, steps=steps, batch_size=batch)
    shape = (betas.size, alphas.size)
    estimate, stderr, low, high, lo, hi = (
        np.asarray(a, np.float64)[:cells].reshape(shape)
        for a in (estimate, stderr, low, high, lo, hi))
    finite = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(estimate)
    nan = lambda a: np.where(finite, a, np.nan)
    return {
        "method": method,
        "relative_tolerance": rel_tol if tol is None else math.nan,
        "probes": probes,
        "lanczos_steps": steps,
        "index": np.where(finite, np.rint(np.where(finite, estimate, 0.0)), -1).astype(np.int64),
        "index_estimate": nan(estimate),
        "index_stderr": nan(stderr),
        "index_low": nan(low),
        "index_high": nan(high),
        "lambda_min": nan(lo),
        "lambda_max": nan(hi),
        "fraction": nan(estimate) / n,
    }


def lanczos_index_map_work(cells: int, probes: int, steps: int, n: int, m: int) -> float:
    """Operations of a Lanczos index map: ``cells × probes × steps × n × (m + steps)``.

    Each Lanczos step is a Hessian-vector product (∝ m·n multiply-adds for a network on m
    samples) plus a full reorthogonalisation against the earlier vectors (∝ steps·n).
    """
    return float(cells) * probes * steps * n * (m + steps)


@functools.lru_cache(maxsize=32)
def _index_kernel(spec: ModelSpec, loss: str):
    """The jitted exact grid kernel of one (model, loss): one compilation per grid/chunk
    shape.

    ``kernel(center, d1, d2, ab (P, 2), X, Y, abs_tol, rel_tol, batch_size=B)`` returns
    ``(count, λ_min, λ_max)``, each ``(P,)``, with ``τ = abs_tol + rel_tol · max|λ|``.
    """
    objective = flat_objective(spec, loss)
    hessian = jax.hessian(objective)

    def kernel(center, d1, d2, ab, X, Y, abs_tol, rel_tol, batch_size):
        def cell(point):
            H = hessian(center + point[0] * d1 + point[1] * d2, X, Y)
            lam = jnp.linalg.eigvalsh(0.5 * (H + H.T))
            tau = abs_tol + rel_tol * jnp.max(jnp.abs(lam))
            return jnp.sum(lam < -tau), lam[0], lam[-1]

        return jax.lax.map(cell, ab, batch_size=batch_size)

    return jax.jit(kernel, static_argnames=("batch_size",))


@functools.lru_cache(maxsize=32)
def _slq_index_kernel(spec: ModelSpec, loss: str):
    """The jitted stochastic-Lanczos-quadrature grid kernel of one (model, loss).

    ``kernel(center, d1, d2, ab (C, 2), X, Y, abs_tol, rel_tol, key, probes=P, steps=s,
    batch_size=B)`` returns ``(estimate, stderr, low, high, θ_min, θ_max)``, each
    ``(C,)``: per cell the mean over probes of ``n Σ_i w_i [θ_i < −τ]``, its standard
    error, the mean Chebyshev–Markov–Stieltjes bracket, and the extreme Ritz values, with
    ``τ = abs_tol + rel_tol · max|θ|``. ``batch_size=1`` runs the cells one after another
    with no ``vmap``: on the 2-core CPU (522 parameters, m = 200) a vmapped chunk of 9 cells
    took 1.6x as long as 9 cells in turn (batched small matmuls, and the Lanczos restart's
    ``lax.cond`` turns into a select that always runs both branches).
    """
    objective = flat_objective(spec, loss)
    n = spec.n_params
    gradient = jax.grad(objective)

    def kernel(center, d1, d2, ab, X, Y, abs_tol, rel_tol, key, probes, steps, batch_size):
        def cell(point):
            theta = center + point[0] * d1 + point[1] * d2
            hvp = lambda v: jax.jvp(lambda t: gradient(t, X, Y), (theta,), (v,))[1]
            nodes, weights = slq_quadrature(hvp, n, probes=probes, steps=steps, key=key,
                                            dtype=theta.dtype)           # (P, s) each
            tau = abs_tol + rel_tol * jnp.max(jnp.abs(nodes))
            below = nodes < -tau                   # nodes ascend: the first k_p are below
            samples = n * jnp.sum(jnp.where(below, weights, 0.0), axis=1)
            k = jnp.sum(below, axis=1, keepdims=True)
            last_below = jnp.take_along_axis(weights, jnp.maximum(k - 1, 0), 1)[:, 0]
            first_above = jnp.take_along_axis(weights, jnp.minimum(k, steps - 1), 1)[:, 0]
            low = samples - n * jnp.where(k[:, 0] > 0, last_below, 0.0)
            high = samples + n * jnp.where(k[:, 0] < steps, first_above, 0.0)
            spread = jnp.std(samples, ddof=1) if probes > 1 else jnp.nan
            return (jnp.mean(samples), spread / math.sqrt(probes), jnp.mean(low),
                    jnp.mean(high), jnp.min(nodes), jnp.max(nodes))

        return jax.lax.map(cell, ab, batch_size=None if batch_size == 1 else batch_size)

    return jax.jit(kernel, static_argnames=("probes", "steps", "batch_size"))


def coarse_to_fine_levels(n: int, levels: int = 3) -> tuple[int, ...]:
    """Grid sizes (points per side) for streaming a map coarse to fine, ending with ``n``.

    The coarsest has about 11 points, the others are spaced geometrically up to ``n``; a
    level less than 1.25 times coarser than the next is dropped. Each size ``s`` is
    snapped, where a size within a factor 1.5 allows it, to one with ``(s − 1)`` dividing
    the next finer size minus 1, so over the same coordinate range the coarser grid's
    points are a subset of the finer grid's (their cells can be reused).
    E.g. ``coarse_to_fine_levels(61) == (11, 31, 61)``; sizes ≤ 11 give ``(n,)``.

    Returns:
      strictly increasing tuple of at most ``levels`` sizes, the last one ``n``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_GRID:
        raise InputError(f"the grid size must be an integer between 1 and {MAX_GRID}, "
                         f"got {n!r}.")
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) \
            or not 1 <= levels <= 8:
        raise InputError(f"the number of levels must be an integer between 1 and 8, "
                         f"got {levels!r}.")
    n = int(n)
    if n <= _COARSEST or levels == 1:
        return (n,)
    targets = np.geomspace(_COARSEST, n, int(levels))[:-1]
    sizes = [n]
    for target in targets[::-1]:
        finer = sizes[0]
        nested = [s for s in range(2, finer) if (finer - 1) % (s - 1) == 0]
        best = min(nested, key=lambda s: (abs(math.log(s / target)), -s), default=None)
        size = best if best is not None and abs(math.log(best / target)) <= math.log(1.5) \
            else int(round(target))
        if size * 1.25 <= finer:  # skip a level barely coarser than the next
            sizes.insert(0, size)
    return tuple(sorted(set(sizes)))
