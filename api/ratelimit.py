"""Per-client rate limits, counted in what a client costs: CPU milliseconds the API spent for
it (measured, api/cpu.py) and kilobytes of pictures it stored.

The counters live where every API process sees them (Redis in production, through the `limits`
library's sliding-window counters; in memory on the embedded default), keyed by the client: its
key, or its address when anonymous. A request is let in while its client has budget left, and
charged what it actually cost once it is done; an exhausted budget answers 429 with
Retry-After. Admin and labeller keys are not limited. If Redis is away, each process counts in
its own memory meanwhile: the limits hold per process, and nothing fails.
"""

import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

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


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        prefix = f"hwr-limits-{settings.task_queue}"
        self._shared = SlidingWindowCounterRateLimiter(
            _storage(settings.rate_limit_storage, prefix)
        )
        self._local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._warned = 0.0

    def _fallback(self, exc: Exception) -> SlidingWindowCounterRateLimiter:
        if time.monotonic() - self._warned > 60:  # once a minute, not once a request
            self._warned = time.monotonic()
            log.warning("rate-limit storage unreachable, counting in memory: %s", exc)
        return self._local

    async def check(self, client: Client) -> None:
        """429 when one of the client's budgets is spent."""
        for budget in budgets(self.settings, client):
            try:
                allowed = await self._shared.test(budget.item, budget.name, client.uploader)
                limiter = self._shared
            except Exception as exc:
                limiter = self._fallback(exc)
                allowed = await limiter.test(budget.item, budget.name, client.uploader)
            if not allowed:
                stats = await limiter.get_window_stats(budget.item, budget.name, client.uploader)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
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
            try:
                await _hit(self._shared, budget, client, cost)
            except Exception as exc:
                await _hit(self._fallback(exc), budget, client, cost)


async def _hit(
    limiter: SlidingWindowCounterRateLimiter, budget: Budget, client: Client, cost: int
) -> None:
    ids = (budget.name, client.uploader)
    if not await limiter.hit(budget.item, *ids, cost=cost):  # more than is left: all of it
        remaining = (await limiter.get_window_stats(budget.item, *ids)).remaining
        if remaining > 0:
            await limiter.hit(budget.item, *ids, cost=remaining)


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
