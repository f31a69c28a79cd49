"""Serving the active model with ONNX Runtime, and swapping it when the registry changes.

One InferenceSession per model version, created once. A request takes a reference to the
current `LoadedModel` and uses it to the end, so a swap never disturbs a request in flight.
"""

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from core.labels import LabelSet
from db.models import ModelVersion
from db.registry import active_version, active_version_number
from db.session import get_sessionmaker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    version: int
    labels: LabelSet
    session: ort.InferenceSession
    input_name: str

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, 28, 28, 1) float32 in [0, 1] → (N, classes) probabilities."""
        return self.session.run(None, {self.input_name: batch})[0]


def load_model(version: ModelVersion, intra_op_threads: int) -> LoadedModel:
    options = ort.SessionOptions()
    # Parallelism comes from concurrent requests and uvicorn workers; one thread per run
    # keeps a request from competing with the others for the same cores.
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(
        version.onnx, sess_options=options, providers=["CPUExecutionProvider"]
    )
    return LoadedModel(
        version=version.version,
        labels=LabelSet(version.labels),
        session=session,
        input_name=session.get_inputs()[0].name,
    )


class ModelServer:
    """Holds the model that serves in this process and follows the registry's active version."""

    def __init__(self, intra_op_threads: int = 1) -> None:
        self.intra_op_threads = intra_op_threads
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()  # one load at a time; reads never wait on it
        self.last_checked = 0.0

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def refresh(self) -> LoadedModel | None:
        """Load the active version if it is not the one serving. Returns what now serves."""
        with self._lock:
            self.last_checked = time.monotonic()
            with get_sessionmaker()() as session:
                number = active_version_number(session)
                if number is None or (self._current and self._current.version == number):
                    return self._current
                version = active_version(session)
            if version is None:  # deactivated between the two reads; next poll sees it
                return self._current
            started = time.perf_counter()
            loaded = load_model(version, self.intra_op_threads)
            previous = self._current
            self._current = loaded  # the swap: one reference assignment
            log.info(
                "serving model version %s (was %s), loaded in %.0f ms",
                loaded.version,
                previous.version if previous else None,
                (time.perf_counter() - started) * 1000,
            )
            return loaded
