"""The compose stack's own commands, run natively against the test Postgres and real Redis.

The migrate, api, worker and beat commands are read from docker-compose.yml and started as
they are, adapted only in where they listen (a free port on 127.0.0.1), where they write (the
beat schedule, the metrics directory, in a temporary directory) and their environment:
.env.example and the service's `environment:` as in the containers, then conftest's TEST_ENV
(the test database, the local Redis), a queue of this test's own and this machine's NIST data.
"""

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from dotenv import dotenv_values
from PIL import Image, ImageDraw
from sqlalchemy import create_engine, text

from db.migrate import head_revision
from testkit.stack import create_database, drop_database, free_port
from tests.integration.conftest import (
    REDIS_URL,
    TEST_ENV,
    start_test_process,
    stop_process,
    wait_for,
)
from tests.unit.test_compose import (
    ENV_EXAMPLE,
    command_args,
    resolved_compose,
    service_environment,
)

pytestmark = pytest.mark.timeout(150)

# The worker's log line for the one message the API publishes when an upload opens a run.
RECEIVED = re.compile(rb"Task worker\.tasks\.train\[[\w-]+\] received")


def replace_option(args: list[str], option: str, value: str) -> list[str]:
    """args with the value after `option` replaced (the option must be there)."""
    index = args.index(option)
    return [*args[: index + 1], value, *args[index + 2 :]]


