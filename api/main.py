"""The ASGI app: `uvicorn api.main:app`. Routers live in api/routers, one per resource."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.errors import install_error_handlers
from api.middleware import BodySizeLimitMiddleware, MetricsMiddleware
from api.routers import health, samples
from core.config import get_settings

settings = get_settings()
logging.basicConfig(
    level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
)

# Multipart framing around the image: boundaries, part headers and the small form fields.
MULTIPART_OVERHEAD = 64 * 1024


def body_limit(path: str) -> int:
    return settings.max_upload_bytes + MULTIPART_OVERHEAD


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


app = FastAPI(
    title="Handwriting recognition",
    version="0.1.0",
    description="Upload labelled handwritten characters; get predictions from a CNN trained on "
    "NIST data and on what users upload.",
    lifespan=lifespan,
)
install_error_handlers(app)
app.include_router(health.router)
app.include_router(samples.router)

app.add_middleware(BodySizeLimitMiddleware, limit_for_path=body_limit)
if settings.cors_origins:  # CORS stays off unless origins are configured
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )
app.add_middleware(MetricsMiddleware)
