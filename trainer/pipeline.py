"""Train -> export -> evaluate -> report: the one pipeline behind `python -m trainer train` and
a worker's retrain. What comes out (ONNX bytes, Keras weights, a ModelReport) is what the
registry stores, or what the CLI writes into a model directory.
"""

import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core.model_report import ModelReport
from core.neighbours import NEIGHBOURS_FILE
from trainer.config import ExtraSamples, TrainingConfig, WarmStart
from trainer.data import NistData
from trainer.evaluate import (
    LabelledImages,
    build_report,
    calibrated,
    nist_sets,
    predict_sets,
    score_sets,
    write_report,
)
from trainer.export import export_onnx
from trainer.neighbours import build_index
from trainer.train import ProgressHook, train_model

# The steps after training, announced to a `step` hook as each begins (a run's phases,
# db.models.RunPhase, bear the same names).
Step = Literal["calibrating", "scoring", "indexing"]


@dataclass(frozen=True)
class TrainedArtifacts:
    onnx: bytes
    weights: bytes  # Keras model.weights.h5: what a later retrain warm-starts from
    report: ModelReport
    neighbours: bytes  # its neighbour index (core/neighbours.py): the uploads' evidence
    test_predicted: np.ndarray  # (N,) the class index it reads in each NIST test image


def train_and_evaluate(
    data: NistData,
    config: TrainingConfig,
    *,
    extra: ExtraSamples | None = None,
    extra_sets: dict[str, LabelledImages] | None = None,
    warm_start: WarmStart | None = None,
    progress: ProgressHook | None = None,
    step: Callable[[Step], None] | None = None,
    every_slice: bool = True,
    notes: dict[str, object] | None = None,
    verbose: int | str = 0,
) -> TrainedArtifacts:
    """Train a model, export it to ONNX and score it on the NIST sets plus `extra_sets`.

    every_slice: score on every NIST holdout slice, or only the headline one (a retrain).
    notes: more facts for the report's training record (the CLI's command, the run id...).
    warm_start: the model to start from (trainer.config.WarmStart), else from scratch.
    step: told as each step after training begins (a run's progress).
    """
    announce = step or (lambda _: None)
    with tempfile.TemporaryDirectory() as workdir:
        initial = None
        if warm_start is not None:
            initial = Path(workdir) / "initial.weights.h5"
            initial.write_bytes(warm_start.weights)
        trained = train_model(
            data, config, extra=extra, initial_weights=initial, progress=progress, verbose=verbose
        )
        announce("calibrating")
        onnx = export_onnx(trained.model, Path(workdir) / "model.onnx").read_bytes()
        weights_path = Path(workdir) / "model.weights.h5"
        trained.model.save_weights(weights_path)
        weights = weights_path.read_bytes()

    prior = warm_start.prior if warm_start and warm_start.prior is not None else None
    onnx, calibration, scored = calibrated(
        onnx,
        data,
        trained.learned_prior if prior is None else prior,
        reference=warm_start.onnx if warm_start else None,
    )
    announce("scoring")
    sets = nist_sets(data, every_slice) | (extra_sets or {})
    # The sets calibration ran the network on are scored already; the rest run now.
    predicted = scored | predict_sets(onnx, {k: v for k, v in sets.items() if k not in scored})
    probabilities = {name: predicted[name] for name in sets if name in predicted}
    evaluation = score_sets(probabilities, sets, data.labels)
    training = {
        **asdict(config),
        "parameters": trained.model.count_params(),
        "train_size": trained.train_size,
        "extra_samples": len(extra) if extra is not None else 0,
        "extra_copies": extra.copies if extra is not None else 0,
        "warm_start": warm_start is not None,
        "seconds": round(trained.train_seconds, 1),
        "cpu_cores": os.cpu_count(),
        **(notes or {}),
    }
    report = build_report(
        onnx, data, evaluation, config.architecture, training, trained.history, calibration
    )
    announce("indexing")
    neighbours = build_index(onnx, data).to_bytes()
    return TrainedArtifacts(
        onnx=onnx,
        weights=weights,
        report=report,
        neighbours=neighbours,
        test_predicted=probabilities["test"].argmax(axis=1),
    )


def save_model_dir(artifacts: TrainedArtifacts, out_dir: Path) -> None:
    """model.onnx, model.weights.h5 and the report (JSON, Markdown, plots) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.onnx").write_bytes(artifacts.onnx)
    (out_dir / "model.weights.h5").write_bytes(artifacts.weights)
    (out_dir / NEIGHBOURS_FILE).write_bytes(artifacts.neighbours)
    write_report(artifacts.report, out_dir)
