"""The ASGI app: `uvicorn api.main:app`. Routers live in api/routers, one per resource."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from api.cpu import CpuPool
from api.errors import install_error_handlers
from api.middleware import BodySizeLimitMiddleware, MetricsMiddleware
from api.ratelimit import RateLimits
from api.routers import (
    API_PREFIX,
    health,
    keys,
    models,
    predictions,
    readings,
    samples,
    training_runs,
)
from core.config import get_settings
from db.session import get_sessionmaker, unit_of_work
from domain.predictor import ModelServer
from domain.registry import install_bundled
from domain.samples import evaluation_key

settings = get_settings()
logging.basicConfig(
    level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
)
log = logging.getLogger(__name__)

# /readyz is the containers' healthcheck (every 10 s): no log line for it. The API never
# migrates (the migrate service does); alembic's MigrationContext logs two INFO lines a call.
logging.getLogger("alembic").setLevel(logging.WARNING)
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


def not_a_health_check(record: logging.LogRecord) -> bool:
    """uvicorn's access lines: (client, method, path, http version, status) as arguments."""
    args = record.args if isinstance(record.args, tuple) else ()
    return not (len(args) >= 3 and args[2] in HEALTH_PATHS)


logging.getLogger("uvicorn.access").addFilter(not_a_health_check)

# The web page: plain HTML, CSS and ES modules (main.js loads the rest), no build step; StaticFiles
# serves .js as text/javascript, which module scripts require.
STATIC_DIR = Path(__file__).resolve().parent / "static"

# Multipart framing around the image: boundaries, part headers and the small form fields.
MULTIPART_OVERHEAD = 64 * 1024


def body_limit(path: str) -> int:
    if path == f"{API_PREFIX}/predictions/batch":
        return settings.max_batch_bytes + MULTIPART_OVERHEAD
    return settings.max_upload_bytes + MULTIPART_OVERHEAD


async def follow_active_model(server: ModelServer) -> None:
    """Poll the registry: a newly activated version serves here within MODEL_POLL_SECONDS."""
    while True:
        await asyncio.sleep(settings.model_poll_seconds)
        try:
            await asyncio.to_thread(server.refresh)
        except Exception:  # the database may be away for a while; keep serving what we have
            log.exception("could not refresh the serving model")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    server = ModelServer(settings.onnx_intra_op_threads)
    app.state.model_server = server
    app.state.cpu_pool = CpuPool(settings.api_cpu_threads)
    app.state.rate_limits = RateLimits(settings)
    try:
        with unit_of_work() as session:
            install_bundled(session)
        with get_sessionmaker()() as session:
            evaluation_key(session)  # read once here, not on a request's path
        server.refresh()
    except Exception:  # start anyway: /readyz tells, predictions answer 503 until a model loads
        log.exception("could not load a model at start")
    poller = asyncio.create_task(follow_active_model(server))
    yield
    poller.cancel()
    app.state.cpu_pool.shutdown()


# The API docs (/docs, /redoc) with Swagger UI's and ReDoc's files served by the app itself,
# not a CDN: a deployment that cannot reach the internet still has its docs.
app = FastAPIOffline(
    title="Handwriting recognition",
    version="0.1.0",
    description="Upload labelled handwritten characters; get predictions from a CNN trained on "
    "NIST data and on what users upload.",
    lifespan=lifespan,
)
install_error_handlers(app)
app.include_router(health.router)
for api_router in (samples, predictions, readings, models, training_runs, keys):
    app.include_router(api_router.router)
app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


@app.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The web page: draw or upload a character, teach the model, watch it retrain."""
    return FileResponse(STATIC_DIR / "index.html")


app.add_middleware(BodySizeLimitMiddleware, limit_for_path=body_limit)
if settings.cors_origins:  # CORS stays off unless origins are configured
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )
app.add_middleware(MetricsMiddleware)
