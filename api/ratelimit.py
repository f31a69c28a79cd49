"""Per-client rate limits, counted in what a client costs: CPU milliseconds the API spent for
it (measured, api/cpu.py) and kilobytes of pictures it stored.

The counters live where every API process sees them (Redis in production, through the `limits`
library's sliding-window counters; in memory on the embedded default), keyed by the client: its
key, or its address when anonymous. A request is let in while its client has budget left, and
charged what it actually cost once it is done; an exhausted budget answers 429 with
Retry-After. Admin and labeller keys are not limited. If Redis is away, each process counts in
its own memory meanwhile: the limits hold per process, and nothing fails.

A round trip to the shared counters costs more CPU than a small prediction (two or three a
request, ~0.3-0.7 ms of Python, bench/bench_limits.py), so a process keeps a tally per client
and budget: what the counters had left when it last asked, and what it charged since without
sending it. A client far from its limit is let in on that tally and its charges are sent in
bulk; the process asks again when its tally is older than SYNC_SECONDS, when its unsent charge
reaches FLUSH_SHARE of the budget, or when the budget is within NEAR_SHARE of spent, where
every request is counted in the shared counters as it happens. What this costs in exactness:
another process's unsent charges (at most FLUSH_SHARE of the budget each, plus the requests it
has in flight) are unseen until they are sent, so a client spending through many processes at
once may pass its limit by that much before it is refused.
"""

import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.util import WindowStats

from api.auth import ClientDep
from api.cpu import Meter
from api.errors import ApiError
from core.config import Settings
from domain.keys import Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """One limit: what it counts, per client, and in what unit."""

    name: str  # "cpu" or "storage"
    item: RateLimitItem
    unit: str


def budgets(settings: Settings, client: Client) -> list[Budget]:
    if client.trusted:  # admin and labeller keys
        return []
    anonymous = client.role is None
    cpu = settings.rate_limit_cpu_anonymous if anonymous else settings.rate_limit_cpu_client
    storage = (
        settings.rate_limit_storage_anonymous if anonymous else settings.rate_limit_storage_client
    )
    return [
        Budget("cpu", parse(cpu), "CPU milliseconds"),
        Budget("storage", parse(storage), "kilobytes stored"),
    ]


def _storage(url: str, prefix: str) -> Storage:
    if url.startswith(("redis://", "rediss://")):
        return RedisStorage(url, implementation="redispy", key_prefix=prefix)
    return MemoryStorage()


SYNC_SECONDS = 1.0  # a tally older than this is asked again
FLUSH_SHARE = 0.05  # unsent charges are sent once they reach this share of the budget
NEAR_SHARE = 0.25  # ... and every request is counted in the shared counters this near the limit
MAX_TALLIES = 10_000  # clients remembered per process (least recently seen forgotten)


@dataclass
class Tally:
    """What one process knows of one client's budget."""

    remaining: int  # what the shared counter had left when last asked
    reset_time: float  # when that window frees up (epoch seconds), for Retry-After
    asked_at: float  # time.monotonic() of that answer
    unsent: int = 0  # charged here since, not yet sent

    def must_ask(self, budget: Budget, now: float) -> bool:
        amount = budget.item.amount
        return (
            now - self.asked_at > SYNC_SECONDS
            or self.unsent >= FLUSH_SHARE * amount
            or self.remaining - self.unsent < NEAR_SHARE * amount
        )


class RateLimits:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        prefix = f"hwr-limits-{settings.task_queue}"
        self._shared = SlidingWindowCounterRateLimiter(
            _storage(settings.rate_limit_storage, prefix)
        )
        self._local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._warned = 0.0
        self._clock = clock
        self._tallies: OrderedDict[tuple[str, str], Tally] = OrderedDict()

    def _fallback(self, exc: Exception) -> SlidingWindowCounterRateLimiter:
        if time.monotonic() - self._warned > 60:  # once a minute, not once a request
            self._warned = time.monotonic()
            log.warning("rate-limit storage unreachable, counting in memory: %s", exc)
        return self._local

    def _tally(self, budget: Budget, client: Client) -> Tally:
        """This process's tally of a client's budget; a new one is asked at once."""
        key = (budget.name, client.uploader)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = Tally(0, 0.0, -math.inf)
            if len(self._tallies) > MAX_TALLIES:  # a client gone quiet: its unsent charge too
                self._tallies.popitem(last=False)
        else:
            self._tallies.move_to_end(key)
        return tally

    async def _ask(self, budget: Budget, client: Client, tally: Tally) -> None:
        """Send the tally's unsent charge to the shared counters and read what is left. The
        tally is updated in place: charges other requests add meanwhile stay unsent in it."""
        unsent, tally.unsent = tally.unsent, 0  # taken before the wait: sent once
        try:
            stats = await _send_and_read(self._shared, budget, client, unsent)
        except Exception as exc:
            stats = await _send_and_read(self._fallback(exc), budget, client, unsent)
        tally.remaining, tally.reset_time = stats.remaining, stats.reset_time
        tally.asked_at = self._clock()

    async def check(self, client: Client) -> None:
        """429 when one of the client's budgets is spent."""
        for budget in budgets(self.settings, client):
            tally = self._tally(budget, client)
            if tally.must_ask(budget, self._clock()):
                await self._ask(budget, client, tally)
            if tally.remaining - tally.unsent <= 0:
                retry = max(1, math.ceil(tally.reset_time - time.time()))
                raise ApiError(
                    429,
                    "rate_limited",
                    f"this client has spent its {budget.item.amount} {budget.unit} per "
                    f"{budget.item.get_expiry()} s; retry in {retry} s",
                    headers={"Retry-After": str(retry)},
                    limit=str(budget.item),
                    retry_after=retry,
                )

    async def charge(self, client: Client, cpu_seconds: float, stored_bytes: int) -> None:
        """What a request cost, once it is done; past the budget it is charged up to it."""
        costs = {"cpu": math.ceil(cpu_seconds * 1000), "storage": math.ceil(stored_bytes / 1024)}
        for budget in budgets(self.settings, client):
            cost = costs[budget.name]
            if cost <= 0:
                continue
            tally = self._tally(budget, client)
            tally.unsent += cost
            if tally.must_ask(budget, self._clock()):
                await self._ask(budget, client, tally)


async def _send_and_read(
    limiter: SlidingWindowCounterRateLimiter, budget: Budget, client: Client, cost: int
) -> WindowStats:
    ids = (budget.name, client.uploader)
    if cost > 0 and not await limiter.hit(budget.item, *ids, cost=cost):
        # More than is left: all of it.
        remaining = (await limiter.get_window_stats(budget.item, *ids)).remaining
        if remaining > 0:
            await limiter.hit(budget.item, *ids, cost=remaining)
    return await limiter.get_window_stats(budget.item, *ids)


async def metered(request: Request, client: ClientDep) -> AsyncIterator[Meter]:
    """A route that costs CPU or storage: refused with 429 while its client's budget is spent,
    its work done in the CPU pool, and charged to its client when it is done."""
    limits: RateLimits = request.app.state.rate_limits
    await limits.check(client)
    meter = Meter(request.app.state.cpu_pool)
    try:
        yield meter
    finally:
        await limits.charge(client, meter.cpu_seconds, meter.stored_bytes)


MeterDep = Annotated[Meter, Depends(metered)]
