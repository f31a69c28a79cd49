"""The model registry: which version serves. Every change of a version's status is made here.

Changes are serialised: a transaction that changes which version is active first takes the
registry lock (a Postgres advisory lock; SQLite has one writer at a time anyway), so an
activation and a registration never interleave, and the partial unique index
`uq_model_versions_one_active` is never the thing that decides between them. An activation
waits for the lock at most REGISTRY_LOCK_TIMEOUT_SECONDS (then `RegistryBusy`, a 409).

Rollback means rollback: once an admin activates a version, no run that started before that
activation replaces it, whatever its gate said. Its candidate is stored as `candidate`, with
the reason, for an admin to promote by hand.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from core.config import REPO_ROOT, get_settings
from core.model_report import ModelReport, SetScore
from core.neighbours import NEIGHBOURS_FILE
from db.models import ModelScores, ModelStatus, ModelVersion, TrainingRun
from db.session import dialect_insert
from domain import runs
from domain.gate import GateDecision

log = logging.getLogger(__name__)

BUNDLED_MODEL_DIR = REPO_ROOT / "trainer" / "bundled"
REGISTRY_LOCK = 0x68777231  # an arbitrary advisory-lock key of this application


def active_version(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.status == ModelStatus.active))


def active_version_state(session: Session) -> tuple[int, bool] | None:
    """The active version's number and whether it has its neighbour index (None: none)."""
    row = session.execute(
        select(ModelVersion.version, ModelVersion.neighbour_index.is_not(None)).where(
            ModelVersion.status == ModelStatus.active
        )
    ).first()
    return (row[0], bool(row[1])) if row else None


def baseline_version(session: Session, labels: str) -> ModelVersion | None:
    """The gate's fixed reference for a label set: its most recently blessed version."""
    return session.scalar(
        select(ModelVersion)
        .where(ModelVersion.labels == labels, ModelVersion.blessed_at.is_not(None))
        .order_by(ModelVersion.blessed_at.desc(), ModelVersion.version.desc())
        .limit(1)
    )


def bless(session: Session, version: int) -> ModelVersion | None:
    """Make `version` its label set's baseline from now on (None: no such version). Under the
    registry lock, so that a run being registered sees the baseline before or after, whole."""
    model = _locked_version(session, version)
    if model is not None:
        model.blessed_at = runs.now()
    return model


def store_index(session: Session, version: int, onnx: bytes, index: bytes) -> bool:
    """Give a version that has none its neighbour index, and the ONNX that serves it its
    embedding output (the same weights, the same probabilities, one output more). Whether it
    was stored (False: another worker did it first, or no such version)."""
    stored = session.execute(
        update(ModelVersion)
        .where(ModelVersion.version == version, ModelVersion.neighbour_index.is_(None))
        .values(neighbour_index=index, onnx=onnx, onnx_sha256=hashlib.sha256(onnx).hexdigest())
    ).rowcount
    return stored == 1


class RegistryBusy(Exception):
    """The registry lock was not free within REGISTRY_LOCK_TIMEOUT_SECONDS; nothing changed."""


def lock_registry(session: Session, timeout_seconds: float | None = None) -> None:
    """Held until the transaction ends: one registry change at a time, across processes.
    With a timeout, RegistryBusy when it is not free by then (the transaction is aborted: the
    caller's unit of work rolls it back)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    try:
        if timeout_seconds is not None:
            milliseconds = str(max(1, round(timeout_seconds * 1000)))
            session.execute(select(func.set_config("lock_timeout", milliseconds, True)))
        session.execute(select(func.pg_advisory_xact_lock(REGISTRY_LOCK)))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        raise RegistryBusy("another registry change is in progress; retry shortly") from exc
    if timeout_seconds is not None:  # only the lock waits that long, not what follows
        session.execute(select(func.set_config("lock_timeout", "0", True)))


def _make_active(session: Session, version: ModelVersion) -> None:
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.status == ModelStatus.active, ModelVersion.version != version.version)
        .values(status=ModelStatus.retired)
    )
    session.flush()  # the old one is retired before the unique index sees the new one
    version.status = ModelStatus.active
    version.activated_at = runs.now()


def activate(session: Session, version: int) -> ModelVersion | None:
    """Make `version` the serving one (rollback or forward); None if there is no such version.
    Every API process follows within MODEL_POLL_SECONDS. RegistryBusy if the lock does not
    come free within REGISTRY_LOCK_TIMEOUT_SECONDS."""
    model = _locked_version(session, version)
    if model is None:
        return None
    if model.status != ModelStatus.active:
        _make_active(session, model)
    session.flush()
    return model


def _locked_version(session: Session, version: int) -> ModelVersion | None:
    """The version, read under the registry lock (waiting at most
    REGISTRY_LOCK_TIMEOUT_SECONDS); None if there is no such version."""
    lock_registry(session, get_settings().registry_lock_timeout_seconds)
    return session.get(ModelVersion, version, populate_existing=True)


@dataclass(frozen=True)
class KeptScores:
    """A version's scores on the NIST sets a run's gate compares (db.models.ModelScores)."""

    sets_key: str  # fingerprints the images scored (trainer.evaluate.sets_key)
    sets: dict[str, SetScore]  # set name -> its scores
    test_predicted: np.ndarray  # (N,) the class index read in each test image


def kept_scores(session: Session, version: int, sets_key: str) -> KeptScores | None:
    """The version's scores on these sets, where a run computed them before."""
    row = session.scalar(
        select(ModelScores).where(ModelScores.version == version, ModelScores.sets_key == sets_key)
    )
    if row is None:
        return None
    sets = {name: SetScore.model_validate(score) for name, score in row.sets.items()}
    return KeptScores(sets_key, sets, np.frombuffer(row.test_predicted, np.uint8))


