"""Load on a private stack: many concurrent clients uploading and predicting, nothing lost.

    .venv/bin/python -m bench.load                       # 50 clients, 60 s, 2 uvicorn workers
    .venv/bin/python -m bench.load --duration 20 --workers 3
    .venv/bin/python -m bench.load --promote-during      # activate another version mid-run

The clients are asyncio tasks sharing one httpx.AsyncClient (one connection each), in this
process; each sends, in a loop, an upload of a distinct image (with a valid label) or a
prediction. The API is uvicorn with --workers N on a private Postgres and Redis
(bench/private_stack.py; the shared servers are never touched). No Celery worker runs and
RETRAIN_THRESHOLD is out of reach: this measures serving, not training.

What it checks, and prints as tables:
- no 5xx and no transport error (goal 0);
- every 201 reply is a row in Postgres and every row had its 201 (goal: equal counts);
- latency p50/p99/max per kind of request, and throughput;
- with --promote-during: a second version (a copy of v1's ONNX) is activated through the admin
  route half-way; failed requests around it (goal 0) and when every worker served it.

The client is Python on the same 2 cores as the server: its own CPU use is printed; near 1.0
core means the client, not the server, set the pace.
"""

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from PIL import Image, ImageDraw

from bench.private_stack import PrivateStack
from core.config import EMNIST_BALANCED_LABELS
from testkit.images import encode
from testkit.tables import markdown_table, percentile


@dataclass
class Result:
    kind: str  # "upload" or "predict"
    started: float  # seconds since the start of the run
    latency: float
    status: int  # 0: no HTTP reply (transport error)
    error: str = ""
    model_version: int | None = None
    clean: bool = False  # an error reply that is JSON {"error", "detail"}


@dataclass
class Promotion:
    version: int
    at: float = 0.0  # seconds since the start of the run
    status: int = 0
    detail: str = ""


def distinct_png(index: int) -> bytes:
    """A 28x28 scribble unlike any other index's: a few strokes, and the index itself written
    into four faint pixels, so that no two uploads have the same bytes."""
    rng = random.Random(index)
    image = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(image)
    points = [(rng.randrange(4, 24), rng.randrange(4, 24)) for _ in range(4)]
    draw.line(points, fill=255, width=3)
    for position in range(4):
        image.putpixel((position, 27), 1 + (index >> (6 * position)) % 64)
    return encode(image)


@dataclass
class LoadRun:
    """One run: its settings, the results so far, and the shared counter of upload images."""

    base_url: str
    clients: int
    duration: float
    upload_share: float
    admin_token: str
    promotion: Promotion | None = None
    results: list[Result] = field(default_factory=list)
    next_image: int = 0
    predict_images: list[bytes] = field(
        default_factory=lambda: [distinct_png(10**9 + i) for i in range(32)]
    )

    async def client(self, number: int, http: httpx.AsyncClient, start: float) -> None:
        rng = random.Random(number)
        while (now := time.perf_counter()) - start < self.duration:
            if rng.random() < self.upload_share:
                kind = "upload"
                self.next_image += 1
                files = {"image": ("x.png", distinct_png(self.next_image), "image/png")}
                data = {"label": rng.choice(EMNIST_BALANCED_LABELS)}
                path = "/v1/samples"
            else:
                kind = "predict"
                files = {"image": ("x.png", rng.choice(self.predict_images), "image/png")}
                data = {}
                path = "/v1/predictions"
            result = Result(kind, now - start, 0.0, 0)
            try:
                reply = await http.post(path, files=files, data=data)
                result.status = reply.status_code
                if kind == "predict" and reply.status_code == 200:
                    result.model_version = reply.json()["model_version"]
                elif reply.status_code >= 400:
                    result.error = reply.text[:200]
            except httpx.HTTPError as exc:
                result.error = f"{type(exc).__name__}: {exc}"
            result.latency = time.perf_counter() - now
            self.results.append(result)

    async def promote(self, http: httpx.AsyncClient, start: float) -> None:
        """Half-way, activate the candidate version through the admin route."""
        assert self.promotion is not None
        await asyncio.sleep(self.duration / 2)
        self.promotion.at = time.perf_counter() - start
        reply = await http.post(
            f"/v1/models/{self.promotion.version}/activate",
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        self.promotion.status = reply.status_code
        self.promotion.detail = reply.text[:200]

    async def run(self) -> float:
        """All clients until the duration is over; the client's CPU use in cores."""
        limits = httpx.Limits(max_connections=self.clients + 1, max_keepalive_connections=None)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60, limits=limits) as http:
            cpu, start = time.process_time(), time.perf_counter()
            tasks = [self.client(i, http, start) for i in range(self.clients)]
            if self.promotion is not None:
                tasks.append(self.promote(http, start))
            await asyncio.gather(*tasks)
            return (time.process_time() - cpu) / (time.perf_counter() - start)


