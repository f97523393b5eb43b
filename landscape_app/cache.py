"""Result caching (flask-caching) and the background-callback manager.

A result is stored under :func:`landscape_app.settings.canonical_key` (a sha256 of the
task's compute fields, floats rounded to 12 significant digits), never under ``str()`` of
arguments, so a repeated view costs one cache read. Values are the encoded payloads of
:func:`landscape_app.compute_server.encode_payload` (JSON + ``.npz`` bytes, read back with
``allow_pickle=False``); the backends below store those bytes as they are, with a
serializer that never pickles or unpickles anything.

Backends:

* default: ``FileSystemCache`` in ``<cache>/results``, at most ``LANDSCAPE_CACHE_ENTRIES``
  entries (default 256; the oldest go first) of at most ``LANDSCAPE_CACHE_MAX_ENTRY_MB``
  each (default 16; bigger payloads are returned but not stored), expiring after
  ``LANDSCAPE_CACHE_TIMEOUT_S`` (default a week);
* with ``LANDSCAPE_REDIS_URL``: ``RedisCache`` at that URL (bound it with Redis'
  ``maxmemory`` and ``maxmemory-policy allkeys-lru``), shared by every web process and
  worker.

Background callbacks: :func:`make_background_manager` gives Dash's ``DiskcacheManager`` in
``<cache>/background`` by default, or the Celery manager of
:mod:`landscape_app.celery_app` when ``LANDSCAPE_REDIS_URL`` is set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from flask_caching import Cache
from flask_caching.backends.filesystemcache import FileSystemCache
from flask_caching.backends.rediscache import RedisCache

from landscape_app.compute_server import (
    ProgressFn,
    TaskError,
    decode_payload,
    run_task,
    run_task_bytes,
)
from landscape_app.settings import (
    LIMITS,
    cache_dir,
    canonical_key,
    upload_dir,
    validate_settings,
)

__all__ = [
    "LandscapeFileSystemCache",
    "LandscapeRedisCache",
    "cache_config",
    "cache_stats",
    "cached_task",
    "get_backend",
    "init_cache",
    "make_background_manager",
    "store_upload",
]

log = logging.getLogger("landscape.cache")
REDIS_URL_VARIABLE = "LANDSCAPE_REDIS_URL"


def _env_number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value >= 0 else default


# --------------------------------------------------------------------------- backends


class _BytesSerializer:
    """bytes stored as ``b"B" + bytes``, ints (the file count) as ``b"I" + digits``.

    Anything else is refused on write and read back as a miss: no pickle either way.
    """

    def dumps(self, value: Any, *args: Any, **kwargs: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return b"B" + bytes(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return b"I" + str(value).encode("ascii")
        raise TypeError(f"the result cache stores bytes only, not {type(value).__name__}")

    def loads(self, data: bytes | None) -> Any:
        if not data:
            return None
        if data[:1] == b"B":
            return bytes(data[1:])
        if data[:1] == b"I":
            try:
                return int(data[1:])
            except ValueError:
                return None
        return None

    def dump(self, value: Any, f: IO[bytes], *args: Any, **kwargs: Any) -> None:
        f.write(self.dumps(value))

    def load(self, f: IO[bytes]) -> Any:
        return self.loads(f.read())


class _RedisBytesSerializer(_BytesSerializer):
    """As :class:`_BytesSerializer`, but ints as plain digits (Redis ``INCR`` compatible)."""

    def dumps(self, value: Any, *args: Any, **kwargs: Any) -> bytes:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value).encode("ascii")
        return super().dumps(value)

    def loads(self, data: bytes | None) -> Any:
        if data and data[:1] not in (b"B", b"I"):
            try:
                return int(data)
            except ValueError:
                return None
        return super().loads(data)


class LandscapeFileSystemCache(FileSystemCache):
    """flask-caching's FileSystemCache storing raw bytes (no pickle)."""

    serializer = _BytesSerializer()


class LandscapeRedisCache(RedisCache):
    """flask-caching's RedisCache storing raw bytes (no pickle)."""

    serializer = _RedisBytesSerializer()


