# The README's two commands: `make run` (the dashboard) and `make test` (the suite).
# Each creates .venv and installs the pinned requirements on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8050

.PHONY: run test test-fast bench lint system-deps docker-env-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python app.py

# Browser and Redis tests need Debian's chromium, chromium-driver and redis-server.
system-deps:
	@bash tests/system_deps.sh

test: $(VENV)/.dev system-deps
	$(BIN)/python -m pytest

test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -m "not browser and not slow"

lint: $(VENV)/.dev
	$(BIN)/ruff check .

bench: $(VENV)/.dev
	for b in benchmarks/[!_]*.py; do $(BIN)/python $$b || exit 1; done

DOCKER_ENV := /tmp/landscape-docker-env
# The image's Python environment without Docker: a fresh venv from requirements.txt alone,
# whose gunicorn and celery the deployment tests start (tests/test_deploy.py).
docker-env-check: $(VENV)/.dev system-deps
	rm -rf $(DOCKER_ENV)
	$(PYTHON) -m venv $(DOCKER_ENV)
	$(DOCKER_ENV)/bin/python -m pip install -q --no-cache-dir -r requirements.txt
	LANDSCAPE_DEPLOY_VENV=$(DOCKER_ENV) $(BIN)/python -m pytest tests/test_deploy.py

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts
