"""The in-process floor of a prediction: the API's own Predictor on the bundled model, no HTTP,
timed in as many processes at once as the server has workers. What the service adds on top of
it is what HTTP, the framework and the worker processes cost."""

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

from testkit.stack import REPO_ROOT
from testkit.tables import percentile

if TYPE_CHECKING:
    from domain.predictor import Predictor

BUNDLED_ONNX = REPO_ROOT / "trainer" / "bundled" / "model.onnx"


def calls_for(
    call: Callable[[], object], seconds: float, start_at: float, warmups: int
) -> list[float]:
    """Seconds per call of `call`, repeated for `seconds`: after `warmups` untimed calls (first
    runs allocate) and, where several processes measure together, once `start_at` is reached."""
    for _ in range(warmups):
        call()
    while time.time() < start_at:
        time.sleep(0.001)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    return latencies


@dataclass
class Floor:
    """In-process work without HTTP, in `processes` processes at once (one per uvicorn worker)."""

    what: str
    processes: int
    calls: int
    images_per_s: float
    p50_ms: float  # per call: one image, or one batch
    p99_ms: float


def measure_floor(
    what: str,
    work: Callable[..., list[float]],
    args: tuple[Any, ...],
    processes: int,
    images_per_call: int = 1,
) -> Floor:
    """`work(*args, start_at)` (seconds per call for args[1] seconds) in `processes` processes
    that start measuring at the same moment, as the server's workers do under load."""
    seconds = args[1]
    if processes == 1:
        runs = [work(*args, 0.0)]
    else:
        start_at = time.time() + 15  # after every process has imported and warmed up
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(work, *args, start_at) for _ in range(processes)]
            runs = [future.result() for future in futures]
    merged = sorted(x for run in runs for x in run)
    return Floor(
        what=what,
        processes=processes,
        calls=len(merged),
        images_per_s=sum(len(run) * images_per_call / seconds for run in runs),
        p50_ms=percentile(merged, 0.50) * 1000,
        p99_ms=percentile(merged, 0.99) * 1000,
    )


def serving_predictor() -> "Predictor":
    """The API's Predictor on the bundled model, with the API's session settings and limits:
    bytes -> decode -> preprocess -> ONNX Runtime -> top k, in this process."""
    from core.config import get_settings
    from domain.predictor import Predictor, load_model

    settings = get_settings()
    model = load_model(BUNDLED_ONNX, 1, settings.labels, settings.onnx_intra_op_threads)
    return Predictor.from_settings(model, settings)
