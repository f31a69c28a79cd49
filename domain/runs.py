"""Training runs: when one opens, who carries it out, and how it moves until it ends.

The run's row is its state; a queue message only names it. Every change of a run's status is
written here (`register_candidate` in domain.registry ends a successful run through `succeed`
inside its own transaction).
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    Integer,
    ScalarSelect,
    Select,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import (
    OPEN_RUN_STATUSES,
    ModelStatus,
    ModelVersion,
    RunPhase,
    RunStatus,
    Sample,
    TrainingRun,
)
from db.session import after_commit
from domain.clearance import cleared_samples
from domain.queue import publish_training


class RunTakenOver(Exception):
    """The reconciler gave this run to another attempt; this one must not write results."""


def now() -> datetime:
    return datetime.now(UTC)


def open_run_id(session: Session) -> int | None:
    """The run queued or running now, if any (at most one: `uq_training_runs_one_open`)."""
    return session.scalar(select(TrainingRun.id).where(TrainingRun.status.in_(OPEN_RUN_STATUSES)))


def _watermark() -> ScalarSelect[int]:
    """The newest sample id that a training run has already taken in (0 before any run)."""
    return select(func.coalesce(func.max(TrainingRun.sample_watermark), 0)).scalar_subquery()


def _released_since(watermark: Any, opened: Any) -> Select[tuple[int]]:
    """Suspects up to `watermark` confirmed after `opened` (when the run that took that
    watermark opened): no run has trained on them yet, so they are new whatever their age."""
    return select(Sample.id).where(
        Sample.id <= watermark,
        Sample.suspect.is_(True),
        Sample.confirmed_at > opened,
        Sample.evaluation.is_(False),
    )


def _new_training_sample_count(at_most: int | BindParameter[int] | None) -> ScalarSelect[int]:
    """Training samples (not kept for evaluation) stored since the last run's watermark, and
    suspects confirmed since that run opened; counting stops at `at_most` in each part, so that
    deciding on a threshold reads at most that many rows of an index, however big the table."""
    newer = select(Sample.id).where(
        Sample.id > _watermark(), Sample.evaluation.is_(False), cleared_samples()
    )
    last_opened = select(func.max(TrainingRun.created_at)).scalar_subquery()
    released = _released_since(_watermark(), last_opened)
    if at_most is not None:
        newer, released = newer.limit(at_most), released.limit(at_most)
    count_newer = select(func.count()).select_from(newer.subquery()).scalar_subquery()
    count_released = select(func.count()).select_from(released.subquery()).scalar_subquery()
    return select(count_newer + count_released).scalar_subquery()


def new_training_samples(session: Session, at_most: int | None = None) -> int:
    return session.scalar(select(_new_training_sample_count(at_most))) or 0


def _due_query() -> Select[tuple[bool]]:
    threshold = bindparam("threshold", type_=Integer)
    run_open = select(TrainingRun.id).where(TrainingRun.status.in_(OPEN_RUN_STATUSES)).exists()
    return select(and_(~run_open, _new_training_sample_count(threshold) >= threshold))


# Built once: it runs in every upload's transaction, where building it cost as much as running it.
_DUE = _due_query()


def is_due(session: Session, threshold: int) -> bool:
    """One query: no run is open and `threshold` new training samples have arrived (reading at
    most `threshold` rows of the primary key). Core on the session's connection: the ORM's path
    cost twice as much."""
    return bool(session.connection().scalar(_DUE, {"threshold": threshold}))


def open_run(
    session: Session, trigger: str, *, threshold: int | None, full_retrain: bool = False
) -> int | None:
    """Open a queued run taking in every sample stored so far, in the caller's transaction; its
    id, or None.

    None when a run is already queued or running, or when fewer than `threshold` new training
    samples have arrived (`threshold=None`: open whatever the count, an admin's request).
    Safe under concurrency: of two transactions that both decide to open a run, the unique
    index lets one insert succeed; the other's savepoint rolls back, the rest of its
    transaction (the upload that found the run due) stands.
    """
    if open_run_id(session) is not None:
        return None
    if threshold is not None and not is_due(session, threshold):
        return None
    watermark = session.scalar(select(func.coalesce(func.max(Sample.id), 0))) or 0
    run = TrainingRun(
        status=RunStatus.queued,
        trigger=trigger,
        full_retrain=full_retrain,
        sample_watermark=watermark,
        progress=0.0,
        epoch=0,
        epochs=0,
        attempts=0,
    )
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        return None
    return run.id


def start_if_due(session: Session, threshold: int) -> int | None:
    """Where a retrain starts on its own: open a run if `threshold` new training samples have
    arrived, and hand it to a worker once the transaction commits. Uploads ask `is_due` first
    (it reads at most `threshold` rows of an index) and call this only when it said yes."""
    return _start(session, open_run(session, "threshold", threshold=threshold))


def _start(session: Session, run_id: int | None) -> int | None:
    """A run just opened goes to a worker once its row is committed (the worker claims it by
    its row); a lost message is found again by beat's reconcile."""
    if run_id is not None:
        after_commit(session, lambda: publish_training(run_id))
    return run_id


class NothingToLearn(Exception):
    """No training sample has arrived since the serving model was trained."""


def learned_up_to(session: Session) -> tuple[int, datetime | None]:
    """The sample watermark of the run that trained the serving model, and when that run
    opened ((0, None): the bundled model)."""
    row = session.execute(
        select(TrainingRun.sample_watermark, TrainingRun.created_at)
        .join(ModelVersion, ModelVersion.training_run_id == TrainingRun.id)
        .where(ModelVersion.status == ModelStatus.active)
    ).first()
    return (row[0], row[1]) if row else (0, None)


def has_something_to_learn(session: Session) -> bool:
    """A training sample the serving model was not trained with (unconfirmed suspects do not
    count; one confirmed since that model's run opened does)."""
    watermark, opened = learned_up_to(session)
    newer = select(Sample.id).where(
        Sample.id > watermark, Sample.evaluation.is_(False), cleared_samples()
    )
    if session.scalar(select(newer.exists())):
        return True
    return opened is not None and bool(
        session.scalar(select(_released_since(watermark, opened).exists()))
    )


def start_now(session: Session, full_retrain: bool) -> int | None:
    """An admin's retrain, whatever the count; None while another run is open. A warm retrain
    with nothing new to learn from would only add noise: NothingToLearn (a full retrain from
    scratch is always allowed)."""
    if not full_retrain and not has_something_to_learn(session):
        raise NothingToLearn(
            "no training sample has arrived since the serving model was trained; upload some, "
            'or ask for a full retrain ({"full_retrain": true})'
        )
    return _start(session, open_run(session, "manual", threshold=None, full_retrain=full_retrain))


def claim(session: Session, run_id: int) -> int | None:
    """Queued -> running, atomically: of two workers given the same run, one gets it.

    Returns the attempt number, which fences every later write: an attempt the reconciler
    has given up on (no heartbeat) can no longer change the run or register a model.
    """
    claimed = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status == RunStatus.queued)
        .values(
            status=RunStatus.running,
            attempts=TrainingRun.attempts + 1,
            started_at=now(),
            heartbeat_at=now(),
            progress=0.0,
            phase=RunPhase.loading,
            phase_detail=None,
            error=None,
        )
    ).rowcount
    attempt = session.scalar(select(TrainingRun.attempts).where(TrainingRun.id == run_id))
    return attempt if claimed == 1 else None


