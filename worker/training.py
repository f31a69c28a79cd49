"""One training run, start to finish: load -> train -> evaluate and gate -> register.

Everything a run needs is in the database (the run row, the samples up to its watermark, the
serving model's weights); the Celery message only carries the run id. A run that fails leaves
the serving model as it was and records why. The rules (which samples, how many copies, the
gate, the registry) live in domain/; this module only puts them in order around the trainer.
"""

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import Settings, get_settings
from core.labels import LabelSet
from core.model_report import EVALUATION_SAMPLES, Metrics, headline_metrics
from db.models import ModelVersion, RunPhase, RunStatus, TrainingRun
from db.session import get_sessionmaker, unit_of_work
from domain import registry, runs, samples
from domain.gate import GateDecision, GateRules, Outcomes, Scores, gate
from trainer.config import ExtraSamples, TrainingConfig, WarmStart

if TYPE_CHECKING:
    from trainer.data import NistData
    from trainer.pipeline import TrainedArtifacts
    from trainer.train import TrainingProgress

log = logging.getLogger(__name__)

# Where each phase starts on the progress bar: its share of a warm retrain's time on 2 cores
# (bench.bench_retrain --second: 57.5 s, of which loading 0.4, training 43.9, export and
# calibration 8.9, scoring 2.1, indexing 1.6, judging 0-2.1, registering 0.2); training moves
# through its share epoch by epoch.
PHASE_STARTS = {
    RunPhase.loading: 0.0,
    RunPhase.fetching: 0.01,  # a first run only: the download's share is its own line's
    RunPhase.training: 0.02,
    RunPhase.calibrating: 0.78,
    RunPhase.scoring: 0.93,
    RunPhase.indexing: 0.96,
    RunPhase.judging: 0.98,
    RunPhase.registering: 0.995,
}


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
    warm_start: WarmStart | None  # from the serving model, else from scratch
    serving: ServingModel | None  # what the candidate is judged against
    baseline: ServingModel | None  # the label set's fixed reference (domain.gate)
    data: "NistData"
    sets_key: str  # fingerprints the NIST sets the gate compares (registry.KeptScores)
    training_samples: samples.Glyphs
    evaluation_samples: samples.Glyphs
    copies: int  # of each training sample per epoch
    waiting: list[int] = field(default_factory=list)  # over their uploader's share: a later run
    held: list[int] = field(default_factory=list)  # held by the healing (attempt 2)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # refused ones, for the record


def execute_run(run_id: int) -> str:
    """Train, evaluate, gate and register one run. Returns the run's final status."""
    with unit_of_work() as session:
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
        with unit_of_work() as session:
            # What went wrong, in a line; the traceback is in the worker's log (above).
            error = f"{type(exc).__name__}: {exc}"
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
            rendered_per_kind=settings.retrain_rendered_per_kind,
        )
    return TrainingConfig(
        architecture=settings.retrain_architecture,
        epochs=settings.full_retrain_epochs,
        max_train=settings.full_retrain_nist_samples,
        learning_rate=3e-3,
        rendered_per_kind=settings.full_retrain_rendered_per_kind,
    )


def plan_run(run_id: int, attempt: int, settings: Settings) -> RunPlan:
    """Load: the run, the serving model, the NIST data and the samples up to the watermark."""
    from trainer.data import load_nist
    from trainer.evaluate import nist_sets, sets_key
    from trainer.fetch import ensure_nist

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
        chosen = samples.for_training(
            session,
            run.sample_watermark,
            labels,
            settings.max_image_pixels,
            settings.max_key_share,
        )
        runs.record_progress(
            session,
            run_id,
            attempt,
            progress=PHASE_STARTS[RunPhase.loading],
            phase=RunPhase.loading,
            gated_against=serving.version if serving else None,
        )
    heartbeat = ProgressWriter(run_id, attempt).downloading
    ensure_nist(settings.nist_data_dir, settings.nist_source, heartbeat)
    data = load_nist(settings.nist_data_dir, labels)
    config = retrain_config(settings, warm)
    return RunPlan(
        run_id=run_id,
        attempt=attempt,
        config=config,
        warm_start=warm_start_from(serving) if warm and serving else None,
        serving=ServingModel(serving.version, serving.onnx) if serving else None,
        baseline=ServingModel(baseline.version, baseline.onnx) if baseline else None,
        data=data,
        sets_key=sets_key(nist_sets(data, every_slice=False)),
        training_samples=chosen.training,
        evaluation_samples=chosen.evaluation,
        copies=copies_per_epoch(len(chosen.training), config, data, settings),
        waiting=chosen.waiting,
    )


