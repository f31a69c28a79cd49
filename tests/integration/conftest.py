"""Tests run against the real stack: a throwaway Postgres database per session, real Redis,
a real Celery worker process where a task is involved.

TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres) and TEST_REDIS_URL
(default redis://127.0.0.1:6379/0) point the suite at other servers.
"""

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from testkit.stack import (
    NIST_DATA_DIR,
    POSTGRES_SERVER_URL,
    REDIS_URL,
    celery_worker_command,
    database_url,
    drop_database,
    drop_redis_queue,
    server_dsn,
    start_process,
    stop_process,
    wait_until,
)

RUN_ID = uuid.uuid4().hex[:10]
TEST_DB = f"hwr_test_{RUN_ID}"
ADMIN_TOKEN = f"test-admin-{RUN_ID}"

# The environment every process of the test stack reads its Settings from; set before any
# project module builds its Settings.
TEST_ENV = {
    "DATABASE_URL": database_url(TEST_DB),
    "BROKER_URL": REDIS_URL,
    "TASK_QUEUE": f"hwr-test-{RUN_ID}",
    "ADMIN_TOKEN": ADMIN_TOKEN,
    "RETRAIN_THRESHOLD": "5",
    "MAX_UPLOAD_BYTES": str(256 * 1024),
    "LOG_LEVEL": "WARNING",
    # Retraining in tests: small and quick, the same code path.
    "MODEL_POLL_SECONDS": "1",
    "RETRAIN_EPOCHS": "1",
    "RETRAIN_NIST_SAMPLES": "3000",
    "FULL_RETRAIN_EPOCHS": "1",
    "FULL_RETRAIN_NIST_SAMPLES": "1000",
    "RETRAIN_RENDERED_PER_KIND": "50",
    # Where a run would fetch missing NIST data: the local copy (no test reaches NIST).
    "NIST_SOURCE": str(NIST_DATA_DIR),
    "FULL_RETRAIN_RENDERED_PER_KIND": "20",
    "RUN_STALE_SECONDS": "6",
    # Every test client is one address: limits so high that only the tests of the limits
    # themselves (which lower them) meet them.
    "RATE_LIMIT_CPU_ANONYMOUS": "100000000/minute",
    "RATE_LIMIT_STORAGE_ANONYMOUS": "100000000/minute",
    "RATE_LIMIT_CPU_CLIENT": "100000000/minute",
    "RATE_LIMIT_STORAGE_CLIENT": "100000000/minute",
}
os.environ.update(TEST_ENV)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    try:
        with psycopg.connect(server_dsn(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{TEST_DB}"')
    except psycopg.OperationalError as exc:
        pytest.exit(f"Postgres is not reachable at {POSTGRES_SERVER_URL}: {exc}", returncode=3)
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis is not reachable at {REDIS_URL}: {exc}", returncode=3)

    from db.migrate import upgrade_to_head

    upgrade_to_head(TEST_ENV["DATABASE_URL"])


def pytest_unconfigure(config: pytest.Config) -> None:
    from db.session import get_engine

    get_engine().dispose()
    drop_database(TEST_DB)
    drop_redis_queue(TEST_ENV["TASK_QUEUE"])


@pytest.fixture(autouse=True)
def empty_tables() -> Iterator[None]:
    """Every test starts from empty tables (the schema stays, migrated once per session)."""
    from db.session import get_engine

    # A worker or server process from an earlier test may still be finishing a transaction
    # on these tables; TRUNCATE can then deadlock with it, and simply goes again.
    for attempt in range(5):
        try:
            with get_engine().begin() as conn:
                conn.execute(
                    text(
                        "TRUNCATE samples, readings, model_versions, training_runs, api_keys "
                        "RESTART IDENTITY CASCADE"
                    )
                )
            break
        except OperationalError:
            if attempt == 4:
                raise
            time.sleep(0.5)
    # Messages an earlier test published for runs that no longer exist (ids restart at 1).
    drop_redis_queue(TEST_ENV["TASK_QUEUE"])
    yield


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import app

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def key_headers(role: str, name: str = "test") -> dict[str, str]:
    """A new API key with `role`, created as the CLI does, as request headers."""
    from db.models import Role
    from db.session import get_sessionmaker
    from domain import keys

    with get_sessionmaker()() as session:
        new = keys.create(session, name, Role(role))
        session.commit()
    return {"Authorization": f"Bearer {new.key}"}


@pytest.fixture
def labeller_headers() -> dict[str, str]:
    return key_headers("labeller", "a labeller")


T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll until predicate() is truthy; return its value or fail the test after timeout s."""
    try:
        return wait_until(predicate, timeout, "condition", interval)
    except TimeoutError as exc:
        pytest.fail(str(exc))


def start_test_process(
    args: list[str], log_path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A project command with the test environment, output to log_path."""
    return start_process(args, log_path, {**TEST_ENV, **(env or {})})


def add_model_version(status: str = "candidate", onnx: bytes | None = None) -> int:
    """Another registry version made of the bundled model's real ONNX bytes (or `onnx`); its
    number."""
    import hashlib

    from db.models import ModelVersion
    from db.session import get_sessionmaker
    from domain.registry import BUNDLED_MODEL_DIR

    onnx = onnx or (BUNDLED_MODEL_DIR / "model.onnx").read_bytes()
    with get_sessionmaker()() as session:
        active = session.get(ModelVersion, 1)
        assert active is not None, "the bundled model is installed as version 1 first"
        version = ModelVersion(
            status=status,
            labels=active.labels,
            architecture=active.architecture,
            onnx=onnx,
            onnx_sha256=hashlib.sha256(onnx).hexdigest(),
            metrics={},
            report={},
        )
        session.add(version)
        session.commit()
        return version.version


@pytest.fixture(scope="session")
def celery_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process consuming this session's queue from the real Redis."""
    log_path = tmp_path_factory.mktemp("celery") / "worker.log"
    process = start_test_process(celery_worker_command("--without-heartbeat"), log_path)
    wait_for(lambda: b"ready." in log_path.read_bytes() or process.poll() is not None, 60)
    if process.poll() is not None:
        pytest.fail(f"celery worker exited:\n{log_path.read_text()}")
    yield process
    stop_process(process)
