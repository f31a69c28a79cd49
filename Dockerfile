# Two images from one Dockerfile:
#   docker build --target api    -t handwriting-api .     # FastAPI + ONNX inference, no TensorFlow
#   docker build --target worker -t handwriting-worker .  # Celery worker/beat + training stack
# docker-compose.yml builds both. Stages:
#   base        python:3.11-slim, non-root user, dependencies of the package and its `api` extra
#   worker-deps base + the `worker` extra (TensorFlow); a layer of its own, built before the source
#   api         base + api, core, db, domain and the bundled model (no worker, no trainer code)
#   worker      worker-deps + the source

FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The processes run as this user; the code under /app stays owned by root (read-only to it).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app \
 && mkdir -p /data/nist /var/lib/beat \
 && chown app:app /data/nist /var/lib/beat
# Mount points of the compose volumes: a named volume first mounted at one of these starts out
# owned by the app user (the NIST data volume is read-only in the api container).
ENV NIST_DATA_DIR=/data/nist

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that their layer survives source edits.
# With no package directories copied yet this installs the dependencies plus an empty
# distribution, which the editable install in the api/worker stage replaces.
COPY pyproject.toml README.md ./
RUN pip install --no-cache-dir ".[api]" \
 && rm -rf build ./*.egg-info


FROM base AS worker-deps
# Same resolution with both extras, so that pip keeps the shared packages (numpy...) compatible.
RUN pip install --no-cache-dir ".[api,worker]" \
 && rm -rf build ./*.egg-info


FROM base AS api
COPY alembic.ini ./
COPY api/ api/
COPY core/ core/
COPY db/ db/
COPY domain/ domain/
# The bundled starter model only (installed as version 1 on first start); no trainer code.
COPY trainer/bundled/ trainer/bundled/
COPY scripts/ scripts/
# Editable: the modules are imported from /app, where alembic.ini and the migrations are.
RUN pip install --no-cache-dir --no-deps --editable ".[api]" \
 && rm -rf build \
 && pip check
USER app
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]


FROM worker-deps AS worker
COPY alembic.ini ./
COPY api/ api/
COPY core/ core/
COPY db/ db/
COPY domain/ domain/
COPY worker/ worker/
COPY trainer/ trainer/
COPY scripts/ scripts/
RUN pip install --no-cache-dir --no-deps --editable ".[api,worker]" \
 && rm -rf build \
 && pip check
USER app
CMD ["celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO", "--concurrency=1"]
