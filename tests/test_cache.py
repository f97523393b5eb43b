"""Result cache: exact keys, one computation per key, bounded size, no pickle; uploads;
the background-callback manager."""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pytest

os.environ["LANDSCAPE_TEST_TASKS"] = "1"  # the compute server's helper tasks (_stats)
os.environ.pop("LANDSCAPE_INPROCESS", None)

from landscape_app import cache as C  # noqa: E402
from landscape_app import compute_server as cs  # noqa: E402
from landscape_app.settings import DEFAULTS, canonical_key, upload_info  # noqa: E402

SMALL = {**DEFAULTS, "widths": [2], "steps": 40, "lambda_every": 0, "dataset": "swirszcz_d2",
         "model": "mlp", "activation": "relu", "init": "xavier", "init_scale": 1.0,
         "lr": 0.01}


@pytest.fixture
def backend(tmp_path, monkeypatch):
    """A fresh, small file cache for one test (the compute server is the session's)."""
    store = C.LandscapeFileSystemCache(str(tmp_path / "results"), threshold=4,
                                       default_timeout=0)
    monkeypatch.setattr(C, "_backend", store)
    return store


def _runs(task: str) -> int:
    return cs.server_info()["runs"].get(task, 0)


def test_second_call_is_a_hit_and_the_task_runs_once(backend):
    before = _runs("path")
    first = C.cached_task("path", SMALL)
    second = C.cached_task("path", {**SMALL, "log_scale": True, "lr": 0.0100000000000001})
    third = C.cached_task("path", {**SMALL, "grid": "41"})  # a string from the URL
    assert _runs("path") == before + 1
    assert first["cache_hit"] is False and second["cache_hit"] is True and third["cache_hit"]
    for key in ("loss", "grad_norm", "weights", "final"):
        assert np.array_equal(first[key], second[key])
        assert first[key].dtype == second[key].dtype
    C.cached_task("path", {**SMALL, "lr": 0.02})  # a compute field changed: computed again
    assert _runs("path") == before + 2


