"""A small HTTP load generator: N concurrent asyncio clients (httpx) for D seconds or M requests.

Reusable from other scripts (`run_load`) and from the command line:

    .venv/bin/python -m bench.httpload http://127.0.0.1:8000/healthz -c 16 -d 10
    .venv/bin/python -m bench.httpload http://127.0.0.1:8000/v1/predictions -c 16 -d 10 \\
        --file image=seven.png

Why our own and not wrk: the requests are multipart uploads, distinct per request for ingest,
which wrk can only send through Lua. The price: this client is Python, and on a 2-core machine
it shares the cores with the server. Every result therefore carries the client's own CPU use
(`client_cpu`, in cores): near 1.0 means the client, not the server, set the pace.
Bodies are encoded before the run, so the client spends its time on HTTP only.
"""

import argparse
import asyncio
import itertools
import mimetypes
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from testkit.tables import percentile


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # relative to the base URL
    content: bytes | None = None
    headers: dict[str, str] | None = None


# Request number (0, 1, 2, ...) -> the request to send: lets a run send distinct bodies.
RequestFactory = Callable[[int], Request]


@dataclass
class LoadResult:
    concurrency: int
    requests: int  # completed, errors included
    errors: int  # transport errors and non-2xx answers
    seconds: float
    rps: float  # completed requests per second, errors included
    p50_ms: float
    p99_ms: float
    mean_ms: float
    client_cpu: float  # cores this client process used while measuring (1.0 = one full core)
    statuses: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)


def multipart(
    fields: dict[str, str] | None = None,
    files: Sequence[tuple[str, str, bytes]] = (),
) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body and its headers, encoded once: (field, filename, bytes)."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in (fields or {}).items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for name, filename, data in files:
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        parts.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def _drive(
    client: httpx.AsyncClient,
    factory: RequestFactory,
    concurrency: int,
    deadline: float | None,
    total: int | None,
    counter: itertools.count,
) -> tuple[list[float], Counter[str], list[str]]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    samples: list[str] = []

    async def one_client() -> None:
        while True:
            if deadline is not None and time.perf_counter() >= deadline:
                return
            index = next(counter)
            if total is not None and index >= total:
                return
            request = factory(index)
            start = time.perf_counter()
            try:
                response = await client.request(
                    request.method, request.path, content=request.content, headers=request.headers
                )
                await response.aread()
                status = str(response.status_code)
                if response.status_code >= 300 and len(samples) < 5:
                    samples.append(f"{status}: {response.text[:200]}")
            except httpx.HTTPError as exc:
                status = type(exc).__name__
                if len(samples) < 5:
                    samples.append(f"{status}: {exc}")
            latencies.append(time.perf_counter() - start)
            statuses[status] += 1

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return latencies, statuses, samples


async def run_load_async(
    base_url: str,
    factory: RequestFactory,
    concurrency: int,
    duration: float | None = None,
    total: int | None = None,
    warmup: float = 0.0,
    timeout: float = 120.0,
) -> LoadResult:
    """Run `concurrency` clients, each sending its next request as soon as the last returns,
    for `duration` seconds or until `total` requests were sent (after `warmup` seconds whose
    requests are not counted; warm-up requests use the same factory numbers after the run's)."""
    if (duration is None) == (total is None):
        raise ValueError("give exactly one of duration and total")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        if warmup > 0:
            warm_counter = itertools.count(total or 10_000_000)
            await _drive(
                client, factory, concurrency, time.perf_counter() + warmup, None, warm_counter
            )
        cpu_start, start = time.process_time(), time.perf_counter()
        deadline = start + duration if duration is not None else None
        latencies, statuses, samples = await _drive(
            client, factory, concurrency, deadline, total, itertools.count()
        )
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    latencies.sort()
    errors = sum(n for status, n in statuses.items() if not status.startswith("2"))
    return LoadResult(
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        seconds=round(seconds, 3),
        rps=len(latencies) / seconds if seconds else 0.0,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        mean_ms=sum(latencies) / len(latencies) * 1000 if latencies else float("nan"),
        client_cpu=cpu / seconds if seconds else 0.0,
        statuses=dict(statuses),
        error_samples=samples,
    )


