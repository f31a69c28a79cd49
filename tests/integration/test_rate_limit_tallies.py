"""Rate limits counted in Redis in bulk (api/ratelimit.py): a client far from its limit costs
no round trip a request, and one spending through several API processes is refused within the
stated bound. Two `RateLimits` are two API processes sharing the real Redis; a clock of our own
makes "a second later" exact."""

import asyncio
import uuid
from collections import Counter

import pytest
from limits import parse

from api.errors import ApiError
from api.ratelimit import FLUSH_SHARE, SYNC_SECONDS, RateLimits
from core.config import get_settings
from domain.keys import Client, anonymous

BUDGET = 1000  # CPU milliseconds a minute
COST = 0.0095  # CPU seconds a request: charged as 10 ms


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def processes() -> tuple[list[RateLimits], Clock, Counter[str]]:
    """Two API processes' limits on one Redis prefix of their own, and a count of the round
    trips each makes (the real Redis answers them)."""
    settings = get_settings().model_copy(
        update={
            "task_queue": f"hwr-test-tallies-{uuid.uuid4().hex[:8]}",
            "rate_limit_cpu_anonymous": f"{BUDGET}/minute",
        }
    )
    clock = Clock()
    trips: Counter[str] = Counter()
    limits = [RateLimits(settings, clock) for _ in range(2)]
    for name, process in zip("ab", limits, strict=True):
        strategy = process._shared
        for method in ("hit", "get_window_stats"):
            real = getattr(strategy, method)

            async def counted(*args, _real=real, _name=name, **kwargs):
                trips[_name] += 1
                return await _real(*args, **kwargs)

            setattr(strategy, method, counted)
    return limits, clock, trips


def a_client() -> Client:
    return anonymous(f"10.0.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}", b"k" * 32)


async def request(limits: RateLimits, client: Client) -> bool:
    """One metered request: False when refused (429)."""
    try:
        await limits.check(client)
    except ApiError as refused:
        assert refused.status_code == 429 and refused.code == "rate_limited"
        return False
    await limits.charge(client, COST, 0)
    return True


def test_a_client_far_from_its_limit_costs_a_round_trip_every_few_requests(processes) -> None:
    (limits, _), clock, trips = processes
    client = a_client()

    async def run() -> None:
        assert [await request(limits, client) for _ in range(20)] == [True] * 20
        # A question per budget (CPU, storage) at first, then the unsent 50 ms (5% of 1000)
        # sent with every fifth request (2 trips: hit, read): 10 trips for 20 requests, where
        # each request made 3.
        assert trips["a"] <= 2 + 2 * (20 // 5), trips
        clock.now += SYNC_SECONDS + 0.1  # a stale tally is asked again before it is trusted
        before = trips["a"]
        assert await request(limits, client)
        assert trips["a"] > before

    asyncio.run(run())
    assert not limits._warned, "counted in memory, not in Redis"


def test_a_client_spending_through_two_processes_is_refused_within_the_bound(processes) -> None:
    limits, clock, _ = processes
    client = a_client()

    async def run() -> None:
        served, last = 0, []
        for turn in range(400):  # far more than the budget allows
            clock.now += 0.05  # 20 requests a second between the two
            ok = await request(limits[turn % 2], client)
            served += ok
            last = [*last[-9:], ok]
        spent = served * 10
        bound = BUDGET * (1 + FLUSH_SHARE * len(limits)) + len(limits) * 10
        assert BUDGET * 0.9 <= spent <= bound, (spent, bound)
        assert last == [False] * 10  # refused in both processes, once spent
        # Everything charged reached Redis: the window is spent.
        item = parse(f"{BUDGET}/minute")
        stats = await limits[0]._shared.get_window_stats(item, "cpu", client.uploader)
        assert stats.remaining == 0

    asyncio.run(run())
    assert not any(process._warned for process in limits), "counted in memory, not in Redis"


def test_a_refusal_is_always_told_by_a_fresh_answer(processes) -> None:
    """Process b's tally said the client had plenty; a spends the budget meanwhile; b asks
    Redis again (its tally is stale, or the budget near spent) before letting it in."""
    limits, clock, trips = processes
    client = a_client()

    async def run() -> None:
        assert await request(limits[1], client)  # b's tally: ~990 left
        while await request(limits[0], client):
            clock.now += 0.001
        clock.now += SYNC_SECONDS + 0.1
        before = trips["b"]
        assert not await request(limits[1], client)
        assert trips["b"] > before

    asyncio.run(run())
    assert not any(process._warned for process in limits), "counted in memory, not in Redis"