def keep_scores(session: Session, version: int, scores: KeptScores) -> None:
    """Keep a version's scores (flushed; the caller commits). Scores kept already stay."""
    assert int(scores.test_predicted.max(initial=0)) < 256  # a label set has at most 128
    values = {
        "version": version,
        "sets_key": scores.sets_key,
        "sets": {name: score.model_dump(mode="json") for name, score in scores.sets.items()},
        "test_predicted": scores.test_predicted.astype(np.uint8).tobytes(),
    }
    session.execute(dialect_insert(session, ModelScores).values(values).on_conflict_do_nothing())


@dataclass(frozen=True)
class NewVersion:
    """A trained model to store: what trainer.pipeline produces."""

    onnx: bytes
    keras_weights: bytes | None
    report: ModelReport
    neighbour_index: bytes | None = None  # core/neighbours.py: the uploads' evidence
    scores: KeptScores | None = None  # its scores on the sets its run's gate compared


def _version_row(new: NewVersion, status: ModelStatus) -> ModelVersion:
    return ModelVersion(
        status=status,
        labels=new.report.labels,
        architecture=new.report.architecture,
        onnx=new.onnx,
        onnx_sha256=hashlib.sha256(new.onnx).hexdigest(),
        keras_weights=new.keras_weights,
        neighbour_index=new.neighbour_index,
        metrics=new.report.metrics.model_dump(mode="json"),
        report=new.report.model_dump(mode="json"),
    )


def register_candidate(
    session: Session,
    run_id: int,
    attempt: int,
    new: NewVersion,
    verdict: GateDecision,
    run_metrics: dict[str, Any],
) -> ModelVersion:
    """Store a run's candidate and end the run: one transaction, only while this attempt still
    owns the run. Active if the gate promoted it, rejected if not; held as `candidate` when the
    active version is no longer the one the gate compared with, or was activated after this
    attempt started (an admin's rollback, or a roll forward): a manual activation is never
    undone by a run that started before it."""
    run = runs.lock_owned_run(session, run_id, attempt)
    lock_registry(session)
    active = active_version(session)
    version = _version_row(new, ModelStatus.candidate)
    version.training_run_id = run_id
    session.add(version)
    session.flush()
    if new.scores is not None:  # the next run, judging against this version, reads them
        keep_scores(session, version.version, new.scores)
    decision, reason = _outcome(session, version, verdict, _activated_since(active, run, verdict))
    run.gated_against = verdict.gated_against
    runs.succeed(run, run_metrics, decision, reason)
    session.flush()
    log.info("training run %s: version %s %s (%s)", run_id, version.version, version.status, reason)
    return version


def _activated_since(
    active: ModelVersion | None, run: TrainingRun, verdict: GateDecision
) -> ModelVersion | None:
    """The version activated since the run started or since the gate compared (None: the one
    the gate compared with has served all along)."""
    if active is None:
        return None
    changed = active.version != verdict.gated_against
    later = (
        run.started_at is not None
        and active.activated_at is not None
        and _utc(active.activated_at) >= _utc(run.started_at)
    )
    return active if changed or later else None


