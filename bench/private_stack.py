"""A private copy of the whole stack for load and fault experiments (bench/load.py, faults.py).

Its own PostgreSQL cluster (initdb into a temporary directory) and its own Redis, on free
ports, so that stopping, restarting or killing them never touches the shared servers on 5432
and 6379 that the test suite and other people use. On top of them, the project's own
commands: `python -m db.migrate`, uvicorn with N workers, Celery workers, `celery call`.

    with PrivateStack(settings={"RETRAIN_THRESHOLD": "20"}) as stack:
        stack.start_api(workers=2)
        stack.start_worker()
        httpx.get(f"{stack.api_url}/readyz")

initdb refuses to run as root: as root, Postgres runs as the `postgres` user (runuser).
Everything lives under one temporary directory, removed on exit (logs are kept with
`keep=True` or BENCH_KEEP=1, for a post-mortem).
"""

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psycopg

from testkit.stack import (
    NIST_DATA_DIR,
    PYTHON,
    REPO_ROOT,
    celery_worker_command,
    free_port,
    start_process,
    uvicorn_command,
    wait_until,
)

DATABASE = "hwr"


def postgres_bin(name: str) -> str:
    """The newest installed PostgreSQL's `name` (initdb, pg_ctl), e.g. /usr/lib/postgresql/15."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path is None:
        raise SystemExit(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return on_path


class PrivateStack:
    """Private Postgres + Redis, and the project's processes pointed at them."""

    def __init__(self, settings: dict[str, str] | None = None, keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hwr-private-"))
        self.root.chmod(0o755)  # the postgres user must reach its directories inside
        self.keep = keep or os.environ.get("BENCH_KEEP") == "1"
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.api_port = free_port()
        self.admin_token = secrets.token_hex(16)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._redis: subprocess.Popen[bytes] | None = None
        self._pg_started = False
        self.env = {
            "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/{DATABASE}",
            "BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "TASK_QUEUE": "hwr-private",
            "ADMIN_TOKEN": self.admin_token,
            "NIST_DATA_DIR": str(NIST_DATA_DIR),
            "LOG_LEVEL": "WARNING",
            **(settings or {}),
        }

    # --- context manager ---------------------------------------------------------------

    def __enter__(self) -> "PrivateStack":
        try:
            self.start_postgres()
            self.start_redis()
            self.migrate()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- PostgreSQL ----------------------------------------------------------------------

    @property
    def _as_postgres(self) -> list[str]:
        """initdb and the server refuse root: run them as the postgres user then."""
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def pg_data(self) -> Path:
        return self.root / "pgdata"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self._as_postgres, postgres_bin("pg_ctl"), "-D", str(self.pg_data), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            timeout=60,
        )

    def start_postgres(self) -> None:
        """initdb on first call, then start the cluster on its port; returns once it accepts."""
        socket_dir = self.root / "pgsocket"
        if not self.pg_data.exists():
            for path in (self.pg_data, socket_dir):
                path.mkdir(mode=0o700)
                if os.geteuid() == 0:
                    shutil.chown(path, "postgres", "postgres")
            subprocess.run(
                [
                    *self._as_postgres,
                    postgres_bin("initdb"),
                    "-D",
                    str(self.pg_data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=120,
            )
        options = (
            f"-p {self.pg_port} -k {socket_dir} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200"
        )
        log = self.root / "pgdata" / "server.log"  # inside pgdata: the postgres user writes it
        self._pg_ctl("-o", options, "-l", str(log), "-w", "start")
        self._pg_started = True
        if not self._has_database():
            with psycopg.connect(self.server_dsn(), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop_postgres(self, mode: str = "fast") -> None:
        """Stop the cluster: `fast` ends open sessions (what a restart by an operator does)."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def server_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{database}"

    def _has_database(self) -> bool:
        with psycopg.connect(self.server_dsn(), autocommit=True) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            return row.fetchone() is not None

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the private database (autocommit); its rows, if any."""
        with psycopg.connect(self.server_dsn(DATABASE), autocommit=True, connect_timeout=5) as c:
            cursor = c.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def migrate(self) -> None:
        """The project's migration step, as the compose `migrate` service runs it."""
        self.run(["-m", "db.migrate"], timeout=120)

    # --- Redis ---------------------------------------------------------------------------

    def start_redis(self) -> None:
        """A Redis of our own on its port, in the foreground of a child process, no persistence."""
        self._redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=(self.root / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._redis_answers, 20, "private Redis")

    def _redis_answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:  # not listening yet
            return False

    def stop_redis(self) -> None:
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()
            self._redis.wait(timeout=20)
        self._redis = None

    # --- The project's processes ---------------------------------------------------------

    def process_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **self.env, **(extra or {})}

    def run(self, args: list[str], timeout: float = 60) -> str:
        """`python <args>` in the repository with the stack's environment; its output."""
        result = subprocess.run(
            [PYTHON, *args],
            cwd=REPO_ROOT,
            env=self.process_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"python {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def start(
        self, name: str, command: list[str], extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `command` as `name` (its own process group), output in name.log."""
        env = {**self.env, **(extra_env or {})}
        process = start_process(command, self.root / f"{name}.log", env)
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_api(self, workers: int = 2, timeout: float = 90) -> None:
        """uvicorn with `workers` processes (metrics summed over them); returns once ready."""
        metrics_dir = self.root / "prometheus"
        metrics_dir.mkdir(exist_ok=True)
        process = self.start(
            "api",
            uvicorn_command("api.main:app", self.api_port, workers),
            {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        )

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited:\n{self.log('api')[-3000:]}")
            try:
                return httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:  # not listening yet
                return False

        wait_until(ready, timeout, "the API's /readyz")

    def start_worker(self, name: str = "worker", timeout: float = 90) -> subprocess.Popen[bytes]:
        """A Celery worker (one task at a time, as in compose); returns once it is ready."""
        command = celery_worker_command("-n", f"{name}@%h")
        process = self.start(name, command, {"LOG_LEVEL": "INFO"})

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
            return "ready." in self.log(name)

        wait_until(ready, timeout, f"Celery {name}")
        return process

    def call_task(self, task: str) -> None:
        """Send a task by name through the broker (`celery call`), as beat would."""
        self.run(["-m", "celery", "-A", "worker.celery_app", "call", task], timeout=60)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the process group of `name` (uvicorn's or Celery's children too)."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def add_model_version(self, source_version: int = 1) -> int:
        """A candidate version made of a copy of `source_version`'s ONNX; its number."""
        rows = self.sql(
            "INSERT INTO model_versions (status, labels, architecture, onnx, onnx_sha256,"
            " keras_weights, metrics, report)"
            " SELECT 'candidate', labels, architecture, onnx, onnx_sha256, keras_weights,"
            " metrics, report FROM model_versions WHERE version = %s RETURNING version",
            (source_version,),
        )
        if not rows:
            raise RuntimeError(f"model version {source_version} is not in the registry")
        return int(rows[0][0])

    # --- Teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything started here, then remove the directory (unless kept)."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            # Anything the process left behind in its group (uvicorn or Celery children).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        self.stop_redis()
        if self._pg_started:
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop_postgres("immediate")
            self._pg_started = False
        if self.keep:
            print(f"private stack kept in {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
