"""What every benchmark script shares beyond testkit: the machine it ran on, a quiet-machine
check, the command line and the report every script prints and keeps, the service under
measurement (testkit's throwaway database and uvicorn server, a Redis queue of its own), and
COPY of samples.

Speed figures only mean something next to each other, measured in one run on one machine, so
every script records the machine and the load average with its results.
"""

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.httpload import LoadResult, RequestFactory, run_load
from testkit.stack import (
    NIST_DATA_DIR,
    REDIS_URL,
    REPO_ROOT,
    Database,
    Server,
    cpu_seconds,
    drop_redis_queue,
    throwaway_database,
    uvicorn_server,
)

RESULTS_DIR = REPO_ROOT / "var" / "bench"
WORKERS = 2  # uvicorn workers, as deployed: the machine has 2 cores

# Other work on the machine that would skew a measurement.
BUSY_PATTERN = "trainer|pytest|bench[./]load|bench[./]faults"
QUIET_LOAD = 0.7


# --- The machine ------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    return float("nan")


def _threads_per_core() -> int | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Thread(s) per core:"):
                return int(line.split(":", 1)[1])
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_state() -> str:
    """The commit measured, and whether the working tree had changes on top of it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model and the versions that matter, recorded with every result."""
    packages = (
        "onnxruntime",
        "numpy",
        "pillow",
        "fastapi",
        "starlette",
        "uvicorn",
        "httpx",
        "tensorflow-cpu",
        "keras",
        "psycopg",
    )
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "threads_per_core": _threads_per_core(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in packages if _version(p)},
        "git": git_state(),
        "load_average": load_average(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def machine_markdown(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    load = " / ".join(f"{x:.2f}" for x in info["load_average"])
    return (
        f"**Machine**: {info['usable_cpus']} CPUs ({info['cpu_model']}, "
        f"{info['threads_per_core'] or '?'} thread(s) per core), {info['memory_gib']} GiB RAM; "
        f"{info['os']}; Python {info['python']}; {versions}. "
        f"Code: {info['git']}. "
        f"Load average at start (1/5/15 min): {load}. {info['measured_at']}."
    )


def busy_processes() -> list[str]:
    """Command lines of other work that would compete for the cores (not this process)."""
    out = subprocess.run(
        ["pgrep", "-af", BUSY_PATTERN], capture_output=True, text=True, check=False
    ).stdout
    own = {str(os.getpid()), str(os.getppid())}
    return [line for line in out.splitlines() if line and line.split()[0] not in own]


def wait_until_quiet(max_wait_s: float, interval_s: float = 60.0) -> dict[str, Any]:
    """Wait (up to max_wait_s) for load < QUIET_LOAD and no trainer/pytest/load generator.

    Returns what was seen last, so a result measured on a busy machine says so.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        load, busy = load_average()[0], busy_processes()
        quiet = load < QUIET_LOAD and not busy
        if quiet or time.monotonic() >= deadline:
            return {"quiet": quiet, "load_1min": load, "busy": busy}
        print(f"# waiting for a quiet machine: load {load:.2f}, busy: {busy}", file=sys.stderr)
        time.sleep(interval_s)


class BusyWatch:
    """Samples, in the background, whether other work starts while we measure: a figure
    measured next to a test suite or a trainer must say so."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.seen.update(busy_processes())

    def start(self) -> "BusyWatch":
        self.seen.update(busy_processes())
        self._thread.start()
        return self

    def stop(self) -> "BusyWatch":
        self._stop.set()
        self._thread.join()
        self.seen.update(busy_processes())
        return self

    def __enter__(self) -> "BusyWatch":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def summary(self) -> str:
        if not self.seen:
            return "No other trainer, pytest or load generator ran during the measurement."
        return "**Other work ran during the measurement**: " + "; ".join(sorted(self.seen))


class BenchRun:
    """What every benchmark records around its measurements: whether the machine was quiet
    (after waiting up to `wait_quiet` seconds for it), which other work ran meanwhile, the
    machine and the load at the end."""

    def __init__(self, wait_quiet: float = 0.0) -> None:
        self.quiet = wait_until_quiet(wait_quiet) if wait_quiet else None
        self.watch = BusyWatch().start()
        self.info = machine_info()
        self.load_end: tuple[float, float, float] | None = None

    def finish(self) -> None:
        """The load at the end, taken once, and no more watching."""
        if self.load_end is None:
            self.load_end = load_average()
            self.watch.stop()

    def header(self) -> str:
        """The Markdown lines printed above the tables."""
        lines = [machine_markdown(self.info)]
        if self.quiet is not None:
            lines.append(f"Quiet-machine check: {self.quiet}.")
        if self.load_end is not None:
            lines.append(f"Load average at end: {' / '.join(f'{x:.2f}' for x in self.load_end)}.")
        lines.append(self.watch.summary())
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """The same, for the raw results file."""
        return {
            "machine": self.info,
            "quiet": self.quiet,
            "load_end": self.load_end,
            "other_work": sorted(self.watch.seen),
        }


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"first wait up to this long for load < {QUIET_LOAD} and no trainer/pytest running",
    )


# --- Output -----------------------------------------------------------------------------------


def save_results(name: str, payload: dict[str, Any]) -> Path:
    """Keep the raw figures next to the printed table (var/ is not in git)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def verdict(value: float, target: float) -> str:
    return "met" if value >= target else "**missed**"


# --- The code of another revision -------------------------------------------------------------


def file_at(revision: str, path: str) -> bytes:
    """A file of the repository as it was at a git revision."""
    return subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout


def module_at(
    revision: str,
    path: str,
    name: str,
    folder: Path,
    source_edit: Callable[[str], str] | None = None,
) -> ModuleType:
    """A module of the repository as it was at a git revision, loaded as `name` beside the
    current one (written into `folder`); `source_edit` may rewrite its source first."""
    source = file_at(revision, path).decode()
    if source_edit is not None:
        source = source_edit(source)
    written = folder / f"{name}.py"
    written.write_text(source)
    spec = importlib.util.spec_from_file_location(name, written)
    assert spec is not None and spec.loader is not None
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_revision(revision: str, folder: Path) -> tuple[ModuleType, ModuleType]:
    """`core/images.py` and `core/preprocessing.py` as they were at a git revision, loaded as
    modules of their own (`old_images`, `old_preprocessing`) beside the current ones, so that
    a script can time or score the code before a change in the same run as after it."""

    def own_preprocessing(source: str) -> str:
        return source.replace("from core.preprocessing import", "from old_preprocessing import")

    preprocessing = module_at(revision, "core/preprocessing.py", "old_preprocessing", folder)
    images = module_at(revision, "core/images.py", "old_images", folder, own_preprocessing)
    return images, preprocessing


# --- The command line and the report ---------------------------------------------------------


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """A script's parser: its docstring's first paragraph as description, and --wait-quiet."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_quiet_option(parser)
    return parser


def report(
    run: "BenchRun",
    name: str,
    tables: Sequence[str],
    raw: dict[str, Any],
    notes: Sequence[str] = (),
) -> None:
    """End the run, then print the machine and load, `notes` and the Markdown `tables`; keep
    `raw` with the machine record in var/bench/<name>-<time>.json."""
    run.finish()
    print()
    print(run.header())
    for note in notes:
        print(note)
    for table in tables:
        print()
        print(table)
    path = save_results(name, {**run.record(), **raw})
    print(f"\n# raw results: {path.relative_to(REPO_ROOT)}", flush=True)


# --- The service under measurement ------------------------------------------------------------


def service_env(database: Database, queue: str, **extra: str) -> dict[str, str]:
    """The service's settings for a bench run: its own database and its own Redis queue, and
    the per-client rate limits out of reach (one load generator is one client: a throughput
    bench measures the work, not the limit; `extra` may set them)."""
    unlimited = "100000000/minute"
    return {
        "DATABASE_URL": database.url,
        "BROKER_URL": REDIS_URL,
        "TASK_QUEUE": queue,
        "NIST_DATA_DIR": str(NIST_DATA_DIR),
        **{
            f"RATE_LIMIT_{budget}_{who}": unlimited
            for budget in ("CPU", "STORAGE")
            for who in ("ANONYMOUS", "CLIENT")
        },
        **extra,
    }


@contextlib.contextmanager
def bench_service(
    name: str, workers: int = WORKERS, **settings: str
) -> Iterator[tuple[Server, Database]]:
    """The API as deployed (uvicorn, `workers` processes, more `settings` if given) on a
    throwaway database, publishing to a Redis queue of its own that nobody consumes (deleted at
    the end)."""
    queue = f"hwr-bench-{name}-{int(time.time())}"
    with throwaway_database("hwr_bench") as database:
        try:
            env = service_env(database, queue, **settings)
            with uvicorn_server("api.main:app", env, workers=workers) as server:
                yield server, database
        finally:
            drop_redis_queue(queue)


def load_with_server_cpu(
    server: Server, factory: RequestFactory, concurrency: int, **options: Any
) -> tuple[LoadResult, float]:
    """`run_load` on the server, and the CPU seconds its worker processes spent meanwhile."""
    pids = server.worker_pids()
    before = cpu_seconds(pids)
    result = run_load(server.url, factory, concurrency, **options)
    return result, cpu_seconds(pids) - before


# --- Samples straight into the table ---------------------------------------------------------


@dataclass(frozen=True)
class SampleRow:
    image: bytes
    label: str
    width: int
    height: int
    source: str = "upload"


def copy_samples(dsn: str, rows: Iterable[SampleRow]) -> int:
    """Insert samples straight into the table with COPY (no API): fast set-up of big tables.

    The rows get what the API would store: sha256 of the bytes, evaluation decided as the API
    decides it (domain.samples, from the decoded pixels with this database's evaluation key).
    """
    import psycopg
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.orm import Session

    from core.images import decode_image
    from domain.samples import evaluation_key, is_evaluation_sample

    engine = create_engine(make_url(dsn).set(drivername="postgresql+psycopg"))
    with Session(engine) as session:
        key = evaluation_key(session)
    engine.dispose()
    count = 0
    columns = (
        "sha256, image, content_type, width, height, label, submitted_label, source, evaluation"
    )
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        with cursor.copy(f"COPY samples ({columns}) FROM STDIN") as copy:
            for row in rows:
                sha = hashlib.sha256(row.image).hexdigest()
                pixels = decode_image(row.image, max_bytes=len(row.image), max_pixels=10**8).image
                copy.write_row(
                    (
                        sha,
                        row.image,
                        "image/png",
                        row.width,
                        row.height,
                        row.label,
                        row.label,
                        row.source,
                        is_evaluation_sample(pixels, key),
                    )
                )
                count += 1
        conn.commit()
    return count
