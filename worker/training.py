"""One training run, start to finish: NIST + uploads → candidate → gate → registry.

Everything a run needs is in the database (the run row, the samples up to its watermark,
the serving model's weights); the Celery message only carries the run id. A run that
fails leaves the serving model as it was and records why.
"""

import hashlib
import logging
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select, update

from core.config import Settings, get_settings
from core.images import ImageError, decode_image
from core.labels import LabelSet
from core.preprocessing import preprocess_image
from db.models import ModelStatus, ModelVersion, RunStatus, Sample, TrainingRun
from db.registry import active_version
from db.session import get_sessionmaker

if TYPE_CHECKING:
    from trainer.data import NistData

log = logging.getLogger(__name__)


@dataclass
class UserSamples:
    x: np.ndarray  # (N, 28, 28) uint8, as core.preprocessing makes them, times 255
    y: np.ndarray  # (N,) class indices


def now() -> datetime:
    return datetime.now(UTC)


class RunTakenOver(Exception):
    """The reconciler gave this run to another attempt; this one must not write results."""


def claim_run(run_id: int) -> int | None:
    """Queued → running, atomically: of two workers given the same run, one gets it.

    Returns the attempt number, which fences every later write: an attempt the reconciler
    has given up on (no heartbeat) can no longer change the run or register a model.
    """
    with get_sessionmaker()() as session:
        claimed = session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.queued)
            .values(
                status=RunStatus.running,
                attempts=TrainingRun.attempts + 1,
                started_at=now(),
                heartbeat_at=now(),
                progress=0.0,
                error=None,
            )
        ).rowcount
        attempt = session.scalar(select(TrainingRun.attempts).where(TrainingRun.id == run_id))
        session.commit()
    return attempt if claimed == 1 else None


def update_run(run_id: int, attempt: int, **values: Any) -> None:
    """Write to the run if this attempt still owns it; raise RunTakenOver otherwise."""
    with get_sessionmaker()() as session:
        updated = session.execute(
            update(TrainingRun)
            .where(
                TrainingRun.id == run_id,
                TrainingRun.attempts == attempt,
                TrainingRun.status == RunStatus.running,
            )
            .values(**values)
        ).rowcount
        session.commit()
    if updated != 1:
        raise RunTakenOver(f"training run {run_id} attempt {attempt} no longer owns the run")


def load_user_samples(watermark: int, labels: LabelSet) -> tuple[UserSamples, UserSamples]:
    """(training, evaluation) uploads up to the watermark, through the serving preprocessing."""
    groups: dict[bool, tuple[list[np.ndarray], list[int]]] = {True: ([], []), False: ([], [])}
    settings = get_settings()
    with get_sessionmaker()() as session:
        rows = session.execute(
            select(Sample.image, Sample.label, Sample.holdout).where(Sample.id <= watermark)
        )
        for image, label, holdout in rows:
            if label not in labels.characters:
                continue  # stored under another label set
            try:
                decoded = decode_image(
                    image, max_bytes=len(image), max_pixels=settings.max_image_pixels
                )
            except ImageError:
                continue  # stored before a stricter limit; never fails a run
            pixels = np.rint(preprocess_image(decoded.image) * 255).astype(np.uint8)
            groups[holdout][0].append(pixels)
            groups[holdout][1].append(labels.index(label))

    def stack(xs: list[np.ndarray], ys: list[int]) -> UserSamples:
        return UserSamples(
            np.stack(xs) if xs else np.zeros((0, 28, 28), np.uint8), np.array(ys, np.int32)
        )

    return stack(*groups[False]), stack(*groups[True])


def evaluate(onnx: bytes, data: "NistData", uploads: UserSamples) -> dict[str, Any]:
    """A model's scores on the NIST test split, the main holdout slice and the evaluation
    uploads: the headline metrics (the keys the bundled report uses) and the full scores."""
    from trainer.evaluate import main_holdout, onnx_probabilities, score

    sets = {"test": (data.x_test, data.y_test)}
    headline = main_holdout(data)
    if headline:
        sets[f"holdout/{headline}"] = data.holdout[headline]
    if len(uploads.y):
        sets["uploads"] = (uploads.x, uploads.y)
    evaluation = {
        name: score(y, onnx_probabilities(onnx, x).argmax(axis=1), data.labels)
        for name, (x, y) in sets.items()
    }
    metrics = {
        "test_accuracy": evaluation["test"]["accuracy"],
        "holdout_slice": headline,
        "holdout_accuracy": evaluation[f"holdout/{headline}"]["accuracy"] if headline else None,
        "uploads_eval_accuracy": evaluation["uploads"]["accuracy"] if len(uploads.y) else None,
        "uploads_eval_images": len(uploads.y),
    }
    return {"metrics": metrics, "evaluation": evaluation}


