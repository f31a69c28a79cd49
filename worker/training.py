"""One training run, start to finish: load -> train -> evaluate and gate -> register.

Everything a run needs is in the database (the run row, the samples up to its watermark, the
serving model's weights); the Celery message only carries the run id. A run that fails leaves
the serving model as it was and records why. The rules (which samples, how many copies, the
gate, the registry) live in domain/; this module only puts them in order around the trainer.
"""

import logging
import time
import traceback
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from core.config import Settings, get_settings
from core.labels import LabelSet
from core.model_report import EVALUATION_SAMPLES, Metrics, headline_metrics
from db.models import RunStatus, TrainingRun
from db.session import get_sessionmaker
from domain import registry, runs, samples
from domain.gate import GateRules, Scores, gate
from trainer.config import ExtraSamples, TrainingConfig

if TYPE_CHECKING:
    from trainer.data import NistData
    from trainer.pipeline import TrainedArtifacts
    from trainer.train import TrainingProgress

log = logging.getLogger(__name__)

# Share of the progress bar for training; evaluating and registering take the rest.
TRAINING_SHARE = 0.9


@dataclass(frozen=True)
class ServingModel:
    version: int
    onnx: bytes


@dataclass
class RunPlan:
    """What one run trains on and from, read once at its start."""

    run_id: int
    attempt: int
    config: TrainingConfig
    initial_weights: bytes | None  # the serving model's, for a warm start
    serving: ServingModel | None  # what the candidate is judged against
    baseline: ServingModel | None  # the label set's fixed reference (domain.gate)
    data: "NistData"
    training_samples: samples.Glyphs
    evaluation_samples: samples.Glyphs
    copies: int  # of each training sample per epoch


def execute_run(run_id: int) -> str:
    """Train, evaluate, gate and register one run. Returns the run's final status."""
    with get_sessionmaker()() as session:
        attempt = runs.claim(session, run_id)
    if attempt is None:
        log.info("training run %s is not queued (taken or finished); nothing to do", run_id)
        return "skipped"
    try:
        settings = get_settings()
        plan = plan_run(run_id, attempt, settings)
        artifacts = train_candidate(plan)
        judge_and_register(plan, artifacts, settings)
        return RunStatus.succeeded
    except runs.RunTakenOver:
        log.warning("training run %s attempt %s was taken over; discarding it", run_id, attempt)
        return "taken_over"
    except Exception as exc:
        log.exception("training run %s failed", run_id)
        with get_sessionmaker()() as session:
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
            runs.fail(session, run_id, attempt, error)
        return RunStatus.failed


def retrain_config(settings: Settings, warm: bool) -> TrainingConfig:
    """A warm start: a NIST sample, few epochs, a low learning rate; from scratch: the lot."""
    if warm:
        return TrainingConfig(
            architecture=settings.retrain_architecture,
            epochs=settings.retrain_epochs,
            max_train=settings.retrain_nist_samples,
            learning_rate=settings.retrain_learning_rate,
        )
    return TrainingConfig(
        architecture=settings.retrain_architecture,
        epochs=settings.full_retrain_epochs,
        max_train=settings.full_retrain_nist_samples,
        learning_rate=3e-3,
    )


def plan_run(run_id: int, attempt: int, settings: Settings) -> RunPlan:
    """Load: the run, the serving model, the NIST data and the samples up to the watermark."""
    from trainer.data import load_nist

    labels = LabelSet(settings.labels)
    with get_sessionmaker()() as session:
        run = session.get(TrainingRun, run_id)
        assert run is not None
        serving = registry.active_version(session)
        baseline = registry.baseline_version(session, labels.characters)
        warm = (
            not run.full_retrain
            and serving is not None
            and serving.keras_weights is not None
            and serving.labels == labels.characters
            and serving.architecture == settings.retrain_architecture
        )
        training, evaluation = samples.for_training(
            session, run.sample_watermark, labels, settings.max_image_pixels
        )
        runs.record_progress(
            session,
            run_id,
            attempt,
            progress=0.0,
            gated_against=serving.version if serving else None,
        )
    data = load_nist(settings.nist_data_dir, labels)
    config = retrain_config(settings, warm)
    nist_images = min(config.max_train or len(data.y_train), len(data.y_train))
    return RunPlan(
        run_id=run_id,
        attempt=attempt,
        config=config,
        initial_weights=serving.keras_weights if warm and serving else None,
        serving=ServingModel(serving.version, serving.onnx) if serving else None,
        baseline=ServingModel(baseline.version, baseline.onnx) if baseline else None,
        data=data,
        training_samples=training,
        evaluation_samples=evaluation,
        copies=samples.upload_copies(
            len(training), nist_images, settings.upload_share, settings.max_upload_oversample
        ),
    )


class ProgressWriter:
    """Writes a run's progress and heartbeat, at most every `every` seconds (and at the end)."""

    def __init__(self, run_id: int, attempt: int, every: float = 2.0) -> None:
        self.run_id, self.attempt, self.every = run_id, attempt, every
        self.last_write = 0.0

    def __call__(self, progress: "TrainingProgress") -> bool:
        if time.monotonic() - self.last_write >= self.every or progress.fraction >= 1.0:
            self.last_write = time.monotonic()
            with get_sessionmaker()() as session:
                runs.record_progress(
                    session,
                    self.run_id,
                    self.attempt,
                    progress=round(progress.fraction * TRAINING_SHARE, 4),
                    epoch=progress.epoch,
                    epochs=progress.epochs,
                )
        return True


