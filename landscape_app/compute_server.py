"""The compute server: one long-lived JAX process per host that runs the dashboard's tasks.

Why (see the design): JAX is multithreaded, and forking a process after JAX initialised can
deadlock; the web process forks (gunicorn workers, DiskcacheManager jobs), so it never
imports JAX. Every computation runs here instead, in a process started as a fresh
interpreter (``python -m landscape_app.compute_server``, never a fork of the web process),
which keeps JAX's compiled kernels warm across requests.

Sharing. The server of a host is described by a state file
``<cache>/compute-server-<host>.json`` (pid, address, authkey; mode 0600) and started under
an exclusive ``flock`` on ``<cache>/compute-server-<host>.lock``, so all gunicorn workers and
background-job children of one host share ONE server. It listens on a Unix socket in the
cache folder (or 127.0.0.1 when that path is too long) and authenticates every connection
with the authkey (``multiprocessing.connection`` challenge).

Protocol (one connection per request; every message is bytes, never pickle):

* request ``J{"op": "task", "task": name, "settings": {...}, "budget_s": s, "pid": p}``;
* the server streams ``J{"type": "progress", "fraction": f, "text": t}`` messages, then
  ``R<payload bytes>`` (see :func:`encode_payload`) or
  ``J{"type": "error", "message": m, "kind": k}`` with kind ``input`` (show the message next
  to the controls), ``timeout`` (over the time budget; the message says so), or
  ``internal`` (a bug: the traceback is logged by the server under a reference that the
  message quotes; nothing else leaves the server);
* ``J{"op": "ping"}`` answers ``J{"type": "pong", ...}`` with the pid, device and run
  counters; ``J{"op": "release", "pid": p}`` says process ``p`` is done with the server;
  ``J{"op": "shutdown"}`` stops it.

Robustness. If the client disconnects (cancel button, killed job child), the job stops at
its next progress point; a job past its time budget stops there too (time spent waiting
for its turn does not count). Jobs run on threads with at most
``LANDSCAPE_COMPUTE_CONCURRENCY`` (default 2) at once, so pings are answered while a big
job runs; on the CPU they then compute one at a time (see ``tasks.run``: concurrent XLA CPU
executions can deadlock), the next one waiting. If the server dies, the next request
starts a new one. The server exits by itself once idle when every process that used it has exited
(or released it at exit), so nothing is left behind.

Environment: ``LANDSCAPE_INPROCESS=1`` makes :func:`run_task` run tasks in the calling
process (the Celery worker and the server itself); ``LANDSCAPE_TIME_BUDGET_S`` (default 120)
is the per-request time budget; ``LANDSCAPE_COMPUTE_CONCURRENCY`` the job slots.
"""

from __future__ import annotations

import atexit
import fcntl
import io
import json
import logging
import math
import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from multiprocessing.connection import (
    AuthenticationError,
    Connection,
    answer_challenge,
    deliver_challenge,
)
from pathlib import Path

import numpy as np

from landscape_app.settings import cache_dir

__all__ = [
    "ComputeClient",
    "TaskError",
    "decode_payload",
    "encode_payload",
    "get_client",
    "run_task",
    "run_task_bytes",
    "server_info",
    "shutdown",
]

log = logging.getLogger("landscape.compute_server")

ProgressFn = Callable[[float, str], None]
_ROOT = Path(__file__).resolve().parents[1]
_SERVER_MODULE = "landscape_app.compute_server"
DEFAULT_BUDGET_S = 120.0
_GRACE_S = 15.0           # the client waits this much past the budget before giving up
# The progress text of a job that waits for its turn (a slot here, or the CPU turn of
# landscape_app.tasks.run): the time budget starts anew once the job computes, on both sides.
QUEUED_TEXT = "waiting for the computation ahead of this one"
_START_TIMEOUT_S = 90.0   # a cold start imports JAX (and may compile)
_MAX_REQUEST_BYTES = 1 << 20
_PROGRESS_INTERVAL_S = 0.1
# A job still running this long past its deadline has not reached a progress point since: it
# is stuck (a wedged XLA thread pool, a kernel far beyond its budget). The server then exits
# so that the next request starts a fresh one; LANDSCAPE_STUCK_AFTER_S overrides (tests).
_STUCK_AFTER_S = 60.0


