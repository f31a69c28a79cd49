"""Where the time of a prediction goes: py-spy samples the API's workers under load.

    .venv/bin/python -m bench.profile_predict [--duration 20] [--svg var/bench/predict.svg]

The service runs as in bench_predict (uvicorn, 2 workers, throwaway Postgres database) while
bench/httpload.py sends `POST /v1/predictions` from 16 clients, once with a 28x28 PNG and once
with a 280x280 canvas PNG. `py-spy record --subprocesses --nonblocking` samples both workers
(py-spy needs ptrace; it is in the `dev` extra). The samples are grouped by what the stack is
doing (decode, preprocess, ONNX Runtime, multipart parsing, ...) and the busiest functions
are listed by their own samples.
"""

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from statistics import median
from typing import Any

from bench.common import BenchRun, bench_parser, bench_service, report
from bench.httpload import Request, fixed, multipart, run_load
from testkit.images import canvas_png, small_png
from testkit.nist import nist_glyphs
from testkit.stack import REPO_ROOT, Server
from testkit.tables import markdown_table

# What a stack is doing, by the first pattern found in it (most specific first).
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("ONNX Runtime session.run", ("onnxruntime_inference_collection.py",)),
    ("preprocess_image (core/preprocessing.py)", ("core/preprocessing.py",)),
    ("decode_image (core/images.py: Pillow decode, sha256)", ("core/images.py",)),
    ("multipart form parsing", ("multipart", "formparsers")),
    ("Prometheus metrics", ("prometheus_client",)),
    ("response model, validation, JSON", ("pydantic", "jsonable_encoder", "serialize_response")),
    ("model lookup, top-5, rest of the route", ("api/routers/",)),
    ("FastAPI/Starlette routing, dependencies", ("fastapi/", "starlette/")),
    ("uvicorn HTTP protocol, access log", ("uvicorn/", "httptools", "logging/")),
    ("event loop and thread pool hand-off (Python)", ("asyncio/", "anyio/", "threading.py")),
]


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy not found: pip install -e '.[dev]' (or pip install py-spy)")
    return found


def parse_collapsed(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) output: one `frame;frame;... count` line per distinct stack."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


# Leaf frames of threads that wait rather than work. In this container py-spy cannot tell idle
# threads from busy ones (it counts the thread pool's idle workers as active), so they are
# set apart by their leaf frame instead.
WAITING = (
    "Condition.wait (",
    "Event.wait (",
    "_worker (concurrent/futures/thread.py",
    "Connection._recv (",
    "Connection._poll (",
    "_wait_for_tstate_lock (",
    "select (",
)
# Where uvloop runs C code, the Python stack ends in the loop's run call: socket I/O and HTTP
# parsing in C, or waiting in epoll; py-spy cannot tell which.
EVENT_LOOP_C = "Runner.run (asyncio/runners.py"
WAITING_NAME = "(threads waiting: not counted in the shares)"


def categorise(stacks: list[tuple[list[str], int]]) -> tuple[Counter[str], Counter[str]]:
    """(samples per category, own samples per leaf function); waiting threads apart."""
    categories: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        leaf = shorten(frames[-1])
        if leaf.startswith(WAITING):
            categories[WAITING_NAME] += count
            continue
        if leaf.startswith(EVENT_LOOP_C):
            name = "uvloop's C event loop (socket I/O, HTTP parsing, or epoll wait)"
        else:
            joined = ";".join(frames)
            name = next(
                (name for name, patterns in CATEGORIES if any(p in joined for p in patterns)),
                "other",
            )
        categories[name] += count
        leaves[leaf] += count
    return categories, leaves


def preprocessing_steps(stacks: list[tuple[list[str], int]]) -> Counter[str]:
    """Inside preprocess_image: samples by its deepest own function (the step it was in)."""
    steps: Counter[str] = Counter()
    for frames, count in stacks:
        own = [f for f in frames if "core/preprocessing.py" in f]
        if own and not shorten(frames[-1]).startswith(WAITING):
            steps[own[-1].partition(" (")[0]] += count
    return steps


