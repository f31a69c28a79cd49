#!/bin/sh
# Prestart step, run once before the API serves (the `migrate` service of docker-compose.yml):
# wait until the database answers, then apply the migrations (`alembic upgrade head`).
# Reads DATABASE_URL like every process (core/config.py); DB_WAIT_TIMEOUT bounds the wait.
set -eu
cd "$(dirname "$0")/.."

python - <<'PY'
import os
import sys
import time

from sqlalchemy import text

from core.config import get_settings
from db.session import make_engine

timeout = float(os.environ.get("DB_WAIT_TIMEOUT") or 60)
engine = make_engine(get_settings().database_url)
deadline = time.monotonic() + timeout
while True:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        break
    except Exception as exc:  # any failure to connect: wait and try again until the deadline
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0] if lines else ''}"
        if time.monotonic() >= deadline:
            print(f"prestart: no database after {timeout:g}s ({reason})", file=sys.stderr)
            sys.exit(1)
        print(f"prestart: waiting for the database ({reason})", file=sys.stderr)
        time.sleep(1)
engine.dispose()
print("prestart: database is up", file=sys.stderr)
PY

alembic upgrade head
echo "prestart: migrations at head" >&2