class TaskError(Exception):
    """A task did not produce a result.

    ``kind`` is ``"input"`` (the user can fix it; show ``message`` next to the controls),
    ``"timeout"`` (over the time budget) or ``"internal"`` (a bug or a crashed server;
    the message carries a reference into the server log, never a traceback).
    """

    def __init__(self, message: str, kind: str = "internal") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


class _Cancelled(Exception):
    """The client went away: abandon the job."""


class _OverBudget(Exception):
    """The job ran past its time budget."""


class _CallerAbort(Exception):
    """The caller's progress callback raised: re-raised unchanged by :func:`run_task`."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


# --------------------------------------------------------------------------- payload codec

_MAGIC = b"LSP1"


def encode_payload(payload: Mapping) -> bytes:
    """A task payload to bytes: JSON for the structure and scalars, ``.npz`` for arrays.

    Arrays (numpy or anything with ``__array__``, e.g. JAX arrays) are stored once each in an
    uncompressed ``.npz`` (object arrays refused) and referenced from the JSON as
    ``{"__array__": "a3"}``; tuples become lists, numpy scalars Python numbers, NaN/inf stay
    (Python's JSON dialect). :func:`decode_payload` inverts it without unpickling anything.
    """
    arrays: dict[str, np.ndarray] = {}

    def walk(value):
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise TypeError(f"payload keys must be strings, got {k!r}")
                out[k] = walk(v)
            if "__array__" in out:
                raise TypeError("'__array__' is a reserved payload key")
            return out
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        if value is None or isinstance(value, (bool, str, int, float)):
            return value
        if isinstance(value, np.generic) and value.shape == ():
            return value.item()
        if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise TypeError("object arrays cannot be sent")
            name = f"a{len(arrays)}"
            arrays[name] = array
            return {"__array__": name}
        raise TypeError(f"cannot send a {type(value).__name__} in a payload")

    header = json.dumps(walk(payload), separators=(",", ":")).encode()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return _MAGIC + struct.pack("<Q", len(header)) + header + buffer.getvalue()


def decode_payload(data: bytes) -> dict:
    """Inverse of :func:`encode_payload` (``allow_pickle=False``); ValueError if damaged."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[:4]) != _MAGIC:
        raise ValueError("not a Landscape payload")
    data = bytes(data)
    (n,) = struct.unpack("<Q", data[4:12])
    if n > len(data) - 12:
        raise ValueError("truncated Landscape payload")
    structure = json.loads(data[12:12 + n])
    with np.load(io.BytesIO(data[12 + n:]), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}

    def walk(value):
        if isinstance(value, dict):
            if set(value) == {"__array__"}:
                return arrays[value["__array__"]]
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(structure)


def _send_json(conn: Connection, message: Mapping) -> None:
    conn.send_bytes(b"J" + json.dumps(message, separators=(",", ":")).encode())


def _parse_message(data: bytes) -> tuple[str, object]:
    """``("json", dict)`` or ``("result", payload bytes)``."""
    if data[:1] == b"J":
        return "json", json.loads(data[1:])
    if data[:1] == b"R":
        return "result", data[1:]
    raise ValueError("unknown message")


# --------------------------------------------------------------------------- server side


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:64]


def _state_path() -> Path:
    return cache_dir() / f"compute-server-{_host()}.json"


def _lock_path() -> Path:
    return cache_dir() / f"compute-server-{_host()}.lock"