def latency_rows(results: list[Result], duration: float) -> list[list[object]]:
    rows: list[list[object]] = []
    for kind in ("upload", "predict", "all"):
        chosen = [r for r in results if kind in ("all", r.kind)]
        ok = [r.latency * 1000 for r in chosen if 200 <= r.status < 300]
        statuses = Counter(r.status for r in chosen)
        rows.append(
            [
                kind,
                len(chosen),
                f"{len(chosen) / duration:.1f}",
                sum(n for s, n in statuses.items() if 200 <= s < 300),
                sum(n for s, n in statuses.items() if 400 <= s < 500),
                sum(n for s, n in statuses.items() if s >= 500),
                statuses.get(0, 0),
                f"{percentile(ok, 0.50):.0f}",
                f"{percentile(ok, 0.99):.0f}",
                f"{max(ok, default=0):.0f}",
            ]
        )
    return rows


def promotion_rows(run: LoadRun) -> list[list[object]]:
    promotion = run.promotion
    assert promotion is not None
    predictions = [r for r in run.results if r.kind == "predict" and r.model_version]
    old = [r for r in predictions if r.model_version != promotion.version]
    last_old = max((r.started for r in old), default=0.0)
    window = [r for r in run.results if abs(r.started - promotion.at) <= 10]
    failed = [r for r in window if r.status == 0 or r.status >= 500]
    by_version = Counter(r.model_version for r in predictions)
    return [
        ["activate reply", promotion.status],
        ["activated at (s into the run)", f"{promotion.at:.1f}"],
        ["predictions by model version", dict(sorted(by_version.items()))],
        ["last reply from the old version (s after activation)", f"{last_old - promotion.at:.1f}"],
        ["requests within 10 s of the activation", len(window)],
        ["of which failed (5xx or no reply)", len(failed)],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (2)")
    parser.add_argument("--upload-share", type=float, default=0.5, help="uploads' share (0.5)")
    parser.add_argument(
        "--promote-during", action="store_true", help="activate another model version mid-run"
    )
    args = parser.parse_args()

    settings = {"RETRAIN_THRESHOLD": str(10**9), "MODEL_POLL_SECONDS": "5"}
    with PrivateStack(settings) as stack:
        stack.start_api(workers=args.workers)
        run = LoadRun(
            base_url=stack.api_url,
            clients=args.clients,
            duration=args.duration,
            upload_share=args.upload_share,
            admin_token=stack.admin_token,
        )
        if args.promote_during:
            run.promotion = Promotion(version=stack.add_model_version(1))
        client_cpu = asyncio.run(run.run())
        stored = stack.sql("SELECT count(*), count(DISTINCT sha256) FROM samples")[0]
        server_errors = [r for r in run.results if r.status >= 500 or r.status == 0]

    created = sum(1 for r in run.results if r.kind == "upload" and r.status == 201)
    print(
        f"\n{args.clients} clients, {args.duration:.0f} s, {args.workers} uvicorn workers, "
        f"uploads {args.upload_share:.0%}; client CPU {client_cpu:.2f} cores\n"
    )
    print(
        markdown_table(
            [
                "kind",
                "requests",
                "req/s",
                "2xx",
                "4xx",
                "5xx",
                "no reply",
                "p50 ms",
                "p99 ms",
                "max ms",
            ],
            latency_rows(run.results, args.duration),
        )
    )
    print()
    print(
        markdown_table(
            ["check", "value", "goal"],
            [
                ["5xx or no reply", len(server_errors), 0],
                ["201 replies to uploads", created, "= rows"],
                ["rows in samples (distinct sha256)", f"{stored[0]} ({stored[1]})", "= 201s"],
            ],
        )
    )
    if run.promotion is not None:
        print()
        print(markdown_table(["promotion", "value"], promotion_rows(run)))
    for result in server_errors[:5]:
        print(f"  failed: {result.kind} at {result.started:.1f}s: {result.status} {result.error}")
    ok = not server_errors and created == stored[0]
    if run.promotion is not None:
        ok = ok and run.promotion.status == 200
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
