"""Device, precision and the persistent compilation cache: the only process-wide state.

Importing :mod:`compute` calls :func:`configure_jax` once. It

* enables 64-bit types in JAX (``jax_enable_x64``) so float64 is *available*; every array
  the library creates passes its dtype explicitly, float32 unless the caller asks for
  float64 (Hessian work defaults to float64);
* points JAX's persistent compilation cache at a user cache folder
  (``$LANDSCAPE_CACHE_DIR/jax`` or ``~/.cache/landscape/jax``) so a second process reuses
  the compiled kernels of the first instead of recompiling.

JAX picks the GPU when it sees one (a CUDA jaxlib is installed and a device is visible),
else the CPU; :func:`device_info` reports which.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}
_configured = False


def cache_dir() -> Path:
    """The user cache folder of Landscape (created on demand)."""
    root = os.environ.get("LANDSCAPE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "landscape"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def configure_jax() -> None:
    """Enable float64 and the persistent compilation cache (idempotent)."""
    global _configured
    if _configured:
        return
    jax.config.update("jax_enable_x64", True)
    try:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax"))
        # Cache every compiled kernel: the dashboard's kernels are small and many.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except (OSError, AttributeError):  # read-only home: run without the disk cache
        pass
    _configured = True


def resolve_dtype(precision: str | None, default: str = "float32"):
    """``"float32"``/``"float64"`` (or None for ``default``) to a JAX dtype."""
    from compute._errors import InputError

    name = precision or default
    if name not in DTYPES:
        raise InputError(f"precision must be one of {sorted(DTYPES)}, got {name!r}.")
    return DTYPES[name]


def device_info() -> dict:
    """Which device computes: ``{"platform": "gpu"|"cpu", "kind": ..., "count": n}``."""
    devices = jax.devices()
    first = devices[0]
    return {
        "platform": first.platform,
        "kind": getattr(first, "device_kind", first.platform),
        "count": len(devices),
    }
