"""Batch prediction over HTTP against the raw ONNX Runtime floor, measured in one run.

    .venv/bin/python -m bench.bench_batch [--duration 20] [--wait-quiet 1800]

`POST /v1/predictions/batch` with 256 distinct NIST images (28x28 PNGs) at concurrency 1 and 2
(uvicorn, 2 workers, throwaway Postgres database), next to:
- the raw floor: one `session.run` on the already-preprocessed (256, 28, 28, 1) batch, with
  the server's session settings (ONNX_INTRA_OP_THREADS threads, sequential);
- the floor with decoding and preprocessing of the 256 PNGs included, to show where time goes.
One process for concurrency 1, two (one per uvicorn worker) for concurrency 2.
"""

import argparse
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from statistics import median
from typing import Any

import httpx
import numpy as np

from bench.bench_predict import WORKERS, serving_session
from bench.common import (
    REPO_ROOT,
    BenchRun,
    add_quiet_option,
    cpu_seconds,
    drop_redis_queue,
    markdown_table,
    nist_glyphs,
    ratio,
    save_results,
    service_env,
    small_png,
    throwaway_database,
    uvicorn_server,
    verdict,
)
from bench.httpload import Request, fixed, multipart, percentile, run_load

BATCH = 256


def _floor_worker(pngs: list[bytes], seconds: float, raw: bool, start_at: float) -> list[float]:
    """Seconds per batch: session.run alone on preprocessed tensors (raw) or everything."""
    from core.config import get_settings
    from core.images import decode_image
    from core.preprocessing import preprocess_batch

    settings = get_settings()
    limits = {"max_bytes": settings.max_upload_bytes, "max_pixels": settings.max_image_pixels}
    model = serving_session()

    def preprocess_all() -> np.ndarray:  # as the route does: decode each, preprocess together
        return preprocess_batch([decode_image(data, **limits).image for data in pngs])

    tensors = preprocess_all()
    for _ in range(3):
        model.probabilities(tensors)
    while time.time() < start_at:
        time.sleep(0.001)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        model.probabilities(tensors if raw else preprocess_all())
        latencies.append(time.perf_counter() - start)
    return latencies


@dataclass
class BatchFloor:
    what: str
    processes: int
    batches: int
    images_per_s: float
    p50_ms: float  # per batch
    p99_ms: float


def batch_floor(pngs: list[bytes], seconds: float, raw: bool, processes: int) -> BatchFloor:
    if processes == 1:
        runs = [_floor_worker(pngs, seconds, raw, 0.0)]
    else:
        start_at = time.time() + 15
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_floor_worker, pngs, seconds, raw, start_at) for _ in range(processes)
            ]
            runs = [f.result() for f in futures]
    merged = sorted(x for run in runs for x in run)
    return BatchFloor(
        what="session.run on preprocessed tensors" if raw else "decode + preprocess + session.run",
        processes=processes,
        batches=len(merged),
        images_per_s=sum(len(run) * len(pngs) / seconds for run in runs),
        p50_ms=percentile(merged, 50) * 1000,
        p99_ms=percentile(merged, 99) * 1000,
    )


def server_timings(url: str, request: Request, times: int = 20) -> dict[str, float]:
    """The route's own split of a batch: median decode, preprocess and inference ms."""
    seen: dict[str, list[float]] = {"decode_ms": [], "preprocess_ms": [], "inference_ms": []}
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(times):
            response = client.post(request.path, content=request.content, headers=request.headers)
            response.raise_for_status()
            body = response.json()
            assert len(body["results"]) == BATCH and all(r["label"] for r in body["results"])
            for key in seen:
                seen[key].append(body["timings"][key])
    return {key: round(median(values), 2) for key, values in seen.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    add_quiet_option(parser)
    args = parser.parse_args(argv)

    run = BenchRun(args.wait_quiet)
    glyphs, _ = nist_glyphs(BATCH)
    pngs = [small_png(g) for g in glyphs]
    body, headers = multipart(files=[("images", f"{i}.png", data) for i, data in enumerate(pngs)])
    request = Request("POST", "/v1/predictions/batch", body, headers)
    print(f"# batch body: {len(body)} bytes for {BATCH} images", flush=True)

    floors: dict[tuple[bool, int], BatchFloor] = {}
    for concurrency in args.concurrency:
        processes = min(concurrency, WORKERS)
        for raw in (True, False):
            floors[raw, concurrency] = f = batch_floor(pngs, args.duration, raw, processes)
            print(f"# floor {f.what} x{processes}: {f.images_per_s:,.0f} images/s", flush=True)

    http: dict[int, dict[str, Any]] = {}
    queue = f"hwr-bench-batch-{int(time.time())}"
    with throwaway_database() as database:
        try:
            env = service_env(database, queue)
            with uvicorn_server("api.main:app", env, workers=WORKERS) as server:
                timings = server_timings(server.url, request)
                print(f"# server's own timings per batch (median): {timings}", flush=True)
                for concurrency in args.concurrency:
                    run_load(server.url, fixed(request), concurrency, duration=args.warmup)
                    pids = server.worker_pids()
                    before = cpu_seconds(pids)
                    result = run_load(server.url, fixed(request), concurrency, args.duration)
                    server_cpu = (cpu_seconds(pids) - before) / result.seconds
                    http[concurrency] = {"load": asdict(result), "server_cpu": server_cpu}
                    print(
                        f"# batch c={concurrency}: {result.rps * BATCH:,.0f} images/s, "
                        f"p50 {result.p50_ms:.1f} ms, errors {result.errors}",
                        flush=True,
                    )
        finally:
            drop_redis_queue(queue)
    run.finish()

    print()
    print(run.header())
    print(
        f"Server's own split of one batch (median of 20, ms): decode {timings['decode_ms']}, "
        f"preprocess {timings['preprocess_ms']}, inference {timings['inference_ms']}."
    )
    print()
    rows = []
    for concurrency in args.concurrency:
        load = http[concurrency]["load"]
        raw, full = floors[True, concurrency], floors[False, concurrency]
        images_per_s = load["rps"] * BATCH
        vs_raw = ratio(images_per_s, raw.images_per_s)
        rows.append(
            [
                concurrency,
                round(images_per_s),
                round(load["p50_ms"], 1),
                round(load["p99_ms"], 1),
                load["errors"],
                round(raw.images_per_s),
                round(full.images_per_s),
                f"{vs_raw:.0%} ({verdict(vs_raw, 0.5)})",
                f"{ratio(images_per_s, full.images_per_s):.0%}",
            ]
        )
    print(
        markdown_table(
            [
                "concurrency (processes for floors)",
                "batch over HTTP, images/s",
                "p50 ms per batch",
                "p99 ms",
                "errors",
                "raw floor: session.run only, images/s",
                "floor incl. decode + preprocess, images/s",
                "HTTP / raw floor (target ≥ 50%)",
                "HTTP / floor incl. decode + preprocess",
            ],
            rows,
        )
    )
    path = save_results(
        "batch",
        {
            **run.record(),
            "args": vars(args),
            "server_timings": timings,
            "http": http,
            "floors": [asdict(f) | {"concurrency": c} for (_, c), f in floors.items()],
        },
    )
    print(f"\n# raw results: {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
