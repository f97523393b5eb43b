"""The compute server: one shared JAX process per host, its protocol and its failure modes.

One server serves the whole test session (starting it imports JAX); tests that kill it
leave the next request to start a new one, which is itself under test.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

# The server inherits this: it enables the helper tasks _sleep, _fail and _stats.
os.environ["LANDSCAPE_TEST_TASKS"] = "1"
os.environ.pop("LANDSCAPE_INPROCESS", None)

from landscape_app import compute_server as cs  # noqa: E402
from landscape_app.settings import DEFAULTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = {**DEFAULTS, "widths": [3], "steps": 60, "lambda_every": 0, "dataset": "swirszcz_d1",
         "model": "mlp", "activation": "tanh", "init": "xavier", "init_scale": 1.0,
         "lr": 0.01}


@pytest.fixture(scope="module")
def server():
    """The session's compute server, able to run the test helper tasks."""
    client = cs.get_client()
    try:
        cs.run_task("_stats", {})
    except cs.TaskError:  # a server started without LANDSCAPE_TEST_TASKS: replace it
        client.shutdown()
    return client


def _wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def _slept() -> int:
    return cs.run_task("_stats", {}).get("slept", 0)


def _numpy_mlp_loss(payload_weights: np.ndarray, layer_sizes, X, Y) -> float:
    """(1/2m)‖f(X) − Y‖² of a tanh MLP with biases, from THEORY.md's flat order."""
    theta, offset, h = np.asarray(payload_weights, np.float64), 0, X
    for k in range(len(layer_sizes) - 1):
        rows, cols = layer_sizes[k + 1], layer_sizes[k]
        W = theta[offset:offset + rows * cols].reshape(rows, cols)
        offset += rows * cols
        b = theta[offset:offset + rows]
        offset += rows
        h = h @ W.T + b
        if k < len(layer_sizes) - 2:
            h = np.tanh(h)
    return 0.5 * np.sum((h - Y) ** 2) / X.shape[0]


# --------------------------------------------------------------------------- payload codec


def test_payload_codec_round_trip():
    payload = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [1, 2.5, None, "x"],
               "c": {"d": (np.int64(3), np.float64(0.25)), "e": np.zeros((0, 4))},
               "nan": float("nan"), "flag": True, "scalar": np.float32(1.5)}
    back = cs.decode_payload(cs.encode_payload(payload))
    assert back["a"].dtype == np.float32 and np.array_equal(back["a"], payload["a"])
    assert back["b"] == [1, 2.5, None, "x"]
    assert back["c"]["d"] == [3, 0.25] and back["c"]["e"].shape == (0, 4)
    assert np.isnan(back["nan"]) and back["flag"] is True and back["scalar"] == 1.5


def test_payload_codec_refuses_objects_and_never_unpickles(tmp_path):
    with pytest.raises(TypeError):
        cs.encode_payload({"a": np.array([object()], dtype=object)})
    with pytest.raises(TypeError):
        cs.encode_payload({"a": {1, 2}})
    with pytest.raises(ValueError):
        cs.decode_payload(b"not a payload")
    # a payload whose array part holds a pickled object array: refused, not executed
    marker = tmp_path / "pwned"
    header = b'{"a":{"__array__":"a0"}}'
    buffer = io.BytesIO()
    evil = np.array([_Evil(str(marker))], dtype=object)
    np.savez(buffer, a0=evil)
    blob = cs._MAGIC + len(header).to_bytes(8, "little") + header + buffer.getvalue()
    with pytest.raises(ValueError):
        cs.decode_payload(blob)
    assert not marker.exists()


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# --------------------------------------------------------------------------- round trips


def test_round_trip_of_a_real_task_matches_numpy(server):
    from compute._datasets import load_dataset

    seen = []
    payload = cs.run_task("path", SMALL, progress=lambda f, text: seen.append((f, text)))
    ds = load_dataset("swirszcz_d1")
    sizes = payload["layer_sizes"]
    assert sizes == [1, 3, 1]
    assert payload["loss"][0] == pytest.approx(_numpy_mlp_loss(payload["init"], sizes, ds.X,
                                                               ds.Y), rel=1e-10)
    assert payload["loss"][-1] == pytest.approx(_numpy_mlp_loss(payload["final"], sizes, ds.X,
                                                                ds.Y), rel=1e-10)
    assert payload["device"]["platform"] in ("cpu", "gpu", "tpu")
    assert seen and all(0 <= f <= 1 for f, _ in seen)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)


