"""Dependencies shared by the routers."""

import hmac
from typing import Annotated, TypeVar

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from api.errors import ApiError
from core.config import Settings, get_settings
from core.labels import LabelSet
from db.session import get_db

SessionDep = Annotated[Session, Depends(get_db)]

Row = TypeVar("Row")


def get_or_404(session: Session, model: type[Row], key: int, code: str, what: str) -> Row:
    """The row with this primary key, or a 404 that says which one is missing."""
    row = session.get(model, key)
    if row is None:
        raise ApiError(404, code, f"there is no {what} {key}")
    return row


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_label_set(settings: SettingsDep) -> LabelSet:
    return LabelSet(settings.labels)


LabelSetDep = Annotated[LabelSet, Depends(get_label_set)]


def require_admin(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """Admin routes: `Authorization: Bearer <ADMIN_TOKEN>`. Closed when no token is configured."""
    if not settings.admin_token:
        raise ApiError(
            403,
            "admin_disabled",
            "admin routes are disabled because ADMIN_TOKEN is not set on the server",
        )
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "unauthorized",
            "this route needs the header 'Authorization: Bearer <ADMIN_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Constant-time comparison: response time must not reveal how much of the token matched.
    if not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        raise ApiError(403, "forbidden", "the admin token is not valid")


AdminDep = Depends(require_admin)
