"""Fault scenarios on a private stack: what the service does when Redis, Postgres or a worker
goes away while it serves, and that it recovers by itself with nothing lost.

    .venv/bin/python -m bench.faults redis-down         # Redis stopped 30 s under uploads
    .venv/bin/python -m bench.faults postgres-restart   # Postgres stopped 10 s under traffic
    .venv/bin/python -m bench.faults kill-worker        # SIGKILL the worker mid-training
    .venv/bin/python -m bench.faults all

Each scenario starts its own Postgres, Redis, uvicorn and Celery processes
(bench/private_stack.py; the shared servers on 5432/6379 are never touched), sends traffic
from asyncio + httpx clients while the fault happens, prints a table of what it saw and exits
non-zero if a goal was missed. Each takes under 3 minutes on 2 cores. Training settings are
small (a few thousand NIST images, one or two epochs) so that a run fits in the scenario;
NIST_DATA_DIR must point at the EMNIST files (default ../shared/data).
"""

import argparse
import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.load import Result, distinct_png
from bench.private_stack import PrivateStack
from core.config import EMNIST_BALANCED_LABELS
from testkit.stack import wait_until
from testkit.tables import markdown_table, percentile

# Small, quick retraining: the same code path as production, minutes become seconds.
QUICK_TRAINING = {
    "RETRAIN_EPOCHS": "1",
    "RETRAIN_NIST_SAMPLES": "2000",
    "MODEL_POLL_SECONDS": "2",
}


