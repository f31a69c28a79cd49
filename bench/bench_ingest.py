"""Upload ingest into Postgres: uploads/s, and whether an upload costs the same as the table grows.

    .venv/bin/python -m bench.bench_ingest [--uploads 2000] [--sizes 1000 10000 100000 1000000]

The service (uvicorn, 2 workers, a throwaway Postgres database, Redis as broker on its own queue,
no Celery worker consuming it) takes `POST /v1/samples` from 16 concurrent clients, each upload a
distinct image: 280x280 canvas PNGs like the web page sends (~10 KB). Before each measurement
the samples table is filled up to the given size with COPY (small valid PNGs with distinct
hashes, as the API would store them) and analysed; then a fixed number of HTTP uploads is timed.
Every upload does what it does in production: decode, hash, one INSERT .. ON CONFLICT, commit,
and one query deciding whether the retrain threshold (100) is crossed. After each fill a
finished training run is recorded at the table's end, as after a retrain; the first hundred
training uploads then pay for the full check (no run open: count the new training samples, up
to the threshold) and the rest for the short one (a run is open: no worker consumes it here).
The full check is also timed on its own at each size, in process (`is_due`, 1,000 calls).

The load generator shares the machine's cores with the service. Besides uploads/s the CPU time
per upload is measured for the API workers, for Postgres (all its processes) and for the
client, and the service's capacity is derived: how many uploads/s the cores could take with
the clients elsewhere (cores x 1000 / (API + Postgres ms per upload)).
"""

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    BenchRun,
    SampleRow,
    bench_parser,
    bench_service,
    copy_samples,
    ratio,
    report,
)
from bench.httpload import Request, multipart, run_load
from testkit.images import canvas_png, small_png, tagged_png
from testkit.nist import nist_glyphs
from testkit.stack import cpu_seconds
from testkit.tables import markdown_table

CORES = os.cpu_count() or 1
THRESHOLD = 100  # the production default


def upload_requests(count: int, offset: int) -> list[Request]:
    """`count` distinct canvas uploads (NIST test images drawn large), bodies encoded now."""
    glyphs, labels = nist_glyphs(count, offset)
    requests = []
    for index, (glyph, label) in enumerate(zip(glyphs, labels, strict=True)):
        # The tag makes the bytes distinct even where NIST has the same pixels twice.
        png = tagged_png(canvas_png(glyph), f"upload-{offset + index}")
        body, headers = multipart({"label": label, "source": "canvas"}, [("image", "c.png", png)])
        requests.append(Request("POST", "/v1/samples", body, headers))
    return requests


def filler_rows(count: int, start: int, pool: list[tuple[bytes, str]]) -> Iterator[SampleRow]:
    """Small valid PNGs (NIST 28x28) with distinct bytes, for growing the table quickly."""
    for number in range(start, start + count):
        png, label = pool[number % len(pool)]
        yield SampleRow(tagged_png(png, f"fill-{number}"), label, 28, 28)


def postgres_cpu() -> dict[int, float]:
    """CPU seconds so far of every process of the local Postgres server (backends, WAL writer,
    checkpointer...), by pid."""
    used = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    used[int(entry.name)] = cpu_seconds([int(entry.name)])
    return used


def postgres_cpu_since(before: dict[int, float]) -> float:
    """CPU seconds Postgres used since `before`: processes alive at both ends, and new ones."""
    return sum(now - before.get(pid, 0.0) for pid, now in postgres_cpu().items() if now)


def table_state(dsn: str) -> tuple[int, str]:
    with psycopg.connect(dsn) as conn:
        count = conn.execute("SELECT count(*) FROM samples").fetchone()
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('samples'))").fetchone()
    assert count is not None and size is not None
    return int(count[0]), str(size[0])


def grow_table(dsn: str, target: int, pool: list[tuple[bytes, str]], filled: int) -> int:
    """COPY filler rows until the table holds `target` rows; VACUUM ANALYZE like autovacuum."""
    current, _ = table_state(dsn)
    missing = max(0, target - current)
    if missing:
        started = time.perf_counter()
        copy_samples(dsn, filler_rows(missing, filled, pool))
        print(f"# filled {missing:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE samples")
    return filled + missing


def record_finished_run(dsn: str) -> None:
    """A succeeded run that took in every stored sample but the last few: what a retrain leaves,
    with fewer new training samples than the threshold (none open, so the check counts)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE training_runs SET status = 'failed' WHERE status IN ('queued', 'running')"
        )
        conn.execute(
            "INSERT INTO training_runs (status, trigger, full_retrain, sample_watermark, progress,"
            " epoch, epochs, attempts, finished_at) SELECT 'succeeded', 'manual', false,"
            " max(id) - %s, 1, 0, 0, 1, now() FROM samples",
            (THRESHOLD // 2,),
        )


def full_check_ms(url: str, calls: int = 1000) -> float:
    """Mean time of `runs.is_due` with no run open: the most an upload's check costs."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from domain import runs

    engine = create_engine(url)
    with Session(engine) as session:
        assert not runs.is_due(session, THRESHOLD)  # counts, finds too few: the full check
        started = time.perf_counter()
        for _ in range(calls):
            runs.is_due(session, THRESHOLD)
            session.rollback()
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed / calls * 1000


