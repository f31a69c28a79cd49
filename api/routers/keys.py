"""/v1/keys: API keys and their roles (admin only). A key is shown once, when it is created."""

from fastapi import APIRouter, Response, status

from api.auth import AdminDep
from api.deps import RowId, SessionDep, get_or_404
from api.errors import ERRORS
from api.routers import API_PREFIX
from api.schemas import KeyIn, KeyOut, NewKeyOut
from db.models import ApiKey, Role
from domain import keys

router = APIRouter(prefix=f"{API_PREFIX}/keys", tags=["keys"], dependencies=[AdminDep])


def to_out(key: ApiKey) -> KeyOut:
    return KeyOut(
        id=key.id,
        name=key.name,
        role=Role(key.role),
        prefix=key.prefix,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, responses=ERRORS)
def create_key(body: KeyIn, session: SessionDep) -> NewKeyOut:
    """Admin: a new key with a role. The reply holds the key itself, this once."""
    new = keys.create(session, body.name, body.role)
    return NewKeyOut(**to_out(new.row).model_dump(), key=new.key)


@router.get("", responses=ERRORS)
def list_keys(session: SessionDep) -> list[KeyOut]:
    """Admin: every key, revoked ones too (never the keys themselves)."""
    return [to_out(key) for key in keys.listed(session)]


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS)
def revoke_key(key_id: RowId, session: SessionDep) -> Response:
    """Admin: revoke a key. Every API process refuses it within KEY_CACHE_SECONDS; the samples
    it stored keep saying which key stored them."""
    keys.revoke(session, get_or_404(session, ApiKey, key_id, "key_not_found", "API key"))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