def _env_seconds(name: str, default: float) -> float:
    """A positive, finite number of seconds from the environment variable ``name``."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


def _time_budget() -> float:
    return _env_seconds("LANDSCAPE_TIME_BUDGET_S", DEFAULT_BUDGET_S)


class _Server:
    """The listening side; see the module docstring for the protocol."""

    def __init__(self, owner_pid: int | None, state_path: Path, concurrency: int) -> None:
        os.environ["LANDSCAPE_INPROCESS"] = "1"
        from landscape_app import tasks  # imports compute, hence JAX: only here

        self.tasks = tasks
        self.state_path = state_path
        self.authkey = secrets.token_bytes(32)
        self.slots = threading.BoundedSemaphore(max(1, concurrency))
        self.lock = threading.Lock()
        self.clients: set[int] = {owner_pid} if owner_pid else set()
        self.active = 0
        self.deadlines: dict[int, list[float]] = {}  # running jobs' deadlines, by thread
        self.runs: dict[str, int] = {}
        self.started = time.time()
        self.stopping = threading.Event()
        self.device = tasks.device_summary()
        self.sock, self.address, self.family = self._listen(state_path)

    @staticmethod
    def _listen(state_path: Path) -> tuple[socket.socket, object, str]:
        path = state_path.with_suffix(f".{os.getpid()}.sock")
        if len(str(path)) < 100:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)  # the socket file is the user's alone
            try:
                sock.bind(str(path))
            finally:
                os.umask(old)
            sock.listen(64)
            return sock, str(path), "AF_UNIX"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        return sock, list(sock.getsockname()), "AF_INET"

    def publish(self) -> None:
        """Write the state file atomically (mode 0600): clients can connect from now on."""
        state = {"pid": os.getpid(), "address": self.address, "family": self.family,
                 "authkey": self.authkey.hex(), "started": self.started}
        tmp = self.state_path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_path)

    def serve_forever(self) -> None:
        self.publish()
        log.info("compute server %d listening on %s (%s)", os.getpid(), self.address,
                 self.device.get("platform"))
        threading.Thread(target=self._watchdog, daemon=True).start()
        self.sock.settimeout(0.5)
        while not self.stopping.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                raise
            raw.setblocking(True)
            conn = Connection(raw.detach())
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        self._cleanup()

    def _cleanup(self) -> None:
        self.sock.close()
        if self.family == "AF_UNIX":
            try:
                os.unlink(self.address)
            except OSError:
                pass
        try:  # remove the state file only if it still describes this server
            if json.loads(self.state_path.read_text()).get("pid") == os.getpid():
                self.state_path.unlink()
        except (OSError, ValueError):
            pass
        log.info("compute server %d stopped", os.getpid())

    def _watchdog(self) -> None:
        """Stop when idle and every client process has exited (or released the server);
        exit at once when a job is stuck (see ``_STUCK_AFTER_S``)."""
        stuck_after = _env_seconds("LANDSCAPE_STUCK_AFTER_S", _STUCK_AFTER_S)
        while not self.stopping.wait(min(2.0, stuck_after / 4)):
            with self.lock:
                self.clients = {pid for pid in self.clients if _pid_alive(pid)}
                orphaned = not self.clients and self.active == 0
                now = time.monotonic()
                stuck = sum(now > d[0] + stuck_after for d in self.deadlines.values())
            if stuck:
                log.error("%d job(s) stuck %g s past their time budget; exiting so that the "
                          "next request starts a fresh compute server", stuck, stuck_after)
                self._cleanup()
                os._exit(3)  # stuck threads cannot be stopped from Python
            if orphaned:
                log.info("no client process is left; stopping")
                self.stop()

    def stop(self) -> None:
        self.stopping.set()

    # -- one connection --------------------------------------------------------------
    def _handle(self, conn: Connection) -> None:
        try:
            deliver_challenge(conn, self.authkey)
            answer_challenge(conn, self.authkey)
            if not conn.poll(30):
                return
            kind, request = _parse_message(conn.recv_bytes(_MAX_REQUEST_BYTES))
            if kind != "json" or not isinstance(request, dict):
                return
            pid = request.get("pid")
            if isinstance(pid, int) and pid > 0:
                with self.lock:
                    self.clients.add(pid)
            op = request.get("op")
            if op == "task":
                self._job(conn, request)
            elif op == "ping":
                _send_json(conn, {"type": "pong", **self.info()})
            elif op == "release":
                with self.lock:
                    self.clients.discard(pid)
                _send_json(conn, {"type": "ok"})
            elif op == "shutdown":
                _send_json(conn, {"type": "ok"})
                self.stop()
        except (EOFError, OSError, AuthenticationError, ValueError):
            pass  # the client went away or did not authenticate: nothing to answer
        finally:
            conn.close()

    def info(self) -> dict:
        with self.lock:
            return {"pid": os.getpid(), "device": self.device, "runs": dict(self.runs),
                    "active": self.active, "clients": sorted(self.clients),
                    "uptime_s": time.time() - self.started}

    def _job(self, conn: Connection, request: dict) -> None:
        name, settings = request.get("task"), request.get("settings")
        budget = request.get("budget_s")
        if not isinstance(budget, (int, float)) or not 0 < budget <= 24 * 3600:
            budget = _time_budget()
        deadline = [time.monotonic() + budget]
        last_sent = [0.0]

        def check() -> None:
            if conn.poll(0):  # the client only ever writes to cancel; EOF means it left
                try:
                    conn.recv_bytes(1024)
                except (EOFError, OSError):
                    pass
                raise _Cancelled
            if time.monotonic() > deadline[0]:
                raise _OverBudget

        def progress(fraction: float, text: str = "") -> None:
            queued = text == QUEUED_TEXT
            if queued:  # waiting is not computing: the budget counts from the turn on
                deadline[0] = time.monotonic() + budget
            check()
            now = time.monotonic()
            if now - last_sent[0] < _PROGRESS_INTERVAL_S and fraction < 1:
                return
            last_sent[0] = now
            try:
                _send_json(conn, {"type": "progress", "fraction": float(fraction),
                                  "text": str(text)[:200], "queued": queued})
            except OSError:
                raise _Cancelled from None

        try:
            while not self.slots.acquire(timeout=0.25):
                progress(0.0, QUEUED_TEXT)
            try:
                with self.lock:
                    self.active += 1
                    self.deadlines[threading.get_ident()] = deadline
                    if isinstance(name, str) and name in self.tasks.TASKS:
                        self.runs[name] = self.runs.get(name, 0) + 1
                check()
                payload = self.tasks.run(name, settings, progress)
                blob = encode_payload(payload)
            finally:
                with self.lock:
                    self.active -= 1
                    self.deadlines.pop(threading.get_ident(), None)
                self.slots.release()
            conn.send_bytes(b"R" + blob)
        except _Cancelled:
            log.info("task %s abandoned: the client disconnected", name)
        except _OverBudget:
            log.info("task %s stopped after its %g s budget", name, budget)
            _send_error(conn, _budget_message(budget), "timeout")
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a message
            message, kind = _classify(exc, name)
            _send_error(conn, message, kind)


def _send_error(conn: Connection, message: str, kind: str) -> None:
    try:
        _send_json(conn, {"type": "error", "message": message, "kind": kind})
    except OSError:
        pass


def _budget_message(budget: float) -> str:
    return (f"this computation took longer than its time budget of {budget:g} s and was "
            "stopped; try a smaller grid, fewer steps or a smaller model.")


def _classify(exc: BaseException, task: object) -> tuple[str, str]:
    """``(message, kind)`` for an exception of a task; logs the traceback of bugs."""
    from compute._errors import InputError

    if isinstance(exc, InputError):
        return str(exc), "input"
    if isinstance(exc, MemoryError):
        return "out of memory: use a smaller grid, model or dataset.", "input"
    ref = secrets.token_hex(4)
    log.error("internal error %s in task %r:\n%s", ref, task,
              "".join(traceback.format_exception(exc)))
    label = task if isinstance(task, str) and len(task) < 40 else "a"
    return (f"internal error in the {label} computation (reference {ref}); the details are "
            "in the compute server's log.", "internal")


def _pid_alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - no such process, or no permission to look
        return False


def _is_our_server(pid: int) -> bool:
    try:
        import psutil

        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and _SERVER_MODULE in " ".join(
            proc.cmdline())
    except Exception:  # noqa: BLE001
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m landscape_app.compute_server [--owner PID] [--state PATH]``."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m {_SERVER_MODULE}")
    parser.add_argument("--owner", type=int, default=None,
                        help="pid of the process that started the server")
    parser.add_argument("--state", default=None, help="state file (default: in the cache)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LANDSCAPE_LOG_LEVEL", "INFO"),
                        format=f"[compute-server {os.getpid()}] %(levelname)s %(message)s")
    logging.getLogger("jax").setLevel(logging.WARNING)  # e.g. "no TPU backend" at start
    try:
        concurrency = int(os.environ.get("LANDSCAPE_COMPUTE_CONCURRENCY", "2"))
    except ValueError:
        concurrency = 2
    server = _Server(args.owner, Path(args.state) if args.state else _state_path(),
                     concurrency)
    server.serve_forever()
    return 0


# --------------------------------------------------------------------------- client side


class ComputeClient:
    """Talks to this host's compute server, starting (or restarting) it when needed."""

    def __init__(self) -> None:
        self._state: dict | None = None
        self._lock = threading.Lock()
        self._started: list[subprocess.Popen] = []
        self._registered_at_exit = False

    # -- the server's life -------------------------------------------------------------
    def _read_state(self) -> dict | None:
        try:
            state = json.loads(_state_path().read_text())
            int(state["pid"])
            bytes.fromhex(state["authkey"])
            state["address"], state["family"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return state

    def _connect(self, state: dict, timeout: float = 10.0) -> Connection:
        address = state["address"]
        if state["family"] == "AF_INET":
            address = tuple(address)
        family = state["family"]
        # multiprocessing's Client has no timeout: connect with one, then hand over.
        sock = socket.socket(socket.AF_UNIX if family == "AF_UNIX" else socket.AF_INET,
                             socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            sock.setblocking(True)
        except OSError:
            sock.close()
            raise
        conn = Connection(sock.detach())
        try:
            if not conn.poll(timeout):
                raise ConnectionError("the compute server did not answer")
            answer_challenge(conn, bytes.fromhex(state["authkey"]))
            deliver_challenge(conn, bytes.fromhex(state["authkey"]))
        except BaseException:
            conn.close()
            raise
        return conn

    def _ping(self, state: dict, timeout: float = 10.0) -> dict | None:
        try:
            conn = self._connect(state, timeout)
        except (OSError, EOFError, AuthenticationError, ConnectionError):
            return None
        try:
            _send_json(conn, {"op": "ping", "pid": os.getpid()})
            if not conn.poll(timeout):
                return None
            kind, message = _parse_message(conn.recv_bytes())
            return message if kind == "json" and message.get("type") == "pong" else None
        except (OSError, EOFError, ValueError):
            return None
        finally:
            conn.close()

    def ensure_server(self) -> dict:
        """The state of a live server, starting one if there is none (under the host lock)."""
        with self._lock, _flock(_lock_path()):
            state = self._read_state()
            if state is not None and _pid_alive(state["pid"]):
                answered = self._ping(state)
                if answered is None and _is_our_server(state["pid"]):
                    answered = self._ping(state, timeout=30.0)  # busy? one longer chance
                if answered is not None:
                    self._state = state
                    self._register_exit()
                    return state
                if _is_our_server(state["pid"]):
                    log.warning("compute server %d does not answer; replacing it",
                                state["pid"])
                    _terminate(state["pid"])
            self._state = self._start()
            self._register_exit()
            return self._state

    def _start(self) -> dict:
        for proc in self._started:
            proc.poll()  # reap servers that ended
        self._started = [p for p in self._started if p.returncode is None]
        try:
            _state_path().unlink()
        except FileNotFoundError:
            pass
        _remove_stale_sockets()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(_ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
        env["LANDSCAPE_INPROCESS"] = "1"
        env["LANDSCAPE_CACHE_DIR"] = str(cache_dir())
        # ``-c`` rather than ``-m``: runpy would warn when the package already imported us.
        entry = f"import sys; from {_SERVER_MODULE} import main; sys.exit(main(sys.argv[1:]))"
        proc = subprocess.Popen(
            [sys.executable, "-c", entry, "--owner", str(os.getpid())],
            env=env, cwd=str(_ROOT), stdin=subprocess.DEVNULL, start_new_session=True,
            close_fds=True)
        self._started.append(proc)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TaskError(f"the compute server failed to start (exit code "
                                f"{proc.returncode}); see the server log.", "internal")
            state = self._read_state()
            if state is not None and state["pid"] == proc.pid:
                log.info("started compute server %d", proc.pid)
                return state
            time.sleep(0.05)
        _terminate(proc.pid)
        raise TaskError(f"the compute server did not start within {_START_TIMEOUT_S:g} s.",
                        "internal")

    def _register_exit(self) -> None:
        if not self._registered_at_exit:
            self._registered_at_exit = True
            pid = os.getpid()
            atexit.register(self._release_at_exit, pid)

    def _release_at_exit(self, pid: int) -> None:
        """At exit of a process that used the server: tell it so; it stops when unused."""
        if os.getpid() != pid:  # a forked child inherited the hook: not its business
            return
        state = self._state or self._read_state()
        if state is None:
            return
        try:
            conn = self._connect(state, timeout=2.0)
            try:
                _send_json(conn, {"op": "release", "pid": pid})
                conn.poll(2.0)
            finally:
                conn.close()
        except (OSError, EOFError, AuthenticationError, ConnectionError):
            pass
        for proc in self._started:  # reap a server this process started, if it stops soon
            try:
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass

    def _open(self) -> Connection:
        state = self._state or self._read_state()
        if state is not None:
            try:
                return self._connect(state)
            except (OSError, EOFError, AuthenticationError, ConnectionError):
                pass
        state = self.ensure_server()
        try:
            return self._connect(state)
        except (OSError, EOFError, AuthenticationError, ConnectionError) as exc:
            raise TaskError(f"cannot reach the compute server ({type(exc).__name__}).",
                            "internal") from None

    # -- requests ----------------------------------------------------------------------
    def run_bytes(self, task: str, settings: Mapping, progress: ProgressFn | None = None,
                  budget_s: float | None = None) -> bytes:
        """Run ``task`` on the server; the encoded payload (see :func:`encode_payload`)."""
        budget = _time_budget() if budget_s is None else float(budget_s)
        try:
            request = json.dumps({"op": "task", "task": task, "settings": dict(settings),
                                  "budget_s": budget, "pid": os.getpid()},
                                 separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            raise TaskError("the settings must be plain JSON values.", "input") from None
        conn = self._open()
        deadline = time.monotonic() + budget + _GRACE_S
        try:
            conn.send_bytes(b"J" + request.encode())
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TaskError(_budget_message(budget), "timeout")
                if not conn.poll(min(remaining, 1.0)):
                    continue
                kind, message = _parse_message(conn.recv_bytes())
                if kind == "result":
                    return message
                if message.get("type") == "progress":
                    if message.get("queued") is True:  # the server's budget restarts too
                        deadline = time.monotonic() + budget + _GRACE_S
                    if progress is not None:
                        progress(float(message.get("fraction", 0.0)),
                                 str(message.get("text", "")))
                elif message.get("type") == "error":
                    raise TaskError(str(message.get("message")), str(message.get("kind")))
        except (EOFError, ConnectionError, OSError):
            self._state = None
            raise TaskError("the compute server stopped during this computation (it restarts "
                            "on the next request); if this repeats, the request is too large "
                            "for the server's memory.", "internal") from None
        finally:
            conn.close()  # closing mid-job (cancel, timeout, error) abandons the job

    def run(self, task: str, settings: Mapping, progress: ProgressFn | None = None,
            budget_s: float | None = None) -> dict:
        """Run ``task`` on the server; its payload (numpy arrays and JSON values)."""
        return decode_payload(self.run_bytes(task, settings, progress, budget_s))

    def ping(self) -> dict:
        """The server's ``{pid, device, runs, active, clients, uptime_s}`` (starts it)."""
        state = self.ensure_server()
        info = self._ping(state)
        if info is None:
            raise TaskError("the compute server does not answer.", "internal")
        return info

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the host's server now (whoever started it) and wait for it to exit."""
        state = self._read_state()
        self._state = None
        if state is None:
            return
        try:
            conn = self._connect(state, timeout=2.0)
            try:
                _send_json(conn, {"op": "shutdown"})
                conn.poll(2.0)
            finally:
                conn.close()
        except (OSError, EOFError, AuthenticationError, ConnectionError):
            pass
        deadline = time.monotonic() + timeout
        while _is_our_server(state["pid"]) and time.monotonic() < deadline:
            for proc in self._started:
                proc.poll()
            time.sleep(0.05)
        if _is_our_server(state["pid"]):
            _terminate(state["pid"])
        for proc in self._started:
            proc.poll()


def _remove_stale_sockets() -> None:
    """Delete the socket files of this host's servers that died without cleaning up."""
    for path in cache_dir().glob(f"compute-server-{_host()}.*.sock"):
        try:
            pid = int(path.suffixes[-2].lstrip("."))
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            path.unlink(missing_ok=True)


@contextmanager
def _flock(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _terminate(pid: int, timeout: float = 3.0) -> None:
    try:
        import psutil

        proc = psutil.Process(pid)
        proc.terminate()
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
    except Exception:  # noqa: BLE001 - already gone
        pass


_client: ComputeClient | None = None
_client_lock = threading.Lock()


def get_client() -> ComputeClient:
    """This process's :class:`ComputeClient` (one per process; reset in forked children)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = ComputeClient()
        return _client


def _after_fork_in_child() -> None:
    global _client, _client_lock
    _client_lock = threading.Lock()
    if _client is not None:  # keep the known address, drop locks and children
        fresh = ComputeClient()
        fresh._state = _client._state
        _client = fresh


os.register_at_fork(after_in_child=_after_fork_in_child)


def _inprocess() -> bool:
    return os.environ.get("LANDSCAPE_INPROCESS") == "1"


def run_task_bytes(name: str, settings: Mapping, progress: ProgressFn | None = None, *,
                   budget_s: float | None = None) -> bytes:
    """Like :func:`run_task` but returns the encoded payload (what the cache stores)."""
    if not _inprocess():
        return get_client().run_bytes(name, settings, progress, budget_s)
    from landscape_app import tasks

    budget = _time_budget() if budget_s is None else float(budget_s)
    deadline = [time.monotonic() + budget]

    def timed_progress(fraction: float, text: str = "") -> None:
        if text == QUEUED_TEXT:
            deadline[0] = time.monotonic() + budget
        if time.monotonic() > deadline[0]:
            raise _OverBudget
        if progress is not None:
            try:
                progress(fraction, text)
            except BaseException as exc:  # the caller's own abort (e.g. a cancelled job)
                raise _CallerAbort(exc) from exc

    try:
        return encode_payload(tasks.run(name, settings, timed_progress))
    except _CallerAbort as abort:
        raise abort.original from None
    except _OverBudget:
        raise TaskError(_budget_message(budget), "timeout") from None
    except TaskError:
        raise
    except Exception as exc:  # noqa: BLE001
        message, kind = _classify(exc, name)
        raise TaskError(message, kind) from None


def run_task(name: str, settings: Mapping, progress: ProgressFn | None = None, *,
             budget_s: float | None = None) -> dict:
    """Run the task ``name`` (see :mod:`landscape_app.tasks`) on ``settings``.

    Dispatches to this host's compute server (started on first use), or runs in this
    process when ``LANDSCAPE_INPROCESS=1`` (Celery workers, the server itself).
    ``progress(fraction, text)`` is called as the job advances; raising from it cancels the
    job. Returns the payload (numpy arrays and JSON values); raises :class:`TaskError`.
    """
    return decode_payload(run_task_bytes(name, settings, progress, budget_s=budget_s))


def server_info() -> dict:
    """The compute server's pid, device and counters (starts it if needed)."""
    return get_client().ping()


def shutdown() -> None:
    """Stop this host's compute server now."""
    get_client().shutdown()


if __name__ == "__main__":
    sys.exit(main())