@dataclass
class Traffic:
    """`clients` asyncio clients sending `kinds` of request in turn until stopped."""

    base_url: str
    origin: float  # time.perf_counter() of the scenario's start
    kinds: Sequence[str] = ("upload", "predict", "stats")
    clients: int = 4
    pause: float = 0.0  # seconds between a client's requests
    results: list[Result] = field(default_factory=list)
    image_offset: int = 0
    _next_image: int = 0

    def _request(self, kind: str, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
        if kind == "upload":
            self._next_image += 1
            image = distinct_png(self.image_offset + self._next_image)
            label = rng.choice(EMNIST_BALANCED_LABELS)
            return (
                "POST",
                "/v1/samples",
                {"files": {"image": ("x.png", image)}, "data": {"label": label}},
            )
        if kind == "predict":
            image = distinct_png(10**9 + rng.randrange(16))
            return "POST", "/v1/predictions", {"files": {"image": ("x.png", image)}}
        return "GET", "/v1/samples/stats", {}

    async def _client(self, number: int, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        rng = random.Random(number)
        turn = number
        while not stop.is_set():
            kind = self.kinds[turn % len(self.kinds)]
            turn += 1
            method, path, options = self._request(kind, rng)
            started = time.perf_counter()
            result = Result(kind, started - self.origin, 0.0, 0)
            try:
                reply = await http.request(method, path, **options)
                result.status = reply.status_code
                if reply.status_code >= 400:
                    body = reply.json()  # every error must be JSON: this raises if not
                    result.error = f"{body['error']}: {body['detail']}"
                    result.clean = True
                elif kind == "predict":
                    result.model_version = reply.json()["model_version"]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                result.error = f"{type(exc).__name__}: {exc}"
                result.status = result.status or 0
            result.latency = time.perf_counter() - started
            self.results.append(result)
            if self.pause:
                await asyncio.sleep(self.pause)

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits) as http:
            await asyncio.gather(*(self._client(i, http, stop) for i in range(self.clients)))

    def created(self) -> int:
        return sum(1 for r in self.results if r.kind == "upload" and r.status == 201)


def phase_rows(
    results: Sequence[Result], phases: Sequence[tuple[str, float, float]]
) -> list[list[object]]:
    """One row per (name, from, to) window of the scenario: what the requests started in it got."""
    rows: list[list[object]] = []
    for name, begin, end in phases:
        chosen = [r for r in results if begin <= r.started < end]
        statuses = Counter(r.status for r in chosen)
        latencies = [r.latency * 1000 for r in chosen]
        rows.append(
            [
                name,
                f"{end - begin:.0f}",
                len(chosen),
                sum(n for s, n in statuses.items() if 200 <= s < 300),
                statuses.get(503, 0),
                sum(n for s, n in statuses.items() if 400 <= s < 500),
                sum(n for s, n in statuses.items() if s >= 500 and s != 503),
                statuses.get(0, 0),
                f"{percentile(latencies, 0.5):.0f}",
                f"{percentile(latencies, 0.99):.0f}",
                f"{max(latencies, default=0):.0f}",
            ]
        )
    return rows


PHASE_HEADERS = [
    *("phase", "s", "requests", "2xx", "503", "4xx", "other 5xx", "no reply"),
    *("p50 ms", "p99 ms", "max ms"),
]


@dataclass
class Outcome:
    """What a scenario prints: tables, and whether each goal was met."""

    name: str
    tables: list[str] = field(default_factory=list)
    goals: list[tuple[str, object, bool]] = field(default_factory=list)

    def goal(self, what: str, value: object, met: bool) -> None:
        self.goals.append((what, value, met))

    def print(self) -> bool:
        print(f"\n## {self.name}\n")
        for table in self.tables:
            print(table + "\n")
        rows = [[what, value, "yes" if met else "NO"] for what, value, met in self.goals]
        print(markdown_table(["goal", "measured", "met"], rows))
        return all(met for _, _, met in self.goals)


def run_row(stack: PrivateStack, run_id: int) -> dict[str, Any]:
    columns = ["status", "attempts", "progress", "decision", "error", "trigger"]
    row = stack.sql(f"SELECT {', '.join(columns)} FROM training_runs WHERE id = %s", (run_id,))
    return dict(zip(columns, row[0], strict=True)) if row else {}


def training_rows(stack: PrivateStack) -> int:
    """Samples that count toward the retrain threshold (not kept for evaluation)."""
    return int(stack.sql("SELECT count(*) FROM samples WHERE NOT evaluation")[0][0])


def stored_samples(stack: PrivateStack) -> int:
    return int(stack.sql("SELECT count(*) FROM samples")[0][0])


async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """A blocking stack operation without stopping the traffic's event loop."""
    return await asyncio.to_thread(function, *args)


# --- redis-down ---------------------------------------------------------------------------


async def redis_down(down_seconds: float = 30.0) -> Outcome:
    """Stop Redis while uploads continue; after it is back, the due retrain still happens."""
    outcome = Outcome("redis-down")
    threshold = 500
    settings = {**QUICK_TRAINING, "RETRAIN_THRESHOLD": str(threshold)}
    with PrivateStack(settings) as stack:
        stack.start_api(workers=2)
        stack.start_worker()
        origin = time.perf_counter()
        traffic = Traffic(stack.api_url, origin, kinds=("upload",), clients=4)
        stop = asyncio.Event()
        sender = asyncio.create_task(traffic.run(stop))
        while traffic.created() < 20:  # a baseline, far under the threshold
            await asyncio.sleep(0.05)
        stopped_at = time.perf_counter() - origin
        training_before = training_rows(stack)
        await in_thread(stack.stop_redis)
        await asyncio.sleep(down_seconds)
        stop.set()
        await sender
        uploads_end = time.perf_counter() - origin
        runs_while_down = int(stack.sql("SELECT count(*) FROM training_runs")[0][0])
        training_after = training_rows(stack)

        await in_thread(stack.start_redis)
        back_at = time.perf_counter() - origin
        # What beat does every minute, now: the message waits in Redis until the worker, which
        # reconnects by itself, takes it.
        await in_thread(stack.call_task, "worker.tasks.reconcile")
        run_ids = await in_thread(
            wait_until_value,
            lambda: [r[0] for r in stack.sql("SELECT id FROM training_runs ORDER BY id")],
            60,
        )
        opened_at = time.perf_counter() - origin
        run_id = run_ids[0]
        final = await in_thread(
            wait_until_value,
            lambda: (row := run_row(stack, run_id))["status"] in ("succeeded", "failed") and row,
            150,
        )
        done_at = time.perf_counter() - origin
        rows = stored_samples(stack)

    outcome.tables.append(
        markdown_table(
            PHASE_HEADERS,
            phase_rows(
                traffic.results,
                [("Redis up", 0, stopped_at), ("Redis down", stopped_at, uploads_end)],
            ),
        )
    )
    outcome.tables.append(
        markdown_table(
            ["event", "s into the scenario"],
            [
                ["Redis stopped", f"{stopped_at:.1f}"],
                ["uploads stopped", f"{uploads_end:.1f}"],
                ["Redis started again", f"{back_at:.1f}"],
                [f"training run {run_id} opened (trigger {final['trigger']})", f"{opened_at:.1f}"],
                [f"run {run_id} {final['status']}, decision {final['decision']}", f"{done_at:.1f}"],
            ],
        )
    )
    failed = [r for r in traffic.results if r.status != 201]
    outcome.goal("uploads not answered 201", len(failed), not failed)
    outcome.goal(
        "201 replies = rows stored", f"{traffic.created()} = {rows}", traffic.created() == rows
    )
    outcome.goal(
        f"training uploads before / after the outage (threshold {threshold})",
        f"{training_before} / {training_after}",
        training_before < threshold <= training_after,
    )
    outcome.goal("training runs opened while Redis was down", runs_while_down, runs_while_down == 0)
    outcome.goal("the due run after Redis is back", final["status"], final["status"] == "succeeded")
    return outcome


def wait_until_value(produce: Callable[[], Any], timeout: float) -> Any:
    """Poll `produce` every half second until it returns something truthy; that value."""
    return wait_until(produce, timeout, "the expected state", interval=0.5)


# --- postgres-restart ---------------------------------------------------------------------


async def postgres_restart(down_seconds: float = 10.0) -> Outcome:
    """Stop Postgres under traffic, start it again: clean 503s meanwhile, recovery by itself."""
    outcome = Outcome("postgres-restart")
    with PrivateStack() as stack:
        stack.start_api(workers=2)
        origin = time.perf_counter()
        traffic = Traffic(stack.api_url, origin, clients=6)
        stop = asyncio.Event()
        sender = asyncio.create_task(traffic.run(stop))
        await asyncio.sleep(5)
        stopped_at = time.perf_counter() - origin
        await in_thread(stack.stop_postgres, "fast")
        stopped_done = time.perf_counter() - origin
        await asyncio.sleep(down_seconds)
        start_at = time.perf_counter() - origin
        await in_thread(stack.start_postgres)
        up_at = time.perf_counter() - origin
        await asyncio.sleep(15)
        stop.set()
        await sender
        end = time.perf_counter() - origin
        rows = stored_samples(stack)

    results = traffic.results
    outcome.tables.append(
        markdown_table(
            PHASE_HEADERS,
            phase_rows(
                results,
                [
                    ("before", 0, stopped_at),
                    ("Postgres down", stopped_done, start_at),
                    ("Postgres starting", start_at, up_at),
                    ("after", up_at, end),
                ],
            ),
        )
    )
    by_kind = [
        [
            kind,
            *phase_rows([r for r in results if r.kind == kind], [("", stopped_done, start_at)])[0][
                2:5
            ],
        ]
        for kind in ("upload", "predict", "stats")
    ]
    outcome.tables.append(
        markdown_table(["while Postgres was down", "requests", "2xx", "503"], by_kind)
    )
    needs_db = [r for r in results if r.kind in ("upload", "stats")]
    recovered = [r for r in needs_db if r.started >= up_at and 200 <= r.status < 300]
    first_ok = min((r.started + r.latency for r in recovered), default=float("inf")) - up_at
    last_503 = max((r.started for r in needs_db if r.status == 503), default=0.0)
    bad = [r for r in results if r.status == 0 or (r.status >= 500 and r.status != 503)]
    not_json = [r for r in results if r.status >= 400 and not r.clean]
    slowest = max((r.latency for r in results), default=0.0)
    outcome.tables.append(
        markdown_table(
            ["event", "s into the scenario"],
            [
                ["Postgres stop begun / done", f"{stopped_at:.1f} / {stopped_done:.1f}"],
                ["Postgres start begun / accepting", f"{start_at:.1f} / {up_at:.1f}"],
                ["last 503 sent (request start)", f"{last_503:.1f}"],
                ["first 2xx from a database route after the start", f"{up_at + first_ok:.1f}"],
            ],
        )
    )
    for result in (bad + not_json)[:5]:
        print(f"  unclean: {result}")
    outcome.goal(
        "errors other than a JSON 503 (5xx, no reply, not JSON)",
        len(bad) + len(not_json),
        not bad and not not_json,
    )
    outcome.goal(
        "503 replies while down",
        sum(r.status == 503 for r in results),
        any(r.status == 503 for r in results),
    )
    outcome.goal("slowest request (s): no hang", f"{slowest:.2f}", slowest < 5)
    outcome.goal("recovery: first 2xx after Postgres accepts (s)", f"{first_ok:.2f}", first_ok < 10)
    outcome.goal(
        "201 replies = rows stored", f"{traffic.created()} = {rows}", traffic.created() == rows
    )
    return outcome


# --- kill-worker --------------------------------------------------------------------------


async def kill_worker() -> Outcome:
    """SIGKILL the worker mid-training: serving unchanged, the run retried to success."""
    outcome = Outcome("kill-worker")
    settings = {
        **QUICK_TRAINING,
        "RETRAIN_EPOCHS": "2",
        "RETRAIN_NIST_SAMPLES": "4000",
        "RUN_STALE_SECONDS": "10",
    }
    with PrivateStack(settings) as stack:
        stack.start_api(workers=1)
        stack.start_worker("worker-a")
        origin = time.perf_counter()
        traffic = Traffic(stack.api_url, origin, kinds=("predict",), clients=1, pause=0.2)
        stop = asyncio.Event()
        sender = asyncio.create_task(traffic.run(stop))
        admin = {"Authorization": f"Bearer {stack.admin_token}"}
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
            reply = await http.post("/v1/training-runs", json={}, headers=admin)
            assert reply.status_code == 201, reply.text
            run_id = reply.json()["id"]
            running = await in_thread(
                wait_until_value,
                lambda: (
                    (row := run_row(stack, run_id))["status"] == "running"
                    and row["progress"] > 0.05
                    and row
                ),
                120,
            )
            training_at = time.perf_counter() - origin
            await in_thread(stack.kill, "worker-a")
            killed_at = time.perf_counter() - origin
            active_after_kill = (await http.get("/v1/models/active")).json()["version"]
            await in_thread(stack.start_worker, "worker-b")
            worker_b_at = time.perf_counter() - origin

            # Beat's reconcile, every 5 s instead of every minute.
            requeued_at: float | None = None
            final: dict[str, Any] = {}
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                await in_thread(stack.call_task, "worker.tasks.reconcile")
                row = run_row(stack, run_id)
                if requeued_at is None and row["attempts"] >= 2:
                    requeued_at = time.perf_counter() - origin
                if row["status"] in ("succeeded", "failed"):
                    final = row
                    break
                await asyncio.sleep(5)
            done_at = time.perf_counter() - origin
            models = (await http.get("/v1/models")).json()
        stop.set()
        await sender

    predictions = [r for r in traffic.results if r.kind == "predict"]
    # From the start to the retry's claim: the kill must not change what serves. (Once the
    # retried run finishes, its model may rightly be promoted.)
    until_retry = requeued_at if requeued_at is not None else done_at
    versions = Counter(r.model_version for r in predictions if r.started < until_retry)
    after = Counter(r.model_version for r in predictions if r.started >= until_retry)
    failed = [r for r in predictions if r.status != 200]
    outcome.tables.append(
        markdown_table(
            ["event", "s into the scenario", "run"],
            [
                ["worker-a training", f"{training_at:.1f}", f"progress {running['progress']:.2f}"],
                ["worker-a SIGKILLed", f"{killed_at:.1f}", f"attempt {running['attempts']}"],
                ["worker-b ready", f"{worker_b_at:.1f}", ""],
                ["run handed on (attempt 2 claimed)", f"{requeued_at or 0:.1f}", ""],
                [
                    f"run {final.get('status')}",
                    f"{done_at:.1f}",
                    f"decision {final.get('decision')}",
                ],
            ],
        )
    )
    outcome.tables.append(
        markdown_table(["version", "status"], [[m["version"], m["status"]] for m in models])
    )
    outcome.goal("active version right after the kill", active_after_kill, active_after_kill == 1)
    outcome.goal(
        "predictions by version, until the retry / after",
        f"{dict(versions)} / {dict(after)}",
        set(versions) == {1},
    )
    outcome.goal("failed predictions", len(failed), not failed)
    outcome.goal(
        "run finished",
        f"{final.get('status')} after {final.get('attempts')} attempts",
        final.get("status") == "succeeded" and final.get("attempts", 0) >= 2,
    )
    return outcome


SCENARIOS = {
    "redis-down": redis_down,
    "postgres-restart": postgres_restart,
    "kill-worker": kill_worker,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    args = parser.parse_args()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    ok = True
    for name in names:
        started = time.monotonic()
        outcome = asyncio.run(SCENARIOS[name]())
        ok = outcome.print() and ok
        print(f"\n({name}: {time.monotonic() - started:.0f} s including the stack's start)")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