def seven(variant: int) -> bytes:
    """A 28x28 PNG of a handwritten-looking 7, white on black; each variant a distinct image."""
    image = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(image)
    shift = variant % 4
    draw.line([(6 + shift, 6), (21, 6 + variant % 3)], fill=255, width=3)
    draw.line([(21, 6 + variant % 3), (11 + shift, 23)], fill=255, width=3)
    image.putpixel((variant % 28, 27 - (variant // 28) % 4), 128)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Stack:
    """The processes started by a test, their logs, and their environment."""

    def __init__(self, tmp_path: Path, queue: str) -> None:
        self.tmp_path = tmp_path
        self.compose = resolved_compose()
        self.queue = queue
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> bytes:
        path = self.tmp_path / f"{name}.log"
        return path.read_bytes() if path.exists() else b""

    def logs(self) -> str:
        """The end of every log, for failure messages."""
        return "\n".join(
            f"--- {name}.log ---\n{self.log(name)[-3000:].decode(errors='replace')}"
            for name in self.processes
        )

    def environment(self, service: str) -> dict[str, str]:
        """The service's container environment, adapted to this machine and this test."""
        env: dict[str, str] = {
            key: value or "" for key, value in dotenv_values(ENV_EXAMPLE).items()
        }  # env_file: .env
        env.update(service_environment(self.compose["services"][service]))
        for key in TEST_ENV:  # the test database, Redis and limits come from conftest
            env.pop(key, None)
        env["TASK_QUEUE"] = self.queue
        env.pop("NIST_DATA_DIR")  # /data/nist is the container's; this machine's data instead
        env.pop("CACHE_DIR")  # the container's volume; this checkout's var/cache instead
        if "PROMETHEUS_MULTIPROC_DIR" in env:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.tmp_path / "prometheus")
            (self.tmp_path / "prometheus").mkdir(exist_ok=True)
        # The commands are console scripts of this virtualenv, as they are in the image's PATH.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return env

    def start(
        self, name: str, service: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a service's command; `env` overrides its environment (e.g. a setting)."""
        environment = self.environment(service) | (env or {})
        process = start_test_process(args, self.tmp_path / f"{name}.log", environment)
        self.processes[name] = process
        return process

    def alive(self, *names: str) -> None:
        for name in names:
            code = self.processes[name].poll()
            assert code is None, f"{name} exited with {code}\n{self.logs()}"

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process)
            # Whatever the process left behind in its session (uvicorn or celery children).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_stack(tmp_path: Path) -> Iterator[Stack]:
    """A Stack on a queue of its own; its processes stopped and its queue deleted after."""
    queue = f"{TEST_ENV['TASK_QUEUE']}-stack-{uuid.uuid4().hex[:6]}"
    running = Stack(tmp_path, queue)
    try:
        yield running
    finally:
        running.stop()
        redis.Redis.from_url(REDIS_URL).delete(queue)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def count_rows(sql: str, **params: Any) -> list[Any]:
    engine = create_engine(TEST_ENV["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def test_compose_commands_serve_store_and_trigger_one_training_run(stack: Stack) -> None:
    services = stack.compose["services"]

    # migrate: the one-shot the api waits for (the test database is already at head).
    migrate = stack.start("migrate", "migrate", command_args(services["migrate"]))
    assert migrate.wait(timeout=60) == 0, stack.logs()
    assert b"migrations at head" in stack.log("migrate")

    port = free_port()
    api_args = replace_option(command_args(services["api"]), "--host", "127.0.0.1")
    api_args = replace_option(api_args, "--port", str(port))
    beat_args = command_args(services["beat"])
    beat_args = replace_option(beat_args, "--schedule", str(stack.tmp_path / "beat" / "schedule"))
    (stack.tmp_path / "beat").mkdir()
    stack.start("worker", "worker", command_args(services["worker"]))
    stack.start("beat", "beat", beat_args)
    stack.start("api", "api", api_args)

    base_url = f"http://127.0.0.1:{port}"
    # As the admin: its replies say which side (training or evaluation) each sample is on.
    admin = {"Authorization": f"Bearer {TEST_ENV['ADMIN_TOKEN']}"}
    with httpx.Client(base_url=base_url, timeout=10, headers=admin) as http:

        def ready() -> bool:
            stack.alive("api", "worker", "beat")
            try:
                return http.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=45)
        assert http.get("/readyz").json()["migrations"] == head_revision()
        wait_for(lambda: stack.alive("worker") or b"ready." in stack.log("worker"), 45)

        # One upload over real HTTP, read back, and found in Postgres.
        data = seven(0)
        reply = http.post(
            "/v1/samples", files={"image": ("seven.png", data, "image/png")}, data={"label": "7"}
        )
        assert reply.status_code == 201, reply.text
        sample = reply.json()
        assert sample["label"] == "7" and isinstance(sample["evaluation"], bool)
        fetched = http.get(f"/v1/samples/{sample['id']}")
        assert fetched.status_code == 200 and fetched.json() == sample
        assert http.get(f"/v1/samples/{sample['id']}/image").content == data
        rows = count_rows(
            "SELECT label, evaluation, image FROM samples WHERE id = :id", id=sample["id"]
        )
        assert [(r.label, r.evaluation, bytes(r.image)) for r in rows] == [
            ("7", sample["evaluation"], data)
        ]

        # RETRAIN_THRESHOLD=5: four training samples open no run and publish nothing; the
        # fifth opens exactly one, and its one message reaches the worker.
        uploads, training, variant = 1, int(not sample["evaluation"]), 1

        def upload_until(wanted: int) -> None:
            nonlocal uploads, training, variant
            while training < wanted:
                assert variant < 60, "no training image among 60 variants"
                reply = http.post(
                    "/v1/samples",
                    files={"image": ("seven.png", seven(variant), "image/png")},
                    data={"label": "7"},
                )
                assert reply.status_code == 201, reply.text
                uploads += 1
                training += not reply.json()["evaluation"]
                variant += 1

        upload_until(4)
        assert count_rows("SELECT id FROM training_runs") == []
        assert RECEIVED.findall(stack.log("worker")) == []
        assert redis.Redis.from_url(REDIS_URL).llen(stack.queue) == 0

        upload_until(5)
        runs = count_rows("SELECT id, status, trigger, sample_watermark FROM training_runs")
        newest = count_rows("SELECT max(id) AS id FROM samples")[0].id
        assert [(r.trigger, r.sample_watermark) for r in runs] == [("threshold", newest)]
        wait_for(lambda: RECEIVED.search(stack.log("worker")), timeout=20)
        assert len(RECEIVED.findall(stack.log("worker"))) == 1, stack.logs()
        # The worker claims the run (it goes on training in the background).
        wait_for(lambda: count_rows("SELECT status FROM training_runs")[0].status != "queued", 30)

        # /metrics adds up the uvicorn workers through PROMETHEUS_MULTIPROC_DIR.
        metrics = http.get("/metrics")
        assert metrics.status_code == 200 and "http_requests_total" in metrics.text

    # beat started with the compose command, is still running and logged no error.
    wait_for(lambda: stack.alive("beat") or b"beat: Starting..." in stack.log("beat"), 20)
    wait_for(lambda: any((stack.tmp_path / "beat").iterdir()), timeout=10)
    stack.alive("beat", "worker", "api")
    for name in ("beat", "worker", "api"):
        assert b"Traceback" not in stack.log(name), stack.logs()
        assert not re.search(rb"\b(ERROR|CRITICAL)\b", stack.log(name)), stack.logs()


def test_prestart_migrates_an_empty_database_and_gives_up_without_one(stack: Stack) -> None:
    database = create_database("hwr_prestart")
    try:
        args = command_args(stack.compose["services"]["migrate"])
        env = stack.environment("migrate") | {"DATABASE_URL": database.url}
        migrate = start_test_process(args, stack.tmp_path / "empty.log", env)
        stack.processes["empty"] = migrate
        assert migrate.wait(timeout=60) == 0, stack.logs()
        with psycopg.connect(database.dsn) as conn:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
        assert revision == (head_revision(),)
        assert {"samples", "training_runs", "model_versions"} <= tables
    finally:
        drop_database(database.name)

    # No database at all: it waits DB_WAIT_TIMEOUT seconds, then fails (compose stops there).
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    env = stack.environment("migrate") | {"DATABASE_URL": unreachable, "DB_WAIT_TIMEOUT": "2"}
    began = time.monotonic()
    failing = start_test_process(args, stack.tmp_path / "unreachable.log", env)
    stack.processes["unreachable"] = failing
    assert failing.wait(timeout=30) != 0
    assert time.monotonic() - began < 20
    assert b"prestart: no database after 2s" in stack.log("unreachable")
    assert b"Running upgrade" not in stack.log("unreachable")
