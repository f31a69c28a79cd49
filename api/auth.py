"""Who is asking: `Authorization: Bearer <key>` (an API key, or the ADMIN_TOKEN), or nobody
(an anonymous client, known by its address). Roles gate routes; the rules are domain/keys.py."""

import hmac
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Header, Request

from api.errors import ApiError, coded_error
from core.config import Settings, get_settings
from db.models import Role
from db.session import get_sessionmaker
from domain import keys, samples

BEARER = {"WWW-Authenticate": "Bearer"}


def _address(request: Request) -> str:
    # Behind the proxy uvicorn reads X-Forwarded-For (--forwarded-allow-ips), so this is the
    # client's own address, not the proxy's.
    return request.client.host if request.client else "unknown"


def _authenticate(token: str, settings: Settings) -> keys.Client:
    with get_sessionmaker()() as session:
        return keys.authenticate(session, token, settings.key_cache_seconds)


def _anonymous_secret() -> bytes:
    with get_sessionmaker()() as session:
        return samples.evaluation_key(session)


async def get_client(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> keys.Client:
    """The request's client. No header: anonymous. A bearer token that is neither a valid key
    nor the admin token is refused (401), never treated as anonymous."""
    settings = get_settings()
    if authorization is None:
        secret = samples.cached_evaluation_key() or await to_thread.run_sync(_anonymous_secret)
        return keys.anonymous(_address(request), secret)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "unauthorized",
            "send the header 'Authorization: Bearer <API key>' (or none, to be anonymous)",
            headers=BEARER,
        )
    # Constant-time comparison: response time must not reveal how much of the token matched.
    if settings.admin_token and hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        return keys.ADMIN_TOKEN_CLIENT
    try:
        return keys.cached(token, settings.key_cache_seconds) or await to_thread.run_sync(
            _authenticate, token, settings
        )
    except keys.InvalidKey as exc:
        raise coded_error(exc, headers=BEARER) from exc


ClientDep = Annotated[keys.Client, Depends(get_client)]


def require(*roles: Role):  # -> a FastAPI dependency
    """A route dependency letting through only clients with one of `roles`."""
    names = " or ".join(role.value for role in roles)

    async def check(client: ClientDep) -> keys.Client:
        if client.role is None:
            raise ApiError(
                401,
                "unauthorized",
                f"this route needs an API key with the role {names} "
                "(header 'Authorization: Bearer <key>'; the ADMIN_TOKEN is an admin key)",
                headers=BEARER,
            )
        if client.role not in roles:
            raise ApiError(
                403,
                "forbidden",
                f"this route needs the role {names}; this key's role is {client.role.value}",
            )
        return client

    return check


AdminDep = Depends(require(Role.admin))
AdminClientDep = Annotated[keys.Client, AdminDep]
LabellerClientDep = Annotated[keys.Client, Depends(require(Role.admin, Role.labeller))]


async def may_store_samples(client: ClientDep) -> keys.Client:
    """Uploads and corrections: open to anonymous clients unless ANONYMOUS_UPLOADS=false."""
    if client.role is None and not get_settings().anonymous_uploads:
        raise ApiError(
            401,
            "unauthorized",
            "this service stores samples only from clients with an API key "
            "(ANONYMOUS_UPLOADS is false); send 'Authorization: Bearer <key>'",
            headers=BEARER,
        )
    return client


UploaderDep = Annotated[keys.Client, Depends(may_store_samples)]
