"""A model's neighbour index: NIST training glyphs as the model sees them (its embedding: what
its last layer reads), to compare an upload with the established examples near it.

Built per model version by the worker (trainer/neighbours.py), stored with the version, loaded
by every API process: `per_class` glyphs of each class, L2-normalised, so that a dot product is
a cosine similarity. With them, for each class, how close held-out NIST glyphs of that class
sit to their own nearest neighbours (`reference`): what "deep inside a class" means for it.
Exact search (one matrix product over a few thousand vectors, well under a millisecond): an
approximate index would buy nothing at this size.
"""

import io
from dataclasses import dataclass

import numpy as np

NEIGHBOURS_FILE = "neighbours.npz"  # a model directory's index, beside its model.onnx


@dataclass(frozen=True)
class Neighbours:
    similarities: np.ndarray  # (N, k) cosine similarity of each of the k nearest, best first
    classes: np.ndarray  # (N, k) their class indices


@dataclass(frozen=True)
class NeighbourIndex:
    vectors: np.ndarray  # (M, D) float32, unit length
    classes: np.ndarray  # (M,) class index of each vector
    labels: str  # the label set the class indices refer to
    k: int  # neighbours the reference was measured with
    # Per class, sorted: the mean similarity of held-out NIST glyphs of that class to their k
    # nearest neighbours in the index.
    reference: list[np.ndarray]

    def nearest(self, embeddings: np.ndarray, k: int | None = None) -> Neighbours:
        """The k nearest indexed glyphs of each embedding (N, D)."""
        k = min(k or self.k, len(self.classes))
        units = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        similarities = units.astype(np.float32) @ self.vectors.T
        top = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        chosen = np.take_along_axis(similarities, top, axis=1)
        order = np.argsort(-chosen, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        return Neighbours(np.take_along_axis(chosen, order, axis=1), self.classes[top])

    def depth(self, class_index: int, similarity: float) -> float:
        """Where `similarity` (a mean over k nearest) falls among held-out glyphs of that class:
        the share of them that sit less close (0: farther out than all, 1: closer than all)."""
        reference = self.reference[class_index]
        if not len(reference):
            return 0.0
        return float(np.searchsorted(reference, similarity, side="right") / len(reference))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        counts = np.array([len(r) for r in self.reference], np.int64)
        np.savez_compressed(
            buffer,
            vectors=self.vectors.astype(np.float16),
            classes=self.classes.astype(np.int16),
            labels=np.array(self.labels),
            k=np.array(self.k),
            reference=np.concatenate(self.reference or [np.zeros(0)]).astype(np.float32),
            reference_counts=counts,
        )
        return buffer.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> "NeighbourIndex":
        with np.load(io.BytesIO(data)) as stored:
            counts = stored["reference_counts"]
            reference = np.split(stored["reference"], np.cumsum(counts)[:-1])
            return NeighbourIndex(
                vectors=stored["vectors"].astype(np.float32),
                classes=stored["classes"].astype(np.int64),
                labels=str(stored["labels"]),
                k=int(stored["k"]),
                reference=[np.sort(r) for r in reference],
            )
