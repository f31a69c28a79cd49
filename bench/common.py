"""What every benchmark script shares: the machine it ran on, a quiet-machine check, a throwaway
Postgres database, a uvicorn server in a subprocess, test images, and Markdown tables.

Speed figures only mean something next to each other, measured in one run on one machine, so
every script records the machine and the load average with its results.
"""

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "var" / "bench"
PYTHON = sys.executable

# The shared servers the test suite also uses; never stopped or restarted from here.
POSTGRES_SERVER_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NIST_DATA_DIR = Path(os.environ.get("NIST_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))

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


def add_quiet_option(parser: Any) -> None:
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"first wait up to this long for load < {QUIET_LOAD} and no trainer/pytest running",
    )


# --- Output -----------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; numbers right-aligned."""

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return str(value)
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    numeric = [
        all(isinstance(row[i], int | float) for row in rows) if rows else False
        for i in range(len(headers))
    ]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


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


def load_revision(revision: str, folder: Path) -> tuple[ModuleType, ModuleType]:
    """`core/images.py` and `core/preprocessing.py` as they were at a git revision, loaded as
    modules of their own (`old_images`, `old_preprocessing`) beside the current ones, so that
    a script can time or score the code before a change in the same run as after it."""
    modules: dict[str, ModuleType] = {}
    for name in ("preprocessing", "images"):
        source = subprocess.run(
            ["git", "show", f"{revision}:core/{name}.py"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        source = source.replace("from core.preprocessing import", "from old_preprocessing import")
        path = folder / f"old_{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(f"old_{name}", path)
        assert spec is not None and spec.loader is not None
        modules[name] = importlib.util.module_from_spec(spec)
        sys.modules[f"old_{name}"] = modules[name]
        spec.loader.exec_module(modules[name])
    return modules["images"], modules["preprocessing"]


# --- A throwaway Postgres database ------------------------------------------------------------


def _server_dsn() -> str:
    from sqlalchemy.engine import make_url

    return (
        make_url(POSTGRES_SERVER_URL)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


def _database_url(name: str, driver: str = "postgresql+psycopg") -> str:
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_SERVER_URL).set(drivername=driver, database=name)
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class Database:
    name: str
    url: str  # SQLAlchemy URL, for DATABASE_URL
    dsn: str  # libpq DSN, for psycopg


@contextlib.contextmanager
def throwaway_database(prefix: str = "hwr_bench") -> Iterator[Database]:
    """A fresh database migrated to head on the shared server, dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_server_dsn(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database = Database(name, _database_url(name), _database_url(name, "postgresql"))
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
        with psycopg.connect(_server_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def service_env(database: Database, queue: str, **extra: str) -> dict[str, str]:
    """The service's settings for a bench run: its own database and its own Redis queue."""
    return {
        "DATABASE_URL": database.url,
        "BROKER_URL": REDIS_URL,
        "TASK_QUEUE": queue,
        "NIST_DATA_DIR": str(NIST_DATA_DIR),
        **extra,
    }


def drop_redis_queue(queue: str) -> None:
    """Messages the API published while nobody consumed them (retrain checks)."""
    import redis

    with contextlib.suppress(redis.RedisError):
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).delete(queue)


# --- A uvicorn server in a subprocess ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        children = [int(p) for p in out.split()]
        # multiprocessing's resource tracker is a child too; workers run uvicorn.
        workers = [
            pid
            for pid in children
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
    workers: int = 2,
    startup_timeout: float = 120.0,
    extra_args: Sequence[str] = (),
) -> Iterator[Server]:
    """`uvicorn <app> --workers N` as the Dockerfile/compose run it; stopped on exit.

    Ready once every worker has logged "Application startup complete" (each loads its model).
    """
    port = free_port()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hwr-bench-")))
        metrics_dir = tmp / "prometheus"
        metrics_dir.mkdir()
        log_path = tmp / "server.log"
        log = stack.enter_context(log_path.open("wb"))
        command = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
        if workers > 1:
            command += ["--workers", str(workers)]
        process = subprocess.Popen(
            [*command, *extra_args],
            cwd=REPO_ROOT,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = Server(f"http://127.0.0.1:{port}", process, log_path)
        try:
            deadline = time.monotonic() + startup_timeout
            while log_path.read_bytes().count(b"Application startup complete") < workers:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{app} did not start:\n{log_path.read_text(errors='replace')[-3000:]}"
                    )
                time.sleep(0.2)
            yield server
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


# --- Images -----------------------------------------------------------------------------------


def nist_glyphs(count: int, offset: int = 0) -> tuple[np.ndarray, list[str]]:
    """Real NIST characters (upright uint8 28x28, white on black) and their labels.

    From the EMNIST bymerge test split (116k images); labels are mapped onto the service's
    47-character set.
    """
    from core.config import EMNIST_BALANCED_LABELS
    from trainer.data import read_split

    split = read_split(NIST_DATA_DIR / "emnist" / "emnist-bymerge-test-images-idx3-ubyte.gz")
    if offset + count > len(split.images):
        raise ValueError(f"only {len(split.images)} NIST test images; asked for {offset + count}")
    chars = {
        number: sorted(c for c in characters if c in EMNIST_BALANCED_LABELS)[0]
        for number, characters in split.characters.items()
    }
    images = split.images[offset : offset + count]
    labels = [chars[int(n)] for n in split.labels[offset : offset + count]]
    return images, labels


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def small_png(glyph: np.ndarray) -> bytes:
    """A NIST image as a 28x28 grayscale PNG (a few hundred bytes)."""
    return png_bytes(Image.fromarray(glyph, mode="L"))


def canvas_png(glyph: np.ndarray) -> bytes:
    """What the web page's drawing board sends: a 280x280 RGBA PNG, white strokes on opaque
    black, the glyph drawn large with smooth edges."""
    big = Image.fromarray(glyph, mode="L").resize((280, 280), Image.Resampling.BICUBIC)
    big = big.point(lambda v: 255 if v > 110 else 0).filter(ImageFilter.GaussianBlur(1.2))
    return png_bytes(big.convert("RGBA"))


def photo_jpeg(width: int = 3000, height: int = 4000, seed: int = 0) -> bytes:
    """A phone photo of one character on paper: 12 MP JPEG, uneven light, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 200 + 40 * (xx / width) - 30 * (yy / height)  # a shadow across the sheet
    paper = np.stack([light, light * 0.97, light * 0.9], axis=-1)
    paper += rng.normal(0, 4, paper.shape).astype(np.float32)
    photo = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8), "RGB")
    pen = ImageDraw.Draw(photo)
    cx, cy, size = width / 2, height / 2, min(width, height) / 4
    pen.line([(cx - size, cy + size), (cx, cy - size), (cx + size, cy + size)], (40, 40, 50), 60)
    pen.line([(cx - size / 2, cy + size / 5), (cx + size / 2, cy + size / 5)], (40, 40, 50), 60)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def tagged_png(png: bytes, tag: str) -> bytes:
    """The same PNG with a tEXt chunk after its header: same pixels, distinct bytes (and so a
    distinct sha256), without encoding the image again."""
    payload = b"bench\x00" + tag.encode()
    chunk = struct.pack(">I", len(payload)) + b"tEXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + payload))
    header_end = 8 + 4 + 4 + 13 + 4  # signature, then IHDR: length, type, 13 bytes, CRC
    return png[:header_end] + chunk + png[header_end:]


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