def gate(
    candidate: dict[str, Any], active: dict[str, Any] | None, settings: Settings
) -> tuple[bool, str]:
    """Promote only a candidate that is not worse than the active model: (promote, reason).

    Both were scored on the same NIST test split and the same evaluation uploads.
    """
    if active is None:
        return True, "no active model to compare with"
    nist_floor = active["test_accuracy"] - settings.gate_max_nist_drop
    if candidate["test_accuracy"] < nist_floor:
        return False, (
            f"NIST test accuracy {candidate['test_accuracy']:.4f} is below the active model's "
            f"{active['test_accuracy']:.4f} minus {settings.gate_max_nist_drop:.4f}"
        )
    cand_uploads = candidate["uploads_eval_accuracy"]
    active_uploads = active["uploads_eval_accuracy"]
    if cand_uploads is not None and active_uploads is not None and cand_uploads < active_uploads:
        return False, (
            f"accuracy on evaluation uploads {cand_uploads:.4f} is below the active model's "
            f"{active_uploads:.4f}"
        )
    return True, (
        f"NIST test accuracy {candidate['test_accuracy']:.4f} "
        f"(active {active['test_accuracy']:.4f}, allowed drop {settings.gate_max_nist_drop:.4f})"
        " and evaluation-upload accuracy "
        f"{_pct(cand_uploads)} (active {_pct(active_uploads)}): not worse"
    )


def _pct(value: float | None) -> str:
    return "n/a (no evaluation uploads)" if value is None else f"{value:.4f}"


def execute_run(run_id: int) -> str:
    """Train, evaluate, gate and register one run. Returns the run's final status."""
    attempt = claim_run(run_id)
    if attempt is None:
        log.info("training run %s is not queued (taken or finished); nothing to do", run_id)
        return "skipped"
    try:
        return _train_and_register(run_id, attempt)
    except RunTakenOver:
        log.warning("training run %s attempt %s was taken over; discarding it", run_id, attempt)
        return "taken_over"
    except Exception as exc:
        log.exception("training run %s failed", run_id)
        update_run(
            run_id,
            attempt,
            status=RunStatus.failed,
            finished_at=now(),
            error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"[-4000:],
        )
        return RunStatus.failed