def cache_config() -> dict:
    """flask-caching configuration from the environment (see the module docstring)."""
    timeout = int(_env_number("LANDSCAPE_CACHE_TIMEOUT_S", 7 * 24 * 3600))
    url = os.environ.get(REDIS_URL_VARIABLE)
    if url:
        return {"CACHE_TYPE": f"{__name__}.LandscapeRedisCache", "CACHE_REDIS_URL": url,
                "CACHE_KEY_PREFIX": "landscape-result:", "CACHE_DEFAULT_TIMEOUT": timeout}
    return {"CACHE_TYPE": f"{__name__}.LandscapeFileSystemCache",
            "CACHE_DIR": str(cache_dir() / "results"),
            "CACHE_THRESHOLD": int(_env_number("LANDSCAPE_CACHE_ENTRIES", 256)),
            "CACHE_DEFAULT_TIMEOUT": timeout}


def _max_entry_bytes() -> int:
    return int(_env_number("LANDSCAPE_CACHE_MAX_ENTRY_MB", 16) * 2**20)


_backend = None
_backend_lock = threading.Lock()


def init_cache(server) -> Cache:
    """Attach the result cache to a Flask ``server`` (``create_app`` calls this once)."""
    global _backend
    cache = Cache(server, config=cache_config())
    with _backend_lock:
        _backend = cache.cache
    return cache


def get_backend():
    """The cache backend :func:`cached_task` uses (built from the environment if no Flask
    app called :func:`init_cache`, e.g. in a Celery worker or a test)."""
    global _backend
    with _backend_lock:
        if _backend is None:
            config = cache_config()
            if config["CACHE_TYPE"].endswith("RedisCache"):
                from redis import from_url

                _backend = LandscapeRedisCache(host=from_url(config["CACHE_REDIS_URL"]),
                                               key_prefix=config["CACHE_KEY_PREFIX"],
                                               default_timeout=config["CACHE_DEFAULT_TIMEOUT"])
            else:
                _backend = LandscapeFileSystemCache(
                    config["CACHE_DIR"], threshold=config["CACHE_THRESHOLD"],
                    default_timeout=config["CACHE_DEFAULT_TIMEOUT"])
        return _backend


def _reset_backend() -> None:
    """Forget the backend (tests that change the environment)."""
    global _backend
    with _backend_lock:
        _backend = None


# --------------------------------------------------------------------------- cached tasks

cache_stats = {"hits": 0, "misses": 0, "stored": 0, "too_big": 0}
_key_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_key_locks_guard = threading.Lock()


def _key_lock(key: str) -> threading.Lock:
    with _key_locks_guard:
        lock = _key_locks.get(key)
        if lock is None:
            lock = threading.Lock()
            _key_locks[key] = lock
        return lock


def cached_task(name: str, settings: Mapping, progress: ProgressFn | None = None, *,
                budget_s: float | None = None) -> dict:
    """The payload of task ``name`` for ``settings``: from the cache, or computed and stored.

    ``settings`` are validated first (bad ones raise ``TaskError(kind="input")`` with the
    field messages) and the key is the canonical key of the clean settings, so display-only
    fields (log_scale) and float noise below 12 digits do not cause a recompute. Concurrent
    requests for one key in this process compute it once. The payload carries
    ``cache_hit`` (bool). Raises :class:`TaskError` as :func:`run_task` does.
    """
    clean, errors = validate_settings(settings)
    if errors:
        raise TaskError(" ".join(errors.values()), "input")
    key = canonical_key(name, clean)
    backend = get_backend()
    with _key_lock(key):
        payload = _read(backend, key)
        if payload is not None:
            cache_stats["hits"] += 1
            payload["cache_hit"] = True
            return payload
        cache_stats["misses"] += 1
        blob = run_task_bytes(name, clean, progress, budget_s=budget_s)
        if len(blob) <= _max_entry_bytes():
            try:
                if backend.set(key, blob):
                    cache_stats["stored"] += 1
            except Exception:  # noqa: BLE001 - a cache outage must not fail the request
                log.warning("could not store %s in the result cache", key, exc_info=True)
        else:
            cache_stats["too_big"] += 1
    payload = decode_payload(blob)
    payload["cache_hit"] = False
    return payload


def is_cached(name: str, settings: Mapping) -> bool:
    """Whether task ``name`` for ``settings`` is in the result cache (no decoding, no
    compute; False for invalid settings or when the cache cannot be read)."""
    clean, errors = validate_settings(settings)
    if errors:
        return False
    try:
        return bool(get_backend().has(canonical_key(name, clean)))
    except Exception:  # noqa: BLE001 - e.g. Redis down: not known to be cached
        return False


