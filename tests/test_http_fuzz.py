"""The running dashboard under hostile HTTP input (issue 7).

The server is started as ``make run`` does (``.venv/bin/python app.py``, a free ``PORT``, a
fresh ``LANDSCAPE_CACHE_DIR``; ``tests/browser.py``'s :class:`AppServer`), with the start-up
warm-up off so that only this file's requests compute. Every request here is one the
callback endpoint must survive: truncated JSON, wrong types in every input of every real
callback (the list comes from ``/_dash-dependencies``), huge numbers, NaN strings, deep
nesting, 5 MB strings, unknown outputs, pickled uploads. Each answer must be below 500 and
free of traceback text, and ``/healthz`` must keep answering within 1 s throughout.

``LANDSCAPE_FUZZ_URL=http://host:port`` points the file at a server that is already running
instead (a deployment, or gunicorn).
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.browser import AppServer

pytestmark = pytest.mark.slow  # one real server for the module (≈ 5 s to start, 40 s in all)

ROOT = Path(__file__).resolve().parents[1]
DISPATCH = "/_dash-update-component"
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/', "Werkzeug Debugger",
                     "site-packages")


# --------------------------------------------------------------------------- HTTP helpers


def http(url: str, data: bytes | None = None, *, headers: dict | None = None,
         method: str | None = None, timeout: float = 60.0) -> tuple[int, bytes]:
    """(status, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post_json(base: str, body: object, *, query: str = "", timeout: float = 60.0):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http(base + DISPATCH + query, raw, timeout=timeout)


def layout_values(node: object, out: dict | None = None) -> dict:
    """``{(id, property): value}`` of every component with an id in ``/_dash-layout``."""
    out = {} if out is None else out
    if isinstance(node, dict):
        if "props" in node and "type" in node:
            props = node["props"] or {}
            cid = props.get("id")
            if cid is not None:
                key = json.dumps(cid, sort_keys=True, separators=(",", ":")) \
                    if isinstance(cid, dict) else cid
                for prop, value in props.items():
                    if prop != "children":
                        out[(key, prop)] = value
            layout_values(props.get("children"), out)
        else:
            for value in node.values():
                layout_values(value, out)
    elif isinstance(node, list):
        for value in node:
            layout_values(value, out)
    return out


def parse_outputs(output: str) -> list[dict]:
    """``{id, property}`` of each output in a dependency's ``output`` string."""
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    result = []
    for part in parts:
        cid, prop = part.rsplit(".", 1)
        if cid.startswith("{"):
            cid = json.loads(cid)
        result.append({"id": cid, "property": prop})
    return result


def callback_request(dep: dict, values: dict, changed: list[str] | tuple = ()) -> dict:
    """The body the browser posts for ``dep`` (an entry of ``/_dash-dependencies``).

    ``values`` maps ``(id, property)`` to the value the browser holds; pattern-matching
    (``ALL``) inputs are sent as empty lists, as the renderer does when nothing matches.
    """
    def fill(specs):
        entries = []
        for spec in specs:
            if spec["id"].startswith("{"):
                entries.append([])
            else:
                entries.append({**spec, "value": values.get((spec["id"], spec["property"]))})
        return entries

    outputs = parse_outputs(dep["output"])
    multi = dep["output"].startswith("..")
    return {"output": dep["output"], "outputs": outputs if multi else outputs[0],
            "inputs": fill(dep["inputs"]), "state": fill(dep["state"]),
            "changedPropIds": list(changed)}


def plotly_array(value: object) -> np.ndarray:
    """A figure array as Plotly's JSON holds it: a list, or ``{"dtype", "bdata", "shape"}``."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            dims = [int(d) for d in str(shape).split(",")]
            data = data.reshape(dims)
        return data
    return np.asarray(value, dtype=np.float64)


def assert_clean_answer(status: int, body: bytes, what: str) -> None:
    assert status < 500, f"{what}: HTTP {status}: {body[:300]!r}"
    text = body[:200_000].decode("utf-8", "replace")
    for marker in TRACEBACK_MARKERS:
        assert marker not in text, f"{what}: traceback text in the answer: {text[:500]}"


class HealthWatch:
    """Polls ``/healthz`` on a thread; ``worst`` is the slowest answer (s), ``failures``
    the polls that did not answer 200 within the timeout."""

    def __init__(self, base: str, every: float = 0.25, timeout: float = 5.0) -> None:
        self.base, self.every, self.timeout = base, every, timeout
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                status, body = http(self.base + "/healthz", timeout=self.timeout)
                if status != 200 or body.strip() != b"ok":
                    self.failures.append(f"HTTP {status}")
            except OSError as exc:
                self.failures.append(repr(exc))
            self.latencies.append(time.perf_counter() - start)
            self._stop.wait(self.every)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server():
    url = os.environ.get("LANDSCAPE_FUZZ_URL")
    if url:
        yield url.rstrip("/")
        return
    with AppServer(env={"LANDSCAPE_WARM": "0"}) as app:
        app.base = app.url
        yield app.url
        # no request may have crashed inside Flask/Dash (an unhandled exception's log line)
        log = app.log_text()
        at = log.find("Exception on /_dash-update-component")
        assert at < 0, f"an unhandled exception in the server log:\n{log[at:at + 3000]}"


@pytest.fixture(scope="module")
def page(server):
    """(dependencies, layout values, the initial view) as the browser first sees them."""
    status, deps = http(server + "/_dash-dependencies")
    assert status == 200
    deps = json.loads(deps)
    status, layout = http(server + "/_dash-layout")
    assert status == 200
    values = layout_values(json.loads(layout))
    sync = next(d for d in deps if "settings-store.data" in d["output"]
                and d["inputs"][0]["id"] == "url")
    status, body = post_json(server, callback_request(sync, values))
    assert status == 200, body[:500]
    view = json.loads(body)["response"]["settings-store"]["data"]
    values[("settings-store", "data")] = view
    return deps, values, view


def server_callbacks(deps: list[dict]) -> list[dict]:
    return [d for d in deps if not d.get("clientside_function")]


def find_dep(deps: list[dict], prefix: str, *, background: bool = False,
             first_input: str | None = None) -> dict:
    for d in deps:
        if d["output"].startswith(prefix) and bool(d.get("background")) == background \
                and not d.get("clientside_function") \
                and (first_input is None or d["inputs"][0]["id"] == first_input):
            return d
    raise LookupError(prefix)


# --------------------------------------------------------------------------- hostile values

FIVE_MB = "x" * (5 * 2**20)


def deep_list(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_VALUES: list[object] = [
    None, True, -1, 0, 1e308, -1e308, 2**63, 10**30, "NaN", "Infinity", "-inf", "1e999", "",
    "💥" * 50, [1, [2, [3]]], {"__proto__": {"x": 1}}, {"points": [{"x": "a", "y": None}]},
    {"run": True, "key": 5, "view": "junk"}, ["on", "off", 3], deep_list(40),
]
# Tokens Python's json writes for float("nan") and float("inf") (not strict JSON, but
# Flask parses them): sent raw.
RAW_NUMBER_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-0", "1" * 5000]


def hostile_bodies(dep: dict, values: dict) -> list[tuple[str, bytes]]:
    """Envelope-level hostile bodies built around a real callback request."""
    good = json.dumps(callback_request(dep, values)).encode()
    bodies = [(f"truncated at {n}", good[:n]) for n in (0, 1, 10, len(good) // 2, len(good) - 1)]
    bodies += [
        ("null", b"null"), ("list", b"[1, 2]"), ("string", b'"output"'), ("number", b"1e308"),
        ("nested 100k", b"[" * 100_000 + b"]" * 100_000),
        ("nested 10k dict", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
        ("nested 70 in inputs", json.dumps({**json.loads(good),
                                             "inputs": deep_list(70)}).encode()),
        ("invalid utf-8", b'{"output": "\xff\xfe"}'),
        ("bom", b"\xef\xbb\xbf" + good),
        ("huge int", b'{"output": ' + b"9" * 100_000 + b"}"),
        ("5 MB output", json.dumps({**json.loads(good), "output": FIVE_MB}).encode()),
        ("unknown output", json.dumps({**json.loads(good),
                                       "output": "nope.children"}).encode()),
        ("clientside output", b""),  # filled in by the test
        ("no inputs", json.dumps({"output": dep["output"]}).encode()),
        ("inputs not a list", json.dumps({**json.loads(good), "inputs": {"a": 1}}).encode()),
        ("input without id", json.dumps({**json.loads(good),
                                         "inputs": [{"value": 1}] * len(dep["inputs"])}
                                        ).encode()),
        ("one input too few", json.dumps({**json.loads(good),
                                          "inputs": json.loads(good)["inputs"][:-1]}).encode()),
        ("one input too many", json.dumps({**json.loads(good), "inputs": [
            *json.loads(good)["inputs"], {"id": "x", "property": "y", "value": 1}]}).encode()),
        ("outputs junk", json.dumps({**json.loads(good), "outputs": [1, "a"]}).encode()),
        ("changedPropIds junk", json.dumps({**json.loads(good),
                                            "changedPropIds": [1, {"a": 2}]}).encode()),
        ("changed unknown prop", json.dumps({**json.loads(good),
                                             "changedPropIds": ["nope.value"]}).encode()),
    ]
    for token in RAW_NUMBER_TOKENS:
        body = json.loads(good)
        body["inputs"][0]["value"] = "@@TOKEN@@"
        bodies.append((f"raw {token[:10]}",
                       json.dumps(body).replace('"@@TOKEN@@"', token).encode()))
    return bodies


# --------------------------------------------------------------------------- tests


def test_served_app_is_hardened(server):
    """The server running app.py has the hardening installed (security headers, 400s)."""
    status, _ = http(server + "/healthz")
    assert status == 200
    req = urllib.request.Request(server + "/")
    with urllib.request.urlopen(req, timeout=30) as r:
        headers = r.headers
    assert headers.get("X-Content-Type-Options") == "nosniff", (
        "landscape_app.create_app does not call landscape_app.hardening.install_hardening")
    status, body = post_json(server, {"output": "nope.children", "inputs": []})
    assert status == 400, body[:300]


def test_envelope_fuzz(server, page):
    deps, values, _ = page
    dep = find_dep(deps, "ctl-widths.value")  # a cheap callback (the depth buttons)
    clientside = next(d for d in deps if d.get("clientside_function"))
    statuses = Counter()
    with HealthWatch(server) as watch:
        for name, body in hostile_bodies(dep, values):
            if name == "clientside output":
                body = json.dumps(callback_request(clientside, values)).encode()
            status, answer = post_json(server, body)
            assert_clean_answer(status, answer, name)
            statuses[status] += 1
        # wrong content type and method
        status, answer = http(server + DISPATCH, b"a=1",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert_clean_answer(status, answer, "form body")
        assert 400 <= status < 500
        status, answer = http(server + DISPATCH, method="GET")  # Dash's catch-all: the page
        assert_clean_answer(status, answer, "GET")
    assert not watch.failures and watch.worst < 1.0, (watch.worst, watch.failures)
    assert statuses[400] >= 20, statuses  # the malformed ones are refused, not run


def test_request_body_over_the_limit_is_refused(server):
    """A body over MAX_CONTENT_LENGTH: 413 (or the connection closed), never a 5xx."""
    from landscape_app.hardening import MAX_REQUEST_BYTES

    body = b'{"output": "' + b"x" * (MAX_REQUEST_BYTES + 1024) + b'"}'
    try:
        status, answer = post_json(server, body, timeout=60)
    except (ConnectionError, urllib.error.URLError) as exc:  # closed before reading it all
        assert "reset" in repr(exc).lower() or "broken" in repr(exc).lower(), exc
    else:
        assert status == 413, (status, answer[:200])
    assert http(server + "/healthz")[0] == 200


def test_wrong_types_in_every_input_of_every_callback(server, page):
    """Each hostile value in each input/state slot of each server-side callback.

    Background callbacks get a few values in their one input only (each such request
    starts a job process).
    """
    deps, values, _ = page
    statuses, raised = Counter(), Counter()
    started = time.perf_counter()
    with HealthWatch(server) as watch:
        for dep in server_callbacks(deps):
            body = callback_request(dep, values)
            slots = [("inputs", i) for i in range(len(body["inputs"]))] + \
                    [("state", i) for i in range(len(body["state"]))]
            hostile = HOSTILE_VALUES
            if dep.get("background"):
                slots, hostile = slots[:1], [None, 1e308, "NaN", {"run": True}]
            # every value reaches every callback; each slot gets a rotating share of them
            share = max(4, -(-len(hostile) // max(len(slots), 1)))
            for n, (where, i) in enumerate(slots):
                if isinstance(body[where][i], list):
                    continue  # a pattern-matching input: covered by the random fuzz
                for k in range(min(share, len(hostile))):
                    value = hostile[(n * share + k) % len(hostile)]
                    hostile_body = json.loads(json.dumps(body))
                    hostile_body[where][i]["value"] = value
                    spec = body[where][i]
                    hostile_body["changedPropIds"] = [f"{spec['id']}.{spec['property']}"] \
                        if where == "inputs" else []
                    status, answer = post_json(server, hostile_body)
                    assert_clean_answer(status, answer, f"{dep['output'][:60]} "
                                                        f"{where}[{i}]={str(value)[:30]}")
                    statuses[status] += 1
                    if status == 422:
                        raised[f"{dep['output'][:50]} {spec['id']}.{spec['property']}"] += 1
            # one 5 MB string per callback, in its first input
            if body["inputs"] and not isinstance(body["inputs"][0], list) \
                    and not dep.get("background"):
                big = json.loads(json.dumps(body))
                big["inputs"][0]["value"] = FIVE_MB
                status, answer = post_json(server, big)
                assert_clean_answer(status, answer, f"{dep['output'][:60]} 5 MB")
    print(f"\n{sum(statuses.values())} requests in {time.perf_counter() - started:.1f} s: "
          f"{dict(statuses)}; healthz worst {watch.worst * 1e3:.0f} ms")
    for where, n in raised.most_common():
        print(f"  callback raised (422) ×{n}: {where}")
    assert not watch.failures and watch.worst < 1.0, (watch.worst, watch.failures)


def _random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, -(2**63), 10**20, rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, -1e308, 5e-324, rng.uniform(-1e6, 1e6)])
    if kind == 4:
        return rng.choice(["", "NaN", "inf", "-1e999", "4, 4", "upload:" + "0" * 64,
                           "linear_teacher", "<script>", "\x00", "ü" * rng.randrange(50)])
    if kind == 5:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(20)))
    if kind in (6, 7):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {rng.choice(["run", "key", "view", "x", "points", "steps", "grid", "widths",
                        "lr", "dataset"]): _random_json(rng, depth + 1)
            for _ in range(rng.randrange(5))}


def test_random_payloads(server, page):
    """Random JSON in random slots of random callbacks, with random changedPropIds."""
    deps, values, _ = page
    callbacks = [d for d in server_callbacks(deps) if not d.get("background")]
    rng = random.Random(20240607)
    statuses = Counter()
    with HealthWatch(server) as watch:
        for _ in range(300):
            dep = rng.choice(callbacks)
            body = callback_request(dep, values)
            for where in ("inputs", "state"):
                for i, entry in enumerate(body[where]):
                    if rng.random() < 0.5:
                        if isinstance(entry, list):
                            body[where][i] = [{"id": {"type": "preset", "key": "x"},
                                               "property": "n_clicks",
                                               "value": _random_json(rng)}]
                        else:
                            entry["value"] = _random_json(rng)
            ids = [e for e in body["inputs"] if isinstance(e, dict)]
            body["changedPropIds"] = [f"{e['id']}.{e['property']}" for e in
                                      rng.sample(ids, k=min(len(ids), rng.randrange(3)))]
            status, answer = post_json(server, body)
            assert_clean_answer(status, answer, f"random {dep['output'][:60]}")
            statuses[status] += 1
    print(f"\nrandom payloads: {dict(statuses)}; healthz worst {watch.worst * 1e3:.0f} ms")
    assert not watch.failures and watch.worst < 1.0, (watch.worst, watch.failures)


class _Marker:
    """Unpickling this calls ``open(path, "w")``: a file appears if anything unpickles it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_uploads_are_parsed_without_executing_anything(server, page, tmp_path):
    deps, values, _ = page
    dep = find_dep(deps, "..ctl-dataset.value")
    marker = tmp_path / "UNPICKLED"
    bomb = np.empty(3, dtype=object)
    bomb[:] = [_Marker(str(marker))] * 3
    npz = io.BytesIO()
    np.savez(npz, X=bomb, Y=np.zeros((3, 1)))
    files = {
        "bomb.npz": npz.getvalue(),
        "raw-pickle.npz": pickle.dumps({"X": _Marker(str(marker))}),
        "nan.csv": b"x1,x2,y\n1,2,0\n3,nan,1\n5,6,0\n",
        "junk.csv": bytes(range(256)),
        "empty.npz": b"",
        "script.py": b"print('hi')",
    }
    for name, data in files.items():
        url = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
        body = callback_request(dep, {**values, ("upload", "contents"): url,
                                      ("upload", "filename"): name},
                                changed=["upload.contents"])
        status, answer = post_json(server, body)
        assert_clean_answer(status, answer, name)
        assert status == 200, (name, answer[:300])
        text = answer.decode()
        # the message names the problem; the dataset is not switched to the bad file
        assert '"err-upload"' in text and "upload:" not in text.split('"err-upload"')[0], text
        if name == "nan.csv":
            assert "row 2" in text, text
    assert not marker.exists(), "an uploaded file was unpickled"
    # a malformed data URL and a 21 MiB file (over MAX_UPLOAD_BYTES, under the body limit)
    from landscape_app.settings import LIMITS

    for name, url in [("bad.npz", "data:;base64,!!!!"), ("bad.csv", "no comma at all"),
                      ("big.csv", "data:text/csv;base64," + base64.b64encode(
                          b"a,b\n" + b"1,2\n" * ((LIMITS.MAX_UPLOAD_BYTES + 2**16) // 4)
                      ).decode())]:
        body = callback_request(dep, {**values, ("upload", "contents"): url,
                                      ("upload", "filename"): name},
                                changed=["upload.contents"])
        status, answer = post_json(server, body)
        assert_clean_answer(status, answer, name)
        assert status == 200 and b"err-upload" in answer, answer[:300]


def _card_request(deps, values, view, prefix, changed):
    first = "settings-store"
    dep = find_dep(deps, prefix, first_input=first)
    return callback_request(dep, {**values, ("settings-store", "data"): view}, changed)


def test_overflow_and_divergence_are_drawn(server, page):
    """A surface whose loss overflows float32 is drawn clipped with its cells marked, and a
    divergent path is drawn with the step where it diverged; neither is an error."""
    deps, values, view = page
    overflow = {**view, "model": "mlp", "widths": [16] * 8, "activation": "identity",
                "init_scale": 1000.0, "plane": "random", "span": 1000.0, "center": "init",
                "grid": 11, "precision": "float32", "steps": 5}
    status, answer = post_json(server, _card_request(deps, values, overflow, "..surface-graph",
                                                     ["path-key.data"]), timeout=120)
    assert status == 200, answer[:500]
    for token in (b"NaN", b"Infinity"):  # not JSON: the browser could not parse it
        assert token not in answer
    response = json.loads(answer)["response"]
    names = [t.get("name") or "" for t in response["contour-graph"]["figure"]["data"]]
    marked = [n for n in names if n.startswith("overflow (")]
    assert marked and int(marked[0].split("(")[1].split()[0]) > 0, names
    z = plotly_array(response["contour-graph"]["figure"]["data"][0]["z"])
    assert z.shape == (11, 11) and np.all(np.isfinite(z)), "cells are clipped to finite values"

    divergent = {**view, "lr": 1000.0, "steps": 200}
    status, answer = post_json(server, _card_request(deps, values, divergent, "..path-graph",
                                                     ["settings-store.data"]), timeout=120)
    assert status == 200, answer[:500]
    assert b"NaN" not in answer and b"Infinity" not in answer
    figure = json.loads(answer)["response"]["path-graph"]["figure"]
    shapes = figure["layout"].get("shapes", [])
    assert any(s.get("name") == "diverged" for s in shapes), shapes
    notes = json.dumps(figure["layout"].get("annotations", []))
    assert "diverged at step" in notes


def test_raw_view_cannot_bypass_the_background_route(server, page):
    """A hostile client sends widths as text in the stored view: the work estimate must
    still see a 5k-parameter model and send it to a background job, not compute it inside
    the request (where it holds a web thread for as long as it runs)."""
    deps, values, view = page
    heavy = {**view, "model": "mlp", "widths": "64,64", "activation": "tanh",
             "lambda_every": 0, "steps": 2000, "n_samples": 200}
    started = time.perf_counter()
    status, answer = post_json(server, _card_request(deps, values, heavy, "..path-graph",
                                                     ["settings-store.data"]), timeout=120)
    elapsed = time.perf_counter() - started
    assert status == 200, answer[:300]
    job = json.loads(answer)["response"].get("path-job", {}).get("data")
    assert isinstance(job, dict) and job.get("run"), (
        f"computed in the request ({elapsed:.1f} s) instead of a background job")


def test_healthz_stays_fast_while_a_heavy_job_runs(server, page):
    """A heavy surface runs as a background job; /healthz answers within 1 s throughout."""
    deps, values, view = page
    heavy = {**view, "model": "mlp", "widths": [32, 32], "activation": "tanh",
             "n_samples": 1000, "plane": "random", "center": "init", "grid": 101,
             "lambda_every": 0, "seed": random.SystemRandom().randrange(1, 2**31 - 1)}
    bg = find_dep(deps, "..surface-graph", background=True)
    job = {"run": True, "key": "heavy", "view": heavy}
    body = callback_request(bg, {**values, ("plane-job", "data"): job}, ["plane-job.data"])
    with HealthWatch(server, every=0.1) as watch:
        status, answer = post_json(server, body)
        assert status == 200, answer[:300]
        handles = json.loads(answer)
        assert "cacheKey" in handles and "job" in handles, handles
        query = "?" + "&".join(f"{k}={urllib.request.quote(handles[k])}"
                               for k in ("cacheKey", "job"))
        started, result, polls = time.perf_counter(), None, 0
        while time.perf_counter() - started < 90:
            status, answer = post_json(server, body, query=query)
            assert_clean_answer(status, answer, "job poll")
            polls += 1
            if status == 200 and b'"response"' in answer:
                result = json.loads(answer)
                break
            time.sleep(0.25)
        job_seconds = time.perf_counter() - started
    assert result is not None, "the heavy job did not finish within 90 s"
    figure = result["response"]["contour-graph"]["figure"]
    assert plotly_array(figure["data"][0]["z"]).shape == (101, 101)
    assert job_seconds > 1.0 and len(watch.latencies) >= 10, (job_seconds, watch.latencies)
    assert not watch.failures, watch.failures
    assert watch.worst < 1.0, f"/healthz took {watch.worst:.2f} s while the job ran"


def _run_job(server: str, body: dict, wait: float = 60.0) -> dict:
    """Start a background callback and poll it: its final answer (JSON)."""
    status, answer = post_json(server, body)
    assert_clean_answer(status, answer, "job start")
    handles = json.loads(answer)
    if "response" in handles:
        return handles
    query = "?" + "&".join(f"{k}={urllib.request.quote(handles[k])}"
                           for k in ("cacheKey", "job"))
    started = time.perf_counter()
    while time.perf_counter() - started < wait:
        status, answer = post_json(server, body, query=query)
        assert_clean_answer(status, answer, "job poll")
        if status == 200 and b'"response"' in answer:
            return json.loads(answer)
        time.sleep(0.25)
    raise AssertionError("the job did not answer within the wait")


@pytest.mark.parametrize("job", [[1, 2], "notadict", {"run": True},
                                 {"run": True, "key": "x", "view": [1, 2]}])
def test_malformed_background_job_answers_one_sentence(server, page, job):
    """A hand-made ``path-job`` request: the path status says it is malformed, no traceback."""
    deps, values, _ = page
    bg = find_dep(deps, "..path-graph", background=True)
    body = callback_request(bg, {**values, ("path-job", "data"): job}, ["path-job.data"])
    result = _run_job(server, body)
    status = json.dumps(result["response"]["path-status"]["children"])
    assert "background job request is malformed" in status, status
    assert "Traceback" not in json.dumps(result) and "attribute" not in status


def test_server_is_still_up(server):
    status, body = http(server + "/healthz", timeout=5)
    assert status == 200 and body.strip() == b"ok"
