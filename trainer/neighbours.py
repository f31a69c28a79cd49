"""Building a model's neighbour index (core/neighbours.py) from the NIST data it learnt from.

`per_class` training glyphs of each class, embedded by the model as ONNX Runtime runs it; then
`reference_per_class` validation glyphs of each class (never in the index), each one's mean
similarity to its k nearest: how deep inside its class a genuine example sits.
"""

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from core.model_report import ModelReport
from core.neighbours import NEIGHBOURS_FILE, NeighbourIndex
from core.preprocessing import MODEL_INPUT_NAME, nist_to_model_input
from trainer.data import NistData
from trainer.export import EMBEDDING_NAME, with_embedding

PER_CLASS = 100
REFERENCE_PER_CLASS = 100
NEIGHBOURS = 20


def embedding_session(model: bytes) -> ort.InferenceSession:
    """A session whose outputs include the embedding (added if the model lacks it)."""
    proto = with_embedding(onnx.load_from_string(model))
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def embed(session: ort.InferenceSession, glyphs: np.ndarray, batch: int = 1024) -> np.ndarray:
    """uint8 (N, 28, 28) glyphs -> (N, D) embeddings."""
    parts = [
        session.run(
            [EMBEDDING_NAME], {MODEL_INPUT_NAME: nist_to_model_input(glyphs[i : i + batch])}
        )[0]
        for i in range(0, len(glyphs), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _per_class(
    labels: np.ndarray, classes: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    chosen = [
        rng.choice(found, min(count, len(found)), replace=False)
        for c in range(classes)
        if len(found := np.flatnonzero(labels == c))
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def build_index(
    model: bytes,
    data: NistData,
    per_class: int = PER_CLASS,
    reference_per_class: int = REFERENCE_PER_CLASS,
    k: int = NEIGHBOURS,
    seed: int = 0,
) -> NeighbourIndex:
    rng = np.random.default_rng(seed)
    classes = len(data.labels)
    session = embedding_session(model)
    indexed = _per_class(data.y_train, classes, per_class, rng)
    vectors = embed(session, data.x_train[indexed])
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    partial = NeighbourIndex(vectors, data.y_train[indexed], data.labels.characters, k, [])
    held_out = _per_class(data.y_val, classes, reference_per_class, rng)
    found = partial.nearest(embed(session, data.x_val[held_out]), k)
    depth = found.similarities.mean(axis=1)
    truth = data.y_val[held_out]
    reference = [np.sort(depth[truth == c]) for c in range(classes)]
    return NeighbourIndex(vectors, partial.classes, data.labels.characters, k, reference)


def index_model_dir(model_dir: Path, data: NistData) -> Path:
    """Give a model directory's ONNX its embedding output (its report's file figures follow)
    and write its neighbour index beside it: `python -m trainer index`."""
    onnx_path = model_dir / "model.onnx"
    proto = with_embedding(onnx.load(str(onnx_path)))
    onnx.save(proto, str(onnx_path))
    model = onnx_path.read_bytes()
    report_path = model_dir / "report.json"
    if report_path.exists():
        report = ModelReport.model_validate_json(report_path.read_text())
        report.model = report.model.model_copy(
            update={"onnx_bytes": len(model), "onnx_sha256": hashlib.sha256(model).hexdigest()}
        )
        report_path.write_text(report.model_dump_json(indent=1) + "\n")  # as write_report
    path = model_dir / NEIGHBOURS_FILE
    path.write_bytes(build_index(model, data).to_bytes())
    return path
