"""What an anonymous client can cost the API: memory per picture, heat maps, and when 429 comes.

    .venv/bin/python -m bench.bench_costs [--seconds 10] [--wait-quiet 600]

On a private stack (its own Postgres and Redis, bench/private_stack.py), one uvicorn process
with the production defaults (5 MiB uploads, a 128 MiB decode budget, the default rate
limits):
1. each way of decoding (core/images.py: Route) on a 16 MP picture, in a fresh process: the
   peak memory it took next to the budget it is charged;
2. the API process's peak memory (VmHWM) while it answers the issue's 16-bit RGBA PNG of
   7071x7071 (0.4 MB on the wire) alone and as a batch of 8, then a 3800x3800 RGBA PNG within
   the budget alone and as a batch of 4;
3. 8 clients asking for heat maps (a labeller's key: not rate-limited) for `--seconds`: heat
   maps a second, and /healthz's latency meanwhile;
4. an anonymous client with the default budget: how many heat maps, and how many plain 28x28
   predictions, it gets before 429, and the Retry-After it is told.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.common import BenchRun, bench_parser, report
from bench.private_stack import PrivateStack
from core.images import read_header, sniff_format
from testkit.images import decode_peak_bytes, decode_route_pictures, flat_png, png
from testkit.tables import markdown_table, percentile

MB = 1024 * 1024


def decode_costs() -> list[list[str]]:
    rows = []
    warm_ups = decode_route_pictures(64)
    for name, (data, route) in decode_route_pictures(4000).items():
        header = read_header(data, sniff_format(data) or "")
        peak = decode_peak_bytes(data, warm_ups[name][0])
        rows.append(
            [
                name,
                route.value,
                f"{len(data) / 1024:.0f} kB",
                f"{peak / MB:.0f} MB",
                f"{header.decode_bytes() / MB:.0f} MB",
            ]
        )
    return rows


def peak_memory(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def api_memory(stack: PrivateStack, http: httpx.Client) -> list[list[str]]:
    pid = stack.processes["api"].pid
    bomb = flat_png(7071, 7071, bit_depth=16, colour_type=6)
    big = flat_png(3800, 3800, bit_depth=8, colour_type=6)
    http.post("/v1/predictions", files={"image": ("a.png", png(1))})
    start = peak_memory(pid)
    steps = [
        ("16-bit RGBA 7071x7071, alone", "/v1/predictions", [("image", bomb)]),
        ("the same, a batch of 8", "/v1/predictions/batch", [("images", bomb)] * 8),
        ("RGBA 3800x3800, alone", "/v1/predictions", [("image", big)]),
        ("the same, a batch of 4", "/v1/predictions/batch", [("images", big)] * 4),
    ]
    rows = []
    for name, path, parts in steps:
        files = [(field, (f"{i}.png", data)) for i, (field, data) in enumerate(parts)]
        began = time.perf_counter()
        reply = http.post(path, files=files, timeout=120)
        seconds = time.perf_counter() - began
        body = reply.json()
        results = body.get("results", [body])
        answer = ", ".join(sorted({r.get("error") or "read" for r in results}))
        grown = (peak_memory(pid) - start) / MB
        rows.append([name, f"{reply.status_code} ({answer})", f"{seconds:.2f} s", f"{grown:.0f}"])
    return rows


def heat_maps(stack: PrivateStack, seconds: float, headers: dict[str, str]) -> dict[str, Any]:
    stop = threading.Event()
    served = []

    def client(seed: int) -> None:
        with httpx.Client(base_url=stack.api_url, timeout=60, headers=headers) as http:
            while not stop.is_set():
                reply = http.post(
                    "/v1/predictions",
                    params={"include": "heatmap"},
                    files={"image": ("x.png", png(seed, size=(280, 280)))},
                )
                served.append(reply.status_code)

    health = []
    with ThreadPoolExecutor(8) as pool, httpx.Client(base_url=stack.api_url) as http:
        clients = [pool.submit(client, seed) for seed in range(8)]
        time.sleep(1)
        began, count = time.perf_counter(), len(served)
        while time.perf_counter() - began < seconds:
            started = time.perf_counter()
            http.get("/healthz")
            health.append(time.perf_counter() - started)
            time.sleep(0.05)
        rate = (len(served) - count) / (time.perf_counter() - began)
        stop.set()
        for done in clients:
            done.result()
    return {
        "heat_maps_per_second": rate,
        "non_200": sum(status != 200 for status in served),
        "health_p50_ms": percentile(health, 0.5) * 1000,
        "health_p95_ms": percentile(health, 0.95) * 1000,
    }


def until_429(http: httpx.Client, params: dict[str, str], picture: bytes) -> tuple[int, str]:
    for count in range(1, 100_000):
        reply = http.post("/v1/predictions", params=params, files={"image": ("x.png", picture)})
        if reply.status_code == 429:
            return count - 1, reply.headers["retry-after"]
    return -1, "-"


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    run = BenchRun(args.wait_quiet)
    decode_rows = decode_costs()
    with PrivateStack() as stack:
        stack.start_api(workers=1)
        labeller = stack.run(
            ["-m", "api.manage", "keys", "create", "--name", "bench", "--role", "labeller"]
        ).strip()
        with httpx.Client(base_url=stack.api_url, timeout=120) as http:
            memory_rows = api_memory(stack, http)
            heat = heat_maps(stack, args.seconds, {"Authorization": f"Bearer {labeller}"})
            heat_count, heat_retry = until_429(http, {"include": "heatmap"}, png(3, (280, 280)))
        redis.Redis(port=stack.redis_port).flushall()  # a fresh budget for the second count
        with httpx.Client(base_url=stack.api_url, timeout=120) as http:
            plain_count, plain_retry = until_429(http, {}, png(3))
    tables = [
        "Decoding a 16 MP picture, each way (a fresh process's peak growth; the budget "
        "charged):\n\n"
        + markdown_table(["picture", "decoded by", "file", "peak growth", "charged"], decode_rows),
        "The API process (one uvicorn worker), peak memory (VmHWM) grown since the first "
        "prediction:\n\n"
        + markdown_table(["request", "reply", "time", "peak growth, MB"], memory_rows),
        f"8 clients asking for heat maps (280x280 PNG) for {args.seconds:.0f} s: "
        f"{heat['heat_maps_per_second']:.1f} heat maps/s ({heat['non_200']} not 200); "
        f"/healthz meanwhile p50 {heat['health_p50_ms']:.1f} ms, p95 "
        f"{heat['health_p95_ms']:.1f} ms.",
        "An anonymous client with the default budget (RATE_LIMIT_CPU_ANONYMOUS=5000/minute): "
        f"{heat_count} heat maps, then 429 with Retry-After {heat_retry} s; with a fresh "
        f"budget, {plain_count} plain 28x28 predictions, then 429 with Retry-After "
        f"{plain_retry} s.",
    ]
    raw = {"decode": decode_rows, "memory": memory_rows, "heat": heat}
    raw |= {"heat_maps_before_429": heat_count, "predictions_before_429": plain_count}
    report(run, "costs", tables, raw)


if __name__ == "__main__":
    main()
