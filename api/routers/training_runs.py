"""/v1/training-runs: retraining attempts, their progress and the gate's decision."""

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.auth import AdminDep, ClientDep
from api.deps import RowId, SessionDep, get_or_404
from api.errors import ERRORS, ApiError
from api.routers import API_PREFIX
from api.schemas import TrainingRunOut, TrainingRunRequest
from db.models import TrainingRun
from domain import runs
from domain.keys import Client

router = APIRouter(prefix=f"{API_PREFIX}/training-runs", tags=["training runs"])


def to_out(run: TrainingRun, client: Client | None = None) -> TrainingRunOut:
    """A run as `client` may see it: why a run failed names the server's files, so only an
    admin reads it; others are told its kind."""
    out = TrainingRunOut.model_validate(run, from_attributes=True)
    if out.error and not (client is not None and client.is_admin):
        kind = out.error.split(":", 1)[0]
        out.error = f"{kind} (an admin sees the details)"
    return out


@router.post("", status_code=201, dependencies=[AdminDep], responses=ERRORS)
def start_training_run(
    session: SessionDep, request: TrainingRunRequest | None = None
) -> TrainingRunOut:
    """Admin: start a training run now, whatever the number of new samples. 409
    `nothing_to_learn` when no training sample arrived since the serving model was trained
    (unless `full_retrain`)."""
    try:
        run_id = runs.start_now(session, full_retrain=request.full_retrain if request else False)
    except runs.NothingToLearn as exc:
        raise ApiError(409, "nothing_to_learn", str(exc)) from exc
    if run_id is None:
        open_id = runs.open_run_id(session)
        raise ApiError(
            409,
            "training_run_open",
            f"training run {open_id} is already queued or running",
            training_run_id=open_id,
        )
    return to_out(get_or_404(session, TrainingRun, run_id, "training_run_not_found", "run"))


@router.get("", responses=ERRORS)
def list_training_runs(
    session: SessionDep, client: ClientDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[TrainingRunOut]:
    """Newest first."""
    query = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
    return [to_out(run, client) for run in session.scalars(query)]


@router.get("/{run_id}", responses=ERRORS)
def get_training_run(run_id: RowId, session: SessionDep, client: ClientDep) -> TrainingRunOut:
    run = get_or_404(session, TrainingRun, run_id, "training_run_not_found", "training run")
    return to_out(run, client)