def copies_per_epoch(
    uploads: int, config: TrainingConfig, data: "NistData", settings: Settings
) -> int:
    """How often each training sample is repeated in an epoch of this run's NIST images."""
    nist_images = min(config.max_train or len(data.y_train), len(data.y_train))
    return samples.upload_copies(
        uploads, nist_images, settings.upload_share, settings.max_upload_oversample
    )


class ProgressWriter:
    """Writes a run's progress and heartbeat, at most every `every` seconds (and at the end)."""

    def __init__(self, run_id: int, attempt: int, every: float = 2.0) -> None:
        self.run_id, self.attempt, self.every = run_id, attempt, every
        self.last_write = 0.0

    def __call__(self, progress: "TrainingProgress") -> bool:
        start, end = PHASE_STARTS[RunPhase.training], PHASE_STARTS[RunPhase.calibrating]
        self.write(
            progress.fraction >= 1.0,
            progress=round(start + progress.fraction * (end - start), 4),
            phase=RunPhase.training,
            epoch=progress.epoch,
            epochs=progress.epochs,
        )
        return True

    def phase(self, phase: RunPhase | str) -> None:
        """A phase begins: written at once, at its start on the progress bar."""
        phase = RunPhase(phase)
        self.write(True, phase=phase, phase_detail=None, progress=PHASE_STARTS[phase])

    def downloading(self, done: int, total: int | None) -> None:
        """While a first run fetches the NIST data: how much of a download in words (the page
        shows it), and the heartbeat (a run silent for RUN_STALE_SECONDS is taken for dead)."""
        megabytes = (
            f"{done / 1e6:,.0f} of {total / 1e6:,.0f} MB" if total else f"{done / 1e6:,.0f} MB"
        )
        self.write(
            False,
            phase=RunPhase.fetching,
            phase_detail=megabytes if done else None,
            progress=PHASE_STARTS[RunPhase.fetching],
        )

    def write(self, force: bool, **values: Any) -> None:
        if force or time.monotonic() - self.last_write >= self.every:
            self.last_write = time.monotonic()
            with unit_of_work() as session:
                runs.record_progress(session, self.run_id, self.attempt, **values)


def evaluation_sets(plan: RunPlan) -> dict[str, tuple[Any, Any]]:
    """Beyond the NIST sets, both models are scored on the users' evaluation samples."""
    if not len(plan.evaluation_samples):
        return {}
    return {EVALUATION_SAMPLES: (plan.evaluation_samples.x, plan.evaluation_samples.y)}


def warm_start_from(serving: ModelVersion) -> WarmStart:
    """Start from the serving model: its weights, its prior (warm_start_prior), and its
    readings of NIST for the candidate's prior to match (trainer.calibrate.matched_prior)."""
    assert serving.keras_weights is not None
    return WarmStart(serving.keras_weights, serving.onnx, warm_start_prior(serving.report))


def bundled_warm_start() -> WarmStart:
    """Start from the bundled model, as from a serving one (the benches' retrains)."""
    directory = registry.BUNDLED_MODEL_DIR
    return WarmStart(
        (directory / "model.weights.h5").read_bytes(),
        (directory / "model.onnx").read_bytes(),
        warm_start_prior(json.loads((directory / "report.json").read_text())),
    )


def warm_start_prior(report: dict[str, Any]) -> np.ndarray | None:
    """The class frequencies the starting model learnt (its report's calibration), which a warm
    retrain divides out again: it trains on a sample of NIST, whose frequencies differ by up
    to 12% for a rare class. None: it has none (then the run's own are used)."""
    prior = (report.get("calibration") or {}).get("learned_prior")
    return None if prior is None else np.array(prior, np.float64)


def train_candidate(plan: RunPlan) -> "TrainedArtifacts":
    """Train: the trainer's pipeline, scored on the NIST sets and the evaluation samples."""
    from trainer.pipeline import train_and_evaluate

    writer = ProgressWriter(plan.run_id, plan.attempt)
    writer.phase(RunPhase.training)
    return train_and_evaluate(
        plan.data,
        plan.config,
        extra=ExtraSamples(plan.training_samples.x, plan.training_samples.y, plan.copies),
        extra_sets=evaluation_sets(plan),
        warm_start=plan.warm_start,
        progress=writer,
        step=writer.phase,
        every_slice=False,  # the gate compares the test split and the headline holdout slice
        notes={"training_run": plan.run_id},
    )


