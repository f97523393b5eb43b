"""A bounded load test of the deployed dashboard (issue 7): many users at once.

Starts gunicorn on loopback with the Dockerfile's command (``gunicorn --config
deploy/gunicorn.conf.py app:server``, read from the Dockerfile's ``CMD``; workers and
threads from the same environment variables as in the image, a fresh
``LANDSCAPE_CACHE_DIR``), warms the result cache with a few views (untimed), then runs
``--users`` simulated users (threads) for ``--seconds``, and stops by itself.

Each user loads the page (``/``, ``/_dash-layout``, ``/_dash-dependencies``), then repeats:
think for 0.5–2 s, then change the view as the browser does after a control changes — the
state callback (controls → ``settings-store``), then the cards in the renderer's order
(path; plane after the path's key; cuts, spectrum and theory after the plane's key), each
with the body the renderer posts to ``/_dash-update-component``. ``--new-share`` of the
changes are new computations (a seed or step size not seen before: the compute server
trains and slices); the rest revisit one of the warmed views (cache reads and figure
drawing). A thread polls ``/healthz`` every 0.5 s throughout.

Prints per-request latency p50/p95/max by kind, errors (any status other than 200/204, a
refused connection or a timeout), throughput, and the ``/healthz`` latency.
Usage: ``.venv/bin/python benchmarks/load.py [--users 20] [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from landscape_app.settings import DEFAULTS, validate_settings  # noqa: E402  (JAX-free)

UI = {"preset": None, "present": False}
CARDS_AFTER_PLANE = ("cuts", "spectrum", "theory")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dockerfile_command() -> list[str]:
    """The Dockerfile's ``CMD`` (exec form), with this venv's gunicorn."""
    text = (ROOT / "Dockerfile").read_text()
    command = json.loads(re.search(r"^CMD\s+(\[.*\])\s*$", text, re.M).group(1))
    assert command[0] == "gunicorn", command
    gunicorn = ROOT / ".venv" / "bin" / "gunicorn"
    return [str(gunicorn) if gunicorn.exists() else shutil.which("gunicorn"), *command[1:]]


class Server:
    """gunicorn serving ``app:server`` in its own session, as the image runs it."""

    def __init__(self) -> None:
        self.cache = tempfile.mkdtemp(prefix="landscape-load-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port),
               "LANDSCAPE_CACHE_DIR": self.cache, "PYTHONPATH": str(ROOT),
               "GUNICORN_LOGLEVEL": "warning"}
        env.pop("LANDSCAPE_REDIS_URL", None)
        self.env = env
        self.log = open(Path(self.cache) / "gunicorn.log", "wb")  # noqa: SIM115
        self.command = dockerfile_command()
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.logs()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer /healthz:\n{self.logs()}")

    def logs(self) -> str:
        return (Path(self.cache) / "gunicorn.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a graceful stop of the master
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        code = ("from landscape_app import compute_server as c\n"
                "try:\n    c.get_client().shutdown()\nexcept Exception:\n    pass\n")
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=self.env, timeout=60,
                       capture_output=True, check=False)
        self.log.close()
        shutil.rmtree(self.cache, ignore_errors=True)


class Client:
    """One simulated browser: a keep-alive session that speaks the renderer's protocol."""

    def __init__(self, url: str, deps: list[dict], end_id: str | None, record) -> None:
        self.url, self.deps, self.end_id, self.record = url, deps, end_id, record
        self.http = requests.Session()

    def load_page(self) -> None:
        for path in ("/", "/_dash-layout", "/_dash-dependencies"):
            self.timed("page", "GET", path)

    def timed(self, kind: str, method: str, path: str, **kwargs) -> requests.Response | None:
        start = time.perf_counter()
        try:
            r = self.http.request(method, self.url + path, timeout=120, **kwargs)
        except requests.RequestException as exc:
            self.record(kind, time.perf_counter() - start, f"{type(exc).__name__}")
            return None
        ok = r.status_code in (200, 204)
        self.record(kind, time.perf_counter() - start, None if ok else f"HTTP {r.status_code}")
        return r if ok else None

    def dependency(self, first_input: str, output_part: str) -> dict:
        for d in self.deps:
            names = [f"{i['id']}.{i['property']}" for i in d["inputs"]]
            if names and names[0] == first_input and output_part in d["output"] \
                    and not d.get("clientside_function") and not d.get("background"):
                return d
        raise KeyError((first_input, output_part))

    def post(self, kind: str, dep: dict, values: dict, changed: list[str]) -> dict | None:
        """POST one callback as the renderer does; ``values`` maps "id.prop" to a value."""
        outputs = []
        for part in dep["output"].strip(".").split("..."):
            cid, prop = part.rsplit(".", 1)
            outputs.append({"id": cid, "property": prop.split("@")[0]})
        multi = dep["output"].startswith("..")
        body = {
            "output": dep["output"], "outputs": outputs if multi else outputs[0],
            "inputs": [{**i, "value": values.get(f"{i['id']}.{i['property']}")}
                       for i in dep["inputs"]],
            "state": [{**s, "value": values.get(f"{s['id']}.{s['property']}")}
                      for s in dep["state"]],
            "changedPropIds": changed,
        }
        params = {"endId": self.end_id} if self.end_id else {}
        r = self.timed(kind, "POST", "/_dash-update-component", params=params, json=body)
        if r is None or r.status_code == 204:
            return None
        return r.json()

    def change_view(self, search: str, label: str) -> None:
        """The requests one control change causes: state callback, then the cards."""
        sync = self.dependency("url.search", "settings-store.data")
        state = self.post(f"state ({label})", sync, {"url.search": search, "ui-store.data": UI},
                          ["url.search"])
        if not state:
            return
        view = state["response"].get("settings-store", {}).get("data")
        if not view:
            return
        keys: dict[str, str] = {}

        def card(panel: str, after: str | None) -> None:
            dep = self.dependency("settings-store.data", f"{panel}-key.data")
            values = {"settings-store.data": view, "ui-store.data": UI}
            changed = ["settings-store.data"]
            if after is not None:
                if after not in keys:
                    return
                values[f"{after}-key.data"] = keys[after]
                values[f"{after}-cancel.n_clicks"] = 0
                changed = [f"{after}-key.data"]
            data = self.post(f"{panel} ({label})", dep, values, changed)
            if data and f"{panel}-key" in data.get("response", {}):
                keys[panel] = data["response"][f"{panel}-key"]["data"]

        card("path", None)
        card("plane", "path")
        for panel in CARDS_AFTER_PLANE:
            card(panel, "plane")


