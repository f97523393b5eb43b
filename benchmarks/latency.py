"""Dashboard latency over HTTP on loopback (issue 5).

Starts the app as ``make run`` does (``.venv/bin/python app.py``, a free ``PORT``, a fresh
``LANDSCAPE_CACHE_DIR``) and talks to it exactly as the browser does: it reads the page's
Dash config, the callback graph (``/_dash-dependencies``), and posts the same
``/_dash-update-component`` bodies the renderer posts (following the background-callback
protocol — ``cacheKey``/``job`` polling every 250 ms — for jobs that run in the background).

Measures:
  1. cold start: process start → the response that carries the first surface figure
     (page, state callback, path card, plane card), with a fresh cache;
  2. warm surface update, 61 × 61 slice of the default model, the span varied so every
     request misses the cache (p50/p95 over 20);
  3. the same request again: a cache hit (p50/p95 over 20);
  4. the Hessian spectrum of a ~2k-parameter model (its path trained beforehand, untimed).

Goals on the 2-core reference CPU (issue 5): cold ≤ 15 s, warm p50 ≤ 200 ms, hit ≤ 30 ms.
Usage: ``.venv/bin/python benchmarks/latency.py [--repeats 20]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from landscape_app.callbacks import KEY_FNS, plane_key  # noqa: E402  (JAX-free)
from landscape_app.settings import DEFAULTS, validate_settings  # noqa: E402

UI = {"preset": None, "present": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dashboard:
    """The app in a subprocess plus a client that speaks the renderer's protocol."""

    def __init__(self) -> None:
        self.cache = tempfile.mkdtemp(prefix="landscape-bench-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        python = ROOT / ".venv" / "bin" / "python"
        env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1",
               "LANDSCAPE_CACHE_DIR": self.cache}
        env.pop("LANDSCAPE_REDIS_URL", None)
        self.log = open(Path(self.cache) / "server.log", "wb")  # noqa: SIM115
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([str(python if python.exists() else sys.executable),
                                      "app.py"], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.http = requests.Session()
        self.end_id = None
        self.deps: list[dict] = []

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.http.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError("the dashboard did not start")

    def load_page(self) -> None:
        """What the browser fetches before its first callback."""
        page = self.http.get(self.url + "/").text
        config = json.loads(re.search(r'<script id="_dash-config" type="application/json">'
                                      r"(.*?)</script>", page, re.S).group(1))
        self.end_id = config.get("end_id")
        self.http.get(self.url + "/_dash-layout")
        self.deps = self.http.get(self.url + "/_dash-dependencies").json()

    def dependency(self, first_input: str, output_part: str) -> dict:
        for d in self.deps:
            names = [f"{i['id']}.{i['property']}" for i in d["inputs"]]
            if names and names[0] == first_input and output_part in d["output"] \
                    and not d.get("clientside_function"):
                return d
        raise KeyError((first_input, output_part))

    def post(self, dep: dict, values: dict, changed: list[str], extra: dict | None = None):
        """POST one callback; ``values`` maps "id.prop" to the value sent (None otherwise)."""
        outputs = []
        for part in dep["output"].strip(".").split("..."):
            cid, prop = part.rsplit(".", 1)
            outputs.append({"id": cid, "property": prop.split("@")[0]})
        body = {
            "output": dep["output"], "outputs": outputs,
            "inputs": [{"id": i["id"], "property": i["property"],
                        "value": values.get(f"{i['id']}.{i['property']}")}
                       for i in dep["inputs"]],
            "state": [{"id": s["id"], "property": s["property"],
                       "value": values.get(f"{s['id']}.{s['property']}")}
                      for s in dep["state"]],
            "changedPropIds": changed,
        }
        params = {"endId": self.end_id} if self.end_id else {}
        params.update(extra or {})
        r = self.http.post(self.url + "/_dash-update-component", params=params, json=body)
        if r.status_code == 204:
            return None
        r.raise_for_status()
        return r.json()

    def background(self, dep: dict, values: dict, changed: list[str],
                   interval: float = 0.25) -> dict:
        """Start a background job and poll it as the renderer does until it answers."""
        first = self.post(dep, values, changed)
        handles = {"cacheKey": first["cacheKey"], "job": first["job"]}
        blank = {k: None for k in values}
        while True:
            time.sleep(interval)
            data = self.post(dep, blank, changed, handles)
            if data and "response" in data:
                return data

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        code = "from landscape_app import compute_server as c\nc.get_client().shutdown()\n"
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       env={**os.environ, "LANDSCAPE_CACHE_DIR": self.cache}, timeout=30,
                       check=False)
        self.log.close()
        shutil.rmtree(self.cache, ignore_errors=True)


def view_of(**overrides) -> dict:
    clean, errors = validate_settings({**DEFAULTS, **overrides})
    if errors:
        raise ValueError(errors)
    return {**clean, "compare": None, "many_starts": False, "critical": False}


def card_values(panel: str, view: dict, after: dict[str, str], ui: dict = UI) -> dict:
    values = {"settings-store.data": view, "ui-store.data": ui}
    for p, key in after.items():
        values[f"{p}-key.data"] = key
        values[f"{p}-cancel.n_clicks"] = 0
    return values


