"""Morse-index maps: the number of negative Hessian eigenvalues at every cell of a plane.

At each grid point ``θ(α, β) = center + α·d1 + β·d2`` the exact Hessian ``H = ∇²L(θ)`` is
built by forward-over-reverse AD (``jax.hessian``) and diagonalised (``eigvalsh``); the
Morse index is ``#{λ < −τ}``. All cells of the grid are computed in one compiled call:
``vmap`` over a chunk of cells inside ``lax.map(batch_size=…)``, the chunk size derived from
a memory budget. The tolerance rule is :mod:`compute._critical`'s: ``τ = r · max|λ|`` per
cell, with ``r`` = :func:`compute._critical.default_tolerance` (1e-6 in float64), so
rounding noise around zero modes (symmetries, the origin of a deep linear net) does not
count as negative curvature.

:func:`coarse_to_fine_levels` picks grid sizes for streaming a map: a coarse map first
(about 11 × 11 cells, shown at once), then finer ones, nested where the sizes allow it so
a finer grid contains the coarser grid's points.

References:
  Milnor, "Morse Theory" (1963) for the index of a critical point; Dauphin et al. 2014,
  "Identifying and attacking the saddle point problem" (arXiv:1406.2572) for the index of
  points of neural-network losses.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from compute._critical import default_tolerance
from compute._errors import InputError
from compute._limits import (
    MAX_GRID,
    MAX_INDEX_MAP_WORK,
    MAX_PARAMS_INDEX_MAP,
    MEMORY_BUDGET_BYTES,
)
from compute._losses import flat_objective
from compute._models import ModelSpec
from compute._surface import _check_budget, _check_problem, _coordinates

__all__ = [
    "MAX_PARAMS_INDEX_MAP",
    "MAX_INDEX_MAP_WORK",
    "coarse_to_fine_levels",
    "morse_index_map",
]

# One exact Hessian and eigensolve per grid cell: the model must be much smaller than for a
# single exact spectrum (a 201 × 201 grid is 40 401 of them).
# Cells per chunk are also capped so one chunk's working set (by the generous per-cell
# estimate below) stays near this size: on the 2-core CPU (74-parameter MLP, m = 200) the
# Hessians ran 1.5x faster in chunks of 8 cells than of 62.
_CHUNK_TARGET_BYTES = 64 * 2**20
_COARSEST = 11          # points per side of the first, coarse map


def morse_index_map(spec: ModelSpec, loss: str, center, d1, d2, alphas, betas, X, Y, *,
                    tol: float | None = None,
                    memory_budget: int = MEMORY_BUDGET_BYTES) -> dict[str, np.ndarray]:
    """Morse index and λ_min of the exact Hessian at every cell of a plane (float64).

    Args:
      spec, loss: the network and the loss name.
      center, d1, d2: flat ``(n,)`` vectors; the cell ``(i, j)`` is
        ``center + alphas[j]·d1 + betas[i]·d2``.
      alphas, betas: 1-D grid coordinates, at most ``MAX_GRID`` each.
      X, Y: data ``(m, d_x)``, ``(m, d_y)``.
      tol: absolute eigenvalue tolerance τ (λ < −τ counts as negative); default per cell
        ``τ = r · max|λ|`` with ``r = default_tolerance(float64)`` (``compute._critical``).
      memory_budget: bytes the compiled call may use; sets the cells per chunk.

    Returns:
      dict of ``(len(betas), len(alphas))`` arrays: ``index`` (int64 count of eigenvalues
      below −τ; −1 where the Hessian is not finite), ``lambda_min`` and ``lambda_max``
      (float64, NaN where not finite), ``fraction`` (index / n, NaN where not finite).

    Raises:
      InputError: bad shapes or values, more than ``MAX_PARAMS_INDEX_MAP`` parameters, or
        more than ``MAX_INDEX_MAP_WORK`` estimated work.
    """
    n = spec.n_params
    if n > MAX_PARAMS_INDEX_MAP:
        raise InputError(f"the model has {n} parameters; the Morse-index map computes an exact "
                         f"Hessian per cell and is limited to {MAX_PARAMS_INDEX_MAP}: use a "
                         "smaller model or the spectrum at single points.")
    alphas = _coordinates(alphas, "alphas", MAX_GRID)
    betas = _coordinates(betas, "betas", MAX_GRID)
    center, d1, d2, X, Y = _check_problem(spec, loss, center, d1, d2, X, Y)
    budget = _check_budget(memory_budget)
    if tol is not None and not (isinstance(tol, (int, float, np.floating)) and tol >= 0
                                and math.isfinite(tol)):
        raise InputError(f"the eigenvalue tolerance must be a finite number ≥ 0, got {tol!r}.")
    cells = alphas.size * betas.size
    m = X.shape[0]
    work = float(cells) * n * n * (n + m)
    if work > MAX_INDEX_MAP_WORK:
        raise InputError(f"this index map needs about {work:.1e} operations (grid cells × n² × "
                         f"(n + m)); the limit is {MAX_INDEX_MAP_WORK:.0e}: use a coarser grid, "
                         "fewer samples or a smaller model.")
    # Per cell: n forward-over-reverse products (activations ∝ the data) and a few n × n.
    per_cell = 8 * (n * (16 * (X.size + Y.size) + 8 * n) + 6 * n * n)
    batch = int(max(1, min(cells, budget // per_cell, _CHUNK_TARGET_BYTES // per_cell)))
    n_chunks = -(-cells // batch)
    batch = -(-cells // n_chunks)                      # even chunks, least padding
    A, B = np.meshgrid(alphas, betas)
    points = np.zeros((n_chunks * batch, 2))           # padded: one compiled loop body
    points[:cells] = np.stack([A.ravel(), B.ravel()], axis=1)
    ab = jnp.asarray(points, jnp.float64)
    abs_tol, rel_tol = (0.0, default_tolerance(jnp.float64)) if tol is None else (tol, 0.0)
    f64 = functools.partial(jnp.asarray, dtype=jnp.float64)
    count, lo, hi = _index_kernel(spec, loss)(
        f64(center), f64(d1), f64(d2), ab, f64(X), f64(Y), f64(abs_tol), f64(rel_tol),
        batch_size=batch)
    shape = (betas.size, alphas.size)
    lo = np.asarray(lo, np.float64)[:cells].reshape(shape)
    hi = np.asarray(hi, np.float64)[:cells].reshape(shape)
    finite = np.isfinite(lo) & np.isfinite(hi)
    index = np.where(finite, np.asarray(count, np.int64)[:cells].reshape(shape), -1)
    return {
        "index": index,
        "lambda_min": np.where(finite, lo, np.nan),
        "lambda_max": np.where(finite, hi, np.nan),
        "fraction": np.where(finite, index / n, np.nan),
    }


@functools.lru_cache(maxsize=32)
def _index_kernel(spec: ModelSpec, loss: str):
    """The jitted grid kernel of one (model, loss): one compilation per grid/chunk shape.

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