def test_server_is_shared_by_processes_on_the_host(server):
    pid = cs.server_info()["pid"]
    code = "from landscape_app.compute_server import server_info; print(server_info()['pid'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) == pid
    assert cs.server_info()["pid"] == pid


# --------------------------------------------------------------------------- errors


def test_input_error_comes_back_as_input(server):
    with pytest.raises(cs.TaskError) as info:
        cs.run_task("path", {**SMALL, "grid": 10**9})
    assert info.value.kind == "input" and "grid must be" in info.value.message
    # an InputError raised deep inside compute (whitening 2 points in 2-D)
    with pytest.raises(cs.TaskError) as info:
        cs.run_task("path", {**DEFAULTS, "dataset": "two_moons", "n_samples": 2,
                             "preprocess": "whiten", "steps": 10})
    assert info.value.kind == "input" and "whiten" in info.value.message
    with pytest.raises(cs.TaskError) as info:
        cs.run_task("no_such_task", DEFAULTS)
    assert info.value.kind == "input" and "unknown task" in info.value.message


def test_internal_error_is_logged_not_sent(server):
    with pytest.raises(cs.TaskError) as info:
        cs.run_task("_fail", {})
    assert info.value.kind == "internal"
    message = info.value.message
    assert "reference" in message
    for leak in ("secret", "passwd", "Traceback", "RuntimeError", ".py"):
        assert leak not in message


def test_time_budget_stops_the_job_with_a_message(server):
    before = _slept()
    with pytest.raises(cs.TaskError) as info:
        cs.run_task("_sleep", {"seconds": 30}, budget_s=0.3)
    assert info.value.kind == "timeout" and "time budget of 0.3 s" in info.value.message
    _wait_for(lambda: cs.server_info()["active"] == 0)
    assert _slept() == before


def test_unserialisable_settings_are_an_input_error(server):
    with pytest.raises(cs.TaskError) as info:
        cs.run_task("path", {"lr": float("nan")})
    assert info.value.kind == "input"


# --------------------------------------------------------------------------- cancellation


class _Stop(Exception):
    pass


def test_client_cancel_abandons_the_job_and_the_server_keeps_serving(server):
    before = _slept()

    def stop(fraction, text):
        raise _Stop

    with pytest.raises(_Stop):  # the caller's own exception, unchanged
        cs.run_task("_sleep", {"seconds": 30}, progress=stop)
    _wait_for(lambda: cs.server_info()["active"] == 0, timeout=5)
    assert _slept() == before
    assert cs.run_task("_sleep", {"seconds": 0.05})["slept"] == 0.05


def test_killed_client_process_cancels_its_job(server):
    before = _slept()
    code = ("from landscape_app.compute_server import run_task; "
            "run_task('_sleep', {'seconds': 60})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        _wait_for(lambda: cs.server_info()["active"] >= 1, timeout=60)
    finally:
        proc.kill()
        proc.wait()
    _wait_for(lambda: cs.server_info()["active"] == 0, timeout=5)
    assert _slept() == before
    assert cs.run_task("_sleep", {"seconds": 0.05})["slept"] == 0.05


def test_two_clients_at_once_and_pings_during_jobs(server):
    before = _slept()
    results, errors = [], []

    def job():
        try:
            results.append(cs.run_task("_sleep", {"seconds": 1.0}))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    most = _wait_for(lambda: cs.server_info()["active"] == 2 and 2, timeout=10)
    active = []
    while any(t.is_alive() for t in threads):
        active.append(cs.server_info()["active"])  # a ping is answered while jobs run
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    assert most == 2 and max(active) <= 2  # the third job waited for a slot
    assert _slept() == before + 3


def test_time_waiting_for_a_turn_does_not_count_against_the_budget(server):
    """Three 1 s jobs with a 1.5 s budget and two slots: the third waits about 1 s for a
    slot, then sleeps 1 s; it must not be stopped as over budget."""
    results, errors = [], []

    def job():
        try:
            results.append(cs.run_task("_sleep", {"seconds": 1.0}, budget_s=1.5))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 3


@pytest.mark.slow
def test_two_index_maps_at_once_both_finish(server):
    """Two Morse-index maps at once each diagonalise a batch of Hessians; jaxlib spreads such
    a batch over XLA's CPU pool, and two of them wedged the pool and the server for good.
    Both must finish, with a full map of Morse indices in [0, n]."""
    settings = [{**DEFAULTS, "explore": "index_map", "imap_grid": 31, "seed": seed}
                for seed in (61, 62)]
    results, errors = {}, []

    def job(s):
        try:
            results[s["seed"]] = cs.run_task("index_map", s, budget_s=120)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(s,), daemon=True) for s in settings]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "the index maps hung"
    assert not errors, errors
    for payload in results.values():
        index = np.asarray(payload["index"])
        assert index.shape == (31, 31)
        assert np.all((index >= 0) & (index <= payload["n_params"]))
    assert cs.run_task("_sleep", {"seconds": 0.01})["slept"] == 0.01  # still serving


