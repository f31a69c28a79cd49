"""One JSON shape for every error: {"error": code, "detail": human message, ...context}."""

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorOut
from core.errors import CodedError
from core.images import ImageError, accepted_types

if TYPE_CHECKING:
    from core.config import Settings

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.code = code
        self.detail = detail
        self.headers = headers
        self.context = context


# The error replies every route may give, declared once for the OpenAPI schema.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 415, 422, 429)
} | {503: {"model": ErrorOut, "description": "The database is not reachable; retry shortly"}}
NO_MODEL = ERRORS | {503: {"model": ErrorOut, "description": "No model serving yet"}}

# The HTTP status of each code the layers below raise (core.errors.CodedError): 413 and 415
# for pictures too big or of an unknown kind, 409 for a conflict with what is stored, 422 for
# the rest (a picture without ink, a row or a correction that does not fit).
STATUS = {
    # keys (domain.keys.InvalidKey)
    "invalid_key": 401,
    "key_revoked": 401,
    # pictures (core.images.ImageError)
    "empty_image": 422,
    "no_ink": 422,
    "image_too_large": 413,
    "image_too_many_pixels": 413,
    "unsupported_image": 415,
    "undecodable_image": 422,
    # rows (domain.reader.ReadingError)
    "no_characters": 422,
    "too_many_characters": 422,
    # corrections (domain.readings.CorrectionError; a box's reply names it: `index`)
    "already_corrected": 409,
    "label_conflict": 409,
    "length_mismatch": 422,
    "invalid_label": 422,
    "empty_box": 422,
    "box_outside_picture": 422,
    "boxes_out_of_order": 422,
    "boxes_overlap": 422,
    "box_holds_several_characters": 422,
}


def coded_error(exc: CodedError, **context: Any) -> ApiError:
    """The reply for a refusal from below the API: its status from STATUS, its code, message
    and context, and `context` the API adds."""
    return ApiError(STATUS[exc.code], exc.code, exc.message, **exc.context, **context)


def image_error(exc: ImageError, settings: "Settings") -> ApiError:
    """The 4xx reply for an image we cannot accept, with what the client needs to fix it."""
    return coded_error(
        exc,
        allowed_types=accepted_types(),
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
        max_decode_bytes=settings.max_decode_bytes,
    )


def error_response(
    status_code: int, code: str, detail: str, headers: dict[str, str] | None = None, **context: Any
) -> JSONResponse:
    return JSONResponse(
        {"error": code, "detail": detail, **context}, status_code=status_code, headers=headers
    )


def _describe_validation_error(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query"))
    return f"{location or 'request'}: {error.get('msg', 'invalid')}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.detail, exc.headers, **exc.context)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        fields = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg")}
            for e in errors
        ]
        return error_response(
            422,
            "invalid_request",
            "; ".join(_describe_validation_error(e) for e in errors),
            fields=fields,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        # Connection refused, lost, or pool exhausted: the client should retry; nothing was
        # stored. Anything else from the database is a bug and stays a 500.
        unavailable = isinstance(exc, OperationalError | SQLAlchemyTimeoutError) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        )
        if not unavailable:
            raise exc
        log.warning("database unavailable: %s", exc)
        return error_response(
            503,
            "database_unavailable",
            "the database is not reachable; retry shortly",
            headers={"Retry-After": "2"},
        )