def query(**overrides) -> str:
    """The URL query of a view (what a shared link or a control change sets)."""
    from landscape_app.settings import settings_to_query

    clean, errors = validate_settings({**DEFAULTS, **overrides})
    if errors:
        raise ValueError(errors)
    return "?" + settings_to_query(clean)


CACHED_VIEWS = [query(), query(seed=1), query(lr=0.02), query(plane="random", center="init"),
                query(model="mlp", activation="tanh", widths=[8])]


def new_view(rng: random.Random) -> str:
    """A view nobody asked for before: a fresh seed, sometimes a fresh step size."""
    seed = rng.randrange(10_000, 2**31 - 1)
    if rng.random() < 0.5:
        return query(seed=seed)
    return query(seed=seed, lr=round(rng.uniform(0.01, 0.08), 4))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--new-share", type=float, default=0.3,
                        help="fraction of view changes that are new computations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    lock = threading.Lock()
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    measuring = threading.Event()

    def record(kind: str, seconds: float, error: str | None) -> None:
        if not measuring.is_set():
            return
        group = kind.split(" (")[0] + (" (new)" if "(new)" in kind else
                                       " (cached)" if "(cached)" in kind else "")
        with lock:
            latencies[group].append(seconds)
            if error:
                errors[f"{group}: {error}"] += 1

    server = Server()
    started = time.perf_counter()
    try:
        server.wait_ready()
        page = requests.get(server.url + "/", timeout=30).text
        config = json.loads(re.search(r'<script id="_dash-config" type="application/json">'
                                      r"(.*?)</script>", page, re.S).group(1))
        deps = requests.get(server.url + "/_dash-dependencies", timeout=30).json()
        ready = time.perf_counter() - started

        # warm-up (untimed): the compute server starts, compiles, and caches these views
        warm = Client(server.url, deps, config.get("end_id"), record)
        warm_start = time.perf_counter()
        for search in CACHED_VIEWS:
            warm.change_view(search, "cached")
        warm.change_view(new_view(random.Random(-1)), "new")  # compile the new-view shapes
        warm_seconds = time.perf_counter() - warm_start

        health: list[float] = []
        health_errors: list[str] = []
        stop = threading.Event()

        def watch_health() -> None:
            session = requests.Session()
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    r = session.get(server.url + "/healthz", timeout=5)
                    if r.status_code != 200:
                        health_errors.append(f"HTTP {r.status_code}")
                except requests.RequestException as exc:
                    health_errors.append(type(exc).__name__)
                health.append(time.perf_counter() - start)
                stop.wait(0.5)

        actions = defaultdict(int)

        def user(index: int) -> None:
            rng = random.Random(args.seed * 1000 + index)
            client = Client(server.url, deps, config.get("end_id"), record)
            client.load_page()
            while not stop.is_set():
                stop.wait(rng.uniform(0.5, 2.0))
                if stop.is_set():
                    break
                if rng.random() < args.new_share:
                    client.change_view(new_view(rng), "new")
                    kind = "new"
                else:
                    client.change_view(rng.choice(CACHED_VIEWS), "cached")
                    kind = "cached"
                with lock:
                    actions[kind] += 1

        measuring.set()
        threads = [threading.Thread(target=watch_health, daemon=True)]
        threads += [threading.Thread(target=user, args=(i,), daemon=True)
                    for i in range(args.users)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join(150)  # a user finishes the view change it is in
        wall = time.perf_counter() - t0
        measuring.clear()
        alive = server.proc.poll() is None
    finally:
        server.stop()

    workers = os.environ.get("WEB_CONCURRENCY", "2")
    threads_per = os.environ.get("GUNICORN_THREADS", "4")
    print(f"Landscape load test: {args.users} users for {args.seconds:g} s against gunicorn "
          f"on loopback ({workers} workers × {threads_per} threads, {os.cpu_count()} CPUs), "
          f"{args.new_share:.0%} of view changes new computations")
    command = " ".join([Path(server.command[0]).name, *server.command[1:]])
    print(f"  command: {command}")
    print(f"  gunicorn ready in {ready:.1f} s; warm-up (compute server start, compile, "
          f"{len(CACHED_VIEWS)} views cached) {warm_seconds:.1f} s, untimed")
    total = sum(len(v) for v in latencies.values())
    n_err = sum(errors.values())
    print(f"  view changes: {actions['cached']} cached, {actions['new']} new; "
          f"{total} requests in {wall:.1f} s ({total / wall:.1f}/s); errors: {n_err}")
    print(f"  {'request':<22} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for kind in sorted(latencies):
        v = latencies[kind]
        print(f"  {kind:<22} {len(v):>5} {1e3 * pct(v, 0.5):>8.0f} {1e3 * pct(v, 0.95):>8.0f} "
              f"{1e3 * max(v):>8.0f}")
    every = [x for v in latencies.values() for x in v]
    print(f"  {'all requests':<22} {len(every):>5} {1e3 * pct(every, 0.5):>8.0f} "
          f"{1e3 * pct(every, 0.95):>8.0f} {1e3 * max(every, default=0):>8.0f}")
    print(f"  /healthz every 0.5 s: n={len(health)}, p50 {1e3 * pct(health, 0.5):.0f} ms, "
          f"p95 {1e3 * pct(health, 0.95):.0f} ms, max {1e3 * max(health, default=0):.0f} ms, "
          f"failures {len(health_errors)} (goal: every answer within 1 s)")
    for what, n in sorted(errors.items()):
        print(f"    error ×{n}: {what}")
    print(f"  server still up at the end: {alive}")
    ok = alive and n_err == 0 and not health_errors and max(health, default=0) < 1.0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