@dataclass(frozen=True)
class Judgement:
    """What judging a candidate found: the gate's decision and the scores behind it."""

    decision: GateDecision  # with the version it was gated against
    active: Metrics | None  # the compared version's scores on the candidate's sets
    baseline: Metrics | None  # the baseline's, on the same sets
    candidate: Scores | None = None  # what the candidate read, image by image
    reference: Scores | None = None  # the baseline's (else the active model's) likewise


def gate_rules(settings: Settings) -> GateRules:
    return GateRules(
        max_nist_drop=settings.gate_max_nist_drop,
        max_class_drop=settings.gate_max_class_drop,
        min_class_images=settings.gate_min_class_images,
    )


def test_outcomes(plan: RunPlan, predicted: np.ndarray) -> Outcomes:
    """What a model read on the NIST test split, image by image (for the paired gate), from
    the class index it read in each image."""
    characters = np.array(list(plan.data.labels.characters))
    truth = plan.data.y_test
    return Outcomes(characters[truth], predicted == truth, characters[predicted])


def nist_scores(plan: RunPlan, model: ServingModel) -> registry.KeptScores:
    """A version's scores on the NIST sets the gate compares: computed once per version (with
    ONNX Runtime, as the service runs it) and kept in the registry for every later run."""
    from trainer.evaluate import nist_sets, predict_sets, score_sets

    with get_sessionmaker()() as session:
        kept = registry.kept_scores(session, model.version, plan.sets_key)
    if kept is not None:
        return kept
    sets = nist_sets(plan.data, every_slice=False)
    probabilities = predict_sets(model.onnx, sets)
    kept = registry.KeptScores(
        plan.sets_key,
        score_sets(probabilities, sets, plan.data.labels),
        probabilities["test"].argmax(axis=1),
    )
    with unit_of_work() as session:
        registry.keep_scores(session, model.version, kept)
    return kept


def score_model(plan: RunPlan, model: ServingModel) -> Scores:
    """A version's scores on the candidate's sets: the NIST ones as kept (nist_scores), the
    trusted evaluation samples (they grow between runs) scored now."""
    from trainer.evaluate import evaluate_sets, main_holdout

    nist = nist_scores(plan, model)
    extra = evaluation_sets(plan)
    scores = nist.sets | (evaluate_sets(model.onnx, extra, plan.data.labels) if extra else {})
    return Scores(
        headline_metrics(scores, main_holdout(plan.data)),
        scores["test"].per_class,
        test_outcomes(plan, nist.test_predicted),
    )


def judge(
    plan: RunPlan, artifacts: "TrainedArtifacts", settings: Settings, serving: ServingModel | None
) -> Judgement:
    """Score the serving model and the baseline on the candidate's sets, then gate."""
    ProgressWriter(plan.run_id, plan.attempt).phase(RunPhase.judging)
    active = score_model(plan, serving) if serving is not None else None
    baseline = None
    if plan.baseline is not None:
        same = serving is not None and plan.baseline.version == serving.version
        baseline = active if same else score_model(plan, plan.baseline)
    report = artifacts.report
    candidate = Scores(
        report.metrics,
        report.evaluation["test"].per_class,
        test_outcomes(plan, artifacts.test_predicted),
    )
    decision = gate(candidate, active, baseline, gate_rules(settings))
    return Judgement(
        replace(decision, gated_against=serving.version if serving else None),
        active.metrics if active else None,
        baseline.metrics if baseline else None,
        candidate,
        baseline or active,
    )


def culprits_of(
    plan: RunPlan, artifacts: "TrainedArtifacts", judgement: Judgement
) -> dict[int, str]:
    """The training uploads that pushed a class over: for each class the gate refused, the
    classes the candidate now reads its NIST images as (where the reference read them right);
    uploads labelled as one of those that the reference model reads as the refused class
    (never one vouched for: confirmed, or stored by a trusted key). Sample id -> the reason."""
    from trainer.evaluate import onnx_probabilities

    candidate, reference = judgement.candidate, judgement.reference
    regressed = {c.label for c in judgement.decision.checks if c.label and not c.passed}
    if not regressed or candidate is None or reference is None or not len(plan.training_samples):
        return {}
    assert candidate.test_outcomes is not None and reference.test_outcomes is not None
    ours, theirs = candidate.test_outcomes, reference.test_outcomes
    characters = plan.data.labels.characters
    uploads = plan.training_samples
    read = onnx_probabilities(plan_reference_onnx(plan), uploads.x).argmax(axis=1)
    culprits = {}
    for label in sorted(regressed):
        lost = (ours.truth == label) & theirs.correct & ~ours.correct
        taken = {str(c) for c in ours.predicted[lost]} if ours.predicted is not None else set()
        for sample_id, given, seen, vouched in zip(
            uploads.ids, uploads.y, read, uploads.vouched, strict=True
        ):
            if not vouched and characters[given] in taken and characters[seen] == label:
                culprits[int(sample_id)] = (
                    f"held by training run {plan.run_id}: its candidate lost class {label!r} "
                    f"(read as {characters[given]!r} now), and the reference model reads this "
                    f"upload, labelled {characters[given]!r}, as {label!r}"
                )
    return culprits