# --------------------------------------------------------------------------- restarts


def test_killed_server_restarts_on_the_next_call(server):
    old = cs.server_info()["pid"]
    os.kill(old, signal.SIGKILL)
    _wait_for(lambda: not cs._pid_alive(old), timeout=10)
    assert cs.run_task("_sleep", {"seconds": 0.01})["pid"] != old
    assert cs.server_info()["pid"] != old


def test_a_stuck_job_makes_the_server_exit_and_the_next_call_starts_a_fresh_one(server):
    """A job that reaches no progress point long past its deadline (e.g. a wedged XLA thread
    pool) cannot be stopped from Python: the server exits, its client gets a message, and
    the next request is served by a new server."""
    server.shutdown()
    os.environ["LANDSCAPE_STUCK_AFTER_S"] = "1"
    try:
        pid = cs.server_info()["pid"]  # a server that watches with the short limit
    finally:
        del os.environ["LANDSCAPE_STUCK_AFTER_S"]
    start = time.monotonic()
    with pytest.raises(cs.TaskError) as info:
        cs.run_task("_sleep", {"seconds": 60, "quiet": True}, budget_s=0.5)
    assert time.monotonic() - start < 20
    assert info.value.kind == "internal" and "stopped" in info.value.message
    _wait_for(lambda: not cs._pid_alive(pid), timeout=10)
    server.shutdown()  # the next server watches with the default limit again
    assert cs.run_task("_sleep", {"seconds": 0.01})["pid"] != pid


def test_server_dying_mid_job_is_an_internal_error(server):
    pid = cs.server_info()["pid"]
    caught = []

    def job():
        try:
            cs.run_task("_sleep", {"seconds": 30})
        except cs.TaskError as exc:
            caught.append(exc)

    thread = threading.Thread(target=job)
    thread.start()
    _wait_for(lambda: cs.server_info()["active"] >= 1)
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert caught and caught[0].kind == "internal" and "stopped" in caught[0].message
    assert cs.server_info()["pid"] != pid  # and the next call has a new one


@pytest.mark.slow
def test_server_exits_when_its_last_client_exits(tmp_path):
    """A server started by a process that exits (its atexit release) stops by itself."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANDSCAPE_CACHE_DIR": str(tmp_path)}
    code = "from landscape_app.compute_server import server_info; print(server_info()['pid'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    pid = int(out.stdout.strip().splitlines()[-1])
    _wait_for(lambda: not cs._pid_alive(pid), timeout=15)
    assert not list(tmp_path.glob("compute-server-*.json"))
    assert not list(tmp_path.glob("*.sock"))


# --------------------------------------------------------------------------- in-process mode


def test_inprocess_mode_runs_here_with_the_same_errors(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_INPROCESS", "1")
    payload = cs.run_task("_sleep", {"seconds": 0.01})
    assert payload["pid"] == os.getpid()
    with pytest.raises(cs.TaskError) as info:
        cs.run_task("path", {"steps": -1})
    assert info.value.kind == "input"
    with pytest.raises(cs.TaskError) as info:
        cs.run_task("_fail", {})
    assert info.value.kind == "internal" and "secret" not in info.value.message
    with pytest.raises(cs.TaskError) as info:
        cs.run_task("_sleep", {"seconds": 5}, budget_s=0.1)
    assert info.value.kind == "timeout"

    def stop(fraction, text):
        raise _Stop

    with pytest.raises(_Stop):
        cs.run_task("_sleep", {"seconds": 5}, progress=stop)