def evaluation_sets(plan: RunPlan) -> dict[str, tuple[Any, Any]]:
    """Beyond the NIST sets, both models are scored on the users' evaluation samples."""
    if not len(plan.evaluation_samples):
        return {}
    return {EVALUATION_SAMPLES: (plan.evaluation_samples.x, plan.evaluation_samples.y)}


def train_candidate(plan: RunPlan) -> "TrainedArtifacts":
    """Train: the trainer's pipeline, scored on the NIST sets and the evaluation samples."""
    from trainer.pipeline import train_and_evaluate

    return train_and_evaluate(
        plan.data,
        plan.config,
        extra=ExtraSamples(plan.training_samples.x, plan.training_samples.y, plan.copies),
        extra_sets=evaluation_sets(plan),
        initial_weights=plan.initial_weights,
        progress=ProgressWriter(plan.run_id, plan.attempt),
        every_slice=False,  # the gate compares the test split and the headline holdout slice
        notes={"training_run": plan.run_id},
    )


@dataclass(frozen=True)
class Judgement:
    verdict: registry.Verdict
    active: Metrics | None  # the compared version's scores on the candidate's sets
    baseline: Metrics | None  # the baseline's, on the same sets
    checks: list[dict[str, Any]]  # every comparison the gate made


def gate_rules(settings: Settings) -> GateRules:
    return GateRules(
        max_nist_drop=settings.gate_max_nist_drop,
        max_class_drop=settings.gate_max_class_drop,
        min_class_images=settings.gate_min_class_images,
    )


def score_model(plan: RunPlan, model: ServingModel) -> Scores:
    """A registered model's scores on the candidate's sets (NIST test, headline holdout slice,
    trusted evaluation samples), with ONNX Runtime as the service runs it."""
    from trainer.evaluate import evaluate_sets, main_holdout, nist_sets

    sets = nist_sets(plan.data, every_slice=False) | evaluation_sets(plan)
    scores = evaluate_sets(model.onnx, sets, plan.data.labels)
    return Scores(headline_metrics(scores, main_holdout(plan.data)), scores["test"].per_class)


def judge(
    plan: RunPlan, artifacts: "TrainedArtifacts", settings: Settings, serving: ServingModel | None
) -> Judgement:
    """Score the serving model and the baseline on the candidate's sets, then gate."""
    with get_sessionmaker()() as session:
        runs.record_progress(session, plan.run_id, plan.attempt, progress=TRAINING_SHARE + 0.02)
    active = score_model(plan, serving) if serving is not None else None
    baseline = None
    if plan.baseline is not None:
        same = serving is not None and plan.baseline.version == serving.version
        baseline = active if same else score_model(plan, plan.baseline)
    report = artifacts.report
    candidate = Scores(report.metrics, report.evaluation["test"].per_class)
    decision = gate(candidate, active, baseline, gate_rules(settings))
    version = serving.version if serving else None
    return Judgement(
        registry.Verdict(decision.promote, decision.reason, version),
        active.metrics if active else None,
        baseline.metrics if baseline else None,
        decision.checks_json(),
    )


def judge_and_register(plan: RunPlan, artifacts: "TrainedArtifacts", settings: Settings) -> None:
    """Gate against the version that served when the run started, and register. If an admin
    activated a version since the run started (a rollback), the candidate never replaces it:
    domain.registry stores it as `candidate`, for an admin to promote by hand."""
    register(plan, artifacts, judge(plan, artifacts, settings, plan.serving))


def register(plan: RunPlan, artifacts: "TrainedArtifacts", judgement: Judgement) -> None:
    """Store the candidate (promoted, rejected or held) and end the run, in one transaction."""
    active = judgement.active
    run_metrics: dict[str, Any] = {
        "candidate": artifacts.report.metrics.model_dump(mode="json"),
        "active": active.model_dump(mode="json") if active else None,
        "active_version": judgement.verdict.gated_against,
        "baseline": judgement.baseline.model_dump(mode="json") if judgement.baseline else None,
        "baseline_version": plan.baseline.version if plan.baseline else None,
        "gate": judgement.checks,
        "warm_start": plan.initial_weights is not None,
        "config": asdict(plan.config),
        "epochs": plan.config.epochs,
        "nist_train_images": min(plan.config.max_train or 10**12, len(plan.data.y_train)),
        "training_samples": len(plan.training_samples),
        "evaluation_samples": len(plan.evaluation_samples),
        "sample_copies": plan.copies,
        "train_seconds": artifacts.report.training.get("seconds"),
    }
    new = registry.NewVersion(artifacts.onnx, artifacts.weights, artifacts.report)
    with get_sessionmaker()() as session:
        registry.register_candidate(
            session, plan.run_id, plan.attempt, new, judgement.verdict, run_metrics
        )