def test_concurrent_requests_for_one_key_compute_once(backend):
    import threading

    before = _runs("path")
    settings = {**SMALL, "seed": 11}
    out = []
    threads = [threading.Thread(target=lambda: out.append(C.cached_task("path", settings)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 3 and sum(not p["cache_hit"] for p in out) == 1
    assert _runs("path") == before + 1


def test_invalid_settings_are_refused_before_any_work(backend):
    before = _runs("path")
    with pytest.raises(cs.TaskError) as info:
        C.cached_task("path", {**SMALL, "grid": -4})
    assert info.value.kind == "input" and "grid" in info.value.message
    assert _runs("path") == before


def test_entries_are_bounded_in_number_and_size(backend, monkeypatch):
    for i in range(9):
        assert backend.set(f"k{i}", bytes([i]) * 100)
    files = [p for p in os.listdir(backend._path) if not p.startswith("__wz_cache")
             and not p.endswith(".__wz_cache")]
    counted = len([f for f in files if f != backend._get_filename(backend._fs_count_file)
                   .split(os.sep)[-1]])
    assert counted <= 4 + 1  # cachelib prunes before each write: threshold + the new one
    assert backend.get("k8") == bytes([8]) * 100  # the newest survive
    # payloads above the size cap are returned but not stored
    monkeypatch.setenv("LANDSCAPE_CACHE_MAX_ENTRY_MB", "0.000001")
    stored = C.cache_stats["stored"]
    payload = C.cached_task("path", {**SMALL, "seed": 5})
    assert payload["cache_hit"] is False and C.cache_stats["stored"] == stored
    assert backend.get(canonical_key("path", {**SMALL, "seed": 5})) is None


def test_cache_files_hold_no_pickle_and_damaged_entries_are_recomputed(backend, tmp_path):
    backend.set("x", b"payload bytes")
    with open(backend._get_filename("x"), "rb") as f:
        raw = f.read()
    assert raw[4:] == b"Bpayload bytes"  # 4-byte expiry, then our own format
    # an entry replaced by a pickle (an attacker with write access): never unpickled
    marker = tmp_path / "pwned"
    key = canonical_key("path", {**SMALL, "seed": 6})
    evil = pickle.dumps(_Evil(str(marker)))
    with open(backend._get_filename(key), "wb") as f:
        f.write(struct.pack("I", 0) + evil)
    assert backend.get(key) is None
    with open(backend._get_filename(key), "wb") as f:
        f.write(struct.pack("I", 0) + b"B" + b"LSP1 damaged")
    before = _runs("path")
    payload = C.cached_task("path", {**SMALL, "seed": 6})
    assert payload["cache_hit"] is False and _runs("path") == before + 1
    assert not marker.exists()


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_redis_backend_serializer_never_pickles():
    ser = C.LandscapeRedisCache.serializer
    assert ser.loads(ser.dumps(b"abc")) == b"abc"
    assert ser.loads(ser.dumps(7)) == 7 and ser.dumps(7) == b"7"
    assert ser.loads(b"!" + pickle.dumps({"a": 1})) is None
    with pytest.raises(TypeError):
        ser.dumps({"a": 1})


def test_init_cache_and_backend_choice(monkeypatch, tmp_path):
    from flask import Flask

    monkeypatch.delenv("LANDSCAPE_REDIS_URL", raising=False)
    monkeypatch.setattr(C, "_backend", None)
    cache = C.init_cache(Flask("t1"))
    assert isinstance(C.get_backend(), C.LandscapeFileSystemCache)
    assert cache.cache is C.get_backend()
    monkeypatch.setenv("LANDSCAPE_REDIS_URL", "redis://127.0.0.1:1/0")
    C.init_cache(Flask("t2"))  # connecting is lazy: no Redis needed to configure it
    assert isinstance(C.get_backend(), C.LandscapeRedisCache)
    monkeypatch.setattr(C, "_backend", None)
    assert isinstance(C.get_backend(), C.LandscapeRedisCache)
    monkeypatch.setattr(C, "_backend", None)


def test_background_manager_choice(monkeypatch):
    from dash import CeleryManager, DiskcacheManager

    monkeypatch.delenv("LANDSCAPE_REDIS_URL", raising=False)
    manager = C.make_background_manager()
    assert isinstance(manager, DiskcacheManager)
    assert str(manager.handle.directory).startswith(str(C.cache_dir()))
    monkeypatch.setenv("LANDSCAPE_REDIS_URL", "redis://127.0.0.1:1/0")
    assert isinstance(C.make_background_manager(), CeleryManager)


# --------------------------------------------------------------------------- uploads


def test_upload_csv_is_checked_stored_and_usable(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 3))
    Y = X @ np.array([[1.0], [-2.0], [0.5]])
    text = "a,b,c,y\n" + "\n".join(",".join(f"{v:.17g}" for v in row)
                                   for row in np.hstack([X, Y]))
    import base64

    url = "data:text/csv;base64," + base64.b64encode(text.encode()).decode()
    ref, info = C.store_upload(url, "teacher.csv")
    assert ref.startswith("upload:") and len(ref) == 7 + 64
    assert (info["rows"], info["d_x"], info["d_y"]) == (30, 3, 1)
    assert upload_info(ref)["rows"] == 30
    settings = {**DEFAULTS, "dataset": ref, "widths": [2], "steps": 20, "lambda_every": 0}
    payload = C.cached_task("path", settings)
    # independent check: the loss of the reported initial point, in numpy
    theta = payload["init"]
    W1, W2 = theta[:6].reshape(2, 3), theta[6:8].reshape(1, 2)
    expected = 0.5 * np.sum((X @ W1.T @ W2.T - Y) ** 2) / 30
    assert payload["loss"][0] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("contents, name, phrase", [
    (b"a,b\n1,2\n3,nan\n", "bad.csv", "row 2"),
    (b"\x00\x01binary", "data.exe", "unsupported file type"),
    ("data:text/csv;base64,%%%not base64", "x.csv", "base64"),
    (b"x" * 10, "weird.npz", "not a valid .npz"),
])
def test_bad_uploads_are_input_errors(backend, contents, name, phrase):
    with pytest.raises(cs.TaskError) as info:
        C.store_upload(contents, name)
    assert info.value.kind == "input" and phrase in info.value.message


def test_pickled_npz_upload_is_refused_without_running_it(backend, tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    np.savez(buffer, X=np.array([_Evil(str(marker))], dtype=object), Y=np.zeros(1))
    with pytest.raises(cs.TaskError) as info:
        C.store_upload(buffer.getvalue(), "evil.npz")
    assert info.value.kind == "input" and "pickle" in info.value.message
    assert not marker.exists()


def test_oversized_upload_is_refused_before_the_server(backend, monkeypatch):
    monkeypatch.setattr(C.LIMITS, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(cs.TaskError) as info:
        C.store_upload(b"1,2\n" * 100, "big.csv")
    assert info.value.kind == "input" and "too large" in info.value.message


def test_forked_job_child_computes_through_the_shared_server():
    """As DiskcacheManager does: a JAX-free web process forks a job child (``multiprocess``);
    the child asks the host's compute server and gets the payload."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = f"""
import json, sys, tempfile, multiprocess
from landscape_app import cache
from landscape_app.cache import cached_task
from landscape_app.settings import DEFAULTS
cache._backend = cache.LandscapeFileSystemCache(tempfile.mkdtemp(), default_timeout=0)
settings = {{**DEFAULTS, **{SMALL!r}, "seed": 21}}

def job(queue):
    payload = cached_task("path", settings)
    queue.put([len(payload["loss"]), "jax" in sys.modules])

ctx = multiprocess.get_context("fork")
queue = ctx.Queue()
child = ctx.Process(target=job, args=(queue,))
child.start()
n, child_jax = queue.get(timeout=120)
child.join()
print(json.dumps([n, child_jax, "jax" in sys.modules, child.exitcode]))
"""
    env = {**os.environ, "PYTHONPATH": str(root)}
    before = _runs("path")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=180)
    assert _runs("path") == before + 1
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    n, child_jax, parent_jax, exitcode = json.loads(out.stdout.strip().splitlines()[-1])
    assert n == SMALL["steps"] + 1 and exitcode == 0
    assert not child_jax and not parent_jax


@pytest.mark.redis
def test_redis_backend_round_trip_and_hit(tmp_path, monkeypatch):
    """With a real redis-server (started here): bytes in, bytes out, a second call hits."""
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (tests/system_deps.sh installs it)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        monkeypatch.setenv("LANDSCAPE_REDIS_URL", f"redis://127.0.0.1:{port}/0")
        monkeypatch.setattr(C, "_backend", None)
        backend = C.get_backend()
        deadline = time.monotonic() + 10
        while True:
            try:
                backend._write_client.ping()
                break
            except Exception:  # noqa: BLE001 - still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert backend.set("k", b"\x00bytes") and backend.get("k") == b"\x00bytes"
        raw = backend._read_client.get(backend._get_prefix() + "k")
        assert raw == b"B\x00bytes"  # no pickle in Redis either
        before = _runs("path")
        first = C.cached_task("path", {**SMALL, "seed": 31})
        second = C.cached_task("path", {**SMALL, "seed": 31})
        assert not first["cache_hit"] and second["cache_hit"]
        assert _runs("path") == before + 1
        assert np.array_equal(first["loss"], second["loss"])
    finally:
        monkeypatch.setattr(C, "_backend", None)
        proc.terminate()
        proc.wait(timeout=10)
