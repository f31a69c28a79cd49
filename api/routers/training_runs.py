"""/v1/training-runs: retraining attempts, their progress and the gate's decision."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from api.deps import SessionDep, get_or_404
from api.routers.samples import ERRORS
from db.models import TrainingRun

router = APIRouter(prefix="/v1/training-runs", tags=["training runs"])


class TrainingRunOut(BaseModel):
    id: int
    status: str
    trigger: str
    full_retrain: bool
    progress: float
    epoch: int
    epochs: int
    metrics: dict[str, Any] | None
    decision: str | None
    decision_reason: str | None
    error: str | None
    sample_watermark: int
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def to_out(run: TrainingRun) -> TrainingRunOut:
    return TrainingRunOut.model_validate(run, from_attributes=True)


@router.get("")
def list_training_runs(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[TrainingRunOut]:
    """Newest first."""
    query = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
    return [to_out(run) for run in session.scalars(query)]


@router.get("/{run_id}", responses=ERRORS)
def get_training_run(run_id: int, session: SessionDep) -> TrainingRunOut:
    return to_out(
        get_or_404(session, TrainingRun, run_id, "training_run_not_found", "training run")
    )
