"""Batch prediction over HTTP against the raw ONNX Runtime floor, measured in one run.

    .venv/bin/python -m bench.bench_batch [--duration 20] [--wait-quiet 1800]

`POST /v1/predictions/batch` with 256 distinct NIST images (28x28 PNGs) at concurrency 1 and 2
(uvicorn, 2 workers, throwaway Postgres database), next to:
- the raw floor: one `session.run` on the already-preprocessed (256, 28, 28, 1) batch, with
  the server's session settings (ONNX_INTRA_OP_THREADS threads, sequential);
- the floor with decoding and preprocessing of the 256 PNGs included (the API's
  `Predictor.predict_many`, as the route calls it), to show where time goes.
One process for concurrency 1, two (one per uvicorn worker) for concurrency 2.
"""

from collections.abc import Sequence
from dataclasses import asdict
from statistics import median
from typing import Any

import httpx
import numpy as np

from bench.common import (
    WORKERS,
    BenchRun,
    bench_parser,
    bench_service,
    load_with_server_cpu,
    ratio,
    report,
    verdict,
)
from bench.floors import Floor, calls_for, measure_floor, serving_predictor
from bench.httpload import Request, fixed, multipart, run_load
from testkit.images import small_png
from testkit.nist import nist_glyphs
from testkit.tables import markdown_table

BATCH = 256


def _floor_worker(pngs: list[bytes], seconds: float, raw: bool, start_at: float) -> list[float]:
    """Seconds per batch: session.run alone on preprocessed tensors (raw) or everything the
    route does (the API's Predictor.predict_many)."""
    predictor = serving_predictor()
    predictions, _ = predictor.predict_many(pngs)
    tensors = np.stack([p.glyph for p in predictions])[..., np.newaxis]  # what the model saw

    def one_batch() -> object:
        return predictor.model.probabilities(tensors) if raw else predictor.predict_many(pngs)

    return calls_for(one_batch, seconds, start_at, warmups=3)


def batch_floor(pngs: list[bytes], seconds: float, raw: bool, processes: int) -> Floor:
    what = "session.run on preprocessed tensors" if raw else "decode + preprocess + session.run"
    return measure_floor(what, _floor_worker, (pngs, seconds, raw), processes, len(pngs))


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


def batch_floors(pngs: list[bytes], args: Any) -> dict[tuple[bool, int], Floor]:
    floors: dict[tuple[bool, int], Floor] = {}
    for concurrency in args.concurrency:
        processes = min(concurrency, WORKERS)
        for raw in (True, False):
            floors[raw, concurrency] = f = batch_floor(pngs, args.duration, raw, processes)
            print(f"# floor {f.what} x{processes}: {f.images_per_s:,.0f} images/s", flush=True)
    return floors


def measure_http(request: Request, args: Any) -> tuple[dict[str, float], dict[int, Any]]:
    """The server's own split of a batch, then batches/s at each concurrency."""
    http: dict[int, dict[str, Any]] = {}
    with bench_service("batch") as (server, _):
        timings = server_timings(server.url, request)
        print(f"# server's own timings per batch (median): {timings}", flush=True)
        for concurrency in args.concurrency:
            run_load(server.url, fixed(request), concurrency, duration=args.warmup)
            result, cpu = load_with_server_cpu(
                server, fixed(request), concurrency, duration=args.duration
            )
            http[concurrency] = {"load": asdict(result), "server_cpu": cpu / result.seconds}
            print(
                f"# batch c={concurrency}: {result.rps * BATCH:,.0f} images/s, "
                f"p50 {result.p50_ms:.1f} ms, errors {result.errors}",
                flush=True,
            )
    return timings, http


def batch_table(
    http: dict[int, Any], floors: dict[tuple[bool, int], Floor], concurrencies: list[int]
) -> str:
    rows = []
    for concurrency in concurrencies:
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
    headers = ["concurrency (processes for floors)", "batch over HTTP, images/s"]
    headers += ["p50 ms per batch", "p99 ms", "errors", "raw floor: session.run only, images/s"]
    headers += ["floor incl. decode + preprocess, images/s", "HTTP / raw floor (target ≥ 50%)"]
    return markdown_table([*headers, "HTTP / floor incl. decode + preprocess"], rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)

    run = BenchRun(args.wait_quiet)
    glyphs, _ = nist_glyphs(BATCH)
    pngs = [small_png(g) for g in glyphs]
    body, headers = multipart(files=[("images", f"{i}.png", data) for i, data in enumerate(pngs)])
    request = Request("POST", "/v1/predictions/batch", body, headers)
    print(f"# batch body: {len(body)} bytes for {BATCH} images", flush=True)
    floors = batch_floors(pngs, args)
    timings, http = measure_http(request, args)
    split = (
        f"Server's own split of one batch (median of 20, ms): decode {timings['decode_ms']}, "
        f"preprocess {timings['preprocess_ms']}, inference {timings['inference_ms']}."
    )
    report(
        run,
        "batch",
        [batch_table(http, floors, args.concurrency)],
        {
            "args": vars(args),
            "server_timings": timings,
            "http": http,
            "floors": [asdict(f) | {"concurrency": c} for (_, c), f in floors.items()],
        },
        notes=[split],
    )


if __name__ == "__main__":
    main()