def _read(backend, key: str) -> dict | None:
    try:
        blob = backend.get(key)
    except Exception:  # noqa: BLE001 - e.g. Redis down: compute instead
        log.warning("could not read the result cache", exc_info=True)
        return None
    if not isinstance(blob, bytes):
        return None
    try:
        return decode_payload(blob)
    except (ValueError, KeyError, OSError, EOFError):  # damaged entry: recompute
        log.warning("damaged cache entry %s dropped", key)
        try:
            backend.delete(key)
        except Exception:  # noqa: BLE001
            pass
        return None


# --------------------------------------------------------------------------- uploads


def _upload_bytes(contents: bytes | str) -> bytes:
    """Raw bytes from bytes or a ``dcc.Upload`` data URL (``data:…;base64,…``)."""
    if isinstance(contents, (bytes, bytearray, memoryview)):
        return bytes(contents)
    if isinstance(contents, str):
        # base64 grows data by 4/3: refuse before decoding anything too large
        if len(contents) > LIMITS.MAX_UPLOAD_BYTES * 4 // 3 + 1024:
            raise TaskError(_too_large(len(contents) * 3 // 4), "input")
        _, _, body = contents.partition(",") if contents.startswith("data:") else ("", "",
                                                                                   contents)
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise TaskError("the upload is not valid base64 data; upload the file again.",
                            "input") from None
    raise TaskError("the upload must be the file's bytes.", "input")


def _too_large(size: int) -> str:
    return (f"the file is too large ({size / 2**20:.1f} MiB); the limit is "
            f"{LIMITS.MAX_UPLOAD_BYTES / 2**20:.0f} MiB.")


def store_upload(contents: bytes | str, filename: str) -> tuple[str, dict]:
    """Check an uploaded ``.npz``/``.csv`` file and keep it for the tasks.

    The bytes go to ``<cache>/uploads/<sha256><suffix>``; the compute server parses them
    (``compute.load_dataset_bytes``: nothing is executed, ``allow_pickle=False``) and a small
    JSON description is written next to them, which :func:`validate_settings` reads.

    Args:
      contents: the file's bytes, or ``dcc.Upload``'s ``contents`` (a base64 data URL).
      filename: the file's name (its extension decides the format).

    Returns:
      ``("upload:<sha256>", {"rows", "d_x", "d_y", "targets", "description", "filename"})``;
      use the first as the ``dataset`` setting. Raises ``TaskError(kind="input")`` with the
      reason (too large, wrong type, NaN in row 7, …) when the file is not usable.
    """
    name = Path(str(filename or "upload")).name[:200]
    suffix = Path(name).suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise TaskError(f"unsupported file type {suffix or '(none)'!r} for {name!r}; upload a "
                        ".npz (arrays X and Y) or a .csv file.", "input")
    data = _upload_bytes(contents)
    if len(data) > LIMITS.MAX_UPLOAD_BYTES:
        raise TaskError(_too_large(len(data)), "input")
    digest = hashlib.sha256(data).hexdigest()
    folder = upload_dir()
    path = folder / f"{digest}{suffix}"
    if not path.exists():
        tmp = folder / f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    try:
        info = run_task("dataset_info", {"digest": digest, "suffix": suffix, "filename": name})
    except TaskError as exc:
        if exc.kind == "input":
            path.unlink(missing_ok=True)
        raise
    info = {"rows": int(info["rows"]), "d_x": int(info["d_x"]), "d_y": int(info["d_y"]),
            "targets": str(info["targets"]), "description": str(info["description"]),
            "filename": name}
    meta = folder / f"{digest}.json"
    tmp = folder / f".{digest}.{os.getpid()}.{threading.get_ident()}.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, meta)
    return f"upload:{digest}", info


# --------------------------------------------------------------------------- background jobs


def make_background_manager(cache_by=None, expire: int | None = None):
    """Dash's background-callback manager for this deployment.

    Embedded default: ``DiskcacheManager`` on ``<cache>/background`` (its job processes are
    forked from the web process, which holds no JAX, and they reach the compute server over
    its socket). With ``LANDSCAPE_REDIS_URL``: the Celery manager of
    :mod:`landscape_app.celery_app`, whose workers run the tasks in-process.
    """
    if os.environ.get(REDIS_URL_VARIABLE):
        from landscape_app.celery_app import make_celery_manager

        return make_celery_manager(cache_by=cache_by, expire=expire)
    import diskcache
    from dash import DiskcacheManager

    store = diskcache.Cache(str(cache_dir() / "background"), size_limit=256 * 2**20)
    return DiskcacheManager(store, cache_by=cache_by, expire=expire)
