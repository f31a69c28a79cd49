"""The Prometheus registry to expose: per process, or summed over uvicorn workers."""

import os
from functools import lru_cache

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector


@lru_cache
def registry() -> CollectorRegistry:
    # With several workers, PROMETHEUS_MULTIPROC_DIR makes /metrics add up all processes.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        collected = CollectorRegistry()
        MultiProcessCollector(collected)
        return collected
    return REGISTRY