def run_load(
    base_url: str, factory: RequestFactory, concurrency: int, **options: Any
) -> LoadResult:
    """`run_load_async` (the same options: duration or total, warmup, timeout) on a fresh
    event loop, uvloop's when installed: less client overhead."""
    coroutine = run_load_async(base_url, factory, concurrency, **options)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


_WRK_SCRIPT = """
local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE")
"""


def wrk_load(base_url: str, request: Request, concurrency: int, duration: float) -> LoadResult:
    """The same measurement with wrk (C, one thread), to see how much the Python client costs.

    Needs `wrk` on PATH (apt-get install wrk). Only fixed requests; p50/p99 from --latency.
    """
    import os
    import resource
    import shutil
    import subprocess
    import tempfile

    wrk = shutil.which("wrk")
    if wrk is None:
        raise FileNotFoundError("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        command = [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency"]
        env = dict(os.environ)
        if request.method == "POST":
            body_file, script = Path(tmp) / "body", Path(tmp) / "post.lua"
            body_file.write_bytes(request.content or b"")
            script.write_text(_WRK_SCRIPT)
            env["WRK_BODY_FILE"] = str(body_file)
            env["WRK_CONTENT_TYPE"] = (request.headers or {}).get("Content-Type", "")
            command += ["-s", str(script)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [*command, base_url + request.path], env=env, capture_output=True, text=True, check=True
        ).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    values: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("50%", "99%", "Requests/sec:"):
            values[parts[0]] = parts[1]
        if "requests in" in line:
            values["requests"] = parts[0]
            values["seconds"] = parts[3].rstrip("s,")
        if line.strip().startswith("Non-2xx or 3xx responses:"):
            values["errors"] = parts[-1]
        if line.strip().startswith("Socket errors:"):
            values["socket_errors"] = line
    seconds = _wrk_seconds(values.get("seconds", "0"))
    errors = int(values.get("errors", 0))
    return LoadResult(
        concurrency=concurrency,
        requests=int(values.get("requests", 0)),
        errors=errors,
        seconds=seconds,
        rps=float(values.get("Requests/sec:", 0)),
        p50_ms=_wrk_ms(values.get("50%", "nan")),
        p99_ms=_wrk_ms(values.get("99%", "nan")),
        mean_ms=float("nan"),
        client_cpu=cpu / seconds if seconds else 0.0,
        error_samples=[values["socket_errors"]] if "socket_errors" in values else [],
    )


def _wrk_ms(text: str) -> float:
    """wrk's durations: 850.00us, 1.20ms, 2.01s, 1.00m."""
    for suffix, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float("nan")


def _wrk_seconds(text: str) -> float:
    return _wrk_ms(text) / 1000 if text[-1:].isalpha() else float(text)


def fixed(request: Request) -> RequestFactory:
    """The same request every time."""
    return lambda _index: request


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="full URL, e.g. http://127.0.0.1:8000/healthz")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-d", "--duration", type=float, help="seconds (default 10)")
    group.add_argument("-n", "--requests", type=int, help="number of requests")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted")
    parser.add_argument(
        "--file", action="append", default=[], metavar="FIELD=PATH", help="POST multipart"
    )
    parser.add_argument("--field", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)

    parts = urlsplit(args.url)
    base, path = f"{parts.scheme}://{parts.netloc}", parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    if args.file or args.field:
        files = []
        for spec in args.file:
            name, _, file_path = spec.partition("=")
            files.append((name, Path(file_path).name, Path(file_path).read_bytes()))
        fields = dict(spec.partition("=")[::2] for spec in args.field)
        body, headers = multipart(fields, files)
        request = Request("POST", path, body, headers)
    else:
        request = Request("GET", path)
    duration = args.duration if args.requests is None and args.duration else None
    if args.requests is None and duration is None:
        duration = 10.0
    result = run_load(
        base,
        fixed(request),
        args.concurrency,
        duration=duration,
        total=args.requests,
        warmup=args.warmup,
    )
    print("| requests | errors | req/s | p50 ms | p99 ms | client CPU (cores) |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {result.requests} | {result.errors} | {result.rps:.1f} | {result.p50_ms:.2f} | "
        f"{result.p99_ms:.2f} | {result.client_cpu:.2f} |"
    )
    if result.error_samples:
        print("errors:", *result.error_samples, sep="\n  ")


if __name__ == "__main__":
    main()