def nist_set_names(plan: RunPlan) -> list[str]:
    from trainer.evaluate import nist_sets

    return list(nist_sets(plan.data, every_slice=False))


def plan_reference_onnx(plan: RunPlan) -> bytes:
    reference = plan.baseline or plan.serving
    assert reference is not None
    return reference.onnx


def heal(
    plan: RunPlan,
    artifacts: "TrainedArtifacts",
    judgement: Judgement,
    culprits: dict[int, str],
    settings: Settings,
) -> RunPlan:
    """Hold the culprits as suspect (with the reason) and plan the run's second attempt
    without them; the first attempt's decision is kept on the run."""
    with unit_of_work() as session:
        samples.hold(session, culprits)
    log.info("training run %s: %d uploads held, training again", plan.run_id, len(culprits))
    training = plan.training_samples.without(culprits)
    first = {
        "decision": "rejected",
        "reason": judgement.decision.reason,
        "candidate": artifacts.report.metrics.model_dump(mode="json"),
        "gate": judgement.decision.checks_json(),
        "held": sorted(culprits),
    }
    return replace(
        plan,
        training_samples=training,
        copies=copies_per_epoch(len(training), plan.config, plan.data, settings),
        held=sorted(culprits),
        attempts=[*plan.attempts, first],
    )


def judge_and_register(plan: RunPlan, artifacts: "TrainedArtifacts", settings: Settings) -> None:
    """Gate against the version that served when the run started, and register. A candidate
    refused for a class heals once: the uploads that pushed that class over are held as
    suspect and the run trains again without them (`heal`). If an admin activated a version
    since the run started (a rollback), the candidate never replaces it: domain.registry
    stores it as `candidate`, for an admin to promote by hand."""
    judgement = judge(plan, artifacts, settings, plan.serving)
    if not judgement.decision.promote and not plan.held:
        culprits = culprits_of(plan, artifacts, judgement)
        if culprits:
            healed = heal(plan, artifacts, judgement, culprits, settings)
            artifacts = train_candidate(healed)
            plan, judgement = healed, judge(healed, artifacts, settings, healed.serving)
            decision = judgement.decision
            note = (
                f"trained a second time without the {len(culprits)} uploads held for pushing "
                f"a class over (the first attempt was refused: {plan.attempts[-1]['reason']}); "
            )
            judgement = replace(
                judgement, decision=replace(decision, reason=note + decision.reason)
            )
    register(plan, artifacts, judgement)


def register(plan: RunPlan, artifacts: "TrainedArtifacts", judgement: Judgement) -> None:
    """Store the candidate (promoted, rejected or held) and end the run, in one transaction."""
    active = judgement.active
    run_metrics: dict[str, Any] = {
        "candidate": artifacts.report.metrics.model_dump(mode="json"),
        "active": active.model_dump(mode="json") if active else None,
        "active_version": judgement.decision.gated_against,
        "baseline": judgement.baseline.model_dump(mode="json") if judgement.baseline else None,
        "baseline_version": plan.baseline.version if plan.baseline else None,
        "gate": judgement.decision.checks_json(),
        "warm_start": plan.warm_start is not None,
        "config": asdict(plan.config),
        "epochs": plan.config.epochs,
        "nist_train_images": min(plan.config.max_train or 10**12, len(plan.data.y_train)),
        "training_samples": len(plan.training_samples),
        "evaluation_samples": len(plan.evaluation_samples),
        "waiting_samples": len(plan.waiting),  # over their uploader's share: a later run
        "held_by_healing": plan.held,
        "attempts": plan.attempts,  # refused attempts before this one
        "sample_copies": plan.copies,
        "train_seconds": artifacts.report.training.get("seconds"),
    }
    nist = {name: artifacts.report.evaluation[name] for name in nist_set_names(plan)}
    new = registry.NewVersion(
        artifacts.onnx,
        artifacts.weights,
        artifacts.report,
        artifacts.neighbours,
        registry.KeptScores(plan.sets_key, nist, artifacts.test_predicted),
    )
    ProgressWriter(plan.run_id, plan.attempt).phase(RunPhase.registering)
    with unit_of_work() as session:
        registry.register_candidate(
            session, plan.run_id, plan.attempt, new, judgement.decision, run_metrics
        )
