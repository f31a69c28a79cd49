"""Predicting: image bytes -> decode and check -> preprocess -> ONNX Runtime -> top k.

`Predictor` is the one place this happens: the API's routes, the web page's calls and the
benchmarks all use it. `ModelServer` holds the model that serves in this process and follows
the registry's active version; a request takes a reference to the current `LoadedModel` and
uses it to the end, so a swap never disturbs a request in flight.
"""

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core.config import Settings
from core.images import ImageError, decode_image, require_ink
from core.labels import LabelSet
from core.neighbours import NeighbourIndex
from core.preprocessing import preprocess_batch, preprocess_image
from db.models import ModelVersion
from db.session import get_sessionmaker
from domain.registry import active_version, active_version_state

log = logging.getLogger(__name__)

TOP_K = 5


EMBEDDING = "embedding"  # the ONNX output trainer/export.py adds: what the last layer reads


@dataclass(frozen=True)
class LoadedModel:
    version: int
    labels: LabelSet
    session: ort.InferenceSession
    input_name: str
    output_name: str  # the probabilities
    index: NeighbourIndex | None = None  # NIST examples as this model sees them
    # Whether uploads can be compared with NIST examples: an index, and the embedding output.
    weighs_evidence: bool = False

    def probabilities(self, batch: np.ndarray, allowed: str | None = None) -> np.ndarray:
        """(N, 28, 28, 1) float32 in [0, 1] -> (N, classes) probabilities; with `allowed` (a
        subset of the labels, e.g. the digits of a postcode field) zero elsewhere and
        renormalised over the allowed labels."""
        probabilities = self.session.run([self.output_name], {self.input_name: batch})[0]
        return probabilities if not allowed else restrict(probabilities, self.labels, allowed)

    def probabilities_and_embeddings(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One run, both outputs (the model must have the embedding: `weighs_evidence`)."""
        probabilities, embeddings = self.session.run(
            [self.output_name, EMBEDDING], {self.input_name: batch}
        )
        return probabilities, embeddings


def restrict(probabilities: np.ndarray, labels: LabelSet, allowed: str) -> np.ndarray:
    """Probabilities over `allowed` only (renormalised), zero elsewhere: the caller knows the
    field holds digits, say. Each allowed character must be one of `labels`."""
    mask = np.isin(np.array(list(labels.characters)), np.array(list(allowed)))
    kept = np.where(mask, probabilities, 0.0)
    return kept / np.maximum(kept.sum(axis=1, keepdims=True), 1e-12)


def load_model(
    onnx: bytes | Path,
    version: int,
    labels: str,
    intra_op_threads: int = 1,
    index: bytes | None = None,
) -> LoadedModel:
    options = ort.SessionOptions()
    # Parallelism comes from concurrent requests and uvicorn workers; one thread per run
    # keeps a request from competing with the others for the same cores.
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    source = onnx if isinstance(onnx, bytes) else str(onnx)
    session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    neighbours = NeighbourIndex.from_bytes(index) if index else None
    outputs = [output.name for output in session.get_outputs()]
    return LoadedModel(
        version,
        LabelSet(labels),
        session,
        session.get_inputs()[0].name,
        outputs[0],
        neighbours,
        weighs_evidence=neighbours is not None and EMBEDDING in outputs,
    )


@dataclass(frozen=True)
class Candidate:
    label: str
    probability: float


def top_candidates(
    probabilities: np.ndarray, characters: str, k: int = TOP_K, allowed: str | None = None
) -> list[Candidate]:
    """The `k` likeliest labels of one picture's probabilities (among `allowed`, when the
    client narrowed them), best first."""
    order = np.argsort(probabilities)[::-1]
    if allowed:
        order = np.array([i for i in order if characters[i] in allowed])
    return [Candidate(characters[i], float(probabilities[i])) for i in order[:k]]


@dataclass(frozen=True)
class Timings:
    decode_ms: float
    preprocess_ms: float
    inference_ms: float


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    top: list[Candidate]
    glyph: np.ndarray  # (28, 28) float32 in [0, 1]: what the model saw
    heatmap: np.ndarray | None = None  # (28, 28) in [0, 1], where asked for
    doubt: str | None = None  # why the answer should be checked (`doubt`); None: sure enough
    # What the model's last layer reads (the neighbour index's space), where asked for and the
    # model has the output (`LoadedModel.weighs_evidence`): label evidence compares it.
    embedding: np.ndarray | None = None


OCCLUSION_PATCH = 6  # pixels a side of the square blanked out, on the 28x28 input
OCCLUSION_STRIDE = 2


def occlusion_heatmap(model: LoadedModel, glyph: np.ndarray, label: str) -> np.ndarray:
    """Where the model looked: how much the probability of `label` falls when each part of the
    28x28 input is blanked out (Zeiler & Fergus, 2014), as (28, 28) in [0, 1], 1 where it
    matters most. One batch of 144 blanked copies through ONNX Runtime: no gradients, no
    TensorFlow, any architecture."""
    index = model.labels.index(label)
    side = glyph.shape[0]
    corners = [
        (y, x)
        for y in range(0, side - OCCLUSION_PATCH + 1, OCCLUSION_STRIDE)
        for x in range(0, side - OCCLUSION_PATCH + 1, OCCLUSION_STRIDE)
    ]
    batch = np.repeat(glyph[np.newaxis], len(corners) + 1, axis=0)
    for k, (y, x) in enumerate(corners, start=1):  # copy 0 stays whole: the reference
        batch[k, y : y + OCCLUSION_PATCH, x : x + OCCLUSION_PATCH] = 0.0
    probabilities = model.probabilities(batch[..., np.newaxis])[:, index]
    drops = np.clip(probabilities[0] - probabilities[1:], 0.0, None)
    heat = np.zeros_like(glyph, dtype=np.float32)
    covered = np.zeros_like(heat)
    for drop, (y, x) in zip(drops, corners, strict=True):
        heat[y : y + OCCLUSION_PATCH, x : x + OCCLUSION_PATCH] += drop
        covered[y : y + OCCLUSION_PATCH, x : x + OCCLUSION_PATCH] += 1
    heat /= np.maximum(covered, 1)
    return heat / heat.max() if heat.max() > 0 else heat


def doubt(top: list[Candidate], threshold: float) -> str | None:
    """In words, why an answer (its candidates, best first) should be checked; None when the
    (calibrated) confidence is at least `threshold`."""
    best = top[0]
    if best.probability >= threshold:
        return None
    others = ", ".join(f"“{c.label}” {c.probability:.0%}" for c in top[1:3])
    return (
        f"Unsure: “{best.label}” is only {best.probability:.0%} likely "
        f"(then {others}); check the answer."
    )


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    max_decode_bytes: int | None = None


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


class Predictor:
    """One model's predictions: the one place where glyphs become answers (candidates, doubt,
    a heat map where asked), for pictures' bytes, batches and a row's characters alike. Bad
    images raise (or, in a batch, are returned as) core.images.ImageError."""

    def __init__(
        self, model: LoadedModel, limits: ImageLimits, doubt_below: float, top_k: int = TOP_K
    ) -> None:
        self.model, self.limits, self.doubt_below, self.top_k = model, limits, doubt_below, top_k

    @classmethod
    def from_settings(cls, model: LoadedModel, settings: Settings) -> "Predictor":
        """The service's predictor on `model`: its image limits and doubt threshold."""
        limits = ImageLimits(
            settings.max_upload_bytes, settings.max_image_pixels, settings.max_decode_bytes
        )
        return cls(model, limits, settings.low_confidence_threshold)

    def predict_glyphs(
        self,
        glyphs: np.ndarray,
        allowed: str | None = None,
        heatmap: bool = False,
        embeddings: bool = False,
    ) -> list[Prediction]:
        """Glyphs (N, 28, 28) as core.preprocessing makes them -> one Prediction each, in one
        model run. allowed: only these labels may be the answer (None: any of the model's);
        heatmap: also where the model looked (occlusion_heatmap); embeddings: also what its
        last layer reads, where the model has that output (label evidence)."""
        if not len(glyphs):
            return []
        batch = glyphs[..., np.newaxis]
        if embeddings and self.model.weighs_evidence:
            probabilities, embedded = self.model.probabilities_and_embeddings(batch)
            if allowed:
                probabilities = restrict(probabilities, self.model.labels, allowed)
        else:
            probabilities, embedded = self.model.probabilities(batch, allowed), None
        predictions = []
        for i, (glyph, row) in enumerate(zip(glyphs, probabilities, strict=True)):
            top = self.top(row, allowed)
            heat = occlusion_heatmap(self.model, glyph, top[0].label) if heatmap else None
            unsure = doubt(top, self.doubt_below)
            embedding = embedded[i] if embedded is not None else None
            predictions.append(
                Prediction(top[0].label, top[0].probability, top, glyph, heat, unsure, embedding)
            )
        return predictions

    def top(self, probabilities: np.ndarray, allowed: str | None = None) -> list[Candidate]:
        return top_candidates(probabilities, self.model.labels.characters, self.top_k, allowed)

    def _decode(self, data: bytes):  # -> DecodedImage
        return decode_image(
            data,
            max_bytes=self.limits.max_bytes,
            max_pixels=self.limits.max_pixels,
            max_decode_bytes=self.limits.max_decode_bytes,
        )

    def predict(
        self, data: bytes, allowed: str | None = None, heatmap: bool = False
    ) -> tuple[Prediction, Timings]:
        """allowed: only these labels may be the answer (None: any of the model's); heatmap:
        also where the model looked (occlusion_heatmap)."""
        start = time.perf_counter()
        decoded = self._decode(data)
        decode_ms = _ms_since(start)
        start = time.perf_counter()
        glyph = require_ink(preprocess_image(decoded.image))
        del decoded  # only the glyph is kept: a big picture's pixels are freed at once
        preprocess_ms = _ms_since(start)
        start = time.perf_counter()
        (prediction,) = self.predict_glyphs(glyph[np.newaxis], allowed, heatmap)
        return prediction, Timings(decode_ms, preprocess_ms, _ms_since(start))

    def predict_many(
        self, images: list[bytes], allowed: str | None = None
    ) -> tuple[list[Prediction | ImageError], Timings]:
        """Every image in one model run; a bad image gets its error in its place. Each picture
        is decoded and reduced in turn (preprocess_batch consumes them one by one), so a batch
        holds one decoded picture at a time, never all of them."""
        errors: dict[int, ImageError] = {}
        order: list[int] = []
        decode_seconds = 0.0

        def decoded_pictures() -> Iterator[np.ndarray]:
            nonlocal decode_seconds
            for index, data in enumerate(images):
                start = time.perf_counter()
                try:
                    picture = self._decode(data).image
                except ImageError as exc:
                    errors[index] = exc
                    continue
                finally:
                    decode_seconds += time.perf_counter() - start
                order.append(index)
                yield picture

        start = time.perf_counter()
        batch = preprocess_batch(decoded_pictures())  # (N, 28, 28, 1)
        preprocess_ms = round((time.perf_counter() - start - decode_seconds) * 1000, 3)
        start = time.perf_counter()
        results: list[Prediction | ImageError | None] = [errors.get(i) for i in range(len(images))]
        inked: list[int] = []  # rows of the batch with ink, each answered
        for row, index in enumerate(order):
            try:
                require_ink(batch[row, :, :, 0])
                inked.append(row)
            except ImageError as exc:  # its own entry: the others are still answered
                results[index] = exc
        answers = self.predict_glyphs(batch[inked, :, :, 0], allowed)
        for row, prediction in zip(inked, answers, strict=True):
            results[order[row]] = prediction
        inference_ms = _ms_since(start)
        done = [r for r in results if r is not None]
        return done, Timings(round(decode_seconds * 1000, 3), preprocess_ms, inference_ms)


class ModelServer:
    """Holds the model that serves in this process and follows the registry's active version."""

    def __init__(self, intra_op_threads: int = 1) -> None:
        self.intra_op_threads = intra_op_threads
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()  # one load at a time; reads never wait on it

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def refresh(self) -> LoadedModel | None:
        """Load the active version if it is not the one serving, or if its neighbour index was
        built since it was loaded. Returns what now serves."""
        with self._lock, get_sessionmaker()() as session:
            found = active_version_state(session)
            if found is None:
                return self._current
            number, indexed = found
            current = self._current
            if current and current.version == number and (current.index or not indexed):
                return current
            version = active_version(session)
            if version is None:  # deactivated between the two reads; the next poll sees it
                return self._current
            return self._swap(version)

    def _swap(self, version: ModelVersion) -> LoadedModel:
        started = time.perf_counter()
        loaded = load_model(
            version.onnx,
            version.version,
            version.labels,
            self.intra_op_threads,
            version.neighbour_index,
        )
        previous = self._current
        self._current = loaded  # the swap: one reference assignment
        log.info(
            "serving model version %s (was %s), loaded in %.0f ms",
            loaded.version,
            previous.version if previous else None,
            (time.perf_counter() - started) * 1000,
        )
        return loaded
