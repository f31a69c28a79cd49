"""/v1/training-runs: retraining attempts, their progress and the gate's decision."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.deps import AdminDep, RowId, SessionDep, get_or_404
from api.errors import ApiError
from api.queue import enqueue_training
from api.routers.samples import ERRORS
from db.models import RunStatus, TrainingRun
from worker.triggers import open_run

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


class TrainingRunRequest(BaseModel):
    full_retrain: bool = Field(
        default=False, description="Train from scratch on all NIST data instead of warm-starting"
    )


@router.post("", status_code=201, dependencies=[AdminDep], responses=ERRORS)
def start_training_run(
    session: SessionDep, request: TrainingRunRequest | None = None
) -> TrainingRunOut:
    """Admin: start a training run now, whatever the number of new samples."""
    full = request.full_retrain if request else False
    run_id = open_run("manual", full_retrain=full, force=True)
    if run_id is None:
        open_id = session.scalar(
            select(TrainingRun.id).where(
                TrainingRun.status.in_([RunStatus.queued, RunStatus.running])
            )
        )
        raise ApiError(
            409,
            "training_run_open",
            f"training run {open_id} is already queued or running",
            training_run_id=open_id,
        )
    enqueue_training(run_id)
    return to_out(get_or_404(session, TrainingRun, run_id, "training_run_not_found", "run"))


@router.get("", responses=ERRORS)
def list_training_runs(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[TrainingRunOut]:
    """Newest first."""
    query = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
    return [to_out(run) for run in session.scalars(query)]


@router.get("/{run_id}", responses=ERRORS)
def get_training_run(run_id: RowId, session: SessionDep) -> TrainingRunOut:
    return to_out(
        get_or_404(session, TrainingRun, run_id, "training_run_not_found", "training run")
    )
