"""Gunicorn settings for the Landscape dashboard, all from environment variables.

Read by the Dockerfile's command (``gunicorn --config deploy/gunicorn.conf.py app:server``)
and usable as is outside Docker. Variables (defaults in brackets):

* ``HOST`` [0.0.0.0] and ``PORT`` [8050]: the address gunicorn binds.
* ``WEB_CONCURRENCY`` [2]: worker processes. Each is a small Flask/Dash process (no JAX:
  the numerics run in a compute server or a Celery worker), so 2-4 per core is fine.
* ``GUNICORN_THREADS`` [16]: threads per worker (``gthread`` workers): background callbacks
  are polled every second or so, and threads keep one slow request from blocking the rest.
* ``GUNICORN_TIMEOUT`` [120]: seconds a request may run before its worker is restarted.

There is deliberately no ``preload_app``: with it gunicorn imports the app once and then
forks the workers, and anything multithreaded the import started (JAX, a compute-server
client) would be copied mid-flight into every child. Each worker imports the app itself.
"""

import os


def _int_env(name: str, default: int, low: int = 1) -> int:
    """An integer environment variable, at least ``low``; a clear error when it is not one."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}.") from None
    if value < low:
        raise SystemExit(f"{name} must be at least {low}, got {value}.")
    return value


bind = f"{os.environ.get('HOST', '0.0.0.0')}:{_int_env('PORT', 8050)}"
workers = _int_env("WEB_CONCURRENCY", 2)
threads = _int_env("GUNICORN_THREADS", 16)
worker_class = "gthread"
timeout = _int_env("GUNICORN_TIMEOUT", 120)
graceful_timeout = 30
keepalive = 5

preload_app = False  # never: see the module docstring (no fork after JAX or threads start)

# Logs to stdout/stderr, where `docker compose logs` finds them.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")

# Gunicorn's control socket lives in $HOME by default; several gunicorns on one host (tests,
# replicas sharing a home) would fight over it, and the dashboard does not use it.
control_socket_disable = True

# The heartbeat files of the workers go to memory, not to a container's overlay disk.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# Behind a reverse proxy (the lab's nginx or Traefik), trust its X-Forwarded-* headers.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
