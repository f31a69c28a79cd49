#!/usr/bin/env bash
# The one-command local service: API + worker (with embedded beat) on the embedded default,
# a SQLite file and a SQLite-backed broker under var/; no servers needed.
# Any setting can be overridden from the environment or .env (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
mkdir -p var

"$PY" -m db.migrate
"$PY" -m celery -A worker.celery_app worker -B --pool=solo --loglevel=INFO \
  --schedule var/celerybeat-schedule >var/worker.log 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT INT TERM
echo "worker started (pid $worker, log var/worker.log)"
echo "serving on http://$HOST:$PORT  (API docs: http://$HOST:$PORT/docs)"
"$PY" -m uvicorn api.main:app --host "$HOST" --port "$PORT"
