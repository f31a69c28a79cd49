"""Liveness, readiness and Prometheus metrics."""

import contextlib

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy import func, select, text

from api.deps import SessionDep
from api.metrics_registry import registry
from db.migrate import current_revision, head_revision
from db.models import Sample

router = APIRouter(tags=["health"])

SAMPLES_STORED = Gauge(
    "samples_stored", "Labelled samples stored in the database", multiprocess_mode="livemax"
)
HEAD_REVISION = head_revision()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive (no dependency is checked)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
def readyz(session: SessionDep) -> JSONResponse:
    """Ready to serve: the database answers and its schema is at the latest migration."""
    try:
        session.execute(text("SELECT 1"))
        revision = current_revision(session.get_bind())
    except Exception as exc:  # any failure here means "not ready", with the reason
        return JSONResponse(
            {"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"},
            status_code=503,
        )
    if revision != HEAD_REVISION:
        return JSONResponse(
            {
                "status": "unavailable",
                "database": "ok",
                "migrations": f"at {revision}, expected {HEAD_REVISION}: run alembic upgrade head",
            },
            status_code=503,
        )
    return JSONResponse({"status": "ok", "database": "ok", "migrations": revision})


@router.get("/metrics", response_class=Response, include_in_schema=False)
def metrics(session: SessionDep) -> Response:
    # Metrics must still be served while the database is away.
    with contextlib.suppress(Exception):
        SAMPLES_STORED.set(session.scalar(select(func.count()).select_from(Sample)) or 0)
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)
