"""The API's CPU work runs in one bounded pool per process, never on the event loop.

Decoding, preprocessing, inference, heat maps and a row's reading all go through `Meter`,
which hands them to the pool and adds up the CPU time they took (thread CPU time: OpenCV and
ONNX Runtime each run one thread per call here, in the calling thread). At most
API_CPU_THREADS pictures are worked on at once in a process, so its memory is bounded by that
many decode budgets; the rest wait their turn without holding more than their bytes. The CPU
time is what a client's rate limit is charged (api/ratelimit.py).
"""

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class CpuPool:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="api-cpu")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def call(self, work: Callable[[], T]) -> T:
        """From a thread that may block (a sync route's): wait for the pool to do it."""
        return self._executor.submit(work).result()


class Meter:
    """One request's CPU work, done in the pool and timed; and the bytes it stored."""

    def __init__(self, pool: CpuPool) -> None:
        self.pool = pool
        self.cpu_seconds = 0.0
        self.stored_bytes = 0
        self._lock = threading.Lock()

    def _timed(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        start = time.thread_time()
        try:
            return work(*args, **kwargs)
        finally:
            with self._lock:
                self.cpu_seconds += time.thread_time() - start

    async def run(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await `work(*args)` done in the pool (from async code: the event loop only waits)."""
        return await self.pool.run(partial(self._timed, work, *args, **kwargs))

    def call(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work(*args)` done in the pool, from a sync route's thread."""
        return self.pool.call(partial(self._timed, work, *args, **kwargs))
