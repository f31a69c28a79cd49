"""/v1/models: the registry of trained versions, which one serves, rollback."""

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from api.deps import AdminDep, SessionDep, VersionNumber, get_or_404
from api.errors import ERRORS, ApiError
from api.schemas import ModelDetail, ModelOut
from db.models import ModelVersion
from domain import registry

router = APIRouter(prefix="/v1/models", tags=["models"])


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


def to_detail(model: ModelVersion) -> ModelDetail:
    return ModelDetail(**to_out(model).model_dump(), report=model.report)


def get_model_or_404(session: SessionDep, version: int) -> ModelVersion:
    return get_or_404(session, ModelVersion, version, "model_not_found", "model version")


@router.get("", responses=ERRORS)
def list_models(session: SessionDep) -> list[ModelOut]:
    """Every version, newest first."""
    query = select(ModelVersion).order_by(ModelVersion.version.desc())
    return [to_out(m) for m in session.scalars(query)]


@router.get("/active", responses=ERRORS)
def get_active_model(session: SessionDep) -> ModelDetail:
    model = registry.active_version(session)
    if model is None:
        raise ApiError(404, "no_active_model", "no model version is active")
    return to_detail(model)


@router.get("/{version}", responses=ERRORS)
def get_model(version: VersionNumber, session: SessionDep) -> ModelDetail:
    return to_detail(get_model_or_404(session, version))


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
    """Admin: make this version serve (rollback or forward). Every API process follows.
    409 `registry_busy` when another registry change holds the lock too long: retry."""
    try:
        model = registry.activate(session, version)
    except registry.RegistryBusy as exc:
        raise ApiError(409, "registry_busy", str(exc), headers={"Retry-After": "1"}) from exc
    if model is None:
        raise ApiError(404, "model_not_found", f"there is no model version {version}")
    request.app.state.model_server.refresh()  # this process at once; the others poll
    return to_out(model)
