"""When to retrain: decided in the database, so that it happens once however many processes ask."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from core.config import get_settings
from db.models import RunStatus, Sample, TrainingRun
from db.queries import new_training_samples
from db.session import get_sessionmaker


def open_run(trigger: str, full_retrain: bool = False, force: bool = False) -> int | None:
    """Open a queued training run taking in every sample stored so far.

    Returns None when one is already queued or running, or (unless `force`) when fewer than
    RETRAIN_THRESHOLD new training samples have arrived. The unique index
    `uq_training_runs_one_open` makes this safe under concurrency: of two processes that
    both decide to open a run, only one insert succeeds.
    """
    threshold = get_settings().retrain_threshold
    with get_sessionmaker()() as session:
        open_id = session.scalar(
            select(TrainingRun.id).where(
                TrainingRun.status.in_([RunStatus.queued, RunStatus.running])
            )
        )
        if open_id is not None or (not force and new_training_samples(session) < threshold):
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
        session.add(run)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
        return run.id


def runs_to_enqueue() -> list[int]:
    """Runs that need a message: queued ones (their message may be lost; a duplicate is
    harmless because claiming is atomic) and running ones whose worker stopped beating.
    A run that has used up its attempts is failed instead."""
    settings = get_settings()
    stale_before = datetime.now(UTC) - timedelta(seconds=settings.run_stale_seconds)
    with get_sessionmaker()() as session:
        stale = or_(TrainingRun.heartbeat_at.is_(None), TrainingRun.heartbeat_at < stale_before)
        dead = list(
            session.scalars(
                select(TrainingRun.id).where(TrainingRun.status == RunStatus.running, stale)
            )
        )
        for run_id in dead:
            run = session.get(TrainingRun, run_id)
            assert run is not None
            if run.attempts >= settings.max_run_attempts:
                run.status = RunStatus.failed
                run.finished_at = datetime.now(UTC)
                run.error = f"gave up after {run.attempts} attempts (worker lost each time)"
            else:
                run.status = RunStatus.queued  # the next claim starts it over
        session.commit()
        queued = list(
            session.scalars(select(TrainingRun.id).where(TrainingRun.status == RunStatus.queued))
        )
    return queued
