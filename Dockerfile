# Landscape dashboard image: gunicorn serving app:server, and (same image, other command)
# the Celery worker of docker-compose.yml. See docs/deploy.md.
#
#   docker build -t landscape .                           # CPU JAX (default)
#   docker build -t landscape --build-arg JAX_VARIANT=cuda12 .   # CUDA 12 JAX for GPU hosts
#
# Environment (all optional): PORT, HOST, WEB_CONCURRENCY, GUNICORN_THREADS, GUNICORN_TIMEOUT,
# LANDSCAPE_REDIS_URL (unset: embedded FileSystemCache + DiskcacheManager), LANDSCAPE_CACHE_DIR.
FROM python:3.11-slim-bookworm

# cpu: the jaxlib of requirements.txt. cuda12: adds jax[cuda12] at the SAME pinned jax version
# (its CUDA libraries come as pip wheels; the host needs the NVIDIA driver and the NVIDIA
# container toolkit, and `gpus: all` in compose).
ARG JAX_VARIANT=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    LANDSCAPE_CACHE_DIR=/var/cache/landscape \
    HOST=0.0.0.0 \
    PORT=8050 \
    WEB_CONCURRENCY=2 \
    GUNICORN_THREADS=16

RUN groupadd --system --gid 10001 landscape \
    && useradd --system --uid 10001 --gid landscape --create-home --home-dir /home/landscape \
       --shell /usr/sbin/nologin landscape \
    && mkdir -p /var/cache/landscape \
    && chown landscape:landscape /var/cache/landscape

WORKDIR /app

# Dependencies first (own layer: code changes do not reinstall them). Exactly the pinned
# requirements.txt; the CUDA variant adds only jax's cuda12 extra at the pinned jax version.
COPY requirements.txt ./
RUN case "$JAX_VARIANT" in cpu|cuda12) ;; \
      *) echo "JAX_VARIANT must be cpu or cuda12, got $JAX_VARIANT" >&2; exit 1 ;; esac \
    && pip install --no-cache-dir -r requirements.txt \
    && if [ "$JAX_VARIANT" = cuda12 ]; then \
         pip install --no-cache-dir "jax[cuda12]==$(sed -n 's/^jax==//p' requirements.txt)"; \
       fi

# The application (root-owned, read-only to the service user), byte-compiled at build time.
COPY app.py ./
COPY compute/ compute/
COPY landscape_app/ landscape_app/
COPY assets/ assets/
COPY deploy/ deploy/
RUN python -m compileall -q /app

USER 10001:10001

# Results cache (FileSystemCache), upload store and JAX's persistent compilation cache.
VOLUME ["/var/cache/landscape"]

EXPOSE 8050

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8050') + '/healthz', timeout=4)"]

CMD ["gunicorn", "--config", "deploy/gunicorn.conf.py", "app:server"]
