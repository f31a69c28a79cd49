"""/v1/models: the registry of trained versions, which one serves, rollback."""

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from sqlalchemy import select, update

from api.deps import AdminDep, SessionDep, VersionNumber, get_or_404
from api.errors import ApiError
from api.routers.samples import ERRORS
from db.models import ModelStatus, ModelVersion
from db.registry import active_version

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelOut(BaseModel):
    version: int
    status: str
    labels: str
    architecture: str
    onnx_sha256: str
    onnx_bytes: int
    metrics: dict[str, Any]
    training_run_id: int | None
    created_at: datetime
    activated_at: datetime | None


class ModelDetail(ModelOut):
    report: dict[str, Any]


def to_out(model: ModelVersion) -> ModelOut:
    return ModelOut(
        version=model.version,
        status=model.status,
        labels=model.labels,
        architecture=model.architecture,
        onnx_sha256=model.onnx_sha256,
        onnx_bytes=len(model.onnx),
        metrics=model.metrics,
        training_run_id=model.training_run_id,
        created_at=model.created_at,
        activated_at=model.activated_at,
    )


def get_model_or_404(session: SessionDep, version: int) -> ModelVersion:
    return get_or_404(session, ModelVersion, version, "model_not_found", "model version")


@router.get("", responses=ERRORS)
def list_models(session: SessionDep) -> list[ModelOut]:
    """Every version, newest first."""
    return [
        to_out(m)
        for m in session.scalars(select(ModelVersion).order_by(ModelVersion.version.desc()))
    ]


@router.get("/active", responses=ERRORS)
def get_active_model(session: SessionDep) -> ModelDetail:
    model = active_version(session)
    if model is None:
        raise ApiError(404, "no_active_model", "no model version is active")
    return ModelDetail(**to_out(model).model_dump(), report=model.report)


@router.get("/{version}", responses=ERRORS)
def get_model(version: VersionNumber, session: SessionDep) -> ModelDetail:
    model = get_model_or_404(session, version)
    return ModelDetail(**to_out(model).model_dump(), report=model.report)


@router.get(
    "/{version}/onnx",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}} | ERRORS,
)
def download_onnx(version: VersionNumber, session: SessionDep) -> Response:
    model = get_model_or_404(session, version)
    return Response(
        model.onnx,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="model-v{version}.onnx"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.post("/{version}/activate", dependencies=[AdminDep], responses=ERRORS)
def activate_model(version: VersionNumber, session: SessionDep, request: Request) -> ModelOut:
    """Admin: make this version serve (rollback or forward). Every API process follows."""
    model = get_model_or_404(session, version)
    if model.status == ModelStatus.active:
        return to_out(model)
    # Retire the active one and activate this one in one transaction; the partial unique
    # index guarantees a single active version even if two admins race.
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.status == ModelStatus.active)
        .values(status=ModelStatus.retired)
    )
    model.status = ModelStatus.active
    model.activated_at = datetime.now(UTC)
    session.commit()
    request.app.state.model_server.refresh()  # this process at once; the others poll
    return to_out(model)