def record_progress(session: Session, run_id: int, attempt: int, **values: Any) -> None:
    """Progress, epoch, epochs: written with a heartbeat if this attempt still owns the run;
    RunTakenOver otherwise. The caller commits at once: a heartbeat is its own transaction."""
    updated = session.execute(
        update(TrainingRun)
        .where(
            TrainingRun.id == run_id,
            TrainingRun.attempts == attempt,
            TrainingRun.status == RunStatus.running,
        )
        .values(**values, heartbeat_at=now())
    ).rowcount
    if updated != 1:
        raise RunTakenOver(f"training run {run_id} attempt {attempt} no longer owns the run")


def fail(session: Session, run_id: int, attempt: int, error: str) -> None:
    """The attempt ended in an error: the run is failed, the registry untouched."""
    record_progress(
        session,
        run_id,
        attempt,
        status=RunStatus.failed,
        phase=None,
        phase_detail=None,
        finished_at=now(),
        error=error[-4000:],
    )


def lock_owned_run(session: Session, run_id: int, attempt: int) -> TrainingRun:
    """The run row, locked for this transaction, if this attempt still owns it."""
    run = session.scalar(select(TrainingRun).where(TrainingRun.id == run_id).with_for_update())
    if run is None or run.attempts != attempt or run.status != RunStatus.running:
        raise RunTakenOver(f"training run {run_id} attempt {attempt} no longer owns the run")
    return run


def succeed(run: TrainingRun, metrics: dict[str, Any], decision: str, reason: str) -> None:
    """Mark a locked, owned run as finished with the gate's decision (the caller commits)."""
    run.status = RunStatus.succeeded
    run.progress = 1.0
    run.phase = run.phase_detail = None
    run.metrics = metrics
    run.decision = decision
    run.decision_reason = reason
    run.finished_at = now()


def runs_to_enqueue(session: Session, stale_seconds: float, max_attempts: int) -> list[int]:
    """Runs that need a message: queued ones (their message may be lost; a duplicate is
    harmless because claiming is atomic) and running ones whose worker stopped beating,
    which go back to queued, or to failed once they have used up their attempts."""
    stale_before = now() - timedelta(seconds=stale_seconds)
    stale = or_(TrainingRun.heartbeat_at.is_(None), TrainingRun.heartbeat_at < stale_before)
    dead = session.scalars(
        select(TrainingRun).where(TrainingRun.status == RunStatus.running, stale).with_for_update()
    )
    for run in dead:
        if run.attempts >= max_attempts:
            run.status = RunStatus.failed
            run.finished_at = now()
            run.error = f"gave up after {run.attempts} attempts (worker lost each time)"
            run.phase = run.phase_detail = None
        else:
            run.status = RunStatus.queued  # the next claim starts it over
    session.flush()
    return list(
        session.scalars(select(TrainingRun.id).where(TrainingRun.status == RunStatus.queued))
    )
