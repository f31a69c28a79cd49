"""Processes and servers for tests and benchmarks: the real Postgres and Redis, throwaway
databases on them, project commands in subprocesses, free ports, polling.

TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres) and TEST_REDIS_URL
(default redis://127.0.0.1:6379/0) point both at other servers.
"""

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
POSTGRES_SERVER_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NIST_DATA_DIR = Path(os.environ.get("NIST_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], timeout: float, what: str = "condition", interval: float = 0.2
) -> T:
    """Poll `check` until it returns something truthy, and return that; TimeoutError naming
    `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not met within {timeout:g}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Databases on the shared Postgres server ------------------------------------------------


def server_dsn() -> str:
    """libpq DSN of the server's maintenance database (to create and drop databases)."""
    url = make_url(POSTGRES_SERVER_URL).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def database_url(name: str, driver: str = "postgresql+psycopg") -> str:
    url = make_url(POSTGRES_SERVER_URL).set(drivername=driver, database=name)
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class Database:
    name: str
    url: str  # SQLAlchemy URL, for DATABASE_URL
    dsn: str  # libpq DSN, for psycopg


def create_database(prefix: str) -> Database:
    """A new empty database `<prefix>_<random>` (not migrated)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return Database(name, database_url(name), database_url(name, "postgresql"))


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(server_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def throwaway_database(prefix: str) -> Iterator[Database]:
    """A fresh database migrated to head, dropped afterwards."""
    database = create_database(prefix)
    try:
        subprocess.run(
            [PYTHON, "-m", "db.migrate"],
            cwd=REPO_ROOT,
            env={**os.environ, "DATABASE_URL": database.url},
            check=True,
            capture_output=True,
        )
        yield database
    finally:
        drop_database(database.name)


def drop_redis_queue(queue: str) -> None:
    """Messages published to a queue of a test's or benchmark's own, nobody consumed."""
    import redis

    with contextlib.suppress(redis.RedisError):
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).delete(queue)


# --- Project commands in subprocesses -------------------------------------------------------


def start_process(
    args: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a command in the repository root, output to log_path, in its own session."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(args),
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def celery_worker_command(*options: str) -> list[str]:
    """A Celery worker of this project, one task at a time, plus `options` (e.g. -Q queue)."""
    return [
        *(PYTHON, "-m", "celery", "-A", "worker.celery_app", "worker"),
        *("--pool=solo", "--loglevel=INFO", "--without-gossip", "--without-mingle"),
        *options,
    ]


def uvicorn_command(app: str, port: int, workers: int = 1) -> list[str]:
    """`uvicorn <app>` on 127.0.0.1:port, as the Dockerfile runs it ([--workers N])."""
    command = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    return [*command, "--workers", str(workers)] if workers > 1 else command


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (children of the supervisor), or the server itself."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout
        # multiprocessing's resource tracker is a child too; workers run uvicorn.
        workers = [
            int(pid)
            for pid in out.split()
            if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        ]
        return workers or [self.process.pid]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes (all their threads) so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            # Fields after the command name (which may hold spaces) start at index 2.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


@contextlib.contextmanager
def uvicorn_server(
    app: str,
    env: dict[str, str],
    workers: int = 1,
    startup_timeout: float = 120.0,
    extra_args: Sequence[str] = (),
) -> Iterator[Server]:
    """`uvicorn <app> [--workers N]` on a free port, as the Dockerfile runs it; stopped on exit.

    Ready once every worker has logged "Application startup complete" (each loads its model).
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hwr-server-") as tmp:
        metrics_dir = Path(tmp) / "prometheus"
        metrics_dir.mkdir()
        log_path = Path(tmp) / "server.log"
        env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **env}
        command = [*uvicorn_command(app, port, workers), *extra_args]
        process = start_process(command, log_path, env)
        server = Server(f"http://127.0.0.1:{port}", process, log_path)
        try:
            wait_until(
                lambda: (
                    process.poll() is not None
                    or log_path.read_bytes().count(b"Application startup complete") >= workers
                ),
                startup_timeout,
                f"{app} starting",
            )
            if process.poll() is not None:
                raise RuntimeError(f"{app} exited:\n{log_path.read_text(errors='replace')[-3000:]}")
            yield server
        finally:
            stop_process(process, timeout=20)
