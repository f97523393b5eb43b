"""Helpers for the real-browser tests and the latency benchmark.

:class:`AppServer` starts the dashboard as ``make run`` does (``.venv/bin/python app.py`` in a
subprocess, ``PORT`` a free port, ``LANDSCAPE_CACHE_DIR`` a fresh folder) and stops it (and
the compute server it spawned) afterwards. :func:`make_driver` opens Debian's headless
chromium through Debian's chromedriver with selenium (no browser is downloaded).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser_missing_reason() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            return f"{path} is missing (install Debian's chromium and chromium-driver: " \
                   "make system-deps)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements-dev.txt)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """The dashboard in a subprocess, as ``make run`` starts it.

    ``url`` is its address; ``log_path`` its combined stdout/stderr (Flask's request log:
    :meth:`request_count` counts callback requests from it).
    """

    def __init__(self, cache_dir: str | None = None, env: dict | None = None,
                 shared_jax_cache: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_cache = cache_dir is None
        self.cache_dir = cache_dir or tempfile.mkdtemp(prefix="landscape-test-cache-")
        Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
        if shared_jax_cache:  # fresh results, but reuse JAX's compiled kernels across runs
            jax_dir = ROOT / ".cache" / "test" / "jax"
            jax_dir.mkdir(parents=True, exist_ok=True)
            link = Path(self.cache_dir) / "jax"
            if not link.exists():
                link.symlink_to(jax_dir, target_is_directory=True)
        self.log_path = Path(self.cache_dir) / "server.log"
        self.env = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1",
                    "LANDSCAPE_CACHE_DIR": self.cache_dir, "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        self.env.pop("LANDSCAPE_REDIS_URL", None)
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self, timeout: float = 60.0) -> AppServer:
        python = ROOT / ".venv" / "bin" / "python"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen([str(python if python.exists() else sys.executable),
                                      "app.py"], cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n"
                                   + self.log_text()[-3000:])
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the dashboard did not answer /healthz within "
                           f"{timeout:.0f} s:\n" + self.log_text()[-3000:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def request_count(self, path: str = "/_dash-update-component") -> int:
        """Requests to ``path`` in the server's request log so far."""
        return sum(1 for line in self.log_text().splitlines() if f"POST {path}" in line)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # app.py's session: the web process and its background-job children
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._stop_compute_server()
        if getattr(self, "_log", None):
            self._log.close()
        if self._own_cache:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

    def _stop_compute_server(self) -> None:
        """The compute server of this cache folder (it would exit by itself once idle)."""
        env = {**self.env}
        code = ("from landscape_app import compute_server as c\n"
                "try:\n    c.get_client().shutdown()\nexcept Exception:\n    pass\n")
        state = list(Path(self.cache_dir).glob("compute-server-*.json"))
        if not state:
            return
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=30,
                       capture_output=True, check=False)

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def make_driver(width: int = 1500, height: int = 1100):
    """Headless Debian chromium via selenium, with the performance and console logs on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="landscape-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--enable-unsafe-swiftshader",
                 "--use-angle=swiftshader", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver._landscape_profile = profile  # removed by quit_driver
    return driver


def quit_driver(driver) -> None:
    profile = getattr(driver, "_landscape_profile", None)
    try:
        driver.quit()
    finally:
        if profile:
            shutil.rmtree(profile, ignore_errors=True)