def plane_request(dash: Dashboard, view: dict, ui: dict = UI) -> tuple[float, dict]:
    dep = dash.dependency("settings-store.data", "plane-key.data")
    start = time.perf_counter()
    data = dash.post(dep, card_values("plane", view, {"path": KEY_FNS["path"](view)}, ui),
                     ["settings-store.data"])
    seconds = time.perf_counter() - start
    if not data or "surface-graph" not in data["response"]:
        raise RuntimeError(f"no surface in the answer: {str(data)[:300]}")
    return seconds, data


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    dash = Dashboard()
    try:
        # 1. cold start → first surface, as the browser sequences it
        dash.wait_ready()
        dash.load_page()
        sync = dash.dependency("url.search", "settings-store.data")
        state = dash.post(sync, {"url.search": ""}, ["url.search"])
        view = state["response"]["settings-store"]["data"]
        path_dep = dash.dependency("settings-store.data", "path-key.data")
        path = dash.post(path_dep, card_values("path", view, {}), ["settings-store.data"])
        path_key = path["response"]["path-key"]["data"]
        plane_dep = dash.dependency("settings-store.data", "plane-key.data")
        first = dash.post(plane_dep, card_values("plane", view, {"path": path_key}),
                          ["path-key.data"])
        cold = time.perf_counter() - dash.started
        assert "surface-graph" in first["response"], str(first)[:300]

        # 2. warm 61×61 updates (every span new: cache misses); one untimed to compile
        plane_request(dash, view_of(grid=61, span=0.9))
        warm = [plane_request(dash, view_of(grid=61, span=1.0 + 0.01 * i))[0]
                for i in range(args.repeats)]

        # 3. the same request again: a cache read
        again = view_of(grid=61, span=1.0)
        hits = [plane_request(dash, again)[0] for _ in range(args.repeats)]
        # 3b. a cached result drawn anew (presentation mode: same result, other fonts)
        redraw = [plane_request(dash, view_of(grid=61, span=1.0 + 0.01 * i),
                                {"preset": None, "present": True})[0]
                  for i in range(args.repeats)]

        # 4. spectrum of a ~2k-parameter model (its path computed first, untimed)
        big = view_of(widths=[40, 40])
        from landscape_app.settings import dataset_shape, n_params

        rows, d_x, d_y, _ = dataset_shape(big)
        P = n_params([d_x, 40, 40, d_y], False)
        job_dep = dash.dependency("path-job.data", "path-key.data")
        dash.background(job_dep, {"path-job.data": {"run": True, "view": big,
                                                    "key": KEY_FNS["path"](big)},
                                  "ui-store.data": UI}, ["path-job.data"])
        spec_dep = dash.dependency("settings-store.data", "spectrum-key.data")
        start = time.perf_counter()
        routed = dash.post(spec_dep, card_values("spectrum", big, {"plane": plane_key(big)}),
                           ["settings-store.data"])
        job = routed["response"].get("spectrum-job", {}).get("data")
        if job and job.get("run"):
            bg_dep = dash.dependency("spectrum-job.data", "spectrum-key.data")
            result = dash.background(bg_dep, {"spectrum-job.data": job, "ui-store.data": UI},
                                     ["spectrum-job.data"])
            mode = "background job"
        else:
            result, mode = routed, "in the request"
        spectrum_s = time.perf_counter() - start
        verdict = result["response"]["verdict"]["children"]
        status = json.dumps(result["response"]["spectrum-status"]["children"])
        computed = re.search(r"computed in ([0-9.]+ m?s)", status)
    finally:
        dash.stop()

    p50, p95 = pct(warm, 0.5), pct(warm, 0.95)
    h50, h95 = pct(hits, 0.5), pct(hits, 0.95)
    print("Landscape dashboard latency over HTTP on loopback "
          f"({os.cpu_count()} CPUs; fresh cache; times as the browser sees them)")
    print(f"  cold start → first surface (41×41): {cold:6.2f} s      goal ≤ 15 s   "
          f"({cold / 15:.2f}× the goal)")
    print(f"  warm 61×61 surface update, n={len(warm)}: p50 {1e3 * p50:6.0f} ms, "
          f"p95 {1e3 * p95:6.0f} ms   goal p50 ≤ 200 ms ({p50 / 0.2:.2f}×)")
    print(f"  same request again (cache hit), n={len(hits)}: p50 {1e3 * h50:6.1f} ms, "
          f"p95 {1e3 * h95:6.1f} ms   goal ≤ 30 ms ({h50 / 0.03:.2f}×)")
    r50 = pct(redraw, 0.5)
    print(f"  cached result drawn anew (other fonts), n={len(redraw)}: p50 {1e3 * r50:6.1f} ms, "
          f"p95 {1e3 * pct(redraw, 0.95):6.1f} ms")
    print(f"  cache hit vs miss: {p50 / h50:.1f}× faster")
    print(f"  warm misses (ms): {' '.join(f'{1e3 * w:.0f}' for w in warm)}")
    print(f"  spectrum at the end of the path, {P:,} parameters ({mode}): {spectrum_s:6.2f} s "
          f"(compute {computed.group(1) if computed else '?'}; verdict: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
