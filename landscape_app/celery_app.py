"""The Celery side of a lab deployment: the app the workers run and the dashboard's manager.

Used only when ``LANDSCAPE_REDIS_URL`` is set (Redis is then the Celery broker, the Celery
result backend and the flask-caching store); without it the dashboard runs embedded
(FileSystemCache + DiskcacheManager) and never imports this module.

Start a worker with (the command of ``docker-compose.yml``)::

    celery -A landscape_app.celery_app worker --pool=threads --concurrency=2

Why the threads pool. A worker runs the dashboard's background callbacks *in-process*
(``LANDSCAPE_INPROCESS=1``, set below for every worker): it imports JAX on its first job and
keeps the compiled kernels warm for every later job. JAX is multithreaded, and forking a
process after it initialised can deadlock, so the pool must never fork after the first job:
``--pool=threads`` runs jobs on threads of the one long-lived process (JAX executes
thread-safely and releases the GIL while XLA runs); ``--pool=solo`` is the one-job-at-a-time
equivalent. Celery's default ``prefork`` pool is not used: it forks (and re-forks after
``--max-tasks-per-child``) from a parent that may already hold JAX. Scale with more worker
processes (``docker compose up --scale worker=N``), each with its own warm JAX.

A worker that dies mid-job (killed, out of memory, its machine lost) must not leave a user
watching a spinner forever: Celery's task state would say ``STARTED`` for good. Each worker
therefore writes a heartbeat key to Redis every ``LANDSCAPE_WORKER_HEARTBEAT / 5`` seconds
(expiring after ``LANDSCAPE_WORKER_HEARTBEAT``, default 10 s), named by its hostname and a
random id of this process's life (a container restarted under the same hostname is a new
worker), and records which worker runs each job. The dashboard's manager
(:class:`LandscapeCeleryManager`) answers a poll for a job whose worker's heartbeat is gone,
or that waits in the queue while no worker is alive, with an error that the callback's
``on_error`` handler shows; the user presses the button again to retry on a live worker.
Cancelling (Dash's cancel inputs) marks the job abandoned: the job stops at its next
progress report, since threads cannot be killed.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import uuid

from celery import Celery, current_task, signals, states
from dash import CeleryManager
from dash.background_callback.managers.celery_manager import _make_job_fn

__all__ = [
    "JobAbandoned",
    "LandscapeCeleryManager",
    "celery_app",
    "heartbeat_seconds",
    "live_workers",
    "make_celery",
    "make_celery_manager",
]

REDIS_URL_VARIABLE = "LANDSCAPE_REDIS_URL"
HEARTBEAT_PREFIX = "landscape:worker-alive:"    # + "<hostname>:<instance>" -> pid, expires
WORKERS_KEY = "landscape:workers"               # sorted set "<hostname>:<instance>" -> expiry
RUNNER_PREFIX = "landscape:job-worker:"         # + task id -> "<hostname>:<instance>" running it
SUBMITTED_PREFIX = "landscape:job-submitted:"   # + task id -> unix time it was queued
ABANDONED_PREFIX = "landscape:job-abandoned:"   # + task id -> reason; the job should stop
BOOKKEEPING_SECONDS = 24 * 3600                 # how long the job keys above are kept

log = logging.getLogger(__name__)


class JobAbandoned(RuntimeError):
    """Raised inside a job whose user cancelled it or whose result nobody will read."""


def heartbeat_seconds() -> float:
    """How long a worker's heartbeat lives: after this silence its jobs count as lost."""
    raw = os.environ.get("LANDSCAPE_WORKER_HEARTBEAT", "").strip()
    try:
        value = float(raw) if raw else 10.0
    except ValueError:
        value = 10.0
    return min(max(value, 1.0), 3600.0)


