"""API keys: who a client is, and what its role lets it do.

A key reads `hwk_<prefix>_<secret>`. The prefix finds its row; only the SHA-256 of the whole
key is stored (a key is 256 random bits, so a fast hash is as safe as a slow one), compared in
constant time. The key itself is shown once, when it is created, by the API or the CLI
(`python -m api.manage keys create`). Revoking keeps the row: the samples a key stored still
say which key stored them.

Trust comes from the key, never from the request: an `admin` or `labeller` key's samples are
trusted (never held as suspect; as evaluation samples they judge candidates), a `client` key's
and an anonymous client's are not.
"""

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import CodedError
from db.models import ApiKey, Role
from domain import runs

KEY_PREFIX = "hwk"
TRUSTED_ROLES = frozenset({Role.admin, Role.labeller})


@dataclass(frozen=True)
class Client:
    """Who sent a request: a key's holder, the admin token's, or an anonymous address."""

    role: Role | None  # None: anonymous
    key_id: int | None  # the key that authenticated it (None: anonymous or the admin token)
    uploader: str  # "key:<id>", "admin-token" or "address:<keyed hash>": one per uploader

    @property
    def trusted(self) -> bool:
        return self.role in TRUSTED_ROLES

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin


class InvalidKey(CodedError):
    """The key is unknown, malformed or revoked; `code` says which for the reply."""


@dataclass(frozen=True)
class NewKey:
    row: ApiKey
    key: str  # shown once


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(session: Session, name: str, role: Role) -> NewKey:
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(name=name, role=role.value, prefix=prefix, secret_sha256=_digest(key))
    session.add(row)
    session.flush()
    return NewKey(row, key)


def listed(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke(session: Session, key: ApiKey) -> ApiKey:
    """The first revocation's time is kept."""
    if key.revoked_at is None:
        key.revoked_at = runs.now()
        session.flush()
    _cache.clear()  # this process stops trusting it at once; others within KEY_CACHE_SECONDS
    return key


def _parse(key: str) -> str:
    """The key's prefix, or InvalidKey when it is not shaped like one of ours."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        raise InvalidKey("invalid_key", "the API key is not one this service issued")
    return parts[1]


class _Cache:
    """Checked keys, for a few seconds: a prediction needs no database round trip."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Client]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str, ttl: float) -> Client | None:
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or time.monotonic() - entry[0] > ttl:
            return None
        return entry[1]

    def put(self, digest: str, client: Client) -> None:
        with self._lock:
            if len(self._entries) > 10_000:  # bounded: many keys at once only evict sooner
                self._entries.clear()
            self._entries[digest] = (time.monotonic(), client)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = _Cache()


def cached(key: str, cache_seconds: float) -> Client | None:
    """The client of a key checked less than `cache_seconds` ago (None: check it)."""
    return _cache.get(_digest(key), cache_seconds)


def authenticate(session: Session, key: str, cache_seconds: float) -> Client:
    """The client a key belongs to, or InvalidKey (unknown or revoked)."""
    digest = _digest(key)
    cached = _cache.get(digest, cache_seconds)
    if cached is not None:
        return cached
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == _parse(key)))
    if row is None or not hmac.compare_digest(row.secret_sha256, digest):
        raise InvalidKey("invalid_key", "the API key is not one this service issued")
    if row.revoked_at is not None:
        raise InvalidKey("key_revoked", f"the API key {row.name!r} was revoked")
    client = Client(Role(row.role), row.id, f"key:{row.id}")
    _cache.put(digest, client)
    return client


def anonymous(address: str, secret: bytes) -> Client:
    """An anonymous client, one per address; the address is kept only as a keyed hash."""
    tag = hmac.new(secret, address.encode(), hashlib.sha256).hexdigest()[:24]
    return Client(None, None, f"address:{tag}")


ADMIN_TOKEN_CLIENT = Client(Role.admin, None, "admin-token")
