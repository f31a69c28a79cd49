"""When to retrain: decided in the database, so that it happens once however many processes ask."""

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from core.config import get_settings
from db.models import RunStatus, Sample, TrainingRun
from db.queries import new_training_samples
from db.session import get_sessionmaker


def create_run_if_due(trigger: str) -> int | None:
    """Open a queued training run if enough new samples arrived; None if not due or one is open.

    The unique index `uq_training_runs_one_open` makes this safe under concurrency: of two
    processes that both see the threshold crossed, only one insert succeeds.
    """
    threshold = get_settings().retrain_threshold
    with get_sessionmaker()() as session:
        open_run = session.scalar(
            select(TrainingRun.id).where(
                TrainingRun.status.in_([RunStatus.queued, RunStatus.running])
            )
        )
        if open_run is not None or new_training_samples(session) < threshold:
            return None
        watermark = session.scalar(select(func.coalesce(func.max(Sample.id), 0))) or 0
        run = TrainingRun(
            status=RunStatus.queued,
            trigger=trigger,
            full_retrain=False,
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