def shorten(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`."""
    function, _, location = frame.partition(" (")
    location = location.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", str(REPO_ROOT) + "/"):
        if marker in location:
            location = location.split(marker, 1)[1]
    return f"{function} ({location})" if location else function


def profile(server_pid: int, url: str, request: Request, seconds: float, out: Path) -> Any:
    """Run the load for `seconds` + 2 while py-spy samples the workers for `seconds`."""
    command = [py_spy(), "record", "--pid", str(server_pid), "--subprocesses", "--nonblocking"]
    command += ["--rate", "100", "--duration", str(int(seconds)), "--format", "raw"]
    command += ["--output", str(out)]
    result: dict[str, Any] = {}

    def load() -> None:
        result["load"] = run_load(url, fixed(request), 16, duration=seconds + 3)

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(1)
    spy = subprocess.run(command, capture_output=True, text=True, check=False)
    thread.join()
    if spy.returncode != 0 or not out.exists():
        raise SystemExit(f"py-spy failed ({spy.returncode}): {spy.stderr[-2000:]}")
    return result["load"]


def route_split(url: str, request: Request, count: int = 300) -> dict[str, float]:
    """One client, one request at a time: the route's own timings against the whole latency
    (medians, ms). What is left is HTTP, multipart, framework and thread hand-off."""
    import httpx

    seen: dict[str, list[float]] = {"latency_ms": [], "decode_ms": [], "preprocess_ms": []}
    seen["inference_ms"] = []
    with httpx.Client(base_url=url) as client:
        for index in range(count + 20):
            start = time.perf_counter()
            response = client.post(request.path, content=request.content, headers=request.headers)
            latency = (time.perf_counter() - start) * 1000
            response.raise_for_status()
            if index < 20:  # warm-up
                continue
            seen["latency_ms"].append(latency)
            for key, value in response.json()["timings"].items():
                seen[key].append(value)
    split = {key: median(values) for key, values in seen.items()}
    split["rest_ms"] = split["latency_ms"] - sum(
        split[k] for k in ("decode_ms", "preprocess_ms", "inference_ms")
    )
    return split


def profile_image(server: Server, data: bytes, seconds: float, out: Path) -> dict[str, Any]:
    """One image: the route's own split, then the load while py-spy samples, grouped."""
    body, headers = multipart(files=[("image", "glyph.png", data)])
    request = Request("POST", "/v1/predictions", body, headers)
    split = route_split(server.url, request)
    run_load(server.url, fixed(request), 16, duration=3)  # warm-up
    load = profile(server.process.pid, server.url, request, seconds, out)
    stacks = parse_collapsed(out)
    categories, leaves = categorise(stacks)
    steps = preprocessing_steps(stacks)
    return {
        "load": load,
        "split": split,
        "categories": categories,
        "leaves": leaves,
        "steps": steps,
    }


def split_table(results: dict[str, Any]) -> str:
    rows = [
        [what]
        + [round(r["split"][key], 2) for key in ("latency_ms", "decode_ms", "preprocess_ms")]
        + [round(r["split"][key], 2) for key in ("inference_ms", "rest_ms")]
        for what, r in results.items()
    ]
    headers = ["one request at a time (medians)", "latency ms (client)", "decode ms"]
    headers += ["preprocess ms", "inference ms", "rest: HTTP, multipart, framework ms"]
    return markdown_table(headers, rows)


def sample_tables(what: str, r: dict[str, Any], top: int) -> str:
    """Where one image's samples went: by category, busiest functions, preprocessing steps."""
    waiting = r["categories"].get(WAITING_NAME, 0)
    total = sum(r["categories"].values()) - waiting
    caption = (
        f"{what}, 16 clients, {r['load'].rps:.1f} req/s while sampled; {total:,} samples "
        f"of working threads ({waiting:,} of waiting threads set apart)"
    )
    rows = [
        [name, n, f"{n / total:.1%}" if name != WAITING_NAME else ""]
        for name, n in r["categories"].most_common()
    ]
    categories = markdown_table(["what the worker was doing", "samples", "share"], rows)
    rows = [[name, n, f"{n / total:.1%}"] for name, n in r["leaves"].most_common(top)]
    leaves = markdown_table(["busiest functions (own samples)", "samples", "share"], rows)
    inside = sum(r["steps"].values())
    rows = [[f"`{name}`", n, f"{n / inside:.1%}"] for name, n in r["steps"].most_common(8)]
    steps = markdown_table(["inside preprocess_image: step", "samples", "share"], rows)
    return "\n\n".join([caption, categories, leaves, steps])


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=12, help="functions listed per image")
    args = parser.parse_args(argv)

    run = BenchRun(args.wait_quiet)
    glyphs, _ = nist_glyphs(1)
    images = {"28x28 PNG": small_png(glyphs[0]), "280x280 canvas PNG": canvas_png(glyphs[0])}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, bench_service("profile") as (server, _):
        for what, data in images.items():
            out = Path(tmp) / f"{len(results)}.txt"
            results[what] = profile_image(server, data, args.duration, out)
            print(f"# {what}: {results[what]['load'].rps:.1f} req/s while sampled", flush=True)
    tables = [split_table(results)]
    tables += [sample_tables(what, r, args.top) for what, r in results.items()]
    raw = {
        what: {
            "rps": r["load"].rps,
            "split": r["split"],
            "categories": dict(r["categories"]),
            "leaves": dict(r["leaves"].most_common(60)),
            "steps": dict(r["steps"]),
        }
        for what, r in results.items()
    }
    report(run, "profile", tables, {"results": raw})


if __name__ == "__main__":
    main()