def _utc(moment: datetime) -> datetime:
    """SQLite gives naive times (stored as UTC); Postgres aware ones."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _outcome(
    session: Session, version: ModelVersion, verdict: GateDecision, activated: ModelVersion | None
) -> tuple[str, str]:
    """Set the new version's status; the run's decision and reason."""
    compared = f"compared with version {verdict.gated_against}: {verdict.reason}"
    if not verdict.promote:
        version.status = ModelStatus.rejected
        return "rejected", compared
    if activated is not None:
        version.status = ModelStatus.candidate
        return "candidate", (
            f"not promoted: version {activated.version} was activated after this run started, "
            f"and a run never replaces a version activated after it started (rollback means "
            f"rollback); activate this version by hand if wanted ({compared})"
        )
    _make_active(session, version)
    return "promoted", compared


def install_bundled(session: Session, model_dir: Path = BUNDLED_MODEL_DIR) -> int | None:
    """On first start with an empty registry, the bundled starter model becomes version 1.

    Safe to call from every replica at once: they take turns under the registry lock, so the
    first inserts version 1 and the others see it (without the lock the losers' failed
    inserts would use up version numbers).
    """
    lock_registry(session)
    if session.scalar(select(func.count()).select_from(ModelVersion)):
        return None  # the lock goes with the caller's transaction
    onnx_path = model_dir / "model.onnx"
    if not onnx_path.exists():
        log.warning("no bundled model at %s; predictions wait for a trained one", onnx_path)
        return None
    weights_path = model_dir / "model.weights.h5"
    index_path = model_dir / NEIGHBOURS_FILE
    new = NewVersion(
        onnx=onnx_path.read_bytes(),
        keras_weights=weights_path.read_bytes() if weights_path.exists() else None,
        report=ModelReport.model_validate_json((model_dir / "report.json").read_text()),
        neighbour_index=index_path.read_bytes() if index_path.exists() else None,
    )
    version = _version_row(new, ModelStatus.active)
    version.activated_at = version.blessed_at = runs.now()  # the first baseline
    try:
        with session.begin_nested():  # SQLite has no registry lock: a racing insert may win
            session.add(version)
    except IntegrityError:
        return None
    log.info("installed the bundled model as version %s", version.version)
    return version.version


@dataclass(frozen=True)
class ScoreChange:
    """A version's accuracy minus another's, on the same images (its run scored both)."""

    against: int | None  # the other version
    test: float | None  # NIST test split
    holdout: float | None  # NIST writers no model trained on
    evaluation: float | None  # users' evaluation uploads


@dataclass(frozen=True)
class VersionChange:
    """What a version's training run measured: its change against the version that served
    when the run started and against the baseline, and the uploads behind it."""

    previous: ScoreChange | None
    baseline: ScoreChange | None
    training_uploads: int  # uploads it trained on
    evaluation_uploads: int  # users' evaluation uploads it was judged on
    notes: list[str]  # why a figure is missing


def _score_change(
    candidate: dict[str, Any], other: dict[str, Any] | None, version: int | None
) -> ScoreChange | None:
    if not other:
        return None

    def minus(key: str) -> float | None:
        mine, theirs = candidate.get(key), other.get(key)
        return None if mine is None or theirs is None else round(mine - theirs, 6)

    return ScoreChange(
        version,
        minus("test_accuracy"),
        minus("holdout_accuracy"),
        minus("evaluation_samples_accuracy"),
    )


def measured_change(run_metrics: dict[str, Any] | None) -> VersionChange | None:
    """A version's change as its run measured it (None: no run made it, e.g. the bundled)."""
    if not run_metrics or "candidate" not in run_metrics:
        return None
    candidate = run_metrics["candidate"]
    previous = _score_change(
        candidate, run_metrics.get("active"), run_metrics.get("active_version")
    )
    baseline = _score_change(
        candidate, run_metrics.get("baseline"), run_metrics.get("baseline_version")
    )
    evaluation = int(run_metrics.get("evaluation_samples") or 0)
    notes = []
    if previous is None:
        notes.append("no version served when its run started: nothing to compare with")
    if evaluation == 0:
        notes.append(
            "no users' evaluation uploads judged it: only those an admin or a labeller stored "
            "or confirmed judge a candidate"
        )
    return VersionChange(
        previous, baseline, int(run_metrics.get("training_samples") or 0), evaluation, notes
    )


def changes_by_version(session: Session, models: list[ModelVersion]) -> dict[int, VersionChange]:
    """measured_change of each version that a run made, by version."""
    run_ids = [m.training_run_id for m in models if m.training_run_id is not None]
    metrics = dict(
        session.execute(
            select(TrainingRun.id, TrainingRun.metrics).where(TrainingRun.id.in_(run_ids))
        ).all()
    )
    changes = {}
    for model in models:
        change = measured_change(metrics.get(model.training_run_id))
        if change is not None:
            changes[model.version] = change
    return changes
