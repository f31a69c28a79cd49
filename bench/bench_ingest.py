"""Upload ingest into Postgres: uploads/s, and whether an upload costs the same as the table grows.

    .venv/bin/python -m bench.bench_ingest [--uploads 2000] [--sizes 1000 10000 100000]

The service (uvicorn, 2 workers, a throwaway Postgres database, Redis as broker on its own queue,
no Celery worker consuming it) takes `POST /v1/samples` from 16 concurrent clients, each upload a
distinct image: 280x280 canvas PNGs like the web page sends (~10 KB). Before each measurement
the samples table is filled up to the given size with COPY (small valid PNGs with distinct
hashes, as the API would store them) and analysed; then a fixed number of HTTP uploads is timed.
Every upload does what it does in production: decode, hash, look up the hash, insert, commit,
and publish a retrain check to Redis.
"""

import argparse
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import psycopg

from bench.bench_predict import WORKERS
from bench.common import (
    REPO_ROOT,
    BenchRun,
    SampleRow,
    add_quiet_option,
    canvas_png,
    copy_samples,
    cpu_seconds,
    drop_redis_queue,
    markdown_table,
    nist_glyphs,
    ratio,
    save_results,
    service_env,
    small_png,
    tagged_png,
    throwaway_database,
    uvicorn_server,
)
from bench.httpload import Request, multipart, run_load


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=2000, help="timed uploads per size")
    parser.add_argument("--warmup", type=int, default=200, help="untimed uploads before each")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    add_quiet_option(parser)
    args = parser.parse_args(argv)

    run = BenchRun(args.wait_quiet)
    per_size = args.uploads + args.warmup
    print(f"# encoding {per_size * len(args.sizes):,} distinct canvas uploads", flush=True)
    batches = [upload_requests(per_size, i * per_size) for i in range(len(args.sizes))]
    print(f"# upload body: ~{len(batches[0][0].content or b''):,} bytes", flush=True)
    pool_glyphs, pool_labels = nist_glyphs(1000, offset=100_000)
    pool = [(small_png(g), label) for g, label in zip(pool_glyphs, pool_labels, strict=True)]

    results: list[dict[str, Any]] = []
    queue = f"hwr-bench-ingest-{int(time.time())}"
    filled = 0
    with throwaway_database() as database:
        try:
            env = service_env(database, queue)
            with uvicorn_server("api.main:app", env, workers=WORKERS) as server:
                for size, requests in zip(args.sizes, batches, strict=True):
                    filled = grow_table(database.dsn, size, pool, filled)
                    rows_before, _ = table_state(database.dsn)
                    warm, timed = requests[: args.warmup], requests[args.warmup :]
                    run_load(server.url, warm.__getitem__, args.concurrency, total=len(warm))
                    pids = server.worker_pids()
                    before = cpu_seconds(pids)
                    result = run_load(
                        server.url, timed.__getitem__, args.concurrency, total=len(timed)
                    )
                    server_cpu_ms = (cpu_seconds(pids) - before) / result.requests * 1000
                    rows_after, table_size = table_state(database.dsn)
                    created = result.statuses.get("201", 0)
                    results.append(
                        {
                            "rows_before": rows_before,
                            "rows_after": rows_after,
                            "table_size": table_size,
                            "created": created,
                            "server_cpu_ms_per_upload": server_cpu_ms,
                            "load": asdict(result),
                        }
                    )
                    print(
                        f"# {rows_before:,} rows: {result.rps:.1f} uploads/s, "
                        f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                        f"{created} created, errors {result.errors} {result.error_samples}, "
                        f"server CPU {server_cpu_ms:.2f} ms/upload",
                        flush=True,
                    )
        finally:
            drop_redis_queue(queue)
    run.finish()

    print()
    print(run.header())
    print()
    first = results[0]
    rows = []
    for r in results:
        load = r["load"]
        rows.append(
            [
                r["rows_before"],
                r["table_size"],
                load["requests"],
                r["created"],
                load["errors"],
                round(load["rps"], 1),
                round(load["p50_ms"], 1),
                round(load["p99_ms"], 1),
                round(r["server_cpu_ms_per_upload"], 2),
                f"{ratio(load['rps'], first['load']['rps']):.0%}",
            ]
        )
    print(
        markdown_table(
            [
                "rows in samples before",
                "table size after",
                "uploads timed",
                "created (201)",
                "errors",
                f"uploads/s ({args.concurrency} clients)",
                "p50 ms",
                "p99 ms",
                "server CPU ms per upload",
                f"uploads/s vs {first['rows_before']:,} rows",
            ],
            rows,
        )
    )
    path = save_results(
        "ingest",
        {
            **run.record(),
            "args": vars(args),
            "results": results,
        },
    )
    print(f"\n# raw results: {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
