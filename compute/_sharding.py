"""Loss surfaces whose grid outgrows one device: the grid points sharded over all devices.

:func:`sharded_loss_surface` takes the arguments of :func:`compute.loss_surface` and returns
the same array. The direct method's grid points are cut into the chunks that
``loss_surface`` would evaluate one after another (the same chunk plan, hence the same
per-device memory bound ``memory_budget``), the chunks are split along the one axis
``"grid"`` of a :class:`jax.sharding.Mesh` over the devices, and every device runs the same
compiled kernel (``compute._surface``'s) over its own chunks inside ``jax.shard_map``; the
center, the directions and the data are replicated. Each grid point's arithmetic is the
one-device arithmetic, so the numbers are those of ``loss_surface``. The polynomial method
(deep linear nets, squared loss) costs a few small float64 products whatever the grid size,
so it is not sharded: it is ``loss_surface``'s own.

Several hosts: after ``jax.distributed.initialize(...)`` in every process, ``jax.devices()``
lists every host's devices and the mesh spans them. Call this function in every process
with the same arguments: each process builds only its own devices' chunks
(``jax.make_array_from_callback``) and the loss values are gathered to every process
(``multihost_utils.process_allgather``), which all return the whole surface.

Tested on the CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from compute._errors import InputError
from compute._limits import MAX_GRID, MEMORY_BUDGET_BYTES
from compute._models import ModelSpec
from compute._surface import (
    _check_budget,
    _check_problem,
    _chunk_plan,
    _compute_dtype,
    _coordinates,
    _direct_kernel,
    _pad_rows,
    loss_surface,
    surface_method,
)

__all__ = ["GRID_AXIS", "grid_mesh", "sharded_loss_surface"]

GRID_AXIS = "grid"


def sharded_loss_surface(spec: ModelSpec, loss: str, center, d1, d2, alphas, betas, X, Y, *,
                         memory_budget: int = MEMORY_BUDGET_BYTES, method: str = "auto",
                         dtype=None, devices: Sequence[jax.Device] | None = None
                         ) -> np.ndarray:
    """:func:`compute.loss_surface` with the grid points spread over ``devices``.

    Args:
      spec, loss, center, d1, d2, alphas, betas, X, Y, method, dtype: as
        :func:`compute.loss_surface` (flat ``(n_params,)`` vectors, 1-D coordinates of at
        most ``MAX_GRID`` points, data ``(m, d_x)`` and ``(m, d_y)``).
      memory_budget: bytes of working memory each device may use.
      devices: the devices to use; default ``jax.devices()`` (all of them, every host's
        after ``jax.distributed.initialize``).

    Returns:
      float64 array ``(len(betas), len(alphas))``: ``loss[i, j]`` at ``(alphas[j],
      betas[i])``, equal to ``loss_surface``'s.
    """
    alphas = _coordinates(alphas, "alphas", MAX_GRID)
    betas = _coordinates(betas, "betas", MAX_GRID)
    center, d1, d2, X, Y = _check_problem(spec, loss, center, d1, d2, X, Y)
    budget = _check_budget(memory_budget)
    if surface_method(spec, loss, method, memory_budget=budget) == "polynomial":
        return loss_surface(spec, loss, center, d1, d2, alphas, betas, X, Y,
                            memory_budget=budget, method="polynomial")
    mesh = grid_mesh(devices)
    A, B = np.meshgrid(alphas, betas)
    points = np.stack([A.ravel(), B.ravel()], axis=1)
    values = _sharded_direct_losses(spec, loss, center, d1, d2, points, X, Y,
                                    _compute_dtype(dtype, X), budget, mesh)
    return values.reshape(len(betas), len(alphas))


def grid_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh (axis :data:`GRID_AXIS`) over ``devices`` (default: all devices)."""
    chosen = tuple(jax.devices() if devices is None else devices)
    if not chosen:
        raise InputError("sharded_loss_surface needs at least one device.")
    return _mesh(chosen)


@functools.lru_cache(maxsize=8)
def _mesh(devices: tuple[jax.Device, ...]) -> Mesh:
    return Mesh(np.asarray(devices, dtype=object), (GRID_AXIS,))


def _sharded_direct_losses(spec, loss, center, d1, d2, points, X, Y, dtype, budget,
                           mesh: Mesh) -> np.ndarray:
    """Mean loss at each of ``points`` (P, 2); float64 ``(P,)``; ``_direct_losses`` sharded.

    The chunk plan is the one-device plan; the chunk count is padded (with grid points at
    the center) to a multiple of the device count so every device gets whole chunks.
    """
    m = X.shape[0]
    n_devices = mesh.devices.size
    sample_chunk, n_sample_chunks, point_chunk = _chunk_plan(
        spec, m, len(points), np.dtype(dtype).itemsize, budget)
    n_chunks = -(-len(points) // point_chunk)
    n_chunks = -(-n_chunks // n_devices) * n_devices
    padded = np.zeros((n_chunks * point_chunk, 2))
    padded[:len(points)] = points
    sharded = NamedSharding(mesh, P(GRID_AXIS))
    replicated = NamedSharding(mesh, P())
    ab = _global(padded.reshape(n_chunks, point_chunk, 2), dtype, sharded)
    vectors = [_global(v, dtype, replicated) for v in (center, d1, d2)]
    masked = n_sample_chunks * sample_chunk != m
    kernel = _sharded_kernel(spec, loss, masked, mesh)
    total = np.zeros(len(points))
    for s in range(n_sample_chunks):
        rows = slice(s * sample_chunk, min(m, (s + 1) * sample_chunk))
        Xs, Ys = _pad_rows(X[rows], sample_chunk), _pad_rows(Y[rows], sample_chunk)
        mask = (np.arange(sample_chunk) < rows.stop - rows.start).astype(np.float64)
        sums = kernel(*vectors, ab, _global(Xs, dtype, replicated),
                      _global(Ys, dtype, replicated), _global(mask, dtype, replicated))
        total += _to_host(sums).astype(np.float64).reshape(-1)[:len(points)]
    return total / m


@functools.lru_cache(maxsize=64)
def _sharded_kernel(spec: ModelSpec, loss: str, masked: bool, mesh: Mesh):
    """``compute._surface``'s jitted grid kernel run per device on its own chunks."""
    per_device = jax.shard_map(
        _direct_kernel(spec, loss, masked), mesh=mesh,
        in_specs=(P(), P(), P(), P(GRID_AXIS), P(), P(), P()), out_specs=P(GRID_AXIS))
    return jax.jit(per_device)


def _global(array, dtype, sharding: NamedSharding) -> jax.Array:
    """A global array of ``sharding`` whose every process supplies only its own shards."""
    host = np.asarray(array, dtype=dtype)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _to_host(array: jax.Array) -> np.ndarray:
    """The whole array on this host (gathered from the other processes if there are any)."""
    if array.is_fully_addressable:
        return np.asarray(array)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))
