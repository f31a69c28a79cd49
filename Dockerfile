# Images from one Dockerfile:
#   docker build --target api        -t handwriting-api .   # FastAPI + ONNX inference, no TensorFlow
#   docker build --target worker     -t handwriting-worker . # Celery worker/beat/flower + training
#   docker build --target worker-gpu -t handwriting-worker-gpu .  # the same, TensorFlow with CUDA
# docker-compose.yml builds them. Stages, in this order so that the classic builder (which
# builds every stage up to the target) builds no TensorFlow for the api target:
#   base            Python 3.11, non-root user, dependencies of the package and its `api` extra
#   api             base + api, core, db, domain, the bundled model: no worker or trainer code
#   worker-deps     base + the `worker` and `monitoring` extras (TensorFlow CPU, Flower)
#   worker          worker-deps + the source
#   worker-gpu-deps base + the `worker-gpu` and `monitoring` extras (TensorFlow with CUDA)
#   worker-gpu      worker-gpu-deps + the source
# PYTHON_IMAGE: python:3.11-slim, or the Debian-built one of scripts/build-base-images.sh
# (same layout: `python` and `pip` on PATH, pip may install system-wide).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The processes run as this user; the code under /app stays owned by root (read-only to it).
# The directories they write to are made here, owned by it: a named volume first mounted at
# one of them starts out with that owner (the NIST data volume is read-only in the api).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app \
 && mkdir -p /data/nist /var/lib/beat /var/cache/handwriting \
 && chown app:app /data/nist /var/lib/beat /var/cache/handwriting
ENV NIST_DATA_DIR=/data/nist \
    CACHE_DIR=/var/cache/handwriting

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that their layer survives source edits
# (README.md, which pyproject.toml names, is an empty stand-in until the source stages).
# With no package directories copied yet this installs the dependencies plus an empty
# distribution, which the editable install in the api/worker stage replaces.
COPY pyproject.toml ./
RUN touch README.md \
 && pip install --no-cache-dir ".[api]" \
 && rm -rf build ./*.egg-info


FROM base AS api
COPY alembic.ini README.md ./
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


FROM base AS worker-deps
# Same resolution with all extras, so that pip keeps the shared packages (numpy...) compatible.
RUN pip install --no-cache-dir ".[api,worker,monitoring]" \
 && rm -rf build ./*.egg-info


FROM worker-deps AS worker
COPY alembic.ini README.md ./
COPY api/ api/
COPY core/ core/
COPY db/ db/
COPY domain/ domain/
COPY worker/ worker/
COPY trainer/ trainer/
# The makers of the pictures a retrain renders (trainer/rendered.py).
COPY testkit/ testkit/
COPY scripts/ scripts/
RUN pip install --no-cache-dir --no-deps --editable ".[api,worker,monitoring]" \
 && rm -rf build \
 && pip check
USER app
CMD ["celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO", "--concurrency=1"]


FROM base AS worker-gpu-deps
# TensorFlow with its CUDA libraries (pip's nvidia-* wheels); on a host without a GPU it
# runs on the CPU.
RUN pip install --no-cache-dir ".[api,worker-gpu,monitoring]" \
 && rm -rf build ./*.egg-info


FROM worker-gpu-deps AS worker-gpu
COPY alembic.ini README.md ./
COPY api/ api/
COPY core/ core/
COPY db/ db/
COPY domain/ domain/
COPY worker/ worker/
COPY trainer/ trainer/
# The makers of the pictures a retrain renders (trainer/rendered.py).
COPY testkit/ testkit/
COPY scripts/ scripts/
RUN pip install --no-cache-dir --no-deps --editable ".[api,worker-gpu,monitoring]" \
 && rm -rf build \
 && pip check
USER app
CMD ["celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO", "--concurrency=1"]