def measure(url: str, worker_pids: list[int], dsn: str, requests: list[Request], args: Any) -> dict:
    """Warm up, then time the uploads of one table size, with everyone's CPU per upload."""
    warm, timed = requests[: args.warmup], requests[args.warmup :]
    run_load(url, warm.__getitem__, args.concurrency, total=len(warm))
    rows_before, _ = table_state(dsn)
    api_before, db_before = cpu_seconds(worker_pids), postgres_cpu()
    result = run_load(url, timed.__getitem__, args.concurrency, total=len(timed))
    api_ms = (cpu_seconds(worker_pids) - api_before) / result.requests * 1000
    db_ms = postgres_cpu_since(db_before) / result.requests * 1000
    rows_after, table_size = table_state(dsn)
    created = result.statuses.get("201", 0)
    print(
        f"# {rows_before:,} rows: {result.rps:.1f} uploads/s, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, {created} created, errors {result.errors} "
        f"{result.error_samples}, CPU ms/upload: API {api_ms:.2f}, Postgres {db_ms:.2f}",
        flush=True,
    )
    return {
        "rows_before": rows_before,
        "rows_after": rows_after,
        "table_size": table_size,
        "created": created,
        "lost": created - (rows_after - rows_before),  # answered 201 but not in the table
        "server_cpu_ms_per_upload": api_ms,
        "postgres_cpu_ms_per_upload": db_ms,
        "client_cpu_ms_per_upload": result.client_cpu * result.seconds / result.requests * 1000,
        "capacity_uploads_per_s": CORES * 1000 / (api_ms + db_ms),
        "load": asdict(result),
    }


def results_table(results: list[dict[str, Any]], concurrency: int) -> str:
    first = results[0]["load"]["rps"]
    rows = [
        [
            r["rows_before"],
            r["table_size"],
            r["load"]["requests"],
            r["created"],
            r["lost"],
            r["load"]["errors"],
            round(r["load"]["rps"], 1),
            round(r["load"]["p50_ms"], 1),
            round(r["load"]["p99_ms"], 1),
            round(r["server_cpu_ms_per_upload"], 2),
            round(r["postgres_cpu_ms_per_upload"], 2),
            round(r["client_cpu_ms_per_upload"], 2),
            round(r["capacity_uploads_per_s"]),
            round(r["full_threshold_check_ms"], 3),
            f"{ratio(r['load']['rps'], first):.0%}",
        ]
        for r in results
    ]
    headers = [
        "rows in samples before",
        "table size after",
        "uploads timed",
        "created (201)",
        "lost",
        "errors",
        f"uploads/s ({concurrency} clients)",
        "p50 ms",
        "p99 ms",
        "API CPU ms per upload",
        "Postgres CPU ms per upload",
        "client CPU ms per upload",
        f"capacity on {CORES} cores, clients elsewhere (uploads/s)",
        "full threshold check, ms (in process)",
        f"uploads/s vs {results[0]['rows_before']:,} rows",
    ]
    return markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--uploads", type=int, default=2000, help="timed uploads per size")
    parser.add_argument("--warmup", type=int, default=200, help="untimed uploads before each")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    args = parser.parse_args(argv)

    run = BenchRun(args.wait_quiet)
    per_size = args.uploads + args.warmup
    print(f"# encoding {per_size * len(args.sizes):,} distinct canvas uploads", flush=True)
    batches = [upload_requests(per_size, i * per_size) for i in range(len(args.sizes))]
    pool_glyphs, pool_labels = nist_glyphs(1000, offset=100_000)
    pool = [(small_png(g), label) for g, label in zip(pool_glyphs, pool_labels, strict=True)]

    results: list[dict[str, Any]] = []
    filled = 0
    with bench_service("ingest", RETRAIN_THRESHOLD=str(THRESHOLD)) as (server, database):
        for size, requests in zip(args.sizes, batches, strict=True):
            filled = grow_table(database.dsn, size, pool, filled)
            record_finished_run(database.dsn)
            check_ms = full_check_ms(database.url)
            pids = server.worker_pids()
            result = measure(server.url, pids, database.dsn, requests, args)
            results.append(result | {"full_threshold_check_ms": check_ms})

    table = results_table(results, args.concurrency)
    report(run, "ingest", [table], {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
