"""/v1/models: the registry of trained versions, which one serves, rollback."""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select

from api.auth import AdminDep
from api.deps import SessionDep, SettingsDep, VersionNumber, get_or_404
from api.errors import ERRORS, ApiError
from api.routers import API_PREFIX
from api.schemas import ModelDetail, ModelOut, VersionChangeOut
from db.models import ModelVersion
from db.session import after_commit
from domain import registry

router = APIRouter(prefix=f"{API_PREFIX}/models", tags=["models"])


def to_out(
    model: ModelVersion, baseline: int | None, change: registry.VersionChange | None = None
) -> ModelOut:
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
        blessed_at=model.blessed_at,
        baseline=model.version == baseline,
        change=VersionChangeOut.model_validate(change, from_attributes=True) if change else None,
    )


def baseline_number(session: SessionDep, settings: SettingsDep) -> int | None:
    baseline = registry.baseline_version(session, settings.labels)
    return baseline.version if baseline else None


BaselineDep = Annotated[int | None, Depends(baseline_number)]


def to_detail(session: SessionDep, model: ModelVersion, baseline: int | None) -> ModelDetail:
    change = registry.changes_by_version(session, [model]).get(model.version)
    return ModelDetail(**to_out(model, baseline, change).model_dump(), report=model.report)


def get_model_or_404(session: SessionDep, version: int) -> ModelVersion:
    return get_or_404(session, ModelVersion, version, "model_not_found", "model version")


@router.get("", responses=ERRORS)
def list_models(session: SessionDep, baseline: BaselineDep) -> list[ModelOut]:
    """Every version, newest first, with what its training run measured (`change`)."""
    query = select(ModelVersion).order_by(ModelVersion.version.desc())
    models = list(session.scalars(query))
    changes = registry.changes_by_version(session, models)
    return [to_out(m, baseline, changes.get(m.version)) for m in models]


@router.get("/active", responses=ERRORS)
def get_active_model(session: SessionDep, baseline: BaselineDep) -> ModelDetail:
    model = registry.active_version(session)
    if model is None:
        raise ApiError(404, "no_active_model", "no model version is active")
    return to_detail(session, model, baseline)


@router.get("/{version}", responses=ERRORS)
def get_model(version: VersionNumber, session: SessionDep, baseline: BaselineDep) -> ModelDetail:
    return to_detail(session, get_model_or_404(session, version), baseline)


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
def activate_model(
    version: VersionNumber, session: SessionDep, request: Request, settings: SettingsDep
) -> ModelOut:
    """Admin: make this version serve (rollback or forward). Every API process follows.
    409 `registry_busy` when another registry change holds the lock too long: retry."""
    model = registry_change(lambda: registry.activate(session, version), version)
    after_commit(session, request.app.state.model_server.refresh)  # here at once; others poll
    return to_out(model, baseline_number(session, settings))


@router.post("/{version}/bless", dependencies=[AdminDep], responses=ERRORS)
def bless_model(version: VersionNumber, session: SessionDep, settings: SettingsDep) -> ModelOut:
    """Admin: make this version its label set's baseline, the gate's fixed reference: from now
    on no candidate is promoted more than GATE_MAX_NIST_DROP below it on NIST test or holdout
    accuracy. 409 `registry_busy` as for activation."""
    model = registry_change(lambda: registry.bless(session, version), version)
    return to_out(model, baseline_number(session, settings))


def registry_change(change: Callable[[], ModelVersion | None], version: int) -> ModelVersion:
    """A registry change: 409 while the registry is busy, 404 for a version that is not there."""
    try:
        model = change()
    except registry.RegistryBusy as exc:
        raise ApiError(409, "registry_busy", str(exc), headers={"Retry-After": "1"}) from exc
    if model is None:
        raise ApiError(404, "model_not_found", f"there is no model version {version}")
    return model
