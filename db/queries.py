"""Queries that more than one process needs."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Sample, TrainingRun


def last_watermark(session: Session) -> int:
    """The newest sample id that a training run has already taken in (0 before any run)."""
    return session.scalar(select(func.coalesce(func.max(TrainingRun.sample_watermark), 0))) or 0


def new_training_samples(session: Session) -> int:
    """Training samples (not held out for evaluation) stored since the last run's watermark."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Sample)
            .where(Sample.id > last_watermark(session), Sample.holdout.is_(False))
        )
        or 0
    )