def _train_and_register(run_id: int, attempt: int) -> str:
    # TensorFlow is imported here, in the worker only, never in the API.
    from trainer.data import load_nist
    from trainer.export import export_onnx
    from trainer.train import TrainingProgress, train_model

    settings = get_settings()
    labels = LabelSet(settings.labels)
    with get_sessionmaker()() as session:
        run = session.get(TrainingRun, run_id)
        assert run is not None
        watermark, full = run.sample_watermark, run.full_retrain
        serving = active_version(session)
        serving_onnx = serving.onnx if serving else None
        warm = (
            not full
            and serving is not None
            and serving.keras_weights is not None
            and serving.labels == labels.characters
            and serving.architecture == settings.retrain_architecture
        )
        weights = serving.keras_weights if warm and serving else None

    data = load_nist(settings.nist_data_dir, labels)
    train_uploads, eval_uploads = load_user_samples(watermark, labels)
    epochs = settings.retrain_epochs if warm else settings.full_retrain_epochs
    max_train = settings.retrain_nist_samples if warm else settings.full_retrain_nist_samples
    nist_seen = min(max_train or len(data.y_train), len(data.y_train))
    oversample = upload_oversample(len(train_uploads.y), nist_seen, settings)
    update_run(run_id, attempt, epochs=epochs, heartbeat_at=now())

    last_write = 0.0

    def report(progress: TrainingProgress) -> bool:
        nonlocal last_write
        if time.monotonic() - last_write >= 2.0 or progress.fraction >= 1.0:
            last_write = time.monotonic()
            update_run(
                run_id,
                attempt,
                progress=round(progress.fraction * 0.9, 4),
                epoch=progress.epoch,
                heartbeat_at=now(),
            )
        return True

    with tempfile.TemporaryDirectory() as workdir:
        initial = None
        if weights is not None:
            initial = Path(workdir) / "initial.weights.h5"
            initial.write_bytes(weights)
        trained = train_model(
            data,
            settings.retrain_architecture,
            epochs=epochs,
            augment=True,
            max_train=max_train,
            extra_x=train_uploads.x,
            extra_y=train_uploads.y,
            oversample=oversample,
            initial_weights=initial,
            progress=report,
            learning_rate=settings.retrain_learning_rate if warm else 3e-3,
            verbose=0,
        )
        onnx_path = export_onnx(trained.model, Path(workdir) / "model.onnx")
        weights_path = Path(workdir) / "model.weights.h5"
        trained.model.save_weights(weights_path)
        candidate_onnx, candidate_weights = onnx_path.read_bytes(), weights_path.read_bytes()

    update_run(run_id, attempt, progress=0.92, heartbeat_at=now())
    candidate = evaluate(candidate_onnx, data, eval_uploads)
    active = evaluate(serving_onnx, data, eval_uploads) if serving_onnx else None
    promote, reason = gate(candidate["metrics"], active["metrics"] if active else None, settings)
    metrics = {
        "candidate": candidate["metrics"],
        "active": active["metrics"] if active else None,
        "warm_start": warm,
        "epochs": epochs,
        "nist_train_images": nist_seen,
        "training_uploads": len(train_uploads.y),
        "evaluation_uploads": len(eval_uploads.y),
        "upload_oversample": oversample,
        "train_seconds": round(trained.train_seconds, 1),
    }
    report = {
        "labels": labels.characters,
        "architecture": settings.retrain_architecture,
        "created_at": now().isoformat(timespec="seconds"),
        "metrics": candidate["metrics"],
        "training": {"training_run": run_id, **metrics},
        "history": trained.history,
        "evaluation": candidate["evaluation"],
    }
    register(run_id, attempt, candidate_onnx, candidate_weights, report, metrics, promote, reason)
    return RunStatus.succeeded


def upload_oversample(uploads: int, nist_images: int, settings: Settings) -> int:
    """Copies of each upload per epoch, so uploads make about UPLOAD_SHARE of what is seen."""
    if uploads == 0:
        return 1
    wanted = settings.upload_share * nist_images / ((1 - settings.upload_share) * uploads)
    return int(max(1, min(settings.max_upload_oversample, round(wanted))))


def register(
    run_id: int,
    attempt: int,
    onnx: bytes,
    weights: bytes,
    report: dict[str, Any],
    metrics: dict[str, Any],
    promote: bool,
    reason: str,
) -> None:
    """Store the candidate and, if it passed the gate, make it the active version; one commit."""
    with get_sessionmaker()() as session:
        # Lock the run row: the ownership check and the results commit together.
        run = session.scalar(select(TrainingRun).where(TrainingRun.id == run_id).with_for_update())
        if run is None or run.attempts != attempt or run.status != RunStatus.running:
            raise RunTakenOver(f"training run {run_id} attempt {attempt} no longer owns the run")
        version = ModelVersion(
            status=ModelStatus.candidate,
            labels=report["labels"],
            architecture=report["architecture"],
            onnx=onnx,
            onnx_sha256=hashlib.sha256(onnx).hexdigest(),
            keras_weights=weights,
            metrics=report["metrics"],
            report=report,
            training_run_id=run_id,
        )
        session.add(version)
        if promote:
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.status == ModelStatus.active)
                .values(status=ModelStatus.retired)
            )
            session.flush()
            version.status = ModelStatus.active
            version.activated_at = now()
        else:
            version.status = ModelStatus.rejected
        run.status = RunStatus.succeeded
        run.progress = 1.0
        run.metrics = metrics
        run.decision = "promoted" if promote else "rejected"
        run.decision_reason = reason
        run.finished_at = now()
        session.commit()
    log.info("training run %s: %s (%s)", run_id, "promoted" if promote else "rejected", reason)
