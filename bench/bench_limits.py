"""What a rate limit costs a request: CPU of `check` + `charge` (api/ratelimit.py) against Redis.

    .venv/bin/python -m bench.bench_limits [--requests 2000] [--rounds 5] [--before d3e852e]

An anonymous client's metered request (a 1 ms prediction) checked and charged against the
real Redis (BROKER_URL, default redis://127.0.0.1:6379/0), one process: with this process's
tallies (api/ratelimit.py as it is), and with api/ratelimit.py as it was at `--before` (every
request asking Redis: three round trips). Far from the limit (a budget no test client
reaches) and near it (within NEAR_SHARE: counted exactly, every request asking). Rounds
alternate the two; medians of the rounds' CPU per request.
"""

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from statistics import median
from types import ModuleType

from bench.common import BenchRun, bench_parser, module_at, report
from testkit.tables import markdown_table

COST_SECONDS = 0.001  # a small prediction's CPU, charged after each request


async def cpu_per_request(ratelimit: ModuleType, near: bool, requests: int) -> float:
    """CPU µs per check + charge of one fresh client, counted by `ratelimit`'s RateLimits."""
    from core.config import get_settings
    from domain.keys import anonymous

    budget = "1000000/minute" if not near else "100000/minute"
    settings = get_settings().model_copy(
        update={
            "task_queue": f"hwr-bench-limits-{uuid.uuid4().hex[:8]}",
            "rate_limit_cpu_anonymous": budget,
            "rate_limit_storage_anonymous": budget,
        }
    )
    limits = ratelimit.RateLimits(settings)
    client = anonymous(f"10.1.{uuid.uuid4().int % 250}.1", b"k" * 32)
    if near:  # spend all but a tenth: within NEAR_SHARE of the limit
        await limits.charge(client, 90.0, 0)
    await limits.check(client)  # the first question apart: a connection opened
    start = time.process_time()
    for _ in range(requests):
        await limits.check(client)
        await limits.charge(client, COST_SECONDS, 0)
    spent = time.process_time() - start
    assert not limits._warned, "Redis unreachable: counted in memory"
    return spent / requests * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default="d3e852e", help="the revision to compare with")
    args = parser.parse_args(argv)
    os.environ.setdefault("BROKER_URL", "redis://127.0.0.1:6379/0")
    from api import ratelimit

    run = BenchRun(args.wait_quiet)
    with tempfile.TemporaryDirectory() as folder:
        before = module_at(args.before, "api/ratelimit.py", "old_ratelimit", Path(folder))
        modules = {"now": ratelimit, args.before: before}
        ways = [(name, near) for near in (False, True) for name in modules]
        measured: dict[tuple[str, bool], list[float]] = {way: [] for way in ways}
        for _ in range(args.rounds):
            for name, near in ways:
                cost = asyncio.run(cpu_per_request(modules[name], near, args.requests))
                measured[(name, near)].append(cost)
    rows = [
        [
            "near the limit" if near else "far from it",
            name,
            f"{median(measured[(name, near)]):.0f}",
        ]
        for name, near in ways
    ]
    table = markdown_table(["client", "api/ratelimit.py", "CPU µs per request (median)"], rows)
    raw = {"args": vars(args), "cpu_us": {f"{k}-{n}": v for (k, n), v in measured.items()}}
    report(run, "limits", [table], raw)


if __name__ == "__main__":
    main()