def make_celery(redis_url: str | None) -> Celery:
    """The Celery app: Redis as broker and result backend, tuned for long, few jobs.

    Args:
      redis_url: ``redis://host:port/db`` (``rediss://`` for TLS). ``None`` gives an app that
        cannot send (the web process never builds one then; a worker refuses to start).
    """
    app = Celery("landscape", broker=redis_url, backend=redis_url)
    app.conf.update(
        # Report STARTED (for `celery inspect`, Flower): queued and running jobs differ.
        task_track_started=True,
        # A worker reserves only the jobs it runs; queued jobs wait in Redis for any worker.
        worker_prefetch_multiplier=1,
        # Ack on receipt (Celery's default, stated): a job of a worker that died is reported
        # to its user as an error to retry, not silently re-run an hour later by Redis.
        task_acks_late=False,
        result_expires=BOOKKEEPING_SECONDS,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


celery_app = make_celery(os.environ.get(REDIS_URL_VARIABLE) or None)


class LandscapeCeleryManager(CeleryManager):
    """Dash's CeleryManager that never leaves a browser polling a lost job.

    On top of :class:`dash.CeleryManager`: (1) a job whose worker's heartbeat expired, or a
    job queued for longer than the heartbeat while no worker is alive, is answered with a
    ``background_callback_error`` (so the callback's ``on_error`` handler runs and the user
    sees a message); (2) cancelling marks the job abandoned and revokes it instead of asking
    the pool to kill a thread (the threads pool cannot); the job stops at its next progress
    report, or before it starts.
    """

    def __init__(self, celery_app: Celery, cache_by=None, expire: int | None = None):
        super().__init__(celery_app, cache_by=cache_by, expire=expire)
        self.lost_after = heartbeat_seconds()

    @property
    def _redis(self):
        return self.handle.backend.client

    def make_job_fn(self, fn, progress, key=None):
        return _make_job_fn(_abandonable(fn, progress, self.handle), self.handle, progress, key)

    def call_job_fn(self, key, job_fn, args, context):
        job = super().call_job_fn(key, job_fn, args, context)
        self._redis.set(SUBMITTED_PREFIX + str(job), repr(_redis_now(self._redis)),
                        ex=BOOKKEEPING_SECONDS)
        return job

    def terminate_job(self, job):
        # Dash calls this after every finished job too: nothing to stop then.
        if job is None or self.handle.AsyncResult(str(job)).state in states.READY_STATES:
            return
        self._redis.set(ABANDONED_PREFIX + str(job), "cancelled", ex=BOOKKEEPING_SECONDS)
        self.handle.control.revoke(str(job))

    def get_result(self, key, job):
        result = super().get_result(key, job)
        if result is self.UNDEFINED and job:
            reason = self.lost_reason(job)
            if reason is not None and not self.result_ready(key):
                log.warning("background job %s lost: %s", job, reason)
                self.terminate_job(job)
                return {"background_callback_error": {"msg": reason, "tb": ""}}
        return result

    def lost_reason(self, job) -> str | None:
        """Why nobody will ever finish ``job`` (a sentence for the user), or None if it runs."""
        runner = self._redis.get(RUNNER_PREFIX + str(job))
        if runner is not None:  # started: is the worker that took it still alive?
            runner = runner.decode() if isinstance(runner, bytes) else str(runner)
            if not self._redis.exists(HEARTBEAT_PREFIX + runner):
                return ("The compute worker running this job stopped before it finished; "
                        "press the button again to retry on another worker.")
            return None
        submitted = self._redis.get(SUBMITTED_PREFIX + str(job))
        waited = _redis_now(self._redis) - float(submitted) if submitted else 0.0
        if waited > self.lost_after and not self.live_workers():
            return ("No compute worker is running, so this job cannot start; ask the "
                    "lab's admin to start one (docker compose up --scale worker=N).")
        return None

    def live_workers(self) -> list[str]:
        """``hostname:instance`` of the workers whose heartbeat is current."""
        return live_workers(self._redis)


def live_workers(client) -> list[str]:
    """``hostname:instance`` of the workers whose heartbeat is current (Redis ``client``).

    Read from the sorted set :data:`WORKERS_KEY` scored by expiry in Redis' own clock, so
    the machines' clocks need not agree.
    """
    names = client.zrangebyscore(WORKERS_KEY, _redis_now(client), "+inf")
    return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _redis_now(client) -> float:
    """Redis' clock, in seconds."""
    seconds, microseconds = client.time()
    return seconds + microseconds / 1e6


def make_celery_manager(cache_by=None, expire: int | None = None) -> LandscapeCeleryManager:
    """The background callback manager of a deployment with ``LANDSCAPE_REDIS_URL`` set.

    It sends jobs to this module's :data:`celery_app`, the app the workers run, so the task
    names registered here are the ones the workers know.
    """
    if not os.environ.get(REDIS_URL_VARIABLE):
        raise RuntimeError(f"{REDIS_URL_VARIABLE} is not set: the embedded DiskcacheManager "
                           "is the manager to use without Redis.")
    return LandscapeCeleryManager(celery_app, cache_by=cache_by, expire=expire)


def _abandonable(fn, progress: bool, app: Celery):
    """Wrap a background callback so that it stops when its job was abandoned."""

    def current_job() -> str | None:
        task = current_task
        return task.request.id if task is not None else None

    def check() -> None:
        job = current_job()
        if job and app.backend.client.exists(ABANDONED_PREFIX + job):
            raise JobAbandoned("This job was cancelled.")

    def start() -> None:
        job = current_job()
        if job and _heartbeat is not None:
            app.backend.client.set(RUNNER_PREFIX + job, _heartbeat.name,
                                   ex=BOOKKEEPING_SECONDS)
        check()

    if progress:
        @functools.wraps(fn)
        def run(set_progress, *args, **kwargs):
            def checked_progress(value):
                check()
                set_progress(value)

            start()
            return fn(checked_progress, *args, **kwargs)
    else:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            start()
            return fn(*args, **kwargs)
    return run


# --- the worker process only -------------------------------------------------------------

class _Heartbeat:
    """Refreshes ``landscape:worker-alive:<hostname>:<instance>`` while the worker lives."""

    def __init__(self, app: Celery, hostname: str):
        self.name = f"{hostname}:{uuid.uuid4().hex[:12]}"
        self.key = HEARTBEAT_PREFIX + self.name
        self.ttl = heartbeat_seconds()
        self.client = app.backend.client
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="landscape-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self.thread.start()

    def beat(self) -> None:
        now = _redis_now(self.client)  # Redis' clock: the same for every machine
        with self.client.pipeline() as pipe:
            pipe.set(self.key, os.getpid(), px=int(self.ttl * 1000))
            pipe.zadd(WORKERS_KEY, {self.name: now + self.ttl})
            pipe.zremrangebyscore(WORKERS_KEY, "-inf", now - 3600)  # long-gone workers
            pipe.execute()

    def _run(self) -> None:
        while not self.stopped.wait(self.ttl / 5):
            try:
                self.beat()
            except Exception as error:  # noqa: BLE001 -- Redis blips: retry next beat
                log.warning("heartbeat to Redis failed: %s", error)

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.client.delete(self.key)
            self.client.zrem(WORKERS_KEY, self.name)
        except Exception:  # noqa: BLE001 -- shutting down anyway
            pass


_heartbeat: _Heartbeat | None = None


@signals.import_modules.connect
def _load_dashboard(sender=None, **_) -> None:
    """In a worker, before it consumes: run jobs in-process and register the callbacks.

    Creating the dashboard app registers its background callbacks as Celery tasks (named by
    a hash of each callback's source, the same names the web processes send).
    """
    if sender is not celery_app:
        return
    if not os.environ.get(REDIS_URL_VARIABLE):
        raise RuntimeError(f"{REDIS_URL_VARIABLE} must be set to run a Celery worker "
                           "(for example redis://redis:6379/0).")
    os.environ["LANDSCAPE_INPROCESS"] = "1"
    from landscape_app import create_app

    create_app()


@signals.worker_init.connect
def _start_heartbeat(sender=None, **_) -> None:
    global _heartbeat
    if getattr(sender, "app", None) is not celery_app:
        return
    _heartbeat = _Heartbeat(celery_app, sender.hostname)
    _heartbeat.start()


@signals.worker_shutdown.connect
def _stop_heartbeat(sender=None, **_) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
