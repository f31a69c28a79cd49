"""Quick fault checks that fit in CI: the API with Redis or Postgres unreachable.

The long scenarios (a real outage under load, a killed worker) are bench/faults.py; these
check in seconds the two behaviours they rest on. Each runs the app in a fresh interpreter,
because the broker and database URLs are read once, when the app is built.
"""

import json
import subprocess
import sys
import textwrap

import pytest

from testkit.stack import REPO_ROOT, free_port
from tests.integration.conftest import TEST_ENV

pytestmark = pytest.mark.timeout(120)


def run_app_script(script: str, **env: str) -> dict:
    """Run `script` (which prints one line "RESULT <json>") with the test env plus `env`."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO_ROOT,
        env={**TEST_ENV, "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_uploads_do_not_wait_for_an_unreachable_broker() -> None:
    """With Redis down an upload is stored and answered, and the retrain message it would
    publish fails at once: kombu's default retries held a server thread ~6 s per upload, so a
    Redis outage under load starved the API's thread pool (uploads fell from ~25/s to ~2/s)."""
    replies = run_app_script(
        """
        import json, time
        from fastapi.testclient import TestClient
        from api.main import app
        from testkit.images import png
        seconds, statuses = [], []
        with TestClient(app) as client:
            for seed in range(3):
                started = time.monotonic()
                # TestClient returns once the background tasks (the publish) have run too.
                reply = client.post(
                    "/v1/samples", files={"image": ("x.png", png(900 + seed))}, data={"label": "7"}
                )
                seconds.append(time.monotonic() - started)
                statuses.append(reply.status_code)
            total = client.get("/v1/samples/stats").json()["total"]
        print("RESULT", json.dumps({"seconds": seconds, "statuses": statuses, "total": total}))
        """,
        BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    assert replies["statuses"] == [201, 201, 201]
    assert replies["total"] == 3
    assert max(replies["seconds"]) < 2.0, replies["seconds"]


def test_an_unreachable_database_is_a_quick_json_503() -> None:
    replies = run_app_script(
        """
        import json, time
        from fastapi.testclient import TestClient
        from api.main import app
        from testkit.images import png
        out = {}
        with TestClient(app) as client:
            for name, send in {
                "healthz": lambda: client.get("/healthz"),
                "readyz": lambda: client.get("/readyz"),
                "stats": lambda: client.get("/v1/samples/stats"),
                "upload": lambda: client.post(
                    "/v1/samples", files={"image": ("x.png", png(1))}, data={"label": "7"}
                ),
            }.items():
                started = time.monotonic()
                reply = send()
                out[name] = [reply.status_code, reply.json(), time.monotonic() - started]
        print("RESULT", json.dumps(out))
        """,
        DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none",
    )
    assert replies["healthz"][0] == 200
    assert replies["readyz"][0] == 503
    for name in ("stats", "upload"):
        status, body, seconds = replies[name]
        assert status == 503, body
        assert body["error"] == "database_unavailable"
        assert "retry" in body["detail"]
        assert seconds < 2.0
